"""The example webhook targets of api/targets/ (DESIGN §5), in each language
whose toolchain is installed: each is started for real, fed real deliveries by
a real cronfence, then hand-made requests signed here with the formula of §5.
One more test sends the same signed request to every target and to
cronfence-receiver, so that all of them and this file agree on the signature.

Compiled targets are built into a temporary folder, never into the repository.
Go builds offline: GOPROXY=off, with its caches in that folder (HOME may be
unset).
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, SANITIZED, SLOW, Process, Receiver, http, iso, job_body, wait_for

TARGETS = REPO / "api" / "targets"
LANGUAGES = ["c", "python", "node", "go"]
SECRET = "example-target-secret-0123456789"  # the instance's --signing-secret
TOKEN_MAX = 2**63 - 1
BUILD_TIMEOUT = 300


class Builder:
    """Builds each example target once per session; argv(language) gives the
    command line to start it, or skips the test when the toolchain is missing."""

    def __init__(self, folder):
        self.folder = folder
        self.results = {}  # language -> argv, or the reason to skip

    def argv(self, language):
        if language not in self.results:
            self.results[language] = getattr(self, "_build_" + language)()
        result = self.results[language]
        if isinstance(result, str):
            pytest.skip(result)
        return result

    def _run(self, argv, **kwargs):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, **kwargs)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}"

    def _build_c(self):
        missing = [tool for tool in ("cc", "pkg-config") if shutil.which(tool) is None]
        if missing:
            return f"C target not tested: {' and '.join(missing)} not installed"
        libs = subprocess.run(["pkg-config", "--cflags", "--libs", "libmicrohttpd", "jansson",
                               "libcrypto"], capture_output=True, text=True)
        if libs.returncode != 0:
            return ("C target not tested: libmicrohttpd, jansson or libcrypto development files "
                    "missing")
        binary = self.folder / "target-c"
        flags = ["-O2", "-g", "-Wall", "-Wextra", "-Wshadow", "-Wformat=2",
                 "-Wmissing-prototypes", "-Werror"]
        if SANITIZED:
            flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                      "-fno-sanitize-recover=undefined"]
        self._run(["cc", *flags, "-o", str(binary), str(TARGETS / "c" / "target.c"),
                   *libs.stdout.split()])
        return [str(binary)]

    def _build_python(self):
        return [sys.executable, str(TARGETS / "python" / "target.py")]

    def _build_node(self):
        if shutil.which("node") is None:
            return "Node.js target not tested: node not installed"
        return ["node", str(TARGETS / "node" / "target.mjs")]

    def _build_go(self):
        if shutil.which("go") is None:
            return "Go target not tested: go not installed (Debian: apt-get install golang-go)"
        binary = self.folder / "target-go"
        env = dict(os.environ,
                   GOCACHE=str(self.folder / "go-cache"), GOPATH=str(self.folder / "go-path"),
                   GOPROXY="off", GOFLAGS="", GOENV="off", GOTOOLCHAIN="local",
                   GOTELEMETRY="off")
        # -buildvcs=false: no git stamping, which fails in some checkouts.
        self._run(["go", "build", "-buildvcs=false", "-o", str(binary), "."],
                  cwd=TARGETS / "go", env=env)
        return [str(binary)]


@pytest.fixture(scope="session")
def builder(tmp_path_factory):
    return Builder(tmp_path_factory.mktemp("targets-build"))


@pytest.fixture
def targets():
    """Started example targets, stopped by pid at the end and checked for sanitizer
    reports (their exit status after SIGTERM is not checked: only the C one traps it)."""
    started = []
    yield started
    for process in started:
        process.stop()
    for process in started:
        process.check_clean()


class Target(Process):
    """An example target; effects() reads the JSON lines of its effect file."""

    def __init__(self, argv, workdir, language, secret=SECRET):
        self.effects_path = workdir / f"{language}-effects.jsonl"
        args = ["0", str(self.effects_path)]
        if language == "python":
            args.append(str(workdir / "python-state.db"))
        super().__init__(argv + args, dict(os.environ, CRONFENCE_SECRET=secret), workdir,
                         f"target-{language}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def effects(self, job=None):
        if not self.effects_path.exists():
            return []
        lines = [json.loads(line) for line in self.effects_path.read_text().splitlines()]
        return [line for line in lines if job is None or line["job"] == job]


def start_target(builder, language, tmp_path, targets):
    target = Target(builder.argv(language), tmp_path, language)
    targets.append(target)
    return target.start()


def signature(secret, t, job, token, key, body):
    """Cronfence-Signature as DESIGN §5 defines it (v2)."""
    message = f"{t}\n{job}\n{token}\n{key}\n".encode() + body
    return f"t={t},v2=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def webhook_signature(secret, webhook_id, t, body):
    """The Standard Webhooks webhook-signature of DESIGN §5."""
    message = f"{webhook_id}.{t}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), message,
                                             hashlib.sha256).digest()).decode()


def delivery(job, token, key, body=None, secret=SECRET, age_s=0, sign=True, scope=None):
    """(headers, body) of a hand-made delivery, signed age_s seconds ago, with
    Cronfence-Fence-Scope: scope unless scope is None."""
    if body is None:
        body = json.dumps({"job": job, "run_id": key, "fencing_token": token, "attempt": 1,
                           "trigger": "manual", "payload": None}).encode()
    headers = {"Content-Type": "application/json", "Fencing-Token": str(token),
               "Idempotency-Key": key, "Cronfence-Job": job, "Cronfence-Run": key,
               "Cronfence-Attempt": "1"}
    if scope is not None:
        headers["Cronfence-Fence-Scope"] = scope
    if sign:
        t = int(time.time()) - age_s
        headers["Cronfence-Signature"] = signature(secret, t, job, token, key, body)
        headers["webhook-id"] = key
        headers["webhook-timestamp"] = str(t)
        headers["webhook-signature"] = webhook_signature(secret, key, t, body)
    return headers, body


def post(target, request, status, effect=False, what=""):
    """Sends a hand-made request; asserts its status and that it caused one new
    effect line (effect=True) or none. Returns the reply."""
    headers, body = request
    before = target.effects()
    reply = http("POST", target.url, body, headers)
    assert reply.status == status, f"{target.name}, {what}: {reply}"
    after = target.effects()
    assert after[:len(before)] == before, f"{target.name}, {what}: effects rewritten"
    assert len(after) - len(before) == (1 if effect else 0), \
        f"{target.name}, {what}: effects {after[len(before):]}"
    return reply


class ReceiverTarget:
    """cronfence-receiver seen as a Target: its --log lines are its effects."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.name = "cronfence-receiver"
        self.url = receiver.hook()

    def effects(self, job=None):
        return self.receiver.deliveries(job)


