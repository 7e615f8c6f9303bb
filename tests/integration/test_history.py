"""Run history under faults (DESIGN §1 G5/G6, §3 overlap and missed slots, §4.2 claims,
§4.7 run history, §4.8 membership): real cronfence instances over real redis-server
nodes, with real faults: kill -9 of an instance, SIGSTOP, Redis nodes killed and
restarted, a full tmpfs under a database.

Each test asserts what the history says once things settle: every delivery the
target saw, and every slot a quorum committed, is recorded with its token on every
live instance; a slot that was not delivered is recorded once (or inside one summary
row), never left out, never flooded. Waits are generous polls stretched by SLOW; no
assertion is about speed.
"""

import collections
import errno
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SLOW, Instance, http, iso, job_body, ms, wait_for
from test_cluster import (check_fencing, cluster, cluster_view, create,  # noqa: F401 (fixture)
                          eventually, forward, hop_url, now_ms, readyz, seconds_between,
                          send_answer)
from test_restart import db_query

# Run ids: a slot "<job>@<T ms>", a summary of missed slots "<job>@<first ms>-<last ms>".
SLOT_ID = re.compile(r"(?P<job>[a-z0-9][a-z0-9._-]*)@(?P<first>\d+)(?:-(?P<last>\d+))?")
DELIVERY_STATUSES = ("succeeded", "failed", "fenced")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

class Resp:
    """A minimal RESP client on one socket, for reading a lock node while instances
    run (redis-cli starts a process per command, too slow to catch a commit)."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def _read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("redis node closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ValueError(f"unexpected RESP reply {line!r}")

    def pipeline(self, *commands):
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def call(self, *args):
        return self.pipeline(args)[0]

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def read_by(instance, run_id, token):
    """Whether instance's history holds run_id with token, however far it got."""
    run = run_of(instance, run_id)
    return run is not None and run["fencing_token"] == token


def stream_runs(node):
    """Every run state in node's cf:runs stream, in order (dicts as published)."""
    conn = Resp(node.port)
    try:
        entries = conn.call("XRANGE", "cf:runs", "-", "+")
    finally:
        conn.close()
    states = []
    for _, fields in entries or []:
        for key, value in zip(fields[::2], fields[1::2]):
            if key == "run":
                states.append(json.loads(value))
    return states


def xlen(node):
    conn = Resp(node.port)
    try:
        return conn.call("XLEN", "cf:runs")
    finally:
        conn.close()


def run_of(instance, run_id):
    """GET /api/v1/runs/{id} on instance: the run, or None when it has none."""
    reply = instance.api("GET", f"/api/v1/runs/{run_id}")
    if reply.status == 404:
        return None
    assert reply.status == 200, reply
    return reply.json


def slot_range(run):
    """(first, last) slot in ms a run row stands for: one slot, or a summary's range."""
    match = SLOT_ID.fullmatch(run["id"])
    if not match:
        return None
    first = int(match["first"])
    return first, int(match["last"] or first)


def is_summary(run):
    match = SLOT_ID.fullmatch(run["id"])
    return bool(match and match["last"])


def unexplained_slots(history, job, slots):
    """The slots of job (ms) that history (runs of one instance) does not account for: no
    finished record of the slot itself, and no missed summary whose range holds it."""
    own = {}
    summaries = []
    for run in history:
        if run["job"] != job:
            continue
        span = slot_range(run)
        if span is None:
            continue
        if is_summary(run):
            if run["status"] == "missed":
                summaries.append(span)
        else:
            own[span[0]] = run
    missing = []
    for slot in slots:
        run = own.get(slot)
        if run is not None and run["status"] != "running":
            continue
        if any(first <= slot <= last for first, last in summaries):
            continue
        missing.append((iso(slot), run["status"] if run else "absent"))
    return missing


def ordinal_of(instance):
    view = cluster_view(instance)
    assert view["ordinal_held"] is True, view
    return view["instance"]["ordinal"]


