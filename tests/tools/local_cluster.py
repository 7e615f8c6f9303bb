#!/usr/bin/env python3
"""A three-node cronfence cluster on loopback, for trying cluster mode out.

Starts 3 redis-server lock nodes (appendonly yes, appendfsync always,
noeviction, each with its own data directory) and 3 cronfence instances
pointed at all three, prints each instance's pid and dashboard URL, and
waits. An instance that exits (stopped by its pid, crashed) is reported and
the others go on, so failover can be watched on the dashboard; it is started
again on request:

    python3 tests/tools/local_cluster.py --dir cluster-data --restart 1
    make cluster-restart N=1                      # the same

(a running instance is stopped first). Ctrl-C (or SIGTERM) stops the
instances, then the nodes, each by its pid. Data stays in --dir, so a second
run resumes where the first stopped.

    make cluster [CLUSTER_PORT=8081] [CLUSTER_REDIS_PORT=6391]      # or:
    python3 tests/tools/local_cluster.py --bin-dir build --dir cluster-data
"""

import argparse
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
from redisnode import RedisNode  # noqa: E402

INSTANCES = 3
# The supervisor's pid, and one request file per restart asked for (removed once done).
PID_FILE = "cluster.pid"
RESTART_REQUEST = "restart-{}"


def start_instance(bin_dir, data, index, redis_urls, port, token_file):
    # The token goes by file, never on the command line (ps shows that to everyone).
    # No --signing-secret: the instances share the cluster's, kept on the nodes.
    log = open(data / f"cronfence{index}.log", "ab")
    proc = subprocess.Popen(
        [str(bin_dir / "cronfence"), "--listen", f"127.0.0.1:{port}",
         "--db", str(data / f"cronfence{index}.db"), "--redis", ",".join(redis_urls),
         "--instance-id", f"local-{index}", "--admin-token-file", str(token_file)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()
    for raw in proc.stdout:
        if raw.startswith(b"listening on "):
            proc.stdout.close()  # nothing else is printed there
            return proc
    raise RuntimeError(f"cronfence {index} exited with {proc.wait()}; see its log in {data}")


def stop_instance(proc):
    """SIGTERM by pid; deliveries in flight may finish (--shutdown-grace-ms, 30 s)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request_restart(data, index):
    """The --restart client: asks the running supervisor, waits until it is done."""
    try:
        pid = int((data / PID_FILE).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        print(f"no cluster runs on {data} (start it with make cluster)", file=sys.stderr)
        return 1
    request = data / RESTART_REQUEST.format(index)
    request.touch()
    deadline = time.monotonic() + 90
    while request.exists():
        if time.monotonic() > deadline:
            print(f"instance local-{index} was not restarted within 90 s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"instance local-{index} restarted")
    return 0


def supervise(args, data, urls, token_file, stopping):
    """Starts the instances, then reports exits and serves restart requests until stopping."""
    instances = [None] * INSTANCES
    token = token_file.read_text().strip()
    try:
        for i in range(INSTANCES):
            instances[i] = start_instance(args.bin_dir, data, i, urls, args.port + i, token_file)
        print(f"redis nodes: {', '.join(urls)}")
        for i, proc in enumerate(instances):
            print(f"instance local-{i}: pid {proc.pid} http://127.0.0.1:{args.port + i}/#token={token}")
        print(f"admin token: {token}  (data and logs in {data})")
        print("an instance that stops is reported and the others go on; "
              "`make cluster-restart N=<0-2>` starts it again; Ctrl-C stops the cluster.",
              flush=True)
        reported = set()
        while not stopping:
            for i, proc in enumerate(instances):
                if proc.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"instance local-{i} (pid {proc.pid}) exited with {proc.returncode}; "
                          f"the others go on (make cluster-restart N={i} starts it)", flush=True)
            for i in range(INSTANCES):
                request = data / RESTART_REQUEST.format(i)
                if not request.exists():
                    continue
                stop_instance(instances[i])
                try:
                    instances[i] = start_instance(args.bin_dir, data, i, urls, args.port + i,
                                                  token_file)
                    reported.discard(i)
                    print(f"instance local-{i} restarted: pid {instances[i].pid}", flush=True)
                except RuntimeError as error:
                    print(f"instance local-{i} did not start again: {error}", flush=True)
                request.unlink()
            time.sleep(0.5)
    finally:
        for proc in instances:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in instances:
            stop_instance(proc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="build", type=pathlib.Path)
    parser.add_argument("--dir", default="cluster-data", type=pathlib.Path,
                        help="data directory (databases, AOFs, logs)")
    parser.add_argument("--redis-port", type=int, default=6391, help="first of 3 Redis ports")
    parser.add_argument("--port", type=int, default=8081, help="first of 3 instance ports")
    parser.add_argument("--restart", type=int, choices=range(INSTANCES), metavar="N",
                        help="ask the running cluster on --dir to (re)start instance N")
    args = parser.parse_args()

    data = args.dir.resolve()
    if args.restart is not None:
        return request_restart(data, args.restart)
    data.mkdir(parents=True, exist_ok=True)
    token_file = data / "admin-token"
    if not token_file.exists():
        token_file.touch(mode=0o600)
        token_file.write_text(secrets.token_hex(16) + "\n")
    for stale in data.glob(RESTART_REQUEST.format("*")):
        stale.unlink()
    (data / PID_FILE).write_text(f"{os.getpid()}\n")

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    nodes = []
    try:
        for i in range(3):
            nodes.append(RedisNode(data, f"redis{i}", port=args.redis_port + i).start())
        supervise(args, data, [node.url for node in nodes], token_file, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            node.stop()
        (data / PID_FILE).unlink(missing_ok=True)
        print("cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
