"""Webhook delivery as a target sees it (DESIGN §3 retries, timeouts, manual
trigger; §5 the webhook contract): the real cronfence delivering to the
reference receiver and to a small recording HTTP server of our own."""

import base64
import hashlib
import hmac
import http.server
import json
import re
import subprocess
import threading
import time

import pytest

from conftest import BIN_DIR, REPO, SECRET, job_body, ms, trigger, wait_for
from conftest import http as http_request

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_time_ms(text):
    """RFC 3339 UTC with milliseconds -> Unix ms."""
    assert RFC3339_MS.match(text), text
    return ms(text)


def version_of():
    """The version cronfence --version prints, for the User-Agent."""
    out = subprocess.run([str(BIN_DIR / "cronfence"), "--version"], capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    return out.split()[-1]


def expected_signature(secret, t, job, token, key, body):
    """v2 of DESIGN §5, computed here: hex HMAC-SHA256 over t, job, token, key and body."""
    message = f"{t}\n{job}\n{token}\n{key}\n".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def expected_webhook_signature(secret, webhook_id, timestamp, body):
    """Standard Webhooks v1: base64 HMAC-SHA256 over id "." timestamp "." body."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def check_signature(secret, request):
    """Asserts request's Cronfence-Signature (t=..,v2=..) and its Standard Webhooks
    headers (webhook-id = Idempotency-Key, webhook-timestamp = t, webhook-signature
    v1,<base64>) are DESIGN §5's HMACs under secret."""
    headers = request["headers"]
    header = headers["Cronfence-Signature"]
    match = re.fullmatch(r"t=(\d+),v2=([0-9a-f]{64})", header)
    assert match, header
    t, v2 = match.group(1), match.group(2)
    assert abs(int(t) - request["received"]) < 120, (t, request["received"])
    want = expected_signature(secret, t, headers["Cronfence-Job"], headers["Fencing-Token"],
                              headers["Idempotency-Key"], request["body"])
    assert hmac.compare_digest(v2, want), f"signature {v2} != HMAC {want}"
    assert headers["webhook-id"] == headers["Idempotency-Key"], headers
    assert headers["webhook-timestamp"] == t, headers
    want = expected_webhook_signature(secret, headers["webhook-id"], t, request["body"])
    assert hmac.compare_digest(headers["webhook-signature"], f"v1,{want}"), \
        f"webhook-signature {headers['webhook-signature']} != v1,{want}"


class Target:
    """A recording webhook target: every request kept with its headers and
    raw body; answers from self.respond(request, earlier) -> (status, headers, body)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.respond = lambda request, earlier: (200, {}, b'{"ok":true}')
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k: v for k, v in self.headers.items()},
                    "header_list": list(self.headers.items()),
                    "body": body,
                    "received": time.time(),
                }
                with target.lock:
                    earlier = list(target.requests)
                    target.requests.append(request)
                status, headers, payload = target.respond(request, earlier)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_job(self, job):
        with self.lock:
            return [r for r in self.requests if r["headers"].get("Cronfence-Job") == job]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def first_finished_run(instance, job, timeout=15):
    """The job's first delivered scheduled run, once it has finished."""
    def finished():
        runs = [r for r in instance.runs(job=job) if r["trigger"] == "schedule"
                and r["status"] not in ("skipped", "missed")]
        if not runs:
            return None
        first = min(runs, key=lambda r: r["scheduled_at"])
        return first if first["status"] != "running" else None
    return wait_for(finished, timeout=timeout, what=f"a finished run of {job}")


def finished_run(instance, job, run_id, timeout=10):
    """Run run_id of job once it is no longer running."""
    def done():
        return next((r for r in instance.runs(job=job)
                     if r["id"] == run_id and r["status"] != "running"), None)
    return wait_for(done, timeout=timeout, what=f"run {run_id} finished")


def knob_lines(receiver, job):
    """(token, attempt, status) of the attempts the receiver answered with a test knob."""
    found = []
    for line in receiver.stderr().splitlines():
        if "delivery answered by test knob" in line and f"job={job} " in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            found.append((int(fields["token"]), int(fields["attempt"]), int(fields["http_status"])))
    return found


# --------------------------------------------------------------------------
# Every second, in order, well formed
# --------------------------------------------------------------------------

def test_every_second_job_delivers_each_slot_once_in_order(instance, receiver):
    reply = instance.api("POST", "/api/v1/jobs", job_body("tick", receiver.hook()))
    assert reply.status == 201, reply
    deliveries = wait_for(lambda: len(receiver.deliveries("tick")) >= 6 and
                          receiver.deliveries("tick"), timeout=15, what="six deliveries")

    slots = [parse_time_ms(d["scheduled_at"]) for d in deliveries]
    assert all(slot % 1000 == 0 for slot in slots), slots
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert gaps == [1000] * len(gaps), f"slots not consecutive seconds: {slots}"
    tokens = [d["token"] for d in deliveries]
    assert all(b > a for a, b in zip(tokens, tokens[1:])), tokens
    for delivery, slot in zip(deliveries, slots):
        assert delivery["run_id"] == f"tick@{slot}", delivery
        assert delivery["idempotency_key"] == f"tick@{delivery['scheduled_at']}", delivery
        assert delivery["attempt"] == 1, delivery
        assert delivery["trigger"] == "schedule", delivery

    # The history says the same thing.
    for delivery in deliveries:
        run = finished_run(instance, "tick", delivery["run_id"])
        assert run["status"] == "succeeded", run
        assert run["fencing_token"] == delivery["token"], run
        assert run["scheduled_at"] == delivery["scheduled_at"], run
        assert run["instance"] == delivery["instance"], run
        assert run["attempts"] == 1 and run["http_status"] == 200, run
    first = min(slots)
    others = [r for r in instance.runs(job="tick")
              if r["status"] not in ("succeeded", "running") and
              parse_time_ms(r["scheduled_at"]) >= first]
    assert others == [], others


# --------------------------------------------------------------------------
# The webhook contract, checked by our own target
# --------------------------------------------------------------------------

def test_webhook_request_headers_body_and_signature(instance, target):
    secret = "job-secret-for-contract-test-42"
    payload = {"report": "nightly", "n": [1, 2, 3], "nested": {"ok": True}}
    body = job_body("contract", target.url, signing_secret=secret,
                    webhook={"method": "PUT", "headers": {"X-Team": "ops", "X-Request-Source": "cronfence test"},
                             "body": payload})
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    requests = wait_for(lambda: len(target.of_job("contract")) >= 2 and target.of_job("contract"),
                        what="two requests")
    version = version_of()
    for request in requests[:2]:
        h = request["headers"]
        assert request["method"] == "PUT"
        assert request["path"] == "/hook"
        assert h["Content-Type"] == "application/json"
        assert h["User-Agent"] == f"cronfence/{version}"
        assert h["X-Team"] == "ops"
        assert h["X-Request-Source"] == "cronfence test"
        assert h["Cronfence-Job"] == "contract"
        assert h["Cronfence-Attempt"] == "1"
        assert h["Cronfence-Fence-Scope"] == "job"  # overlap forbid, the default
        scheduled = h["Cronfence-Scheduled-At"]
        slot = parse_time_ms(scheduled)
        assert h["Cronfence-Run"] == f"contract@{slot}"
        assert h["Idempotency-Key"] == f"contract@{scheduled}"
        assert re.fullmatch(r"[1-9][0-9]*", h["Fencing-Token"]), h["Fencing-Token"]
        # Exactly one of each cronfence header.
        names = [name.lower() for name, _ in request["header_list"]]
        for name in ("fencing-token", "idempotency-key", "cronfence-job", "cronfence-run",
                     "cronfence-scheduled-at", "cronfence-attempt", "cronfence-signature",
                     "cronfence-fence-scope", "content-type", "user-agent", "webhook-id",
                     "webhook-timestamp", "webhook-signature"):
            assert names.count(name) == 1, (name, request["header_list"])
        check_signature(secret, request)

        doc = json.loads(request["body"])
        assert set(doc) == {"job", "run_id", "scheduled_at", "fencing_token", "attempt",
                            "instance", "trigger", "payload"}, doc
        assert doc["job"] == "contract"
        assert doc["run_id"] == h["Cronfence-Run"]
        assert doc["scheduled_at"] == scheduled
        assert isinstance(doc["fencing_token"], int) and not isinstance(doc["fencing_token"], bool)
        assert doc["fencing_token"] == int(h["Fencing-Token"])
        assert doc["attempt"] == 1
        assert doc["trigger"] == "schedule"
        assert doc["payload"] == payload
        run = finished_run(instance, "contract", doc["run_id"])
        assert run["status"] == "succeeded", run
        assert doc["instance"] == run["instance"] and doc["instance"]
        assert run["fencing_token"] == doc["fencing_token"]


def test_wrong_signature_is_detectable(instance, target):
    """The signature depends on the secret and on the body: a target with
    another secret, or a tampered body, does not verify."""
    secret = "job-secret-for-contract-test-43"
    reply = instance.api("POST", "/api/v1/jobs", job_body("sig", target.url, signing_secret=secret))
    assert reply.status == 201, reply
    request = wait_for(lambda: target.of_job("sig") and target.of_job("sig")[0],
                       what="a request")
    check_signature(secret, request)
    with pytest.raises(AssertionError):
        check_signature("some-other-secret-0123456789", request)
    tampered = dict(request, body=request["body"] + b" ")
    with pytest.raises(AssertionError):
        check_signature(secret, tampered)


def test_raw_body_is_sent_verbatim_with_its_content_type(instance, target):
    secret = "job-secret-for-raw-body-test-44"
    raw = "id,name\n1,caf\u00e9 \"quoted\"\n2,{not json}\n"
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "raw", target.url, signing_secret=secret,
        webhook={"raw_body": True, "body": raw, "content_type": "text/csv; charset=utf-8"}))
    assert reply.status == 201, reply
    request = wait_for(lambda: target.of_job("raw") and target.of_job("raw")[0],
                       what="a raw request")
    assert request["method"] == "POST"
    assert request["body"] == raw.encode()
    assert request["headers"]["Content-Type"] == "text/csv; charset=utf-8"
    assert [n.lower() for n, _ in request["header_list"]].count("content-type") == 1
    check_signature(secret, request)
    assert request["headers"]["Idempotency-Key"].startswith("raw@")