def settled_runs(instance, job):
    """The job's runs once none is running."""
    def settled():
        runs = instance.runs(job=job)
        return None if any(r["status"] == "running" for r in runs) else runs
    return wait_for(settled, what=f"no run of {job} in flight")


@pytest.mark.parametrize("language", LANGUAGES)
def test_example_target_follows_the_webhook_contract(language, builder, tmp_path, start_instance,
                                                     targets):
    target = start_target(builder, language, tmp_path, targets)
    instance = start_instance(args=["--signing-secret", SECRET])
    body = job_body("tick", target.url)
    del body["signing_secret"]  # signed with the instance's default, SECRET
    assert instance.api("POST", "/api/v1/jobs", body).status == 201

    # Real deliveries: accepted, each effect recorded once, tokens increasing.
    wait_for(lambda: len(target.effects("tick")) >= 3, timeout=15, what="three effects")
    # Then once a year only, and one manual run, whose key is tick@manual-<run id>.
    reply = instance.api("PATCH", "/api/v1/jobs/tick", {"schedule": "0 0 1 1 *"},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply
    time.sleep(0.5 * SLOW)  # a slot claimed just before the change has its run row by now
    settled_runs(instance, "tick")
    manual = instance.api("POST", "/api/v1/jobs/tick/trigger")
    assert manual.status == 202, manual
    runs = settled_runs(instance, "tick")
    delivered = [r for r in runs if r["status"] not in ("skipped", "missed")]
    assert delivered and all(r["status"] == "succeeded" for r in delivered), delivered
    effects = target.effects()
    assert sorted(e["run_id"] for e in effects) == sorted(r["id"] for r in delivered), \
        (effects, delivered)
    tokens = [e["token"] for e in effects]
    assert all(b > a for a, b in zip(tokens, tokens[1:])), tokens
    for effect in effects:
        run = next(r for r in delivered if r["id"] == effect["run_id"])
        assert effect["job"] == "tick" and effect["token"] == run["fencing_token"], (effect, run)
        scheduled = run["trigger"] == "schedule"
        assert effect["key"] == (f"tick@{run['scheduled_at']}" if scheduled
                                 else f"tick@manual-{run['id']}"), run
    assert effects[-1]["run_id"] == manual.json["id"]
    highest, first = effects[-1]["token"], effects[0]

    # Hand-made requests for the same job.
    seconds = itertools.count(946684800)  # 2000-01-01: never one of the job's real slots

    def fresh_key():
        return f"tick@{iso(next(seconds) * 1000)}"

    key = fresh_key()
    post(target, delivery("tick", highest, key, secret="not-the-secret-0123456789"), 401,
         what="signed with another secret")
    headers, signed_body = delivery("tick", highest, key)
    post(target, (headers, signed_body + b" "), 401, what="body changed after signing")
    headers, data = delivery("tick", highest, key)
    post(target, (dict(headers, **{"Fencing-Token": str(highest + 1)}), data), 401,
         what="token changed after signing")
    post(target, delivery("tick", highest, key, sign=False), 401, what="no signature")
    headers, data = delivery("tick", highest, key)
    t_part, v2_part = headers["Cronfence-Signature"].split(",")
    # The retired v1 (no job in it), even computed right, is no signature any more.
    v1 = hmac.new(SECRET.encode(), f"{t_part[2:]}\n{highest}\n{key}\n".encode() + data,
                  hashlib.sha256).hexdigest()
    for bad in (v2_part, t_part, f"{t_part},v2=" + "zz" * 32, f"{t_part},v2=" + "ab" * 31,
                f"{t_part},{v2_part}00", "t=-5," + v2_part, "garbage", f"{t_part},v1={v1}"):
        post(target, (dict(headers, **{"Cronfence-Signature": bad}), data), 401,
             what=f"malformed signature {bad!r}")
    post(target, delivery("tick", highest, key, age_s=400), 401, what="t 400 s old")
    post(target, delivery("tick", highest, key, age_s=-400), 401, what="t 400 s ahead")

    # A replayed key answers 200 and does nothing, even with a token that is now stale.
    reply = post(target, delivery("tick", first["token"], first["key"]), 200,
                 what="replay of the first real delivery")
    assert reply.json["status"] == "duplicate", reply
    # A lower token for the job is refused.
    reply = post(target, delivery("tick", highest - 1, fresh_key()), 409, what="lower token")
    assert reply.json["status"] == "stale", reply
    # The highest token again with a new key is accepted (>=, not >), once.
    request = delivery("tick", highest, key)
    reply = post(target, request, 200, effect=True, what="equal token, new key")
    assert reply.json["status"] == "accepted", reply
    assert target.effects()[-1] == {"job": "tick", "token": highest, "key": key, "run_id": key}
    reply = post(target, request, 200, what="the same request again")
    assert reply.json["status"] == "duplicate", reply
    # v2 signs Cronfence-Job: a signed request may not be replayed under another job.
    headers, data = delivery("tick", highest + 1, fresh_key())
    post(target, (dict(headers, **{"Cronfence-Job": "other"}), data), 401,
         what="job changed after signing")
    # Signed for a job, the key and the body must name it too.
    headers, data = delivery("tick", highest + 1, fresh_key())
    post(target, delivery("other", highest + 1, headers["Idempotency-Key"], body=data), 400,
         what="job not the key's")
    post(target, delivery("tick", highest + 1, "tick-manual-1234", body=data), 400,
         what="key without <job>@")
    other_body = json.dumps({"job": "other", "fencing_token": highest + 1}).encode()
    post(target, delivery("tick", highest + 1, fresh_key(), body=other_body), 400,
         what="job not the body's")
    post(target, delivery("tick", highest + 1, fresh_key(), body=b"raw,csv\n"), 200,
         effect=True, what="a raw body names no job")
    # Four minutes old is still fresh.
    post(target, delivery("tick", highest + 1, fresh_key(), age_s=240), 200, effect=True,
         what="t 240 s old")

    # Tokens are 64-bit: 2^63-1 is kept exactly, one below it is lower, 2^63 is no token.
    post(target, delivery("big", TOKEN_MAX, "big@1"), 200, effect=True, what="token 2^63-1")
    assert target.effects("big")[-1]["token"] == TOKEN_MAX, target.effects("big")
    post(target, delivery("big", TOKEN_MAX - 1, "big@2"), 409, what="token 2^63-2")
    for bad in (str(TOKEN_MAX + 1), "-1", "+1", "1e3", ""):
        headers, data = delivery("big", 0, "big@3")
        headers["Fencing-Token"] = bad
        headers["Cronfence-Signature"] = signature(SECRET, int(time.time()), "big", bad, "big@3",
                                                   data)
        post(target, (headers, data), 400, what=f"token {bad!r}")


def test_targets_and_reference_receiver_agree_on_one_signed_request(builder, tmp_path, processes,
                                                                    targets):
    """The same bytes, signed here, to every example target and to
    cronfence-receiver: all refuse the forged and the stale, all accept the good."""
    receiver = Receiver(tmp_path, secret=SECRET)
    processes.append(receiver)
    receiver.start()
    urls = {"cronfence-receiver": receiver.hook()}
    for language in LANGUAGES:
        try:
            urls[language] = start_target(builder, language, tmp_path, targets).url
        except pytest.skip.Exception:
            pass  # the per-language test reports the skip

    job, token, key = "agree", 8589934593, "agree@2026-11-21T08:00:00.000Z"
    body = json.dumps({"job": job, "run_id": "agree@1795248000000",
                       "scheduled_at": "2026-11-21T08:00:00.000Z", "fencing_token": token,
                       "attempt": 1, "instance": "cf-test", "trigger": "schedule",
                       "payload": {"kind": "daily", "text": "caf\u00e9 \u2603"}},
                      ensure_ascii=False).encode()
    good = delivery(job, token, key, body=body)
    good[0]["Cronfence-Run"] = "agree@1795248000000"
    forged = (good[0], body.replace(b"daily", b"weekly"))
    stale = delivery(job, token, key, body=body, age_s=400)
    stale[0]["Cronfence-Run"] = "agree@1795248000000"
    for name, url in urls.items():
        for what, (headers, data), status in (("forged", forged, 401), ("stale", stale, 401),
                                              ("good", good, 200)):
            reply = http("POST", url, data, headers)
            assert reply.status == status, f"{name} answered {what} request: {reply}"
        assert reply.json["status"] == "accepted", (name, reply)
    assert [d["idempotency_key"] for d in receiver.deliveries(job)] == [key]


@pytest.mark.parametrize("name", ["cronfence-receiver"] + LANGUAGES)
def test_fence_scope_slot_accepts_overlapping_slots_out_of_token_order(name, builder, tmp_path,
                                                                        processes, targets):
    """DESIGN §3 Overlap, §5, issue 11: an allow job's slots :37 and :38 overlap,
    and :37 (claimed first, lower token) reaches the target 43 ms after :38.
    With Cronfence-Fence-Scope: slot both are accepted; the same pair with
    scope job (or no header) is a stale delivery. The header is not signed, so
    a job seen with scope job is never downgraded to slot."""
    if name == "cronfence-receiver":
        receiver = Receiver(tmp_path, secret=SECRET)
        processes.append(receiver)
        target = ReceiverTarget(receiver.start())
    else:
        target = start_target(builder, name, tmp_path, targets)
    low = 8589934593  # slot :37's token; :38 was claimed after it, so minted above
    high = low + 65536

    def key(job, minute):
        return f"{job}@2026-11-21T08:{minute:02d}:00.000Z"

    # overlap allow: :38 first, then :37 with its lower token. Both do their work.
    post(target, delivery("overlap", high, key("overlap", 38), scope="slot"), 200, effect=True,
         what="slot :38")
    reply = post(target, delivery("overlap", low, key("overlap", 37), scope="slot"), 200,
                 effect=True, what="slot :37 after :38, scope slot")
    assert reply.json["status"] == "accepted", reply
    # Per slot, a key is still done once, whatever its token.
    for token in (low, low - 1, high + 1):
        reply = post(target, delivery("overlap", token, key("overlap", 37), scope="slot"), 200,
                     what=f"slot :37 again, token {token}")
        assert reply.json["status"] == "duplicate", reply

    # overlap forbid or queue, and a delivery without the header: per job.
    for job, scope in (("serial", "job"), ("legacy", None)):
        post(target, delivery(job, high, key(job, 38), scope=scope), 200, effect=True,
             what=f"{job} :38")
        reply = post(target, delivery(job, low, key(job, 37), scope=scope), 409,
                     what=f"{job} :37 after :38, scope {scope}")
        assert reply.json["status"] == "stale" and reply.json["highest"] == high, reply
        # A job seen with scope job stays job: "slot" does not let the stale one in.
        reply = post(target, delivery(job, low, key(job, 36), scope="slot"), 409,
                     what=f"{job} :36 downgraded to slot")
        assert reply.json["highest"] == high, reply

    # An allow job turned forbid: scope job compares with the highest of every slot...
    post(target, delivery("overlap", high - 1, key("overlap", 39), scope="job"), 409,
         what="overlap :39 below :38's token, scope job")
    newest = high + 65536
    post(target, delivery("overlap", newest, key("overlap", 40), scope="job"), 200, effect=True,
         what="overlap :40, scope job")
    # ...and from then on the job is fenced per job, whatever a delivery says.
    post(target, delivery("overlap", newest - 1, key("overlap", 41), scope="slot"), 409,
         what="overlap :41 below :40's token, scope slot")

    # Only "job" and "slot" are scopes.
    for bad in ("Slot", "per-slot", ""):
        post(target, delivery("overlap", newest * 2, key("overlap", 42), scope=bad), 400,
             what=f"scope {bad!r}")

    # Every accepted effect, in order: the two slots out of token order, then :40.
    keys = [e.get("key", e.get("idempotency_key")) for e in target.effects("overlap")]
    assert keys == [key("overlap", 38), key("overlap", 37), key("overlap", 40)], keys