def rejoin(group):
    """Waits until every instance of group sees the whole cluster and a trusted quorum."""
    for member in group.instances:
        wait_for(lambda: group.settled(member), timeout=20, what=f"{member.name} settled")


class AfterRelay:
    """A webhook hop in front of the receiver. Armed with a predicate on (sending
    instance, run id), it forwards the first matching request, and once the receiver has
    answered, runs the action (e.g. SIGSTOP of the sender) before the answer goes back:
    a fault between the target's acceptance and the sender's reading of it."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.armed = None
        self.lock = threading.Lock()
        self.hits = []  # (run id, token, sender, receiver's status) of each armed match
        self.hit = threading.Event()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sender = json.loads(body).get("instance")
                run_id = self.headers.get("Cronfence-Run")
                token = int(self.headers.get("Fencing-Token") or 0)
                with relay.lock:
                    armed = relay.armed
                action = None
                if armed is not None and armed[0](sender, run_id):
                    with relay.lock:
                        if relay.armed is armed:
                            relay.armed = None
                            action = armed[1]
                status, answer = forward(relay.receiver, self, body)
                if action is not None:
                    relay.hits.append((run_id, token, sender, status))
                    action()
                    relay.hit.set()
                send_answer(self, status, answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hook(self, **knobs):
        return hop_url(self.server, knobs)

    def arm(self, predicate, action):
        self.hit.clear()
        with self.lock:
            self.armed = (predicate, action)

    def disarm(self):
        with self.lock:
            self.armed = None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def after_relay(receiver):
    hop = AfterRelay(receiver)
    yield hop
    hop.close()


class HangingTarget:
    """A webhook target that reads each request and never answers (the connection stays
    open until close()). requests holds (time, run id, token, job, sending instance)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.requests = []
        self.connections = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/hang"

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        data = b""
        try:
            conn.settimeout(30)
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            headers = {}
            for line in head.decode(errors="replace").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            try:
                sender = json.loads(body).get("instance")
            except ValueError:
                sender = None
            with self.lock:
                self.requests.append((time.time(), headers.get("cronfence-run"),
                                      int(headers.get("fencing-token") or 0),
                                      headers.get("cronfence-job"), sender))
        except OSError:
            return

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for conn in self.connections:
                try:
                    conn.close()
                except OSError:
                    pass


@pytest.fixture
def hanging_target():
    target = HangingTarget()
    yield target
    target.close()


class CommitWatch:
    """Polls every node's cf:fence:{job} for the given jobs in a tight loop on open
    sockets; the first time a token minted by `ordinal` appears (a commit round of that
    instance landing on a node), kill -9's pid at once: the instance dies between its
    commit and whatever it does next. seen = (node index, job, token, last) of that commit."""

    def __init__(self, nodes, jobs, ordinal, pid):
        self.conns = [Resp(node.port, timeout=2) for node in nodes]
        self.jobs = jobs
        self.ordinal = ordinal
        self.pid = pid
        self.seen = None
        self.done = threading.Event()
        self.stop = threading.Event()
        self.baseline = self._read()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self):
        fences = {}
        for index, conn in enumerate(self.conns):
            replies = conn.pipeline(*[("HMGET", f"cf:fence:{job}", "token", "last")
                                      for job in self.jobs])
            for job, (token, last) in zip(self.jobs, replies):
                fences[(index, job)] = (int(token or 0), int(last or 0))
        return fences

    def _run(self):
        try:
            while not self.stop.is_set():
                for key, (token, last) in self._read().items():
                    if token != self.baseline[key][0] and token % 65536 == self.ordinal:
                        os.kill(self.pid, signal.SIGKILL)
                        self.seen = (key[0], key[1], token, last)
                        return
        except (OSError, ConnectionError):
            pass
        finally:
            self.done.set()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()


