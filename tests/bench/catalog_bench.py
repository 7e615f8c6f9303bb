#!/usr/bin/python3
"""Benchmark (not a test): catalog writes in a cluster (DESIGN §4.6).

Three fresh Redis nodes (appendonly yes, appendfsync always), I cronfence
instances on them (default 3), then J jobs created with POST /api/v1/jobs by
T client threads (default 40), each request on a new connection to one
instance, the threads spread round-robin over the instances (or all on
the first with --one-instance); or, with --apply, one `cronfence apply -f`
of a file of J jobs against the first instance (what jobs as code does).
Reports:

  - jobs created per second (wall time of the whole creation);
  - per-request latency p50 / p99 (not with --apply);
  - whether the catalog converged: every instance lists exactly the created
    jobs with the same version each (waits up to 10 s for the mirrors), and
    the versions are distinct.

It never fails on the numbers; it exits non-zero when it cannot run at all
or the catalogs differ.

    /usr/bin/python3 tests/bench/catalog_bench.py --bin-dir build [--jobs 5000]
        [--threads 40] [--instances 3] [--one-instance | --apply] [--keep]

Python 3.11 standard library only; processes and HTTP helpers are those of
standalone_lag.py and cluster_bench.py, the Redis nodes those of the
integration tests.
"""

import argparse
from http import client as http_client
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))
from redisnode import start_nodes  # noqa: E402
from standalone_lag import ADMIN_TOKEN, Process, http, percentile  # noqa: E402
from cluster_bench import progress, stop_all, wait_ready  # noqa: E402


def create_on(port, names, latencies, failures):
    """POSTs each of names to the instance on port, one connection per request (as
    create_jobs does: a keep-alive connection would stay with one server thread)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    for name in names:
        body = json.dumps({"name": name, "schedule": "0 0 1 1 *",
                           "webhook": {"url": "http://127.0.0.1:9/hook"}})
        started = time.monotonic()
        conn = http_client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/api/v1/jobs", body, headers)
            reply = conn.getresponse()
            text = reply.read()
            status = reply.status
        except (OSError, http_client.HTTPException) as error:
            status, text = None, str(error).encode()
        finally:
            conn.close()
        latencies.append(time.monotonic() - started)
        if status != 201:
            failures.append(f"{name}: {status} {text[:200]!r}")


def apply_file(bin_dir, workdir, port, names):
    """Runs `cronfence apply -f` of a JSON file creating names on the instance on port;
    returns the failures (the CLI's error output when it did not exit 0)."""
    path = workdir / "jobs.json"
    path.write_text(json.dumps({"jobs": [
        {"name": name, "schedule": "0 0 1 1 *", "webhook": {"url": "http://127.0.0.1:9/hook"}}
        for name in names]}))
    done = subprocess.run([str(bin_dir / "cronfence"), "apply", "-f", str(path),
                           "--url", f"http://127.0.0.1:{port}", "--token", ADMIN_TOKEN,
                           "--output", "json"], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return [done.stderr[-2000:]]
    created = json.loads(done.stdout)["summary"]["created"]
    return [] if created == len(names) else [f"created {created} of {len(names)}"]


def catalog(port):
    """{name: version} of every job the instance lists."""
    out, cursor = {}, None
    while True:
        url = f"http://127.0.0.1:{port}/api/v1/jobs?limit=500"
        if cursor:
            url += f"&cursor={cursor}"
        status, text = http("GET", url)
        if status != 200:
            raise RuntimeError(f"GET /jobs answered {status}: {text[:200]}")
        page = json.loads(text)
        out.update({job["name"]: job["version"] for job in page["items"]})
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, type=pathlib.Path)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--one-instance", action="store_true",
                        help="every client thread talks to the first instance")
    parser.add_argument("--apply", action="store_true",
                        help="create the jobs with one `cronfence apply -f` on the first instance")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    bin_dir = args.bin_dir.resolve()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cf-catalog-bench-"))
    processes, out = [], {}
    try:
        nodes = start_nodes(workdir / "nodes", 3)
        processes.append(("nodes", nodes))
        urls = ",".join(node.url for node in nodes)
        instances = []
        for i in range(args.instances):
            instance = Process(f"cronfence{i}", [
                str(bin_dir / "cronfence"), "--listen", "127.0.0.1:0",
                "--db", str(workdir / f"cronfence{i}.db"), "--redis", urls,
                "--instance-id", f"bench-{i}", "--admin-token", ADMIN_TOKEN,
                "--log-level", "warn"], workdir)
            processes.append(("process", instance))
            instance.start()
            instances.append(instance)
        wait_ready(instances, 30)
        names = [f"bench-{i:06d}" for i in range(args.jobs)]
        targets = instances[:1] if args.one_instance else instances
        latencies, failures, threads = [], [], []
        for t in range(args.threads):
            port = targets[t % len(targets)].port
            threads.append(threading.Thread(target=create_on, args=(
                port, names[t::args.threads], latencies, failures)))
        if args.apply:
            progress(f"creating {args.jobs} jobs with cronfence apply on one instance")
            started = time.monotonic()
            failures = apply_file(bin_dir, workdir, instances[0].port, names)
            took = time.monotonic() - started
            created = 0 if failures else args.jobs
            out.update(mode="apply")
        else:
            progress(f"creating {args.jobs} jobs with {args.threads} threads on "
                     f"{len(targets)} instance(s)")
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            took = time.monotonic() - started
            latencies.sort()
            created = args.jobs - len(failures)
            out.update(latency_p50_ms=round(1000 * percentile(latencies, 50), 1),
                       latency_p99_ms=round(1000 * percentile(latencies, 99), 1))
        out.update(jobs=args.jobs, created=created, seconds=round(took, 2),
                   jobs_per_s=round(created / took, 1), failures=failures[:5])
        deadline = time.monotonic() + 10
        while True:
            views = [catalog(i.port) for i in instances]
            same = all(view == views[0] for view in views)
            if same or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        versions = list(views[0].values())
        out["catalogs_identical"] = same
        out["catalog_size"] = len(views[0])
        out["versions_distinct"] = len(set(versions)) == len(versions)
        print(json.dumps(out, indent=2))
        return 0 if same and out["versions_distinct"] else 1
    finally:
        stop_all(processes, out)
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
