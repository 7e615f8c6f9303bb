#!/usr/bin/python3
"""Benchmark (not a test): the event stream under many concurrent clients.

Starts a standalone cronfence and the reference receiver, creates --jobs jobs
firing every second (two run events per firing: started, finished), then for
each stream count in --streams (0 first, as the baseline):

  - opens that many GET /api/v1/events streams, all read by one selector
    thread of this script (HTTP/1.0, so the body is the raw event stream);
  - measures the API's answer time over --requests sequential requests
    (GET /api/v1/jobs?limit=100 and GET /api/v1/runs?limit=50 alternately),
    made from a separate process: p50, p99, max in ms;
  - measures fan-out lag, run finished_at -> the event's arrival at a
    client, over every finished run event every stream received: p50, p99;
  - checks that every stream received the same events (count of distinct
    event ids per stream: min and max);
  - reads cronfence's CPU share (% of one core) and VmRSS.

It never fails on the numbers; it exits non-zero only when it cannot run.

    /usr/bin/python3 tests/bench/events_bench.py --bin-dir build
        [--jobs 50] [--streams 0,200,1000] [--seconds 10] [--requests 400]
"""

import argparse
import multiprocessing
import pathlib
import selectors
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from standalone_lag import (ADMIN_TOKEN, CLK_TCK, SECRET, Process, cpu_ticks,  # noqa: E402
                            create_jobs, http, memory_kb, parse_ms, percentile)


class Streams:
    """count event streams read by one thread; records (arrival ms, event) per stream."""

    def __init__(self, port, count):
        self.selector = selectors.DefaultSelector()
        self.buffers = {}
        self.ids = {}
        self.lags = []
        self.lock = threading.Lock()
        self.stopping = False
        request = (f"GET /api/v1/events HTTP/1.0\r\nHost: bench\r\n"
                   f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n").encode()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.buffers[sock] = b""
            self.ids[sock] = set()
        self.thread = threading.Thread(target=self.pump, daemon=True)
        self.thread.start()

    def pump(self):
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    chunk = sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                arrived = time.time() * 1000
                if not chunk:
                    self.selector.unregister(sock)
                    continue
                data = self.buffers[sock] + chunk
                *frames, self.buffers[sock] = data.split(b"\n\n")
                for frame in frames:
                    self.parse(sock, frame.decode(errors="replace"), arrived)

    def parse(self, sock, frame, arrived):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "id" not in fields:
            return
        with self.lock:
            self.ids[sock].add(fields["id"])
            if fields.get("event") == "run" and '"finished_at":"' in fields.get("data", ""):
                finished = fields["data"].split('"finished_at":"', 1)[1].split('"', 1)[0]
                self.lags.append(arrived - parse_ms(finished))

    def reset(self):
        with self.lock:
            self.lags = []
            for sock in self.ids:
                self.ids[sock] = set()

    def close(self):
        self.stopping = True
        self.thread.join()
        for sock in list(self.buffers):
            sock.close()


def api_times(base, requests):
    times = []
    for i in range(requests):
        path = "/api/v1/jobs?limit=100" if i % 2 == 0 else "/api/v1/runs?limit=50"
        started = time.perf_counter()
        status, _ = http("GET", base + path)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return sorted(times)


def measure(args, server, base, count):
    streams = Streams(server.port, count) if count else None
    time.sleep(2)  # every stream connected and past its first events
    if streams:
        streams.reset()
    ticks = cpu_ticks(f"/proc/{server.pid}/stat")
    started = time.monotonic()
    # Timed in another process, so that this one's stream reading does not delay the clock.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        times = pool.apply(api_times, (base, args.requests))
    left = args.seconds - (time.monotonic() - started)
    if left > 0:
        time.sleep(left)
    cpu = (cpu_ticks(f"/proc/{server.pid}/stat") - ticks) / CLK_TCK / (time.monotonic() - started)
    row = {"streams": count, "api_p50": percentile(times, 50), "api_p99": percentile(times, 99),
           "api_max": times[-1], "cpu": cpu * 100,
           "rss_mb": memory_kb(server.pid).get("VmRSS", 0) / 1024}
    if streams:
        time.sleep(1)  # the last events of the window reach every stream
        with streams.lock:
            lags = sorted(streams.lags)
            counts = [len(ids) for ids in streams.ids.values()]
        row.update(lag_p50=percentile(lags, 50), lag_p99=percentile(lags, 99),
                   events_min=min(counts), events_max=max(counts))
        streams.close()
        time.sleep(2)  # the server notices the departed clients (within a second)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="build", type=pathlib.Path)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--streams", default="0,200,1000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    bin_dir = args.bin_dir.resolve()

    with tempfile.TemporaryDirectory(prefix="cf-events-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        receiver = Process("receiver", [str(bin_dir / "cronfence-receiver"), "--listen",
                                        "127.0.0.1:0", "--db", str(workdir / "r.db"),
                                        "--secret", SECRET], workdir)
        server = Process("cronfence", [str(bin_dir / "cronfence"), "--listen", "127.0.0.1:0",
                                       "--db", str(workdir / "cf.db"), "--admin-token",
                                       ADMIN_TOKEN, "--signing-secret", SECRET], workdir)
        rows = []
        try:
            receiver.start()
            server.start()
            base = f"http://127.0.0.1:{server.port}"
            create_jobs(base, f"http://127.0.0.1:{receiver.port}/hook", args.jobs, 8)
            time.sleep(3)  # deliveries flowing
            for count in (int(c) for c in args.streams.split(",")):
                print(f"measuring with {count} streams...", file=sys.stderr)
                rows.append(measure(args, server, base, count))
        finally:
            server.stop()
            receiver.stop()

    print(f"\nevent stream: {args.jobs} every-second jobs (~{2 * args.jobs} run events/s), "
          f"{args.requests} API requests per row\n")
    print(f"{'streams':>8} {'API p50':>9} {'API p99':>9} {'API max':>9} {'lag p50':>9} "
          f"{'lag p99':>9} {'events/stream':>15} {'CPU':>7} {'RSS':>8}")
    for row in rows:
        lag = (f"{row['lag_p50']:7.1f}ms {row['lag_p99']:7.1f}ms" if "lag_p50" in row
               else f"{'-':>9} {'-':>9}")
        events = (f"{row['events_min']}..{row['events_max']}" if "events_min" in row else "-")
        print(f"{row['streams']:>8} {row['api_p50']:7.2f}ms {row['api_p99']:7.2f}ms "
              f"{row['api_max']:7.2f}ms {lag} {events:>15} {row['cpu']:6.1f}% "
              f"{row['rss_mb']:6.1f}MB")


if __name__ == "__main__":
    main()
