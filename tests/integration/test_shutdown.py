"""SIGTERM: claiming stops, deliveries in flight finish within
--shutdown-grace-ms while the API still answers, locks are released, the
database is checkpointed, and the process exits 0 with no run left running."""

import signal
import threading
import time

from conftest import SLOW, Instance, http, job_body, wait_for
from test_restart import db_query


def running_run(instance, job):
    return wait_for(lambda: next((r for r in instance.runs(job=job) if r["status"] == "running"),
                                 None), timeout=15 * SLOW, what=f"a run of {job} in flight")


def stop_in_background(instance):
    """Sends SIGTERM and waits for the exit on a thread; returns (thread, result dict)."""
    result = {}

    def wait():
        result["code"] = instance.stop()

    instance.proc.send_signal(signal.SIGTERM)
    thread = threading.Thread(target=wait)
    thread.start()
    return thread, result


def test_sigterm_drains_the_delivery_while_the_api_answers(tmp_path, processes, receiver):
    instance = Instance(tmp_path)
    processes.append(instance)
    instance.start()
    body = job_body("drain", receiver.hook(delay_ms=3000), overlap="allow")
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    run = running_run(instance, "drain")

    signalled_ms = int(time.time() * 1000)
    thread, result = stop_in_background(instance)
    # While the delivery finishes, the instance says it is not ready but still answers.
    ready = wait_for(lambda: (lambda r: r if r.status == 503 else None)(
        http("GET", instance.url + "/readyz")), timeout=5 * SLOW, what="readyz 503")
    assert ready.json == {"status": "not ready", "database": True, "coordinator": True,
                          "scheduler": False, "reason": "stopping"}
    assert instance.api("GET", f"/api/v1/runs/{run['id']}").status == 200
    trigger = instance.api("POST", "/api/v1/jobs/drain/trigger")
    assert trigger.status == 503, trigger
    thread.join(60 * SLOW)
    assert result["code"] == 0, instance.stderr()[-3000:]

    assert db_query(instance.db, "SELECT status, attempts, http_status FROM runs WHERE id = ?",
                   run["id"]) == [("succeeded", 1, 200)]
    assert db_query(instance.db, "SELECT id FROM runs WHERE status = 'running'") == []
    assert [d["run_id"] for d in receiver.deliveries("drain")].count(run["id"]) == 1
    # Claiming stopped at the signal: the 3 s drain would have fired two more
    # every-second slots otherwise. (A slot due within the few milliseconds
    # the signal takes to reach the scheduler may still start.)
    late = db_query(instance.db, "SELECT id FROM runs WHERE scheduled_at > ?",
                   signalled_ms + 1000)
    assert late == [], late
    # The last connection checkpointed the write-ahead log into the database file.
    wal = instance.db.with_name(instance.db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_the_grace_period_bounds_the_wait(tmp_path, processes, receiver):
    instance = Instance(tmp_path, args=["--shutdown-grace-ms", "1000"])
    processes.append(instance)
    instance.start()
    body = job_body("endless", receiver.hook(delay_ms=60000),
                    webhook={"timeout_ms": 120000})
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    run = running_run(instance, "endless")

    # The webhook would answer after 60 s; the stop does not wait for it.
    assert instance.stop(timeout=30) == 0, instance.stderr()[-3000:]
    rows = db_query(instance.db, "SELECT status, error FROM runs WHERE id = ?", run["id"])
    assert rows == [("failed", "shutdown")], rows
    assert db_query(instance.db, "SELECT id FROM runs WHERE status = 'running'") == []

    instance.start()
    after = instance.api("GET", f"/api/v1/runs/{run['id']}").json
    assert after["status"] == "failed" and after["error"] == "shutdown", after
    assert instance.runs(status="lost") == []


def test_no_retry_starts_after_sigterm(tmp_path, processes, receiver):
    instance = Instance(tmp_path)
    processes.append(instance)
    instance.start()
    body = job_body("retrying", receiver.hook(fail=5),
                    retry={"attempts": 5, "backoff_ms": 20000, "max_backoff_ms": 20000})
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    run = running_run(instance, "retrying")
    # The first attempt has been answered (503) once the webhook histogram counts it.
    wait_for(lambda: "cronfence_webhook_duration_seconds_count 1\n" in
             instance.api("GET", "/metrics").body, timeout=10 * SLOW, what="the first attempt")

    assert instance.stop() == 0, instance.stderr()[-3000:]
    rows = db_query(instance.db, "SELECT status, attempts, http_status FROM runs WHERE id = ?",
                   run["id"])
    assert rows == [("failed", 1, 503)], rows
    assert db_query(instance.db, "SELECT id FROM runs WHERE status = 'running'") == []


def test_sigterm_in_a_cluster_releases_the_lock(tmp_path, processes, receiver, nodes):
    """The stopping instance releases its lock: a peer delivers the next slot at once,
    long before the 60 s lease would have expired."""
    redis = ",".join(node.url for node in nodes)
    first = Instance(tmp_path, name="cf0", args=["--redis", redis, "--instance-id", "cf0"])
    processes.append(first)
    first.start()
    wait_for(lambda: first.api("GET", "/api/v1/cluster").json["quorum"]["healthy"],
             timeout=20 * SLOW, what="a quorum")
    body = job_body("handover", receiver.hook(delay_ms=2500), schedule="*/3 * * * * *",
                    lease_ms=60000, overlap="forbid")
    assert first.api("POST", "/api/v1/jobs", body).status == 201
    run = running_run(first, "handover")
    assert run["instance"] == "cf0"

    second = Instance(tmp_path, name="cf1", args=["--redis", redis, "--instance-id", "cf1"])
    processes.append(second)
    second.start()
    wait_for(lambda: len(second.api("GET", "/api/v1/cluster").json["members"]) == 2,
             timeout=20 * SLOW, what="cf1 joined")

    assert first.stop() == 0, first.stderr()[-3000:]
    assert db_query(first.db, "SELECT status FROM runs WHERE id = ?", run["id"]) == \
        [("succeeded",)]
    assert db_query(first.db, "SELECT id FROM runs WHERE status = 'running'") == []
    # No lock of a slot cf0 ran is left on any node. (cf1 may hold the lock of a
    # later slot already: the stop can end just as the next slot is due.)
    ran = {str(row[0]) for row in db_query(first.db, "SELECT scheduled_at FROM runs "
                                                     "WHERE instance = 'cf0'")}
    assert ran
    for node in nodes:
        holder = node.cli("GET", "cf:lock:handover")
        assert holder == "" or holder.rsplit(":", 1)[1] not in ran, (node.name, holder, ran)

    # The lock is free, so cf1 delivers the following slots under its own name.
    later = wait_for(lambda: [d for d in receiver.deliveries("handover")
                              if d["instance"] == "cf1"], timeout=15 * SLOW,
                     what="a delivery by cf1")
    assert later[0]["token"] > run["fencing_token"]
    assert second.api("GET", f"/api/v1/runs/{run['id']}").json["status"] == "succeeded"
