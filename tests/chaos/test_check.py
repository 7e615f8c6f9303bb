"""The checker's own test: a small made-up run that passes every check, then one
mutation per check that must make that check fail. A check no mutation can
make fail would be a check that never fails.

    python3 -m pytest -q tests/chaos/test_check.py
"""

import json
import pathlib
import sqlite3

import pytest

import check

REPO = pathlib.Path(__file__).resolve().parents[2]
INSTANCES = ("cf0", "cf1", "cf2")
T0 = 1_800_000_000_000  # the first slot of the window (ms)
SLOTS = 10
JOB = "forbid-fast-000"
LEASE_MS = 10000


def token_of(i):
    return (i + 1) * 65536 + 1


def request(i, **changes):
    """The target's log line of the delivery of slot i, applied."""
    slot = T0 + i * 1000
    entry = {"mono": 1000.0 + i, "wall": slot + 5, "path": f"/hook/{JOB}", "method": "POST",
             "job": JOB, "key": f"{JOB}@{check.iso(slot)}", "run": f"{JOB}@{slot}",
             "scheduled_at": check.iso(slot), "attempt": 1, "token_text": str(token_of(i)),
             "scope": "job", "scope_header": None, "instance": "cf1", "body_job": JOB,
             "body_token": token_of(i), "body_run": f"{JOB}@{slot}", "trigger": "schedule",
             "sig_ok": True, "sig_schemes": ["v2", "std"], "sig_error": None, "token": token_of(i),
             "decided_mono": 1000.0 + i, "decided_wall": slot + 6, "decision": "applied",
             "status": 200}
    entry.update(changes)
    return entry


def row(i, **changes):
    slot = T0 + i * 1000
    values = {"id": f"{JOB}@{slot}", "job": JOB, "trigger": "schedule", "scheduled_at": slot,
              "started_at": slot + 2, "finished_at": slot + 9, "status": "succeeded",
              "reason": None, "fencing_token": token_of(i), "instance": "cf1", "attempts": 1,
              "lease_lost": 0, "sort_at": slot}
    values.update(changes)
    return values


class FakeRun:
    """The files of a chaos run, built in memory and written by save()."""

    def __init__(self, folder):
        self.folder = folder
        self.requests = [request(i) for i in range(SLOTS)]
        self.rows = {name: {r["id"]: r for r in (row(i) for i in range(SLOTS))}
                     for name in INSTANCES}
        self.events = [
            {"event": "fault", "mono": 1002.0 + 10 * k, "wall": T0 + 2000 + 10000 * k,
             "fault": "instance-kill", "targets": ["cf0"], "ok": True,
             "start_mono": 1000.0 + 10 * k, "end_mono": 1002.0 + 10 * k}
            for k in range(2)]
        self.meta = {"seed": 1, "minutes": 0.5, "interval_s": 10, "lease_ms": LEASE_MS,
                     "margin_ms": 0, "completed": True, "healed": {"ok": True},
                     "problems": [], "faults_end_mono": 1000.0 + SLOTS,
                     "faults_end_wall": T0 + (SLOTS - 1) * 1000,
                     "jobs": [{"name": JOB, "overlap": "forbid", "slow": False,
                               "created_at_ms": T0}],
                     "instances": [{"name": n, "db": f"{n}.db", "stderr": f"{n}.stderr"}
                                   for n in INSTANCES],
                     "settle": {"seconds": 1, "stuck_running": 0}}
        self.stderr = {name: "listening on 127.0.0.1:1\n" for name in INSTANCES}

    def save(self):
        (self.folder / "run.json").write_text(json.dumps(self.meta))
        with open(self.folder / "target.jsonl", "w") as log:
            log.writelines(json.dumps(r) + "\n" for r in self.requests)
        with open(self.folder / "faults.jsonl", "w") as log:
            log.writelines(json.dumps(e) + "\n" for e in self.events)
        schema = (REPO / "migrations" / "0001_initial.sql").read_text()
        for name in INSTANCES:
            path = self.folder / f"{name}.db"
            path.unlink(missing_ok=True)
            conn = sqlite3.connect(path)
            conn.executescript(schema)
            for values in self.rows[name].values():
                columns = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})",
                             list(values.values()))
            conn.commit()
            conn.close()
            (self.folder / f"{name}.stderr").write_text(self.stderr[name])

    def failing(self):
        """Runs the checker; returns the set of "guarantee check" names that failed."""
        self.save()
        status = check.check(self.folder)
        rows = json.loads((self.folder / "violations.json").read_text())
        failed = {f"{r['guarantee']} {r['check']}" for r in rows if r["count"]}
        assert (status == 1) == bool(failed)
        return failed