# --------------------------------------------------------------------------
# 1. a final state committed locally survives kill -9 (durable outbox)
# --------------------------------------------------------------------------

def test_final_state_reaches_peers_after_kill9(cluster, receiver):
    """A run A finished (succeeded in A's SQLite) just before kill -9 reaches B's history
    as succeeded, with its token, once A is back; and nothing of A started before the
    kill stays `running` anywhere."""
    group = cluster(count=2)
    a, b = group.instances
    create(a, job_body("final", receiver.hook()))
    # Deliveries of 3 s, overlapping: A has runs in flight when it dies.
    create(a, job_body("inflight", receiver.hook(delay_ms=3000), overlap="allow"))
    wait_for(lambda: len([d for d in receiver.deliveries("final") if d["instance"] == a.name])
             >= 2 and [d for d in receiver.deliveries("inflight") if d["instance"] == a.name],
             timeout=20, what="deliveries by A of both jobs")

    # Watch A's own database and kill -9 A the moment a new run of A ends succeeded there.
    conn = sqlite3.connect(str(a.db), timeout=10)
    query = ("SELECT id, fencing_token FROM runs WHERE job = 'final' AND instance = ? "
             "AND status = 'succeeded'")
    try:
        before = {row[0] for row in conn.execute(query, (a.name,))}
        deadline = time.monotonic() + 20 * SLOW
        fresh = []
        while not fresh:
            assert time.monotonic() < deadline, "A recorded no new succeeded run in 20 s"
            fresh = [row for row in conn.execute(query, (a.name,)) if row[0] not in before]
            if not fresh:
                time.sleep(0.001)
        os.kill(a.proc.pid, signal.SIGKILL)
    finally:
        conn.close()
    killed_at = now_ms()
    a.kill9()
    run_id, token = fresh[0]
    on_nodes = [n.name for n in group.nodes
                if any(s["id"] == run_id and s["status"] == "succeeded" for s in stream_runs(n))]
    running_at_kill = [row[0] for row in db_query(
        a.db, "SELECT id FROM runs WHERE instance = ? AND status = 'running'", a.name)]

    a.start()
    rejoin(group)

    # G6: B learns the final state A had committed to its database before it died.
    def converged():
        details = {}
        for instance in (b, a):
            run = run_of(instance, run_id)
            if run is None or run["status"] != "succeeded" or run["fencing_token"] != token:
                details[instance.name] = run and (run["status"], run["fencing_token"])
        return not details, (
            f"run {run_id} (token {token}) ended succeeded in A's database just before kill -9 "
            f"(its final state was on the nodes at the kill: {on_nodes or 'no'}); after A's "
            f"restart the histories show (status, token): {details}")
    eventually(converged, timeout=20)

    # Runs of A in flight at the kill end lost (or with their real outcome) everywhere.
    def none_left_running():
        left = {}
        for instance in (a, b):
            stuck = [r["id"] for r in instance.runs(status="running")
                     if r["instance"] == a.name and r["started_at"]
                     and ms(r["started_at"]) < killed_at]
            if stuck:
                left[instance.name] = stuck
        return not left, (f"runs of A started before the kill still running (A had "
                          f"{running_at_kill} running at the kill): {left}")
    eventually(none_left_running, timeout=25)
    for run_id_killed in running_at_kill:
        for instance in (a, b):
            run = run_of(instance, run_id_killed)
            assert run is not None and run["status"] != "running", (instance.name, run)


# --------------------------------------------------------------------------
# 2. the merge of a slot's records never drops a delivery (join, token first)
# --------------------------------------------------------------------------