def test_job_without_secret_is_signed_with_the_instance_default(start_instance, target):
    default = "instance-default-secret-0123456789"
    instance = start_instance(args=["--signing-secret", default])
    body = job_body("dflt", target.url)
    del body["signing_secret"]
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    assert reply.json["signing_secret_set"] is False, reply
    request = wait_for(lambda: target.of_job("dflt") and target.of_job("dflt")[0],
                       what="a request")
    check_signature(default, request)


def test_reference_receiver_accepts_instance_default_secret(start_instance, receiver):
    instance = start_instance(args=["--signing-secret", SECRET])
    body = job_body("dflt-ok", receiver.hook())
    del body["signing_secret"]
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    wait_for(lambda: receiver.deliveries("dflt-ok"), what="an accepted delivery")
    run = first_finished_run(instance, "dflt-ok")
    assert run["status"] == "succeeded", run


def test_wrong_secret_is_refused_by_receiver_and_recorded_failed(start_instance, receiver):
    instance = start_instance(args=["--signing-secret", "not-the-receiver-secret-0123456789"])
    body = job_body("badsig", receiver.hook(), retry={"backoff_ms": 20})
    del body["signing_secret"]
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    run = first_finished_run(instance, "badsig")
    assert run["status"] == "failed", run
    assert run["http_status"] == 401, run
    assert run["attempts"] == 1, run  # 4xx other than 408/409/412/425/429: no retry
    assert receiver.deliveries("badsig") == []


