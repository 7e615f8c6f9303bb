"""Bad input is refused with a clear error and changes nothing (DESIGN G7, §9).

One instance serves the whole table (starting one per case would only cost
time): before and after every request the catalog and the run history are
read back and compared.
"""

import copy
import json
import socket
import urllib.parse

import pytest

from conftest import SANITIZED, Instance, http, wait_for

EXISTING = "existing"
YEARLY = "0 0 1 1 *"
URL = "http://127.0.0.1:9/hook"
MIB = 1024 * 1024


def valid(**changes):
    """A valid job definition; changes replace top-level members, None removes one."""
    body = {"name": "fresh", "schedule": YEARLY, "webhook": {"url": URL}}
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def hook(**changes):
    """A valid job whose webhook object has changes merged in."""
    webhook = {"url": URL}
    webhook.update(changes)
    return valid(webhook=webhook)


def retry(**changes):
    return valid(retry=changes)


def without_webhook_url():
    body = valid()
    body["webhook"] = {"method": "POST"}
    return body


def sized_body(total):
    """A job whose JSON text is exactly total bytes (its description grows)."""
    prefix = '{"name":"big","schedule":"' + YEARLY + '","webhook":{"url":"' + URL + \
        '"},"description":"'
    suffix = '"}'
    return (prefix + "x" * (total - len(prefix) - len(suffix)) + suffix).encode()


JSON = {"Content-Type": "application/json"}

