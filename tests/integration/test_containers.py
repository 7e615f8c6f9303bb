"""The container and service files in docker/, checked with what runs here
(no Docker engine): the compose file parses and its names, ports, volumes and
URLs agree; every flag and CRONFENCE_* variable the files use is one the real
binaries list in --help; the Dockerfile builds with the Makefile's own build
target, copies the binaries from where that target puts them, and installs
the Debian package of every shared library the built binaries load; its
health check reaches /healthz of a real instance; the Redis nodes' command
line really sets what DESIGN §4.5 requires; the systemd unit is well formed.

What the Makefile does is asked of make (make -n) rather than repeated here.
The library check needs the plain build (the sanitized one loads the
sanitizer runtimes), so it is skipped in the CRONFENCE_SANITIZED run.
"""

import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import urllib.parse

import pytest
import yaml

from conftest import BIN_DIR, SANITIZED, wait_for
from redisnode import REDIS_CLI, REDIS_SERVER, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
UNIT_FILE = DOCKER / "cronfence.service"
ENV_SAMPLE = DOCKER / "cronfence.env"
BINARIES = ("cronfence", "cronfence-receiver")
DEFAULT_SHUTDOWN_GRACE_MS = 30000


# ---- the binaries' own word on their flags and variables ----

def binary_options(name):
    """(flags, environment variables) that `name --help` lists."""
    out = subprocess.run([str(BIN_DIR / name), "--help"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out))
    variables = set(re.findall(r"\bCRONFENCE_[A-Z0-9_]*[A-Z0-9]\b", out))
    # "Each flag can also be set as CRONFENCE_RECEIVER_LISTEN, _DB, _SECRET, _LOG."
    for match in re.finditer(r"(CRONFENCE_[A-Z0-9]+_)[A-Z0-9_]+((?:,\s*_[A-Z0-9_]+)+)", out):
        variables |= {match.group(1) + suffix.strip()[1:] for suffix in match.group(2).split(",")
                      if suffix.strip()}
    assert flags and variables, f"{name} --help lists no flags or variables"
    return flags, variables


@pytest.fixture(scope="module")
def options():
    return {name: binary_options(name) for name in BINARIES}


def check_arguments(binary, args, options, where):
    """Fails unless every --flag in args is one that binary lists."""
    flags = options[binary][0]
    for arg in args:
        if arg.startswith("--") and arg.split("=", 1)[0] not in flags:
            pytest.fail(f"{where}: {binary} has no flag {arg.split('=', 1)[0]}")


def check_variables(binaries, names, options, where):
    """Fails unless every CRONFENCE_* name is listed by one of binaries."""
    known = set().union(*(options[binary][1] for binary in binaries))
    for name in names:
        if name.startswith("CRONFENCE_") and name not in known:
            pytest.fail(f"{where}: no binary of {binaries} reads {name}")


# ---- make ----

def make(*args):
    """Output of make in the repository, without the variables of a make that runs this test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, f"make {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def make_build_folders(*args):
    """The folders that `make -n ARGS` configures with cmake -B."""
    return re.findall(r"cmake -S \S+ -B (\S+)", make("-n", *args))


def make_installs(*args):
    """The Debian packages the deps step of `make -n ARGS` checks for (and installs)."""
    packages = []
    for match in re.finditer(r"for p in ([^;]*); do dpkg-query", make("-n", *args)):
        packages += match.group(1).split()
    return packages


# ---- Dockerfile ----

def dockerfile_instructions(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


class Stage:
    def __init__(self, index, image, name):
        self.index, self.image, self.name = index, image, name
        self.instructions = []

    def all(self, keyword):
        return [rest for kw, rest in self.instructions if kw == keyword]

    def env(self):
        values = {}
        for rest in self.all("ENV"):
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def workdir_at(self, position):
        """The WORKDIR in force before instruction number position."""
        workdir = "/"
        for kw, rest in self.instructions[:position]:
            if kw == "WORKDIR":
                workdir = os.path.normpath(os.path.join(workdir, rest))
        return workdir


def dockerfile_stages():
    stages = []
    for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def shell_commands(run):
    """Each simple command of a RUN line, split into words at &&, ||, ;, | and &."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def apt_installed(stage, before=None):
    """Packages that the stage's RUN lines (those before position before) give to apt-get
    install."""
    packages = []
    for position, (keyword, rest) in enumerate(stage.instructions[:before]):
        if keyword != "RUN":
            continue
        for words in shell_commands(rest):
            if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                packages += [w for w in words[words.index("install") + 1:]
                             if not w.startswith("-")]
    return packages


