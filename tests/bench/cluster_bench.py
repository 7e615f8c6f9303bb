#!/usr/bin/python3
"""Benchmark (not a test): the cluster coordinator and a 3-instance cluster.

Part 1, the claim path alone (DESIGN §4.2): three real redis-server nodes
(appendonly yes, appendfsync always) and tests/tools/cf_claimer, which calls
the coordinator's claim() directly, each claim on its own slot of one job
(so claims never wait for a lock but all share the job's fencing counter):

  - claim latency, both rounds (claim + commit), claim() and nothing else:
    p50 / p99 over the committed claims at concurrency 1;
  - committed claims/s at concurrency 50 (claims of one process queue on the
    coordinator, which serialises its rounds), with their latency.

Part 2, a cluster at work: three fresh nodes, three cronfence instances on
them (--redis, each with its own --db) and one cronfence-receiver; N jobs
firing every second ("* * * * * *") are created through the API, deliveries
flow until every job has been delivered, then for S seconds:

  - delivery lag, slot instant -> receipt at the target (received_at -
    scheduled_at from the receiver's --log lines): p50 / p99 / max;
  - deliveries/s, slots expected vs delivered, duplicated slots (same job and
    instant delivered twice, or answered "duplicate" by the receiver: should
    be 0), deliveries per instance;
  - Redis commands per firing: the sum of `calls` of INFO commandstats over
    the three nodes, taken at both ends of the window, divided by the slots
    delivered in the window (commands run inside Lua scripts are counted by
    Redis as well as the EVALSHA that ran them; both are shown);
  - CPU of the instances and of the nodes over the window, % of one core.

It never fails on the numbers; it exits non-zero only when it cannot run at
all (a binary missing, a process not starting, no job created).

    /usr/bin/python3 tests/bench/cluster_bench.py --bin-dir build [--jobs 1000]
        [--seconds 30] [--latency-claims 2000] [--throughput-claims 20000]

Timings depend on the machine and on whatever else runs on it: compare runs
made back to back on the same machine, not against fixed numbers.

Python 3.11 standard library only; the processes and log helpers are those
of standalone_lag.py, the Redis nodes those of the integration tests.
"""

import argparse
import collections
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
from standalone_lag import (CLK_TCK, LogTail, analyse, cpu_ticks, create_jobs,  # noqa: E402
                            drain, http, keep_created, parse_ms, percentile,
                            receiver_duplicates, start_cronfence, start_receiver,
                            wait_until_wall, warm_up, window_runs)

CF_OK = 0


def progress(text):
    print(f"# {text}", file=sys.stderr, flush=True)


def fmt(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


# ---- part 1: cf_claimer -----------------------------------------------------


def run_claimer(bin_dir, workdir, urls, name, claims, concurrency, timeout):
    """Runs one cf_claimer to completion; returns its [(start_ns, end_ns, result, token)]."""
    out = workdir / f"{name}.claims"
    with open(workdir / f"{name}.stderr", "wb") as err:
        # Own session: a Ctrl-C reaches only this script; run() kills the child by pid on any
        # exception, the KeyboardInterrupt included.
        done = subprocess.run(
            [str(bin_dir / "cf_claimer"), "--redis", urls, "--job", "bench", "--claims",
             str(claims), "--concurrency", str(concurrency), "--out", str(out),
             "--instance-id", name],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env=dict(os.environ, TMPDIR=str(workdir)), timeout=timeout, start_new_session=True)
    if done.returncode != 0:
        tail = (workdir / f"{name}.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"cf_claimer exited {done.returncode}: {tail}")
    records = []
    for line in out.read_text().splitlines():
        start, end, result, token = (int(field) for field in line.split())
        records.append((start, end, result, token))
    return records


def claim_figures(records):
    """Latency of committed claims (ms), committed claims/s over the run, result counts."""
    committed = [r for r in records if r[2] == CF_OK]
    latencies = sorted((r[1] - r[0]) / 1e6 for r in committed)
    span_s = (max(r[1] for r in records) - min(r[0] for r in records)) / 1e9 if records else 0
    return {
        "claims": len(records),
        "committed": len(committed),
        "results": dict(collections.Counter(r[2] for r in records)),
        "p50_ms": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 3) if latencies else None,
        "max_ms": round(latencies[-1], 3) if latencies else None,
        "span_s": round(span_s, 2),
        "committed_per_s": round(len(committed) / span_s, 1) if span_s > 0 else None,
    }


def part_claims(args, bin_dir, workdir, out):
    nodes = start_nodes(workdir / "claim-nodes", 3)
    try:
        urls = ",".join(node.url for node in nodes)
        progress(f"claims at concurrency 1: {args.latency_claims}")
        out["claims_c1"] = claim_figures(run_claimer(bin_dir, workdir, urls, "latency",
                                                     args.latency_claims, 1, args.claim_timeout))
        progress(f"claims at concurrency {args.concurrency}: {args.throughput_claims}")
        out["claims_cn"] = claim_figures(run_claimer(bin_dir, workdir, urls, "throughput",
                                                     args.throughput_claims, args.concurrency,
                                                     args.claim_timeout))
        out["claims_cn"]["concurrency"] = args.concurrency
    finally:
        for node in nodes:
            node.stop()


# ---- part 2: three instances --------------------------------------------------


def commandstats(nodes):
    """{command: calls} summed over the nodes (INFO commandstats); a node that fails adds nothing."""
    total = collections.Counter()
    for node in nodes:
        try:
            text = node.cli("INFO", "commandstats", timeout=10)
        except (subprocess.SubprocessError, OSError):
            continue
        for line in text.splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, _, fields = line[len("cmdstat_"):].partition(":")
            for field in fields.split(","):
                key, _, value = field.partition("=")
                if key == "calls":
                    total[name] += int(value)
    return total


def wait_ready(instances, timeout):
    """Until GET /readyz answers 200 on every instance (a trusted quorum, an ordinal held)."""
    deadline = time.monotonic() + timeout
    pending = list(instances)
    while pending:
        for instance in list(pending):
            try:
                status, _ = http("GET", f"http://127.0.0.1:{instance.port}/readyz", token=None,
                                 timeout=5)
            except OSError:
                status = None
            if status == 200:
                pending.remove(instance)
            elif instance.proc.poll() is not None:
                raise RuntimeError(f"{instance.name} exited: {instance.stderr_tail()}")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout} s: {[i.name for i in pending]}")
        time.sleep(0.2)


