"""Logs: --log-format json writes one JSON object per line, the text format
stays `<ts> <level> <message> key=value...`, no secret or webhook body is
logged at info level, and SIGHUP reopens --log-file after rotation."""

import json
import os
import re
import signal
import subprocess

from conftest import ADMIN_TOKEN, BIN_DIR, SECRET, SLOW, Instance, job_body, trigger, wait_for

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
TEXT_LINE = re.compile(r"(\S+) (debug|info|warn|error) ([a-z][^=]*?)((?: [a-z_]+=(?:\"(?:[^\"\\]|\\.)*\"|\S*))*)\Z")

SIGNING_SECRET = "instance-signing-secret-never-logged-0001"
HEADER_VALUE = "Bearer target-credential-never-logged-03"
BODY_MARKER = "webhook-body-marker-never-logged-0004"


def exercise(instance, receiver):
    """Deliveries that succeed, fail with a body and are fenced; a bad token; a manual run."""
    # Every job signs with the receiver's secret (job_body), which must not be logged either.
    secret_job = job_body("secret-job", receiver.hook(),
                          webhook={"headers": {"Authorization": HEADER_VALUE},
                                   "body": {"marker": BODY_MARKER}})
    failing = job_body("failing", receiver.hook(status=500), retry={"attempts": 2,
                                                                    "backoff_ms": 100},
                       webhook={"body": {"marker": BODY_MARKER}})
    fenced = job_body("fenced", receiver.hook(status=409), retry={"attempts": 1})
    for body in (secret_job, failing, fenced):
        assert instance.api("POST", "/api/v1/jobs", body).status == 201
    trigger(instance, "secret-job")
    assert instance.api("GET", "/api/v1/jobs", token="a-wrong-token-0123456789abc").status == 401
    wait_for(lambda: instance.runs(job="failing", status="failed")
             and instance.runs(job="fenced", status="fenced")
             and len(instance.runs(job="secret-job", status="succeeded")) >= 2,
             timeout=20 * SLOW, what="deliveries of every kind")
    assert instance.api("DELETE", "/api/v1/jobs/failing").status == 204


def assert_no_secret(text):
    for secret in (SIGNING_SECRET, SECRET, HEADER_VALUE, "target-credential", BODY_MARKER,
                   ADMIN_TOKEN, "a-wrong-token"):
        assert secret not in text, f"{secret!r} was logged"


def test_json_log_lines_are_objects_with_typed_fields(tmp_path, processes, receiver):
    instance = Instance(tmp_path, args=["--log-format", "json", "--log-level", "info",
                                        "--signing-secret", SIGNING_SECRET])
    processes.append(instance)
    instance.start()
    exercise(instance, receiver)
    assert instance.stop() == 0

    lines = instance.stderr().splitlines()
    assert len(lines) >= 5, lines
    events = []
    for line in lines:
        event = json.loads(line)  # one whole object per line, nothing else
        assert isinstance(event, dict), line
        assert list(event)[:3] == ["ts", "level", "msg"], line
        assert TS.match(event["ts"]), line
        assert event["level"] in ("info", "warn", "error"), line
        assert event["msg"] and event["msg"] == event["msg"].lower(), line
        events.append(event)
    by_msg = {}
    for event in events:
        by_msg.setdefault(event["msg"], []).append(event)

    started = by_msg["cronfence started"][0]
    assert started["mode"] == "standalone" and isinstance(started["instance"], str)
    assert isinstance(started["listen"], str)
    created = {e["job"]: e for e in by_msg["job created"]}
    assert set(created) == {"secret-job", "failing", "fenced"}
    # Integers are numbers, not strings; versions come from one catalog-wide sequence.
    assert sorted(e["version"] for e in created.values()) == [1, 2, 3]
    finished = [e for e in by_msg["run finished"] if e["job"] == "failing"]
    assert finished and finished[0]["status"] == "failed" and finished[0]["http_status"] == 500
    assert finished[0]["attempts"] == 2 and finished[0]["error"] == "http status 500"
    assert isinstance(finished[0]["token"], int) and finished[0]["token"] > 0
    assert any(e["job"] == "fenced" and e["status"] == "fenced" for e in by_msg["run finished"])
    assert by_msg["job deleted"][0]["job"] == "failing"
    assert "stopping" in by_msg and "stopped" in by_msg
    assert_no_secret("\n".join(lines))


def test_text_log_is_message_then_key_values(tmp_path, processes, receiver):
    instance = Instance(tmp_path, args=["--signing-secret", SIGNING_SECRET])
    processes.append(instance)
    instance.start()
    exercise(instance, receiver)
    assert instance.stop() == 0

    lines = instance.stderr().splitlines()
    assert lines
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match and TS.match(match.group(1)), f"not <ts> <level> <message> k=v: {line!r}"
        assert not line.startswith("{"), line
    assert any(re.search(r" info job created job=fenced version=\d+\Z", line) for line in lines)
    assert any('run finished job=failing' in line and 'error="http status 500"' in line
               for line in lines), lines
    assert_no_secret("\n".join(lines))