# --------------------------------------------------------------------------
# Fence scope: per job, or per slot for overlap allow
# --------------------------------------------------------------------------

def test_allow_job_slots_out_of_token_order_are_accepted(instance, receiver):
    """Issue 11: an allow job's slots overlap, so a slot can reach the target
    after the next one, whose token is higher. Its deliveries say
    Cronfence-Fence-Scope: slot, the receiver fences them per slot, and the
    late slot succeeds instead of being fenced. A forbid job's say job."""
    # The receiver holds the allow job's first delivery 1.5 s: the next slot,
    # claimed a second after it, is accepted first.
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "overlap", receiver.hook(delay_first_ms=1500), overlap="allow"))
    assert reply.status == 201, reply
    reply = instance.api("POST", "/api/v1/jobs", job_body("serial", receiver.hook()))
    assert reply.status == 201, reply
    lines = wait_for(lambda: len(receiver.deliveries("overlap")) >= 4 and
                     receiver.deliveries("overlap"), timeout=15, what="four deliveries")

    assert [r for r in instance.runs(job="overlap") if r["status"] == "fenced"] == []
    held = min(lines, key=lambda d: d["scheduled_at"])
    overtaken_by = lines[:lines.index(held)]  # the log is in order of acceptance
    assert overtaken_by, f"the held slot was accepted first: {lines}"
    assert all(d["token"] > held["token"] for d in overtaken_by), (held, overtaken_by)
    run = finished_run(instance, "overlap", held["run_id"])
    assert run["status"] == "succeeded" and run["fencing_token"] == held["token"], run
    assert {d["fence_scope"] for d in lines} == {"slot"}, lines

    # A manual run of the allow job is a slot of its own.
    reply = instance.api("POST", "/api/v1/jobs/overlap/trigger")
    assert reply.status == 202, reply
    manual = wait_for(lambda: next((d for d in receiver.deliveries("overlap")
                                    if d["run_id"] == reply.json["id"]), None),
                      what="the manual delivery")
    assert manual["fence_scope"] == "slot" and manual["trigger"] == "manual", manual

    serial = wait_for(lambda: len(receiver.deliveries("serial")) >= 2 and
                      receiver.deliveries("serial"), what="two deliveries of the forbid job")
    assert {d["fence_scope"] for d in serial} == {"job"}, serial