def deliveries_by_instance(log_path, lo_ms, hi_ms):
    """{instance: deliveries of slots in [lo_ms, hi_ms)} from the receiver's log."""
    counts = collections.Counter()
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    if lo_ms <= parse_ms(d["scheduled_at"]) < hi_ms:
                        counts[d.get("instance") or "?"] += 1
                except (ValueError, KeyError, TypeError):
                    pass
    except FileNotFoundError:
        pass
    return dict(sorted(counts.items()))


def start_cluster(bin_dir, workdir, processes, ready_max):
    """Three fresh nodes, a receiver and three instances on the nodes, all ready; every one
    is added to processes (("nodes", [node...]) or ("process", Process)) before it starts.
    Returns (nodes, receiver, instances)."""
    nodes = start_nodes(workdir / "cluster-nodes", 3)
    processes.append(("nodes", nodes))
    urls = ",".join(node.url for node in nodes)
    receiver = start_receiver(bin_dir, workdir, lambda p: processes.append(("process", p)))
    instances = [start_cronfence(bin_dir, workdir, f"cronfence{i}",
                                 lambda p: processes.append(("process", p)),
                                 ["--redis", urls, "--instance-id", f"bench-{i}"])
                 for i in range(3)]
    wait_ready(instances, ready_max)
    return nodes, receiver, instances


