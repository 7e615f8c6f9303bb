"""Real redis-server processes for the cluster tests and benchmarks.

Each node listens on a free loopback port with the persistence DESIGN §4.5
requires of lock nodes (appendonly yes, appendfsync always, noeviction), in
its own data directory, so that a restart reloads its AOF and a wipe really
starts it empty. Faults are real: SIGKILL, SIGSTOP/SIGCONT, a restart.
Processes are stopped by their pid only.

With tls (a TlsFiles), a node serves TLS only (rediss://) with that
certificate and key, clients unauthenticated; with password it requires AUTH.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TlsFiles:
    """PEM files of a TLS server: its certificate and key, and the CA that signed it."""
    cert: pathlib.Path
    key: pathlib.Path
    ca: pathlib.Path


class RedisNode:
    """One redis-server with its data directory under workdir/name."""

    def __init__(self, workdir, name, port=None, tls=None, password=None):
        self.name = name
        self.dir = pathlib.Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.password = password
        self.proc = None

    @property
    def url(self):
        credentials = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{credentials}127.0.0.1:{self.port}"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10.0):
        """Starts the server (reloading its AOF if any) and waits until it answers PING."""
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port),
                      "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                      "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        else:
            listen = ["--port", str(self.port)]
        if self.password:
            listen += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--maxmemory-policy", "noeviction", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server {self.name} exited with {self.proc.returncode}")
            try:
                if self.cli("PING", timeout=1) == "PONG":
                    return self
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server {self.name} did not answer on port {self.port}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM and wait (the AOF is fsynced on every write anyway)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self):
        """kill -9, then start again from the AOF on the same port."""
        self.kill9()
        return self.start()

    def wipe(self):
        """kill -9, delete every file of the node, start it empty on the same port."""
        self.kill9()
        shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        return self.start()

    def cli(self, *args, timeout=5):
        """Runs one command with redis-cli; returns its output without the trailing newline."""
        tls = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        env = dict(os.environ, REDISCLI_AUTH=self.password) if self.password else None
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), *tls, "--raw", *map(str, args)],
                             capture_output=True, timeout=timeout, check=True, env=env)
        return out.stdout.decode().rstrip("\n")


def start_nodes(workdir, count=3, tls=None, password=None):
    """count started nodes named redis0..redisN-1 (see RedisNode for tls and password)."""
    nodes = []
    try:
        for i in range(count):
            nodes.append(RedisNode(workdir, f"redis{i}", tls=tls, password=password).start())
    except Exception:
        for node in nodes:
            node.kill9()
        raise
    return nodes
