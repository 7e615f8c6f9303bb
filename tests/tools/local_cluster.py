#!/usr/bin/env python3
"""A three-node cronfence cluster on loopback, for trying cluster mode out.

Starts 3 redis-server lock nodes (appendonly yes, appendfsync always,
noeviction, each with its own data directory) and 3 cronfence instances
pointed at all three, prints each instance's dashboard URL, and waits.
Ctrl-C (or SIGTERM) stops the instances, then the nodes, each by its pid.
Data stays in --dir, so a second run resumes where the first stopped.

    make cluster                       # or:
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
            return proc
    raise RuntimeError(f"cronfence {index} exited with {proc.wait()}; see its log in {data}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="build", type=pathlib.Path)
    parser.add_argument("--dir", default="cluster-data", type=pathlib.Path,
                        help="data directory (databases, AOFs, logs)")
    parser.add_argument("--redis-port", type=int, default=6391, help="first of 3 Redis ports")
    parser.add_argument("--port", type=int, default=8081, help="first of 3 instance ports")
    args = parser.parse_args()

    data = args.dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    token_file = data / "admin-token"
    if not token_file.exists():
        token_file.touch(mode=0o600)
        token_file.write_text(secrets.token_hex(16) + "\n")
    token = token_file.read_text().strip()

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    nodes, instances = [], []
    try:
        for i in range(3):
            nodes.append(RedisNode(data, f"redis{i}", port=args.redis_port + i).start())
        urls = [node.url for node in nodes]
        for i in range(3):
            instances.append(start_instance(args.bin_dir, data, i, urls, args.port + i, token_file))
        print(f"redis nodes: {', '.join(urls)}")
        for i in range(3):
            print(f"instance local-{i}: http://127.0.0.1:{args.port + i}/#token={token}")
        print(f"admin token: {token}  (data and logs in {data})")
        print("Ctrl-C stops the cluster.", flush=True)
        while not stopping and all(proc.poll() is None for proc in instances):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in instances:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in instances:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in nodes:
            node.stop()
        print("cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