def part_cluster(args, bin_dir, workdir, out, processes):
    nodes, receiver, instances = start_cluster(bin_dir, workdir, processes, args.ready_max)
    base = f"http://127.0.0.1:{instances[0].port}"
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    progress(f"instances {[i.pid for i in instances]} ready, receiver pid {receiver.pid}; "
             f"workdir {workdir}")

    names, took, failures = create_jobs(base, hook, args.jobs, args.threads)
    out["jobs"] = args.jobs
    out["jobs_created"] = len(names) - len(failures)
    out["job_creation_s"] = round(took, 2)
    names = keep_created(names, failures, out)
    progress(f"created {len(names)} jobs in {took:.2f} s")

    # Warm-up: until every job has been delivered at least once (and for at least 3 s).
    tail = LogTail(workdir / "receiver.jsonl")
    out["warmup_s"], out["warmup_jobs_seen"] = warm_up(tail, names, instances, 3,
                                                       args.warmup_max)
    progress(f"warm-up {out['warmup_s']} s, {out['warmup_jobs_seen']} jobs delivered so far")

    # The window: whole seconds, starting at the next full second + 1. The counters are read
    # at its ends only, so that this script takes little CPU from the processes measured.
    lo_ms = (int(time.time()) + 2) * 1000
    hi_ms = lo_ms + args.seconds * 1000
    wait_until_wall(lo_ms)
    stats0 = commandstats(nodes)
    cpu0 = (time.monotonic(), [cpu_ticks(f"/proc/{i.pid}/stat") for i in instances],
            [cpu_ticks(f"/proc/{n.proc.pid}/stat") for n in nodes],
            cpu_ticks(f"/proc/{receiver.pid}/stat"))
    wait_until_wall(hi_ms)
    stats1 = commandstats(nodes)
    cpu1 = (time.monotonic(), [cpu_ticks(f"/proc/{i.pid}/stat") for i in instances],
            [cpu_ticks(f"/proc/{n.proc.pid}/stat") for n in nodes],
            cpu_ticks(f"/proc/{receiver.pid}/stat"))
    wall = cpu1[0] - cpu0[0]

    out["drain_s"] = drain(tail, lo_ms, hi_ms, len(names) * args.seconds)

    out["window_s"] = args.seconds
    out.update(analyse(tail.records, names, lo_ms, hi_ms, args.seconds))
    out["receiver_duplicate_answers"] = receiver_duplicates(receiver.stderr_path, lo_ms, hi_ms)
    out["by_instance"] = deliveries_by_instance(workdir / "receiver.jsonl", lo_ms, hi_ms)
    # How the cluster's merged history (read from one instance) records the window's slots.
    runs = window_runs(base, lo_ms, hi_ms)
    if runs is not None:
        out["window_runs_by_status"] = dict(collections.Counter(r.get("status") for r in runs))

    delta = {name: stats1[name] - stats0.get(name, 0) for name in stats1}
    delta = {name: calls for name, calls in delta.items() if calls > 0}
    firings = out["slots_delivered"]
    total = sum(delta.values())
    scripts = delta.get("evalsha", 0) + delta.get("eval", 0)
    out["redis_calls"] = total
    out["redis_calls_per_firing"] = round(total / firings, 2) if firings else None
    out["redis_scripts_per_firing"] = round(scripts / firings, 2) if firings else None
    out["redis_top_commands"] = sorted(delta.items(), key=lambda kv: -kv[1])[:8]

    def share(a, b):
        return round(100.0 * (b - a) / CLK_TCK / wall, 1) if a is not None and b is not None else None

    out["cpu_instances"] = [share(a, b) for a, b in zip(cpu0[1], cpu1[1])]
    out["cpu_nodes"] = [share(a, b) for a, b in zip(cpu0[2], cpu1[2])]
    out["cpu_receiver"] = share(cpu0[3], cpu1[3])
    out["instance_warnings"] = {i.name: count_in(i.stderr_path, " warn ") for i in instances}
    out["instance_errors"] = {i.name: count_in(i.stderr_path, " error ") for i in instances}


def count_in(path, needle):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except FileNotFoundError:
        return 0


def stop_all(processes, out):
    """Stops every started process by its pid, the last started first."""
    for kind, thing in reversed(processes):
        if kind == "nodes":
            for node in thing:
                node.stop()
        else:
            out.setdefault("exit_codes", {})[thing.name] = thing.stop()


# ---- output -----------------------------------------------------------------