# --------------------------------------------------------------------------
# Status codes: fenced, failed
# --------------------------------------------------------------------------

@pytest.mark.parametrize("code,status", [(409, "fenced"), (412, "fenced"), (400, "failed")])
def test_target_status_decides_outcome_without_retry(instance, receiver, code, status):
    job = f"code{code}"
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        job, receiver.hook(status=code), retry={"attempts": 3, "backoff_ms": 20}))
    assert reply.status == 201, reply
    run = first_finished_run(instance, job)
    assert run["status"] == status, run
    assert run["attempts"] == 1, run
    assert run["http_status"] == code, run
    # A retry (backoff 20 ms) would have reached the receiver by now.
    time.sleep(0.5)
    again = next(r for r in instance.runs(job=job) if r["id"] == run["id"])
    assert again["attempts"] == 1 and again["status"] == status, again
    attempts = [a for token, a, s in knob_lines(receiver, job) if token == run["fencing_token"]]
    assert attempts == [1], attempts
    assert receiver.deliveries(job) == []


# --------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------

def test_retries_until_success_with_one_token(instance, receiver):
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "retry", receiver.hook(fail=2), retry={"attempts": 3, "backoff_ms": 50}))
    assert reply.status == 201, reply
    run = first_finished_run(instance, "retry")
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 3, run
    assert run["http_status"] == 200, run
    knobbed = [(a, s) for token, a, s in knob_lines(receiver, "retry")
               if token == run["fencing_token"]]
    assert knobbed == [(1, 503), (2, 503)], knobbed
    accepted = [d for d in receiver.deliveries("retry") if d["run_id"] == run["id"]]
    assert len(accepted) == 1, accepted
    assert accepted[0]["attempt"] == 3
    assert accepted[0]["token"] == run["fencing_token"]
    assert accepted[0]["idempotency_key"] == f"retry@{run['scheduled_at']}"


def test_all_attempts_share_run_id_token_and_key(instance, target):
    def respond(request, earlier):
        if int(request["headers"]["Cronfence-Attempt"]) <= 2:
            return 503, {}, b'{"try":"again"}'
        return 200, {}, b'{"ok":true}'
    target.respond = respond
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "same", target.url, retry={"attempts": 3, "backoff_ms": 50}))
    assert reply.status == 201, reply
    run = first_finished_run(instance, "same")
    assert run["status"] == "succeeded" and run["attempts"] == 3, run
    attempts = [r for r in target.of_job("same") if r["headers"]["Cronfence-Run"] == run["id"]]
    assert [r["headers"]["Cronfence-Attempt"] for r in attempts] == ["1", "2", "3"]
    for request in attempts:
        h = request["headers"]
        assert h["Fencing-Token"] == str(run["fencing_token"])
        assert h["Idempotency-Key"] == f"same@{run['scheduled_at']}"
        assert h["Cronfence-Scheduled-At"] == run["scheduled_at"]
        doc = json.loads(request["body"])
        assert doc["attempt"] == int(h["Cronfence-Attempt"])
        assert doc["run_id"] == run["id"]
        assert doc["fencing_token"] == run["fencing_token"]
        check_signature(SECRET, request)


