#!/usr/bin/python3
"""Benchmark (not a test): delivery lag of a standalone cronfence under load.

Starts a standalone cronfence and the reference target cronfence-receiver in
a fresh temporary directory, creates N jobs firing every second
("* * * * * *") at the receiver, waits until deliveries flow, then measures
for S seconds and prints:

  - delivery lag, slot instant -> receipt at the target (received_at -
    scheduled_at from the receiver's --log lines): p50, p90, p99, max in ms,
    over the slots of the measured window, and per part of the window (to
    show lag growing over time);
  - deliveries/s received during the window, slots expected vs delivered,
    missed slots and duplicated slots (same job and scheduled_at delivered
    twice, or re-sent and answered "duplicate" by the receiver);
  - CPU share of cronfence (per thread too) and of the receiver over the
    window, as a % of one core (utime+stime from /proc/<pid>/stat);
  - VmRSS and VmHWM of cronfence at the end;
  - bytes cronfence wrote per second (/proc/<pid>/io);
  - the /metrics counters over the window; the window's runs read back from
    GET /api/v1/runs (counts by status, and the lag split at the run's
    started_at: slot -> run started is the scheduler's share, started ->
    received the delivery's); whether runs of each status exist
    (GET /api/v1/runs?status=...&limit=1).

It never fails on the numbers; it exits non-zero only when it cannot run at
all (a binary missing, a process not starting, jobs not created).

    /usr/bin/python3 tests/bench/standalone_lag.py --bin-dir build [--jobs 1000]
        [--seconds 30] [--json] [--keep] [--no-runs] [--server-arg=--flag ...]

Timings depend on the machine and on whatever else runs on it: compare runs
made back to back on the same machine, not against fixed numbers.

Python 3.11 standard library only.
"""

import argparse
import calendar
import concurrent.futures
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
SECRET = "bench-receiver-secret-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
RUN_STATUSES = ("running", "succeeded", "failed", "fenced", "skipped", "missed", "lost")


# ---- processes --------------------------------------------------------------


class Process:
    """A child whose stdout announces 'listening on HOST:PORT' (or another ready line: a line
    starting with ready; its port, when it ends in ':PORT')."""

    def __init__(self, name, argv, workdir, ready="listening on "):
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.ready = ready
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc = None
        self.port = None
        self.stdout_lines = []

    def start(self, timeout=20.0):
        with open(self.stderr_path, "ab") as err:
            # Own session: a Ctrl-C reaches only this script, which then stops the child by pid.
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        ready = threading.Event()

        def pump():
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.stdout_lines.append(line)
                if line.startswith(self.ready) and not ready.is_set():
                    port = line.rsplit(":", 1)[-1]
                    self.port = int(port) if ":" in line and port.isdigit() else None
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start (exit {self.proc.poll()}): "
                                   f"{self.stderr_tail()}")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr_tail(self, chars=3000):
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout=40.0):
        """SIGTERM by pid; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        return self.proc.returncode


def start_receiver(bin_dir, workdir, register):
    """Starts cronfence-receiver on a free loopback port, logging every delivery to
    workdir/receiver.jsonl; register(process) is called before it starts, so that whoever
    stops the processes stops it even when it fails to start."""
    receiver = Process("receiver", [
        str(bin_dir / "cronfence-receiver"), "--listen", "127.0.0.1:0",
        "--db", str(workdir / "receiver.db"), "--secret", SECRET,
        "--log", str(workdir / "receiver.jsonl")], workdir)
    register(receiver)
    return receiver.start()


def start_cronfence(bin_dir, workdir, name, register, extra=()):
    """Starts cronfence on a free loopback port with its database workdir/<name>.db, the
    benchmark's admin token, warnings and errors only in its log, and the arguments extra;
    register as for start_receiver."""
    server = Process(name, [
        str(bin_dir / "cronfence"), "--listen", "127.0.0.1:0",
        "--db", str(workdir / f"{name}.db"), "--admin-token", ADMIN_TOKEN,
        "--log-level", "warn", *extra], workdir)
    register(server)
    return server.start()


# ---- /proc ------------------------------------------------------------------


def cpu_ticks(stat_path):
    """utime+stime in clock ticks from a /proc/.../stat file, or None when gone."""
    try:
        text = open(stat_path).read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def thread_ticks(pid):
    """{tid: (comm, ticks)} for every thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        ticks = cpu_ticks(f"/proc/{pid}/task/{tid}/stat")
        if ticks is None:
            continue
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except OSError:
            comm = "?"
        out[int(tid)] = (comm, ticks)
    return out


