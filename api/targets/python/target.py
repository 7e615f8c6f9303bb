#!/usr/bin/env python3
"""An example cronfence webhook target: Python 3, standard library only.

    CRONFENCE_SECRET=... python3 target.py PORT EFFECTS_FILE [STATE_DB]

(or PORT, EFFECTS_FILE and STATE_DB in the environment; port 0 picks a free
one, printed as "listening on 127.0.0.1:PORT"). The contract is DESIGN §5:

1. Verify Cronfence-Signature, t=<unix seconds>,v2=<hex>, where
   v2 = hex(HMAC-SHA256(secret, t + "\\n" + Cronfence-Job + "\\n" +
   Fencing-Token + "\\n" + Idempotency-Key + "\\n" + raw body)), and refuse
   a t more than 5 minutes old (or ahead): 401. (A Standard Webhooks library
   could check webhook-signature instead, given "whsec_" + base64(secret).)
2. Check that the Idempotency-Key starts with "<Cronfence-Job>@" and that the
   body's "job", when it has one, is Cronfence-Job: 400 otherwise. The key of
   a scheduled firing is "<job>@<instant>", of a manual run
   "<job>@manual-<run id>"; a delivery of one job replayed as another's fails
   here or at the signature, so it cannot take the other job's key or token.
3. In ONE SQLite transaction with the effect: a seen Idempotency-Key gets 200
   and nothing is done again; a fencing token lower than the highest in its
   fence scope gets 409; otherwise do the work and remember the key and the
   token.

The fence scope is the Cronfence-Fence-Scope header. "job" (overlap forbid or
queue; also what a delivery without the header means): keep the highest token
per job. "slot" (overlap allow, whose slots may overlap and arrive out of token
order): keep it per Idempotency-Key, so a new key is accepted even below the
job's highest. The header is not signed: a job once accepted with scope "job"
stays "job", whatever a later delivery says.

The "work" here is a row in the effects table, also appended, once committed,
as a JSON line {job, token, key, run_id} to EFFECTS_FILE.
"""

import contextlib
import hashlib
import hmac
import http.server
import json
import os
import re
import sqlite3
import sys
import time

MAX_AGE_S = 300  # oldest (or most future) signature t accepted
MAX_BODY_BYTES = 1 << 20
TOKEN_MAX = 2**63 - 1  # tokens are unsigned decimal 64-bit integers
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (job TEXT PRIMARY KEY, highest_token INTEGER NOT NULL,
                                 scope TEXT NOT NULL DEFAULT 'job');
CREATE TABLE IF NOT EXISTS seen_keys (job TEXT, key TEXT, PRIMARY KEY (job, key));
CREATE TABLE IF NOT EXISTS effects (job TEXT, token INTEGER, key TEXT, run_id TEXT);
"""


def signature_ok(secret, header, job, token, key, body):
    """True when header carries one fresh t and a v2 that is our HMAC (any v2: a
    sender rotating its secret sends one per secret); every v2 is compared in
    constant time. Other schemes (the retired v1) are ignored."""
    items = [item.partition("=") for item in header.split(",")]
    times = [value for name, _, value in items if name == "t"]
    candidates = [value for name, _, value in items if name == "v2"]
    if len(times) != 1 or not re.fullmatch(r"[0-9]{1,19}", times[0]) or not candidates:
        return False
    if not all(re.fullmatch(r"[0-9a-fA-F]{64}", v2) for v2 in candidates):
        return False
    if abs(time.time() - int(times[0])) > MAX_AGE_S:
        return False
    message = f"{times[0]}\n{job}\n{token}\n{key}\n".encode() + body
    want = hmac.new(secret, message, hashlib.sha256).hexdigest()
    matches = [hmac.compare_digest(want, v2.lower()) for v2 in candidates]  # no early exit
    return any(matches)


def body_job(body):
    """The body's "job", or None when the body is not a JSON object naming one (a raw body)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("job", None) if isinstance(doc, dict) else None


