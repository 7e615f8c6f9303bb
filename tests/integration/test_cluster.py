"""Cluster mode (DESIGN §1 G1-G6, §4 cluster protocol, §6 /cluster and /readyz):
three real cronfence instances over three real redis-server nodes, delivering
to the reference receiver, with real faults: kill -9 of an instance or a node,
SIGSTOP of an instance, loss of the Redis quorum, a node wiped empty.

What a test asserts is behaviour (which slots were delivered, with which
tokens, what the history and /cluster say), never how fast: every wait is a
generous poll, stretched by SLOW for sanitized builds."""

import collections
import itertools
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (SLOW, VIEWER_TOKEN, EventStream, Instance, http, iso, job_body, ms,
                      wait_for)
from redisnode import start_nodes


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def now_ms():
    return int(time.time() * 1000)


def seconds_between(first_ms, last_ms):
    """Every whole-second instant in [first_ms, last_ms]."""
    start = -(-first_ms // 1000) * 1000
    return list(range(start, last_ms + 1, 1000))


def eventually(check, timeout, interval=0.2):
    """Polls check() -> (ok, detail) until ok; fails with the last detail after timeout*SLOW s."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        ok, detail = check()
        if ok:
            return detail
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout * SLOW} s: {detail}")
        time.sleep(interval)


def check_fencing(deliveries):
    """G1/G2/G4 as the target sees them: no idempotency key accepted twice, and per
    job the tokens strictly increase with the scheduled instant. Returns them by job."""
    keys = collections.Counter(d["idempotency_key"] for d in deliveries)
    twice = {key: count for key, count in keys.items() if count > 1}
    assert not twice, f"idempotency keys accepted more than once: {twice}"
    by_job = collections.defaultdict(list)
    for d in deliveries:
        by_job[d["job"]].append(d)
    for job, items in by_job.items():
        items.sort(key=lambda d: ms(d["scheduled_at"]))
        for earlier, later in zip(items, items[1:]):
            assert earlier["token"] < later["token"], (
                f"{job}: token of {later['scheduled_at']} ({later['token']}, {later['instance']}) "
                f"not above that of {earlier['scheduled_at']} ({earlier['token']}, "
                f"{earlier['instance']})")
        for d in items:
            assert d["idempotency_key"] == f"{job}@{d['scheduled_at']}", d
            assert d["run_id"] == f"{job}@{ms(d['scheduled_at'])}", d
    return by_job


def create(instance, body):
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    return reply.json


def cluster_view(instance):
    reply = instance.api("GET", "/api/v1/cluster")
    assert reply.status == 200, reply
    return reply.json


def node_entry(view, node):
    entries = [n for n in view["nodes"] if n["url"] == node.address]
    assert len(entries) == 1, (node.address, view["nodes"])
    return entries[0]


def readyz(instance):
    return http("GET", instance.url + "/readyz").status


def runs_by_id(instance, **filters):
    return {run["id"]: run for run in instance.runs(**filters)}


class Cluster:
    """Three redis-server nodes and `count` cronfence instances over them."""

    def __init__(self, workdir, processes):
        self.workdir = workdir
        self.processes = processes
        self.nodes = []
        self.instances = []

    def start(self, count=3, args=()):
        self.nodes = start_nodes(self.workdir, 3)
        self.args = list(args)
        for _ in range(count):
            self.add_instance()
        # Everyone sees everyone and a trusted quorum before the test begins, so
        # that the rank-staggered claims spread from the first slot on.
        for instance in self.instances:
            wait_for(lambda: self.settled(instance), timeout=20, what=f"{instance.name} joined")
        return self

    def add_instance(self):
        """Starts one more instance (cf<n>) over the same nodes."""
        name = f"cf{len(self.instances)}"
        redis = ",".join(node.url for node in self.nodes)
        instance = Instance(self.workdir, name=name,
                            args=["--redis", redis, "--instance-id", name, *self.args])
        self.processes.append(instance)
        instance.start()
        self.instances.append(instance)
        return instance

    def settled(self, instance):
        view = cluster_view(instance)
        return (len(view["members"]) == len(self.instances) and view["quorum"]["healthy"]
                and view["quorum"]["trusted"] == 3)

    def by_id(self, instance_id):
        return next(i for i in self.instances if i.name == instance_id)

    def close(self):
        # Instances first (SIGCONT in case a test left one stopped), then the nodes.
        for instance in self.instances:
            if instance.alive():
                os.kill(instance.proc.pid, signal.SIGCONT)
                instance.stop()
        for node in self.nodes:
            if node.running():
                node.resume()
            node.kill9()


@pytest.fixture
def cluster(tmp_path, processes):
    """cluster(count=3, args=()) -> a started Cluster; torn down by pid afterwards."""
    made = []

    def make(count=3, args=()):
        group = Cluster(tmp_path, processes)
        made.append(group)
        return group.start(count, args)

    yield make
    for group in made:
        group.close()


def missing_slots(receiver, jobs, first_ms, last_ms, excused=None):
    """(ok, detail): every whole second of [first_ms(job), last_ms] delivered for each job
    (first_ms may be a dict by job); excused(job, T) may excuse a slot."""
    delivered = collections.defaultdict(set)
    for d in receiver.deliveries():
        delivered[d["job"]].add(ms(d["scheduled_at"]))
    missing = {}
    for job in jobs:
        start = first_ms[job] if isinstance(first_ms, dict) else first_ms
        gaps = [iso(t) for t in seconds_between(start, last_ms)
                if t not in delivered[job] and not (excused and excused(job, t))]
        if gaps:
            missing[job] = gaps
    return not missing, f"slots not delivered: {missing}"


def forward(receiver, handler, body):
    """Sends the request handler is serving, with body, on to receiver; returns the
    receiver's (status, answer)."""
    headers = {k: v for k, v in handler.headers.items()
               if k.lower() not in ("host", "content-length", "connection")}
    request = urllib.request.Request(f"http://127.0.0.1:{receiver.port}{handler.path}",
                                     data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def send_answer(handler, status, answer):
    """Answers the request handler is serving with the receiver's answer."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the sender died meanwhile (as it may in these tests)


def hop_url(server, knobs):
    """The hook URL of a relay's server, with the receiver's knobs as its query."""
    query = "&".join(f"{key}={value}" for key, value in knobs.items())
    return f"http://127.0.0.1:{server.server_address[1]}/hook" + (f"?{query}" if query else "")


class Relay:
    """A webhook hop in front of the receiver that forwards every request as is
    and answers with the receiver's answer. Armed with (instance name, action),
    it runs action once, at the moment the first delivery sent by that instance
    arrives, before forwarding it: a fault injected mid-delivery."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.armed = None
        self.fired = None  # the run id of the delivery that set the action off
        self.done = threading.Event()  # set once the action has returned
        self.done_at = None
        self.arrivals = []  # (time.time(), sending instance, run id) of every request
        self.lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sender = json.loads(body).get("instance")
                with relay.lock:
                    relay.arrivals.append((time.time(), sender, self.headers.get("Cronfence-Run")))
                    action = None
                    if relay.armed and relay.armed[0] == sender:
                        action, relay.armed = relay.armed[1], None
                        relay.fired = self.headers.get("Cronfence-Run")
                if action:
                    action()
                    relay.done_at = time.time()
                    relay.done.set()
                status, answer = forward(relay.receiver, self, body)
                send_answer(self, status, answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hook(self, **knobs):
        return hop_url(self.server, knobs)

    def arm(self, instance_name, action):
        with self.lock:
            self.armed = (instance_name, action)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def relay(receiver):
    hop = Relay(receiver)
    yield hop
    hop.close()


# --------------------------------------------------------------------------
# 1. many jobs, three instances: once per slot, no gaps, shared history
# --------------------------------------------------------------------------

def test_every_slot_delivered_once_with_increasing_tokens(cluster, receiver):
    group = cluster()
    jobs, first = [], {}
    for i in range(20):
        instance = group.instances[i % 3]
        job = create(instance, job_body(f"tick-{i:02d}", receiver.hook()))
        jobs.append(job["name"])
        # Peers learn of the job within ~1-2 s; from then on no slot may be lost.
        first[job["name"]] = ms(job["created_at"]) + 2000
    time.sleep(15)
    end = now_ms() - 1000
    assert all(len(seconds_between(first[job], end)) >= 10 for job in jobs), (first, end)
    eventually(lambda: missing_slots(receiver, jobs, first, end), timeout=20)

    deliveries = receiver.deliveries()
    by_job = check_fencing(deliveries)
    assert set(by_job) == set(jobs), sorted(by_job)
    instances = collections.Counter(d["instance"] for d in deliveries)
    assert set(instances) <= {i.name for i in group.instances}, instances
    assert len(instances) >= 2, f"every delivery came from one instance: {instances}"

    # G6: every instance's history holds exactly the delivered runs of the window,
    # with the token and the instance the target saw.
    expected = {d["run_id"]: (d["token"], d["instance"]) for d in deliveries
                if ms(d["scheduled_at"]) <= end}

    def histories_agree():
        details = {}
        for instance in group.instances:
            seen = {run["id"]: (run["fencing_token"], run["instance"])
                    for run in instance.runs(status="succeeded")
                    if ms(run["scheduled_at"]) <= end}
            if seen != expected:
                details[instance.name] = {
                    "missing": sorted(set(expected) - set(seen))[:10],
                    "extra": sorted(set(seen) - set(expected))[:10],
                    "different": sorted(k for k in set(seen) & set(expected)
                                        if seen[k] != expected[k])[:10]}
        return not details, details
    eventually(histories_agree, timeout=15)


# --------------------------------------------------------------------------
# 2. kill -9 of an instance while it delivers
# --------------------------------------------------------------------------

def test_kill9_of_an_instance_loses_no_slot(relay, cluster, receiver):
    # (relay first: torn down after the instances, so none delivers to a closed port)
    group = cluster()
    lease_ms = 2000
    jobs = [f"crash-{i}" for i in range(4)]
    for i, name in enumerate(jobs):
        # A delivery takes 400 ms at the receiver.
        create(group.instances[i % 3], job_body(name, relay.hook(delay_ms=400),
                                                lease_ms=lease_ms))
    victim, survivors = group.instances[0], group.instances[1:]
    wait_for(lambda: len({d["instance"] for d in receiver.deliveries()}) == 3, timeout=20,
             what="deliveries from every instance")

    # kill -9 the victim the moment one of its deliveries reaches the target: it
    # dies holding a lock, with a delivery in flight.
    relay.arm(victim.name, victim.kill9)
    wait_for(relay.done.is_set, timeout=20, what="the victim killed mid-delivery")
    assert victim.exit_code == -signal.SIGKILL
    killed_at = now_ms()

    # Past the 5 s membership expiry, so that slots the dead instance ranked first are seen too.
    time.sleep(8)
    end = now_ms() - 1000

    def skipped_for_dead_lock(job, slot):
        if slot > killed_at + lease_ms + 1000:
            return False
        return any(r["status"] == "skipped" and ms(r["scheduled_at"]) == slot
                   for instance in survivors for r in instance.runs(job=job))
    eventually(lambda: missing_slots(receiver, jobs, killed_at + 1000, end,
                                     excused=skipped_for_dead_lock), timeout=20)
    check_fencing(receiver.deliveries())
    # Nothing of a slot after its death came from the dead instance. (Requests it sent just
    # before the kill, for the same second, may still reach the relay afterwards.)
    assert not [a for a in relay.arrivals
                if a[1] == victim.name and int(a[2].rsplit("@", 1)[1]) > relay.done_at * 1000]

    # G6: what the dead instance delivered stays in the survivors' history.
    dead = [d for d in receiver.deliveries() if d["instance"] == victim.name]
    assert dead, "the victim delivered nothing before it was killed"

    def dead_runs_visible():
        problems = {}
        for instance in survivors:
            runs = runs_by_id(instance)
            for d in dead:
                run = runs.get(d["run_id"])
                finished_before_kill = ms(d["received_at"]) + 400 + 1000 * SLOW < killed_at
                if run is None:
                    problems[(instance.name, d["run_id"])] = "absent"
                elif run["instance"] != victim.name or run["fencing_token"] != d["token"]:
                    problems[(instance.name, d["run_id"])] = run
                elif finished_before_kill and run["status"] != "succeeded":
                    problems[(instance.name, d["run_id"])] = run["status"]
        return not problems, problems
    eventually(dead_runs_visible, timeout=15)

    # Runs the dead instance left "running" are called lost by the survivors.
    def none_left_running():
        left = {instance.name: [r["id"] for r in instance.runs(status="running")
                                if r["instance"] == victim.name]
                for instance in survivors}
        return not any(left.values()), left
    eventually(none_left_running, timeout=30)


# --------------------------------------------------------------------------
# 3. SIGSTOP of the instance holding a delivery: the target fences it out
# --------------------------------------------------------------------------

def test_paused_holder_is_fenced_out(cluster, receiver):
    group = cluster()
    # The receiver holds the first delivery 8 s before its fencing check.
    create(group.instances[1], job_body("stall", receiver.hook(delay_first_ms=8000),
                                        lease_ms=2000))

    def first_running():
        for instance in group.instances:
            for run in instance.runs(job="stall", status="running"):
                if run["trigger"] == "schedule":
                    return run
        return None
    held = wait_for(first_running, timeout=8, interval=0.05, what="the held first delivery")
    holder = group.by_id(held["instance"])
    others = [i for i in group.instances if i is not holder]
    held_ms = ms(held["scheduled_at"])
    os.kill(holder.proc.pid, signal.SIGSTOP)
    try:
        # Longer than the lease: the lock expires and the others take later slots.
        time.sleep(6)
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)

    def fenced_on(instance):
        run = runs_by_id(instance, job="stall").get(held["id"])
        ok = (run is not None and run["status"] == "fenced" and run["http_status"] == 409
              and run["lease_lost"] is True and run["fencing_token"] == held["fencing_token"])
        return ok, run
    eventually(lambda: fenced_on(holder), timeout=20)
    for instance in others:
        eventually(lambda: fenced_on(instance), timeout=15)

    # The target refused the held delivery as stale (409) and never accepted its slot.
    stale = [line for line in receiver.stderr().splitlines()
             if "delivery stale" in line and iso(held_ms) in line]
    assert stale, receiver.stderr()[-3000:]
    wait_for(lambda: len([d for d in receiver.deliveries("stall")
                          if ms(d["scheduled_at"]) > held_ms]) >= 3,
             timeout=15, what="later slots delivered")
    deliveries = receiver.deliveries("stall")
    check_fencing(deliveries)
    assert held["id"] not in {d["run_id"] for d in deliveries}, deliveries
    later = [d for d in deliveries if ms(d["scheduled_at"]) > held_ms]
    assert all(d["token"] > held["fencing_token"] for d in later), (held, later)
    # The others delivered while the holder was stopped.
    assert {d["instance"] for d in later} - {holder.name}, later


# --------------------------------------------------------------------------
# 4. quorum: one node down is fine, two down stop everything (G5)
# --------------------------------------------------------------------------

def test_no_firing_without_quorum(cluster, receiver):
    group = cluster()
    jobs = ["quorum-a", "quorum-b"]
    for i, name in enumerate(jobs):
        create(group.instances[i], job_body(name, receiver.hook(), lease_ms=2000,
                                            starting_deadline_ms=1000))
    wait_for(lambda: all(len(receiver.deliveries(job)) >= 2 for job in jobs), timeout=15,
             what="first deliveries")

    # One node of three down: firing goes on.
    group.nodes[0].kill9()
    first_down = now_ms()
    wait_for(lambda: all(len([d for d in receiver.deliveries(job)
                              if ms(d["scheduled_at"]) > first_down + 1000]) >= 3
                         for job in jobs), timeout=20, what="deliveries with one node down")
    assert all(readyz(instance) == 200 for instance in group.instances)

    # Two down: no quorum anywhere, nothing fires.
    group.nodes[1].kill9()
    second_down = now_ms()
    for instance in group.instances:
        wait_for(lambda: readyz(instance) == 503, timeout=15, what=f"{instance.name} not ready")
    time.sleep(max(0, second_down + 1000 - now_ms()) / 1000)
    before = receiver.deliveries()
    time.sleep(4)
    after = receiver.deliveries()
    assert after == before, f"delivered without a quorum: {after[len(before):]}"
    assert not [d for d in after if ms(d["scheduled_at"]) > second_down + 1000], after
    for instance in group.instances:
        view = cluster_view(instance)
        assert view["quorum"]["healthy"] is False and view["quorum"]["trusted"] == 1, view

    # Both back from their AOF: firing resumes, and the gap is recorded missed.
    group.nodes[0].start()
    group.nodes[1].start()
    back = now_ms()
    wait_for(lambda: all(len([d for d in receiver.deliveries(job)
                              if ms(d["scheduled_at"]) > back]) >= 2 for job in jobs),
             timeout=20, what="deliveries after the quorum returned")
    for instance in group.instances:
        wait_for(lambda: readyz(instance) == 200, timeout=15, what=f"{instance.name} ready")
    check_fencing(receiver.deliveries())

    def gap_missed(instance):
        return [r for r in instance.runs(status="missed")
                if second_down + 1000 < ms(r["scheduled_at"]) < back]
    missed = wait_for(lambda: gap_missed(group.instances[0]), timeout=20,
                      what="a missed slot in the gap")
    # Each says why; the quorum's loss is named. (A slot the scheduler reached late, which a
    # loaded machine and the sanitized build can make happen, says it started too late.)
    reasons = [(r["scheduled_at"], r["reason"]) for r in missed]
    assert all(r["reason"] for r in missed), reasons
    assert any("quorum" in r["reason"] for r in missed), reasons
    assert not [r for r in missed if r["fencing_token"]], missed
    missed_ids = {r["id"] for r in missed}
    # G6: the same records reach the other instances.
    for instance in group.instances[1:]:
        eventually(lambda: (missed_ids <= {r["id"] for r in gap_missed(instance)},
                            sorted(missed_ids - {r["id"] for r in gap_missed(instance)})),
                   timeout=15)
    # And none of the missed slots was delivered.
    assert not missed_ids & {d["run_id"] for d in receiver.deliveries()}


def test_an_unanswered_heartbeat_does_not_take_the_ordinal_away(cluster):
    """DESIGN §4.8: a heartbeat round a quorum of nodes leaves unanswered (two nodes
    stalled for a moment, as a slow fsync or a busy machine does) costs the instance
    neither its ordinal nor its readiness: the ordinal confirmed by the last heartbeat
    stays valid for half its key's life, so claims go on as soon as the nodes answer."""
    group = cluster(count=1)
    instance = group.instances[0]
    wait_for(lambda: cluster_view(instance)["ordinal_held"] is True, timeout=15,
             what="ordinal held")
    for node in group.nodes[:2]:
        node.pause()
    try:
        wait_for(lambda: not any(node_entry(cluster_view(instance), node)["up"]
                                 for node in group.nodes[:2]),
                 timeout=15, what="a heartbeat the two stalled nodes left unanswered")
    finally:
        for node in group.nodes[:2]:
            node.resume()
    assert cluster_view(instance)["ordinal_held"] is True
    wait_for(lambda: readyz(instance) == 200, timeout=15, what="ready again")
    assert "ordinal lost" not in instance.stderr()
    assert "heartbeat not confirmed by a quorum, ordinal still held" in instance.stderr()


# --------------------------------------------------------------------------
# 5. a node wiped empty: untrusted, then repaired with the fences it lost
# --------------------------------------------------------------------------

def test_wiped_node_is_quarantined_then_repaired(cluster, receiver):
    group = cluster(args=["--node-quarantine-ms", "3000"])
    create(group.instances[0], job_body("busy", receiver.hook(), lease_ms=2000))
    create(group.instances[1], job_body("quiet", receiver.hook(), lease_ms=2000))
    wait_for(lambda: all(len(receiver.deliveries(job)) >= 3 for job in ("quiet", "busy")),
             timeout=15, what="first deliveries")
    # "quiet" stops firing: its fence on the wiped node can only come back by repair.
    reply = group.instances[2].api("POST", "/api/v1/jobs/quiet/pause")
    assert reply.status == 200, reply
    for instance in group.instances:
        wait_for(lambda: instance.api("GET", "/api/v1/jobs/quiet").json["paused"] is True,
                 timeout=10, what="pause seen everywhere")
    time.sleep(1.5)

    node = group.nodes[0]
    quiet_token = max(d["token"] for d in receiver.deliveries("quiet"))
    busy_token = max(d["token"] for d in receiver.deliveries("busy"))
    assert int(node.cli("HGET", "cf:fence:quiet", "token")) >= quiet_token
    node.wipe()
    wiped_at = now_ms()
    assert node.cli("EXISTS", "cf:node") == "0"

    observer = group.instances[1]
    wait_for(lambda: (lambda entry: entry["up"] and entry["trusted"] is False)(
        node_entry(cluster_view(observer), node)), timeout=10, interval=0.05,
        what="the wiped node up and untrusted")
    # Untrusted, the node is not counted: the quorum stands on the two others.
    view = cluster_view(observer)
    assert view["quorum"]["trusted"] == 2 and view["quorum"]["healthy"], view

    def marker_set():
        return node.cli("EXISTS", "cf:node") == "1" and now_ms()
    repaired_at = wait_for(marker_set, timeout=20, interval=0.05, what="the trust marker")
    # Not before the quarantine: it starts when an instance sees the empty node, after the wipe.
    assert repaired_at - wiped_at >= 2500, (wiped_at, repaired_at)
    for instance in group.instances:
        wait_for(lambda: node_entry(cluster_view(instance), node)["trusted"] is True and
                 cluster_view(instance)["quorum"]["trusted"] == 3,
                 timeout=15, what=f"{instance.name} trusts the repaired node")

    # The repair copied the fences and the catalog from the trusted quorum.
    assert int(node.cli("HGET", "cf:fence:quiet", "token")) >= quiet_token
    assert int(node.cli("HGET", "cf:fence:busy", "token")) >= busy_token
    assert node.cli("EXISTS", "cf:job:quiet") == "1"
    assert node.cli("ZSCORE", "cf:jobs", "quiet") != ""

    wait_for(lambda: len([d for d in receiver.deliveries("busy")
                          if ms(d["received_at"]) > repaired_at]) >= 3,
             timeout=15, what="deliveries after the repair")
    check_fencing(receiver.deliveries())
    after = [d for d in receiver.deliveries("busy") if ms(d["received_at"]) > wiped_at]
    assert after and all(d["token"] > busy_token for d in after), (busy_token, after)
    assert max(d["token"] for d in receiver.deliveries("quiet")) == quiet_token


def test_untrusted_node_does_not_make_a_quorum(cluster, receiver):
    """Node 1 down, then node 0 wiped: node 2 is the only trusted node left, so
    nothing fires, and no instance says it is ready, even for a moment."""
    # Default quarantine (>= 60 s): the wiped node stays untrusted for the whole test.
    group = cluster()
    create(group.instances[0], job_body("trust", receiver.hook(), lease_ms=2000,
                                        starting_deadline_ms=1000))
    wait_for(lambda: len(receiver.deliveries("trust")) >= 2, timeout=15, what="first deliveries")
    wiped, dead = group.nodes[0], group.nodes[1]
    dead.kill9()
    for instance in group.instances:
        wait_for(lambda: node_entry(cluster_view(instance), dead)["up"] is False, timeout=10,
                 what=f"{instance.name} sees node 1 down")
        assert readyz(instance) == 200

    # Every instance's readiness, sampled from just before the wipe to the end.
    samples = collections.defaultdict(list)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for instance in group.instances:
                samples[instance.name].append(readyz(instance))
            time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wiped.wipe()
        down = now_ms()
        # Reachable: the empty node and node 2; trusted: node 2 only. That is no quorum.
        for instance in group.instances:
            wait_for(lambda: (lambda v: node_entry(v, wiped)["up"] and
                              node_entry(v, wiped)["trusted"] is False and
                              v["quorum"]["trusted"] == 1 and v["quorum"]["healthy"] is False)(
                cluster_view(instance)), timeout=15, what=f"{instance.name}: wiped node untrusted")
            wait_for(lambda: readyz(instance) == 503, timeout=15, what=f"{instance.name} not ready")
        time.sleep(max(0, down + 1000 - now_ms()) / 1000)
        before = receiver.deliveries()
        time.sleep(3)
        assert receiver.deliveries() == before, "delivered with one trusted node"
        assert not [d for d in before if ms(d["scheduled_at"]) > down + 1000], before
        for instance in group.instances:
            view = cluster_view(instance)
            assert node_entry(view, wiped)["trusted"] is False, view["nodes"]
            assert view["quorum"]["trusted"] == 1 and not view["quorum"]["healthy"], view
    finally:
        stop.set()
        sampler.join()

    dead.start()
    back = now_ms()
    wait_for(lambda: len([d for d in receiver.deliveries("trust")
                          if ms(d["scheduled_at"]) > back]) >= 2,
             timeout=20, what="deliveries with two trusted nodes again")
    check_fencing(receiver.deliveries())

    # /readyz went from ready to not ready when the node was wiped, and never back:
    # the empty node, once reconnected, must not be taken for a trusted one.
    flapped = {}
    for name, statuses in samples.items():
        first_down = statuses.index(503) if 503 in statuses else len(statuses)
        if 200 in statuses[first_down:]:
            flapped[name] = " ".join(f"{status}x{len(list(run))}"
                                     for status, run in itertools.groupby(statuses))
    assert not flapped, f"/readyz back to 200 after the wipe with one trusted node: {flapped}"


# --------------------------------------------------------------------------
# 6. the catalog is one register for the whole cluster
# --------------------------------------------------------------------------

def test_catalog_is_shared_and_guarded_cluster_wide(cluster, receiver):
    group = cluster()
    a, b, c = group.instances
    job = create(a, job_body("shared", receiver.hook(), description="v1"))
    # The name is taken cluster-wide at once, whatever B's mirror holds yet.
    reply = b.api("POST", "/api/v1/jobs", job_body("shared", receiver.hook()))
    assert reply.status == 409, reply
    for instance in (b, c):
        got = wait_for(lambda: (lambda r: r.status == 200 and r)(
            instance.api("GET", "/api/v1/jobs/shared")), timeout=10, what=f"job on {instance.name}")
        assert got.json["version"] == job["version"], got.json
        assert got.json["description"] == "v1"
        assert got.headers["ETag"] == f'"{job["version"]}"'

    # C changes it; B's If-Match on the old version is refused, even before B's
    # mirror has caught up: the check runs under the cluster's catalog lock.
    reply = c.api("PATCH", "/api/v1/jobs/shared", {"description": "v2"},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply
    v2 = reply.json["version"]
    assert v2 > job["version"]
    reply = b.api("PATCH", "/api/v1/jobs/shared", {"description": "stale"},
                  headers={"Content-Type": "application/merge-patch+json",
                           "If-Match": f'"{job["version"]}"'})
    assert reply.status == 412, reply
    for instance in group.instances:
        wait_for(lambda: instance.api("GET", "/api/v1/jobs/shared").json["version"] == v2,
                 timeout=10, what=f"v2 on {instance.name}")
        assert instance.api("GET", "/api/v1/jobs/shared").json["description"] == "v2"
    # The current version is accepted anywhere.
    reply = a.api("PATCH", "/api/v1/jobs/shared", {"description": "v3"},
                  headers={"Content-Type": "application/merge-patch+json", "If-Match": f'"{v2}"'})
    assert reply.status == 200 and reply.json["version"] > v2, reply

    # Three instances race to create one name: exactly one wins.
    answers = []

    def post(instance):
        answers.append(instance.api("POST", "/api/v1/jobs",
                                    job_body("raced", receiver.hook(), description=instance.name)))
    threads = [threading.Thread(target=post, args=(i,)) for i in group.instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in answers) == [201, 409, 409], answers
    winner = next(r.json for r in answers if r.status == 201)
    for instance in group.instances:
        wait_for(lambda: (lambda r: r.status == 200 and r.json["version"] == winner["version"])(
            instance.api("GET", "/api/v1/jobs/raced")), timeout=10, what="the winner everywhere")

    # The created jobs fire, once per slot.
    wait_for(lambda: len(receiver.deliveries("shared")) >= 3 and
             len(receiver.deliveries("raced")) >= 3, timeout=15, what="deliveries")

    # Deleted on C: gone on A and B, and it stops firing.
    assert c.api("DELETE", "/api/v1/jobs/shared").status == 204
    for instance in (a, b):
        wait_for(lambda: instance.api("GET", "/api/v1/jobs/shared").status == 404, timeout=10,
                 what=f"deletion seen by {instance.name}")
    gone = now_ms()
    assert c.api("GET", "/api/v1/jobs/shared").status == 404
    assert "shared" not in [j["name"] for i in group.instances
                            for j in i.api("GET", "/api/v1/jobs").json["items"]]
    time.sleep(3)
    late = [d for d in receiver.deliveries("shared") if ms(d["scheduled_at"]) > gone + 1000]
    assert not late, late
    # A new job of the same name may be created again, with a larger version.
    again = create(b, job_body("shared", receiver.hook()))
    assert again["version"] > v2
    check_fencing(receiver.deliveries())


def listed_versions(instance):
    """{name: version} of every job instance lists, page by page."""
    out, cursor = {}, None
    while True:
        reply = instance.api("GET", "/api/v1/jobs?limit=500" + (f"&cursor={cursor}" if cursor
                                                               else ""))
        assert reply.status == 200, reply
        out.update({job["name"]: job["version"] for job in reply.json["items"]})
        cursor = reply.json.get("next_cursor")
        if not cursor:
            return out


def test_concurrent_catalog_writes_on_two_instances(cluster, receiver):
    """Concurrent writes are committed in batches (several writes per hold of the
    catalog lock): each name is still created once cluster-wide, every write gets its
    own version, the checks stay exact, and both mirrors end up identical."""
    group = cluster(count=2)
    a, b = group.instances
    names = [f"bulk-{i:03d}" for i in range(300)]
    answers = collections.defaultdict(list)
    lock = threading.Lock()

    def post_all(instance, chunk):
        for name in chunk:
            reply = instance.api("POST", "/api/v1/jobs",
                                 job_body(name, receiver.hook(), schedule="0 0 1 1 *"))
            with lock:
                answers[name].append(reply)

    # Every name is posted to both instances at once, by 12 threads on each.
    threads = [threading.Thread(target=post_all, args=(instance, names[t::12]))
               for instance in (a, b) for t in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names:
        statuses = sorted(r.status for r in answers[name])
        assert statuses == [201, 409], (name, [(r.status, r.body[:200]) for r in answers[name]])
    created = {name: next(r.json["version"] for r in answers[name] if r.status == 201)
               for name in names}
    assert len(set(created.values())) == len(names), "versions repeat"

    def same_catalogs():
        views = [listed_versions(i) for i in (a, b)]
        return views[0] == views[1] == created, {i.name: len(v) for i, v in zip((a, b), views)}
    eventually(same_catalogs, 20)

    # Concurrent conditional replaces of one version: exactly one wins per job, with a
    # larger version; the other is refused 412.
    raced = names[:40]
    replies = collections.defaultdict(list)

    def put_all(instance, chunk):
        for name in chunk:
            body = job_body(name, receiver.hook(), schedule="0 0 1 1 *",
                            description=instance.name)
            reply = instance.api("PUT", f"/api/v1/jobs/{name}", body,
                                 headers={"If-Match": f'"{created[name]}"'})
            with lock:
                replies[name].append(reply)
    threads = [threading.Thread(target=put_all, args=(instance, raced[t::8]))
               for instance in (a, b) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in raced:
        statuses = sorted(r.status for r in replies[name])
        assert statuses == [200, 412], (name, [(r.status, r.body[:200]) for r in replies[name]])
        winner = next(r.json for r in replies[name] if r.status == 200)
        assert winner["version"] > created[name]
        created[name] = winner["version"]
    assert len(set(created.values())) == len(names), "versions repeat"
    # Deletes in a burst on both instances: each name deleted once, 404 for the other.
    deleted = collections.defaultdict(list)

    def delete_all(instance, chunk):
        for name in chunk:
            reply = instance.api("DELETE", f"/api/v1/jobs/{name}")
            with lock:
                deleted[name].append(reply.status)
    threads = [threading.Thread(target=delete_all, args=(instance, names[-60:][t::8]))
               for instance in (a, b) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names[-60:]:
        assert sorted(deleted[name]) == [204, 404], (name, deleted[name])
        del created[name]
    eventually(same_catalogs, 20)


# --------------------------------------------------------------------------
# 7. GET /api/v1/cluster and /readyz
# --------------------------------------------------------------------------

def test_cluster_page_shows_members_nodes_and_quorum(cluster):
    group = cluster()
    urls = {instance.name: instance.url for instance in group.instances}
    addresses = {node.address for node in group.nodes}
    ordinals = set()
    for instance in group.instances:
        # A member's heartbeat carries its URL once its port is bound.
        wait_for(lambda: {m["id"]: m["url"] for m in cluster_view(instance)["members"]} == urls,
                 timeout=10, what=f"member URLs on {instance.name}")
        view = cluster_view(instance)
        assert view["mode"] == "cluster", view
        assert view["instance"]["id"] == instance.name and view["instance"]["self"] is True
        assert view["instance"]["url"] == instance.url
        assert view["ordinal_held"] is True
        members = {m["id"]: m for m in view["members"]}
        assert len(view["members"]) == 3 and set(members) == set(urls), view["members"]
        assert {m["id"]: m["url"] for m in view["members"]} == urls
        assert [m["id"] for m in view["members"] if m["self"]] == [instance.name]
        member_ordinals = [m["ordinal"] for m in view["members"]]
        assert len(set(member_ordinals)) == 3, member_ordinals
        assert all(0 <= o <= 65535 for o in member_ordinals)
        assert members[instance.name]["ordinal"] == view["instance"]["ordinal"]
        ordinals.add(tuple(sorted(member_ordinals)))
        assert {n["url"] for n in view["nodes"]} == addresses, view["nodes"]
        for node in view["nodes"]:
            assert node["up"] is True and node["trusted"] is True, node
            assert node["warnings"] == [], node
            assert isinstance(node["latency_ms"], (int, float)), node
        assert view["quorum"] == {"size": 3, "needed": 2, "trusted": 3, "healthy": True,
                                  "state": "healthy"}, view
        assert all(m["up"] is True for m in view["members"]), view["members"]
        assert readyz(instance) == 200
    assert len(ordinals) == 1, f"instances disagree on the ordinals: {ordinals}"

    # Viewer tokens may read it; no token may not.
    reply = group.instances[0].api("GET", "/api/v1/cluster", token=VIEWER_TOKEN)
    assert reply.status == 200 and reply.json["mode"] == "cluster", reply
    assert http("GET", group.instances[0].url + "/api/v1/cluster").status == 401

    # A node killed: down, not counted, the quorum kept but degraded.
    dead = group.nodes[1]
    dead.kill9()
    for instance in group.instances:
        wait_for(lambda: node_entry(cluster_view(instance), dead)["up"] is False, timeout=10,
                 what=f"{instance.name} sees the node down")
        view = cluster_view(instance)
        assert view["quorum"]["trusted"] == 2 and view["quorum"]["healthy"] is True, view
        assert view["quorum"]["state"] == "degraded", view
        assert view["quorum"]["size"] == 3 and view["quorum"]["needed"] == 2, view
        assert node_entry(view, dead)["latency_ms"] is None, view["nodes"]
        assert all(n["up"] for n in view["nodes"] if n["url"] != dead.address), view["nodes"]
        assert readyz(instance) == 200

    # An instance killed stays listed on the others, down (5 s expiry), with when it was
    # last seen; the live members are the two others.
    gone = group.instances[2]
    killed_at = now_ms()
    gone.kill9()
    for instance in group.instances[:2]:
        wait_for(lambda: {m["id"] for m in cluster_view(instance)["members"] if m["up"]} ==
                 {group.instances[0].name, group.instances[1].name},
                 timeout=15, what=f"{instance.name} sees the dead member down")
        view = cluster_view(instance)
        down = [m for m in view["members"] if not m["up"]]
        assert [m["id"] for m in down] == [gone.name], view["members"]
        assert down[0]["url"] == gone.url and down[0]["self"] is False, down
        # Last seen at its last heartbeat: before the kill (with clock reading slack), not
        # at the time of asking.
        assert killed_at - 15000 <= ms(down[0]["last_seen"]) <= killed_at + 1000, down

    # An instance started after the departure learns it from the nodes, which keep departed
    # members for 10 minutes: it shows the dead one down too, last seen before the kill.
    late = group.add_instance()
    wait_for(lambda: [m["id"] for m in cluster_view(late)["members"] if not m["up"]] ==
             [gone.name], timeout=15, what="the late instance sees the dead member down")
    down = [m for m in cluster_view(late)["members"] if not m["up"]]
    assert down[0]["url"] == gone.url, down
    assert killed_at - 15000 <= ms(down[0]["last_seen"]) <= killed_at + 1000, down

    # A node down and then a second one: no quorum.
    group.nodes[2].kill9()
    wait_for(lambda: cluster_view(group.instances[0])["quorum"]["state"] == "no_quorum",
             timeout=10, what="no quorum with two nodes down")
    assert cluster_view(group.instances[0])["quorum"]["healthy"] is False


def test_a_joining_member_is_shown_with_its_url(cluster):
    """The members list never shows a joining instance under anything but its URL."""
    group = cluster(count=2)
    watcher = group.instances[0]
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            reply = watcher.api("GET", "/api/v1/cluster")
            if reply.status == 200:
                seen.extend((m["id"], m["url"]) for m in reply.json["members"])
            time.sleep(0.01)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        joined = group.add_instance()
        wait_for(lambda: (joined.name, joined.url) in seen, timeout=10,
                 what="the new member with its URL")
    finally:
        stop.set()
        thread.join()
    urls = collections.Counter(url for name, url in seen if name == joined.name)
    assert set(urls) == {joined.url}, f"{joined.name} shown as {dict(urls)}"


def test_scripts_are_reloaded_after_script_flush(cluster, receiver):
    """DESIGN §4.1: scripts are called by SHA1 and loaded again on NOSCRIPT."""
    group = cluster()
    create(group.instances[0], job_body("flushed", receiver.hook()))
    wait_for(lambda: receiver.deliveries("flushed"), timeout=15, what="a first delivery")
    for node in group.nodes:
        assert node.cli("SCRIPT", "FLUSH") == "OK"
    flushed_ms = now_ms()
    # Deliveries go on: the next claims got NOSCRIPT and were sent again as EVAL.
    wait_for(lambda: len([d for d in receiver.deliveries("flushed")
                          if ms(d["scheduled_at"]) > flushed_ms + 1000]) >= 3,
             timeout=20, what="deliveries after SCRIPT FLUSH")
    check_fencing(receiver.deliveries())
    assert any("redis scripts reloaded" in instance.stderr() for instance in group.instances)


def test_watchdog_extends_a_lease_past_its_length(cluster, receiver):
    """DESIGN §4.3: a delivery longer than its lease keeps it through extensions, so no other
    instance starts the job meanwhile and the run is not marked lease_lost."""
    group = cluster()
    # A 3 s lease extended every second: each extension has two seconds to land, which a
    # loaded machine gives; the delivery lasts more than two leases.
    create(group.instances[0], job_body("long", receiver.hook(delay_ms=7000), lease_ms=3000,
                                        schedule="*/10 * * * * *", retry={"attempts": 1}))

    def finished():
        runs = [r for r in group.instances[0].runs(job="long") if r["status"] == "succeeded"]
        return runs[0] if runs else None
    run = wait_for(finished, timeout=40, what="a 7 s delivery to finish")
    assert run["lease_lost"] is False, run
    assert run["duration_ms"] >= 7000, run
    # While it ran (three leases long), nobody else claimed the job.
    assert len({d["run_id"] for d in receiver.deliveries("long")}) == 1


def test_node_configuration_warnings(cluster):
    """DESIGN §4.5: a lock node not set to appendfsync always / noeviction is reported."""
    group = cluster()
    node = group.nodes[0]
    node.cli("CONFIG", "SET", "appendfsync", "everysec")
    node.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    # The configuration is read when an instance connects: make them reconnect.
    node.cli("CLIENT", "KILL", "TYPE", "normal")
    node.cli("CLIENT", "KILL", "TYPE", "pubsub")

    def warned(instance):
        entry = node_entry(cluster_view(instance), node)
        return entry["up"] and entry["warnings"] and entry
    for instance in group.instances:
        entry = wait_for(lambda: warned(instance), timeout=15, what="configuration warnings")
        assert "appendfsync is everysec (want always)" in entry["warnings"], entry
        assert "maxmemory-policy is allkeys-lru (want noeviction)" in entry["warnings"], entry
    # The other nodes, configured as required, have none.
    view = cluster_view(group.instances[0])
    for other in group.nodes[1:]:
        assert node_entry(view, other)["warnings"] == []


# --------------------------------------------------------------------------
# 8. the event stream is cluster-wide
# --------------------------------------------------------------------------

def test_event_stream_carries_every_instance_s_changes(cluster, receiver):
    """One instance's /events shows catalog changes made on another, runs
    delivered by the others, and a cluster event when a node goes down and
    comes back."""
    group = cluster()
    watcher = group.instances[0]
    stream = EventStream(watcher)
    try:
        create(group.instances[1], job_body("everywhere", receiver.hook()))
        created = stream.wait("job", lambda d: d["name"] == "everywhere")
        assert created["data"]["action"] == "created"
        assert created["data"]["job"]["name"] == "everywhere"

        foreign = stream.wait("run", lambda d: d["job"] == "everywhere" and
                              d["status"] == "succeeded" and d["instance"] != watcher.name,
                              timeout=30, what="a run delivered by another instance")
        delivered = {d["run_id"]: d["instance"] for d in receiver.deliveries("everywhere")}
        assert delivered[foreign["data"]["id"]] == foreign["data"]["instance"]

        dead = group.nodes[2]
        dead.kill9()
        down = stream.wait("cluster", lambda d: node_entry(d, dead)["up"] is False,
                           what="a cluster event with the node down")
        assert down["data"]["quorum"]["healthy"] is True
        dead.start()
        stream.wait("cluster", lambda d: node_entry(d, dead)["up"] is True,
                    what="a cluster event with the node back")

        # The watcher's own runs come back to it through the shared history;
        # each state is still sent once.
        own = stream.wait("run", lambda d: d["job"] == "everywhere" and
                          d["status"] == "succeeded" and d["instance"] == watcher.name,
                          timeout=30, what="a run delivered by the watcher itself")
        time.sleep(1)  # four history reads: any echo of it would have arrived
        states = [e["data"]["status"] for e in
                  stream.of("run", lambda d: d["id"] == own["data"]["id"])]
        assert states == ["running", "succeeded"], states
    finally:
        stream.close()