def test_sighup_reopens_the_log_file_after_rotation(tmp_path, processes):
    log = tmp_path / "cronfence.log"
    instance = Instance(tmp_path, args=["--log-file", str(log), "--log-format", "json"])
    processes.append(instance)
    instance.start()
    wait_for(lambda: log.exists() and "cronfence started" in log.read_text(), what="start line")
    assert instance.stderr() == "", "with --log-file nothing goes to standard error"

    rotated = tmp_path / "cronfence.log.1"
    os.rename(log, rotated)
    body = job_body("after-rotation", "http://127.0.0.1:9/hook", paused=True)
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    # Until SIGHUP, the open file (now the rotated one) keeps receiving lines.
    wait_for(lambda: "after-rotation" in rotated.read_text(), what="line in the rotated file")
    assert not log.exists()

    instance.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists() and "log reopened" in log.read_text(), what="reopened file")
    assert instance.api("DELETE", "/api/v1/jobs/after-rotation").status == 204
    assert instance.stop() == 0

    old = [json.loads(line) for line in rotated.read_text().splitlines()]
    new = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["msg"] for e in old][0] != "log reopened"
    assert "job deleted" not in [e["msg"] for e in old]
    assert [e["msg"] for e in new][0] == "log reopened"
    assert {"job deleted", "stopping", "stopped"} <= {e["msg"] for e in new}
    assert new[0]["file"] == str(log)


def test_an_unwritable_log_file_refuses_the_start(tmp_path):
    result = subprocess.run(
        [str(BIN_DIR / "cronfence"), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"),
         "--log-file", str(tmp_path / "missing" / "x.log")],
        capture_output=True, text=True, timeout=30 * SLOW)
    assert result.returncode == 1, result
    assert "cannot open the log file" in result.stderr, result.stderr
    assert not (tmp_path / "x.db").exists(), "nothing is started before the log is open"


def json_lines(text, where):
    """The JSON objects of text, one a line; fails naming the first line that is not one."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{where}: not JSON: {line!r}")
        assert isinstance(event, dict) and list(event)[:3] == ["ts", "level", "msg"], line
        events.append(event)
    return events


def test_json_mode_writes_only_json_on_stdout_and_stderr(tmp_path, processes):
    """Tokenless, so the dashboard line is printed too: the announcements on standard output
    are JSON objects like the log, and a start that fails says so in JSON as well."""
    instance = Instance(tmp_path, tokens=False, args=["--log-format", "json"])
    processes.append(instance)
    instance.start()
    assert instance.api("GET", "/api/v1/jobs").status == 200  # the token came from JSON
    assert instance.stop() == 0
    out = json_lines("\n".join(instance.stdout_lines), "stdout")
    assert [e["msg"] for e in out] == ["listening on", "dashboard"], out
    assert out[0]["listen"] == f"127.0.0.1:{instance.port}"
    assert out[1]["url"] == f"http://127.0.0.1:{instance.port}/#token={instance.token}"
    assert json_lines(instance.stderr(), "stderr")

    # A start that fails (the database's folder is missing), logging to a file: the
    # error line on standard error is JSON too, and so is the file.
    log = tmp_path / "failed.log"
    result = subprocess.run(
        [str(BIN_DIR / "cronfence"), "--listen", "127.0.0.1:0", "--log-format", "json",
         "--log-file", str(log), "--admin-token", ADMIN_TOKEN,
         "--db", str(tmp_path / "missing" / "cronfence.db")],
        capture_output=True, text=True, timeout=60 * SLOW)
    assert result.returncode != 0
    assert result.stdout == ""
    errors = json_lines(result.stderr, "stderr of a failed start")
    assert [e["msg"] for e in errors] == ["cannot start"] and errors[0]["level"] == "error"
    assert "cannot open database" in errors[0]["error"]
    assert any(e["msg"] == "cannot start" for e in json_lines(log.read_text(), "log file"))


def test_started_line_logs_the_bound_address_and_the_advertised_url(tmp_path, processes):
    everywhere = Instance(tmp_path, name="everywhere",
                          args=["--listen", "0.0.0.0:0", "--log-format", "json"])
    processes.append(everywhere)
    everywhere.start()
    assert everywhere.api("GET", "/healthz", token=None).status == 200
    assert everywhere.stop() == 0
    listening = json_lines("\n".join(everywhere.stdout_lines), "stdout")[0]
    assert listening["listen"] == f"0.0.0.0:{everywhere.port}"
    started = next(e for e in json_lines(everywhere.stderr(), "stderr")
                   if e["msg"] == "cronfence started")
    assert started["listen"] == f"0.0.0.0:{everywhere.port}", started
    assert started["advertise"] == f"http://127.0.0.1:{everywhere.port}", started

    advertised = Instance(tmp_path, name="advertised",
                          args=["--advertise", "http://cron-1.example.net:8080"])
    processes.append(advertised)
    advertised.start()
    assert advertised.stop() == 0
    assert advertised.stdout_lines[0] == f"listening on 127.0.0.1:{advertised.port}"
    assert re.search(rf" info cronfence started .*listen=127\.0\.0\.1:{advertised.port} "
                     r"advertise=http://cron-1\.example\.net:8080 ", advertised.stderr()), \
        advertised.stderr()