@pytest.fixture
def fake(tmp_path):
    return FakeRun(tmp_path)


def test_clean_run_passes(fake, capsys):
    assert fake.failing() == set()
    assert capsys.readouterr().out.rstrip().endswith(f"{len(check_names())} passed, 0 failed")


def check_names():
    """Every check the checker has, by running it on a clean run."""
    return CHECKS


def test_summary_row_explains_its_slots(fake):
    # Slots 3..6 missed and counted by one summary row on every instance (no per-slot rows).
    for name in INSTANCES:
        for i in range(3, 7):
            del fake.rows[name][f"{JOB}@{T0 + i * 1000}"]
        first, last = T0 + 3000, T0 + 6000
        fake.rows[name][f"{JOB}@{first}-{last}"] = row(
            0, id=f"{JOB}@{first}-{last}", scheduled_at=last, status="missed",
            reason="4 more slots missed from ... (no quorum)", fencing_token=None, sort_at=last)
    fake.requests = [r for r in fake.requests if not 3 <= (r["wall"] - T0) // 1000 <= 6]
    assert fake.failing() == set()


def test_slow_faults_leave_fewer_ticks(fake, capsys):
    # A fault that overran its interval took the next tick: one fault in two ticks is all
    # the harness could do, and the report's tail names nothing.
    fake.events = fake.events[:1]
    fake.meta["ticks_overrun"] = 1
    assert fake.failing() == set()
    fake.meta["ticks_overrun"] = 0
    assert fake.failing() == {"run harness"}
    assert "FAILED run harness: only 1 faults injected" in capsys.readouterr().out


def test_allow_job_slots_may_overlap(fake):
    # An overlap=allow job fenced per slot: slot 5's claim overlapped slot 6's and got the
    # higher token, and its delivery arrived (and was decided) last. Nothing is wrong.
    fake.meta["jobs"][0]["overlap"] = "allow"
    for r in fake.requests:
        r["scope"] = "slot"
    mutate_slot_order(fake)
    assert fake.failing() == set()


def both_rows(fake, i, **changes):
    for name in INSTANCES:
        fake.rows[name][f"{JOB}@{T0 + i * 1000}"].update(changes)


def swap_tokens(fake, a, b):
    ta, tb = token_of(a), token_of(b)
    for r in fake.requests:
        if r["token"] in (ta, tb):
            new = tb if r["token"] == ta else ta
            r.update(token=new, token_text=str(new), body_token=new)
    both_rows(fake, a, fencing_token=tb)
    both_rows(fake, b, fencing_token=ta)


def refence(fake):
    """Redoes the target's decisions over its log (in decision order) as target.py would,
    and records the refused deliveries as fenced in the histories."""
    applied, highest = set(), 0
    for r in fake.requests:
        if r["key"] in applied:
            r.update(decision="duplicate", status=200)
        elif r["token"] < highest:
            r.update(decision="stale", status=409)
            both_rows(fake, (r["wall"] - T0) // 1000, status="fenced")
        else:
            applied.add(r["key"])
            highest = r["token"]
            r.update(decision="applied", status=200)


def no_quorum(fake, start, end):
    """redis0 and redis1 down from start to end (monotonic seconds)."""
    for node in ("redis0", "redis1"):
        fake.events.append({"event": "node_down", "mono": start, "wall": 0, "node": node})
        fake.events.append({"event": "node_up", "mono": end, "wall": 0, "node": node})


def mutate_double_claim(fake):
    fake.requests.append(request(4, token=token_of(4) + 1, token_text=str(token_of(4) + 1),
                                 body_token=token_of(4) + 1, decision="duplicate",
                                 instance="cf2", mono=1004.5, wall=T0 + 4500))


def mutate_applied_twice(fake):
    fake.requests.insert(5, request(4, attempt=2, mono=1004.5, wall=T0 + 4500))


def mutate_shared_token(fake):
    both_rows(fake, 7, fencing_token=token_of(6))


def mutate_slot_order(fake):
    # Slot 5's delivery carries a token above slot 6's, and arrived late (after slot 6).
    swap_tokens(fake, 5, 6)
    fake.requests[5].update(wall=T0 + 6500, mono=1006.5)
    fake.requests.insert(6, fake.requests.pop(5))


def mutate_real_time(fake):
    # Slot 2's delivery arrived long before slot 8, yet slot 8 carries a lower token.
    swap_tokens(fake, 2, 8)
    refence(fake)


def mutate_stale_acceptance(fake):
    # The target decided slot 3 last (its log is in decision order), yet applied it.
    fake.requests.append(fake.requests.pop(3))


def mutate_scope_downgrade(fake):
    # Slot 8, decided after slot 9, names scope slot: the job was fenced per job before, so
    # the per-job fence still holds and its acceptance is stale.
    fake.requests[8]["scope"] = "slot"
    fake.requests.append(fake.requests.pop(8))


def mutate_body_mismatch(fake):
    fake.requests[3]["body_token"] = 12


def mutate_mixed_scope(fake):
    fake.requests[3]["scope"] = "slot"


def mutate_bad_signature(fake):
    fake.requests.append(request(4, sig_ok=False, sig_error="no v2 value matches",
                                 decision="bad_signature", status=401, mono=1004.5))


def mutate_accepted_unsigned(fake):
    fake.requests[4].update(sig_ok=False, sig_error="no v2 value matches")


def mutate_key(fake):
    fake.requests[4]["key"] = f"{JOB}@2026-01-01T00:00:00.000Z"


def mutate_no_quorum_delivery(fake):
    no_quorum(fake, 1001.0, 1008.0)  # requests arrive at 1000+i: 1003..1008 are inside


def mutate_no_quorum_short(fake):
    # Two nodes down between the claims of slots 4 and 5, and back before slot 5 arrived:
    # no claim was made without a quorum, nothing may be flagged...
    no_quorum(fake, 1003.9, 1004.5)


def mutate_untrusted_plus_down(fake):
    # redis0 untrusted (wiped) from 1001 to 1009, redis1 down from 1002 to 1009.
    fake.events += [
        {"event": "node_trust", "mono": 1001, "wall": 0, "node": "redis0", "trusted": False,
         "observed_mono": 1001.0, "last_absent_mono": 1001.0},
        {"event": "node_trust", "mono": 1009.2, "wall": 0, "node": "redis0", "trusted": True,
         "observed_mono": 1009.2, "last_absent_mono": 1009.0},
        {"event": "node_down", "mono": 1002.0, "wall": 0, "node": "redis1"},
        {"event": "node_up", "mono": 1009.0, "wall": 0, "node": "redis1"}]


def mutate_history_token(fake):
    fake.rows["cf2"][f"{JOB}@{T0 + 4000}"]["fencing_token"] = token_of(4) + 7


def mutate_history_missing(fake):
    del fake.rows["cf2"][f"{JOB}@{T0 + 4000}"]


def mutate_history_running(fake):
    both_rows(fake, 4, status="running", finished_at=None)


def mutate_phantom_success(fake):
    fake.requests = [r for r in fake.requests if r["run"] != f"{JOB}@{T0 + 4000}"]


def mutate_integrity(fake):
    fake.save()
    path = fake.folder / "cf1.db"
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs_by_time'").fetchone()
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root[0] - 1) * size
    data[start + 100:start + size] = b"\x5a" * (size - 100)  # the index page's cells garbled
    path.write_bytes(bytes(data))
    fake.save = lambda: (FakeRun.save(fake), path.write_bytes(bytes(data)))


def mutate_crash(fake):
    fake.events.append({"event": "instance_exit", "mono": 1003, "wall": T0, "instance": "cf0",
                        "code": -6, "expected": False})


def mutate_bad_sigterm_exit(fake):
    fake.events.append({"event": "instance_down", "mono": 1003, "wall": T0, "instance": "cf0",
                        "signal": 15, "code": 23})


def mutate_sanitizer(fake):
    fake.stderr["cf2"] += "==1==ERROR: LeakSanitizer: detected memory leaks\n"


def mutate_disagree(fake):
    fake.rows["cf0"][f"{JOB}@{T0 + 4000}"].update(status="failed")


def mutate_slot_nowhere(fake):
    for name in INSTANCES:
        del fake.rows[name][f"{JOB}@{T0 + 4000}"]
    del fake.requests[4]


def mutate_slot_somewhere(fake):
    fake.rows["cf0"][f"{JOB}@{T0 + 4000}"].update(status="skipped", fencing_token=None)
    fake.rows["cf1"][f"{JOB}@{T0 + 4000}"].update(status="skipped", fencing_token=None)
    del fake.rows["cf2"][f"{JOB}@{T0 + 4000}"]
    del fake.requests[4]


def mutate_running_unapplied(fake):
    both_rows(fake, 4, status="running", finished_at=None)
    del fake.requests[4]


def mutate_missed_no_reason(fake):
    both_rows(fake, 4, status="missed", fencing_token=None, reason=None)
    del fake.requests[4]


def mutate_harness(fake):
    fake.meta["problems"] = ["cf1 could not be restarted"]


def mutate_no_faults(fake):
    fake.events = []


def mutate_job_never_delivered(fake):
    fake.meta["jobs"].append({"name": "allow-slow-003", "overlap": "allow", "slow": True,
                              "created_at_ms": T0 + 100000})


CHECKS = {"run harness", "G1 one claim per slot", "G1 applied once", "G2 unique tokens",
          "G2 slot order", "G2 real-time order", "G3 no stale acceptance",
          "G3 headers match body", "G4 signatures", "G4 accepted signed", "G4 idempotency keys",
          "G5 no firing without quorum", "G6 deliveries recorded", "G6 successes real",
          "G7 integrity", "G7 no crash", "G7 no sanitizer report", "conv histories agree",
          "slots recorded somewhere", "slots recorded everywhere", "slots not running",
          "slots explained"}

MUTATIONS = [
    (mutate_double_claim, {"G1 one claim per slot"}),
    (mutate_applied_twice, {"G1 applied once"}),
    (mutate_shared_token, {"G2 unique tokens", "G6 deliveries recorded", "G6 successes real"}),
    (mutate_slot_order, {"G2 slot order"}),
    (mutate_real_time, {"G2 slot order", "G2 real-time order"}),
    (mutate_stale_acceptance, {"G3 no stale acceptance"}),
    (mutate_scope_downgrade, {"G3 no stale acceptance", "G3 headers match body"}),
    (mutate_body_mismatch, {"G3 headers match body"}),
    (mutate_mixed_scope, {"G3 headers match body"}),
    (mutate_bad_signature, {"G4 signatures"}),
    (mutate_accepted_unsigned, {"G4 signatures", "G4 accepted signed", "G6 successes real"}),
    (mutate_key, {"G4 idempotency keys", "G6 successes real"}),
    (mutate_no_quorum_delivery, {"G5 no firing without quorum"}),
    (mutate_no_quorum_short, set()),
    (mutate_untrusted_plus_down, {"G5 no firing without quorum"}),
    (mutate_history_token, {"G6 deliveries recorded", "G6 successes real",
                            "conv histories agree"}),
    (mutate_history_missing, {"G6 deliveries recorded", "slots recorded everywhere",
                              "conv histories agree"}),
    (mutate_history_running, {"G6 deliveries recorded", "slots not running"}),
    (mutate_phantom_success, {"G6 successes real"}),
    (mutate_integrity, {"G7 integrity"}),
    (mutate_crash, {"G7 no crash"}),
    (mutate_bad_sigterm_exit, {"G7 no crash"}),
    (mutate_sanitizer, {"G7 no sanitizer report"}),
    (mutate_disagree, {"conv histories agree"}),
    (mutate_slot_nowhere, {"slots recorded somewhere"}),
    (mutate_slot_somewhere, {"slots recorded everywhere", "conv histories agree"}),
    (mutate_running_unapplied, {"slots not running"}),
    (mutate_missed_no_reason, {"slots explained"}),
    (mutate_harness, {"run harness"}),
    (mutate_no_faults, {"run harness"}),
    (mutate_job_never_delivered, {"run harness"}),
]


@pytest.mark.parametrize("mutate, expected", MUTATIONS, ids=[m.__name__[7:] for m, _ in MUTATIONS])
def test_mutation_fails_its_check(fake, mutate, expected):
    mutate(fake)
    assert fake.failing() == expected


def test_every_check_can_fail():
    caught = set().union(*(expected for _, expected in MUTATIONS))
    assert caught == CHECKS


def test_every_check_is_known(fake):
    fake.save()
    check.check(fake.folder)
    rows = json.loads((fake.folder / "violations.json").read_text())
    assert {f"{r['guarantee']} {r['check']}" for r in rows} == CHECKS
