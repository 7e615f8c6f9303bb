#!/usr/bin/env python3
"""The chaos run's webhook target: an HTTP server on loopback that checks every
delivery on its own, independently of cronfence's code, and logs each request.

For each request it

1. verifies both signatures of DESIGN §5, each an HMAC-SHA256 keyed with
   the raw bytes of the secret: `Cronfence-Signature: t=<s>,v2=<hex>` over
   `t "\\n" job "\\n" token "\\n" key "\\n" body`, and the Standard Webhooks
   `webhook-signature: v1,<base64>` over `webhook-id "." webhook-timestamp
   "." body`, with webhook-id equal to Idempotency-Key. Both must be present
   and carry at least one matching value (a rotation sends one per secret);
   the retired v1 element, which left the job out, counts for nothing. A `t`
   more than 5 minutes away from now is refused. A bad signature gets 401.
   The key must start with `<Cronfence-Job>@` and the body's job be
   Cronfence-Job, or the request gets 400.
2. answers a repeated Idempotency-Key with 200 without applying it again;
3. refuses with 409 a Fencing-Token lower than the highest it accepted in the
   delivery's fence scope: per job, or per idempotency key when the delivery
   carries `Cronfence-Fence-Scope: slot` (unless the job was accepted with
   scope job before: the unsigned header never downgrades a job); otherwise
   applies it (the "effect" is the log line) and answers 200.

Paths under /slow/ answer only after --slow-ms (the check and the effect
happen at the end, as for a worker that commits its work with the token
check in one transaction). Any other path answers at once.

Every request is one JSON line in --log: arrival time (CLOCK_MONOTONIC
seconds and wall ms), decision time, job, key, token, instance, attempt,
scope, whether the signature was ok and which schemes were sent, the
decision (applied, duplicate, stale, bad_signature, bad_request) and the
HTTP status. Prints "listening on 127.0.0.1:PORT" once it accepts requests.

    python3 tests/chaos/target.py --secret S --log target.jsonl [--port 0]
"""

import argparse
import base64
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_AGE_S = 300  # oldest (or most future) signature t accepted, as the reference receiver
MAX_BODY_BYTES = 1024 * 1024


def mac(secret, message):
    return hmac.new(secret, message, hashlib.sha256).digest()


def verify(secret, headers, body):
    """(ok, schemes, error): checks every signature scheme the request carries.

    schemes lists those found ("v2", "std"; "v1" when the retired element is
    sent, which is not checked and is no signature); error says what was
    wrong (None when ok). headers is a case-insensitive mapping.
    """
    schemes = []
    token = headers.get("Fencing-Token")
    key = headers.get("Idempotency-Key")
    job = headers.get("Cronfence-Job")
    header = headers.get("Cronfence-Signature")
    if header is None:
        return False, schemes, "no Cronfence-Signature"
    if token is None or key is None or job is None:
        return False, schemes, "missing Fencing-Token, Idempotency-Key or Cronfence-Job"
    t_text, values = None, {"v1": [], "v2": []}
    for item in header.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq:
            return False, schemes, f"malformed item {item!r}"
        if name == "t":
            if t_text is not None or not value.isdigit():
                return False, schemes, "missing, repeated or bad t"
            t_text = value
        elif name in values:
            try:
                values[name].append(bytes.fromhex(value))
            except ValueError:
                return False, schemes, f"{name} is not hex"
    if t_text is None:
        return False, schemes, "no t"
    if abs(time.time() - int(t_text)) > MAX_AGE_S:
        return False, schemes, f"t={t_text} more than {MAX_AGE_S} s away"
    if values["v1"]:
        schemes.append("v1")
    if not values["v2"]:
        return False, schemes, "no v2 in Cronfence-Signature"
    schemes.append("v2")
    want = mac(secret, f"{t_text}\n{job}\n{token}\n{key}\n".encode() + body)
    # Every value is compared, in constant time each: a rotation sends several.
    matched = [hmac.compare_digest(want, value) for value in values["v2"]]
    if not any(matched):
        return False, schemes, "no v2 value matches"

    std = headers.get("webhook-signature")
    if std is None:
        return False, schemes, "no webhook-signature"
    schemes.append("std")
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    if webhook_id is None or timestamp is None or not timestamp.isdigit():
        return False, schemes, "webhook-signature without webhook-id or webhook-timestamp"
    if webhook_id != key:
        return False, schemes, "webhook-id differs from Idempotency-Key"
    if abs(time.time() - int(timestamp)) > MAX_AGE_S:
        return False, schemes, f"webhook-timestamp {timestamp} more than {MAX_AGE_S} s away"
    want = base64.b64encode(mac(secret, f"{webhook_id}.{timestamp}.".encode() + body))
    matched = False
    for entry in std.split():
        version, comma, value = entry.partition(",")
        if comma and version == "v1" and hmac.compare_digest(want, value.encode()):
            matched = True
    if not matched:
        return False, schemes, "no webhook-signature value matches"
    return True, schemes, None


