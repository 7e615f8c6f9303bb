#!/usr/bin/env python3
"""The chaos run of issue 11: a three-instance cronfence cluster under a
stream of real faults, then a check of the guarantees of DESIGN §1.

Starts 3 redis-server lock nodes (appendonly yes, appendfsync always,
noeviction, each in its own data directory), 3 cronfence instances in
cluster mode over them (same signing secret, each its own database and
fixed loopback port) and the independent target of target.py; creates
--jobs every-second jobs (mostly overlap forbid, some allow and queue, a
quarter of them answered only after 1.5 s); then injects a fault every
--interval seconds for --minutes, drawn by a seeded RNG among

    instance-kill   kill -9 of an instance, restarted on its db and port 2-5 s later
    instance-stop   SIGSTOP of an instance for 1-8 s, then SIGCONT
    node-kill       kill -9 of a Redis node, restarted from its AOF 1-4 s later
    node-wipe       a Redis node stopped, its data deleted, restarted empty
    two-nodes-down  kill -9 of two Redis nodes for 2-6 s, then both restarted
    instance-skew   an instance restarted with its wall clock 0.5 s ahead
                    (libfaketime) for 5-8 s, then restarted normally

Every fault, with its start and end (CLOCK_MONOTONIC and wall), and every
node or instance going down or up, is a line of faults.jsonl. Afterwards
everything is healed, the jobs are paused, the cluster is left to settle
(until no run is `running` past its lease and the histories stop changing,
within a generous bound), the instances are stopped with SIGTERM (their
databases kept) and check.py judges the run. Exit status: check.py's.

    python3 tests/chaos/run.py --bin-dir build-asan --minutes 3 --out build-asan/chaos

Every process is started by this script and stopped by its pid, also when
the run fails or is interrupted.
"""

import argparse
import datetime
import glob
import json
import os
import pathlib
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(HERE))

import check  # noqa: E402

SECRET = "chaos-signing-secret-0123456789abcdef"
PREFIX = "cf:"  # cronfence's default key prefix on the lock nodes
LEASE_MS = 10000  # every job's lease: longer than a slow delivery (1.5 s) and any SIGSTOP (8 s)
# How long a wiped node stays untrusted: twice the longest lease, as DESIGN §4.5 asks.
QUARANTINE_MS = 2 * LEASE_MS
SKEW = "+0.5s"
QUEUE_DEADLINE_MS = 5000  # starting deadline of the queue jobs: their backlog stays short
FAULTS = ("instance-kill", "instance-stop", "node-kill", "node-wipe", "two-nodes-down",
          "instance-skew")
# A file the harness writes into --out, so that a later run may clear that folder.
MARKER = "run.json"


def wall_ms():
    return int(time.time() * 1000)


def iso_ms(text):
    moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)


def is_sanitized(binary):
    """Whether binary was built with AddressSanitizer (it then names the ASan runtime)."""
    with open(binary, "rb") as file:
        return b"__asan_init" in file.read()


def faketime_library():
    """libfaketime's multi-threaded preload library, or None when not installed."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") +
                   glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


class EventLog:
    """faults.jsonl: one JSON object per line, each with "event", "mono" and "wall"."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()

    def write(self, event, **fields):
        entry = {"event": event, "mono": time.monotonic(), "wall": wall_ms()}
        entry.update(fields)
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")
        return entry

    def close(self):
        with self.lock:
            self.file.close()


