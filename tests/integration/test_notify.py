"""Run notifications (DESIGN §5 Notifications, §7 --notify-url): signed like a
delivery, one per run cluster-wide, JSON or Slack, including "recovered"."""

import collections
import hashlib
import hmac
import json
import re
import time

import pytest

from conftest import SECRET, job_body, wait_for
from test_cluster import Cluster
from test_delivery import Target

FAR = "0 0 1 1 *"


@pytest.fixture
def hook():
    """The webhook target the jobs call."""
    server = Target()
    yield server
    server.close()


@pytest.fixture
def inbox():
    """The notification target."""
    server = Target()
    yield server
    server.close()


def verified(request, secret=SECRET):
    """The notification's JSON body, once its signatures are checked (DESIGN §5)."""
    headers = request["headers"]
    match = re.fullmatch(r"t=(\d+),v2=([0-9a-f]{64})", headers["Cronfence-Signature"])
    assert match, headers
    t, v2 = match.groups()
    key = headers["Idempotency-Key"]
    message = (f"{t}\n{headers['Cronfence-Job']}\n{headers['Fencing-Token']}\n{key}\n".encode()
               + request["body"])
    want = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v2, want), "notification signature does not verify"
    assert headers["webhook-id"] == key and headers["webhook-timestamp"] == t, headers
    assert key == f"{headers['Cronfence-Job']}@notify-{headers['Cronfence-Run']}", headers
    return json.loads(request["body"])


def notices(inbox, job):
    return [verified(r) for r in inbox.of_job(job)]