def deliver(db_path, job, token, key, run_id, scope):
    """The fencing step and the effect in one transaction. Returns (status, answer).

    Why one transaction: the check and the effect must not be separable.
    Checked first and recorded later, a delayed stale delivery could pass the
    check, then run its effect after a newer one; or a crash between effect
    and bookkeeping would make cronfence's retry run the effect twice.
    """
    with contextlib.closing(sqlite3.connect(db_path, timeout=5, isolation_level=None)) as db:
        # IMMEDIATE takes the write lock before the reads: no other thread or
        # process can accept a higher token between our check and our insert.
        db.execute("BEGIN IMMEDIATE")
        if db.execute("SELECT 1 FROM seen_keys WHERE job = ? AND key = ?", (job, key)).fetchone():
            return 200, {"status": "duplicate"}  # closing without COMMIT rolls back
        row = db.execute("SELECT highest_token, scope FROM jobs WHERE job = ?",
                         (job,)).fetchone()
        if row is not None and row[1] == "job":
            scope = "job"  # never downgraded by the unsigned header
        # >= and not >: an equal token comes from the same claim as the highest
        # (a retry of that firing, whose key you may have pruned). Fencing
        # refuses only an older lock holder, one whose token is lower. For
        # scope "slot" the highest is the key's, and a seen key is a repeat
        # (above): a new key is accepted whatever other slots accepted.
        if scope == "job" and row is not None and token < row[0]:
            return 409, {"status": "stale", "highest": row[0]}
        db.execute("INSERT INTO effects VALUES (?, ?, ?, ?)", (job, token, key, run_id))
        db.execute("INSERT INTO seen_keys VALUES (?, ?)", (job, key))
        # The job's highest over every scope: it fences the job if it ever sends "job".
        db.execute("INSERT INTO jobs VALUES (?, ?, ?) ON CONFLICT (job) DO UPDATE"
                   " SET highest_token = max(highest_token, excluded.highest_token),"
                   " scope = excluded.scope", (job, token, scope))
        db.execute("COMMIT")
    return 200, {"status": "accepted"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, doc):
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def handle_delivery(self):  # any method and path: the job chooses them
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self.answer(413, {"status": "error", "error": "body too large"})
        body = self.rfile.read(length)  # the raw bytes: the MAC is over them, not parsed JSON
        signature = self.headers.get("Cronfence-Signature")
        token_text = self.headers.get("Fencing-Token") or ""
        key, job = self.headers.get("Idempotency-Key"), self.headers.get("Cronfence-Job")
        if signature is None or not signature_ok(self.server.secret, signature, job or "",
                                                 token_text, key or "", body):
            return self.answer(401, {"status": "error", "error": "bad signature"})
        if not re.fullmatch(r"[0-9]{1,19}", token_text) or int(token_text) > TOKEN_MAX:
            return self.answer(400, {"status": "error", "error": "bad fencing token"})
        # Every key, scheduled or manual, is "<job>@...", and the body names the
        # job too: all three must agree, or a replay could take another job's
        # key or raise its highest token.
        named = body_job(body)
        if not key or not job or not key.startswith(job + "@") or named not in (None, job):
            return self.answer(400, {"status": "error", "error": "bad cronfence-job"})
        scope = self.headers.get("Cronfence-Fence-Scope", "job")
        if scope not in ("job", "slot"):
            return self.answer(400, {"status": "error", "error": "bad cronfence-fence-scope"})
        run_id = self.headers.get("Cronfence-Run")
        status, doc = deliver(self.server.db_path, job, int(token_text), key, run_id, scope)
        if doc["status"] == "accepted":
            line = {"job": job, "token": int(token_text), "key": key, "run_id": run_id}
            with open(self.server.effects_path, "a") as effects:
                effects.write(json.dumps(line) + "\n")
        self.answer(status, doc)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = handle_delivery

    def log_message(self, *args):
        pass


def main():
    args = sys.argv[1:] + [None] * 3
    secret = os.environ.get("CRONFENCE_SECRET", "").encode()
    if not secret:  # an empty key would let anyone sign
        sys.exit("target.py: set CRONFENCE_SECRET")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", int(args[0] or os.environ.get("PORT", "8000"))), Handler)
    server.secret = secret
    server.effects_path = args[1] or os.environ.get("EFFECTS_FILE", "effects.jsonl")
    server.db_path = args[2] or os.environ.get("STATE_DB", "target.db")
    with contextlib.closing(sqlite3.connect(server.db_path)) as db:
        db.executescript("PRAGMA journal_mode = WAL;" + SCHEMA)
        if "scope" not in [column[1] for column in db.execute("PRAGMA table_info(jobs)")]:
            # A state file from before the header: its jobs were all fenced per job.
            db.execute("ALTER TABLE jobs ADD COLUMN scope TEXT NOT NULL DEFAULT 'job'")
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