def memory_kb(pid):
    """{'VmRSS': kB, 'VmHWM': kB, 'Threads': n} from /proc/<pid>/status."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def io_counters(pid):
    """{'wchar', 'syscw', 'write_bytes', ...} from /proc/<pid>/io; {} when unreadable."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/io"):
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    except (OSError, ValueError):
        pass
    return out


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# ---- HTTP -------------------------------------------------------------------


def http(method, url, body=None, token=ADMIN_TOKEN, timeout=30):
    """(status, text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def create_jobs(base, hook, count, threads):
    """Creates bench-00000.. with a small thread pool; returns (names, seconds, failures)."""
    names = [f"bench-{i:05d}" for i in range(count)]

    def create(name):
        body = {"name": name, "schedule": "* * * * * *", "webhook": {"url": hook},
                "signing_secret": SECRET}
        for attempt in range(5):
            try:
                status, text = http("POST", base + "/api/v1/jobs", body)
            except OSError as error:  # connection reset, timeout
                status, text = None, str(error)
            # 409 to a retry: the attempt before created the job, its answer lost (timed out).
            if status == 201 or (status == 409 and attempt > 0):
                return None
            if status is not None and status < 500 and status != 429:
                return f"{name}: {status} {text[:200]}"
            time.sleep(0.2 * (attempt + 1))
        return f"{name}: {status} {text[:200]}"

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        failures = [f for f in pool.map(create, names) if f]
    return names, time.monotonic() - started, failures


def metrics(base):
    """The /metrics counters as {name: float}; {} when unavailable."""
    try:
        status, text = http("GET", base + "/metrics", timeout=10)
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
    return out


def status_presence(base):
    """{status: newest scheduled_at or None} from GET /api/v1/runs?status=S&limit=1."""
    out = {}
    for status in RUN_STATUSES:
        try:
            code, text = http("GET", f"{base}/api/v1/runs?status={status}&limit=1", timeout=10)
            items = json.loads(text).get("items", []) if code == 200 else None
        except (OSError, ValueError):
            items = None
        if items is None:
            out[status] = "error"
        else:
            out[status] = (items[0].get("scheduled_at") or "?") if items else None
    return out


def window_runs(base, lo_ms, hi_ms, max_pages=1000):
    """Every run whose slot is in [lo_ms, hi_ms), following cursors; None on an error."""
    runs, cursor = [], None
    for _ in range(max_pages):
        query = f"since={lo_ms}&until={hi_ms}&limit=500"
        if cursor:
            query += "&cursor=" + urllib.request.quote(cursor)
        try:
            code, text = http("GET", f"{base}/api/v1/runs?{query}", timeout=60)
            doc = json.loads(text) if code == 200 else None
        except (OSError, ValueError):
            doc = None
        if doc is None:
            return None
        runs += doc.get("items", [])
        cursor = doc.get("next_cursor")
        if not cursor:
            return runs
    return runs


def split_lag(runs, records, lo_ms, hi_ms):
    """Splits the lag at the run's started_at: slot -> started (scheduler), started -> receipt."""
    received = {(job, sched): recv for job, sched, recv, _ in records if lo_ms <= sched < hi_ms}
    to_start, to_receipt, received_to_finished = [], [], []
    for run in runs:
        if run.get("trigger") != "schedule" or not run.get("scheduled_at") or not run.get("started_at"):
            continue
        sched = parse_ms(run["scheduled_at"])
        start = parse_ms(run["started_at"])
        to_start.append(start - sched)
        recv = received.get((run.get("job"), sched))
        if recv is not None:
            to_receipt.append(recv - start)
            if run.get("finished_at"):
                received_to_finished.append(parse_ms(run["finished_at"]) - recv)
    return {"slot_to_started": lag_summary(to_start),
            "started_to_received": lag_summary(to_receipt),
            "received_to_finished": lag_summary(received_to_finished)}


