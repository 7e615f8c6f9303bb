"""Run forensics (DESIGN §3 retry of a run, §6 Run fields and GET /runs filters):
attempt_log and lag_ms on every run, POST /runs/{id}/retry, ?instance= and ?trigger=."""

import calendar
import json
import time

import pytest

from conftest import job_body, ms, trigger, wait_for
from test_delivery import Target

FAR = "0 0 1 1 *"  # once a year: the job fires nothing more while a test looks at it


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def run_of(instance, run_id, final=True):
    """Run run_id, once finished when final."""
    def ready():
        reply = instance.api("GET", f"/api/v1/runs/{run_id}")
        if reply.status != 200:
            return None
        return reply.json if not final or reply.json["status"] != "running" else None
    return wait_for(ready, timeout=20, what=f"run {run_id}")


def first_scheduled_run(instance, job, status):
    """The first scheduled run of job that finished with status."""
    def found():
        runs = [r for r in instance.runs(job=job)
                if r["trigger"] == "schedule" and r["status"] == status]
        return min(runs, key=lambda r: r["scheduled_at"]) if runs else None
    return wait_for(found, timeout=20, what=f"a {status} run of {job}")


def freeze(instance, job):
    """Moves job to a yearly schedule so no further slot fires while the test looks."""
    reply = instance.api("PATCH", f"/api/v1/jobs/{job}", {"schedule": FAR},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply


def test_attempt_log_records_each_attempt_and_lag(start_instance, target):
    instance = start_instance(args=["--instance-id", "forensics-a"])
    # The first attempt of every firing fails with 500, the retry succeeds.
    target.respond = lambda request, earlier: (
        (500, {}, b'{"error":"boom"}') if request["headers"]["Cronfence-Attempt"] == "1"
        else (200, {}, b'{"ok":true}'))
    body = job_body("flaky", target.url, retry={"attempts": 3, "backoff_ms": 100,
                                                "max_backoff_ms": 200})
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    run = first_scheduled_run(instance, "flaky", "succeeded")
    freeze(instance, "flaky")

    assert run["attempts"] == 2, run
    log = run["attempt_log"]
    assert [entry["attempt"] for entry in log] == [1, 2], log
    assert log[0]["http_status"] == 500 and log[0]["error"] == "http status 500", log
    assert log[1]["http_status"] == 200 and log[1]["error"] is None, log
    assert ms(log[0]["started_at"]) <= ms(log[1]["started_at"]), log
    assert all(entry["duration_ms"] >= 0 for entry in log), log
    # lag_ms: from the slot to the first request, which the target saw after the slot.
    assert isinstance(run["lag_ms"], int) and run["lag_ms"] >= 0, run
    first = min(r["received"] for r in target.of_job("flaky")
                if r["headers"]["Cronfence-Run"] == run["id"])
    assert run["lag_ms"] <= (first * 1000 - ms(run["scheduled_at"])) + 1000, run
    assert run["retry_of"] is None, run

    # A slot that sent nothing has no lag and no attempts; a skipped or missed run
    # of the history shows lag_ms null and an empty attempt_log.
    for other in instance.runs(job="flaky"):
        if other["status"] in ("skipped", "missed"):
            assert other["lag_ms"] is None and other["attempt_log"] == [], other


def test_retry_fires_the_slot_again_with_its_key_and_a_new_token(start_instance, target):
    instance = start_instance(args=["--instance-id", "forensics-b"])
    answer = {"status": 400}
    target.respond = lambda request, earlier: (answer["status"], {}, b"{}")
    assert instance.api("POST", "/api/v1/jobs", job_body("fragile", target.url)).status == 201
    failed = first_scheduled_run(instance, "fragile", "failed")
    freeze(instance, "fragile")
    answer["status"] = 200
    old_request = next(r for r in target.of_job("fragile")
                       if r["headers"]["Cronfence-Run"] == failed["id"])

    # Viewers may not retry; unknown runs are 404.
    assert instance.api("POST", f"/api/v1/runs/{failed['id']}/retry", token="viewer").status == 403
    assert instance.api("POST", "/api/v1/runs/fragile@1/retry").status == 404

    reply = instance.api("POST", f"/api/v1/runs/{failed['id']}/retry")
    assert reply.status == 202, reply
    retry = reply.json
    assert retry["trigger"] == "retry" and retry["retry_of"] == failed["id"], retry
    assert retry["id"] != failed["id"] and retry["job"] == "fragile", retry
    assert retry["scheduled_at"] == failed["scheduled_at"], retry
    assert retry["fencing_token"] > failed["fencing_token"], (retry, failed)
    assert reply.headers["Location"] == f"/api/v1/runs/{retry['id']}", reply.headers

    done = run_of(instance, retry["id"])
    assert done["status"] == "succeeded" and done["retry_of"] == failed["id"], done
    sent = next(r for r in target.of_job("fragile")
                if r["headers"]["Cronfence-Run"] == retry["id"])
    # The SAME idempotency key as the slot's first firing, the new token, trigger retry.
    assert sent["headers"]["Idempotency-Key"] == old_request["headers"]["Idempotency-Key"]
    assert sent["headers"]["Idempotency-Key"] == f"fragile@{failed['scheduled_at']}"
    assert int(sent["headers"]["Fencing-Token"]) == retry["fencing_token"]
    payload = json.loads(sent["body"])
    assert payload["trigger"] == "retry" and payload["run_id"] == retry["id"], payload

    # The old run is unchanged: the retry is a run of its own.
    assert run_of(instance, failed["id"])["status"] == "failed"

    # A succeeded run, a retry itself, or a manual run cannot be retried.
    assert instance.api("POST", f"/api/v1/runs/{retry['id']}/retry").status == 409
    manual = trigger(instance, "fragile")
    run_of(instance, manual.json["id"])
    refused = instance.api("POST", f"/api/v1/runs/{manual.json['id']}/retry")
    assert refused.status == 409, refused
    assert first_scheduled_run(instance, "fragile", "failed")["id"] == failed["id"]


def test_runs_filter_by_instance_and_trigger(start_instance, target):
    instance = start_instance(args=["--instance-id", "forensics-c"])
    assert instance.api("POST", "/api/v1/jobs", job_body("filtered", target.url)).status == 201
    first_scheduled_run(instance, "filtered", "succeeded")
    freeze(instance, "filtered")
    manual = trigger(instance, "filtered")
    run_of(instance, manual.json["id"])

    reply = instance.api("GET", "/api/v1/runs?trigger=manual")
    assert reply.status == 200, reply
    assert [r["id"] for r in reply.json["items"]] == [manual.json["id"]], reply.json
    reply = instance.api("GET", "/api/v1/runs?trigger=schedule&job=filtered")
    assert reply.json["items"] and all(r["trigger"] == "schedule" for r in reply.json["items"])
    reply = instance.api("GET", "/api/v1/runs?instance=forensics-c")
    assert len(reply.json["items"]) == len(instance.runs()), reply.json
    assert instance.api("GET", "/api/v1/runs?instance=elsewhere").json["items"] == []

    reply = instance.api("GET", "/api/v1/runs?trigger=sometimes")
    assert reply.status == 422, reply
    assert [e["field"] for e in reply.json["errors"]] == ["trigger"], reply.json


# --------------------------------------------------------------------------
# Per-job metrics (DESIGN §7 --metrics-per-job)
# --------------------------------------------------------------------------

JOB_FAMILIES = ("cronfence_job_last_success_timestamp_seconds",
                "cronfence_job_last_failure_timestamp_seconds",
                "cronfence_job_consecutive_failures",
                "cronfence_job_next_fire_timestamp_seconds")


def job_series(instance):
    """{family: {job: value}} of the per-job families, read with the strict parser."""
    from test_metrics import scrape
    families = scrape(instance)
    return {name: {dict(labels)["job"]: number
                   for (_, labels), number in families.get(name, {"samples": {}})["samples"].items()}
            for name in JOB_FAMILIES if name in families}


def test_per_job_metrics_after_successes_and_failures(start_instance, tmp_path, target):
    args = ["--instance-id", "forensics-m"]
    instance = start_instance(name="metrics", args=args)
    target.respond = lambda request, earlier: (
        (200, {}, b"{}") if request["headers"]["Cronfence-Job"] == "steady" else (400, {}, b"{}"))
    for name in ("steady", "broken"):
        assert instance.api("POST", "/api/v1/jobs",
                            job_body(name, target.url, retry={"attempts": 1})).status == 201
    wait_for(lambda: len([r for r in instance.runs(job="broken") if r["status"] == "failed"]) >= 3,
             timeout=20, what="three failures")
    first_scheduled_run(instance, "steady", "succeeded")
    freeze(instance, "steady")
    freeze(instance, "broken")
    assert instance.api("POST", "/api/v1/jobs/broken/pause").status == 200
    wait_for(lambda: not [r for r in instance.runs() if r["status"] == "running"], timeout=20,
             what="no run in flight")

    def expected():
        runs = instance.runs()
        ok = [r for r in runs if r["job"] == "steady" and r["status"] == "succeeded"]
        bad = [r for r in runs if r["job"] == "broken" and r["status"] == "failed"]
        year = time.gmtime().tm_year + 1
        return {
            "cronfence_job_last_success_timestamp_seconds": {
                "steady": max(ms(r["finished_at"]) for r in ok) / 1000},
            "cronfence_job_last_failure_timestamp_seconds": {
                "broken": max(ms(r["finished_at"]) for r in bad) / 1000},
            "cronfence_job_consecutive_failures": {"steady": 0, "broken": len(bad)},
            # The yearly schedule's next slot; the paused job has none.
            "cronfence_job_next_fire_timestamp_seconds": {
                "steady": calendar.timegm((year, 1, 1, 0, 0, 0))},
        }

    want = expected()
    assert job_series(instance) == want

    # After a restart the values come back from the history.
    instance.stop()
    again = start_instance(name="metrics", db=instance.db, args=args)
    assert job_series(again) == want

    # Switched off, none of the families is written.
    again.stop()
    off = start_instance(name="metrics", db=instance.db, args=args + ["--metrics-per-job=false"])
    assert job_series(off) == {}