def test_paused_instance_never_loses_a_delivery_in_the_merge(cluster, receiver, after_relay):
    """With deliveries of about one period, one instance regularly records `skipped` for a
    slot (BUSY held by the previous slot) that the other then claims and delivers. A is
    SIGSTOPped for ~3 s right after the target accepted such a delivery: meanwhile B's
    history must show it with its token (the record with a token beats the tokenless
    `skipped`); afterwards both histories show every accepted delivery with its token and
    a delivery status, never `missed`/`skipped`."""
    group = cluster(count=2)
    a, b = group.instances
    jobs = [f"merge-{i}" for i in range(3)]
    for name in jobs:
        # ~1010 ms at the target: the lock of slot T-1 is released between the two
        # instances' staggered claims of slot T (T+0 and T+25 ms).
        create(b, job_body(name, after_relay.hook(delay_ms=1010), starting_deadline_ms=60000))
    wait_for(lambda: {d["instance"] for d in receiver.deliveries()} == {a.name, b.name},
             timeout=25, what="deliveries from both instances")

    def skipped_by_b(sender, run_id):
        if sender != a.name or not run_id:
            return False
        run = run_of(b, run_id)
        return run is not None and run["status"] in ("skipped", "missed")

    def pause_a():
        os.kill(a.proc.pid, signal.SIGSTOP)

    problems = []
    try:
        for _ in range(3):
            after_relay.arm(skipped_by_b, pause_a)
            if not after_relay.hit.wait(20 * SLOW):
                # The race did not come up: pause A at a random moment instead.
                after_relay.disarm()
                time.sleep(random.uniform(0, 1))
                pause_a()
                time.sleep(3)
                os.kill(a.proc.pid, signal.SIGCONT)
                continue
            run_id, token, _, status = after_relay.hits[-1]
            # A is stopped with the target's answer unread: its run is "running" on the
            # nodes with its token; B recorded the slot skipped itself.
            stopped_at = time.monotonic()
            seen = None
            while time.monotonic() - stopped_at < 3.0:
                seen = run_of(b, run_id)
                if seen is not None and seen["fencing_token"] == token:
                    break
                time.sleep(0.1)
            os.kill(a.proc.pid, signal.SIGCONT)
            if status == 200 and (seen is None or seen["fencing_token"] != token):
                problems.append((run_id, token, seen and (seen["status"], seen["fencing_token"],
                                                          seen["instance"])))
            time.sleep(2)
    finally:
        after_relay.disarm()
        if a.alive():
            os.kill(a.proc.pid, signal.SIGCONT)
    assert not problems, (
        "while A was stopped after the target accepted its delivery, B's history showed the "
        f"run without that token (B's own skipped/missed record won the merge): {problems}")

    time.sleep(2)
    deliveries = [d for d in receiver.deliveries() if d["job"] in jobs]
    check_fencing(deliveries)

    def all_deliveries_recorded():
        details = {}
        for instance in group.instances:
            runs = {r["id"]: r for r in instance.runs()}
            bad = []
            for d in deliveries:
                run = runs.get(d["run_id"])
                if (run is None or run["fencing_token"] != d["token"]
                        or run["status"] not in DELIVERY_STATUSES):
                    bad.append((d["run_id"], d["token"], run and (run["status"],
                                                                  run["fencing_token"])))
            if bad:
                details[instance.name] = bad[:10]
        return not details, f"accepted deliveries not recorded as such (id, token, seen): {details}"
    eventually(all_deliveries_recorded, timeout=20)


# --------------------------------------------------------------------------
# 3. overlap=queue: every slot is delivered or recorded
# --------------------------------------------------------------------------

