"""Harness for the integration tests: the real cronfence and cronfence-receiver
binaries on free loopback ports, driven over HTTP like a user would.

The binaries come from $CRONFENCE_BIN_DIR (default: build/ at the top of the
repository). With $CRONFENCE_SANITIZED set they are the ASan/UBSan build: any
sanitizer report on a process's stderr, or a non-zero exit after SIGTERM,
fails the test that started it.

With $CRONFENCE_CONTRACT_LOG set, every HTTP exchange with a cronfence
instance (not with the webhook receiver or the tests' own targets) is
appended to that file as one JSON line, for tests/contract/validate.mjs to
check against api/openapi.yaml.
"""

import base64
import datetime
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPConnection, HTTPException

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("CRONFENCE_BIN_DIR", REPO / "build"))
SANITIZED = bool(os.environ.get("CRONFENCE_SANITIZED"))
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-tests-012345678"
SECRET = "receiver-secret-for-tests-0123456789"
# Sanitized binaries are slower to start and to answer.
SLOW = 3 if SANITIZED else 1

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def ms(text):
    """RFC 3339 UTC with milliseconds -> Unix ms."""
    moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)


def iso(value_ms):
    """Unix ms -> RFC 3339 UTC with milliseconds, as the API writes times."""
    moment = datetime.datetime.fromtimestamp(value_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value_ms % 1000:03d}Z"


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a truthy value; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def listen_address(line):
    """HOST:PORT of a 'listening on HOST:PORT' line, or of its --log-format json form
    {"msg": "listening on", "listen": "HOST:PORT", ...}; None for any other line."""
    if line.startswith("listening on "):
        return line[len("listening on "):]
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if isinstance(event, dict) and event.get("msg") == "listening on":
            return event.get("listen")
    return None


class Process:
    """A child process whose stdout announces 'listening on HOST:PORT' (as text, or as a
    JSON line with --log-format json)."""

    def __init__(self, argv, env, workdir, name):
        self.argv = argv
        self.env = env
        self.workdir = pathlib.Path(workdir)
        self.name = name
        self.proc = None
        self.stdout_lines = []
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.port = None
        self.exit_code = None

    def start(self, expect_ready=True):
        self.stdout_lines = []
        self.exit_code = None
        stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
            stderr=stderr, stdin=subprocess.DEVNULL)
        stderr.close()
        ready = threading.Event()

        def pump():
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.stdout_lines.append(line)
                listen = listen_address(line)
                if listen is not None:
                    self.port = int(listen.rsplit(":", 1)[1])
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not expect_ready:
            return self
        deadline = time.monotonic() + 15 * SLOW
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not start (exit {self.proc.poll()}): {self.stderr()}")
        return self

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the process by its pid; returns its exit code."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not stop on signal {sig}")
        self.exit_code = self.proc.returncode
        self.proc = None
        return self.exit_code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def wait_exit(self, timeout=30):
        """Waits for a process that must exit on its own (a refused start); returns its
        exit code. Still running after timeout, it is killed by its pid."""
        try:
            return self.proc.wait(timeout * SLOW)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def check_clean(self):
        """Fails when a sanitizer reported anything on stderr."""
        text = self.stderr()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"{self.name}: sanitizer report:\n{text[-6000:]}"


# ---------------------------------------------------------------------------
# Recording exchanges for the contract test (tests/contract/)
# ---------------------------------------------------------------------------

CONTRACT_LOG = os.environ.get("CRONFENCE_CONTRACT_LOG")
# Ports of the cronfence instances running now: only exchanges with them are recorded.
INSTANCE_PORTS = set()
# Request headers the spec says something about; others are not recorded.
RECORDED_REQUEST_HEADERS = ("authorization", "content-type", "if-match", "last-event-id",
                            "accept")
# Larger request bodies are recorded by their size only (the server refuses them with 413).
RECORDED_BODY_MAX_BYTES = 1024 * 1024
# Events of one stream recorded at most (the rest are counted).
RECORDED_EVENTS_MAX = 200
_contract_lock = threading.Lock()


def _redacted(name, value):
    """Tokens are not written to the log, only their scheme."""
    if name.lower() != "authorization":
        return value
    scheme, _, token = value.partition(" ")
    return f"{scheme} <redacted>" if token else "<redacted>"


def _body_fields(prefix, body):
    """The log fields of a body (bytes or str): text, base64 when not UTF-8, or only its size."""
    if body is None:
        return {prefix: None}
    if isinstance(body, str):
        body = body.encode()
    if len(body) > RECORDED_BODY_MAX_BYTES:
        return {prefix: None, prefix + "_bytes": len(body), prefix + "_truncated": True}
    try:
        return {prefix: body.decode()}
    except UnicodeDecodeError:
        return {prefix: None, prefix + "_base64": base64.b64encode(body).decode()}


