"""The REST API as a user sees it (DESIGN §6): jobs, runs, schedule preview,
auth, the generated token, the dashboard's static files and the spec."""

import datetime
import hashlib
import hmac
from http import client as http_client
from http import server as http_server
import re
import socket
import threading
import urllib.parse

import pytest

from conftest import SECRET, http, job_body, record_exchange, wait_for

# A schedule that never fires during a test: runs come from manual triggers only.
YEARLY = "0 0 1 1 *"
DEAD_URL = "http://127.0.0.1:9/hook"


def parse_time(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def minimal(name, url=DEAD_URL, schedule=YEARLY, **fields):
    body = {"name": name, "schedule": schedule, "webhook": {"url": url}}
    body.update(fields)
    return body


def create(instance, body):
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    return reply.json


def get_job(instance, name):
    reply = instance.api("GET", f"/api/v1/jobs/{name}")
    assert reply.status == 200, reply
    return reply.json


def without_volatile(job):
    """A job without the fields that move with the clock."""
    return {k: v for k, v in job.items() if k != "next_fire_at"}


def assert_problem(reply, status):
    assert reply.status == status, reply
    assert reply.headers["Content-Type"].startswith("application/problem+json"), reply.headers
    doc = reply.json
    for key in ("type", "title", "status", "detail", "errors"):
        assert key in doc, doc
    assert doc["status"] == status
    return doc


def raw_get(instance, path, method="GET", headers=None):
    """Sends path exactly as given (no normalisation by a client library)."""
    conn = http_client.HTTPConnection("127.0.0.1", instance.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        reply = conn.getresponse()
        body = reply.read().decode(errors="replace")
        record_exchange(method, path, headers or {}, None, reply.status, reply.getheaders(), body)
        return reply.status, dict(reply.getheaders()), body
    finally:
        conn.close()


def trigger_and_wait(instance, name):
    reply = instance.api("POST", f"/api/v1/jobs/{name}/trigger")
    assert reply.status == 202, reply
    run_id = reply.json["id"]
    assert reply.json["job"] == name and reply.json["trigger"] == "manual"
    assert reply.headers["Location"] == f"/api/v1/runs/{run_id}"

    def finished():
        got = instance.api("GET", f"/api/v1/runs/{urllib.parse.quote(run_id)}")
        return got.status == 200 and got.json["status"] != "running" and got.json

    return wait_for(finished, timeout=20, what=f"run {run_id} of {name} to finish")


class Target:
    """A minimal webhook target in the test process: records every request and
    answers 200, or the status named by a path like /status/404."""

    def __init__(self):
        self.requests = []
        target = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target.requests.append({"path": self.path, "headers": dict(self.headers),
                                        "body": body})
                match = re.match(r"^/status/(\d{3})", self.path)
                status = int(match.group(1)) if match else 200
                reply = b'{"ok":true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

            def log_message(self, *args):
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/ok"):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def signature_valid(request, secret):
    """Checks Cronfence-Signature v2 (DESIGN §5) of a recorded request against secret."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    parts = dict(item.split("=", 1) for item in headers["cronfence-signature"].split(","))
    if "v2" not in parts:
        return False
    signed = (f"{parts['t']}\n{headers['cronfence-job']}\n{headers['fencing-token']}\n"
              f"{headers['idempotency-key']}\n".encode() + request["body"])
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v2"])


# ---------------------------------------------------------------------------
# Jobs CRUD
# ---------------------------------------------------------------------------


def test_create_fills_defaults_and_never_returns_the_secret(instance):
    reply = instance.api("POST", "/api/v1/jobs", minimal("plain"))
    assert reply.status == 201, reply
    job = reply.json
    assert reply.headers["Location"] == "/api/v1/jobs/plain"
    assert reply.headers["ETag"] == f'"{job["version"]}"'
    assert isinstance(job["version"], int) and job["version"] > 0
    assert job["name"] == "plain"
    assert job["schedule"] == YEARLY
    assert job["timezone"] == "UTC"
    assert job["paused"] is False
    assert job["webhook"]["url"] == DEAD_URL
    assert job["webhook"]["method"] == "POST"
    assert job["webhook"]["timeout_ms"] == 30000
    assert job["overlap"] == "forbid"
    assert job["starting_deadline_ms"] == 60000
    assert job["catchup"] == "none"
    assert job["retry"] == {"attempts": 3, "backoff_ms": 1000, "max_backoff_ms": 60000}
    assert job["lease_ms"] == 30000
    assert job["signing_secret_set"] is False
    assert "signing_secret" not in job
    assert job["last_run"] is None
    assert parse_time(job["next_fire_at"]) > now_utc()
    assert parse_time(job["created_at"]) and parse_time(job["updated_at"])

    secret = "a-very-secret-signing-value-42"
    reply = instance.api("POST", "/api/v1/jobs", minimal("secret", signing_secret=secret))
    assert reply.status == 201, reply
    assert reply.json["signing_secret_set"] is True
    assert "signing_secret" not in reply.json and secret not in reply.body
    for path in ("/api/v1/jobs/secret", "/api/v1/jobs", "/api/v1/jobs?q=secret"):
        got = instance.api("GET", path)
        assert got.status == 200 and secret not in got.body, got
    assert get_job(instance, "secret")["signing_secret_set"] is True


def test_get_one_has_etag_and_equals_the_created_job(instance):
    created = create(instance, minimal("one", description="the first"))
    reply = instance.api("GET", "/api/v1/jobs/one")
    assert reply.status == 200, reply
    assert reply.headers["ETag"] == f'"{created["version"]}"'
    assert without_volatile(reply.json) == without_volatile(created)
    assert_problem(instance.api("GET", "/api/v1/jobs/nope"), 404)


def test_post_of_an_existing_name_is_409_and_changes_nothing(instance):
    before = create(instance, minimal("dup", description="original"))
    reply = instance.api("POST", "/api/v1/jobs", minimal("dup", description="impostor"))
    assert_problem(reply, 409)
    after = get_job(instance, "dup")
    assert after["description"] == "original"
    assert after["version"] == before["version"]


def test_put_creates_then_replaces_with_a_higher_version(instance):
    reply = instance.api("PUT", "/api/v1/jobs/putter", minimal("putter", description="v1"))
    assert reply.status == 201, reply
    first = reply.json
    assert reply.headers["Location"] == "/api/v1/jobs/putter"
    assert reply.headers["ETag"] == f'"{first["version"]}"'
    # The name may be left out of a PUT body: the path names the job.
    body = minimal("putter", description="v2")
    del body["name"]
    reply = instance.api("PUT", "/api/v1/jobs/putter", body)
    assert reply.status == 200, reply
    second = reply.json
    assert second["description"] == "v2"
    assert second["version"] > first["version"]
    assert reply.headers["ETag"] == f'"{second["version"]}"'
    assert second["created_at"] == first["created_at"]
    assert get_job(instance, "putter")["description"] == "v2"


def test_put_with_if_match(instance):
    first = create(instance, minimal("guarded", description="v1"))
    etag = f'"{first["version"]}"'
    reply = instance.api("PUT", "/api/v1/jobs/guarded", minimal("guarded", description="v2"),
                         headers={"If-Match": etag})
    assert reply.status == 200, reply
    second = reply.json
    assert second["version"] > first["version"]
    # The old ETag is stale now.
    reply = instance.api("PUT", "/api/v1/jobs/guarded", minimal("guarded", description="v3"),
                         headers={"If-Match": etag})
    assert_problem(reply, 412)
    after = get_job(instance, "guarded")
    assert after["description"] == "v2" and after["version"] == second["version"]
    # If-Match: * means "only if it exists" (RFC 9110 §13.1.1).
    reply = instance.api("PUT", "/api/v1/jobs/guarded", minimal("guarded", description="v4"),
                         headers={"If-Match": "*"})
    assert reply.status == 200 and reply.json["description"] == "v4", reply
    reply = instance.api("PUT", "/api/v1/jobs/ghost", minimal("ghost"), headers={"If-Match": "*"})
    assert_problem(reply, 412)
    assert_problem(instance.api("GET", "/api/v1/jobs/ghost"), 404)


def test_patch_is_a_json_merge_patch(instance):
    create(instance, minimal("patched", description="to be removed",
                             webhook={"url": DEAD_URL, "timeout_ms": 5000,
                                      "headers": {"X-A": "1", "X-B": "2"}}))
    before = get_job(instance, "patched")
    patch = {"description": None,
             "webhook": {"timeout_ms": 7000, "headers": {"X-B": None, "X-C": "3"}}}
    reply = instance.api("PATCH", "/api/v1/jobs/patched", patch,
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply
    job = reply.json
    assert job["webhook"]["timeout_ms"] == 7000
    assert job["webhook"]["url"] == DEAD_URL  # untouched siblings stay
    assert job["webhook"]["method"] == "POST"
    assert job["webhook"]["headers"] == {"X-A": "1", "X-C": "3"}
    assert job.get("description") in (None, "")
    assert job["schedule"] == YEARLY
    assert job["version"] > before["version"]
    assert reply.headers["ETag"] == f'"{job["version"]}"'
    assert without_volatile(get_job(instance, "patched")) == without_volatile(job)
    # A patch that changes nothing leaves the version (and so every ETag) alone.
    reply = instance.api("PATCH", "/api/v1/jobs/patched", {"webhook": {"timeout_ms": 7000}})
    assert reply.status == 200 and reply.json["version"] == job["version"], reply


def test_patch_cannot_rename_and_stale_if_match_is_412(instance):
    before = create(instance, minimal("fixed", description="same"))
    doc = assert_problem(instance.api("PATCH", "/api/v1/jobs/fixed", {"name": "other"}), 422)
    assert "name" in [e["field"] for e in doc["errors"]]
    assert instance.api("GET", "/api/v1/jobs/other").status == 404

    reply = instance.api("PATCH", "/api/v1/jobs/fixed", {"description": "changed"},
                         headers={"If-Match": f'"{before["version"]}"'})
    assert reply.status == 200, reply
    current = reply.json
    reply = instance.api("PATCH", "/api/v1/jobs/fixed", {"description": "stale"},
                         headers={"If-Match": f'"{before["version"]}"'})
    assert_problem(reply, 412)
    after = get_job(instance, "fixed")
    assert after["description"] == "changed" and after["version"] == current["version"]


def test_delete_then_404_and_runs_stay(instance, target):
    create(instance, minimal("doomed", target.url()))
    run = trigger_and_wait(instance, "doomed")
    current = get_job(instance, "doomed")["version"]
    assert_problem(instance.api("DELETE", "/api/v1/jobs/doomed",
                                headers={"If-Match": f'"{current + 1000}"'}), 412)
    assert get_job(instance, "doomed")["version"] == current
    reply = instance.api("DELETE", "/api/v1/jobs/doomed", headers={"If-Match": f'"{current}"'})
    assert reply.status == 204, reply
    assert reply.body == ""
    assert_problem(instance.api("GET", "/api/v1/jobs/doomed"), 404)
    assert_problem(instance.api("DELETE", "/api/v1/jobs/doomed"), 404)
    names = [j["name"] for j in instance.api("GET", "/api/v1/jobs").json["items"]]
    assert "doomed" not in names
    # Its history stays.
    assert [r["id"] for r in instance.runs(job="doomed")] == [run["id"]]
    got = instance.api("GET", f"/api/v1/runs/{run['id']}")
    assert got.status == 200 and got.json["job"] == "doomed"


def test_put_without_signing_secret_keeps_the_previous_one(instance, target):
    created = create(instance, minimal("signed", target.url(), signing_secret=SECRET))
    assert created["signing_secret_set"] is True
    # PUT back what GET shows (it has no secret), with a change.
    doc = get_job(instance, "signed")
    doc["description"] = "changed by a PUT without the secret"
    reply = instance.api("PUT", "/api/v1/jobs/signed", doc)
    assert reply.status == 200, reply
    assert reply.json["signing_secret_set"] is True
    assert reply.json["description"] == doc["description"]
    # The delivery is still signed with the job's own secret.
    run = trigger_and_wait(instance, "signed")
    assert run["status"] == "succeeded", run
    assert len(target.requests) == 1
    assert signature_valid(target.requests[0], SECRET), target.requests[0]["headers"]
    # A PATCH keeps it too.
    reply = instance.api("PATCH", "/api/v1/jobs/signed", {"description": "patched"})
    assert reply.status == 200 and reply.json["signing_secret_set"] is True, reply
    assert trigger_and_wait(instance, "signed")["status"] == "succeeded"
    assert signature_valid(target.requests[1], SECRET), target.requests[1]["headers"]
    # Only an explicit null clears it: then the instance-wide default signs, first, and
    # the cleared secret only beside it for --secret-overlap-hours.
    reply = instance.api("PATCH", "/api/v1/jobs/signed", {"signing_secret": None})
    assert reply.status == 200 and reply.json["signing_secret_set"] is False, reply
    assert trigger_and_wait(instance, "signed")["status"] == "succeeded"
    default = instance.api("GET", "/api/v1/signing-secret").json["current"]
    t, *v2s = target.requests[2]["headers"]["Cronfence-Signature"].split(",")
    assert len(v2s) == 2, v2s
    for v2, secret in zip(v2s, (default, SECRET)):
        one = dict(target.requests[2])
        one["headers"] = dict(one["headers"], **{"Cronfence-Signature": f"{t},{v2}"})
        assert signature_valid(one, secret), (v2s, secret)


def test_next_fire_at_and_last_run(instance, target):
    create(instance, minimal("clock", target.url()))
    job = get_job(instance, "clock")
    assert parse_time(job["next_fire_at"]) > now_utc()
    assert job["last_run"] is None
    run = trigger_and_wait(instance, "clock")
    job = get_job(instance, "clock")
    assert job["last_run"] is not None and job["last_run"]["id"] == run["id"]

    reply = instance.api("POST", "/api/v1/jobs/clock/pause")
    assert reply.status == 200, reply
    assert reply.json["next_fire_at"] is None
    assert get_job(instance, "clock")["next_fire_at"] is None
    listed = instance.api("GET", "/api/v1/jobs?q=clock").json["items"]
    assert [j["next_fire_at"] for j in listed] == [None]


def test_pause_and_resume(instance):
    first = create(instance, minimal("toggle"))
    reply = instance.api("POST", "/api/v1/jobs/toggle/pause")
    assert reply.status == 200, reply
    paused = reply.json
    assert paused["name"] == "toggle" and paused["paused"] is True
    assert paused["version"] > first["version"]
    assert get_job(instance, "toggle")["paused"] is True

    reply = instance.api("POST", "/api/v1/jobs/toggle/resume")
    assert reply.status == 200, reply
    resumed = reply.json
    assert resumed["paused"] is False
    assert resumed["version"] > paused["version"]
    assert parse_time(resumed["next_fire_at"]) > now_utc()
    after = get_job(instance, "toggle")
    assert after["paused"] is False and after["version"] == resumed["version"]
    assert_problem(instance.api("POST", "/api/v1/jobs/missing/pause"), 404)
    # A paused job fires nothing, not even by hand.
    assert instance.api("POST", "/api/v1/jobs/toggle/pause").status == 200
    assert_problem(instance.api("POST", "/api/v1/jobs/toggle/trigger"), 409)
    assert instance.api("GET", "/api/v1/runs").json["items"] == []
    assert_problem(instance.api("POST", "/api/v1/jobs/missing/resume"), 404)


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


def test_list_pagination_query_and_paused_filter(instance):
    names = ["job-e", "job-b", "nightly-report", "job-a", "job-g", "job-c", "job-d"]
    descriptions = {"job-b": "sends the weekly report", "job-c": "cleans up"}
    for name in names:
        create(instance, minimal(name, description=descriptions.get(name, "")))
    for name in ("job-a", "job-c"):
        assert instance.api("POST", f"/api/v1/jobs/{name}/pause").status == 200

    seen, pages, cursor = [], [], None
    while True:
        path = "/api/v1/jobs?limit=3" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        reply = instance.api("GET", path)
        assert reply.status == 200, reply
        page = [j["name"] for j in reply.json["items"]]
        pages.append(page)
        seen += page
        cursor = reply.json["next_cursor"]
        if not cursor:
            break
        assert len(pages) < 10, pages
    assert seen == sorted(names), pages
    assert [len(p) for p in pages] == [3, 3, 1]

    everything = instance.api("GET", "/api/v1/jobs").json
    assert [j["name"] for j in everything["items"]] == sorted(names)
    assert everything["next_cursor"] is None

    def listed(query):
        reply = instance.api("GET", "/api/v1/jobs?" + query)
        assert reply.status == 200, reply
        return [j["name"] for j in reply.json["items"]]

    # q matches a substring of the name or of the description.
    assert listed("q=report") == ["job-b", "nightly-report"]
    assert listed("q=clean") == ["job-c"]
    assert listed("q=job-") == ["job-a", "job-b", "job-c", "job-d", "job-e", "job-g"]
    assert listed("q=nothing-like-this") == []
    assert listed("paused=true") == ["job-a", "job-c"]
    assert listed("paused=false") == ["job-b", "job-d", "job-e", "job-g", "nightly-report"]
    assert listed("paused=true&q=clean") == ["job-c"]


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def test_runs_listing_filters_and_pagination(instance, target):
    create(instance, minimal("good", target.url()))
    # The target answers 404 here: a 4xx other than 408/409/412/425/429 is not retried.
    create(instance, minimal("bad", target.url("/status/404")))
    order = ["good", "bad", "good", "good", "bad", "good"]
    runs = [trigger_and_wait(instance, name) for name in order]
    by_id = {r["id"]: r for r in runs}
    assert [r["status"] for r in runs] == [
        "succeeded" if name == "good" else "failed" for name in order]
    assert all(r["fencing_token"] > 0 and r["instance"] for r in runs)

    reply = instance.api("GET", "/api/v1/runs")
    assert reply.status == 200, reply
    items = reply.json["items"]
    assert reply.json["next_cursor"] is None
    # Newest first: the reverse of the trigger order.
    assert [r["id"] for r in items] == [r["id"] for r in reversed(runs)]
    for item in items:
        assert item == by_id[item["id"]]

    def ids(query):
        reply = instance.api("GET", "/api/v1/runs?" + query)
        assert reply.status == 200, reply
        return [r["id"] for r in reply.json["items"]]

    newest_first = [r["id"] for r in reversed(runs)]
    assert ids("job=good") == [i for i in newest_first if by_id[i]["job"] == "good"]
    assert ids("job=bad") == [i for i in newest_first if by_id[i]["job"] == "bad"]
    assert ids("job=nobody") == []
    assert ids("status=failed") == [i for i in newest_first if by_id[i]["job"] == "bad"]
    assert ids("status=succeeded") == [i for i in newest_first if by_id[i]["job"] == "good"]
    assert ids("status=succeeded&job=bad") == []
    assert ids("status=running") == []

    # since is inclusive, until exclusive; manual runs sort by their start.
    pivot = runs[3]["started_at"]
    quoted = urllib.parse.quote(pivot)
    assert ids(f"since={quoted}") == [r["id"] for r in reversed(runs[3:])]
    assert ids(f"until={quoted}") == [r["id"] for r in reversed(runs[:3])]
    lower = urllib.parse.quote(runs[1]["started_at"])
    assert ids(f"since={lower}&until={quoted}") == [runs[2]["id"], runs[1]["id"]]
    assert ids(f"since={lower}&until={quoted}&job=bad") == [runs[1]["id"]]
    assert ids("since=2000-01-01T00:00:00Z") == newest_first
    assert ids("until=2000-01-01T00:00:00Z") == []

    # Pagination: no repeats, no gaps, same order.
    paged, cursor, pages = [], None, 0
    while True:
        suffix = f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""
        reply = instance.api("GET", "/api/v1/runs?limit=4" + suffix)
        assert reply.status == 200, reply
        assert len(reply.json["items"]) <= 4
        paged += [r["id"] for r in reply.json["items"]]
        cursor = reply.json["next_cursor"]
        pages += 1
        if not cursor:
            break
        assert pages < 10
    assert paged == newest_first and pages == 2
    paged, cursor = [], None
    while True:
        suffix = f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""
        reply = instance.api("GET", "/api/v1/runs?job=good&limit=1" + suffix)
        paged += [r["id"] for r in reply.json["items"]]
        cursor = reply.json["next_cursor"]
        if not cursor:
            break
    assert paged == ids("job=good")

    # One run by id, and an unknown id.
    for run in runs:
        reply = instance.api("GET", f"/api/v1/runs/{run['id']}")
        assert reply.status == 200, reply
        assert reply.json == run
    assert_problem(instance.api("GET", "/api/v1/runs/no-such-run"), 404)
    assert_problem(instance.api("GET", "/api/v1/runs/good@1700000000000"), 404)


def test_manual_trigger_is_accepted_by_the_reference_receiver(instance, receiver):
    """DESIGN §3: a manual run's idempotency key is <job>@manual-<run id>; §7 ships
    cronfence-receiver as the reference target of §5, so a manual trigger of a
    job correctly signed for it must be delivered and accepted."""
    create(instance, job_body("by-hand", receiver.hook(), schedule=YEARLY))
    run = trigger_and_wait(instance, "by-hand")
    assert run["status"] == "succeeded", (run, receiver.stderr()[-1000:])
    assert [d["token"] for d in receiver.deliveries("by-hand")] == [run["fencing_token"]]
    assert [d["idempotency_key"] for d in receiver.deliveries("by-hand")] == \
        [f"by-hand@manual-{run['id']}"]


def test_scheduled_runs_are_listed_with_slot_ids(instance, receiver):
    create(instance, job_body("every", receiver.hook(), schedule="* * * * * *"))
    runs = wait_for(lambda: len(instance.runs(job="every", status="succeeded")) >= 2 and
                    instance.runs(job="every", status="succeeded"), what="two scheduled runs")
    for run in runs:
        assert run["trigger"] == "schedule"
        slot = parse_time(run["scheduled_at"])
        assert run["id"] == f"every@{int(slot.timestamp() * 1000)}"
        assert instance.api("GET", f"/api/v1/runs/{run['id']}").json["id"] == run["id"]
    slots = [r["scheduled_at"] for r in runs]
    assert slots == sorted(slots, reverse=True)


# ---------------------------------------------------------------------------
# Schedule preview
# ---------------------------------------------------------------------------


def preview(instance, **query):
    return instance.api("GET", "/api/v1/schedule/preview?" + urllib.parse.urlencode(query))


def test_schedule_preview_across_dst(instance):
    reply = preview(instance, schedule="0 8 * * 1-5", timezone="Europe/Berlin",
                    **{"from": "2026-03-27T00:00:00Z"}, count=3)
    assert reply.status == 200, reply
    assert reply.json["next"] == ["2026-03-27T07:00:00.000Z", "2026-03-30T06:00:00.000Z",
                                  "2026-03-31T06:00:00.000Z"]
    assert isinstance(reply.json["description"], str) and reply.json["description"].strip()


def test_schedule_preview_errors(instance):
    doc = assert_problem(preview(instance, schedule="0 8 * * 1-9"), 422)
    assert doc["errors"][0]["field"] == "schedule"
    position = doc["errors"][0]["position"]
    assert isinstance(position, int) and not isinstance(position, bool)

    doc = assert_problem(preview(instance, schedule="61 * * * *"), 422)
    assert doc["errors"][0]["field"] == "schedule"
    assert isinstance(doc["errors"][0]["position"], int)

    doc = assert_problem(preview(instance, schedule="0 8 * * *", timezone="Europe/Atlantis"), 422)
    assert "timezone" in [e["field"] for e in doc["errors"]]
    for count in (0, -1, 100000, "many"):
        doc = assert_problem(preview(instance, schedule="0 8 * * *", count=count), 422)
        assert "count" in [e["field"] for e in doc["errors"]], (count, doc)


# ---------------------------------------------------------------------------
# Auth, health, cluster, metrics
# ---------------------------------------------------------------------------


def test_auth_required_and_wrong_tokens_refused(instance):
    create(instance, minimal("authed"))
    for path in ("/api/v1/jobs", "/api/v1/jobs/authed", "/api/v1/runs", "/api/v1/cluster",
                 "/metrics", "/api/v1/schedule/preview?schedule=*+*+*+*+*"):
        reply = instance.api("GET", path, token=None)
        assert_problem(reply, 401)
        assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer"), reply.headers
        assert_problem(instance.api("GET", path, token="not-a-real-token"), 401)
    assert_problem(http("GET", instance.url + "/api/v1/jobs",
                        headers={"Authorization": "Basic YWRtaW46YWRtaW4="}), 401)
    assert_problem(instance.api("DELETE", "/api/v1/jobs/authed", token=None), 401)
    assert_problem(instance.api("POST", "/api/v1/jobs", minimal("sneaky"), token="wrong"), 401)
    assert instance.api("GET", "/api/v1/jobs/authed").status == 200
    assert instance.api("GET", "/api/v1/jobs/sneaky").status == 404


def test_viewer_may_read_but_not_write(instance):
    before = create(instance, minimal("watched", description="as created"))
    for path in ("/api/v1/jobs", "/api/v1/jobs/watched", "/api/v1/runs", "/api/v1/cluster",
                 "/metrics", "/api/v1/schedule/preview?schedule=*+*+*+*+*"):
        assert instance.api("GET", path, token="viewer").status == 200, path
    writes = [
        ("POST", "/api/v1/jobs", minimal("by-viewer")),
        ("PUT", "/api/v1/jobs/watched", minimal("watched", description="by viewer")),
        ("PUT", "/api/v1/jobs/by-viewer", minimal("by-viewer")),
        ("PATCH", "/api/v1/jobs/watched", {"description": "by viewer"}),
        ("DELETE", "/api/v1/jobs/watched", None),
        ("POST", "/api/v1/jobs/watched/trigger", None),
        ("POST", "/api/v1/jobs/watched/pause", None),
        ("POST", "/api/v1/jobs/watched/resume", None),
    ]
    for method, path, body in writes:
        assert_problem(instance.api(method, path, body, token="viewer"), 403)
    items = instance.api("GET", "/api/v1/jobs").json["items"]
    assert [without_volatile(j) for j in items] == [without_volatile(before)]
    assert instance.api("GET", "/api/v1/runs").json["items"] == []


def test_health_readiness_cluster_and_metrics(instance):
    for path in ("/healthz", "/readyz"):
        reply = http("GET", instance.url + path)
        assert reply.status == 200, reply
    assert http("GET", instance.url + "/readyz").json["status"] == "ready"

    cluster = instance.api("GET", "/api/v1/cluster")
    assert cluster.status == 200, cluster
    assert cluster.json["mode"] == "standalone"

    create(instance, minimal("m1"))
    create(instance, minimal("m2"))
    create(instance, minimal("m3", paused=True))

    def jobs_metric():
        reply = instance.api("GET", "/metrics")
        assert reply.status == 200, reply
        assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
        match = re.search(r"^cronfence_jobs (\d+)$", reply.body, re.M)
        assert match, reply.body
        return int(match.group(1))

    wait_for(lambda: jobs_metric() == 2, what="cronfence_jobs 2 (the unpaused jobs)")
    assert instance.api("GET", "/metrics", token=None).status == 401


# ---------------------------------------------------------------------------
# No token configured
# ---------------------------------------------------------------------------

DASHBOARD = re.compile(r"^dashboard: http://127\.0\.0\.1:(\d+)/#token=(\S+)$")


def dashboard_line(instance):
    lines = [line for line in instance.stdout_lines if line.startswith("dashboard:")]
    assert len(lines) == 1, instance.stdout_lines
    match = DASHBOARD.match(lines[0])
    assert match, lines[0]
    return int(match.group(1)), match.group(2)


def test_generated_token_is_printed_works_and_survives_a_restart(start_instance):
    first = start_instance(name="first", tokens=False)
    port, token = dashboard_line(first)
    assert port == first.port
    assert len(token) >= 16
    assert first.api("GET", "/api/v1/jobs", token=None).status == 401
    assert first.api("POST", "/api/v1/jobs", minimal("mine"), token=token).status == 201
    assert first.api("GET", "/api/v1/jobs/mine", token=token).status == 200
    assert first.stop() == 0

    second = start_instance(name="second", db=first.db, tokens=False)
    _, again = dashboard_line(second)
    assert again == token
    assert second.api("GET", "/api/v1/jobs/mine", token=token).status == 200


def non_loopback_address():
    """An IPv4 address of this host other than loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # UDP connect: nothing is sent
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_no_token_binds_loopback_only(start_instance):
    inst = start_instance(tokens=False, args=["--listen", "0.0.0.0:0"])
    listening = [line for line in inst.stdout_lines if line.startswith("listening on ")]
    assert listening == [f"listening on 127.0.0.1:{inst.port}"], inst.stdout_lines
    port, _ = dashboard_line(inst)
    assert port == inst.port
    assert http("GET", inst.url + "/healthz").status == 200
    address = non_loopback_address()
    if address is not None:
        with socket.socket() as client:
            client.settimeout(5)
            assert client.connect_ex((address, inst.port)) != 0, \
                f"{address}:{inst.port} accepted a connection"


# ---------------------------------------------------------------------------
# Dashboard files, unknown paths, spec
# ---------------------------------------------------------------------------


def test_dashboard_is_served_with_a_strict_csp(instance):
    bodies = []
    for path in ("/", "/index.html"):
        reply = http("GET", instance.url + path)
        assert reply.status == 200, reply
        assert reply.headers["Content-Type"].startswith("text/html"), reply.headers
        csp = reply.headers.get("Content-Security-Policy")
        assert csp, reply.headers
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "<html" in reply.body.lower()
        bodies.append(reply.body)
    assert bodies[0] == bodies[1]


def test_static_paths_never_leave_web(instance):
    leaks = ("cmake_minimum_required", "#include", "root:x:0:0", "int main(")
    for path in ("/../server/main.c", "/%2e%2e/CMakeLists.txt", "/..%2f..%2fetc/passwd",
                 "//etc/passwd", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                 "/..%5c..%5cCMakeLists.txt", "/web/../CMakeLists.txt", "/./../server/api.c",
                 "/index.html/../../CMakeLists.txt"):
        status, _, body = raw_get(instance, path)
        assert status == 404, (path, status, body[:200])
        for leak in leaks:
            assert leak not in body, (path, body[:200])


def test_unknown_api_path_and_wrong_method(instance):
    assert_problem(instance.api("GET", "/api/v1/x"), 404)
    assert_problem(instance.api("GET", "/api/v1/jobs/a/b/c"), 404)
    assert_problem(instance.api("GET", "/api/v2/jobs"), 404)
    reply = instance.api("DELETE", "/api/v1/runs")
    assert_problem(reply, 405)
    assert "GET" in reply.headers.get("Allow", ""), reply.headers
    assert_problem(instance.api("PUT", "/api/v1/runs/some-id"), 405)
    assert_problem(instance.api("POST", "/api/v1/cluster"), 405)
    assert_problem(instance.api("DELETE", "/api/v1/jobs"), 405)


def test_openapi_spec_is_served(instance):
    reply = instance.api("GET", "/api/v1/openapi.yaml")
    assert reply.status == 200, reply
    assert reply.body.startswith("openapi:"), reply.body[:100]
    documented = set(re.findall(r"^  (/\S*):\s*$", reply.body, re.M))
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/jobs", "/api/v1/jobs/{name}",
                 "/api/v1/jobs/{name}/trigger", "/api/v1/jobs/{name}/pause",
                 "/api/v1/jobs/{name}/resume", "/api/v1/runs", "/api/v1/runs/{id}",
                 "/api/v1/schedule/preview", "/api/v1/cluster", "/api/v1/openapi.yaml"):
        assert path in documented, (path, sorted(documented))
