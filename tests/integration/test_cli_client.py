"""The command-line client in the cronfence binary (DESIGN §7, issue 14 item 4):
apply/export (jobs as code), jobs and runs commands, tables and --output json,
exit codes, and the POST /api/v1/jobs/validate endpoint apply relies on."""

import json
import os
import re
import subprocess

import pytest

from conftest import (ADMIN_TOKEN, BIN_DIR, SANITIZER_MARKERS, SLOW, VIEWER_TOKEN, wait_for)

BINARY = str(BIN_DIR / "cronfence")
CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, deliveries fail fast


def cli(instance, *args, token=ADMIN_TOKEN, stdin=None, env=None):
    """Runs `cronfence ARGS` against instance; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRONFENCE_")}
    if instance is not None:
        full_env["CRONFENCE_URL"] = instance.url
    if token is not None:
        full_env["CRONFENCE_TOKEN"] = token
    full_env.update(env or {})
    done = subprocess.run([BINARY, *args], capture_output=True, text=True, input=stdin,
                          env=full_env, timeout=60 * SLOW)
    for marker in SANITIZER_MARKERS:
        assert marker not in done.stderr, done.stderr
    return done


def versions(instance):
    reply = instance.api("GET", "/api/v1/jobs?limit=500")
    assert reply.status == 200, reply
    return {job["name"]: job["version"] for job in reply.json["items"]}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


JOBS_YAML = f"""\
# three jobs, with the types a YAML file can get wrong
jobs:
  - name: alpha
    schedule: "0 8 * * *"
    timezone: Europe/Berlin
    webhook:
      url: {CLOSED}/alpha
      headers:
        X-Team: reports
      body: {{count: 1, label: "1", enabled: true, nothing: null}}
  - name: beta
    schedule: "@every 1h"
    paused: true
    retry: {{attempts: 5, backoff_ms: 250}}
    webhook: {{url: "{CLOSED}/beta", method: PUT}}
  - name: gamma
    schedule: "*/5 * * * *"
    signing_secret: "gamma-secret-0123456789"
    webhook: {{url: "{CLOSED}/gamma"}}
"""


def test_apply_creates_and_reapply_moves_only_the_changed_jobs_version(instance, tmp_path):
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    first = cli(instance, "apply", "-f", path)
    assert first.returncode == 0, first.stderr
    assert re.search(r"^created\s+alpha \(version \d+\)$", first.stdout, re.M), first.stdout
    assert "3 created, 0 changed, 0 unchanged, 0 deleted" in first.stdout
    created = versions(instance)
    assert set(created) == {"alpha", "beta", "gamma"}

    # The file's types reached the server as typed: ints, bools, null, a quoted "1".
    alpha = instance.api("GET", "/api/v1/jobs/alpha").json
    assert alpha["webhook"]["body"] == {"count": 1, "label": "1", "enabled": True,
                                        "nothing": None}
    assert alpha["webhook"]["headers"] == {"X-Team": "reports"}
    beta = instance.api("GET", "/api/v1/jobs/beta").json
    assert beta["paused"] is True and beta["retry"]["attempts"] == 5
    assert instance.api("GET", "/api/v1/jobs/gamma").json["signing_secret_set"] is True

    again = cli(instance, "apply", "-f", path)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 changed, 3 unchanged, 0 deleted" in again.stdout
    assert versions(instance) == created

    changed = write(tmp_path, "changed.yaml", JOBS_YAML.replace("@every 1h", "@every 2h"))
    third = cli(instance, "apply", "-f", changed, "--output", "json")
    assert third.returncode == 0, third.stderr
    report = json.loads(third.stdout)
    actions = {entry["name"]: entry["action"] for entry in report["jobs"]}
    assert actions == {"alpha": "unchanged", "beta": "changed", "gamma": "unchanged"}
    assert next(e for e in report["jobs"] if e["name"] == "beta")["changed"] == ["schedule"]
    after = versions(instance)
    assert after["alpha"] == created["alpha"] and after["gamma"] == created["gamma"]
    assert after["beta"] > created["beta"]
    assert instance.api("GET", "/api/v1/jobs/beta").json["schedule"] == "@every 2h"
    # A secret set before survives a change that does not name it.
    assert instance.api("GET", "/api/v1/jobs/gamma").json["signing_secret_set"] is True


def test_an_invalid_job_among_good_ones_changes_nothing(instance, tmp_path):
    good = write(tmp_path, "good.yaml", JOBS_YAML)
    assert cli(instance, "apply", "-f", good).returncode == 0
    before = versions(instance)
    bad = JOBS_YAML.replace('"@every 1h"', '"61 * * * *"') + f"""\
  - name: delta
    schedule: "@daily"
    webhook: {{url: "{CLOSED}/delta"}}