def is_instance_url(url):
    """Whether url addresses a cronfence instance started by the tests."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname in ("127.0.0.1", "localhost") and parts.port in INSTANCE_PORTS


def record_exchange(method, target, request_headers, request_body, status, response_headers,
                    response_body, **extra):
    """Appends one exchange with a cronfence instance to $CRONFENCE_CONTRACT_LOG, if set.

    target is the path with its query as sent; headers are (name, value)
    pairs or a mapping; bodies are bytes, str or None. Thread-safe.
    """
    if not CONTRACT_LOG:
        return
    if hasattr(request_headers, "items"):
        request_headers = request_headers.items()
    if hasattr(response_headers, "items"):
        response_headers = response_headers.items()
    entry = {
        "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
        "method": method,
        "path": target,
        "request_headers": {name: _redacted(name, value) for name, value in request_headers
                            if name.lower() in RECORDED_REQUEST_HEADERS},
    }
    entry.update(_body_fields("request_body", request_body))
    entry["status"] = status
    entry["response_headers"] = [[name, value] for name, value in response_headers]
    entry.update(_body_fields("response_body", response_body))
    entry.update(extra)
    line = json.dumps(entry) + "\n"
    with _contract_lock:
        with open(CONTRACT_LOG, "a", encoding="utf-8") as log:
            log.write(line)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def http(method, url, body=None, headers=None, timeout=30):
    """One HTTP request; body may be bytes, str, or a JSON-able object."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout * SLOW) as reply:
            response = Response(reply.status, reply.headers, reply.read().decode())
    except urllib.error.HTTPError as error:
        response = Response(error.code, error.headers, error.read().decode())
    if CONTRACT_LOG and is_instance_url(url):
        parts = urllib.parse.urlsplit(url)
        # header_items() includes what urllib added itself, such as its default Content-Type.
        record_exchange(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                        request.header_items(), data, response.status, response.headers.items(),
                        response.body)
    return response


class Instance(Process):
    """A cronfence instance (standalone unless extra args say otherwise)."""

    def __init__(self, workdir, name="cronfence", db=None, args=(), env=None, tokens=True):
        workdir = pathlib.Path(workdir)
        self.db = pathlib.Path(db) if db else workdir / f"{name}.db"
        argv = [str(BIN_DIR / "cronfence"), "--listen", "127.0.0.1:0", "--db", str(self.db)]
        if tokens:
            argv += ["--admin-token", ADMIN_TOKEN, "--viewer-token", VIEWER_TOKEN]
        argv += list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        super().__init__(argv, full_env, workdir, name)
        self.token = ADMIN_TOKEN if tokens else None

    def start(self, expect_ready=True, wait_catalog=True):
        super().start(expect_ready)
        if self.port is not None:
            INSTANCE_PORTS.add(self.port)
        if expect_ready and self.token is None:
            wait_for(lambda: any("#token=" in line for line in self.stdout_lines),
                     what="dashboard line")
            line = next(line for line in self.stdout_lines if "#token=" in line)
            if line.startswith("{"):  # --log-format json: {"msg": "dashboard", "url": ...}
                line = json.loads(line)["url"]
            self.token = line.split("#token=", 1)[1]
        if expect_ready and wait_catalog:
            # It listens at once and loads its catalog meanwhile; /readyz says when the
            # scheduler runs (whatever the quorum says, in a cluster).
            wait_for(self.scheduler_running, timeout=60, what=f"{self.name}'s catalog loaded")
        return self

    def scheduler_running(self):
        try:
            reply = http("GET", self.url + "/readyz")
        except OSError:
            return False
        return reply.json is not None and reply.json.get("scheduler") is True

    def stop(self, sig=signal.SIGTERM, timeout=30):
        INSTANCE_PORTS.discard(self.port)
        return super().stop(sig, timeout)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def api(self, method, path, body=None, headers=None, token="admin"):
        headers = dict(headers or {})
        if token == "admin":
            token = self.token
        elif token == "viewer":
            token = VIEWER_TOKEN
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return http(method, self.url + path, body, headers)

    def runs(self, job=None, status=None, limit=500):
        """Every run (following cursors), newest first."""
        query = [f"limit={limit}"]
        if job:
            query.append(f"job={job}")
        if status:
            query.append(f"status={status}")
        items, cursor = [], None
        while True:
            suffix = f"&cursor={urllib.request.quote(cursor)}" if cursor else ""
            reply = self.api("GET", "/api/v1/runs?" + "&".join(query) + suffix)
            assert reply.status == 200, reply
            items += reply.json["items"]
            cursor = reply.json["next_cursor"]
            if not cursor:
                return items