def test_queued_slots_are_delivered_or_recorded(cluster, receiver):
    """overlap=queue on two instances, deliveries of 1.5 s every second: a backlog of
    queued slots builds up on both. The instance delivering is SIGSTOPped past its lease a
    few times, so the other takes the queue over, and may win a later queued slot before
    an earlier one. No slot up to the last delivered one may vanish: each is delivered or
    recorded (missed/skipped) on every instance."""
    group = cluster(count=2)
    jobs = ["queued-0", "queued-1"]
    for name in jobs:
        create(group.instances[0], job_body(name, receiver.hook(delay_ms=1500), overlap="queue",
                                            starting_deadline_ms=60000, lease_ms=2000))
    wait_for(lambda: all(receiver.deliveries(job) for job in jobs), timeout=20,
             what="first deliveries")
    time.sleep(4)  # a backlog of queued slots

    for round_ in range(3):
        # The instance delivering one of the jobs now (else either one).
        running = group.instances[0].runs(job=jobs[round_ % 2], status="running")
        holder = group.by_id(running[0]["instance"]) if running else group.instances[round_ % 2]
        os.kill(holder.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3)  # past the 2 s lease: the other instance takes the queue over
        finally:
            os.kill(holder.proc.pid, signal.SIGCONT)
        time.sleep(2)
    time.sleep(2)

    def window(job):
        delivered = sorted(ms(d["scheduled_at"]) for d in receiver.deliveries(job))
        assert len(delivered) >= 5, (job, delivered)
        return list(range(delivered[0], delivered[-1] + 1, 1000))
    windows = {job: window(job) for job in jobs}
    check_fencing([d for d in receiver.deliveries() if d["job"] in jobs])

    def all_recorded():
        details = {}
        for instance in group.instances:
            for job in jobs:
                missing = unexplained_slots(instance.runs(job=job), job, windows[job])
                if missing:
                    details[(instance.name, job)] = missing
        order = {job: [iso(ms(d["scheduled_at"]))[11:19] for d in receiver.deliveries(job)]
                 for job in jobs} if details else {}
        return not details, (f"slots from the first to the last delivered one neither delivered "
                             f"nor recorded (slot, status on that instance): {details}; slots "
                             f"in the order the target received them: {order}")
    eventually(all_recorded, timeout=20)


# --------------------------------------------------------------------------
# 4. a committed claim is on the nodes' history even if its instance dies at once
# --------------------------------------------------------------------------

def test_committed_claims_are_recorded_across_kill9(cluster, hanging_target):
    """A is kill -9'd repeatedly, sometimes at random moments, sometimes the instant one
    of its commit rounds lands on a node. Each committed slot has a `running` entry in
    cf:runs on the node that took the commit; once A is back and a lease has passed,
    every committed slot and every token sent to the target is recorded, not running."""
    group = cluster(count=2)
    a, b = group.instances
    jobs = [f"hang-{i}" for i in range(4)]
    lease_ms = 3000
    for name in jobs:
        create(a, job_body(name, hanging_target.url(), lease_ms=lease_ms, retry={"attempts": 1},
                           webhook={"timeout_ms": 1500}))
    wait_for(lambda: {r[4] for r in hanging_target.snapshot()} >= {a.name, b.name},
             timeout=25, what="requests from both instances at the target")

    commits = []  # (job, slot ms, token) committed by A right before its death
    for attempt in range(8):
        if attempt % 2 == 0:
            watch = CommitWatch(group.nodes, jobs, ordinal_of(a), a.proc.pid)
            try:
                fired = watch.done.wait(15 * SLOW)
            finally:
                watch.close()
            assert fired and watch.seen, "no commit of A seen on the nodes in 15 s"
            a.kill9()
            node_index, job, token, last = watch.seen
            commits.append((job, last, token))
            run_id = f"{job}@{last}"
            states = [s for s in stream_runs(group.nodes[node_index]) if s["id"] == run_id]
            # The feed is trimmed below what every reader has read: an entry may be gone
            # only because B (and A, before it died) read it, so B then has the run.
            assert any(s["status"] == "running" and s["fencing_token"] == token
                       for s in states) or read_by(b, run_id, token), (
                f"A was killed right after its commit of {run_id} (token {token}) landed on "
                f"{group.nodes[node_index].name}; that node's cf:runs holds no running entry "
                f"for it: {[(s['status'], s['fencing_token']) for s in states]}")
        else:
            time.sleep(random.uniform(0.2, 1.5))
            a.kill9()
            # The slots the target was receiving from A when it died are on the nodes.
            recent = [r for r in hanging_target.snapshot()
                      if r[4] == a.name and r[0] > time.time() - 1.5]
            streams = [stream_runs(node) for node in group.nodes]
            for _, run_id, token, _, _ in recent:
                holding = [node.name for node, states in zip(group.nodes, streams)
                           if any(s["id"] == run_id and s["status"] == "running"
                                  and s["fencing_token"] == token for s in states)]
                assert len(holding) >= 2 or read_by(b, run_id, token), (
                    f"the target was receiving {run_id} (token {token}) from A when A was "
                    f"killed, but only {holding} hold its running entry in cf:runs")
        a.start()
        rejoin(group)
        time.sleep(random.uniform(0.5, 1.5))

    # A lease and a webhook timeout later, nothing is left running.
    time.sleep((lease_ms + 2000) / 1000)
    sent = {(run_id, token) for _, run_id, token, _, _ in hanging_target.snapshot() if run_id}
    committed = {(f"{job}@{last}", token) for job, last, token in commits}

    def all_recorded():
        details = {}
        for instance in (b, a):
            for kind, pairs in (("committed", committed), ("sent", sent)):
                bad = []
                for run_id, token in sorted(pairs):
                    run = run_of(instance, run_id)
                    if run is None or run["fencing_token"] != token or run["status"] == "running":
                        bad.append((run_id, token, run and (run["status"], run["fencing_token"])))
                if bad:
                    details[f"{instance.name}/{kind}"] = bad[:8]
        return not details, (f"slots committed by A just before kill -9, or sent to the "
                             f"target, not recorded as finished with their token "
                             f"(id, token, seen): {details}")
    eventually(all_recorded, timeout=30)