def print_report(out):
    rows = []
    for key, label in (("claims_c1", "claim latency, concurrency 1"),
                       ("claims_cn", f"claims, concurrency {out.get('claims_cn', {}).get('concurrency')}")):
        c = out.get(key)
        if c is None:
            continue
        rows.append((label, f"p50 {fmt(c['p50_ms'])} / p99 {fmt(c['p99_ms'])} / max "
                            f"{fmt(c['max_ms'])} ms; {c['committed_per_s']} committed/s "
                            f"({c['committed']}/{c['claims']} committed in {c['span_s']} s, "
                            f"results {c['results']})"))
    if "lag" in out:
        lag = out["lag"]
        rows += [
            ("jobs (created)", f"{out['jobs']} ({out['jobs_created']}) in {out['job_creation_s']} s"),
            ("window", f"{out['window_s']} s (warm-up {out['warmup_s']} s, drain {out['drain_s']} s)"),
            ("delivery lag p50 / p99 / max", f"{fmt(lag['p50_ms'])} / {fmt(lag['p99_ms'])} / "
                                             f"{fmt(lag['max_ms'])} ms"),
            ("deliveries/s", f"{out['deliveries_per_s']} ({out['received_in_window']} received "
                             f"in the window)"),
            ("slots expected / delivered", f"{out['slots_expected']} / {out['slots_delivered']}"
                                           f" ({out['slots_missed']} missed)"),
            ("duplicates", f"{out['slots_duplicated']} slots delivered twice, "
                           f"{out['receiver_duplicate_answers']} answered 'duplicate'"),
            ("deliveries by instance", ", ".join(f"{k} {v}" for k, v in out["by_instance"].items())),
            ("window's runs by status", ", ".join(f"{k} {v}" for k, v in sorted(
                out.get("window_runs_by_status", {}).items(), key=str)) or "-"),
            ("redis commands per firing", f"{fmt(out['redis_calls_per_firing'])} "
                                          f"({out['redis_calls']} calls over 3 nodes, Lua-internal "
                                          f"included; scripts alone "
                                          f"{fmt(out['redis_scripts_per_firing'])} per firing)"),
            ("redis top commands", ", ".join(f"{k} {v}" for k, v in out["redis_top_commands"])),
            ("CPU instances / nodes / receiver", f"{out['cpu_instances']} / {out['cpu_nodes']} / "
                                                 f"{fmt(out['cpu_receiver'])} % of one core "
                                                 f"({os.cpu_count()} CPUs)"),
            ("instance warn / error lines", f"{out['instance_warnings']} / {out['instance_errors']}"),
        ]
    if out.get("job_creation_errors"):
        rows.append(("job creation errors", "; ".join(out["job_creation_errors"][:2])))
    if "exit_codes" in out:
        rows.append(("exit codes after SIGTERM", ", ".join(f"{k} {v}" for k, v in
                                                           out["exit_codes"].items())))
    width = max(len(r[0]) for r in rows)
    print(f"cronfence cluster benchmark: 3 redis nodes (appendfsync always)"
          + (f", 3 instances, {out['jobs']} jobs x '* * * * * *', {out['window_s']} s"
             if "lag" in out else ""))
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def add_options(parser, latency_claims, throughput_claims):
    """The options this benchmark shares with peers_bench.py."""
    parser.add_argument("--bin-dir", default=str(HERE.parents[1] / "build"),
                        help="directory holding cronfence, cronfence-receiver and cf_claimer")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs to create (default 1000)")
    parser.add_argument("--seconds", type=int, default=30, help="measured window (default 30)")
    parser.add_argument("--latency-claims", type=int, default=latency_claims,
                        help=f"claims at concurrency 1 (default {latency_claims})")
    parser.add_argument("--throughput-claims", type=int, default=throughput_claims,
                        help=f"claims at --concurrency (default {throughput_claims})")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="claiming threads for the throughput figure (default 50)")
    parser.add_argument("--claim-timeout", type=float, default=600,
                        help="longest run of one claimer, s (default 600)")
    parser.add_argument("--threads", type=int, default=16, help="job-creation threads (default 16)")
    parser.add_argument("--ready-max", type=float, default=60.0,
                        help="longest wait for the instances to be ready (default 60)")
    parser.add_argument("--warmup-max", type=float, default=90.0,
                        help="longest wait for deliveries to flow before measuring (default 90)")
    parser.add_argument("--skip-claims", action="store_true", help="skip the claims")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def can_run(paths, hint):
    """False, once said on stderr, when one of paths does not exist."""
    missing = next((path for path in paths if not path.exists()), None)
    if missing is not None:
        print(f"benchmark could not run: {missing} not found ({hint})", file=sys.stderr)
    return missing is None


def interrupt_on_signals():
    """Ctrl-C and SIGTERM raise KeyboardInterrupt."""
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, 2000, 20000)
    parser.add_argument("--skip-cluster", action="store_true", help="skip part 2 (instances)")
    args = parser.parse_args()
    if args.jobs < 1 or args.seconds < 1 or args.latency_claims < 1 or args.throughput_claims < 1:
        parser.error("--jobs, --seconds and the claim counts must be at least 1")

    bin_dir = pathlib.Path(args.bin_dir).resolve()
    needed = ([] if args.skip_claims else ["cf_claimer"]) + \
        ([] if args.skip_cluster else ["cronfence", "cronfence-receiver"])
    if not can_run([bin_dir / name for name in needed], "build first"):
        return 2
    # Ctrl-C and SIGTERM unwind through the finally below, which stops every child by pid.
    interrupt_on_signals()

    out = {}
    processes = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cf-cluster-bench-"))
    code = 0
    try:
        if not args.skip_claims:
            part_claims(args, bin_dir, workdir, out)
        if not args.skip_cluster:
            part_cluster(args, bin_dir, workdir, out, processes)
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        code = 130
    except (RuntimeError, subprocess.SubprocessError) as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        code = 2
    finally:
        # A second Ctrl-C must not leave a child running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(processes, out)
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        print_report(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