class TrustWatch(threading.Thread):
    """Polls every node for its trust marker (EXISTS cf:node, DESIGN §4.5) and logs each
    change as a node_trust event. A marker that appears is dated by the last poll that
    still saw it absent (last_absent_mono), so an untrusted period read from the log
    never extends past the real one."""

    def __init__(self, nodes, events, interval=0.2):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.events = events
        self.interval = interval
        self.state = {node.name: None for node in nodes}
        self.last_absent = {node.name: None for node in nodes}
        self.socks = {}
        self.halt = threading.Event()

    def ask(self, node):
        """True/False for the marker, None when the node does not answer."""
        sock = self.socks.get(node.name)
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", node.port), timeout=0.5)
                self.socks[node.name] = sock
            key = PREFIX + "node"
            sock.sendall(f"*2\r\n$6\r\nEXISTS\r\n${len(key)}\r\n{key}\r\n".encode())
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    raise OSError("closed")
                reply += chunk
        except OSError:
            if sock is not None:
                sock.close()
            self.socks.pop(node.name, None)
            return None
        if reply.startswith(b":"):
            return reply.strip() == b":1"
        return None  # -LOADING and the like

    def run(self):
        while not self.halt.wait(self.interval):
            for node in self.nodes:
                polled_at = time.monotonic()
                present = self.ask(node)
                if present is None:
                    continue
                if not present:
                    self.last_absent[node.name] = polled_at
                if present != self.state[node.name]:
                    self.events.write("node_trust", node=node.name, trusted=present,
                                      last_absent_mono=self.last_absent[node.name],
                                      observed_mono=polled_at)
                    self.state[node.name] = present

    def all_trusted(self):
        return all(self.state[node.name] for node in self.nodes)

    def stop(self):
        self.halt.set()
        self.join(5)
        for sock in self.socks.values():
            sock.close()