# --------------------------------------------------------------------------
# 5. a quorum outage is one summary per job per instance, not a row per slot
# --------------------------------------------------------------------------

def test_quorum_outage_is_summarised_not_recorded_slot_by_slot(cluster, receiver):
    group = cluster(count=2)
    jobs = [f"outage-{i}" for i in range(5)]
    for i, name in enumerate(jobs):
        create(group.instances[i % 2], job_body(name, receiver.hook(), lease_ms=2000))
    wait_for(lambda: all(len(receiver.deliveries(job)) >= 2 for job in jobs), timeout=20,
             what="first deliveries")
    survivor = group.nodes[2]
    down = now_ms()
    group.nodes[0].kill9()
    group.nodes[1].kill9()
    stream_before = xlen(survivor)
    for instance in group.instances:
        wait_for(lambda: readyz(instance) == 503, timeout=15, what=f"{instance.name} not ready")
    time.sleep(max(0.0, down / 1000 + 30 - time.time()))
    stream_after = xlen(survivor)
    group.nodes[0].start()
    group.nodes[1].start()
    back = now_ms()
    wait_for(lambda: all(len([d for d in receiver.deliveries(job)
                              if ms(d["scheduled_at"]) > back]) >= 2 for job in jobs),
             timeout=30, what="deliveries after the quorum returned")
    check_fencing(receiver.deliveries())
    outage = seconds_between(down + 1000, back - 1000)
    assert not [d for d in receiver.deliveries()
                if outage[0] <= ms(d["scheduled_at"]) <= outage[-1]]

    # Every slot of the outage is explained on every instance.
    def explained():
        details = {}
        for instance in group.instances:
            history = instance.runs()
            for job in jobs:
                missing = unexplained_slots(history, job, outage)
                if missing:
                    details[(instance.name, job)] = f"{len(missing)} slots, first {missing[:3]}"
        return not details, (f"outage slots {iso(outage[0])}..{iso(outage[-1])} unexplained: "
                             f"{details}")
    eventually(explained, timeout=30)

    # ... by a few rows: one summary per job and instance, plus a slot in flight at an edge.
    flood = {}
    for instance in group.instances:
        history = instance.runs(status="missed")
        for job in jobs:
            rows = [r for r in history if r["job"] == job and slot_range(r)
                    and slot_range(r)[1] >= down and slot_range(r)[0] <= back]
            by_writer = collections.Counter(r["instance"] for r in rows)
            if len(rows) > 3 * len(group.instances) or any(c > 3 for c in by_writer.values()):
                flood[(instance.name, job)] = (f"{len(rows)} missed rows for "
                                               f"{len(outage)} s, by writer {dict(by_writer)}")
    assert not flood, f"the outage was recorded slot by slot: {flood}"

    appended = stream_after - stream_before
    ceiling = len(jobs) * len(group.instances) * 4
    assert appended <= ceiling, (
        f"{appended} cf:runs entries appended to the surviving node during a "
        f"{len(outage)} s outage (at most {ceiling} expected, "
        f"{len(jobs) * len(outage) * len(group.instances)} would be one per job, slot and "
        f"instance)")