def test_retry_after_is_honoured(instance, receiver):
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "later", receiver.hook(fail=1, retry_after=2), retry={"attempts": 3, "backoff_ms": 10}))
    assert reply.status == 201, reply
    run = first_finished_run(instance, "later", timeout=20)
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    accepted = next(d for d in receiver.deliveries("later") if d["run_id"] == run["id"])
    assert accepted["attempt"] == 2
    waited = parse_time_ms(accepted["received_at"]) - parse_time_ms(run["started_at"])
    # Retry-After: 2 -> at least ~2 s between the attempts (backoff alone: ~10 ms).
    assert waited >= 1800, f"second attempt only {waited} ms after the first"
    assert waited < 10000, waited


def test_per_attempt_timeout(instance, receiver):
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "slow", receiver.hook(delay_ms=3000),
        webhook={"timeout_ms": 300}, retry={"attempts": 2, "backoff_ms": 20}))
    assert reply.status == 201, reply
    run = first_finished_run(instance, "slow")
    assert run["status"] == "failed", run
    assert run["attempts"] == 2, run
    assert "timeout" in (run["error"] or "").lower(), run
    # Two attempts of 300 ms plus a short backoff: far less than the 3 s delay.
    duration = parse_time_ms(run["finished_at"]) - parse_time_ms(run["started_at"])
    assert duration < 2500, run


# --------------------------------------------------------------------------
# Manual trigger
# --------------------------------------------------------------------------

def test_manual_trigger_runs_now_without_moving_the_schedule(instance, target):
    reply = instance.api("POST", "/api/v1/jobs", job_body("man", target.url))
    assert reply.status == 201, reply
    wait_for(lambda: len(target.of_job("man")) >= 2, what="two scheduled requests")
    # Move the schedule to one slot a few seconds out (once a minute).
    now = time.time()
    slot_s = int(now) + 5
    reply = instance.api("PATCH", "/api/v1/jobs/man",
                         {"schedule": f"{slot_s % 60} * * * * *"},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply
    slot_ms = slot_s * 1000
    assert reply.json["next_fire_at"] is not None
    assert parse_time_ms(reply.json["next_fire_at"]) == slot_ms, reply.json
    time.sleep(0.3)  # let a run in flight finish
    before = [int(r["headers"]["Fencing-Token"]) for r in target.of_job("man")]
    count_before = len(target.of_job("man"))

    reply = instance.api("POST", "/api/v1/jobs/man/trigger")
    assert reply.status == 202, reply
    manual = reply.json
    assert manual["trigger"] == "manual", manual
    assert manual["status"] == "running", manual
    assert manual["job"] == "man"
    assert "@" not in manual["id"] and not manual["id"].startswith("man"), manual  # random
    assert manual["fencing_token"] > max(before), (manual, before)

    request = wait_for(lambda: next((r for r in target.of_job("man")
                                     if r["headers"]["Cronfence-Run"] == manual["id"]), None),
                       what="the manual delivery")
    assert request["headers"]["Idempotency-Key"] == f"man@manual-{manual['id']}"
    assert int(request["headers"]["Fencing-Token"]) == manual["fencing_token"]
    doc = json.loads(request["body"])
    assert doc["trigger"] == "manual" and doc["run_id"] == manual["id"]
    check_signature(SECRET, request)
    assert len(target.of_job("man")) == count_before + 1

    # The schedule is untouched: the next slot is still the one it was.
    job = instance.api("GET", "/api/v1/jobs/man").json
    assert parse_time_ms(job["next_fire_at"]) == slot_ms, job
    done = finished_run(instance, "man", manual["id"])
    assert done["status"] == "succeeded" and done["trigger"] == "manual", done

    scheduled = wait_for(lambda: next((r for r in target.of_job("man")
                                       if r["headers"]["Cronfence-Run"] == f"man@{slot_ms}"), None),
                         timeout=12, what="the scheduled slot after the manual run")
    assert int(scheduled["headers"]["Fencing-Token"]) > manual["fencing_token"]
    assert json.loads(scheduled["body"])["trigger"] == "schedule"


def test_manual_trigger_is_accepted_by_reference_receiver(instance, receiver):
    """DESIGN §3: a manual run's idempotency key is <job>@manual-<run id>; §5:
    the reference receiver verifies and accepts deliveries. So a manual
    trigger to the reference receiver must succeed."""
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "manref", receiver.hook(), schedule="0 0 1 1 *"))
    assert reply.status == 201, reply
    reply = instance.api("POST", "/api/v1/jobs/manref/trigger")
    assert reply.status == 202, reply
    run_id = reply.json["id"]
    run = finished_run(instance, "manref", run_id)
    assert run["status"] == "succeeded", run
    assert [d["run_id"] for d in receiver.deliveries("manref")] == [run_id]