class Fences:
    """The target's state: applied idempotency keys, the highest accepted token per job
    (over every scope) and per key, and the jobs seen with scope job. One lock makes check
    and effect one step.

    A delivery naming scope job is compared with the highest token accepted for its job;
    one naming slot with the highest accepted for its idempotency key, unless the job was
    accepted with scope job before: the header is not signed, so it never downgrades a job
    (as server/fence_scope.h asks of targets)."""

    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.applied = {}  # idempotency key -> token applied
        self.job_highest = {}  # job -> highest accepted token, any scope
        self.job_scoped = set()  # jobs accepted at least once with scope job
        self.log = open(log_path, "a", encoding="utf-8", buffering=1)
        self.counts = {}

    def decide(self, entry):
        """Fills entry's decision and status under the lock, logs it; returns the status."""
        with self.lock:
            key, token, job = entry["key"], entry["token"], entry["job"]
            scope = "slot" if entry["scope"] == "slot" and job not in self.job_scoped else "job"
            entry["enforced_scope"] = scope
            entry["decided_mono"] = time.monotonic()
            entry["decided_wall"] = int(time.time() * 1000)
            # A key is applied once, so in scope slot no other token is ever compared.
            highest = self.job_highest.get(job, 0) if scope == "job" else 0
            if key in self.applied:
                entry["decision"], entry["status"] = "duplicate", 200
                entry["applied_token"] = self.applied[key]
            elif token < highest:
                entry["decision"], entry["status"] = "stale", 409
                entry["highest"] = highest
            else:
                self.applied[key] = token
                self.job_highest[job] = max(token, self.job_highest.get(job, 0))
                if scope == "job":
                    self.job_scoped.add(job)
                entry["decision"], entry["status"] = "applied", 200
            self.write(entry)
            return entry["status"]

    def write(self, entry):
        self.counts[entry["decision"]] = self.counts.get(entry["decision"], 0) + 1
        if not self.log.closed:
            self.log.write(json.dumps(entry, separators=(",", ":")) + "\n")


def make_handler(secret, fences, slow_ms):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, doc):
            data = json.dumps(doc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender died or gave up meanwhile (it may, here)

        def handle_delivery(self):
            arrival_mono, arrival_wall = time.monotonic(), int(time.time() * 1000)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.answer(413, {"status": "too large"})
                return
            body = self.rfile.read(length)
            headers = self.headers
            entry = {
                "mono": arrival_mono, "wall": arrival_wall, "path": self.path,
                "method": self.command, "job": headers.get("Cronfence-Job"),
                "key": headers.get("Idempotency-Key"), "run": headers.get("Cronfence-Run"),
                "scheduled_at": headers.get("Cronfence-Scheduled-At"),
                "attempt": headers.get("Cronfence-Attempt"),
                "token_text": headers.get("Fencing-Token"),
                "scope": (headers.get("Cronfence-Fence-Scope") or "job").strip().lower(),
                "scope_header": headers.get("Cronfence-Fence-Scope"),
            }
            try:
                doc = json.loads(body) if body else None
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                entry["instance"] = doc.get("instance")
                entry["body_job"] = doc.get("job")
                entry["body_token"] = doc.get("fencing_token")
                entry["body_run"] = doc.get("run_id")
                entry["trigger"] = doc.get("trigger")
            ok, schemes, error = verify(secret, headers, body)
            entry["sig_ok"], entry["sig_schemes"], entry["sig_error"] = ok, schemes, error
            try:
                entry["token"] = int(entry["token_text"])
            except (TypeError, ValueError):
                entry["token"] = None
            try:
                entry["attempt"] = int(entry["attempt"] or 1)
            except ValueError:
                pass  # kept as sent; the checker reports it
            if self.path.startswith("/slow/"):
                time.sleep(slow_ms / 1000)
            if not ok:
                entry["decision"], entry["status"] = "bad_signature", 401
            elif entry["token"] is None or entry["key"] is None or entry["job"] is None:
                entry["decision"], entry["status"] = "bad_request", 400
            elif not entry["key"].startswith(entry["job"] + "@"):
                entry["decision"], entry["status"] = "bad_request", 400
                entry["error"] = "Cronfence-Job does not match Idempotency-Key"
            elif entry.get("body_job", entry["job"]) != entry["job"]:
                entry["decision"], entry["status"] = "bad_request", 400
                entry["error"] = "Cronfence-Job does not match the body's job"
            else:
                status = fences.decide(entry)
                self.answer(status, {"status": entry["decision"]})
                return
            entry["decided_mono"] = time.monotonic()
            entry["decided_wall"] = int(time.time() * 1000)
            with fences.lock:
                fences.write(entry)
            self.answer(entry["status"], {"status": entry["decision"]})

        do_POST = do_PUT = do_PATCH = do_DELETE = handle_delivery

        def do_GET(self):
            if self.path == "/stats":
                with fences.lock:
                    counts = dict(fences.counts)
                self.answer(200, counts)
            elif self.path.startswith("/healthz"):
                self.answer(200, {"status": "ok"})
            else:
                self.handle_delivery()

        def log_message(self, *args):
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # three instances open many connections at once


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret", required=True, help="the cluster's signing secret")
    parser.add_argument("--log", required=True, help="JSON-lines log of every request")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    parser.add_argument("--slow-ms", type=int, default=1500, help="delay of paths under /slow/")
    args = parser.parse_args()

    fences = Fences(args.log)
    server = Server(("127.0.0.1", args.port), make_handler(args.secret.encode(), fences,
                                                           args.slow_ms))
    stopping = threading.Event()

    def stop(*_):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    with fences.lock:
        fences.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