def make_invocations(stage):
    """[(position, make arguments)] of the stage's RUN lines."""
    found = []
    for position, (keyword, rest) in enumerate(stage.instructions):
        if keyword == "RUN":
            found += [(position, words[1:]) for words in shell_commands(rest)
                      if words[:1] == ["make"]]
    return found


def from_image(image, names):
    """Whether an image reference (with or without registry, digest) is one of names."""
    reference = image.split("@")[0]
    reference = reference.removeprefix("docker.io/").removeprefix("library/")
    return reference in names


@pytest.fixture(scope="module")
def stages():
    found = dockerfile_stages()
    assert len(found) >= 2, "the Dockerfile is not multi-stage"
    return found


@pytest.fixture(scope="module")
def runtime(stages):
    return stages[-1]


@pytest.fixture(scope="module")
def build_stage(stages, runtime):
    """The stage the runtime stage copies the binaries from."""
    sources = {re.search(r"--from=(\S+)", rest).group(1) for rest in runtime.all("COPY")
               if "--from=" in rest}
    assert len(sources) == 1, f"the runtime stage copies from {sources or 'no stage'}"
    source = sources.pop()
    for stage in stages[:-1]:
        if source in (stage.name, str(stage.index)):
            return stage
    pytest.fail(f"COPY --from={source} names no earlier stage")


# ---- docker/compose.yaml ----

REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")


def interpolate(value):
    """Compose's ${VAR:-default} and ${VAR-default} with no variable set, ${VAR:?message}
    (required) as if set to "<VAR>"; $$ is a dollar."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = REQUIRED_VARIABLE.sub(r"<\1>", value)
    assert not re.search(r"\$\{?[A-Za-z_]", value.replace("$$", "")), \
        f"{value!r}: a variable without a default"
    return value.replace("$$", "$")


def as_dict(entries):
    """environment: or similar as a mapping, from either the list or the mapping form."""
    if entries is None:
        return {}
    if isinstance(entries, dict):
        return {str(k): interpolate("" if v is None else str(v)) for k, v in entries.items()}
    return {entry.partition("=")[0]: interpolate(entry.partition("=")[2]) for entry in entries}


def as_args(command):
    if command is None:
        return []
    return [interpolate(w) for w in (shlex.split(command) if isinstance(command, str) else command)]


def flag_or_env(service, flag, variable):
    """A setting as the service gives it: the flag in command, else its variable."""
    args = service["args"]
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return service["environment"].get(variable)


def port_of(address, default):
    return int(address.rsplit(":", 1)[1]) if address and ":" in address else default


@pytest.fixture(scope="module")
def compose(stages):
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict), \
        "compose.yaml has no services"
    runtime_env = stages[-1].env()
    stage_of = {s.name: s for s in stages if s.name}
    services = {}
    for name, raw in document["services"].items():
        build = raw.get("build")
        if isinstance(build, str):
            build = {"context": build}
        stage = None
        if build is not None:
            context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
            dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
            assert context == REPO, f"{name}: build context {context} is not the repository"
            assert dockerfile == DOCKERFILE.resolve(), f"{name}: builds {dockerfile}"
            target = build.get("target")
            assert target is None or target in stage_of, f"{name}: no stage {target}"
            stage = stage_of[target] if target else stages[-1]
        else:
            assert raw.get("image"), f"{name}: neither build nor image"
        entrypoint = as_args(raw.get("entrypoint"))
        if not entrypoint and stage is not None:
            image_entrypoint = stage.all("ENTRYPOINT")
            entrypoint = as_args(yaml.safe_load(image_entrypoint[-1])) if image_entrypoint else []
        given = as_dict(raw.get("environment"))
        environment = dict(runtime_env if stage is stages[-1] else {})
        environment.update(given)
        program = os.path.basename(entrypoint[0]) if entrypoint else None
        services[name] = {"raw": raw, "stage": stage, "program": program,
                          "args": entrypoint[1:] + as_args(raw.get("command")),
                          "environment": environment, "given_environment": given}
    for service in services.values():
        service["port"] = container_port(service)
    return {"document": document, "services": services}


def container_port(service):
    """The port the service's program listens on inside its container."""
    if service["program"] == "cronfence":
        return port_of(flag_or_env(service, "--listen", "CRONFENCE_LISTEN"), 8080)
    if service["program"] == "cronfence-receiver":
        return port_of(flag_or_env(service, "--listen", "CRONFENCE_RECEIVER_LISTEN"), 9090)
    if service["program"] == "redis-server":
        return int(flag_or_env(service, "--port", None) or 6379)
    return None


def of_program(compose, program):
    return {name: s for name, s in compose["services"].items() if s["program"] == program}


