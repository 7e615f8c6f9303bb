"""The README's reference sections agree with the binary: the flag table
with `cronfence --help`, the metric table with a live GET /metrics, and the
files it points to exist."""

import re
import subprocess

from conftest import BIN_DIR, REPO

README = (REPO / "README.md").read_text()


def section(title):
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end != -1 else len(README)]


def test_flag_table_matches_help():
    help_text = subprocess.run([str(BIN_DIR / "cronfence"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    from_help = {}
    for line in help_text.splitlines():
        match = re.match(r"\s+--([a-z-]+).*?(?:\[(CRONFENCE_[A-Z_]+)\])?$", line)
        if match:
            from_help[match.group(1)] = match.group(2)
    table = section("## Flags")
    documented = {}
    for row in table.splitlines():
        if not row.startswith("| `--"):
            continue
        names = re.findall(r"`--([a-z-]+)", row.split("|")[1])
        env = re.search(r"\[`(CRONFENCE_[A-Z_]+)`\]", row)
        for name in names:
            documented[name] = env.group(1) if env else None
    assert set(documented) == set(from_help), (
        f"only in --help: {sorted(set(from_help) - set(documented))}; "
        f"only in the README: {sorted(set(documented) - set(from_help))}")
    for name, env in from_help.items():
        assert documented[name] == env, f"--{name}: README says {documented[name]}, --help {env}"


def test_metric_table_matches_the_exposition(instance):
    body = instance.api("GET", "/metrics", token="viewer").body
    exposed = set(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    table = section("### Metrics")
    documented = set(re.findall(r"^\| `(cronfence_[a-z_]+)` \| (counter|gauge|histogram) \|",
                                table, re.M))
    assert documented == exposed, (f"only exposed: {sorted(exposed - documented)}; "
                                   f"only documented: {sorted(documented - exposed)}")


def test_files_the_readme_names_exist():
    for path in set(re.findall(r"`((?:api|docker|tests|server|web)/[A-Za-z0-9_./-]+)`", README)):
        assert (REPO / path.rstrip("/")).exists(), f"README names {path}, which does not exist"
