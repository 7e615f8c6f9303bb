"""Bulkheads in webhook delivery (issue 12): a target that accepts connections
and never answers delays only the jobs that call it. Jobs of other targets keep
their slots, an attempt to the hung target still ends within its timeout_ms
(time spent waiting for a free connection included), and the firings queued
for it hold a bounded amount of memory.

The assertions are about outcomes (statuses, errors, recorded durations); the
waits are generous bounds, not measurements."""

import socket
import threading
import time

import pytest

from conftest import SANITIZED, SLOW, job_body, ms, wait_for

# Jobs firing every second at the black hole: enough to fill every connection
# the engine would share between targets if it had no per-target limit.
HUNG_JOBS = 300
# Seconds of slots of the healthy job that are checked.
HEALTHY_SLOTS = 15


class BlackHole:
    """A TCP server on a free loopback port that accepts every connection and
    never reads or answers; the sockets stay open until close()."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    conn.close()
                    return
                self.accepted.append(conn)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def connections(self):
        with self.lock:
            return len(self.accepted)

    def close(self):
        with self.lock:
            self.closed = True
            conns, self.accepted = self.accepted, []
        self.listener.close()
        for conn in conns:
            conn.close()


@pytest.fixture
def instance(start_instance):
    # Deliveries to the black hole never end: a short grace keeps the stop short.
    return start_instance(args=["--shutdown-grace-ms", "2000"])


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def flood(instance, hole, count=HUNG_JOBS, **fields):
    """Creates count every-second jobs calling the black hole and waits until
    it holds connections from them."""
    for i in range(count):
        reply = instance.api("POST", "/api/v1/jobs",
                             job_body(f"hung-{i:03d}", hole.url, **fields))
        assert reply.status == 201, reply
    wait_for(lambda: hole.connections() >= 4, timeout=20, what="connections to the black hole")


def rss_kb(pid):
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hung_target_does_not_delay_another_targets_job(instance, receiver, black_hole):
    flood(instance, black_hole)
    reply = instance.api("POST", "/api/v1/jobs", job_body("healthy", receiver.hook()))
    assert reply.status == 201, reply

    def settled():
        runs = [r for r in instance.runs(job="healthy") if r["trigger"] == "schedule"]
        if not runs:
            return None
        first = min(ms(r["scheduled_at"]) for r in runs)
        window = [r for r in runs if ms(r["scheduled_at"]) < first + HEALTHY_SLOTS * 1000]
        slots = {ms(r["scheduled_at"]) for r in window}
        if len(slots) < HEALTHY_SLOTS or any(r["status"] == "running" for r in window):
            return None
        return window

    window = wait_for(settled, timeout=HEALTHY_SLOTS + 60, interval=0.5,
                      what=f"{HEALTHY_SLOTS} finished slots of the healthy job")
    bad = [(r["id"], r["status"], r["reason"], r["error"]) for r in window
           if r["status"] != "succeeded"]
    assert bad == [], f"{len(bad)} of {len(window)} slots of the healthy job not delivered: {bad}"
    # One run per second, none missing between them.
    slots = sorted(ms(r["scheduled_at"]) for r in window)
    assert [b - a for a, b in zip(slots, slots[1:])] == [1000] * (len(slots) - 1), slots


def test_attempt_ends_within_its_timeout_without_a_free_connection(instance, black_hole):
    timeout_ms = 2000
    flood(instance, black_hole)
    reply = instance.api("POST", "/api/v1/jobs", job_body(
        "bounded", black_hole.url, schedule="*/3 * * * * *",
        webhook={"timeout_ms": timeout_ms}, retry={"attempts": 1}))
    assert reply.status == 201, reply

    def finished():
        runs = [r for r in instance.runs(job="bounded")
                if r["trigger"] == "schedule" and r["status"] not in ("running", "skipped")]
        return runs if len(runs) >= 3 else None

    runs = wait_for(finished, timeout=90, interval=0.5, what="three finished runs of bounded")
    for run in runs:
        assert run["status"] == "failed", run
        assert "timeout" in (run["error"] or "").lower(), run
        # The wait for a connection counts: the whole attempt fits in its timeout,
        # give or take generous scheduling slack.
        assert run["duration_ms"] <= timeout_ms + 3000, run
        assert run["attempts"] == 1, run


@pytest.mark.skipif(SANITIZED, reason="ASan's quarantine and redzones make RSS meaningless")
def test_memory_stays_bounded_with_firings_queued_for_a_hung_target(instance, black_hole):
    # Overlapping slots with long timeouts and deadlines, so that firings pile up
    # in the hung target's queue.
    baseline_kb = rss_kb(instance.proc.pid)
    flood(instance, black_hole, overlap="allow", webhook={"timeout_ms": 60000},
          starting_deadline_ms=120000, retry={"attempts": 1})
    started = time.monotonic()
    peak_kb = baseline_kb
    # About 300 new firings a second for 25 s: several thousand waiting at the end.
    while time.monotonic() - started < 25 * SLOW:
        peak_kb = max(peak_kb, rss_kb(instance.proc.pid))
        time.sleep(0.5)
    waiting = [r for r in instance.runs(status="running", limit=500)]
    assert len(waiting) >= 1000, f"only {len(waiting)} firings in flight: the load did not pile up"
    grown_mb = (peak_kb - baseline_kb) / 1024
    assert grown_mb <= 64, f"RSS grew by {grown_mb:.0f} MiB with {len(waiting)} firings in flight"
