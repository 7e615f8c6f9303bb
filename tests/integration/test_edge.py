"""The HTTP edge and the edges of input (DESIGN §6 Auth, §9; issue 13 items 5 and 6).

The first part is a table of requests, each refused with 422 (or answered
within bounds) by one shared instance whose catalog must not change. The
rest starts real instances and drives them over raw sockets where a normal
client could not: bodies that are not authorised, clients that never
finish their headers, a second instance on a used port, a Host of another
name in tokenless mode, and repeated wrong tokens.
"""

import resource
import socket
import time
import urllib.parse

import pytest

from conftest import ADMIN_TOKEN, SANITIZED, SLOW, Instance, http, wait_for, with_fields

URL = "http://127.0.0.1:9/hook"
YEARLY = "0 0 1 1 *"
MIB = 1024 * 1024
EXISTING = "existing"


def job(name="fresh", **fields):
    return with_fields({"name": name, "schedule": YEARLY, "webhook": {"url": URL}}, fields)


def preview(**query):
    return "/api/v1/schedule/preview?" + urllib.parse.urlencode(query)


# (id, method, path, body, status, fields named in errors[].field; None: the body is checked
# by the case's own check below).
CASES = [
    # Unknown query parameters, on every endpoint: refused with 422, naming them.
    ("jobs-misspelt", "GET", "/api/v1/jobs?instnace=cf-1", None, 422, ("instnace",)),
    ("jobs-order-not-sort", "GET", "/api/v1/jobs?order=name", None, 422, ("order",)),
    ("runs-misspelt", "GET", "/api/v1/runs?instnace=cf-1", None, 422, ("instnace",)),
    ("runs-trigger-misspelt", "GET", "/api/v1/runs?triger=manual", None, 422, ("triger",)),
    ("runs-two-unknown", "GET", "/api/v1/runs?a=1&b=2&limit=5", None, 422, ("a", "b")),
    ("job-get", "GET", f"/api/v1/jobs/{EXISTING}?verbose=1", None, 422, ("verbose",)),
    ("job-put", "PUT", f"/api/v1/jobs/{EXISTING}?force=1", job(EXISTING), 422, ("force",)),
    ("job-patch", "PATCH", f"/api/v1/jobs/{EXISTING}?x=1", {"description": "x"}, 422, ("x",)),
    ("job-delete", "DELETE", f"/api/v1/jobs/{EXISTING}?cascade=1", None, 422, ("cascade",)),
    ("job-trigger", "POST", f"/api/v1/jobs/{EXISTING}/trigger?now=1", None, 422, ("now",)),
    ("job-pause", "POST", f"/api/v1/jobs/{EXISTING}/pause?x=", None, 422, ("x",)),
    ("job-resume", "POST", f"/api/v1/jobs/{EXISTING}/resume?x", None, 422, ("x",)),
    ("jobs-create", "POST", "/api/v1/jobs?dry_run=1", job(), 422, ("dry_run",)),
    ("run-get", "GET", "/api/v1/runs/some-run?x=1", None, 422, ("x",)),
    ("run-retry", "POST", "/api/v1/runs/some-run/retry?x=1", None, 422, ("x",)),
    ("jobs-validate", "POST", "/api/v1/jobs/validate?x=1", {"jobs": []}, 422, ("x",)),
    ("signing-secret", "GET", "/api/v1/signing-secret?x=1", None, 422, ("x",)),
    ("signing-secret-rotate", "POST", "/api/v1/signing-secret/rotate?x=1", None, 422, ("x",)),
    ("openapi-json", "GET", "/api/v1/openapi.json?x=1", None, 422, ("x",)),
    ("preview", "GET", preview(schedule="* * * * *", tz="UTC"), None, 422, ("tz",)),
    ("cluster", "GET", "/api/v1/cluster?x=1", None, 422, ("x",)),
    ("events", "GET", "/api/v1/events?since=1", None, 422, ("since",)),
    ("openapi", "GET", "/api/v1/openapi.yaml?x=1", None, 422, ("x",)),
    ("metrics", "GET", "/metrics?name=x", None, 422, ("name",)),
    ("healthz", "GET", "/healthz?verbose=1", None, 422, ("verbose",)),
    ("readyz", "GET", "/readyz?verbose=1", None, 422, ("verbose",)),
    # A parameter given twice is ambiguous.
    ("limit-twice", "GET", "/api/v1/jobs?limit=1&limit=2", None, 422, ("limit",)),
    # A NUL byte (%00) anywhere in the path or the query.
    ("nul-in-schedule", "GET", "/api/v1/schedule/preview?schedule=0+0+*+*+*%00garbage", None,
     422, ("schedule",)),
    ("nul-in-q", "GET", "/api/v1/jobs?q=exist%00ing", None, 422, ("q",)),
    ("nul-in-job-filter", "GET", "/api/v1/runs?job=existing%00", None, 422, ("job",)),
    ("nul-in-key", "GET", "/api/v1/jobs?li%00mit=5", None, 422, ("li?mit",)),
    ("nul-in-path", "GET", "/api/v1/jobs/exist%00ing", None, 422, ("path",)),
    ("nul-in-put-path", "PUT", "/api/v1/jobs/fresh%00x", job("fresh"), 422, ("path",)),
    ("nul-in-static-path", "GET", "/index.html%00.txt", None, 422, ("path",)),
    # Time zones: IANA names only.
    ("tz-localtime", "POST", "/api/v1/jobs", job(timezone="localtime"), 422, ("timezone",)),
    ("tz-posixrules", "POST", "/api/v1/jobs", job(timezone="posixrules"), 422, ("timezone",)),
    ("tz-posix-dir", "POST", "/api/v1/jobs", job(timezone="posix/Europe/Berlin"), 422,
     ("timezone",)),
    ("tz-right-dir", "POST", "/api/v1/jobs", job(timezone="right/UTC"), 422, ("timezone",)),
    ("tz-factory", "POST", "/api/v1/jobs", job(timezone="Factory"), 422, ("timezone",)),
    ("tz-lowercase", "POST", "/api/v1/jobs", job(timezone="europe/berlin"), 422, ("timezone",)),
    ("preview-tz-localtime", "GET", preview(schedule="* * * * *", timezone="localtime"), None,
     422, ("timezone",)),
    ("preview-tz-posix", "GET", preview(schedule="* * * * *", timezone="posix/UTC"), None, 422,
     ("timezone",)),
    # Header values: no control character but tab.
    ("header-vt", "POST", "/api/v1/jobs", job(webhook={"headers": {"X-Team": "a\x0bb"}}), 422,
     ("webhook.headers.X-Team",)),
    ("header-ff", "POST", "/api/v1/jobs", job(webhook={"headers": {"X-Team": "a\x0cb"}}), 422,
     ("webhook.headers.X-Team",)),
    ("header-del", "POST", "/api/v1/jobs", job(webhook={"headers": {"X-Team": "a\x7fb"}}), 422,
     ("webhook.headers.X-Team",)),
    ("header-esc", "POST", "/api/v1/jobs", job(webhook={"headers": {"X-Team": "\x1b[31m"}}), 422,
     ("webhook.headers.X-Team",)),
    ("content-type-vt", "POST", "/api/v1/jobs",
     job(webhook={"raw_body": True, "body": "x", "content_type": "text/plain\x0b"}), 422,
     ("webhook.content_type",)),
    # URLs: at most 2048 bytes.
    ("url-2049-bytes", "POST", "/api/v1/jobs",
     job(webhook={"url": URL + "?" + "a" * (2049 - len(URL) - 1)}), 422, ("webhook.url",)),
    ("url-900-kb", "POST", "/api/v1/jobs", job(webhook={"url": URL + "?" + "a" * 900_000}), 422,
     ("webhook.url",)),
    # Cloud metadata and link-local, refused although --webhook-allow is 0.0.0.0/0,::/0.
    ("metadata-v4", "POST", "/api/v1/jobs",
     job(webhook={"url": "http://169.254.169.254/latest/meta-data/"}), 422, ("webhook.url",)),
    ("metadata-v4-decimal", "POST", "/api/v1/jobs", job(webhook={"url": "http://2852039166/"}),
     422, ("webhook.url",)),
    ("metadata-aws-v6", "POST", "/api/v1/jobs",
     job(webhook={"url": "http://[fd00:ec2::254]/latest/"}), 422, ("webhook.url",)),
    ("metadata-alibaba", "POST", "/api/v1/jobs",
     job(webhook={"url": "http://100.100.100.200/latest/"}), 422, ("webhook.url",)),
    ("metadata-google-name", "POST", "/api/v1/jobs",
     job(webhook={"url": "http://metadata.google.internal/computeMetadata/v1/"}), 422,
     ("webhook.url",)),
    ("link-local-v4", "POST", "/api/v1/jobs", job(webhook={"url": "http://169.254.1.1/"}), 422,
     ("webhook.url",)),
    ("link-local-v6", "POST", "/api/v1/jobs", job(webhook={"url": "http://[fe80::1]/"}), 422,
     ("webhook.url",)),
]