# --------------------------------------------------------------------------
# 6. a full disk stops firing, is reported, and the gap is recorded
# --------------------------------------------------------------------------

def fill(directory):
    """Writes directory/filler until the filesystem refuses (ENOSPC); returns its path."""
    path = directory / "filler"
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as out:
        for size in (65536, 4096, 512):
            piece = chunk[:size]
            while True:
                try:
                    out.write(piece)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return path


def warn_lines(text):
    return [line for line in text.splitlines()
            if re.match(r"\S+ (warn|error) ", line) or '"level":"warn"' in line
            or '"level":"error"' in line]


def test_full_disk_stops_firing_and_records_the_gap(tmp_path, processes, receiver):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the database")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount of a tmpfs not permitted here: {mounted.stderr.strip()}")
    instance = Instance(tmp_path, name="fulldisk", db=disk / "cronfence.db")
    try:
        processes.append(instance)
        instance.start()
        create(instance, job_body("disk", receiver.hook()))
        wait_for(lambda: len(receiver.deliveries("disk")) >= 2, what="two deliveries")
        assert readyz(instance) == 200

        log_from = len(instance.stderr())
        filler = fill(disk)

        def not_ready():
            reply = http("GET", instance.url + "/readyz")
            return reply.status == 503 and (now_ms(), reply)
        not_ready_at, reply = wait_for(not_ready, timeout=15,
                                       what="/readyz 503 with the database's disk full")
        assert re.search(r"disk|space|full|writ", reply.body, re.I), (
            f"/readyz gives no reason naming the write failure: {reply.body}")
        time.sleep(5)
        late = [d for d in receiver.deliveries("disk")
                if ms(d["received_at"]) > not_ready_at + 2000]
        assert not late, f"delivered while not ready (disk full): {late}"
        noise = warn_lines(instance.stderr()[log_from:]) + [
            line for line in instance.stdout_lines if re.search(r"warn|error", line)]
        assert noise, "the write failure was not logged"
        assert len(noise) < 20, (f"{len(noise)} warning/error lines in ~6 s of a full disk:\n"
                                 + "\n".join(noise[:30]))
        stopped_slots = [ms(d["scheduled_at"]) for d in receiver.deliveries("disk")]

        os.remove(filler)
        ready_at = wait_for(lambda: readyz(instance) == 200 and now_ms(), timeout=20,
                            what="/readyz 200 once the disk has room again")
        wait_for(lambda: len([d for d in receiver.deliveries("disk")
                              if ms(d["scheduled_at"]) > ready_at]) >= 2,
                 timeout=20, what="deliveries after the disk has room again")
        resumed = min(ms(d["scheduled_at"]) for d in receiver.deliveries("disk")
                      if ms(d["scheduled_at"]) > max(stopped_slots))
        gap = list(range(max(stopped_slots) + 1000, resumed, 1000))
        assert len(gap) >= 4, (max(stopped_slots), resumed)

        def gap_recorded():
            history = instance.runs(job="disk")
            missing = unexplained_slots(history, "disk", gap)
            return not missing, (f"slots not fired while the disk was full "
                                 f"({iso(gap[0])}..{iso(gap[-1])}) not recorded: {missing}")
        eventually(gap_recorded, timeout=20)
        rows = [r for r in instance.runs(job="disk", status="missed")
                if slot_range(r) and slot_range(r)[1] >= gap[0] and slot_range(r)[0] <= gap[-1]]
        assert len(rows) <= 3, f"{len(rows)} missed rows for a {len(gap)} s gap (one summary): " \
                               f"{[r['id'] for r in rows]}"

        code = instance.stop()
        assert code == 0, f"exit {code} after SIGTERM: {instance.stderr()[-3000:]}"
        assert db_query(instance.db, "SELECT id FROM runs WHERE status = 'running'") == []
    finally:
        if instance.alive():
            instance.stop()
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------------------------------
# A wiped node forgets its readers: it keeps the feed until they are back
# --------------------------------------------------------------------------