class EventStream:
    """A client of GET /api/v1/events that parses the stream on its own thread.

    events holds every dispatched event as a dict with "id" (None when the
    event had none), "event" and "data" (parsed JSON); comments counts the
    comment lines (keepalives). Close it to drop the connection.
    """

    def __init__(self, instance, token="admin", last_event_id=None, read=True):
        self.events = []
        self.comments = 0
        self.retry = None
        self.closed = threading.Event()
        self.lock = threading.Lock()
        headers = {"Authorization": f"Bearer {instance.token if token == 'admin' else token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn = HTTPConnection("127.0.0.1", instance.port, timeout=60 * SLOW)
        self.conn.request("GET", "/api/v1/events", headers=headers)
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.body = None
        self.request_headers = headers
        self.recorded = False
        if self.status != 200:
            self.body = self.response.read().decode(errors="replace")
            record_exchange("GET", "/api/v1/events", headers, None, self.status,
                            self.headers.items(), self.body)
            self.recorded = True
        if self.status == 200 and read:
            threading.Thread(target=self._pump, daemon=True).start()
        else:
            self.closed.set()

    def _pump(self):
        fields = {}
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if "event" in fields or "data" in fields:
                        event = {"id": fields.get("id"), "event": fields.get("event", "message"),
                                 "data": json.loads(fields.get("data", "null"))}
                        with self.lock:
                            self.events.append(event)
                    fields = {}
                elif line.startswith(":"):
                    with self.lock:
                        self.comments += 1
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "retry":
                        self.retry = int(value)
                    elif name == "data" and "data" in fields:
                        fields["data"] += "\n" + value
                    else:
                        fields[name] = value
        except (OSError, ValueError, AttributeError, HTTPException):
            pass
        finally:
            self.closed.set()

    def of(self, kind, predicate=lambda data: True):
        """The events of one kind whose data satisfies predicate, in order."""
        with self.lock:
            return [e for e in self.events if e["event"] == kind and predicate(e["data"])]

    def wait(self, kind, predicate=lambda data: True, timeout=15, what=None):
        """Waits for an event of kind whose data satisfies predicate; returns it."""
        found = wait_for(lambda: self.of(kind, predicate), timeout=timeout,
                         what=what or f"a {kind} event")
        return found[0]

    def close(self):
        # Shut the socket down first: the reading thread holds the response's
        # buffer lock while it waits, and would block close() forever.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.closed.wait(5)
        self.response.close()
        self.conn.close()
        if not self.recorded:
            # A stream is recorded once it is over, with the events it carried.
            self.recorded = True
            with self.lock:
                events = self.events[:RECORDED_EVENTS_MAX]
                more = len(self.events) - len(events)
            record_exchange("GET", "/api/v1/events", self.request_headers, None, self.status,
                            self.headers.items(), None, stream=True, events=events,
                            events_not_recorded=more, retry=self.retry)


class Receiver(Process):
    """The reference webhook target; deliveries() reads its JSON-lines log."""

    def __init__(self, workdir, name="receiver", secret=SECRET):
        workdir = pathlib.Path(workdir)
        self.log = workdir / f"{name}.jsonl"
        self.db = workdir / f"{name}.db"
        argv = [str(BIN_DIR / "cronfence-receiver"), "--listen", "127.0.0.1:0",
                "--db", str(self.db), "--secret", secret, "--log", str(self.log)]
        super().__init__(argv, dict(os.environ), workdir, name)

    def hook(self, path="/hook", **knobs):
        query = "&".join(f"{key}={value}" for key, value in knobs.items())
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def deliveries(self, job=None):
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [d for d in lines if job is None or d["job"] == job]


@pytest.fixture
def processes():
    """Tracks started processes; stops them by pid and checks them for sanitizer reports."""
    started = []
    yield started
    failures = []
    for process in started:
        code = process.stop()
        try:
            process.check_clean()
        except AssertionError as error:
            failures.append(str(error))
        if SANITIZED and code not in (0, None, -signal.SIGKILL):
            failures.append(f"{process.name} exited {code}: {process.stderr()[-4000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def start_instance(tmp_path, processes):
    """start_instance(name=..., db=..., args=..., env=..., tokens=...) -> a running Instance."""

    def start(**kwargs):
        instance = Instance(tmp_path, **kwargs)
        processes.append(instance)
        return instance.start()

    return start


@pytest.fixture
def instance(start_instance):
    return start_instance()


@pytest.fixture
def nodes(tmp_path):
    """Three started redis-server lock nodes (see redisnode.py), kill -9'd afterwards."""
    from redisnode import start_nodes

    started = start_nodes(tmp_path, 3)
    yield started
    for node in started:
        node.kill9()


@pytest.fixture
def receiver(tmp_path, processes):
    target = Receiver(tmp_path)
    processes.append(target)
    return target.start()


def trigger(instance, name):
    """POST /jobs/{name}/trigger until it is taken (202), and returns that answer. A job
    that fires every second may have a scheduled run in flight at that instant, and under
    overlap forbid a manual run is then refused (409, "in flight"): it is asked again."""
    path = f"/api/v1/jobs/{urllib.parse.quote(name, safe='')}/trigger"

    def taken():
        reply = instance.api("POST", path)
        if reply.status == 409 and "in flight" in reply.body:
            return None
        assert reply.status == 202, reply
        return reply

    return wait_for(taken, timeout=30, what=f"a manual trigger of {name} taken")


def with_fields(body, fields):
    """body with fields set on it; a dict merges into the dict body already holds there
    (webhook={"headers": ...} keeps the URL). Returns body."""
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    return body


def job_body(name, url, schedule="* * * * * *", **fields):
    """A job definition signed with the receiver's secret."""
    return with_fields({"name": name, "schedule": schedule, "webhook": {"url": url},
                        "signing_secret": SECRET}, fields)