def test_compose_has_three_lock_nodes_three_instances_and_a_receiver(compose):
    assert len(of_program(compose, "redis-server")) == 3
    assert len(of_program(compose, "cronfence")) == 3
    assert len(of_program(compose, "cronfence-receiver")) == 1
    unknown = [n for n, s in compose["services"].items() if s["program"] is None]
    assert not unknown, f"services running nothing known: {unknown}"


def test_compose_refuses_to_start_without_real_tokens(compose):
    """No well-known fallback token or secret: each instance's admin and viewer token and
    the signing secret (shared with the demo receiver) are required variables
    (${VAR:?message}), which compose refuses to start without."""
    for name, service in of_program(compose, "cronfence").items():
        raw = service["raw"].get("environment")
        assert isinstance(raw, dict), f"{name}: environment is not a mapping"
        for variable in ("CRONFENCE_ADMIN_TOKEN", "CRONFENCE_VIEWER_TOKEN",
                         "CRONFENCE_SIGNING_SECRET"):
            value = raw.get(variable)
            assert isinstance(value, str), f"{name}: no {variable}"
            match = REQUIRED_VARIABLE.fullmatch(value)
            assert match and match.group(1) == variable, \
                f"{name}: {variable}={value!r} has a default or is fixed"


def test_compose_flags_and_variables_exist(compose, options):
    for name, service in compose["services"].items():
        program = service["program"]
        if program in BINARIES:
            check_arguments(program, service["args"], options, f"compose service {name}")
            check_variables([program], service["given_environment"], options,
                            f"compose service {name}")
    # Variables anywhere in the file (comments included) are ones some binary reads.
    check_variables(BINARIES, re.findall(r"\bCRONFENCE_[A-Z0-9_]+", COMPOSE_FILE.read_text()),
                    options, "compose.yaml")