class Chaos:
    """The processes of one run and the faults done to them."""

    def __init__(self, args, helpers, redisnode):
        self.args = args
        self.h = helpers  # tests/integration/conftest.py
        self.redisnode = redisnode
        self.out = args.out
        self.rng = random.Random(args.seed)
        self.events = EventLog(self.out / "faults.jsonl")
        self.nodes = []
        self.instances = []
        self.target = None
        self.trust = None
        self.monitor_halt = threading.Event()
        self.lock = threading.RLock()  # held while a process is started or stopped
        self.problems = []  # harness problems, reported by check.py
        self.jobs = []
        self.library = faketime_library()
        self.meta = {"seed": args.seed, "minutes": args.minutes, "interval_s": args.interval,
                     "sanitized": self.h.SANITIZED, "lease_ms": LEASE_MS,
                     "quarantine_ms": QUARANTINE_MS, "skew": SKEW,
                     "queue_deadline_ms": QUEUE_DEADLINE_MS,
                     "margin_ms": args.margin_ms, "faketime": self.library is not None}

    # ---- processes ---------------------------------------------------------

    def note(self, text):
        print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def problem(self, text):
        self.note("PROBLEM: " + text)
        self.problems.append(text)
        self.events.write("harness_problem", detail=text)

    def start_target(self):
        argv = [sys.executable, str(HERE / "target.py"), "--secret", SECRET,
                "--log", str(self.out / "target.jsonl")]
        self.target = self.h.Process(argv, dict(os.environ), self.out, "target")
        self.target.start()
        self.target_url = f"http://127.0.0.1:{self.target.port}"

    def start_nodes(self):
        for i in range(3):
            node = self.redisnode.RedisNode(self.out, f"redis{i}")
            node.expected_down = False
            self.nodes.append(node)
            node.start(timeout=30)

    def make_instances(self):
        redis = ",".join(node.url for node in self.nodes)
        for i in range(3):
            name = f"cf{i}"
            port = self.redisnode.free_port()
            instance = self.h.Instance(
                self.out, name=name,
                args=["--redis", redis, "--instance-id", name, "--signing-secret", SECRET,
                      "--node-quarantine-ms", str(QUARANTINE_MS)])
            instance.argv[instance.argv.index("--listen") + 1] = f"127.0.0.1:{port}"
            instance.base_argv = list(instance.argv)
            instance.base_env = dict(instance.env)
            instance.expected_down = True
            instance.crashed = False
            instance.stopped = False  # SIGSTOPped
            instance.skewed = False
            self.instances.append(instance)

    def start_instance(self, instance, skew=False, tries=5):
        """Starts instance on its db and port (under libfaketime when skew); a start that
        fails (say the port is not free again yet) is tried again a few times."""
        env = dict(instance.base_env)
        if skew:
            env["LD_PRELOAD"] = self.library
            env["FAKETIME"] = SKEW
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
            # ASan wants to come first among the preloaded libraries; here it cannot.
            options = env.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = (options + ":" if options else "") + "verify_asan_link_order=0"
        instance.env = env
        for attempt in range(tries):
            try:
                with self.lock:
                    self.events.write("instance_start", instance=instance.name, skew=skew)
                    instance.start()
                    instance.expected_down = False
                    instance.crashed = False
                    instance.stopped = False
                    instance.skewed = skew
                self.events.write("instance_up", instance=instance.name, skew=skew,
                                  pid=instance.proc.pid)
                return True
            except AssertionError as error:
                if instance.proc is not None and instance.proc.poll() is None:
                    instance.proc.kill()
                    instance.proc.wait()
                instance.proc = None
                self.note(f"{instance.name} did not start (try {attempt + 1}): "
                          f"{str(error)[-300:]}")
                time.sleep(1 + attempt)
        self.problem(f"{instance.name} could not be restarted")
        return False

    def stop_instance(self, instance, sig):
        """Stops instance with sig by its pid; returns its exit code."""
        with self.lock:
            instance.expected_down = True
            if instance.stopped and instance.proc is not None:
                os.kill(instance.proc.pid, signal.SIGCONT)
                instance.stopped = False
            pid = instance.proc.pid if instance.proc is not None else None
            try:
                code = instance.stop(sig)
            except AssertionError as error:  # did not stop: conftest killed it
                self.problem(str(error)[:300])
                code = instance.exit_code
        self.events.write("instance_down", instance=instance.name, signal=int(sig), code=code,
                          pid=pid)
        return code

    def node_down(self, node, how):
        """Takes node down (kill -9, or SIGTERM for "stop"); logged once it is dead."""
        with self.lock:
            node.expected_down = True
            if how == "stop":
                node.stop()
            else:
                node.kill9()
        self.events.write("node_down", node=node.name, how=how)

    def node_up(self, node, wipe=False):
        # Logged before the start: a down period read from the log never outlasts the real one.
        self.events.write("node_up", node=node.name, wiped=wipe)
        with self.lock:
            if wipe:
                for entry in node.dir.iterdir():
                    if entry.name == "redis.log":
                        continue  # the node's own log is kept for the post-mortem
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            for attempt in range(5):
                try:
                    node.start(timeout=30)
                    node.expected_down = False
                    return True
                except RuntimeError as error:
                    self.note(f"{node.name} did not start (try {attempt + 1}): {error}")
                    node.kill9()
                    time.sleep(1 + attempt)
        self.problem(f"{node.name} could not be restarted")
        return False

    # ---- watching ----------------------------------------------------------

    def monitor(self):
        """Notes every process that exits without the harness stopping it."""
        while not self.monitor_halt.wait(0.2):
            with self.lock:
                for instance in self.instances:
                    proc = instance.proc
                    if (proc is None or instance.expected_down or instance.crashed
                            or proc.poll() is None):
                        continue
                    instance.crashed = True
                    self.events.write("instance_exit", instance=instance.name,
                                      code=proc.returncode, pid=proc.pid, expected=False)
                    self.note(f"{instance.name} exited on its own with {proc.returncode}")
                for node in self.nodes:
                    proc = node.proc
                    if proc is None or node.expected_down or proc.poll() is None:
                        continue
                    node.expected_down = True
                    self.events.write("node_exit", node=node.name, code=proc.returncode)
                    self.events.write("node_down", node=node.name, how="exited")
                    self.problem(f"redis node {node.name} exited on its own "
                                 f"({proc.returncode})")
                if self.target is not None and not self.target.alive() and not self.stopping:
                    self.stopping = True
                    self.problem("the target exited on its own")

    def restart_crashed(self):
        for instance in self.instances:
            if instance.crashed:
                self.note(f"restarting {instance.name} after its crash")
                instance.proc = None
                self.start_instance(instance)
        for node in self.nodes:
            if node.expected_down and node.proc is not None and node.proc.poll() is not None:
                node.proc = None
                self.node_up(node)

    def cluster_view(self, instance):
        try:
            reply = instance.api("GET", "/api/v1/cluster")
        except OSError:
            return None
        return reply.json if reply.status == 200 else None

    def clock_offset(self, instance, until):
        """The clock offset of instance against the nodes as it reports it in /cluster
        (evidence that the skew took), polled until the value is known or until; None when
        it never was."""
        while time.monotonic() < until:
            view = self.cluster_view(instance)
            me = (view or {}).get("instance") or {}
            if me.get("clock_offset_ms"):
                return me["clock_offset_ms"]
            time.sleep(0.5)
        return None

    def healthy(self):
        """(ok, detail): every instance answers, sees the three as members and a quorum of
        three trusted nodes."""
        names = {instance.name for instance in self.instances}
        for instance in self.instances:
            if not instance.alive():
                return False, f"{instance.name} not running"
            view = self.cluster_view(instance)
            if view is None:
                return False, f"{instance.name} does not answer /api/v1/cluster"
            members = {m["id"] for m in view.get("members", []) if m.get("up", True)}
            quorum = view.get("quorum", {})
            if not names <= members:
                return False, f"{instance.name} sees members {sorted(members)}"
            if not quorum.get("healthy") or quorum.get("trusted") != 3:
                return False, f"{instance.name} quorum {quorum}"
        return True, "healthy"

    def wait(self, predicate, timeout, what):
        """Polls predicate() -> (ok, detail) for up to timeout*SLOW s; returns (ok, detail)."""
        deadline = time.monotonic() + timeout * self.h.SLOW
        while True:
            ok, detail = predicate()
            if ok or time.monotonic() > deadline:
                if not ok:
                    self.note(f"gave up waiting for {what}: {detail}")
                return ok, detail
            time.sleep(0.5)

    # ---- jobs --------------------------------------------------------------

    def job_plan(self):
        """(name, overlap, slow) of every job: 3 in 5 forbid, 1 allow, 1 queue; a quarter slow."""
        plan = []
        for i in range(self.args.jobs):
            overlap = ("forbid", "forbid", "forbid", "allow", "queue")[i % 5]
            slow = (i // 5) % 4 == 0
            plan.append((f"{overlap}-{'slow' if slow else 'fast'}-{i:03d}", overlap, slow))
        return plan

    def create_jobs(self):
        for index, (name, overlap, slow) in enumerate(self.job_plan()):
            body = {"name": name, "schedule": "* * * * * *", "overlap": overlap,
                    "lease_ms": LEASE_MS,
                    "webhook": {"url": f"{self.target_url}/{'slow' if slow else 'hook'}/{name}"}}
            if overlap == "queue":
                # A slow queued job falls behind by 0.5 s a slot; its backlog stays short.
                body["starting_deadline_ms"] = QUEUE_DEADLINE_MS
            instance = self.instances[index % 3]
            deadline = time.monotonic() + 60 * self.h.SLOW
            while True:
                reply = instance.api("POST", "/api/v1/jobs", body)
                if reply.status == 409:  # a retried create that had gone through
                    reply = instance.api("GET", f"/api/v1/jobs/{name}")
                if reply.status in (200, 201):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {name} not created: {reply}")
                time.sleep(0.5)
            job = reply.json
            self.jobs.append({"name": name, "overlap": overlap, "slow": slow,
                              "created_at_ms": iso_ms(job["created_at"])})
        self.note(f"created {len(self.jobs)} jobs")

    def pause_jobs(self):
        # Slots still queued or waiting when their job is paused need not fire: check.py
        # leaves the last QUEUE_DEADLINE_MS before this out of its window.
        self.meta["pause_start_wall"] = wall_ms()
        failed = []
        for index, job in enumerate(self.jobs):
            deadline = time.monotonic() + 30 * self.h.SLOW
            while True:
                instance = self.instances[index % 3]
                try:
                    reply = instance.api("POST", f"/api/v1/jobs/{job['name']}/pause")
                    if reply.status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    failed.append(job["name"])
                    break
                time.sleep(0.5)
        if failed:
            self.problem(f"{len(failed)} jobs could not be paused, first {failed[:5]}")
        self.events.write("jobs_paused", failed=failed)

    # ---- faults ------------------------------------------------------------

    def choose(self):
        kinds = [kind for kind in FAULTS if kind != "instance-skew" or self.library]
        while True:
            kind = self.rng.choice(kinds)
            if kind == "node-wipe" and not (self.trust.all_trusted() and
                                            all(n.running() for n in self.nodes)):
                # A second node wiped before the first is repaired would leave fewer than
                # a quorum of trusted nodes to repair from: outside what DESIGN promises.
                self.events.write("fault_redrawn", fault=kind,
                                  reason="a node is untrusted or down")
                continue
            return kind

    def inject(self, kind):
        rng = self.rng
        start_mono, start_wall = time.monotonic(), wall_ms()
        record = {"fault": kind, "start_mono": start_mono, "start_wall": start_wall}
        try:
            if kind == "instance-kill":
                instance = rng.choice(self.instances)
                down = rng.uniform(2, 5)
                record.update(targets=[instance.name], down_s=round(down, 2))
                self.stop_instance(instance, signal.SIGKILL)
                time.sleep(down)
                self.start_instance(instance)
            elif kind == "instance-stop":
                instance = rng.choice(self.instances)
                pause = rng.uniform(1, 8)
                record.update(targets=[instance.name], paused_s=round(pause, 2))
                with self.lock:
                    os.kill(instance.proc.pid, signal.SIGSTOP)
                    instance.stopped = True
                self.events.write("instance_sigstop", instance=instance.name)
                time.sleep(pause)
                with self.lock:
                    if instance.proc is not None:
                        os.kill(instance.proc.pid, signal.SIGCONT)
                    instance.stopped = False
                self.events.write("instance_sigcont", instance=instance.name)
            elif kind == "node-kill":
                node = rng.choice(self.nodes)
                down = rng.uniform(1, 4)
                record.update(targets=[node.name], down_s=round(down, 2))
                self.node_down(node, "kill9")
                time.sleep(down)
                self.node_up(node)
            elif kind == "node-wipe":
                node = rng.choice(self.nodes)
                record.update(targets=[node.name])
                self.node_down(node, "stop")
                self.node_up(node, wipe=True)
            elif kind == "two-nodes-down":
                pair = rng.sample(self.nodes, 2)
                down = rng.uniform(2, 6)
                record.update(targets=[node.name for node in pair], down_s=round(down, 2))
                for node in pair:
                    self.node_down(node, "kill9")
                time.sleep(down)
                for node in pair:
                    self.node_up(node)
            elif kind == "instance-skew":
                instance = rng.choice(self.instances)
                skewed = rng.uniform(5, 8)
                record.update(targets=[instance.name], skew=SKEW, skewed_s=round(skewed, 2))
                self.stop_instance(instance, signal.SIGTERM)
                if self.start_instance(instance, skew=True):
                    until = time.monotonic() + skewed
                    record["observed_offset_ms"] = self.clock_offset(instance, until)
                    time.sleep(max(0.0, until - time.monotonic()))
                    self.stop_instance(instance, signal.SIGTERM)
                self.start_instance(instance)
            record["ok"] = True
        except Exception as error:  # noqa: BLE001 - logged, the run goes on
            record.update(ok=False, error=repr(error))
            self.problem(f"fault {kind} failed: {error!r}")
        record.update(end_mono=time.monotonic(), end_wall=wall_ms())
        self.events.write("fault", **record)
        self.note(f"fault {kind} on {','.join(record.get('targets', []))} "
                  f"({record['end_mono'] - start_mono:.1f} s)")

    # ---- the run -----------------------------------------------------------

    stopping = False

    def heal(self):
        with self.lock:
            for instance in self.instances:
                if instance.stopped and instance.proc is not None:
                    os.kill(instance.proc.pid, signal.SIGCONT)
                    instance.stopped = False
        for node in self.nodes:
            if not node.running():
                node.proc = None
                self.node_up(node)
        for instance in self.instances:
            if instance.skewed and instance.alive():
                self.stop_instance(instance, signal.SIGTERM)
            if not instance.alive():
                instance.proc = None
                self.start_instance(instance)
        self.events.write("healed")

    def fingerprint(self):
        """Per instance: (rows, a digest of their states, runs `running` past the lease)."""
        prints = {}
        now = wall_ms()
        for instance in self.instances:
            try:
                conn = sqlite3.connect(f"file:{instance.db}?mode=ro", uri=True, timeout=10)
                try:
                    prints[instance.name] = conn.execute(
                        "SELECT count(*), total(coalesce(fencing_token, 0)),"
                        " total(coalesce(finished_at, 0)), total(attempts),"
                        " total(length(status) * (status = 'running')),"
                        " sum(status = 'running' AND coalesce(started_at, scheduled_at, 0) < ?)"
                        " FROM runs", (now - LEASE_MS,)).fetchone()
                finally:
                    conn.close()
            except sqlite3.Error as error:
                prints[instance.name] = ("error", str(error))
        return prints

    def settle(self):
        """Waits until no run is running past its lease and the histories have not changed
        for a while (or, with runs stuck running, have not changed for much longer)."""
        started = time.monotonic()
        bound = self.args.settle_s * self.h.SLOW
        last, since = None, time.monotonic()
        while True:
            prints = self.fingerprint()
            now = time.monotonic()
            if prints != last:
                last, since = prints, now
            stuck = sum((p[5] or 0) for p in prints.values() if p and p[0] != "error")
            quiet = now - since
            if (stuck == 0 and quiet >= 10) or quiet >= 45:
                break
            if now - started > bound:
                self.note("settle bound reached; the histories still change")
                break
            time.sleep(1)
        result = {"seconds": round(time.monotonic() - started, 1), "quiet_s": round(quiet, 1),
                  "stuck_running": stuck}
        self.events.write("settled", **result)
        self.note(f"settled after {result['seconds']} s ({stuck} runs still running past "
                  f"their lease)")
        return result

    def run(self):
        self.start_target()
        self.start_nodes()
        self.trust = TrustWatch(self.nodes, self.events)
        self.make_instances()
        for instance in self.instances:
            self.start_instance(instance)
            if not instance.alive():
                raise RuntimeError(f"{instance.name} did not start")
        ok, detail = self.wait(self.healthy, 60, "the cluster to form")
        if not ok:
            raise RuntimeError(f"the cluster did not form: {detail}")
        self.trust.start()
        threading.Thread(target=self.monitor, daemon=True).start()
        self.note(f"cluster up: nodes {[n.port for n in self.nodes]}, instances "
                  f"{[i.url for i in self.instances]}, target {self.target_url}, "
                  f"seed {self.args.seed}")
        if not self.library:
            self.note("NOTICE: libfaketime not installed (Debian package faketime): the "
                      "instance-skew fault is skipped")
            self.events.write("notice", detail="faketime missing, instance-skew skipped")

        self.create_jobs()
        self.meta["jobs"] = self.jobs
        phase_start = time.monotonic()
        self.meta["faults_start_mono"], self.meta["faults_start_wall"] = phase_start, wall_ms()
        phase_end = phase_start + self.args.minutes * 60
        tick, overrun = 1, 0
        while phase_start + tick * self.args.interval < phase_end:
            at = phase_start + tick * self.args.interval
            while time.monotonic() < at:
                time.sleep(min(0.2, max(0.0, at - time.monotonic())))
            self.restart_crashed()
            self.inject(self.choose())
            tick += 1
            # A fault that overran its interval delays the next one, never stacks on it;
            # the ticks it took are counted, so the check expects no fault there.
            late = max(tick, int((time.monotonic() - phase_start) // self.args.interval) + 1)
            overrun += sum(1 for t in range(tick, late)
                           if phase_start + t * self.args.interval < phase_end)
            tick = late
        self.meta["ticks_overrun"] = overrun
        while time.monotonic() < phase_end:
            time.sleep(0.2)
        self.meta["faults_end_mono"], self.meta["faults_end_wall"] = time.monotonic(), wall_ms()
        self.note("fault phase over; healing")

        self.restart_crashed()
        self.heal()
        bound = QUARANTINE_MS / 1000 + 90
        ok, detail = self.wait(self.healthy, bound, "the cluster to heal")
        self.meta["healed"] = {"ok": ok, "detail": detail}
        if not ok:
            self.problem(f"the cluster did not heal within {bound * self.h.SLOW:.0f} s: {detail}")
        self.pause_jobs()
        self.meta["settle"] = self.settle()

    def shutdown(self):
        """Stops every process by its pid: instances with SIGTERM (their exit codes are
        recorded), then the target and the nodes. Safe to call more than once."""
        self.stopping = True
        self.monitor_halt.set()
        if self.trust is not None and self.trust.is_alive():
            self.trust.stop()
        for instance in self.instances:
            if instance.proc is None:
                continue
            code = self.stop_instance(instance, signal.SIGTERM)
            self.events.write("stop", instance=instance.name, code=code)
        if self.target is not None and self.target.proc is not None:
            try:
                self.target.stop(signal.SIGTERM, timeout=20)
            except AssertionError as error:
                self.problem(str(error)[:300])
        for node in self.nodes:
            node.stop()

    def kill_all(self):
        """Last resort after an error: kill -9 by pid whatever still runs."""
        for process in [*self.instances, self.target]:
            if process is not None and process.proc is not None and process.proc.poll() is None:
                os.kill(process.proc.pid, signal.SIGCONT)
                process.proc.kill()
                process.proc.wait()
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.kill9()

    def write_meta(self):
        self.meta["instances"] = [{"name": i.name, "db": i.db.name,
                                   "stderr": i.stderr_path.name, "url": i.url}
                                  for i in self.instances]
        self.meta["nodes"] = [{"name": n.name, "port": n.port} for n in self.nodes]
        self.meta["problems"] = self.problems
        (self.out / MARKER).write_text(json.dumps(self.meta, indent=2) + "\n")


def prepare_out(out):
    """Creates --out; a folder left by an earlier chaos run is emptied first, any other
    non-empty folder is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists() and not (out / "faults.jsonl").exists():
            sys.exit(f"run.py: {out} is not empty and not the output of a chaos run")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", required=True, type=pathlib.Path,
                        help="folder with cronfence and cronfence-receiver")
    parser.add_argument("--minutes", type=float, default=10, help="length of the fault phase")
    parser.add_argument("--out", required=True, type=pathlib.Path,
                        help="folder for logs, databases and the report (emptied first)")
    parser.add_argument("--seed", type=int, default=None, help="fault RNG seed (default: random)")
    parser.add_argument("--jobs", type=int, default=200, help="number of every-second jobs")
    parser.add_argument("--interval", type=float, default=10, help="seconds between faults")
    parser.add_argument("--margin-ms", type=int, default=10000,
                        help="slots this close to job creation or to the end of the fault "
                             "phase are not required to be explained")
    parser.add_argument("--settle-s", type=float, default=240,
                        help="bound of the wait for the histories to settle")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    args.out = args.out.resolve()
    bin_dir = args.bin_dir.resolve()
    if not (bin_dir / "cronfence").is_file():
        sys.exit(f"run.py: no cronfence binary in {bin_dir}")
    prepare_out(args.out)

    # The integration suites' helpers read these when imported.
    os.environ["CRONFENCE_BIN_DIR"] = str(bin_dir)
    os.environ.pop("CRONFENCE_CONTRACT_LOG", None)
    if is_sanitized(bin_dir / "cronfence"):
        os.environ["CRONFENCE_SANITIZED"] = "1"
        os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    import conftest
    import redisnode

    conftest.BIN_DIR = bin_dir
    print(f"chaos run: {args.minutes} min of faults every {args.interval} s, {args.jobs} jobs, "
          f"seed {args.seed}, binaries {bin_dir}{' (sanitized)' if conftest.SANITIZED else ''}, "
          f"output {args.out}", flush=True)

    chaos = Chaos(args, conftest, redisnode)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    completed = False
    try:
        chaos.run()
        completed = True
    except KeyboardInterrupt:
        chaos.problem("interrupted")
    except Exception as error:  # noqa: BLE001 - reported, then the processes are stopped
        chaos.problem(f"run failed: {error!r}")
    finally:
        try:
            chaos.shutdown()
        finally:
            chaos.kill_all()
            chaos.meta["completed"] = completed
            chaos.write_meta()
            chaos.events.close()
    return check.main(["--out", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
