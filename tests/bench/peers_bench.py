#!/usr/bin/python3
"""Benchmark (not a test): cronfence beside its peers, node-redlock and BullMQ.

The peers come from npm, pinned in tests/bench/peers/package-lock.json
(`make bench-deps`); everything runs on this machine in this one run, one
system after the other, each on fresh redis-server processes with the
persistence of lock nodes (appendonly yes, appendfsync always):

  (a) claims: cronfence's claim path (tests/tools/cf_claimer: claim + commit,
      then release, each claim on a slot of its own) and node-redlock
      (acquire, then release, each on a resource of its own;
      peers/redlock_bench.mjs) on the same three nodes, at concurrency 1 and
      at --concurrency: completed claims (acquisitions) per second, and the
      latency of claim() (acquire()) p50 / p99;

  (b) N jobs firing every second ("* * * * * *") on cronfence standalone
      (plus cronfence-receiver as the webhook target), cronfence 3+3 (three
      instances on three nodes, the same receiver) and BullMQ (one Redis, one
      job scheduler a job, three worker processes of peers/bullmq_bench.mjs
      with an empty processor). After a warm-up (every job fired once), for S
      seconds:
        - lag, slot -> the job's work starting: for cronfence the webhook's
          receipt at the target (received_at - scheduled_at), for BullMQ the
          processor's start (the slot is in the job's id): p50 / p99;
        - missed slots: slots of the window a job did not fire in;
        - CPU-seconds per 1,000 firings: utime+stime of every process of the
          system (the target excluded: it is the work, and BullMQ's processor
          is empty), and of each process;
        - RSS of each process at the end of the window (the system's sum
          without the target);
        - Redis commands per firing: the `calls` of INFO commandstats summed
          over the system's nodes (commands run by Lua scripts included), both
          ends of the window, divided by the firings.

With --contention, two busy loops (one process each, started and stopped by
pid) take the CPUs for the whole run.

One table is printed, with a ratio column cronfence / peer per figure (below
1 is less time, fewer commands, less CPU or memory for cronfence; above 1
is more claims per second for cronfence on the throughput rows).

It never fails on the numbers; it exits non-zero only when it cannot run at
all (a binary or the peers missing, a process not starting, no job created).

    /usr/bin/python3 tests/bench/peers_bench.py --bin-dir build [--jobs 1000]
        [--seconds 30] [--contention] [--json]

Timings depend on the machine and on whatever else runs on it: compare the
columns of one run, not runs of different machines.

Python 3.11 standard library only; processes, logs and figures are those of
standalone_lag.py and cluster_bench.py, the Redis nodes those of the
integration tests.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))
from redisnode import start_nodes  # noqa: E402
from standalone_lag import (CLK_TCK, LogTail, Process, analyse, cpu_ticks, create_jobs,  # noqa: E402
                            drain, keep_created, memory_kb, start_cronfence, start_receiver,
                            wait_until_wall, warm_up)
from cluster_bench import (add_options, can_run, claim_figures, commandstats, fmt,  # noqa: E402
                           interrupt_on_signals, progress, run_claimer, start_cluster,
                           stop_all)

PEERS = HERE / "peers"
NODE = shutil.which("node") or "/usr/bin/node"


# ---- (a) claims -------------------------------------------------------------


def run_redlock(workdir, urls, ops, concurrency, timeout):
    """Runs peers/redlock_bench.mjs to completion; returns its JSON figures."""
    with open(workdir / f"redlock-c{concurrency}.stderr", "wb") as err:
        done = subprocess.run(
            [NODE, str(PEERS / "redlock_bench.mjs"), "--redis", urls, "--concurrency",
             str(concurrency), "--ops", str(ops)],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            timeout=timeout, start_new_session=True)
    if done.returncode != 0:
        tail = (workdir / f"redlock-c{concurrency}.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redlock_bench.mjs exited {done.returncode}: {tail}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def part_claims(args, bin_dir, workdir, out):
    nodes = start_nodes(workdir / "claim-nodes", 3)
    try:
        urls = ",".join(node.url for node in nodes)
        for concurrency, claims in ((1, args.latency_claims),
                                    (args.concurrency, args.throughput_claims)):
            progress(f"claims at concurrency {concurrency}: {claims} by cf_claimer, "
                     f"then by node-redlock")
            cf = claim_figures(run_claimer(bin_dir, workdir, urls, f"claims-c{concurrency}",
                                           claims, concurrency, args.claim_timeout))
            redlock = run_redlock(workdir, urls, claims, concurrency, args.claim_timeout)
            out.setdefault("claims", []).append(
                {"concurrency": concurrency, "cronfence": cf, "redlock": redlock})
    finally:
        for node in nodes:
            node.stop()


# ---- (b) every-second jobs ----------------------------------------------------


class System:
    """A scheduler at work: its processes ({label: pid}), the log of its firings (a LogTail of
    receiver-format lines), its jobs' names, the processes warm_up watches, its Redis nodes,
    and the labels of processes that are the target rather than the scheduler."""

    def __init__(self, name, pids, tail, names, watched, nodes=(), targets=()):
        self.name = name
        self.pids = pids
        self.tail = tail
        self.names = names
        self.watched = watched
        self.nodes = list(nodes)
        self.targets = set(targets)


def cronfence_jobs(args, server, receiver, out):
    """Creates args.jobs every-second jobs on server delivering to receiver; their names."""
    names, took, failures = create_jobs(f"http://127.0.0.1:{server.port}",
                                        f"http://127.0.0.1:{receiver.port}/hook",
                                        args.jobs, args.threads)
    out["job_creation_s"] = round(took, 2)
    return keep_created(names, failures, out)


def start_standalone(args, bin_dir, workdir, processes, out):
    register = lambda p: processes.append(("process", p))  # noqa: E731
    receiver = start_receiver(bin_dir, workdir, register)
    server = start_cronfence(bin_dir, workdir, "cronfence", register)
    names = cronfence_jobs(args, server, receiver, out)
    return System("cronfence standalone", {"cronfence": server.pid, "receiver": receiver.pid},
                  LogTail(workdir / "receiver.jsonl"), names, [server, receiver],
                  targets=["receiver"])


def start_cronfence_cluster(args, bin_dir, workdir, processes, out):
    nodes, receiver, instances = start_cluster(bin_dir, workdir, processes, args.ready_max)
    names = cronfence_jobs(args, instances[0], receiver, out)
    pids = {i.name: i.pid for i in instances}
    pids.update({f"redis{n}": node.proc.pid for n, node in enumerate(nodes)})
    pids["receiver"] = receiver.pid
    return System("cronfence 3+3", pids, LogTail(workdir / "receiver.jsonl"), names,
                  instances + [receiver], nodes, targets=["receiver"])


def start_bullmq(args, bin_dir, workdir, processes, out):
    nodes = start_nodes(workdir / "bullmq-redis", 1)
    processes.append(("nodes", nodes))
    script = str(PEERS / "bullmq_bench.mjs")
    done = subprocess.run([NODE, script, "schedule", "--redis", nodes[0].url, "--jobs",
                           str(args.jobs)], cwd=workdir, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=300, start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"bullmq_bench.mjs schedule exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    out["job_creation_s"] = json.loads(done.stdout.decode().strip().splitlines()[-1])["seconds"]
    workers = []
    for i in range(args.workers):
        worker = Process(f"bullmq-worker{i}", [
            NODE, script, "worker", "--redis", nodes[0].url, "--log", str(workdir / "workers.jsonl"),
            "--id", f"worker{i}", "--concurrency", str(args.worker_concurrency)],
            workdir, ready="ready ")
        processes.append(("process", worker))
        workers.append(worker.start())
    pids = {w.name: w.pid for w in workers}
    pids["redis"] = nodes[0].proc.pid
    names = [f"bench-{i:05d}" for i in range(args.jobs)]
    return System(f"BullMQ {args.workers}w+1r", pids, LogTail(workdir / "workers.jsonl"),
                  names, workers, nodes)


def measure(args, system, out):
    """Warm-up, then the window: firings, lag, CPU, RSS and Redis commands, into out."""
    out["warmup_s"], out["warmup_jobs_seen"] = warm_up(system.tail, system.names, system.watched,
                                                       3, args.warmup_max)
    progress(f"{system.name}: warm-up {out['warmup_s']} s, {out['warmup_jobs_seen']} jobs fired")
    lo_ms = (int(time.time()) + 2) * 1000
    hi_ms = lo_ms + args.seconds * 1000
    wait_until_wall(lo_ms)
    stats0 = commandstats(system.nodes)
    ticks0 = {label: cpu_ticks(f"/proc/{pid}/stat") for label, pid in system.pids.items()}
    wait_until_wall(hi_ms)
    stats1 = commandstats(system.nodes)
    ticks1 = {label: cpu_ticks(f"/proc/{pid}/stat") for label, pid in system.pids.items()}
    rss = {label: memory_kb(pid).get("VmRSS") for label, pid in system.pids.items()}
    out["drain_s"] = drain(system.tail, lo_ms, hi_ms, len(system.names) * args.seconds)

    figures = analyse(system.tail.records, system.names, lo_ms, hi_ms, args.seconds)
    firings = figures["slots_delivered"]
    out.update({"jobs": len(system.names), "lag": figures["lag"], "firings": firings,
                "slots_expected": figures["slots_expected"], "missed": figures["slots_missed"],
                "duplicated": figures["slots_duplicated"]})

    def per_thousand(seconds):
        return round(seconds * 1000 / firings, 3) if firings and seconds is not None else None

    cpu = {label: (ticks1[label] - ticks0[label]) / CLK_TCK
           if ticks0[label] is not None and ticks1[label] is not None else None
           for label in system.pids}
    out["cpu_s_system"] = round(sum(s or 0 for label, s in cpu.items()
                                    if label not in system.targets), 2)
    out["cpu_s_per_1000"] = {label: per_thousand(s) for label, s in cpu.items()}
    out["cpu_s_per_1000_system"] = per_thousand(sum(s or 0 for label, s in cpu.items()
                                                    if label not in system.targets))
    out["rss_kb"] = rss
    out["rss_kb_system"] = sum(kb or 0 for label, kb in rss.items()
                               if label not in system.targets)
    if system.nodes:
        calls = sum(stats1.values()) - sum(stats0.values())
        out["redis_calls"] = calls
        out["redis_calls_per_firing"] = round(calls / firings, 2) if firings else None


def part_jobs(args, bin_dir, workdir, out):
    for key, start in (("standalone", start_standalone), ("cluster", start_cronfence_cluster),
                       ("bullmq", start_bullmq)):
        sysdir = workdir / key
        sysdir.mkdir()
        processes = []
        figures = out.setdefault("jobs", {}).setdefault(key, {})
        try:
            system = start(args, bin_dir, sysdir, processes, figures)
            figures["name"] = system.name
            progress(f"{system.name}: {len(system.names)} jobs, pids {system.pids}")
            measure(args, system, figures)
        finally:
            stop_all(processes, figures)


# ---- output -----------------------------------------------------------------


def ratio(ours, theirs):
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def print_table(args, out):
    rows = []  # (figure, [values...], [ratios...])
    for claims in out.get("claims", []):
        c, cf, rl = claims["concurrency"], claims["cronfence"], claims["redlock"]
        rows.append((f"claims/s, concurrency {c}", [cf["committed_per_s"], rl["ops_per_s"]],
                     [ratio(cf["committed_per_s"], rl["ops_per_s"])]))
        for p in ("p50", "p99"):
            rows.append((f"claim latency {p} ms, concurrency {c}",
                         [cf[f"{p}_ms"], rl[f"acquire_{p}_ms"]],
                         [ratio(cf[f"{p}_ms"], rl[f"acquire_{p}_ms"])]))
    width = 44
    title = (f"cronfence vs peers on {os.cpu_count()} CPUs"
             + (", under contention (two busy loops)" if args.contention else "")
             + f"; load average at start {out['load_start']:.2f}, at end {out['load_end']:.2f}")
    print(title)
    if rows:
        print(f"\n  {'claims (3 nodes, appendfsync always)':<{width}}{'cronfence':>12}"
              f"{'redlock':>12}{'ratio':>8}")
        for name, values, ratios in rows:
            print(f"  {name:<{width}}" + "".join(f"{fmt(v):>12}" for v in values)
                  + "".join(f"{r:>8}" for r in ratios))
    jobs = out.get("jobs", {})
    if {"standalone", "cluster", "bullmq"} <= jobs.keys() and "lag" in jobs["bullmq"]:
        sa, cl, bq = jobs["standalone"], jobs["cluster"], jobs["bullmq"]
        rows = [  # (figure, its value in a system's figures); no ratio for the first two
            ("jobs (every second)", lambda f: f.get("jobs")),
            ("firings in the window", lambda f: f.get("firings")),
            ("lag p50 ms", lambda f: f["lag"]["p50_ms"]),
            ("lag p99 ms", lambda f: f["lag"]["p99_ms"]),
            ("missed slots", lambda f: f.get("missed")),
            ("duplicated slots", lambda f: f.get("duplicated")),
            ("CPU-s per 1,000 firings (system)", lambda f: f.get("cpu_s_per_1000_system")),
            ("CPU-s in the window (system)", lambda f: f.get("cpu_s_system")),
            ("RSS MB (system)", lambda f: round(f["rss_kb_system"] / 1024, 1)),
            ("Redis commands per firing", lambda f: f.get("redis_calls_per_firing")),
        ]
        print(f"\n  {f'{args.jobs} jobs x every second, {args.seconds} s':<{width}}"
              f"{'standalone':>12}{'cf 3+3':>12}{bq['name']:>14}{'sa/BQ':>8}{'3+3/BQ':>8}")
        for name, get in rows:
            values = [get(sa), get(cl), get(bq)]
            ratios = ["", ""] if get in (rows[0][1], rows[1][1]) else \
                [ratio(values[0], values[2]), ratio(values[1], values[2])]
            print(f"  {name:<{width}}{fmt(values[0]):>12}{fmt(values[1]):>12}{fmt(values[2]):>14}"
                  + "".join(f"{r:>8}" for r in ratios))
        print("\n  per process: CPU-s per 1,000 firings / RSS MB (the receiver is the target, "
              "outside the system's sums)")
        for figures in (sa, cl, bq):
            print(f"    {figures['name']}: " + ", ".join(
                f"{label} {fmt(figures['cpu_s_per_1000'][label])} / "
                f"{fmt(round(kb / 1024, 1) if kb else None)}"
                for label, kb in figures["rss_kb"].items()))
        for figures in (sa, cl, bq):
            if figures.get("job_creation_errors"):
                print(f"  {figures['name']}: job creation failed for {args.jobs - figures['jobs']}"
                      f" jobs, first: {figures['job_creation_errors'][0][:160]}")
        print("  lag: slot -> webhook received by the target (cronfence), slot -> processor "
              "started (BullMQ);\n  every Redis, BullMQ's too: appendonly yes, appendfsync always")
    elif jobs:
        print("\n  jobs: not every system ran; see --json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, 1000, 5000)
    parser.add_argument("--workers", type=int, default=3, help="BullMQ worker processes (default 3)")
    parser.add_argument("--worker-concurrency", type=int, default=50,
                        help="jobs each BullMQ worker runs at once (default 50)")
    parser.add_argument("--contention", action="store_true",
                        help="run everything beside two busy loops")
    parser.add_argument("--skip-jobs", action="store_true", help="skip (b), the jobs")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if min(args.jobs, args.seconds, args.latency_claims, args.throughput_claims,
           args.concurrency, args.workers, args.worker_concurrency) < 1:
        parser.error("the counts and --seconds must be at least 1")

    bin_dir = pathlib.Path(args.bin_dir).resolve()
    needed = [bin_dir / n for n in ("cf_claimer", "cronfence", "cronfence-receiver")]
    needed += [pathlib.Path(NODE), PEERS / "node_modules" / "redlock",
               PEERS / "node_modules" / "bullmq"]
    if not can_run(needed, "make build bench-deps"):
        return 2
    # Ctrl-C and SIGTERM unwind through the finally blocks, which stop every child by pid.
    interrupt_on_signals()

    # Whatever else runs on the machine shows in the load average (1 minute) at both ends.
    out = {"contention": args.contention, "cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}
    busy = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cf-peers-bench-"))
    code = 0
    try:
        if args.contention:
            for i in range(2):
                loop = Process(f"busy{i}", [sys.executable, "-c",
                                            "print('busy', flush=True)\nwhile True: pass"],
                               workdir, ready="busy")
                busy.append(("process", loop))
                loop.start()
            progress(f"busy loops {[p.pid for _, p in busy]}")
        if not args.skip_claims:
            part_claims(args, bin_dir, workdir, out)
        if not args.skip_jobs:
            part_jobs(args, bin_dir, workdir, out)
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        code = 130
    except (RuntimeError, subprocess.SubprocessError, ValueError) as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        code = 2
    finally:
        # A second Ctrl-C must not leave a child running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(busy, {})
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out["load_end"] = os.getloadavg()[0]
    if code == 0:
        if args.json:
            print(json.dumps(out, sort_keys=True))
        else:
            print_table(args, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