def test_compose_lock_nodes_really_persist_as_design_requires(compose, tmp_path):
    """Each node's command line, run by the real redis-server, sets what DESIGN §4.5 asks."""
    nodes = of_program(compose, "redis-server")
    for name, node in nodes.items():
        args = list(node["args"])
        for flag, value in (("--appendonly", "yes"), ("--appendfsync", "always"),
                            ("--maxmemory-policy", "noeviction")):
            assert flag_or_env(node, flag, None) == value, f"{name}: {flag} is not {value}"
        # The same options, on a loopback port in a scratch folder.
        for flag, value in (("--port", str(free_port())), ("--dir", str(tmp_path / name)),
                            ("--bind", "127.0.0.1")):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        (tmp_path / name).mkdir()
        port = args[args.index("--port") + 1]
        proc = subprocess.Popen([REDIS_SERVER, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            def config(key):
                result = subprocess.run([REDIS_CLI, "-p", port, "--raw", "CONFIG", "GET", key],
                                        capture_output=True, text=True, timeout=5)
                return result.stdout.split()[1:] if result.returncode == 0 else None

            wait_for(lambda: proc.poll() is not None or config("appendonly"),
                     what=f"redis-server with the options of {name}")
            assert proc.poll() is None, f"redis-server refuses the options of {name}"
            assert config("appendonly") == ["yes"]
            assert config("appendfsync") == ["always"]
            assert config("maxmemory-policy") == ["noeviction"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def named_volumes(raw):
    """(volume name, target) of the service's named volumes (not bind mounts)."""
    found = []
    for volume in raw.get("volumes", []):
        if isinstance(volume, str):
            source, _, target = volume.partition(":")
            target = target.split(":")[0]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target, kind = volume.get("source"), volume.get("target"), volume.get("type")
        if kind == "volume" and source:
            found.append((source, target))
    return found


def test_compose_volumes_are_declared_and_each_service_has_its_own(compose):
    declared = set((compose["document"].get("volumes") or {}).keys())
    users = {}
    for name, service in compose["services"].items():
        for volume, target in named_volumes(service["raw"]):
            assert volume in declared, f"{name}: volume {volume} is not declared"
            users.setdefault(volume, []).append(name)
    shared = {v: names for v, names in users.items() if len(names) > 1}
    assert not shared, f"volumes shared between services: {shared}"
    assert declared == set(users), f"declared but unused: {declared - set(users)}"
    # Each lock node keeps its append-only file, each instance its database, on its volume.
    for name, service in compose["services"].items():
        if service["program"] == "redis-server":
            stage = service["stage"]
            data = (flag_or_env(service, "--dir", None)
                    or stage.workdir_at(len(stage.instructions)))
        elif service["program"] == "cronfence":
            data = os.path.dirname(flag_or_env(service, "--db", "CRONFENCE_DB") or "")
        else:
            data = os.path.dirname(flag_or_env(service, "--db", "CRONFENCE_RECEIVER_DB") or "")
        targets = [target for _, target in named_volumes(service["raw"])]
        assert data in targets, f"{name}: its data in {data!r} is on no volume ({targets})"


def test_compose_instances_use_every_lock_node_and_agree(compose):
    nodes = of_program(compose, "redis-server")
    instances = of_program(compose, "cronfence")
    receivers = of_program(compose, "cronfence-receiver")
    shared = {}
    for name, instance in instances.items():
        urls = (flag_or_env(instance, "--redis", "CRONFENCE_REDIS") or "").split(",")
        named = []
        for url in urls:
            parsed = urllib.parse.urlsplit(url.strip())
            assert parsed.scheme == "redis", f"{name}: {url} is not redis://"
            assert parsed.hostname in nodes, f"{name}: {url} names no lock node service"
            assert (parsed.port or 6379) == nodes[parsed.hostname]["port"], \
                f"{name}: {url} is not the port {parsed.hostname} listens on"
            named.append(parsed.hostname)
        assert sorted(named) == sorted(nodes), f"{name}: lock nodes {named}, not {sorted(nodes)}"
        depends = instance["raw"].get("depends_on") or []
        assert set(nodes) <= set(depends), f"{name}: does not depend on every lock node"
        advertise = urllib.parse.urlsplit(flag_or_env(instance, "--advertise",
                                                      "CRONFENCE_ADVERTISE") or "")
        assert (advertise.hostname, advertise.port) == (name, instance["port"]), \
            f"{name}: advertises {advertise.geturl()!r}, not its own service and port"
        for flag in ("--admin-token", "--viewer-token", "--signing-secret", "--webhook-allow"):
            value = flag_or_env(instance, flag, "CRONFENCE_" + flag[2:].upper().replace("-", "_"))
            assert value, f"{name}: no {flag}"
            shared.setdefault(flag, set()).add(value)
    ids = [flag_or_env(i, "--instance-id", "CRONFENCE_INSTANCE_ID") for i in instances.values()]
    assert None not in ids and len(set(ids)) == len(ids), f"instance ids not distinct: {ids}"
    different = [flag for flag, values in shared.items() if len(values) != 1]
    assert not different, f"instances differ in {different}"
    secret = shared["--signing-secret"].pop()
    allowed = [entry.strip() for entry in shared["--webhook-allow"].pop().split(",")]
    for name, receiver in receivers.items():
        assert flag_or_env(receiver, "--secret", "CRONFENCE_RECEIVER_SECRET") == secret, \
            f"{name}: its secret is not the instances' signing secret"
        assert name in allowed, f"webhooks may not reach {name} ({allowed})"
    for entry in allowed:
        assert "/" in entry or entry in compose["services"], \
            f"--webhook-allow names {entry}, which is no service"


URL_PATTERN = r"\b(?:https?|redis)://[^\s'\",}\]]+"


def test_compose_depends_on_and_urls_name_services_and_their_ports(compose):
    services = compose["services"]
    published = {}
    for name, service in services.items():
        for dependency in service["raw"].get("depends_on") or []:
            assert dependency in services, f"{name}: depends on unknown service {dependency}"
        for port in service["raw"].get("ports", []):
            if isinstance(port, dict):
                host, target = (port.get("host_ip", ""), str(port.get("published"))), port["target"]
            else:
                parts = str(interpolate(port)).split(":")
                assert len(parts) >= 2, f"{name}: port {port} publishes a random host port"
                host, target = (":".join(parts[:-2]), parts[-2]), parts[-1]
            assert int(str(target).split("/")[0]) == service["port"], \
                f"{name}: publishes {target}, but listens on {service['port']}"
            assert host[1] not in {h[1] for h in published}, f"host port {host[1]} used twice"
            published[host] = name
    # Every URL in the file, comments included: a service on the port it listens on,
    # or this machine on a published port (health checks, run inside, are checked apart).
    checks = yaml.safe_dump([s["raw"].get("healthcheck") for s in services.values()])
    inside = set(re.findall(URL_PATTERN, checks))
    for url in re.findall(URL_PATTERN, COMPOSE_FILE.read_text()):
        if url in inside:
            continue
        parsed = urllib.parse.urlsplit(interpolate(url))
        if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
            assert str(parsed.port) in {h[1] for h in published}, f"{url}: port not published"
        else:
            assert parsed.hostname in services, f"{url} names no service"
            assert parsed.port == services[parsed.hostname]["port"], \
                f"{url}: {parsed.hostname} listens on {services[parsed.hostname]['port']}"


def test_compose_health_checks_and_stop_grace(compose, stages):
    for name, service in compose["services"].items():
        check = service["raw"].get("healthcheck")
        if check is None:
            # Inheriting the image's check is right only for the program it was written for.
            stage = service["stage"]
            assert stage is not None and stage.all("HEALTHCHECK"), f"{name}: no health check"
            image_program = os.path.basename(yaml.safe_load(stage.all("ENTRYPOINT")[-1])[0])
            assert service["program"] == image_program, \
                f"{name} runs {service['program']} but inherits the {image_program} check"
            continue
        words = " ".join(as_args(check["test"][1:] if isinstance(check["test"], list)
                                 else check["test"]))
        for url in re.findall(r"https?://\S+", words):
            assert urllib.parse.urlsplit(url).port == service["port"], \
                f"{name}: health check {url} is not on port {service['port']}"
        if service["program"] == "redis-server":
            assert str(service["port"]) in words or service["port"] == 6379
    for name, service in of_program(compose, "cronfence").items():
        grace_ms = int(flag_or_env(service, "--shutdown-grace-ms", "CRONFENCE_SHUTDOWN_GRACE_MS")
                       or DEFAULT_SHUTDOWN_GRACE_MS)
        assert duration_s(service["raw"].get("stop_grace_period", "10s")) > grace_ms / 1000, \
            f"{name}: stop_grace_period shorter than the shutdown grace of {grace_ms} ms"


def duration_s(text):
    """Seconds of a Compose or systemd duration: 45, 45s, 1m30s, 1min 30s, 500ms."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)", text)
    assert parts, f"cannot read the duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# ---- docker/Dockerfile ----

def test_dockerfile_builds_on_debian_12_and_runs_on_slim(stages, build_stage, runtime):
    assert from_image(build_stage.image, {"debian:12", "debian:bookworm"}), \
        f"the build stage is FROM {build_stage.image}"
    assert from_image(runtime.image, {"debian:12-slim", "debian:bookworm-slim"}), \
        f"the runtime stage is FROM {runtime.image}"


def test_dockerfile_runs_the_makefile_build_and_copies_its_binaries(build_stage, runtime):
    invocations = make_invocations(build_stage)
    copied_source = [i for i, (kw, rest) in enumerate(build_stage.instructions)
                     if kw == "COPY" and [w for w in rest.split() if not w.startswith("--")][0]
                     == "."]
    assert copied_source, "the build stage does not copy the source (COPY . ...)"
    builds = [(position, args) for position, args in invocations
              if position > copied_source[0] and make_build_folders(*args)]
    assert builds, "the build stage runs no make that builds (make build)"
    position, args = builds[-1]
    # Configured as a bare `make` configures (what developers and the tests build with),
    # and only the two programs built: no unit test, no tool.
    assert make_build_folders(*args) == make_build_folders(), \
        f"make {' '.join(args)} does not build in the folder `make` builds in"
    configure = [line for line in make("-n", *args).splitlines() if line.startswith("cmake -S")]
    assert configure == [line for line in make("-n").splitlines() if line.startswith("cmake -S")]
    compiles = [line for line in make("-n", *args).splitlines() if line.startswith("cmake --build")]
    assert compiles, f"make {' '.join(args)} compiles nothing"
    for line in compiles:
        targets = re.findall(r"--target ((?:[\w-]+ ?)+)", line)
        assert targets and sorted(targets[0].split()) == sorted(BINARIES), \
            f"the build stage compiles more than the binaries: {line}"
    folder = make_build_folders(*args)[0]
    workdir = build_stage.workdir_at(position)
    expected = {os.path.normpath(os.path.join(workdir, folder, name)) for name in BINARIES}
    copied = set()
    destinations = []
    for rest in runtime.all("COPY"):
        words = [w for w in rest.split() if not w.startswith("--")]
        if "--from=" in rest:
            copied |= {os.path.normpath(w) for w in words[:-1]}
            destinations.append(words[-1])
    assert expected <= copied, f"the runtime stage copies {copied}, make builds {expected}"
    entrypoint = yaml.safe_load(runtime.all("ENTRYPOINT")[-1])
    assert isinstance(entrypoint, list), "ENTRYPOINT is not in exec form"
    assert entrypoint[0] == "cronfence" or entrypoint[0] in \
        {os.path.join(d, "cronfence") for d in destinations}
    if "/" not in entrypoint[0]:
        assert any(d.rstrip("/") in ("/usr/local/bin", "/usr/bin") for d in destinations), \
            "the binaries are not copied onto PATH"


def test_dockerfile_build_stage_installs_the_makefile_build_packages(build_stage):
    needed = make_installs("build")
    assert needed, "make -n build shows no package check"
    assert "chromium" not in needed, "make build would install the test-only packages"
    invocations = make_invocations(build_stage)
    first_build = min((p for p, args in invocations if make_build_folders(*args)), default=None)
    assert first_build is not None, "the build stage runs no make that builds"
    # Installed in the layers before the build, by apt-get or by a make target that only
    # installs (make build-deps), so that the build's own check finds nothing missing.
    installed = set(apt_installed(build_stage, before=first_build))
    for position, args in invocations:
        if position < first_build:
            installed |= set(make_installs(*args))
    missing = sorted(set(needed) - installed)
    assert not missing, f"the build stage does not install {missing} before make build"


def ldd(path):
    """{soname: path} of the shared libraries path loads."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^\s*(\S+) => (/\S+)", out, re.M))


def packages_of(paths):
    """{path: Debian package that ships it}, asking dpkg -S once (a merged-/usr system lists
    a file under /lib or /usr/lib, whichever its package names)."""
    candidates = {path: [path, os.path.realpath(path), "/usr" + path, path.removeprefix("/usr")]
                  for path in paths}
    result = subprocess.run(["dpkg", "-S", *sorted({c for cs in candidates.values() for c in cs})],
                            capture_output=True, text=True)
    owner = {}
    for line in result.stdout.splitlines():
        packages, _, shipped = line.rpartition(": ")
        if packages and not line.startswith("diversion "):
            owner[shipped] = packages.split(",")[0].split(":")[0].strip()
    found = {}
    for path, names in candidates.items():
        owners = [owner[name] for name in names if name in owner]
        assert owners, f"{path} belongs to no Debian package"
        found[path] = owners[0]
    return found


def package_of(path):
    return packages_of([path])[path]


def dependency_closure(packages):
    """packages and everything they depend on, per this machine's dpkg database."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Pre-Depends}, ${Depends}\n"],
                         capture_output=True, text=True, check=True).stdout
    depends = {}
    for line in out.splitlines():
        name, _, fields = line.partition("\t")
        alternatives = [[re.split(r"[\s(:]", alt.strip())[0] for alt in group.split("|")]
                        for group in fields.split(",") if group.strip()]
        depends[name] = alternatives
    closure, todo = set(), list(packages)
    while todo:
        package = todo.pop()
        if package in closure:
            continue
        closure.add(package)
        for group in depends.get(package, []):
            todo += [alt for alt in group if alt in depends][:1]
    return closure


@pytest.mark.skipif(SANITIZED, reason="sanitized binaries load the sanitizer runtimes; "
                    "the plain build's run checks the libraries the image needs")
def test_dockerfile_runtime_stage_installs_every_shared_library(runtime):
    installed = apt_installed(runtime)
    dev = [p for p in installed if p.endswith("-dev")]
    assert not dev, f"the runtime stage installs build packages {dev}"
    assert {"tzdata", "ca-certificates"} <= set(installed)
    closure = dependency_closure(installed)
    for binary in BINARIES:
        libraries = ldd(BIN_DIR / binary)
        needed = re.findall(r"NEEDED\s+(\S+)", subprocess.run(
            ["objdump", "-p", str(BIN_DIR / binary)], capture_output=True, text=True,
            check=True).stdout)
        owners = packages_of(libraries.values())
        for soname, path in libraries.items():
            package = owners[path]
            # What the binary links itself is named in the Dockerfile; the rest comes with it.
            if soname in needed and package != "libc6":
                assert package in installed, \
                    f"{binary} needs {soname} from {package}, which the runtime stage lacks"
            assert package in closure, \
                f"{binary} loads {soname} from {package}, which nothing installed brings"


def test_dockerfile_runtime_stage_user_volume_port_and_environment(runtime, options):
    users = runtime.all("USER")
    assert users, "the runtime stage runs as root (no USER)"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), f"USER {users[-1]}"
    created = " ".join(runtime.all("RUN"))
    if user.isdigit():
        assert re.search(rf"useradd\b[^&;]*--uid {user}\b", created), \
            f"no user with uid {user} is created"
    else:
        assert re.search(rf"useradd\b[^&;]*\b{user}\b", created), f"no user {user} is created"
    env = runtime.env()
    check_variables(["cronfence"], env, options, "Dockerfile ENV")
    check_variables(BINARIES, re.findall(r"\bCRONFENCE_[A-Z0-9_]+", DOCKERFILE.read_text()),
                    options, "Dockerfile")
    listen = env.get("CRONFENCE_LISTEN", "")
    assert listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), f"CRONFENCE_LISTEN={listen}"
    exposed = " ".join(runtime.all("EXPOSE")).split()
    assert str(port_of(listen, 8080)) in [e.split("/")[0] for e in exposed]
    volumes = " ".join(runtime.all("VOLUME")).replace('"', " ").strip("[] ").split()
    database_folder = os.path.dirname(env.get("CRONFENCE_DB", ""))
    assert database_folder in [v.strip(",[]") for v in volumes], \
        f"the database folder {database_folder!r} is no VOLUME ({volumes})"


def health_command(runtime):
    checks = runtime.all("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    command = re.sub(r"^(--\S+\s+)*", "", checks[-1])
    assert command.startswith("CMD "), f"HEALTHCHECK {checks[-1]}"
    command = command[4:].strip()
    if command.startswith("["):
        return yaml.safe_load(command)
    return ["/bin/sh", "-c", command]


def health_check_argv(runtime):
    """The image's HEALTHCHECK command, run from this build when it names one of the binaries."""
    command = health_command(runtime)
    if command[0] in BINARIES:
        return [str(BIN_DIR / command[0])] + command[1:]
    tool = shutil.which(command[0]) if command[0] != "/bin/sh" else shutil.which(
        shlex.split(command[2])[0])
    assert tool, f"{command} needs a program this machine lacks"
    assert package_of(tool) in apt_installed(runtime), \
        f"the runtime stage does not install {package_of(tool)}, which the health check uses"
    return command


def image_env(runtime, tmp_path, listen):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONFENCE_")}
    env.update(runtime.env())
    env["CRONFENCE_LISTEN"] = listen
    env["CRONFENCE_DB"] = str(tmp_path / os.path.basename(env.get("CRONFENCE_DB", "x.db")))
    env["CRONFENCE_ADMIN_TOKEN"] = "health-check-test-admin-token"
    return env


def test_dockerfile_health_check_asks_healthz_where_cronfence_listens(runtime, tmp_path):
    """The image's HEALTHCHECK, run with the image's environment (its 0.0.0.0, then a
    specific address, each on a free port), passes against the real instance and fails
    once it is gone."""
    assert "healthz" in " ".join(health_command(runtime)) or \
        health_command(runtime)[:2] == ["cronfence", "--healthcheck"]
    command = health_check_argv(runtime)
    host = runtime.env().get("CRONFENCE_LISTEN", "0.0.0.0:8080").rsplit(":", 1)[0]
    for listen in (f"{host}:{free_port()}", f"127.0.0.2:{free_port()}"):
        env = image_env(runtime, tmp_path, listen)
        proc = subprocess.Popen([str(BIN_DIR / "cronfence")], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout.readline().startswith("listening on "), "cronfence did not start"
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, \
                f"health check fails on a live instance on {listen}: {result.stderr}"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc.stdout.close()
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, f"the health check passes with no instance on {listen}"


def children(pid):
    try:
        return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
                .split()]
    except FileNotFoundError:
        return []


def test_health_check_reads_the_listen_flag_of_process_one(runtime, tmp_path):
    """In a container the address may come from a flag (compose `command:`), which a
    HEALTHCHECK command does not get: with cronfence as process 1 of a pid namespace,
    listening where its --listen flag says (not where CRONFENCE_LISTEN says), the image's
    check run inside that namespace passes."""
    command = health_check_argv(runtime)
    if command[0] != str(BIN_DIR / "cronfence"):
        pytest.skip("the health check is not cronfence --healthcheck")
    if not (shutil.which("unshare") and shutil.which("nsenter")) or os.geteuid() != 0:
        pytest.skip("needs root with unshare and nsenter (util-linux)")
    env = image_env(runtime, tmp_path, f"127.0.0.1:{free_port()}")  # not where it listens
    listen = f"127.0.0.3:{free_port()}"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc",
                             str(BIN_DIR / "cronfence"), "--listen", listen], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            pytest.skip("unshare --pid is not permitted here")
        assert line.strip() == f"listening on {listen}"
        inner = wait_for(lambda: children(proc.pid), timeout=10, what="process 1")[0]
        inside = ["nsenter", "--target", str(inner), "--pid", "--mount"] + command
        result = subprocess.run(inside, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"health check fails on {listen}: {result.stderr}"
        # Outside the namespace process 1 is not cronfence: only the environment counts.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, "the check passed where nothing listens"
    finally:
        # unshare ignores SIGTERM while it waits: stop cronfence itself, by its pid.
        for pid in children(proc.pid) or [proc.pid]:
            os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()


# ---- docker/Dockerfile.dockerignore ----

def dockerignore_regex(pattern):
    """A pattern of a .dockerignore as Docker matches it against a cleaned relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules():
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((exception, dockerignore_regex(pattern)))
    return rules


def sent_to_docker(path, rules):
    """Whether the build context keeps the relative path (its folders are checked too)."""
    parts = path.split("/")
    excluded = False
    for exception, regex in rules:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not exception
    return not excluded


def test_dockerignore_keeps_out_build_folders_and_data_but_not_the_source():
    rules = dockerignore_rules()
    folders = set(make_build_folders("build", "asan", "fuzz"))
    assert len(folders) == 3, f"make -n shows the build folders {folders}"
    for path in [f"{folder}/CMakeCache.txt" for folder in folders] + [
            "tests/e2e/node_modules/x/index.js", "cronfence.db", "cronfence.db-wal",
            "cluster-data/redis0/appendonlydir/x.aof", "tests/integration/__pycache__/x.pyc"]:
        assert not sent_to_docker(path, rules), f"{path} would be sent to the build"
    # What the build reads: the Makefile, CMakeLists.txt and the folders it names.
    read = re.findall(r"\$\{CMAKE_SOURCE_DIR\}/([\w.-]+)", (REPO / "CMakeLists.txt").read_text())
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                             text=True).stdout.split()
    if not tracked:
        tracked = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()]
    needed = [p for p in tracked if p.split("/")[0] in set(read) | {"Makefile", "CMakeLists.txt"}]
    assert "Makefile" in needed and any(p.startswith("server/") for p in needed)
    dropped = [p for p in needed if not sent_to_docker(p, rules)]
    assert not dropped, f"the build needs {dropped[:5]}, which would not be sent"


# ---- docker/cronfence.service and docker/cronfence.env ----

def unit_sections(text):
    """{section: {key: [values]}} of a systemd unit file."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not a unit file line: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit(options):
    unit = unit_sections(UNIT_FILE.read_text())
    assert {"Unit", "Service", "Install"} <= set(unit), f"sections {sorted(unit)}"
    service = unit["Service"]
    last = {key: values[-1] for key, values in service.items()}
    assert last.get("Type", "simple") in ("simple", "exec"), "cronfence does not sd_notify"
    exec_start = shlex.split(last["ExecStart"].lstrip("-@:+!"))
    assert os.path.isabs(exec_start[0]) and os.path.basename(exec_start[0]) == "cronfence"
    check_arguments("cronfence", exec_start[1:], options, "ExecStart")
    variables = [v.split("=")[0] for value in service.get("Environment", [])
                 for v in shlex.split(value)]
    check_variables(["cronfence"], variables, options, "Environment=")
    assert "/etc/cronfence/cronfence.env" in last.get("EnvironmentFile", "")
    assert last.get("DynamicUser") == "yes" or last.get("User", "root") not in ("root", "0")
    assert last.get("StateDirectory") == "cronfence"
    database = dict(v.split("=", 1) for value in service.get("Environment", [])
                    for v in shlex.split(value)).get("CRONFENCE_DB", "")
    assert database.startswith(("/var/lib/cronfence/", "%S/cronfence/")), \
        f"CRONFENCE_DB={database!r} is outside the StateDirectory"
    for key, allowed in (("NoNewPrivileges", {"yes"}), ("ProtectSystem", {"strict"}),
                         ("ProtectHome", {"yes", "read-only", "tmpfs"}),
                         ("PrivateTmp", {"yes"})):
        assert last.get(key) in allowed, f"{key}={last.get(key)}"
    assert last.get("KillSignal", "SIGTERM") in ("SIGTERM", "TERM", "15")
    assert last.get("Restart") in ("on-failure", "always")
    grace_ms = DEFAULT_SHUTDOWN_GRACE_MS
    assert duration_s(last.get("TimeoutStopSec", "90s")) > grace_ms / 1000, \
        "TimeoutStopSec is not longer than --shutdown-grace-ms"
    if "ExecReload" in last:
        assert "HUP" in last["ExecReload"]
    assert unit["Install"].get("WantedBy") == ["multi-user.target"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify and an offline security score, on a copy whose ExecStart
    is the binary built here (the unit names where it is installed, absent here)."""
    unit = tmp_path / UNIT_FILE.name
    text = UNIT_FILE.read_text()
    text = re.sub(r"^ExecStart=(\S*/)?cronfence\b", f"ExecStart={BIN_DIR / 'cronfence'}", text,
                  flags=re.M)
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        f"systemd-analyze verify: {result.stdout}{result.stderr}"
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                             str(unit)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert result.returncode == 0, f"exposure above 2.0: {result.stdout[-300:]}"


def test_env_sample_names_only_real_variables(options):
    names = re.findall(r"^#?\s*(CRONFENCE_[A-Z0-9_]+)=", ENV_SAMPLE.read_text(), re.M)
    assert names
    check_variables(["cronfence"], names, options, "cronfence.env")
    unit_text = UNIT_FILE.read_text()
    assert ENV_SAMPLE.name in unit_text, "the unit does not read the sample's file name"


def test_no_machine_paths_in_the_container_files():
    for path in sorted(DOCKER.iterdir()):
        text = path.read_text()
        for pattern in (r"/work/", r"/home/\w", r"/root/", r"/tmp/"):
            assert not re.search(pattern, text), f"{path.name} names a machine path ({pattern})"