def stream_info(node):
    """XINFO STREAM cf:runs of node as a dict (length, entries-added, ...)."""
    words = node.cli("XINFO", "STREAM", "cf:runs").split("\n")
    return {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)
            if words[i] in ("length", "entries-added", "first-entry")}


def test_wiped_node_keeps_the_feed_for_a_paused_reader(cluster, receiver):
    """A wiped node has lost its list of readers with its data. B is paused when it is
    wiped, so only A tells the node where it is: the node must not trim the feed below
    A's position (B has not read that part of it) before it is trusted again and every
    live member has said where it is. 30 every-second jobs fill more than one stream
    node (100 entries) between two trims, so a trim would really delete entries."""
    group = cluster(count=2, args=["--node-quarantine-ms", "30000"])
    a, b = group.instances
    for i in range(30):
        create(a, job_body(f"feed-{i:02d}", receiver.hook()))
    wait_for(lambda: len(receiver.deliveries()) >= 60, timeout=20, what="deliveries")
    node = group.nodes[0]
    a_id = cluster_view(a)["instance"]["id"]

    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        node.wipe()
        wait_for(lambda: node_entry_of(a, node)["trusted"] is False, timeout=15,
                 what="the wiped node seen untrusted")
        # A's trim pass has run twice on the wiped node since entries arrived there.
        wait_for(lambda: node.cli("HEXISTS", "cf:readers", a_id) == "1", timeout=20,
                 what="A's position on the wiped node")
        # A's position can reach the node before any run state does (a loaded machine):
        # the feed is counted from when it exists there.
        first_pass = int(wait_for(lambda: stream_info(node).get("entries-added"), timeout=20,
                                  what="the run feed on the wiped node"))
        wait_for(lambda: int(stream_info(node)["entries-added"]) >= first_pass + 150,
                 timeout=30, what="more entries on the wiped node")
        time.sleep(6)  # at least one more trim pass of A (every 5 s)
        info = stream_info(node)
        assert int(info["entries-added"]) > 200, info
        assert info["length"] == info["entries-added"], \
            f"the wiped node trimmed the feed before B told its position: {info}"
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)

    # B reads on, and loses nothing anywhere.
    wait_for(lambda: node.cli("HEXISTS", "cf:readers", cluster_view(b)["instance"]["id"]) == "1",
             timeout=20, what="B's position on the wiped node")
    assert "run feed trimmed past this instance's position" not in b.stderr()
    wanted = {r["id"] for r in a.runs() if r["status"] != "running"}
    wait_for(lambda: wanted <= {r["id"] for r in b.runs()}, timeout=30,
             what="every run of A's history in B's")


def node_entry_of(instance, node):
    entries = [n for n in cluster_view(instance)["nodes"] if n["url"] == node.address]
    return entries[0]