# ---- the receiver's log -----------------------------------------------------

_seconds_cache = {}


def parse_ms(text):
    """RFC 3339 UTC with milliseconds ('2026-11-21T08:00:00.000Z') -> Unix ms."""
    head = text[:19]
    seconds = _seconds_cache.get(head)
    if seconds is None:
        seconds = calendar.timegm((int(head[0:4]), int(head[5:7]), int(head[8:10]),
                                   int(head[11:13]), int(head[14:16]), int(head[17:19]), 0, 0, 0))
        _seconds_cache[head] = seconds
    frac = text[19:].rstrip("Z")
    ms = int((frac[1:] + "000")[:3]) if frac.startswith(".") else 0
    return seconds * 1000 + ms


class LogTail:
    """Reads the receiver's JSON lines incrementally into (job, scheduled_ms, received_ms, attempt)."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.records = []
        self.bad_lines = 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        added = 0
        for line in lines:
            if not line:
                continue
            try:
                d = json.loads(line)
                self.records.append((d["job"], parse_ms(d["scheduled_at"]),
                                     parse_ms(d["received_at"]), d.get("attempt", 1)))
                added += 1
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
        return added


def receiver_duplicates(stderr_path, lo_ms, hi_ms):
    """Deliveries the receiver answered 'duplicate' for slots in [lo_ms, hi_ms)."""
    count = 0
    try:
        f = open(stderr_path, errors="replace")
    except FileNotFoundError:
        return 0
    with f:
        for line in f:
            if " delivery duplicate " not in line:
                continue
            key = next((p[4:] for p in line.split() if p.startswith("key=")), "")
            _, _, at = key.partition("@")
            try:
                if lo_ms <= parse_ms(at) < hi_ms:
                    count += 1
            except ValueError:
                pass
    return count


def count_lines(path, needle):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except FileNotFoundError:
        return 0


# ---- figures ----------------------------------------------------------------


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    index = math.ceil(p / 100.0 * len(sorted_values)) - 1  # nearest rank
    return sorted_values[min(len(sorted_values) - 1, max(0, index))]


def lag_summary(lags):
    lags = sorted(lags)
    if not lags:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None,
                "min_ms": None, "mean_ms": None}
    return {"count": len(lags), "min_ms": lags[0], "p50_ms": percentile(lags, 50),
            "p90_ms": percentile(lags, 90), "p99_ms": percentile(lags, 99), "max_ms": lags[-1],
            "mean_ms": round(sum(lags) / len(lags), 1)}


def drain(tail, lo_ms, hi_ms, expected):
    """Lets the window's slots arrive at the receiver: until expected of them did (and at least
    1 s passed), their count stopped growing for 2 s, or 60 s. Returns the seconds it took."""
    started = time.monotonic()
    last_count, last_change = -1, started
    count, counted = 0, 0
    while True:
        tail.poll()
        count += sum(1 for r in tail.records[counted:] if lo_ms <= r[1] < hi_ms)
        counted = len(tail.records)
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        if count >= expected and now - started >= 1:
            break
        if now - last_change >= 2 or now - started > 60:
            break
        time.sleep(0.25)
    return round(time.monotonic() - started, 1)


def analyse(records, names, lo_ms, hi_ms, seconds):
    """Lag, throughput, missed and duplicated slots for slots in [lo_ms, hi_ms)."""
    expected_slots = list(range(lo_ms, hi_ms, 1000))
    seen = {}  # job -> {slot: times}
    lags = []
    received_in_window = 0
    retried = 0
    off_grid = 0
    buckets = max(1, min(6, seconds))
    span = (hi_ms - lo_ms) / buckets
    per_bucket = [[] for _ in range(buckets)]
    per_second_max = {}
    for job, sched, recv, attempt in records:
        if lo_ms <= recv < hi_ms:
            received_in_window += 1
        if not lo_ms <= sched < hi_ms:
            continue
        if sched % 1000:
            off_grid += 1
        slots = seen.setdefault(job, {})
        slots[sched] = slots.get(sched, 0) + 1
        lag = recv - sched
        lags.append(lag)
        per_bucket[min(buckets - 1, int((sched - lo_ms) / span))].append(lag)
        per_second_max[sched] = max(per_second_max.get(sched, lag), lag)
        if attempt and attempt > 1:
            retried += 1
    expected = len(names) * len(expected_slots)
    delivered_distinct = sum(len(s) for s in seen.values())
    duplicates = sum(n - 1 for s in seen.values() for n in s.values() if n > 1)
    missed = 0
    jobs_missing = 0
    known = set(names)
    for name in names:
        got = seen.get(name, {})
        lost = sum(1 for slot in expected_slots if slot not in got)
        missed += lost
        jobs_missing += 1 if lost else 0
    unknown_jobs = sum(1 for job in seen if job not in known)
    summary = lag_summary(lags)
    trend = []
    for i, values in enumerate(per_bucket):
        s = lag_summary(values)
        trend.append({"from_s": round(i * span / 1000, 1), "to_s": round((i + 1) * span / 1000, 1),
                      "count": s["count"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                      "max_ms": s["max_ms"]})
    # Per-slot spread: how long the last delivery of each second took.
    slot_tail = sorted(per_second_max.values())
    return {
        "lag": summary,
        "lag_trend": trend,
        "slot_tail_ms": {"p50": percentile(slot_tail, 50), "max": slot_tail[-1] if slot_tail else None},
        "deliveries_per_s": round(received_in_window / seconds, 1),
        "received_in_window": received_in_window,
        "slots_expected": expected,
        "slots_delivered": delivered_distinct,
        "slots_missed": missed,
        "jobs_with_missed_slots": jobs_missing,
        "slots_duplicated": duplicates,
        "deliveries_retried": retried,
        "off_grid_scheduled_at": off_grid,
        "unknown_jobs": unknown_jobs,
    }


# ---- the run ----------------------------------------------------------------


def wait_until_wall(ms):
    while True:
        left = ms / 1000.0 - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def run(args, out):
    bin_dir = pathlib.Path(args.bin_dir).resolve()
    for name in ("cronfence", "cronfence-receiver"):
        if not (bin_dir / name).exists():
            raise RuntimeError(f"{bin_dir / name} not found (build first: make build)")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cf-bench-"))
    out["workdir"] = str(workdir)
    processes = []
    try:
        receiver = start_receiver(bin_dir, workdir, processes.append)
        server = start_cronfence(bin_dir, workdir, "cronfence", processes.append, args.server_arg)
        base = f"http://127.0.0.1:{server.port}"
        hook = f"http://127.0.0.1:{receiver.port}/hook"
        progress(args, f"cronfence pid {server.pid} on {base}, receiver pid {receiver.pid}; "
                       f"workdir {workdir}")

        names, took, failures = create_jobs(base, hook, args.jobs, args.threads)
        out["jobs"] = args.jobs
        out["jobs_created"] = len(names) - len(failures)
        out["job_creation_s"] = round(took, 2)
        out["job_creation_per_s"] = round(len(names) / took, 1) if took > 0 else None
        names = keep_created(names, failures, out)
        progress(args, f"created {len(names)} jobs in {took:.2f} s")

        tail = LogTail(workdir / "receiver.jsonl")
        out["warmup_s"], out["warmup_jobs_seen"] = warm_up(tail, names, [server], 2,
                                                           args.warmup_max)
        progress(args, f"warm-up {out['warmup_s']} s, {out['warmup_jobs_seen']} jobs delivered so far")

        # The window: whole seconds, starting at the next full second + 1.
        lo_ms = (int(time.time()) + 2) * 1000
        hi_ms = lo_ms + args.seconds * 1000
        wait_until_wall(lo_ms)
        cpu0 = (time.monotonic(), cpu_ticks(f"/proc/{server.pid}/stat"),
                cpu_ticks(f"/proc/{receiver.pid}/stat"), thread_ticks(server.pid),
                cpu_ticks("/proc/self/stat"), io_counters(server.pid))
        metrics0 = metrics(base)
        samples = []  # (seconds into window, rss kB, fds)
        # Only /proc is sampled during the window (once a second); the log is parsed after it,
        # so that this script takes as little CPU as possible from the processes measured.
        while time.time() * 1000 < hi_ms:
            mem = memory_kb(server.pid)
            samples.append((round(time.time() - lo_ms / 1000, 1), mem.get("VmRSS"),
                            open_fds(server.pid)))
            time.sleep(min(1.0, max(0.0, hi_ms / 1000 - time.time())))
        cpu1 = (time.monotonic(), cpu_ticks(f"/proc/{server.pid}/stat"),
                cpu_ticks(f"/proc/{receiver.pid}/stat"), thread_ticks(server.pid),
                cpu_ticks("/proc/self/stat"), io_counters(server.pid))
        metrics1 = metrics(base)
        wall = cpu1[0] - cpu0[0]

        out["drain_s"] = drain(tail, lo_ms, hi_ms, len(names) * args.seconds)

        out["window"] = {"from": time.strftime("%H:%M:%S", time.gmtime(lo_ms / 1000)),
                         "seconds": args.seconds}
        out.update(analyse(tail.records, names, lo_ms, hi_ms, args.seconds))
        out["receiver_duplicate_answers"] = receiver_duplicates(receiver.stderr_path, lo_ms, hi_ms)
        out["receiver_refusals"] = count_lines(receiver.stderr_path, "delivery refused")
        out["receiver_log_bad_lines"] = tail.bad_lines

        def share(a, b):
            return round(100.0 * (b - a) / CLK_TCK / wall, 1) if a is not None and b is not None else None

        out["cpu_pct_one_core"] = {"cronfence": share(cpu0[1], cpu1[1]),
                                   "receiver": share(cpu0[2], cpu1[2]),
                                   "this_script": share(cpu0[4], cpu1[4])}
        io0, io1 = cpu0[5], cpu1[5]
        if io0 and io1:
            out["cronfence_io_per_s"] = {
                "written_mb": round((io1["wchar"] - io0["wchar"]) / wall / 1e6, 2),
                "write_syscalls": round((io1["syscw"] - io0["syscw"]) / wall),
                "to_disk_mb": round((io1["write_bytes"] - io0["write_bytes"]) / wall / 1e6, 2)}
        threads = []
        for tid, (comm, ticks) in cpu1[3].items():
            before = cpu0[3].get(tid, (comm, 0))[1]
            threads.append({"tid": tid, "comm": comm, "cpu_pct": share(before, ticks)})
        threads.sort(key=lambda t: -(t["cpu_pct"] or 0))
        out["cronfence_threads"] = threads[:6]
        out["cronfence_thread_count"] = len(cpu1[3])

        mem = memory_kb(server.pid)
        out["cronfence_memory_kb"] = {"VmRSS": mem.get("VmRSS"), "VmHWM": mem.get("VmHWM")}
        out["cronfence_open_fds"] = open_fds(server.pid)
        if samples:
            out["cronfence_rss_kb_over_window"] = {"first": samples[0][1], "last": samples[-1][1]}
            out["cronfence_fds_over_window"] = {"first": samples[0][2], "last": samples[-1][2]}
        out["metrics_delta"] = {k.replace("cronfence_", ""): metrics1[k] - metrics0.get(k, 0)
                                for k in metrics1 if k.endswith("_total")}
        out["metrics_end"] = {k.replace("cronfence_", ""): v for k, v in metrics1.items()
                              if not k.endswith("_total")}
        if not args.no_runs:
            runs = window_runs(base, lo_ms, hi_ms)
            if runs is not None:
                counts = {}
                for r in runs:
                    counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
                out["window_runs_by_status"] = counts
                out["lag_split"] = split_lag(runs, tail.records, lo_ms, hi_ms)
            out["runs_newest_by_status"] = status_presence(base)
        out["cronfence_warnings"] = count_lines(server.stderr_path, " warn ")
        out["cronfence_errors"] = count_lines(server.stderr_path, " error ")
        out["cronfence_stderr_tail"] = server.stderr_tail(600).splitlines()[-4:]
    finally:
        # A second Ctrl-C must not leave a child running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in reversed(processes):
            code = process.stop()
            out.setdefault("exit_codes", {})[process.name] = code
        if args.keep:
            out["kept"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def keep_created(names, failures, out):
    """The names of the jobs created, with the first failures noted in out; raises if none."""
    if failures:
        out["job_creation_errors"] = failures[:5]
        names = [n for n in names if not any(f.startswith(n + ":") for f in failures)]
    if not names:
        raise RuntimeError(f"no job could be created: {failures[:3]}")
    return names


def warm_up(tail, names, processes, min_s, max_s):
    """Reads the receiver's log until every job was delivered at least once and min_s
    passed (at most max_s); raises when one of processes exited. Returns (seconds, jobs
    seen)."""
    started = time.monotonic()
    jobs_seen = set()
    while True:
        tail.poll()
        jobs_seen.update(r[0] for r in tail.records[-(len(names) * 3):])
        elapsed = time.monotonic() - started
        if (len(jobs_seen) >= len(names) and elapsed >= min_s) or elapsed > max_s:
            break
        for process in processes:
            if process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited ({process.proc.returncode}): "
                                   f"{process.stderr_tail()}")
        time.sleep(0.2)
    return round(time.monotonic() - started, 1), len(jobs_seen)


def progress(args, text):
    if not args.json:
        print(f"# {text}", file=sys.stderr, flush=True)


def fmt(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


def print_table(out):
    lag = out["lag"]
    rows = [
        ("jobs (created)", f"{out['jobs']} ({out['jobs_created']}) in {out['job_creation_s']} s"
                           f" = {out['job_creation_per_s']}/s"),
        ("window", f"{out['window']['seconds']} s from {out['window']['from']} UTC"
                   f" (warm-up {out['warmup_s']} s, drain {out['drain_s']} s)"),
        ("lag p50 / p90 / p99 / max", f"{fmt(lag['p50_ms'])} / {fmt(lag['p90_ms'])} / "
                                      f"{fmt(lag['p99_ms'])} / {fmt(lag['max_ms'])} ms"
                                      f"  (min {fmt(lag['min_ms'])}, mean {fmt(lag['mean_ms'])})"),
        ("lag over the window", "  ".join(
            f"[{t['from_s']:g}-{t['to_s']:g}s] p50 {fmt(t['p50_ms'])} p99 {fmt(t['p99_ms'])}"
            for t in out["lag_trend"])),
        ("last delivery of a slot", f"p50 {fmt(out['slot_tail_ms']['p50'])} ms, "
                                    f"max {fmt(out['slot_tail_ms']['max'])} ms after the slot"),
        ("deliveries/s", f"{out['deliveries_per_s']} ({out['received_in_window']} received"
                         f" in the window)"),
        ("slots expected / delivered", f"{out['slots_expected']} / {out['slots_delivered']}"),
        ("missed / duplicated slots", f"{out['slots_missed']} (jobs affected "
                                      f"{out['jobs_with_missed_slots']}) / "
                                      f"{out['slots_duplicated']} (+{out['receiver_duplicate_answers']}"
                                      f" answered 'duplicate' by the receiver)"),
        ("retried deliveries", f"{out['deliveries_retried']}; receiver refusals "
                               f"{out['receiver_refusals']}"),
        ("CPU cronfence / receiver", f"{fmt(out['cpu_pct_one_core']['cronfence'], '%')} / "
                                     f"{fmt(out['cpu_pct_one_core']['receiver'], '%')} of one core"
                                     f" (this script {fmt(out['cpu_pct_one_core']['this_script'], '%')},"
                                     f" {os.cpu_count()} CPUs)"),
        ("cronfence writes", "-" if "cronfence_io_per_s" not in out else
         f"{out['cronfence_io_per_s']['written_mb']} MB/s in {out['cronfence_io_per_s']['write_syscalls']}"
         f" write calls/s (sockets included), {out['cronfence_io_per_s']['to_disk_mb']} MB/s to disk"),
        ("cronfence busiest threads", ", ".join(
            f"{t['tid']} {t['comm']} {fmt(t['cpu_pct'], '%')}" for t in out["cronfence_threads"][:4])
            + f" ({out['cronfence_thread_count']} threads)"),
        ("cronfence RSS / HWM", f"{fmt(out['cronfence_memory_kb']['VmRSS'])} / "
                                f"{fmt(out['cronfence_memory_kb']['VmHWM'])} kB"
                                + (f" (RSS {out['cronfence_rss_kb_over_window']['first']} -> "
                                   f"{out['cronfence_rss_kb_over_window']['last']} kB over the window)"
                                   if "cronfence_rss_kb_over_window" in out else "")
                                + f", {fmt(out['cronfence_open_fds'])} fds"
                                + (f" ({out['cronfence_fds_over_window']['first']} -> "
                                   f"{out['cronfence_fds_over_window']['last']})"
                                   if "cronfence_fds_over_window" in out else "")),
        ("/metrics over the window", ", ".join(f"{k} +{v:g}" for k, v in
                                              out["metrics_delta"].items()) or "-"),
        ("/metrics at the end", ", ".join(f"{k} {v:g}" for k, v in out["metrics_end"].items()) or "-"),
    ]
    if "lag_split" in out:
        for key, label in (("slot_to_started", "lag part: slot -> run started"),
                           ("started_to_received", "lag part: started -> received"),
                           ("received_to_finished", "after: received -> run finished")):
            part = out["lag_split"][key]
            rows.append((label, f"p50 {fmt(part['p50_ms'])} / p99 {fmt(part['p99_ms'])} / "
                                f"max {fmt(part['max_ms'])} ms (n={part['count']})"))
    if "window_runs_by_status" in out:
        rows.append(("window's runs by status", ", ".join(
            f"{k} {v}" for k, v in sorted(out["window_runs_by_status"].items(), key=str)) or "-"))
    if "runs_newest_by_status" in out:
        present = [s for s, v in out["runs_newest_by_status"].items() if v]
        rows.append(("run statuses present", ", ".join(present) or "-"))
    rows.append(("cronfence warn / error lines", f"{out['cronfence_warnings']} / "
                                                 f"{out['cronfence_errors']}"))
    rows.append(("exit codes after SIGTERM", ", ".join(
        f"{k} {v}" for k, v in out.get("exit_codes", {}).items())))
    if out.get("job_creation_errors"):
        rows.append(("job creation errors", "; ".join(out["job_creation_errors"][:2])))
    width = max(len(r[0]) for r in rows)
    print(f"cronfence standalone delivery lag: {out['jobs']} jobs x '* * * * * *',"
          f" {out['window']['seconds']} s")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if out["cronfence_errors"] or out["cronfence_warnings"]:
        for line in out["cronfence_stderr_tail"]:
            print(f"    | {line[:200]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default=str(REPO / "build"),
                        help="directory holding cronfence and cronfence-receiver")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs to create (default 1000)")
    parser.add_argument("--seconds", type=int, default=30, help="measured window (default 30)")
    parser.add_argument("--threads", type=int, default=16, help="job-creation threads (default 16)")
    parser.add_argument("--warmup-max", type=float, default=60.0,
                        help="longest wait for deliveries to flow before measuring (default 60)")
    parser.add_argument("--no-runs", action="store_true",
                        help="skip reading the window's runs back from GET /api/v1/runs")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra cronfence argument, repeatable (e.g. --server-arg=--history-per-job"
                             " --server-arg=50)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.jobs < 1 or args.seconds < 1:
        parser.error("--jobs and --seconds must be at least 1")

    # Ctrl-C and SIGTERM unwind through run()'s finally, which stops both children by pid.
    # (SIGINT explicitly: a shell starting this in the background may have set it to ignored.)
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    out = {}
    try:
        run(args, out)
    except KeyboardInterrupt:
        print("interrupted; both processes stopped", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