"""
    bad = bad.replace('"0 8 * * *"', '"0 9 * * *"')  # a valid change that must not happen
    done = cli(instance, "apply", "-f", write(tmp_path, "bad.yaml", bad), "--prune")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "jobs[1].schedule" in done.stderr, done.stderr
    assert "nothing was changed" in done.stderr
    assert done.stdout == ""
    assert versions(instance) == before
    assert instance.api("GET", "/api/v1/jobs/alpha").json["schedule"] == "0 8 * * *"

    # A file that is not YAML at all, or has no jobs list, is refused the same way.
    broken = cli(instance, "apply", "-f", write(tmp_path, "broken.yaml", "jobs: [\n  - {"))
    assert broken.returncode == 1 and "line" in broken.stderr, broken.stderr
    shapeless = cli(instance, "apply", "-f", write(tmp_path, "list.yaml", "- name: a\n"))
    assert shapeless.returncode == 1 and "jobs" in shapeless.stderr
    assert versions(instance) == before


def test_dry_run_changes_nothing(instance, tmp_path):
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    plan = cli(instance, "apply", "-f", path, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"^would create\s+alpha$", plan.stdout, re.M), plan.stdout
    assert "dry run, nothing changed: 3 created" in plan.stdout
    assert versions(instance) == {}

    assert cli(instance, "apply", "-f", path).returncode == 0
    before = versions(instance)
    changed = write(tmp_path, "changed.yaml", JOBS_YAML.replace("0 8 * * *", "0 7 * * *"))
    plan = cli(instance, "apply", "-f", changed, "--dry-run", "--prune", "--output", "json")
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["dry_run"] is True
    assert report["summary"] == {"created": 0, "changed": 1, "unchanged": 2, "deleted": 0}
    assert versions(instance) == before
    assert instance.api("GET", "/api/v1/jobs/alpha").json["schedule"] == "0 8 * * *"


def test_prune_deletes_the_jobs_missing_from_the_file(instance, tmp_path):
    assert cli(instance, "apply", "-f", write(tmp_path, "all.yaml", JOBS_YAML)).returncode == 0
    before = versions(instance)
    only_alpha = JOBS_YAML.split("  - name: beta")[0]
    path = write(tmp_path, "alpha.yaml", only_alpha)

    # Without --prune the others stay.
    kept = cli(instance, "apply", "-f", path)
    assert kept.returncode == 0 and "0 deleted" in kept.stdout
    assert versions(instance) == before

    pruned = cli(instance, "apply", "-f", path, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert re.search(r"^deleted\s+beta", pruned.stdout, re.M), pruned.stdout
    assert "0 created, 0 changed, 1 unchanged, 2 deleted" in pruned.stdout
    assert versions(instance) == {"alpha": before["alpha"]}


def test_export_round_trips(instance, tmp_path):
    assert cli(instance, "apply", "-f", write(tmp_path, "jobs.yaml", JOBS_YAML)).returncode == 0
    # A job made through the API, with strings that look like other types.
    body = {"name": "odd-types", "schedule": "0 0 1 1 *", "description": "123",
            "webhook": {"url": f"{CLOSED}/odd", "headers": {"X-Flag": "true", "X-Num": "007"},
                        "body": {"n": "null", "list": [1, "2", 3.5, False, None, {}],
                                 "text": "line one\nline two: colon"}},
            "overlap": "allow", "catchup": "latest"}
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    before = versions(instance)

    exported = cli(instance, "export")
    assert exported.returncode == 0, exported.stderr
    assert "gamma-secret" not in exported.stdout and "signing_secret" not in exported.stdout
    for read_only in ("version:", "created_at:", "updated_at:", "next_fire_at:", "last_run:"):
        assert read_only not in exported.stdout
    path = write(tmp_path, "export.yaml", exported.stdout)
    again = cli(instance, "apply", "-f", path, "--prune")
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 changed, 4 unchanged, 0 deleted" in again.stdout, again.stdout
    assert versions(instance) == before
    assert instance.api("GET", "/api/v1/jobs/gamma").json["signing_secret_set"] is True

    # The JSON export round-trips too, into an empty instance: the same jobs.
    as_json = cli(instance, "export", "--output", "json")
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    odd = next(job for job in doc["jobs"] if job["name"] == "odd-types")
    assert odd["webhook"]["body"] == body["webhook"]["body"]
    assert odd["description"] == "123" and odd["webhook"]["headers"]["X-Num"] == "007"
    json_path = write(tmp_path, "export.json", as_json.stdout)
    assert cli(instance, "apply", "-f", json_path).stdout.endswith(
        "0 created, 0 changed, 4 unchanged, 0 deleted\n")


def test_jobs_and_runs_commands(instance, tmp_path):
    assert cli(instance, "apply", "-f", write(tmp_path, "jobs.yaml", JOBS_YAML)).returncode == 0

    listed = cli(instance, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "PAUSED", "NEXT", "FIRE",
                                "LAST", "RUN", "VERSION"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "beta", "gamma"]
    # Aligned: every row's TIMEZONE column starts where its header does.
    column = lines[0].index("TIMEZONE")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines[1:])
    as_json = json.loads(cli(instance, "jobs", "list", "--output", "json").stdout)
    assert [job["name"] for job in as_json] == ["alpha", "beta", "gamma"]

    got = cli(instance, "jobs", "get", "alpha")
    assert got.returncode == 0 and "name: alpha\n" in got.stdout
    assert "X-Team: reports" in got.stdout
    assert json.loads(cli(instance, "jobs", "get", "alpha", "-o", "json").stdout)["name"] == "alpha"

    paused = cli(instance, "jobs", "pause", "alpha")
    assert paused.returncode == 0 and paused.stdout.startswith("paused alpha (version ")
    assert instance.api("GET", "/api/v1/jobs/alpha").json["paused"] is True
    resumed = cli(instance, "jobs", "resume", "alpha", "--output", "json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False

    triggered = cli(instance, "jobs", "trigger", "gamma", "--output", "json")
    assert triggered.returncode == 0, triggered.stderr
    run = json.loads(triggered.stdout)
    assert run["job"] == "gamma" and run["trigger"] == "manual"
    table = cli(instance, "jobs", "trigger", "alpha")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == [
        "ID", "JOB", "TRIGGER", "STATUS"]

    runs = cli(instance, "runs", "list", "--job", "gamma")
    assert runs.returncode == 0, runs.stderr
    assert run["id"] in runs.stdout
    assert len(runs.stdout.splitlines()) == 2  # the header and the one run of gamma
    assert json.loads(cli(instance, "runs", "list", "--job", "beta", "-o", "json").stdout) == []
    one = json.loads(cli(instance, "runs", "get", run["id"], "--output", "json").stdout)
    assert one["id"] == run["id"]
    # The run ends failed (nothing listens), then a filter by status finds it.
    wait_for(lambda: instance.api("GET", f"/api/v1/runs/{run['id']}").json["status"] != "running",
             timeout=30, what="the manual run to end")
    failed = json.loads(cli(instance, "runs", "list", "--status", "failed", "--limit", "500",
                            "-o", "json").stdout)
    assert run["id"] in [item["id"] for item in failed]

    # runs retry reports the server's answer: a manual run is not retried (DESIGN §3), so
    # the server refuses, and the client says why with exit 1.
    retried = cli(instance, "runs", "retry", run["id"])
    assert retried.returncode == 1, (retried.stdout, retried.stderr)
    assert retried.stderr.startswith("error: ") and "(HTTP 4" in retried.stderr, retried.stderr

    deleted = cli(instance, "jobs", "delete", "beta")
    assert deleted.returncode == 0 and deleted.stdout == "deleted beta\n"
    assert instance.api("GET", "/api/v1/jobs/beta").status == 404


def test_exit_codes_and_errors(instance, tmp_path):
    # 1: refused by the server, its problem printed readably.
    missing = cli(instance, "jobs", "get", "no-such-job")
    assert missing.returncode == 1
    assert missing.stderr == "error: no job named no-such-job (HTTP 404)\n"
    # 2: usage.
    for args in (["jobs"], ["jobs", "frob"], ["jobs", "get"], ["apply"], ["export", "--prune"],
                 ["runs", "list", "--limit", "0"], ["jobs", "list", "--output", "xml"],
                 ["jobs", "get", "a", "b"], ["apply", "-f", str(tmp_path / "missing.yaml")]):
        done = cli(instance, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), (args, done.stderr)
    # 3: unreachable, or the token refused.
    nobody = cli(None, "jobs", "list", env={"CRONFENCE_URL": "http://127.0.0.1:9"})
    assert nobody.returncode == 3 and "cannot reach" in nobody.stderr
    assert cli(instance, "jobs", "list", token=None).returncode == 3
    assert cli(instance, "jobs", "list", token="wrong-token").returncode == 3
    viewer = cli(instance, "apply", "-f", write(tmp_path, "j.yaml", JOBS_YAML), token=VIEWER_TOKEN)
    assert viewer.returncode == 3 and "(HTTP 403)" in viewer.stderr
    assert versions(instance) == {}
    # Flags win over the environment; 0 with a viewer token for reads.
    flagged = cli(None, "jobs", "list", "--url", instance.url + "/", "--token", VIEWER_TOKEN,
                  env={"CRONFENCE_URL": "http://127.0.0.1:9", "CRONFENCE_TOKEN": "x"})
    assert flagged.returncode == 0, flagged.stderr

    helped = subprocess.run([BINARY, "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    for command in ("apply -f FILE", "export", "jobs list", "runs list", "runs retry"):
        assert command in helped.stdout, command


def test_validate_endpoint(instance):
    good = {"name": "one", "schedule": "@hourly", "webhook": {"url": f"{CLOSED}/one"}}
    reply = instance.api("POST", "/api/v1/jobs/validate", {"jobs": [good]}, token="viewer")
    assert reply.status == 200, reply
    normalized = reply.json["jobs"][0]
    assert normalized["timezone"] == "UTC" and normalized["retry"]["attempts"] == 3
    assert "version" not in normalized and "created_at" not in normalized

    bad = {"name": "two", "schedule": "nope", "webhook": {"url": f"{CLOSED}/two"}}
    reply = instance.api("POST", "/api/v1/jobs/validate", {"jobs": [good, bad, dict(good)]})
    assert reply.status == 422, reply
    fields = {(e.get("index"), e["field"]) for e in reply.json["errors"]}
    assert (1, "jobs[1].schedule") in fields and (2, "jobs[2].name") in fields  # duplicate name
    assert all(e.get("index") != 0 for e in reply.json["errors"])

    for body in ({}, {"jobs": {}}, {"jobs": [], "extra": 1}):
        assert instance.api("POST", "/api/v1/jobs/validate", body).status == 422, body
    assert instance.api("POST", "/api/v1/jobs/validate", {"jobs": []}).json == {
        "valid": True, "jobs": []}
    assert instance.api("POST", "/api/v1/jobs/validate", {"jobs": []}, token=None).status == 401
    assert versions(instance) == {}


def test_apply_on_a_cluster_is_a_no_op_from_any_instance(nodes, start_instance, tmp_path):
    redis = ",".join(node.url for node in nodes)
    first = start_instance(name="cf0", args=["--redis", redis, "--instance-id", "cf0"])
    second = start_instance(name="cf1", args=["--redis", redis, "--instance-id", "cf1"])
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    done = cli(first, "apply", "-f", path)
    assert done.returncode == 0, done.stderr
    created = versions(first)
    wait_for(lambda: versions(second) == created, timeout=20, what="the catalog on cf1")

    again = cli(second, "apply", "-f", path)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 changed, 3 unchanged, 0 deleted" in again.stdout
    exported = write(tmp_path, "export.yaml", cli(second, "export").stdout)
    assert "3 unchanged" in cli(first, "apply", "-f", exported, "--prune").stdout
    assert versions(first) == created and versions(second) == created
