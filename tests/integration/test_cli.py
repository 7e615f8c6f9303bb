"""The command line and environment of cronfence (DESIGN §7), schema
versions and history retention (§8)."""

import json
import os
import re
import sqlite3
import subprocess
import time

import pytest

from conftest import (ADMIN_TOKEN, BIN_DIR, SECRET, SLOW, VIEWER_TOKEN, Instance, http,
                      wait_for)

BINARY = str(BIN_DIR / "cronfence")
YEARLY = "0 0 1 1 *"

# The flags of DESIGN §7 (and the two informational ones).
FLAGS = ["--listen", "--db", "--redis", "--instance-id", "--advertise", "--admin-token",
         "--viewer-token", "--signing-secret", "--webhook-allow", "--node-quarantine-ms",
         "--history-days", "--log-level", "--log-format",
         # cluster tuning, beyond DESIGN §7
         "--redis-prefix", "--redis-timeout-ms", "--claim-stagger-ms"]


def env_name(flag):
    return "CRONFENCE_" + flag[2:].upper().replace("-", "_")


def clean_env(**extra):
    """The test environment without any CRONFENCE_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONFENCE_")}
    env.update(extra)
    return env


def run_cli(args, env=None, cwd=None, timeout=30):
    return subprocess.run([BINARY] + args, capture_output=True, text=True, cwd=cwd,
                          env=env if env is not None else clean_env(), timeout=timeout * SLOW,
                          stdin=subprocess.DEVNULL)


def assert_no_sanitizer_report(text):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, text[-4000:]


def start(processes, workdir, name="cronfence", tokens=True, token=None, **kwargs):
    """Starts an Instance; token names the admin token to use when tokens=False."""
    inst = Instance(workdir, name=name, tokens=tokens, **kwargs)
    inst.env = clean_env(**(kwargs.get("env") or {}))
    if token is not None:
        inst.token = token
    processes.append(inst)
    return inst.start()


def job(name, url="http://127.0.0.1:9/hook"):
    return {"name": name, "schedule": YEARLY, "webhook": {"url": url}}


# ---------------------------------------------------------------------------
# --help, --version, bad flags
# ---------------------------------------------------------------------------


def test_help_documents_every_flag_and_its_variable(tmp_path):
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0, result
    text = result.stdout + result.stderr
    for flag in FLAGS:
        assert re.search(re.escape(flag) + r"\b", text), f"{flag} missing from --help:\n{text}"
        assert env_name(flag) in text, f"{env_name(flag)} missing from --help:\n{text}"
    assert "--help" in text and "--version" in text
    assert_no_sanitizer_report(result.stderr)
    # --help does not start anything, nor create a database.
    assert not (tmp_path / "cronfence.db").exists()


def test_version_prints_a_semver(tmp_path):
    result = run_cli(["--version"], cwd=tmp_path)
    assert result.returncode == 0, result
    assert re.fullmatch(r"cronfence \d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?\n",
                        result.stdout), result.stdout
    assert not (tmp_path / "cronfence.db").exists()


@pytest.mark.parametrize("args, named", [
    (["--no-such-flag"], "--no-such-flag"),
    (["--listen"], "--listen"),
    (["--history-days", "abc"], "--history-days"),
    (["--history-days", "0"], "--history-days"),
    (["--history-days", "-3"], "--history-days"),
    (["--log-level", "loud"], "--log-level"),
    (["--log-format", "xml"], "--log-format"),
    (["--node-quarantine-ms", "soon"], "--node-quarantine-ms"),
    (["stray-argument"], "stray-argument"),
    (["--redis", "http://127.0.0.1:6379"], "invalid redis URL http://127.0.0.1:6379"),
    (["--redis", "redis://127.0.0.1:99999"], "port must be 1-65535"),
    (["--redis", "redis://a:1,redis://b:1,redis://a:1"], "redis node a:1 is listed twice"),
    (["--redis-timeout-ms", "0"], "--redis-timeout-ms"),
    (["--claim-stagger-ms", "-1"], "--claim-stagger-ms"),
], ids=["unknown", "missing-value", "history-abc", "history-0", "history-negative",
        "log-level-loud", "log-format-xml", "quarantine-soon", "positional", "redis-scheme",
        "redis-port", "redis-twice", "redis-timeout-0", "stagger-negative"])
def test_bad_flags_exit_non_zero_naming_the_flag(tmp_path, args, named):
    result = run_cli(["--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:0"] + args,
                     cwd=tmp_path)
    assert result.returncode != 0, result
    assert named in result.stderr, result.stderr
    assert "listening on" not in result.stdout
    assert_no_sanitizer_report(result.stderr)


@pytest.mark.parametrize("variable, value", [
    ("CRONFENCE_HISTORY_DAYS", "abc"),
    ("CRONFENCE_LOG_LEVEL", "loud"),
])
def test_bad_environment_values_exit_non_zero(tmp_path, variable, value):
    result = run_cli(["--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:0"],
                     env=clean_env(**{variable: value}), cwd=tmp_path)
    assert result.returncode != 0, result
    assert "listening on" not in result.stdout
    assert value in result.stderr, result.stderr


# ---------------------------------------------------------------------------
# Flags and the environment
# ---------------------------------------------------------------------------


def test_admin_token_from_the_environment(tmp_path, processes):
    token = "env-admin-token-0123456789abcdef"
    inst = start(processes, tmp_path, tokens=False, token=token,
                 env={"CRONFENCE_ADMIN_TOKEN": token,
                      "CRONFENCE_VIEWER_TOKEN": "env-viewer-token-0123456789abc"})
    assert not any("#token=" in line for line in inst.stdout_lines), inst.stdout_lines
    assert inst.api("POST", "/api/v1/jobs", job("from-env")).status == 201
    assert inst.api("GET", "/api/v1/jobs/from-env", token="env-viewer-token-0123456789abc") \
        .status == 200
    assert inst.api("DELETE", "/api/v1/jobs/from-env",
                    token="env-viewer-token-0123456789abc").status == 403
    assert inst.api("GET", "/api/v1/jobs", token=None).status == 401


def test_every_flag_reads_its_environment_variable(tmp_path, processes):
    """Listen address, database, instance id, advertise URL and tokens from the
    environment alone: no flag on the command line at all."""
    db = tmp_path / "from-env.db"
    env = clean_env(CRONFENCE_LISTEN="127.0.0.1:0", CRONFENCE_DB=str(db),
                    CRONFENCE_INSTANCE_ID="env-instance",
                    CRONFENCE_ADVERTISE="http://cf.example:1234",
                    CRONFENCE_ADMIN_TOKEN=ADMIN_TOKEN, CRONFENCE_VIEWER_TOKEN=VIEWER_TOKEN,
                    CRONFENCE_HISTORY_DAYS="7", CRONFENCE_LOG_LEVEL="debug",
                    CRONFENCE_LOG_FORMAT="json", CRONFENCE_NODE_QUARANTINE_MS="60000",
                    CRONFENCE_SIGNING_SECRET="env-signing-secret-0123456789",
                    CRONFENCE_WEBHOOK_ALLOW="127.0.0.1")
    inst = Instance(tmp_path, name="envonly")
    inst.argv = [BINARY]
    inst.env = env
    processes.append(inst)
    inst.start()
    assert db.exists()
    cluster = inst.api("GET", "/api/v1/cluster").json
    assert cluster["instance"]["id"] == "env-instance"
    assert cluster["instance"]["url"] == "http://cf.example:1234"
    assert inst.api("GET", "/api/v1/jobs", token="viewer").status == 200
    # --webhook-allow from the environment: only 127.0.0.1 may be reached.
    assert inst.api("POST", "/api/v1/jobs", job("allowed")).status == 201
    reply = inst.api("POST", "/api/v1/jobs", job("elsewhere", "http://203.0.113.7/hook"))
    assert reply.status == 422 and "webhook.url" in [e["field"] for e in reply.json["errors"]]
    # --log-format json and --log-level debug from the environment.
    lines = [line for line in inst.stderr().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines), lines[:5]
    assert any(json.loads(line)["level"] == "debug" for line in lines), lines


def test_a_flag_wins_over_its_environment_variable(tmp_path, processes, receiver):
    other_token = "env-token-that-the-flag-replaces-0"
    inst = start(processes, tmp_path, args=["--instance-id", "b"],
                 env={"CRONFENCE_INSTANCE_ID": "a", "CRONFENCE_ADMIN_TOKEN": other_token,
                      "CRONFENCE_LOG_LEVEL": "error"})
    cluster = inst.api("GET", "/api/v1/cluster")
    assert cluster.status == 200, cluster
    assert cluster.json["instance"]["id"] == "b"
    assert [m["id"] for m in cluster.json["members"]] == ["b"]
    # The run shows the instance too.
    body = {"name": "tick", "schedule": "* * * * * *", "webhook": {"url": receiver.hook()},
            "signing_secret": SECRET}
    assert inst.api("POST", "/api/v1/jobs", body).status == 201
    run = wait_for(lambda: inst.runs(job="tick"), what="a run")[0]
    assert run["instance"] == "b"
    # --admin-token on the command line replaces the environment's list.
    assert inst.api("GET", "/api/v1/jobs", token=other_token).status == 401
    assert inst.api("GET", "/api/v1/jobs").status == 200
    # CRONFENCE_LOG_LEVEL=error (no flag): info lines are hidden.
    assert "cronfence started" not in inst.stderr()


def test_instance_id_is_generated_once_and_kept(tmp_path, processes):
    first = start(processes, tmp_path, name="first")
    generated = first.api("GET", "/api/v1/cluster").json["instance"]["id"]
    assert generated
    assert first.stop() == 0
    second = start(processes, tmp_path, name="second", db=first.db)
    assert second.api("GET", "/api/v1/cluster").json["instance"]["id"] == generated
    assert second.stop() == 0
    third = start(processes, tmp_path, name="third", db=first.db,
                  args=["--instance-id", "explicit"])
    assert third.api("GET", "/api/v1/cluster").json["instance"]["id"] == "explicit"


def test_comma_separated_and_repeated_tokens(tmp_path, processes):
    inst = start(processes, tmp_path,
                 args=["--admin-token", "comma-one-0123456789,comma-two-0123456789",
                       "--admin-token", "repeated-0123456789",
                       "--viewer-token", "view-one-0123456789, view-two-0123456789"])
    for i, token in enumerate([ADMIN_TOKEN, "comma-one-0123456789", "comma-two-0123456789",
                               "repeated-0123456789"]):
        reply = inst.api("POST", "/api/v1/jobs", job(f"by-{i}"), token=token)
        assert reply.status == 201, (token, reply)
    for token in (VIEWER_TOKEN, "view-one-0123456789", "view-two-0123456789"):
        assert inst.api("GET", "/api/v1/jobs", token=token).status == 200, token
        assert inst.api("POST", "/api/v1/jobs", job("by-viewer"), token=token).status == 403
    for token in ("comma-one-0123456789,comma-two-0123456789", "comma-one", ""):
        assert inst.api("GET", "/api/v1/jobs", token=token or None).status == 401, token


def test_log_format_json(tmp_path, processes):
    inst = start(processes, tmp_path, args=["--log-format", "json"])
    assert inst.api("POST", "/api/v1/jobs", job("logged")).status == 201
    inst.stop()
    lines = [line for line in inst.stderr().splitlines() if line.strip()]
    assert len(lines) >= 3, lines
    messages = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        for key in ("ts", "level", "msg"):
            assert isinstance(entry.get(key), str) and entry[key], line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]), line
        messages.append(entry["msg"])
    assert "cronfence started" in messages
    assert "job created" in messages


def test_log_level_warn_hides_info(tmp_path, processes):
    chatty = start(processes, tmp_path, name="chatty")
    assert "cronfence started" in chatty.stderr()
    quiet = start(processes, tmp_path, name="quiet", args=["--log-level", "warn"])
    assert quiet.api("POST", "/api/v1/jobs", job("quiet-job")).status == 201
    text = quiet.stderr()
    assert "cronfence started" not in text, text
    assert "job created" not in text, text
    # Warnings still show: no token with a non-loopback --listen is one.
    warned = start(processes, tmp_path, name="warned", tokens=False,
                   args=["--log-level", "warn", "--listen", "0.0.0.0:0"])
    assert "loopback" in warned.stderr(), warned.stderr()


# ---------------------------------------------------------------------------
# Storage: schema versions and history retention
# ---------------------------------------------------------------------------


def test_database_newer_than_the_binary_is_refused(tmp_path, processes):
    first = start(processes, tmp_path, name="first")
    assert first.api("POST", "/api/v1/jobs", job("kept")).status == 201
    assert first.stop() == 0
    with sqlite3.connect(first.db) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                     "VALUES (9999, '9999_future.sql', 0)")
    # Not in `processes`: its exit is the point, and a refused start exits non-zero.
    refused = Instance(tmp_path, name="refused", db=first.db)
    refused.env = clean_env()
    refused.start(expect_ready=False)
    code = refused.wait_exit()
    assert code != 0
    assert not any(line.startswith("listening on") for line in refused.stdout_lines)
    assert "newer" in refused.stderr(), refused.stderr()
    refused.check_clean()
    # The database is left as it was.
    with sqlite3.connect(first.db) as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 9999
        assert conn.execute("SELECT count(*) FROM jobs WHERE name = 'kept'").fetchone()[0] == 1


def test_history_days_prunes_old_runs_in_the_background(tmp_path, processes):
    first = start(processes, tmp_path, name="first")
    assert first.stop() == 0
    now_ms = int(time.time() * 1000)
    day = 86400000
    rows = [("old-1", now_ms - 10 * day), ("old-2", now_ms - 3 * day),
            ("old-3", now_ms - 2 * day - 5000), ("recent", now_ms - 3600 * 1000)]
    with sqlite3.connect(first.db) as conn:
        for run_id, at in rows:
            conn.execute(
                "INSERT INTO runs (id, job, trigger, scheduled_at, started_at, finished_at, "
                "status, fencing_token, instance, attempts, http_status, duration_ms, "
                "lease_lost, sort_at) VALUES (?, 'history', 'manual', ?, ?, ?, 'succeeded', "
                "65536, 'old-instance', 1, 200, 5, 0, ?)",
                (run_id, at, at, at + 5, at))
    second = start(processes, tmp_path, name="second", db=first.db,
                   args=["--history-days", "1"])
    # The inserted rows are valid runs: the recent one is listed as inserted.
    recent = second.api("GET", "/api/v1/runs/recent")
    assert recent.status == 200, recent
    assert recent.json["job"] == "history" and recent.json["status"] == "succeeded"

    def only_recent_left():
        ids = [r["id"] for r in second.runs(job="history")]
        return ids == ["recent"]

    wait_for(only_recent_left, timeout=30, interval=0.25, what="old runs to be pruned")
    for run_id in ("old-1", "old-2", "old-3"):
        assert second.api("GET", f"/api/v1/runs/{run_id}").status == 404
    assert http("GET", second.url + "/healthz").status == 200


def test_history_per_job_keeps_only_the_newest_runs_of_each_job(tmp_path, processes):
    first = start(processes, tmp_path, name="first")
    # The cap applies to jobs in the catalog: create two, then give them history.
    for name in ("capped", "small"):
        body = {"name": name, "schedule": "0 0 1 1 *", "webhook": {"url": "http://127.0.0.1:9/"}}
        assert first.api("POST", "/api/v1/jobs", body).status == 201
    assert first.stop() == 0
    now_ms = int(time.time() * 1000)
    with sqlite3.connect(first.db) as conn:
        for job, count in (("capped", 2500), ("small", 5)):
            for i in range(count):
                at = now_ms - (count - i) * 1000
                conn.execute(
                    "INSERT INTO runs (id, job, trigger, scheduled_at, started_at, finished_at, "
                    "status, fencing_token, instance, attempts, http_status, duration_ms, "
                    "lease_lost, sort_at) VALUES (?, ?, 'schedule', ?, ?, ?, 'succeeded', "
                    "65536, 'old-instance', 1, 200, 5, 0, ?)",
                    (f"{job}@{at}", job, at, at, at + 5, at))
    second = start(processes, tmp_path, name="second", db=first.db,
                   args=["--history-per-job", "10"])
    # 2,500 runs take three batches of deletes: the pass must not stop after one.
    wait_for(lambda: len(second.runs(job="capped")) == 10, timeout=30, interval=0.25,
             what="runs beyond the per-job cap to be pruned")
    kept = [r["id"] for r in second.runs(job="capped")]
    assert kept == [f"capped@{now_ms - k * 1000}" for k in range(1, 11)], kept
    assert len(second.runs(job="small")) == 5
