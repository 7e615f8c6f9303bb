"""Skipped means skipped (DESIGN §3 overlap, §4.2 step 3): a slot is recorded
`skipped` only when a run of its job is really in flight, never because a
claim of an earlier slot holds the lock without having committed it, nor for
the scheduler's own retries. And a forbid job whose delivery really outlasts
the interval still has the slots it overlaps skipped.

Real redis-server nodes, real instances, the reference receiver. A claim that
holds the lock but never committed is what an instance leaves on the nodes
when it is stopped (SIGSTOP, a crash) between its claim round and its commit
round; the tests lay exactly that footprint with redis-cli, because no signal
can be aimed between two rounds a few milliseconds apart. Every wait is a
generous poll: the tests assert outcomes, never timing."""

from conftest import SLOW, iso, ms, wait_for
from test_cluster import cluster, create, job_body, now_ms  # noqa: F401 (fixture)

NONCE = "0123456789abcdef0123456789abcdef"


def runs_of(instance, job):
    return {run["scheduled_at"]: run for run in instance.runs(job=job)}


def next_instant(after_ms, period_ms):
    return (after_ms // period_ms + 1) * period_ms


def test_an_uncommitted_claim_of_an_earlier_slot_does_not_skip_the_next(cluster, receiver):
    group = cluster(count=2)
    first = group.instances[0]
    period = 6000
    create(first, job_body("stalled", receiver.hook(), schedule="*/6 * * * * *"))
    # A slot delivered and released first: fence.last is below the slot the stopped
    # claimer holds, and the lock is free (a run's release comes before its record).
    wait_for(lambda: first.runs(job="stalled", status="succeeded"), timeout=30,
             what="a first delivery")

    # The slot Q the stopped claimer holds, far enough ahead to lay its lock before Q's
    # claims, and S, the slot after it, claimed while that lock is still there.
    held = next_instant(now_ms() + 2000 * SLOW, period)
    following = held + period
    lock_value = f"{NONCE}:{held}"
    # The lease the stopped claimer took runs out halfway between S and the slot after
    # it: S's first claims meet the lock, S's retries find it gone.
    expires = following + period // 2
    for node in group.nodes:
        assert node.cli("SET", "cf:lock:stalled", lock_value, "NX", "PX",
                        expires - now_ms()) == "OK", node.name
    assert now_ms() < held - 500, "the lock was laid too late to stand in Q's way"

    # S is delivered once the stopped claimer's lease has run out, well within S's
    # starting deadline (60 s); it is never recorded skipped: no run was in flight.
    key = iso(following)
    final = wait_for(lambda: (lambda r: r if r and r["status"] != "running" else None)(
        runs_of(first, "stalled").get(key)), timeout=60, what=f"an outcome of {key}")
    assert final["status"] == "succeeded", final
    assert any(d["scheduled_at"] == key for d in receiver.deliveries("stalled"))
    for instance in group.instances:
        skipped = instance.runs(job="stalled", status="skipped")
        assert skipped == [], skipped
    # Q itself was held by a claim that never delivered it: missed, not skipped.
    missed = runs_of(first, "stalled").get(iso(held))
    assert missed is None or missed["status"] == "missed", missed


def test_a_forbid_job_whose_delivery_outlasts_the_interval_skips(cluster, receiver):
    group = cluster(count=3)
    first = group.instances[0]
    # Every 2 s, each delivery takes 4.5 s: the two slots after a delivery's start fall
    # while it is in flight, the third well after its end.
    create(first, job_body("hanging", receiver.hook(delay_ms=4500), schedule="*/2 * * * * *",
                           overlap="forbid", webhook={"timeout_ms": 20000}))

    def settled():
        runs = list(runs_of(first, "hanging").values())
        done = [r for r in runs if r["status"] == "succeeded"]
        skipped = [r for r in runs if r["status"] == "skipped"]
        return (runs, done, skipped) if len(done) >= 2 and len(skipped) >= 2 else None

    runs, done, skipped = wait_for(settled, timeout=60, interval=0.5,
                                   what="two deliveries and two skipped slots")
    spans = [(ms(r["started_at"]), ms(r["finished_at"])) for r in done]
    for run in skipped:
        assert run["reason"] == "previous run still in flight", run
        slot = ms(run["scheduled_at"])
        # A skipped slot fell while a delivery was going on (its claim may come late).
        assert any(start <= slot + 2000 * SLOW and slot <= end for start, end in spans), \
            (run, spans)
    # Deliveries never overlapped, and each came from one claim.
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans
    keys = [d["idempotency_key"] for d in receiver.deliveries("hanging")]
    assert len(keys) == len(set(keys)), keys
