#!/usr/bin/python3
"""Benchmark (not a test): how soon a standalone cronfence with a large catalog
listens, and what it holds in memory.

Starts a standalone cronfence once to create its database and one job through
the API (the template: a stored job exactly as the catalog writes it), stops
it, writes N copies of that job straight into the database (a few of them
firing every second, the rest once a year), then starts it again R times and
prints for each start:

  - seconds from exec to the "listening on" line (the API answers), then to
    /readyz answering 200 (the catalog loaded and scheduled), wall time and
    the CPU-seconds the process spent by then (utime+stime from /proc, less
    sensitive to a busy machine than the wall time);
  - VmRSS once it is ready and again after --settle seconds of scheduling.

It never fails on the numbers; it exits non-zero only when it cannot run at
all.

    /usr/bin/python3 tests/bench/startup_bench.py --bin-dir build [--jobs 100000]
        [--starts 3] [--settle 5] [--keep]

Python 3.11 standard library only.
"""

import argparse
import json
import pathlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from standalone_lag import (ADMIN_TOKEN, CLK_TCK, PAGE_KB, cpu_ticks,  # noqa: E402
                            start_cronfence)

FIRING = 10  # jobs of the catalog that fire every second


def create_template(base_url):
    body = json.dumps({
        "name": "template", "schedule": "0 0 1 1 *", "timezone": "Europe/Berlin",
        "description": "a yearly job",
        "webhook": {"url": "http://127.0.0.1:9/hook", "timeout_ms": 5000,
                    "headers": {"X-Team": "payments"}, "body": {"report": "daily"}},
    }).encode()
    request = urllib.request.Request(base_url + "/api/v1/jobs/template", data=body,
                                     method="PUT", headers={
                                         "Authorization": "Bearer " + ADMIN_TOKEN,
                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        if reply.status != 201:
            raise RuntimeError(f"template not created: {reply.status}")


def fill(db_path, count):
    """Writes count copies of the stored template into the catalog."""
    connection = sqlite3.connect(str(db_path), timeout=30)
    try:
        doc, version = connection.execute(
            "SELECT doc, version FROM jobs WHERE name = 'template'").fetchone()
        template = json.loads(doc)
        rows = []
        for i in range(count):
            version += 1
            copy = dict(template)
            copy.update({"name": f"job-{i:06d}", "version": version,
                         "description": f"copy {i} of the template",
                         "schedule": "* * * * * *" if i < FIRING else "0 0 1 1 *"})
            rows.append((copy["name"], version, json.dumps(copy, separators=(",", ":"))))
        connection.executemany(
            "INSERT INTO jobs (name, version, doc, paused, created_at, updated_at)"
            " SELECT ?, ?, ?, 0, created_at, updated_at FROM jobs WHERE name = 'template'", rows)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'catalog_version'",
                           (str(version),))
        connection.commit()
    finally:
        connection.close()


def wait_ready(base_url, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("not ready in time")


def rss_kb(pid):
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", required=True, type=pathlib.Path)
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    bin_dir = args.bin_dir.resolve()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cf-startup-bench-"))
    processes = []
    try:
        server = start_cronfence(bin_dir, workdir, "cf", processes.append)
        create_template(f"http://127.0.0.1:{server.port}")
        server.stop()
        fill(workdir / "cf.db", args.jobs)
        print(f"catalog: {args.jobs} jobs ({FIRING} firing every second), "
              f"database {(workdir / 'cf.db').stat().st_size / 2**20:.1f} MiB")
        walls, readies, cpus = [], [], []
        for start in range(args.starts):
            began = time.monotonic()
            server = start_cronfence(bin_dir, workdir, "cf", processes.append)
            wall = time.monotonic() - began
            wait_ready(f"http://127.0.0.1:{server.port}")
            ready = time.monotonic() - began
            cpu = cpu_ticks(f"/proc/{server.pid}/stat") / CLK_TCK
            ready_rss = rss_kb(server.pid)
            time.sleep(args.settle)
            settled_rss = rss_kb(server.pid)
            server.stop()
            walls.append(wall)
            readies.append(ready)
            cpus.append(cpu)
            print(f"start {start + 1}: listening after {wall:.2f} s, ready after {ready:.2f} s "
                  f"({cpu:.2f} CPU-s); RSS {ready_rss / 1024:.1f} MiB ready, "
                  f"{settled_rss / 1024:.1f} MiB after {args.settle:g} s more")
        print(f"median: listening {statistics.median(walls):.2f} s, ready "
              f"{statistics.median(readies):.2f} s, {statistics.median(cpus):.2f} CPU-s")
    finally:
        for process in processes:
            process.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