def test_manual_delivery_replayed_as_another_job_is_refused(instance, target, receiver):
    """Issue 13: a captured manual delivery of job-a, re-sent to the reference
    receiver as job-b (Cronfence-Job and webhook headers otherwise as captured),
    must be refused and leave job-b's fence alone: v2 signs the job, and the key
    <job>@manual-<run id> and the body name job-a. Under v1 with bare run-id keys
    it was accepted, and job-b's next genuine delivery was then fenced (409)."""
    for name, url in (("job-a", target.url), ("job-b", receiver.hook())):
        reply = instance.api("POST", "/api/v1/jobs", job_body(name, url, schedule="0 0 1 1 *"))
        assert reply.status == 201, reply
    # job-a's token is raised above job-b's next one, as an attacker would wish.
    for _ in range(3):
        reply = instance.api("POST", "/api/v1/jobs/job-a/trigger")
        assert reply.status == 202, reply
        assert finished_run(instance, "job-a", reply.json["id"])["status"] == "succeeded"
    captured = target.of_job("job-a")[-1]

    headers = {name: value for name, value in captured["headers"].items()
               if name.lower() not in ("host", "content-length", "connection",
                                       "accept-encoding", "expect")}
    replay = dict(headers, **{"Cronfence-Job": "job-b"})
    reply = http_request("POST", receiver.hook(), captured["body"], replay)
    assert reply.status in (400, 401), f"replay as job-b answered {reply}"
    assert receiver.deliveries("job-b") == [], receiver.deliveries("job-b")
    # What was replayed was a genuine, well-signed manual delivery of job-a.
    check_signature(SECRET, captured)
    assert captured["headers"]["Idempotency-Key"].startswith("job-a@manual-"), captured

    # job-b's genuine delivery is not fenced by the replay.
    reply = instance.api("POST", "/api/v1/jobs/job-b/trigger")
    assert reply.status == 202, reply
    run = finished_run(instance, "job-b", reply.json["id"])
    assert run["status"] == "succeeded", run
    assert [d["idempotency_key"] for d in receiver.deliveries("job-b")] == \
        [f"job-b@manual-{run['id']}"]


# --------------------------------------------------------------------------
# Verified by the Standard Webhooks reference library
# --------------------------------------------------------------------------

STANDARD_WEBHOOKS = REPO / "tests" / "standard-webhooks"


def standard_webhooks_verify(secret, requests):
    """[True/False per request]: whether npm's `standardwebhooks` (the reference library
    a JavaScript target would use, tests/standard-webhooks) accepts each request's
    webhook-* headers and raw body under secret."""
    document = {"secret": secret, "deliveries": [
        {"headers": dict(r["headers"]), "body_base64": base64.b64encode(r["body"]).decode()}
        for r in requests]}
    out = subprocess.run(["node", str(STANDARD_WEBHOOKS / "verify.mjs")],
                         input=json.dumps(document), capture_output=True, text=True,
                         timeout=60, cwd=STANDARD_WEBHOOKS)
    assert out.returncode == 0, out.stderr
    return [result["ok"] for result in json.loads(out.stdout)]


def test_standard_webhooks_library_verifies_every_kind_of_delivery(instance, target):
    secret = "job-secret-for-standard-webhooks-45"
    reply = instance.api("POST", "/api/v1/jobs", job_body("sw", target.url, signing_secret=secret))
    assert reply.status == 201, reply
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "sw-raw", target.url, signing_secret=secret,
        webhook={"raw_body": True, "body": "plain text, not JSON: café", "content_type": "text/plain"}))
    assert reply.status == 201, reply
    wait_for(lambda: target.of_job("sw") and target.of_job("sw-raw"), what="scheduled requests")
    trigger(instance, "sw")
    manual = wait_for(lambda: [r for r in target.of_job("sw")
                               if "@manual-" in r["headers"]["Idempotency-Key"]],
                      what="the manual request")
    requests = [target.of_job("sw")[0], target.of_job("sw-raw")[0], manual[0]]

    assert standard_webhooks_verify(secret, requests) == [True, True, True]
    # The library is not a rubber stamp: another secret, or one byte more, fails.
    assert standard_webhooks_verify("some-other-secret-0123456789", requests) == [False] * 3
    tampered = [dict(r, body=r["body"] + b" ") for r in requests]
    assert standard_webhooks_verify(secret, tampered) == [False] * 3