# Requests that must succeed at the edges (and are undone afterwards).
ACCEPTED = [
    ("header-tab", job(webhook={"headers": {"X-Team": "ops\tplatform"}})),
    ("url-2048-bytes", job(webhook={"url": URL + "?" + "a" * (2048 - len(URL) - 1)})),
    ("allowed-private-address", job(webhook={"url": "http://10.1.2.3/hook"})),
    ("tz-iana-link", job(timezone="US/Eastern")),
    ("tz-etc", job(timezone="Etc/GMT+5")),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One instance for the tables, with a catch-all allow list, holding one job."""
    workdir = tmp_path_factory.mktemp("edge")
    inst = Instance(workdir, name="edge", args=["--webhook-allow", "0.0.0.0/0,::/0"])
    inst.start()
    reply = inst.api("PUT", f"/api/v1/jobs/{EXISTING}", job(EXISTING))
    assert reply.status == 201, reply
    yield inst
    code = inst.stop()
    inst.check_clean()
    if SANITIZED:
        assert code == 0, f"exit {code}: {inst.stderr()[-4000:]}"


def snapshot(inst):
    jobs = inst.api("GET", "/api/v1/jobs?limit=500")
    runs = inst.api("GET", "/api/v1/runs?limit=500")
    assert jobs.status == 200 and runs.status == 200, (jobs, runs)
    return ([{k: v for k, v in j.items() if k != "next_fire_at"} for j in jobs.json["items"]],
            runs.json["items"])


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_edge_request_is_refused_and_changes_nothing(shared, case):
    _, method, path, body, status, fields = case
    before = snapshot(shared)
    reply = shared.api(method, path, body)
    assert reply.status == status, reply
    assert reply.headers["Content-Type"].startswith("application/problem+json"), reply.headers
    doc = reply.json
    assert doc["status"] == status and doc["title"] and doc["detail"], doc
    named = [error["field"] for error in doc["errors"]]
    assert all(error["message"] for error in doc["errors"]), doc
    for field in fields:
        assert field in named, (field, doc)
    assert snapshot(shared) == before


@pytest.mark.parametrize("case", ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_edge_values_inside_the_limits_are_accepted(shared, case):
    _, body = case
    reply = shared.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    assert shared.api("DELETE", "/api/v1/jobs/fresh").status == 204


def test_unknown_parameters_are_refused_without_a_token_after_the_401(shared):
    """An unauthenticated request learns nothing from its parameters: 401 comes first."""
    reply = http("GET", shared.url + "/api/v1/runs?instnace=x")
    assert reply.status == 401, reply


def test_preview_never_wraps_past_year_9999(shared):
    reply = shared.api("GET", preview(schedule=YEARLY, count=5, **{"from": "9997-06-01T00:00:00Z"}))
    assert reply.status == 200, reply
    assert reply.json["next"] == ["9998-01-01T00:00:00.000Z", "9999-01-01T00:00:00.000Z"]
    reply = shared.api("GET", preview(schedule="@every 1h", count=100,
                                      **{"from": "9999-12-31T20:30:00Z"}))
    assert reply.status == 200, reply
    assert reply.json["next"] == [f"9999-12-31T{h}:00:00.000Z" for h in (21, 22, 23)]
    reply = shared.api("GET", preview(schedule=YEARLY, **{"from": "9999-06-01T00:00:00Z"}))
    assert reply.status == 200 and reply.json["next"] == [], reply


def test_documented_parameters_still_work(shared):
    assert shared.api("GET", "/api/v1/jobs?q=exist&paused=false&limit=5").status == 200
    assert shared.api("GET", "/api/v1/runs?job=existing&status=failed&limit=5&instance=cf-1"
                      "&trigger=manual&since=2026-01-01T00:00:00Z&until=2030-01-01T00:00:00Z"
                      ).status == 200
    assert shared.api("GET", "/api/v1/jobs?sort=name").status == 200
    reply = shared.api("GET", "/api/v1/jobs?q=exist")
    assert [j["name"] for j in reply.json["items"]] == [EXISTING]
    # Static files take any query (cache busters).
    assert http("GET", shared.url + "/?v=3").status == 200


# ---------------------------------------------------------------------------
# Bodies: authorised before they are read, never buffered without a token
# ---------------------------------------------------------------------------


def raw_request(port, head, body=b"", read=True, timeout=30):
    """Sends head (and body), returns the bytes of the answer (or b"" if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as sock:
        sock.sendall(head + body)
        return read_answer(sock) if read else b""


def read_answer(sock):
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")]
                if lengths and len(rest) >= lengths[0]:
                    break
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def status_of(raw):
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split(b" ", 2)[1])


def post_head(port, length, token=None, extra=b""):
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
    return (b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\n" +
            auth + b"Content-Type: application/json\r\nContent-Length: " + str(length).encode() +
            b"\r\n" + extra + b"\r\n")


@pytest.mark.parametrize("token,status", [(None, 401), ("wrong-token", 401),
                                          (ADMIN_TOKEN, 413)],
                         ids=["no-token", "wrong-token", "admin-token"])
def test_a_large_body_is_401_before_413(shared, token, status):
    size = 1_100_000
    raw = raw_request(shared.port, post_head(shared.port, size, token), b"x" * size)
    assert status_of(raw) == status, raw[:300]
    # A client waiting for 100 Continue is answered at once, without sending the body.
    raw = raw_request(shared.port, post_head(shared.port, size, token, b"Expect: 100-continue\r\n"))
    assert status_of(raw) == status, raw[:300]


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_unauthenticated_uploads_are_not_buffered(start_instance):
    """200 unauthenticated 1 MiB uploads held open at once leave the RSS nearly flat."""
    inst = start_instance()
    before = vm_rss_kib(inst.proc.pid)
    socks = []
    try:
        for i in range(200):
            # Each from its own loopback address: a server that falls behind on a loaded
            # machine must not meet the per-address cap of connections waiting for headers.
            sock = socket.create_connection(("127.0.0.1", inst.port), timeout=60 * SLOW,
                                            source_address=(f"127.0.1.{i + 1}", 0))
            # All of the body but its last byte: the server holds the request open.
            sock.sendall(post_head(inst.port, MIB) + b"x" * (MIB - 1))
            socks.append(sock)
        held = vm_rss_kib(inst.proc.pid)
        for sock in socks:
            sock.sendall(b"x")
        answers = [status_of(read_answer(sock)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers == [401] * 200
    # Buffering them would take 200 MiB; what libmicrohttpd keeps per connection is 32 KiB.
    growth_mib = (held - before) / 1024
    assert growth_mib < 40, f"RSS grew by {growth_mib:.1f} MiB while 200 uploads were held"
    assert http("GET", inst.url + "/healthz").status == 200


# ---------------------------------------------------------------------------
# Slow headers and the per-address cap
# ---------------------------------------------------------------------------


def raise_fd_limit(count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def closed_by_peer(sock, timeout):
    """Trickles a byte a second into sock until the server closes it; returns the seconds
    that took, or None when it was still open after timeout."""
    start = time.monotonic()
    sock.settimeout(1)
    while time.monotonic() - start < timeout:
        try:
            sock.sendall(b"a")
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def test_a_client_trickling_its_headers_is_dropped(instance):
    sock = socket.create_connection(("127.0.0.1", instance.port))
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        # It keeps sending (so an inactivity timeout never fires) but never ends its headers.
        assert closed_by_peer(sock, 60 * SLOW) is not None, "still connected after 60 s"
    finally:
        sock.close()
    assert http("GET", instance.url + "/healthz").status == 200


def test_healthz_answers_while_a_thousand_slow_clients_are_held(instance):
    raise_fd_limit(1000)
    socks = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", instance.port), timeout=30)
            sock.sendall(b"GET /hea")
            socks.append(sock)
        # A health checker on the same host gets through, again and again.
        for _ in range(5):
            reply = http("GET", instance.url + "/healthz", timeout=10)
            assert reply.status == 200, reply
        assert instance.api("GET", "/api/v1/jobs").status == 200
        # At most a few dozen of the slow ones are still held; the rest were dropped.
        open_now = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                open_now += sock.recv(1) != b""
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
        assert open_now <= 64, f"{open_now} slow clients still held"
    finally:
        for sock in socks:
            sock.close()
    assert instance.alive()


# ---------------------------------------------------------------------------
# Listening address, Host in tokenless mode, failed tokens
# ---------------------------------------------------------------------------


def test_a_second_instance_on_a_used_port_exits(start_instance, tmp_path):
    first = start_instance(name="first")
    second = Instance(tmp_path, name="second")
    second.argv[second.argv.index("--listen") + 1] = f"127.0.0.1:{first.port}"
    second.start(expect_ready=False)
    code = second.wait_exit()
    assert code not in (0, None), code
    assert "address already in use" in second.stderr(), second.stderr()[-2000:]
    assert not any(line.startswith("listening on") for line in second.stdout_lines)
    assert http("GET", first.url + "/healthz").status == 200


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tokenless")
    inst = Instance(workdir, name="tokenless", tokens=False)
    inst.start()
    yield inst
    code = inst.stop()
    inst.check_clean()
    if SANITIZED:
        assert code == 0, f"exit {code}: {inst.stderr()[-4000:]}"


HOSTS = [
    ("localhost", "localhost:{port}", 200),
    ("localhost-no-port", "localhost", 200),
    ("localhost-upper", "LOCALHOST:{port}", 200),
    ("ipv4", "127.0.0.1:{port}", 200),
    ("ipv4-other-loopback", "127.1.2.3:{port}", 200),
    ("ipv6", "[::1]:{port}", 200),
    ("rebinding-name", "evil.example:{port}", 421),
    ("rebinding-name-no-port", "evil.example", 421),
    ("localhost-subdomain", "localhost.evil.example:{port}", 421),
    ("public-ip", "93.184.216.34:{port}", 421),
    ("zero-address", "0.0.0.0:{port}", 421),
    ("empty", "", 421),
    ("bad-port", "localhost:http", 421),
]


@pytest.mark.parametrize("case", HOSTS, ids=[case[0] for case in HOSTS])
def test_tokenless_mode_answers_loopback_hosts_only(tokenless, case):
    _, host, status = case
    host = host.format(port=tokenless.port)
    for path, token in (("/healthz", None), ("/api/v1/jobs", tokenless.token)):
        auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
        raw = raw_request(tokenless.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " +
                          host.encode() + b"\r\n" + auth + b"Connection: close\r\n\r\n")
        assert status_of(raw) == status, (path, raw[:400])
        if status == 421:
            assert b"application/problem+json" in raw and b'"Host"' in raw, raw[:400]


def test_tokenless_mode_refuses_a_request_without_host(tokenless):
    raw = raw_request(tokenless.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status_of(raw) == 421, raw[:300]


def test_repeated_wrong_tokens_are_rate_limited(start_instance):
    inst = start_instance()
    # Requests without any token are not guesses: they do not count.
    for _ in range(60):
        assert http("GET", inst.url + "/api/v1/jobs").status == 401
    statuses = []
    while 429 not in statuses and len(statuses) < 500:
        statuses.append(inst.api("GET", "/api/v1/jobs", token=f"guess-{len(statuses)}").status)
    # The whole burst is answered 401 (refills while it runs only add to it), then 429.
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    assert len(statuses) > 50, statuses
    reply = inst.api("GET", "/api/v1/jobs", token="guess-again")
    assert reply.status == 429 and int(reply.headers["Retry-After"]) >= 1, reply
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    # While limited, not even the right token is looked at from that address (a refill
    # between two requests can let one through: then the address is limited again).
    right = []
    for _ in range(5):
        right.append(inst.api("GET", "/api/v1/jobs").status)
        if right[-1] == 429:
            break
        inst.api("GET", "/api/v1/jobs", token="guess-more")
    assert right[-1] == 429, right
    # Open endpoints stay open.
    assert http("GET", inst.url + "/healthz").status == 200
    wait_for(lambda: "authentication failures rate-limited" in inst.stderr(), what="log line")
    assert inst.stderr().count("authentication failures rate-limited") == 1
    # The budget comes back: one more try is allowed within a few seconds.
    wait_for(lambda: inst.api("GET", "/api/v1/jobs").status == 200, timeout=30,
             interval=0.5, what="the budget to refill")


def test_keep_alive_connections_still_work(instance):
    """The header deadline starts again after each answer, so a persistent connection
    serving several requests in a row is not cut."""
    with socket.create_connection(("127.0.0.1", instance.port), timeout=30) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            raw = read_answer(sock)
            assert status_of(raw) == 200, raw[:200]
