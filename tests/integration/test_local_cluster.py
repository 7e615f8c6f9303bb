"""`make cluster` (tests/tools/local_cluster.py): an instance stopped by its pid is reported,
the other two go on firing, the nodes stay up, and `--restart N` (make cluster-restart) brings
the instance back."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading

from conftest import BIN_DIR, SLOW, http, job_body, wait_for

TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "local_cluster.py"


def free_port_run(count):
    """The first of count consecutive loopback ports that are free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no run of free ports")


class Cluster:
    def __init__(self, workdir):
        self.dir = pathlib.Path(workdir) / "cluster-data"
        self.port = free_port_run(3)
        self.redis_port = free_port_run(3)
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, str(TOOL), "--bin-dir", str(BIN_DIR), "--dir", str(self.dir),
             "--port", str(self.port), "--redis-port", str(self.redis_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, pattern):
        return next((m for m in map(re.compile(pattern).search, list(self.lines)) if m), None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120 * SLOW)
        return self.proc.returncode


def test_cluster_survives_a_stopped_instance_and_restarts_it(tmp_path, receiver):
    cluster = Cluster(tmp_path)
    try:
        wait_for(lambda: cluster.said(r"Ctrl-C stops the cluster") or cluster.proc.poll(),
                 timeout=60 * SLOW, what="the cluster to start")
        assert cluster.proc.poll() is None, "\n".join(cluster.lines)
        pids = {int(m.group(1)): int(m.group(2)) for m in map(
            re.compile(r"instance local-(\d): pid (\d+) http://127\.0\.0\.1:\d+/#token=").search,
            cluster.lines) if m}
        assert sorted(pids) == [0, 1, 2], cluster.lines
        token = cluster.said(r"#token=(\w+)").group(1)
        auth = {"Authorization": f"Bearer {token}"}
        first = f"http://127.0.0.1:{cluster.port}"
        created = http("POST", f"{first}/api/v1/jobs", job_body("tick", receiver.hook()),
                       headers=auth)
        assert created.status == 201, created

        def fired_by():
            return {d["instance"] for d in receiver.deliveries("tick")}

        wait_for(lambda: fired_by(), timeout=30 * SLOW, what="a first delivery")
        victim = next(iter(fired_by()))
        index = int(victim.rsplit("-", 1)[1])
        os.kill(pids[index], signal.SIGKILL)
        wait_for(lambda: cluster.said(rf"instance local-{index} \(pid {pids[index]}\) exited"),
                 timeout=30 * SLOW, what="the exit to be reported")
        before = len(receiver.deliveries("tick"))
        # The others take over: new slots are delivered, by the two instances left only.
        wait_for(lambda: len(receiver.deliveries("tick")) >= before + 3, timeout=60 * SLOW,
                 what="deliveries after the stop")
        survivors = {d["instance"] for d in receiver.deliveries("tick")[before + 1:]}
        assert survivors and victim not in survivors, survivors
        assert cluster.proc.poll() is None, "the cluster stopped with one instance"

        restart = subprocess.run(
            [sys.executable, str(TOOL), "--dir", str(cluster.dir), "--restart", str(index)],
            capture_output=True, text=True, timeout=120 * SLOW)
        assert restart.returncode == 0, restart.stderr
        assert cluster.said(rf"instance local-{index} restarted: pid \d+")
        assert http("GET", f"http://127.0.0.1:{cluster.port + index}/healthz").status == 200

        def live_members():
            cluster_view = http("GET", f"{first}/api/v1/cluster", headers=auth).json
            return {m["id"] for m in cluster_view["members"] if m.get("up", True)}

        wait_for(lambda: victim in live_members(), timeout=30 * SLOW,
                 what="the restarted instance to rejoin")
    finally:
        code = cluster.stop()
    assert code == 0, "\n".join(cluster.lines)
    assert cluster.lines[-1] == "cluster stopped"
