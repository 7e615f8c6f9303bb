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


def test_openapi_json_is_the_yaml_document(instance):
    """GET /api/v1/openapi.json serves api/openapi.yaml as JSON (converted at build time),
    read as YAML 1.2 reads it: a date-like string stays a string."""
    import importlib.util
    import json

    import yaml

    spec = importlib.util.spec_from_file_location("yaml2json", REPO / "api" / "yaml2json.py")
    yaml2json = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(yaml2json)
    served_yaml = instance.api("GET", "/api/v1/openapi.yaml", token=None)
    served_json = instance.api("GET", "/api/v1/openapi.json", token=None)
    assert served_json.status == 200, served_json
    assert served_json.headers["Content-Type"].startswith("application/json")
    document = json.loads(served_json.body)
    assert document == yaml.load(served_yaml.body, Loader=yaml2json.SpecLoader)
    assert document == yaml.load((REPO / "api" / "openapi.yaml").read_text(),
                                 Loader=yaml2json.SpecLoader)
    assert "/api/v1/openapi.json" in document["paths"]
    # Dates in examples are strings in JSON, as the YAML quotes or not.
    assert isinstance(document["info"]["version"], str)
