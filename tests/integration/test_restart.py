"""Crashes, stops and restarts (DESIGN §1 G2/G7, §2 standalone, §3 catch-up,
§8 storage): real cronfence processes killed and restarted on one database."""

import json
import re
import signal
import sqlite3
import time

from conftest import Instance, http, iso, job_body, ms, wait_for


def create(instance, body):
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    return reply.json


def db_query(path, sql, *args):
    connection = sqlite3.connect(str(path), timeout=10)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def stop_cleanly(instance):
    code = instance.stop()
    assert code == 0, f"exit {code} after SIGTERM: {instance.stderr()[-3000:]}"


# --------------------------------------------------------------------------
# kill -9
# --------------------------------------------------------------------------

def test_kill9_with_deliveries_in_flight(instance, receiver):
    job = create(instance, job_body("crash", receiver.hook(delay_ms=2000), overlap="allow"))
    create(instance, job_body("calm", receiver.hook()))

    def in_flight():
        runs = instance.runs(job="crash")
        return (len([r for r in runs if r["status"] == "succeeded"]) >= 2 and
                len([r for r in runs if r["status"] == "running"]) >= 1 and runs)
    wait_for(in_flight, timeout=15, what="finished and running runs")
    before = {r["id"]: r for r in instance.runs()}
    assert instance.kill9() == -signal.SIGKILL

    # The database is consistent after the crash, before anything repairs it.
    assert db_query(instance.db, "PRAGMA integrity_check") == [("ok",)]
    stored = dict(db_query(instance.db, "SELECT id, status FROM runs"))
    killed = sorted(run_id for run_id, status in stored.items() if status == "running")
    assert killed, stored
    tokens_before = [r["fencing_token"] for r in before.values() if r["fencing_token"]]
    tokens_before += [token for (token,) in db_query(
        instance.db, "SELECT fencing_token FROM runs WHERE fencing_token IS NOT NULL")]

    instance.start()
    after_job = instance.api("GET", "/api/v1/jobs/crash")
    assert after_job.status == 200, after_job
    assert after_job.json["version"] == job["version"], after_job.json
    assert str(job["version"]) in after_job.headers["ETag"], after_job.headers["ETag"]
    assert instance.api("GET", "/api/v1/jobs/calm").status == 200

    runs = {r["id"]: r for r in instance.runs()}
    for run_id in killed:
        assert runs[run_id]["status"] == "lost", runs[run_id]
        assert runs[run_id]["finished_at"], runs[run_id]
    # History of finished runs is kept as it was.
    for run_id, old in before.items():
        if old["status"] not in ("running",):
            assert runs.get(run_id) == old, (old, runs.get(run_id))

    highest = max(tokens_before)
    fresh = wait_for(lambda: [r for r in instance.runs() if r["id"] not in stored and
                              r["fencing_token"]] or None, what="runs after restart")
    assert all(r["fencing_token"] > highest for r in fresh), (highest, fresh)
    wait_for(lambda: any(d["token"] > highest for d in receiver.deliveries("calm")),
             what="a delivery after restart")
    late = [d for d in receiver.deliveries() if d["run_id"] not in stored]
    assert late and all(d["token"] > highest for d in late), (highest, late)
    # The whole history still reads as one consistent database.
    assert db_query(instance.db, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------
# Catch-up after downtime
# --------------------------------------------------------------------------

def downtime(instance, receiver, name, catchup, gap_s=4):
    """Runs an every-second job, stops the instance for gap_s seconds, restarts it.
    Returns (last slot recorded before the stop, restart wall ms, runs after it)."""
    create(instance, job_body(name, receiver.hook(), catchup=catchup, starting_deadline_ms=1000))
    wait_for(lambda: len(receiver.deliveries(name)) >= 2, what="two deliveries")
    stop_cleanly(instance)
    last = db_query(instance.db, "SELECT max(scheduled_at) FROM runs WHERE job = ?", name)[0][0]
    assert last, "no run recorded before the stop"
    time.sleep(gap_s)
    restarted = int(time.time() * 1000)
    instance.start()
    wait_for(lambda: len([d for d in receiver.deliveries(name)
                          if ms(d["scheduled_at"]) > restarted]) >= 2,
             what="deliveries after the restart")
    runs = sorted((r for r in instance.runs(job=name) if ms(r["scheduled_at"]) > last),
                  key=lambda r: r["scheduled_at"])
    return last, restarted, runs


def check_gap(name, last, restarted, runs, receiver, at_least):
    slots = [ms(r["scheduled_at"]) for r in runs]
    # One row per slot, no gap, no duplicate, starting right after the last one.
    assert slots[0] == last + 1000, (last, slots)
    assert slots == list(range(slots[0], slots[0] + 1000 * len(slots), 1000)), slots
    for run in runs:
        assert run["id"] == f"{name}@{ms(run['scheduled_at'])}", run
    delivered = {d["run_id"]: d for d in receiver.deliveries(name)}
    missed = [r for r in runs if r["status"] == "missed"]
    for run in missed:
        assert run["id"] not in delivered, run
        assert run["reason"], run
        assert not run["started_at"] and not run["fencing_token"], run
    # The downtime slots (all past their 1 s deadline at restart) are missed.
    assert len(missed) >= at_least, runs
    assert missed[-1]["scheduled_at"] < iso(restarted), missed[-1]
    return missed, delivered


def test_catchup_none_records_missed_slots(instance, receiver):
    last, restarted, runs = downtime(instance, receiver, "cnone", "none")
    missed, delivered = check_gap("cnone", last, restarted, runs, receiver, 3)
    assert [r for r in runs if r["trigger"] == "catchup"] == []
    # The missed slots are the first ones after the stop; then the schedule resumes.
    statuses = [r["status"] for r in runs]
    assert statuses[:len(missed)] == ["missed"] * len(missed), statuses
    assert all(s in ("succeeded", "running", "skipped") for s in statuses[len(missed):]), statuses
    assert len(missed) >= int((restarted - last) / 1000) - 3, (last, restarted, len(missed))
    assert any(run["id"] in delivered for run in runs[len(missed):])


def test_short_downtime_within_the_deadline_starts_only_the_newest_slot(instance, receiver):
    """Slots that came due while the instance was down for less than the starting
    deadline are coalesced: the newest starts late as a scheduled run, the older
    ones are missed; none is skipped, and no burst of old slots is delivered."""
    name = "coalesce"
    create(instance, job_body(name, receiver.hook(), starting_deadline_ms=60000))
    wait_for(lambda: len(receiver.deliveries(name)) >= 2, what="two deliveries")
    stop_cleanly(instance)
    last = db_query(instance.db, "SELECT max(scheduled_at) FROM runs WHERE job = ?", name)[0][0]
    time.sleep(4)
    restarted = int(time.time() * 1000)
    instance.start()
    wait_for(lambda: [d for d in receiver.deliveries(name) if ms(d["scheduled_at"]) > restarted],
             what="a delivery of a slot after the restart")
    gap = sorted((r for r in instance.runs(job=name)
                  if last < ms(r["scheduled_at"]) < restarted - 1000),
                 key=lambda r: r["scheduled_at"])
    assert len(gap) >= 3, gap
    assert [r["status"] for r in gap[:-1]] == ["missed"] * (len(gap) - 1), gap
    assert not [r for r in instance.runs(job=name) if r["status"] == "skipped"]
    delivered = [ms(d["scheduled_at"]) for d in receiver.deliveries(name)
                 if last < ms(d["scheduled_at"]) < restarted]
    # Exactly one downtime slot was delivered, and it is the newest one due at the restart.
    assert len(delivered) == 1, delivered
    assert delivered[0] >= restarted - 2000, (delivered, restarted)


def backdate(instance, name, down_at):
    """Makes the stopped instance's database say job name has had nothing recorded since down_at."""
    connection = sqlite3.connect(str(instance.db))
    with connection:
        connection.execute("DELETE FROM runs WHERE job = ?", (name,))
        (doc,) = connection.execute("SELECT doc FROM jobs WHERE name = ?", (name,)).fetchone()
        doc = json.loads(doc)
        doc["updated_at"] = iso(down_at)
        doc["created_at"] = iso(down_at)
        connection.execute("UPDATE jobs SET updated_at = ?, created_at = ?, doc = ? "
                           "WHERE name = ?", (down_at, down_at, json.dumps(doc), name))
    connection.close()


def test_catchup_latest_fires_the_most_recent_missed_slot_once(instance, receiver):
    """A once-a-minute job whose newest slot is already past its deadline when the
    instance comes back: that slot fires once as a catch-up, the older ones are missed."""
    now = time.time()
    if now % 60 > 45:  # keep the slot arithmetic away from a minute boundary
        time.sleep(61 - now % 60)
        now = time.time()
    second = (int(now) - 10) % 60  # the newest slot is about 10 s old at the restart
    create(instance, job_body("clatest", receiver.hook(), schedule=f"{second} * * * * *",
                              catchup="latest", starting_deadline_ms=1000))
    stop_cleanly(instance)
    backdate(instance, "clatest", int(now * 1000) - 5 * 60_000 - 30_000)
    restarted = int(time.time() * 1000)
    instance.start()
    sent = wait_for(lambda: receiver.deliveries("clatest"), what="the catch-up delivery")[0]
    runs = sorted(instance.runs(job="clatest"), key=lambda r: r["scheduled_at"])
    catchups = [r for r in runs if r["trigger"] == "catchup"]
    assert len(catchups) == 1, runs
    catchup = catchups[0]
    newest_slot = (restarted // 1000 - 10) * 1000
    assert abs(ms(catchup["scheduled_at"]) - newest_slot) <= 2000, (catchup, restarted)
    missed = [r for r in runs if r["status"] == "missed"]
    assert len(missed) == 5, runs
    assert all(r["scheduled_at"] < catchup["scheduled_at"] for r in missed), runs
    assert [ms(r["scheduled_at"]) for r in missed] == [
        ms(catchup["scheduled_at"]) - 60_000 * k for k in range(5, 0, -1)], runs
    done = wait_for(lambda: next((r for r in instance.runs(job="clatest")
                                  if r["id"] == catchup["id"] and r["status"] != "running"), None),
                    what="the catch-up run finished")
    assert done["status"] == "succeeded", done
    assert sent["trigger"] == "catchup", sent
    assert sent["run_id"] == catchup["id"] == f"clatest@{ms(catchup['scheduled_at'])}", sent
    assert sent["idempotency_key"] == f"clatest@{catchup['scheduled_at']}", sent
    time.sleep(1)
    assert len(receiver.deliveries("clatest")) == 1


def test_long_downtime_records_100_rows_and_one_summary(instance, receiver):
    create(instance, job_body("long", receiver.hook(), starting_deadline_ms=1000))
    stop_cleanly(instance)
    # Pretend the instance went down ten minutes ago: nothing recorded since.
    down_at = int(time.time() * 1000) - 600_000 - 437
    backdate(instance, "long", down_at)
    receiver_before = len(receiver.deliveries("long"))

    restart_from = int(time.time() * 1000)
    instance.start()
    restart_to = int(time.time() * 1000)
    wait_for(lambda: len(receiver.deliveries("long")) >= receiver_before + 2,
             what="deliveries after the restart")

    missed = sorted(instance.runs(job="long", status="missed"), key=lambda r: r["scheduled_at"])
    summaries = [r for r in missed if not re.fullmatch(r"long@\d+", r["id"])]
    assert len(summaries) == 1, summaries
    # The downtime's rows come before its summary; a slot missed after the restart (a
    # loaded machine, a 1 s starting deadline) is another matter.
    summary_from = int(summaries[0]["id"].split("@", 1)[1].split("-")[0])
    single = [r for r in missed if r not in summaries and ms(r["scheduled_at"]) < summary_from]
    assert len(single) == 100, [r["id"] for r in missed][:5]
    first_slot = (down_at // 1000 + 1) * 1000
    slots = [ms(r["scheduled_at"]) for r in single]
    assert slots == list(range(first_slot, first_slot + 100_000, 1000)), slots[:3]

    summary = summaries[0]
    reason = summary["reason"] or ""
    numbers = [int(n) for n in re.findall(r"(?<![\d:.-])\d+(?![\d:.-])", reason)]
    assert numbers, reason
    rest = numbers[0]
    # The summary's id names its range; it is dated at its last slot.
    range_from, range_to = (int(x) for x in summary["id"].split("@", 1)[1].split("-"))
    assert range_from == first_slot + 100_000, summary
    assert ms(summary["scheduled_at"]) == range_to, summary
    total = 100 + rest
    assert range_to == first_slot + (total - 1) * 1000, (summary, total)
    # Every second of the gap is counted once: from the first slot after the
    # stop up to the restart (less the last second, still within its deadline).
    low = (restart_from - first_slot) // 1000 - 2
    high = (restart_to - first_slot) // 1000 + 2
    assert low <= total <= high, (reason, low, total, high)
    # Nothing in the gap was delivered: deliveries resume after the last missed slot.
    resumed = [ms(d["scheduled_at"]) for d in receiver.deliveries("long")[receiver_before:]]
    assert min(resumed) >= first_slot + total * 1000, (resumed, total)
    # No other rows for the gap: 100 + 1, never a flood.
    in_gap = [r for r in instance.runs(job="long")
              if first_slot <= ms(r["scheduled_at"]) < first_slot + total * 1000]
    assert len(in_gap) == 101, len(in_gap)

    # A second restart resumes after the gap: nothing in it is counted again.
    stop_cleanly(instance)
    instance.start()
    wait_for(lambda: len(receiver.deliveries("long")) >= len(resumed) + receiver_before + 2,
             what="deliveries after the second restart")
    in_gap_again = [r for r in instance.runs(job="long")
                    if first_slot <= ms(r["scheduled_at"]) < first_slot + total * 1000]
    assert sorted(r["id"] for r in in_gap_again) == sorted(r["id"] for r in in_gap)


# --------------------------------------------------------------------------
# One database, one instance
# --------------------------------------------------------------------------

def test_second_standalone_instance_on_the_same_database_is_refused(
        tmp_path, instance, receiver):
    create(instance, job_body("solo", receiver.hook()))
    wait_for(lambda: receiver.deliveries("solo"), what="a delivery")
    second = Instance(tmp_path, name="second", db=instance.db)
    second.start(expect_ready=False)
    code = second.wait_exit(20)
    assert code != 0, "second instance started on a database in use"
    message = second.stderr()
    assert str(instance.proc.pid) in message, message
    assert re.search(rf"pid\D{{0,3}}{instance.proc.pid}\b", message), message
    assert not any(line.startswith("listening on ") for line in second.stdout_lines)
    second.check_clean()

    # The first instance still owns the database and keeps working.
    assert db_query(instance.db, "SELECT pid FROM owner") == [(instance.proc.pid,)]
    assert http("GET", instance.url + "/healthz").status == 200
    assert instance.api("GET", "/api/v1/jobs/solo").status == 200
    count = len(receiver.deliveries("solo"))
    wait_for(lambda: len(receiver.deliveries("solo")) >= count + 2, what="more deliveries")
    create(instance, job_body("solo2", receiver.hook()))
    wait_for(lambda: receiver.deliveries("solo2"), what="a delivery of a new job")


# --------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------

def test_sigterm_lets_the_delivery_in_flight_finish(instance, receiver):
    create(instance, job_body("term", receiver.hook(delay_ms=1500)))
    running = wait_for(lambda: next((r for r in instance.runs(job="term")
                                     if r["status"] == "running"), None),
                       timeout=10, what="a run in flight")
    stop_cleanly(instance)

    rows = db_query(instance.db, "SELECT status, finished_at, attempts, http_status FROM runs "
                                 "WHERE id = ?", running["id"])
    assert rows == [("succeeded", rows[0][1], 1, 200)] and rows[0][1], rows
    assert db_query(instance.db, "SELECT id FROM runs WHERE status = 'running'") == []
    assert [d["run_id"] for d in receiver.deliveries("term")].count(running["id"]) == 1

    instance.start()
    after = instance.api("GET", f"/api/v1/runs/{running['id']}")
    assert after.status == 200, after
    assert after.json["status"] == "succeeded", after.json
    assert after.json["finished_at"], after.json
    assert instance.runs(job="term", status="lost") == []