def freeze(instance, job):
    reply = instance.api("PATCH", f"/api/v1/jobs/{job}", {"schedule": FAR},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply


def test_failure_then_recovery_notified_once_each(instance, hook, inbox):
    answer = {"status": 500}
    hook.respond = lambda request, earlier: (answer["status"], {}, b"{}")
    body = job_body("alerting", hook.url, retry={"attempts": 1},
                    notify={"url": inbox.url, "on": ["failed", "recovered"]})
    reply = instance.api("POST", "/api/v1/jobs", body)
    assert reply.status == 201, reply
    assert reply.json["notify"] == {"url": inbox.url, "on": ["failed", "recovered"],
                                    "format": "json"}, reply.json

    failed = wait_for(lambda: [n for n in notices(inbox, "alerting")
                               if n["type"] == "run.failed"], timeout=20, what="run.failed")
    answer["status"] = 200
    wait_for(lambda: any(n["type"] == "run.recovered" for n in notices(inbox, "alerting")),
             timeout=20, what="run.recovered")
    # Two more successes, which notify nothing ("succeeded" is not asked for).
    wait_for(lambda: len([r for r in instance.runs(job="alerting")
                          if r["status"] == "succeeded"]) >= 3, timeout=20, what="successes")
    freeze(instance, "alerting")
    time.sleep(1.5)  # notices of the last runs still on their way

    got = notices(inbox, "alerting")
    runs = {r["id"]: r for r in instance.runs(job="alerting")}
    assert failed[0]["job"] == "alerting" and failed[0]["run"]["status"] == "failed", failed[0]
    for notice in got:
        run = runs[notice["run"]["id"]]
        assert notice["type"] == ("run.recovered" if run["status"] == "succeeded"
                                  else "run.failed"), (notice, run)
    # One notice per run; one failure notice per failed run; exactly one recovery.
    per_run = collections.Counter(n["run"]["id"] for n in got)
    assert all(count == 1 for count in per_run.values()), per_run
    failed_runs = {i for i, r in runs.items() if r["status"] == "failed"}
    assert {n["run"]["id"] for n in got if n["type"] == "run.failed"} == failed_runs
    assert len([n for n in got if n["type"] == "run.recovered"]) == 1, got
    recovered = next(n for n in got if n["type"] == "run.recovered")
    assert recovered["run"]["scheduled_at"] > max(runs[i]["scheduled_at"] for i in failed_runs)


def test_notify_url_default_in_slack_format_and_validation(start_instance, hook, inbox):
    instance = start_instance(args=["--notify-url", inbox.url])
    hook.respond = lambda request, earlier: (400, {}, b"{}")
    # No notify of its own: --notify-url applies (failures and recoveries, JSON).
    reply = instance.api("POST", "/api/v1/jobs", job_body("plain", hook.url))
    assert reply.status == 201 and reply.json["notify"] is None, reply
    notice = wait_for(lambda: notices(inbox, "plain"), timeout=20, what="default notice")[0]
    assert notice["type"] == "run.failed" and notice["run"]["http_status"] == 400, notice
    freeze(instance, "plain")

    slack = job_body("chatty", hook.url, notify={"url": inbox.url, "format": "slack"})
    assert instance.api("POST", "/api/v1/jobs", slack).status == 201
    text = wait_for(lambda: notices(inbox, "chatty"), timeout=20, what="slack notice")[0]
    assert list(text) == ["text"], text
    assert "chatty failed" in text["text"] and "http status 400" in text["text"], text
    freeze(instance, "chatty")

    for notify, field in ((({"url": inbox.url, "on": ["failed", "exploded"]}), "notify.on"),
                          ({"url": inbox.url, "format": "email"}, "notify.format"),
                          ({"url": "ftp://example.com/x"}, "notify.url"),
                          ({"url": inbox.url, "channel": "#ops"}, "notify.channel"),
                          ({"on": ["failed"]}, "notify.url")):
        reply = instance.api("POST", "/api/v1/jobs", job_body("bad-notify", hook.url,
                                                               notify=notify))
        assert reply.status == 422, (notify, reply)
        assert field in [e["field"] for e in reply.json["errors"]], (notify, reply.json)


def test_one_notification_per_run_across_a_cluster_while_one_dies(tmp_path, processes, hook,
                                                                   inbox):
    group = Cluster(tmp_path, processes).start(3)
    hang = {"on": False, "run": None}

    def respond(request, earlier):
        # Every attempt fails; once asked, the next one hangs so that its instance can die in it.
        if hang["on"] and hang["run"] is None:
            hang["run"] = json.loads(request["body"])
            time.sleep(20)
        return 500, {}, b"{}"

    try:
        hook.respond = respond
        body = job_body("shared", hook.url, retry={"attempts": 1}, lease_ms=3000,
                        notify={"url": inbox.url, "on": ["failed", "lost"]})
        assert group.instances[0].api("POST", "/api/v1/jobs", body).status == 201
        wait_for(lambda: len({n["run"]["instance"] for n in notices(inbox, "shared")}) >= 2,
                 timeout=30, what="notices from two instances")
        hang["on"] = True
        stuck = wait_for(lambda: hang["run"], timeout=20, what="a delivery in flight")
        victim = group.by_id(stuck["instance"])
        victim.kill9()
        killed_at = time.time()
        survivors = [i for i in group.instances if i is not victim]
        # Its run is marked lost by the survivors, and notified once, by one of them.
        lost = wait_for(lambda: [n for n in notices(inbox, "shared") if n["type"] == "run.lost"],
                        timeout=40, what="run.lost")
        assert lost[0]["run"]["id"] == stuck["run_id"], (lost, stuck)
        assert lost[0]["run"]["instance"] == victim.name, lost
        wait_for(lambda: len([r for r in inbox.of_job("shared")
                              if r["received"] > killed_at + 2 and
                              json.loads(r["body"])["type"] == "run.failed"]) >= 3,
                 timeout=30, what="failure notices after the kill")
        freeze(survivors[0], "shared")
        time.sleep(5)  # time for a second lost notice, were one to come

        got = notices(inbox, "shared")
        per_run = collections.Counter(n["run"]["id"] for n in got)
        assert all(count == 1 for count in per_run.values()), \
            {run: count for run, count in per_run.items() if count > 1}
        # Each notice names the instance that ran it, as the survivors' history does.
        history = {r["id"]: r for r in survivors[1].runs(job="shared")}
        for notice in got:
            if notice["run"]["id"] in history:
                run = history[notice["run"]["id"]]
                assert run["instance"] == notice["run"]["instance"], (run, notice)
                assert notice["type"] == f"run.{run['status']}", (run, notice)
        # The attempt log travelled with the run to the other instances.
        remote = [r for r in history.values() if r["status"] == "failed"
                  and r["instance"] != survivors[1].name]
        assert remote and all(len(r["attempt_log"]) == 1 and
                              r["attempt_log"][0]["http_status"] == 500 for r in remote), remote
    finally:
        group.close()