# (id, method, path, body, extra headers, status, fields named in errors[].field).
# body: a dict/list is sent as JSON, bytes/str as they are. A field ending in
# ".*" matches any field under that prefix (header names are part of the path).
CASES = [
    # Malformed bodies: 400.
    ("not-json", "POST", "/api/v1/jobs", "not json", JSON, 400, ()),
    ("array-body", "POST", "/api/v1/jobs", "[1, 2, 3]", JSON, 400, ()),
    ("string-body", "POST", "/api/v1/jobs", '"a job"', JSON, 400, ()),
    ("null-body", "POST", "/api/v1/jobs", "null", JSON, 400, ()),
    ("empty-body", "POST", "/api/v1/jobs", "", JSON, 400, ()),
    ("trailing-garbage", "POST", "/api/v1/jobs", json.dumps(valid()) + " {}", JSON, 400, ()),
    ("truncated-json", "POST", "/api/v1/jobs", json.dumps(valid())[:-1], JSON, 400, ()),
    ("invalid-utf8", "POST", "/api/v1/jobs",
     b'{"name":"fresh","schedule":"' + YEARLY.encode() + b'","description":"\xff\xfe",'
     b'"webhook":{"url":"' + URL.encode() + b'"}}', JSON, 400, ()),
    ("duplicate-keys", "POST", "/api/v1/jobs",
     '{"name":"fresh","name":"other","schedule":"' + YEARLY + '","webhook":{"url":"' + URL +
     '"}}', JSON, 400, ()),
    ("put-array-body", "PUT", f"/api/v1/jobs/{EXISTING}", "[]", JSON, 400, ()),
    ("patch-not-json", "PATCH", f"/api/v1/jobs/{EXISTING}", "{description:", JSON, 400, ()),
    ("not-json-content-type", "POST", "/api/v1/jobs", json.dumps(valid()),
     {"Content-Type": "text/plain"}, 415, ()),
    # Too large: 413.
    ("body-1MiB-plus-1", "POST", "/api/v1/jobs", sized_body(MIB + 1), JSON, 413, ()),
    ("put-body-2MiB", "PUT", f"/api/v1/jobs/{EXISTING}", sized_body(2 * MIB), JSON, 413, ()),
    # Exactly 1 MiB is read (and then refused for its description).
    ("body-exactly-1MiB", "POST", "/api/v1/jobs", sized_body(MIB), JSON, 422, ("description",)),
    # Names.
    ("missing-name", "POST", "/api/v1/jobs", valid(name=None), None, 422, ("name",)),
    ("name-uppercase", "POST", "/api/v1/jobs", valid(name="Nightly"), None, 422, ("name",)),
    ("name-leading-dash", "POST", "/api/v1/jobs", valid(name="-nightly"), None, 422, ("name",)),
    ("name-leading-dot", "POST", "/api/v1/jobs", valid(name=".nightly"), None, 422, ("name",)),
    ("name-64-chars", "POST", "/api/v1/jobs", valid(name="a" * 64), None, 422, ("name",)),
    ("name-slash", "POST", "/api/v1/jobs", valid(name="a/b"), None, 422, ("name",)),
    ("name-space", "POST", "/api/v1/jobs", valid(name="a b"), None, 422, ("name",)),
    ("name-empty", "POST", "/api/v1/jobs", valid(name=""), None, 422, ("name",)),
    ("name-number", "POST", "/api/v1/jobs", valid(name=42), None, 422, ("name",)),
    ("put-name-differs", "PUT", f"/api/v1/jobs/{EXISTING}", valid(name="other"), None, 422,
     ("name",)),
    ("put-bad-path-name", "PUT", "/api/v1/jobs/Bad-Name", valid(name="Bad-Name"), None, 422,
     ("name",)),
    # Schedule and time zone.
    ("missing-schedule", "POST", "/api/v1/jobs", valid(schedule=None), None, 422, ("schedule",)),
    ("cron-minute-61", "POST", "/api/v1/jobs", valid(schedule="61 * * * *"), None, 422,
     ("schedule",)),
    ("cron-6-fields-bad-seconds", "POST", "/api/v1/jobs", valid(schedule="60 0 8 * * *"), None,
     422, ("schedule",)),
    ("cron-unknown-month", "POST", "/api/v1/jobs", valid(schedule="0 8 1 Foo *"), None, 422,
     ("schedule",)),
    ("cron-4-fields", "POST", "/api/v1/jobs", valid(schedule="0 8 * *"), None, 422,
     ("schedule",)),
    ("cron-bad-every", "POST", "/api/v1/jobs", valid(schedule="@every soon"), None, 422,
     ("schedule",)),
    ("schedule-not-string", "POST", "/api/v1/jobs", valid(schedule=5), None, 422, ("schedule",)),
    ("unknown-timezone", "POST", "/api/v1/jobs", valid(timezone="Mars/Olympus_Mons"), None, 422,
     ("timezone",)),
    ("timezone-path-traversal", "POST", "/api/v1/jobs", valid(timezone="../../../etc/passwd"),
     None, 422, ("timezone",)),
    # Webhook and URL.
    ("missing-webhook", "POST", "/api/v1/jobs", valid(webhook=None), None, 422, ("webhook",)),
    ("webhook-not-object", "POST", "/api/v1/jobs", valid(webhook=URL), None, 422, ("webhook",)),
    ("missing-url", "POST", "/api/v1/jobs", without_webhook_url(), None, 422, ("webhook.url",)),
    ("url-ftp", "POST", "/api/v1/jobs", hook(url="ftp://example.com/x"), None, 422,
     ("webhook.url",)),
    ("url-file", "POST", "/api/v1/jobs", hook(url="file:///etc/passwd"), None, 422,
     ("webhook.url",)),
    ("url-javascript", "POST", "/api/v1/jobs", hook(url="javascript:alert(1)"), None, 422,
     ("webhook.url",)),
    ("url-no-host", "POST", "/api/v1/jobs", hook(url="http://"), None, 422, ("webhook.url",)),
    ("url-relative", "POST", "/api/v1/jobs", hook(url="/hook"), None, 422, ("webhook.url",)),
    ("url-link-local", "POST", "/api/v1/jobs", hook(url="http://169.254.169.254/latest/"), None,
     422, ("webhook.url",)),
    ("url-link-local-decimal", "POST", "/api/v1/jobs", hook(url="http://2852039166/"), None, 422,
     ("webhook.url",)),
    ("url-ipv6-link-local", "POST", "/api/v1/jobs", hook(url="http://[fe80::1]/"), None, 422,
     ("webhook.url",)),
    ("method-trace", "POST", "/api/v1/jobs", hook(method="TRACE"), None, 422,
     ("webhook.method",)),
    # Headers: injection, bad names, reserved names.
    ("header-value-crlf", "POST", "/api/v1/jobs",
     hook(headers={"X-Team": "ops\r\nX-Injected: 1"}), None, 422, ("webhook.headers.X-Team",)),
    ("header-value-lf", "POST", "/api/v1/jobs", hook(headers={"X-Team": "ops\nevil"}), None, 422,
     ("webhook.headers.X-Team",)),
    ("header-name-crlf", "POST", "/api/v1/jobs",
     hook(headers={"X-Team\r\nX-Injected": "1"}), None, 422, ("webhook.headers.*",)),
    ("header-name-space", "POST", "/api/v1/jobs", hook(headers={"X Team": "ops"}), None, 422,
     ("webhook.headers.*",)),
    ("header-name-colon", "POST", "/api/v1/jobs", hook(headers={"X-Team:": "ops"}), None, 422,
     ("webhook.headers.*",)),
    ("header-fencing-token", "POST", "/api/v1/jobs", hook(headers={"Fencing-Token": "99"}), None,
     422, ("webhook.headers.Fencing-Token",)),
    ("header-fencing-token-lower", "POST", "/api/v1/jobs",
     hook(headers={"fencing-token": "99"}), None, 422, ("webhook.headers.fencing-token",)),
    ("header-cronfence-job", "POST", "/api/v1/jobs", hook(headers={"Cronfence-Job": "x"}), None,
     422, ("webhook.headers.Cronfence-Job",)),
    ("header-host", "POST", "/api/v1/jobs", hook(headers={"Host": "evil.example"}), None, 422,
     ("webhook.headers.Host",)),
    ("header-idempotency-key", "POST", "/api/v1/jobs",
     hook(headers={"Idempotency-Key": "x"}), None, 422, ("webhook.headers.Idempotency-Key",)),
    ("header-webhook-signature", "POST", "/api/v1/jobs",
     hook(headers={"Webhook-Signature": "v1,x"}), None, 422,
     ("webhook.headers.Webhook-Signature",)),
    ("header-webhook-id", "POST", "/api/v1/jobs", hook(headers={"webhook-id": "x"}), None, 422,
     ("webhook.headers.webhook-id",)),
    ("header-value-not-string", "POST", "/api/v1/jobs", hook(headers={"X-Count": 3}), None, 422,
     ("webhook.headers.X-Count",)),
    # Unknown fields.
    ("unknown-top-level", "POST", "/api/v1/jobs", valid(colour="blue"), None, 422, ("colour",)),
    ("unknown-webhook-field", "POST", "/api/v1/jobs", hook(foo=1), None, 422, ("webhook.foo",)),
    ("unknown-retry-field", "POST", "/api/v1/jobs", retry(bar=1), None, 422, ("retry.bar",)),
    # Wrong types.
    ("paused-string", "POST", "/api/v1/jobs", valid(paused="yes"), None, 422, ("paused",)),
    ("timeout-string", "POST", "/api/v1/jobs", hook(timeout_ms="100"), None, 422,
     ("webhook.timeout_ms",)),
    ("timeout-fraction", "POST", "/api/v1/jobs", hook(timeout_ms=1.5), None, 422,
     ("webhook.timeout_ms",)),
    ("timeout-huge-number", "POST", "/api/v1/jobs",
     '{"name":"fresh","schedule":"' + YEARLY + '","webhook":{"url":"' + URL +
     '","timeout_ms":1e300}}', JSON, 422, ("webhook.timeout_ms",)),
    ("retry-not-object", "POST", "/api/v1/jobs", valid(retry=3), None, 422, ("retry",)),
    ("description-number", "POST", "/api/v1/jobs", valid(description=7), None, 422,
     ("description",)),
    ("description-too-long", "POST", "/api/v1/jobs", valid(description="d" * 5000), None, 422,
     ("description",)),
    # Out of range.
    ("timeout-zero", "POST", "/api/v1/jobs", hook(timeout_ms=0), None, 422,
     ("webhook.timeout_ms",)),
    ("timeout-negative", "POST", "/api/v1/jobs", hook(timeout_ms=-5), None, 422,
     ("webhook.timeout_ms",)),
    ("retry-attempts-0", "POST", "/api/v1/jobs", retry(attempts=0), None, 422,
     ("retry.attempts",)),
    ("retry-attempts-21", "POST", "/api/v1/jobs", retry(attempts=21), None, 422,
     ("retry.attempts",)),
    ("lease-10ms", "POST", "/api/v1/jobs", valid(lease_ms=10), None, 422, ("lease_ms",)),
    ("starting-deadline-5ms", "POST", "/api/v1/jobs", valid(starting_deadline_ms=5), None, 422,
     ("starting_deadline_ms",)),
    ("max-backoff-below-backoff", "POST", "/api/v1/jobs",
     retry(backoff_ms=5000, max_backoff_ms=1000), None, 422, ("retry.max_backoff_ms",)),
    # Enums.
    ("overlap-bogus", "POST", "/api/v1/jobs", valid(overlap="sometimes"), None, 422,
     ("overlap",)),
    ("catchup-bogus", "POST", "/api/v1/jobs", valid(catchup="all"), None, 422, ("catchup",)),
    # Secrets and raw bodies.
    ("signing-secret-short", "POST", "/api/v1/jobs", valid(signing_secret="short"), None, 422,
     ("signing_secret",)),
    ("signing-secret-number", "POST", "/api/v1/jobs", valid(signing_secret=1234567890123456789),
     None, 422, ("signing_secret",)),
    ("raw-body-object", "POST", "/api/v1/jobs", hook(raw_body=True, body={"a": 1}), None, 422,
     ("webhook.body",)),
    ("content-type-without-raw-body", "POST", "/api/v1/jobs", hook(content_type="text/plain"),
     None, 422, ("webhook.content_type",)),
    ("raw-body-not-bool", "POST", "/api/v1/jobs", hook(raw_body="true"), None, 422,
     ("webhook.raw_body",)),
    # Several problems at once: all are named.
    ("several-errors", "POST", "/api/v1/jobs",
     {"name": "Bad", "schedule": "nope", "timezone": "Nowhere/Land",
      "webhook": {"url": "ftp://x/", "timeout_ms": 0}, "extra": 1}, None, 422,
     ("name", "schedule", "timezone", "webhook.url", "webhook.timeout_ms", "extra")),
    # Patches that would make the job invalid, or rename it.
    ("patch-bad-url", "PATCH", f"/api/v1/jobs/{EXISTING}", {"webhook": {"url": "ftp://x/"}},
     None, 422, ("webhook.url",)),
    ("patch-rename", "PATCH", f"/api/v1/jobs/{EXISTING}", {"name": "renamed"}, None, 422,
     ("name",)),
    ("patch-remove-schedule", "PATCH", f"/api/v1/jobs/{EXISTING}", {"schedule": None}, None, 422,
     ("schedule",)),
    ("patch-unknown-field", "PATCH", f"/api/v1/jobs/{EXISTING}", {"retry": {"bar": 1}}, None,
     422, ("retry.bar",)),
    # Conflicts and preconditions.
    ("post-existing-name", "POST", "/api/v1/jobs", valid(name=EXISTING), None, 409, ()),
    ("if-match-garbage", "PUT", f"/api/v1/jobs/{EXISTING}", valid(name=EXISTING),
     {"If-Match": "abc"}, 412, ()),
    ("if-match-stale", "PUT", f"/api/v1/jobs/{EXISTING}", valid(name=EXISTING),
     {"If-Match": '"999999"'}, 412, ()),
    ("patch-if-match-garbage", "PATCH", f"/api/v1/jobs/{EXISTING}", {"description": "x"},
     {"If-Match": "nope"}, 412, ()),
    ("delete-if-match-stale", "DELETE", f"/api/v1/jobs/{EXISTING}", None,
     {"If-Match": '"999999"'}, 412, ()),
    # Unknown resources and methods.
    ("patch-missing-job", "PATCH", "/api/v1/jobs/missing", {"description": "x"}, None, 404, ()),
    ("delete-missing-job", "DELETE", "/api/v1/jobs/missing", None, None, 404, ()),
    ("trigger-missing-job", "POST", "/api/v1/jobs/missing/trigger", None, None, 404, ()),
    ("pause-missing-job", "POST", "/api/v1/jobs/missing/pause", None, None, 404, ()),
    ("unknown-api-path", "POST", "/api/v1/nothing", valid(), None, 404, ()),
    ("delete-runs", "DELETE", "/api/v1/runs", None, None, 405, ()),
    ("post-run", "POST", "/api/v1/runs/some-run", valid(), None, 405, ()),
    ("put-jobs-collection", "PUT", "/api/v1/jobs", valid(), None, 405, ()),
    # Query parameters.
    ("jobs-limit-0", "GET", "/api/v1/jobs?limit=0", None, None, 422, ("limit",)),
    ("jobs-limit-501", "GET", "/api/v1/jobs?limit=501", None, None, 422, ("limit",)),
    ("jobs-limit-abc", "GET", "/api/v1/jobs?limit=abc", None, None, 422, ("limit",)),
    ("jobs-paused-maybe", "GET", "/api/v1/jobs?paused=maybe", None, None, 422, ("paused",)),
    ("runs-limit-0", "GET", "/api/v1/runs?limit=0", None, None, 422, ("limit",)),
    ("runs-limit-501", "GET", "/api/v1/runs?limit=501", None, None, 422, ("limit",)),
    ("runs-status-bogus", "GET", "/api/v1/runs?status=bogus", None, None, 422, ("status",)),
    ("runs-since-yesterday", "GET", "/api/v1/runs?since=yesterday", None, None, 422, ("since",)),
    ("runs-until-garbage", "GET", "/api/v1/runs?until=2026-13-45T99:00:00Z", None, None, 422,
     ("until",)),
    ("runs-cursor-garbage", "GET", "/api/v1/runs?cursor=garbage", None, None, 422, ("cursor",)),
    ("runs-several-params", "GET", "/api/v1/runs?limit=-1&status=nope", None, None, 422,
     ("limit", "status")),
    ("preview-count-0", "GET", "/api/v1/schedule/preview?schedule=*+*+*+*+*&count=0", None, None,
     422, ("count",)),
    ("preview-from-garbage", "GET", "/api/v1/schedule/preview?schedule=*+*+*+*+*&from=later",
     None, None, 422, ("from",)),
    ("preview-missing-schedule", "GET", "/api/v1/schedule/preview", None, None, 422,
     ("schedule",)),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One instance for the table, holding one job; stopped and checked at the end."""
    workdir = tmp_path_factory.mktemp("bad-input")
    inst = Instance(workdir, name="bad-input")
    inst.start()
    reset(inst)
    yield inst
    code = inst.stop()
    inst.check_clean()
    if SANITIZED:
        assert code == 0, f"exit {code}: {inst.stderr()[-4000:]}"


def reset(inst):
    """Back to a catalog of exactly the one job (a case that failed may have changed it)."""
    for job in inst.api("GET", "/api/v1/jobs?limit=500").json["items"]:
        if job["name"] != EXISTING:
            assert inst.api("DELETE", f"/api/v1/jobs/{job['name']}").status == 204
    reply = inst.api("PUT", f"/api/v1/jobs/{EXISTING}",
                     {"name": EXISTING, "schedule": YEARLY, "description": "the only job",
                      "webhook": {"url": URL, "headers": {"X-Team": "ops"}}})
    assert reply.status in (200, 201), reply


def snapshot(inst):
    """The catalog (without the clock-driven next_fire_at) and the run history."""
    jobs = inst.api("GET", "/api/v1/jobs?limit=500")
    runs = inst.api("GET", "/api/v1/runs?limit=500")
    assert jobs.status == 200 and runs.status == 200, (jobs, runs)
    items = [{k: v for k, v in job.items() if k != "next_fire_at"} for job in jobs.json["items"]]
    return items, runs.json["items"]


def field_named(fields, expected):
    if expected.endswith(".*"):
        return any(f.startswith(expected[:-1]) for f in fields)
    return expected in fields


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_request_is_refused_and_changes_nothing(shared, case):
    _, method, path, body, headers, status, fields = case
    before = snapshot(shared)
    if [job["name"] for job in before[0]] != [EXISTING]:
        reset(shared)
        before = snapshot(shared)
    reply = shared.api(method, path, copy.deepcopy(body), headers=headers)
    assert reply.status == status, reply
    assert reply.headers["Content-Type"].startswith("application/problem+json"), reply.headers
    doc = reply.json
    for key in ("type", "title", "status", "detail", "errors"):
        assert key in doc, doc
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    assert isinstance(doc["errors"], list)
    named = [error["field"] for error in doc["errors"]]
    if status == 422:
        assert doc["errors"], doc
        assert all(isinstance(e.get("message"), str) and e["message"] for e in doc["errors"]), doc
    for expected in fields:
        assert field_named(named, expected), (expected, doc)
    assert snapshot(shared) == before


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert len({case[0] for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------
# Requests that must not bring the instance down
# ---------------------------------------------------------------------------


def raw_exchange(port, request, timeout=30):
    """Sends raw bytes and returns what came back (possibly nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 0:
                    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(rest) >= length[0]:
                        break
        except (ConnectionResetError, socket.timeout):
            pass
    return b"".join(chunks)


def status_of(raw):
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split(b" ", 2)[1])


def assert_healthy(inst):
    assert http("GET", inst.url + "/healthz").status == 200
    assert inst.api("GET", "/api/v1/jobs").status == 200
    assert inst.alive()


def test_ten_megabyte_body_is_413(instance):
    reply = instance.api("POST", "/api/v1/jobs", b"{" + b" " * (10 * MIB) + b"}",
                         headers={"Content-Type": "application/json"})
    assert reply.status == 413, reply
    assert_healthy(instance)
    assert instance.api("GET", "/api/v1/jobs").json["items"] == []


def test_very_long_url_path(instance):
    raw = raw_exchange(instance.port,
                       b"GET /api/v1/jobs/" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer " + instance.token.encode() + b"\r\n"
                       b"Connection: close\r\n\r\n")
    assert status_of(raw) in (404, 414, 431), raw[:300]
    raw = raw_exchange(instance.port,
                       b"GET /" + b"../" * 5000 + b"etc/passwd HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    assert status_of(raw) in (404, 414, 431), raw[:300]
    assert b"root:" not in raw
    reply = instance.api("GET", "/api/v1/jobs?q=" + "q" * 10000)
    assert reply.status in (200, 414, 431), reply
    if reply.status == 200:
        assert reply.json["items"] == []
    assert_healthy(instance)


def test_deeply_nested_json(instance):
    for text in ("[" * 10000, "[" * 10000 + "]" * 10000, '{"a":' * 10000 + "1" + "}" * 10000):
        reply = instance.api("POST", "/api/v1/jobs", text,
                             headers={"Content-Type": "application/json"})
        assert reply.status == 400, reply
    deep = '{"name":"deep","schedule":"' + YEARLY + '","webhook":{"url":"' + URL + \
        '","body":' + "[" * 10000 + "]" * 10000 + "}}"
    reply = instance.api("POST", "/api/v1/jobs", deep, headers={"Content-Type": "application/json"})
    assert reply.status in (400, 422), reply
    reply = instance.api("PATCH", "/api/v1/jobs/deep", '{"webhook":' * 10000 + "{}" +
                         "}" * 10000, headers={"Content-Type": "application/json"})
    assert reply.status in (400, 404), reply
    assert_healthy(instance)
    assert instance.api("GET", "/api/v1/jobs").json["items"] == []


def test_garbage_on_the_socket(instance):
    for request in (b"\x00\x01\x02\x03garbage\r\n\r\n",
                    b"GET / HTTP/9.9\r\n\r\n",
                    b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999"
                    b"999\r\n\r\n",
                    b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"zz\r\n"):
        raw = raw_exchange(instance.port, request, timeout=2)
        if raw:  # a server may also just wait for more, then drop the connection
            assert 400 <= status_of(raw) < 600, raw[:300]
        assert_healthy(instance)
    # A client that sends half a body and goes away.
    with socket.create_connection(("127.0.0.1", instance.port)) as sock:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    assert_healthy(instance)
    assert instance.api("GET", "/api/v1/jobs").json["items"] == []


def test_many_bad_requests_in_a_row_leave_it_serving(instance):
    for i in range(200):
        reply = instance.api("POST", "/api/v1/jobs", {"name": f"Bad{i}", "webhook": {}})
        assert reply.status == 422, reply
    wait_for(lambda: http("GET", instance.url + "/healthz").status == 200, what="healthz")
    assert instance.api("GET", "/api/v1/jobs").json["items"] == []
    assert_healthy(instance)


def test_percent_encoded_job_names(instance):
    """Names are matched after percent-decoding: no way around the pattern."""
    for path in ("/api/v1/jobs/" + urllib.parse.quote("a/b", safe=""),
                 "/api/v1/jobs/%2e%2e"):
        reply = instance.api("GET", path)
        assert reply.status == 404, (path, reply)
    # A NUL byte never reaches a handler (it would cut the name short).
    reply = instance.api("GET", "/api/v1/jobs/A%00b")
    assert reply.status == 422 and reply.json["errors"][0]["field"] == "path", reply
    reply = instance.api("PUT", "/api/v1/jobs/%2e%2e",
                         {"schedule": YEARLY, "webhook": {"url": URL}})
    assert reply.status in (404, 422), reply
    assert instance.api("GET", "/api/v1/jobs").json["items"] == []
