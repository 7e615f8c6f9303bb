"""Secrets (issue 13, items 2 and 3; DESIGN §5, §6, §7): one default signing
secret per cluster, kept on the lock nodes and repaired onto a wiped one;
rotation, during which every delivery is signed under the old and the new
secret; header values and URL userinfo masked for viewers, in the API and in
their event streams; databases and logs 0600; tokens and secrets read from
files, never seen on the command line.
"""

import base64
import hashlib
import hmac
import os
import re
import stat

import pytest

from conftest import (ADMIN_TOKEN, VIEWER_TOKEN, EventStream, Instance, Receiver, wait_for)
from redisnode import start_nodes
from test_delivery import Target

NEVER = "0 0 1 1 *"  # yearly: these tests only trigger by hand


@pytest.fixture
def target():
    server = Target()
    yield server
    server.close()


def v2_entries(headers):
    header = headers["Cronfence-Signature"]
    assert re.fullmatch(r"t=\d+(,v2=[0-9a-f]{64})+", header), header
    return header.split(",")[0][2:], [part[3:] for part in header.split(",")[1:]]


def verifies_under(secret, request):
    """Whether one v2 entry and one webhook-signature entry are DESIGN §5's HMACs under secret."""
    headers, body = request["headers"], request["body"]
    t, v2s = v2_entries(headers)
    message = (f"{t}\n{headers['Cronfence-Job']}\n{headers['Fencing-Token']}\n"
               f"{headers['Idempotency-Key']}\n").encode() + body
    want_v2 = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want_v1 = "v1," + base64.b64encode(
        hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    entries = headers["webhook-signature"].split(" ")
    return (any(hmac.compare_digest(v2, want_v2) for v2 in v2s)
            and any(hmac.compare_digest(entry, want_v1) for entry in entries))


def secret_of(instance):
    reply = instance.api("GET", "/api/v1/signing-secret")
    assert reply.status == 200, reply
    return reply.json


def trigger_and_wait(instance, target, job):
    """Triggers job on instance; returns the request the target got for that run."""
    replies = []

    def triggered():
        # 409 while the previous run of the job still holds its lock (it releases after the
        # target answered); 503 when a claim round found no quorum in time on a busy machine.
        replies.append(instance.api("POST", f"/api/v1/jobs/{job}/trigger"))
        assert replies[-1].status in (202, 409, 503), replies[-1]
        return replies[-1].status == 202

    wait_for(triggered, timeout=20, interval=0.1, what=f"a manual run of {job}")
    run_id = replies[-1].json["id"]
    found = wait_for(lambda: [r for r in target.of_job(job)
                              if r["headers"].get("Cronfence-Run") == run_id],
                     timeout=20, what=f"delivery of {run_id}")
    return found[0]


def test_cluster_signs_with_one_secret_rotates_and_repairs_a_wiped_node(
        tmp_path, processes, target):
    nodes = start_nodes(tmp_path, 3)
    try:
        redis = ",".join(node.url for node in nodes)
        instances = []
        for i in range(3):
            instance = Instance(tmp_path, name=f"cf{i}",
                                args=["--redis", redis, "--instance-id", f"cf{i}"])
            processes.append(instance)
            instances.append(instance.start())

        # Started without --signing-secret, the three converge on one cluster secret.
        wait_for(lambda: len({secret_of(i)["current"] for i in instances}) == 1,
                 timeout=20, what="one signing secret on every instance")
        first = secret_of(instances[0])
        assert first["previous"] is None and first["rotated_at"] is None, first
        assert re.fullmatch(r"[0-9a-f]{64}", first["current"]), first
        wait_for(lambda: all(node.cli("HGET", "cf:secret", "current") == first["current"]
                             for node in nodes), timeout=20, what="the secret on every node")

        reply = instances[0].api("POST", "/api/v1/jobs", {
            "name": "shared", "schedule": NEVER, "webhook": {"url": target.url}})
        assert reply.status == 201, reply
        for instance in instances:
            wait_for(lambda: instance.api("GET", "/api/v1/jobs/shared").status == 200,
                     timeout=20, what=f"the job on {instance.name}")
        # A delivery from each instance verifies under the cluster's secret.
        for instance in instances:
            request = trigger_and_wait(instance, target, "shared")
            assert f'"instance":"{instance.name}"' in request["body"].decode(), request["body"]
            assert len(v2_entries(request["headers"])[1]) == 1, request["headers"]
            assert verifies_under(first["current"], request), (instance.name, request["headers"])

        # Rotation: a new current on every instance, the old one still signing.
        reply = instances[1].api("POST", "/api/v1/signing-secret/rotate")
        assert reply.status == 200, reply
        rotated = reply.json
        assert rotated["previous"] == first["current"], rotated
        assert rotated["current"] != first["current"] and rotated["rotated_at"], rotated
        wait_for(lambda: all(secret_of(i) == rotated for i in instances), timeout=20,
                 what="the rotated secret on every instance")
        for instance in instances:
            request = trigger_and_wait(instance, target, "shared")
            assert len(v2_entries(request["headers"])[1]) == 2, request["headers"]
            assert len(request["headers"]["webhook-signature"].split(" ")) == 2, request["headers"]
            assert verifies_under(first["current"], request), (instance.name, request["headers"])
            assert verifies_under(rotated["current"], request), (instance.name, request["headers"])
            assert not verifies_under("not-a-secret-of-this-cluster-000", request)

        # The reference receiver accepts them holding either secret.
        receivers = {}
        for name, secret in (("old", first["current"]), ("new", rotated["current"])):
            receivers[name] = Receiver(tmp_path, name=f"receiver-{name}", secret=secret)
            processes.append(receivers[name])
            receivers[name].start()
            reply = instances[0].api("POST", "/api/v1/jobs", {
                "name": f"rx-{name}", "schedule": NEVER,
                "webhook": {"url": receivers[name].hook()}})
            assert reply.status == 201, reply
        for name, receiver in receivers.items():
            wait_for(lambda: instances[2].api("GET", f"/api/v1/jobs/rx-{name}").status == 200,
                     timeout=20, what=f"rx-{name} on cf2")
            reply = instances[2].api("POST", f"/api/v1/jobs/rx-{name}/trigger")
            assert reply.status == 202, reply
            wait_for(lambda: receiver.deliveries(f"rx-{name}"), timeout=20,
                     what=f"receiver holding the {name} secret accepted the delivery")

        # An instance whose --signing-secret differs signs with the cluster's, and says so.
        flag_file = tmp_path / "other-secret"
        flag_file.write_text("an-instance-flag-the-cluster-overrides\n")
        late = Instance(tmp_path, name="cf3",
                        args=["--redis", redis, "--instance-id", "cf3",
                              "--signing-secret-file", str(flag_file)])
        processes.append(late)
        late.start()
        wait_for(lambda: secret_of(late) == rotated, timeout=20, what="cf3 on the cluster's secret")
        wait_for(lambda: "differs from the cluster" in late.stderr(), timeout=10,
                 what="the warning of cf3")

        # A wiped node gets the secret back.
        nodes[2].wipe()
        wait_for(lambda: nodes[2].cli("HGET", "cf:secret", "current") == rotated["current"],
                 timeout=20, what="the secret repaired onto the wiped node")
        assert nodes[2].cli("HGET", "cf:secret", "previous") == first["current"]
    finally:
        for instance in processes:
            if isinstance(instance, Instance):
                instance.stop()
        for node in nodes:
            node.kill9()


def test_a_viewer_never_sees_header_values_or_userinfo(start_instance):
    instance = start_instance()
    admin_events = EventStream(instance)
    viewer_events = EventStream(instance, token=VIEWER_TOKEN)
    try:
        assert viewer_events.status == 200
        reply = instance.api("POST", "/api/v1/jobs", {
            "name": "guarded", "schedule": NEVER,
            "webhook": {"url": "http://robot:url-password-4711@127.0.0.1:9/hook",
                        "headers": {"Authorization": "Bearer target-credential-0815",
                                    "X-Plain": "also-hidden-value"}}})
        assert reply.status == 201, reply
        # Admins see everything.
        shown = instance.api("GET", "/api/v1/jobs/guarded").json
        assert shown["webhook"]["headers"]["Authorization"] == "Bearer target-credential-0815"
        assert shown["webhook"]["url"] == "http://robot:url-password-4711@127.0.0.1:9/hook"
        event = admin_events.wait("job", lambda d: d["name"] == "guarded")
        assert event["data"]["job"]["webhook"]["headers"]["X-Plain"] == "also-hidden-value"

        # Viewers see the names, "***" for values and userinfo, in every read.
        one = instance.api("GET", "/api/v1/jobs/guarded", token="viewer")
        listed = instance.api("GET", "/api/v1/jobs", token="viewer")
        event = viewer_events.wait("job", lambda d: d["name"] == "guarded")
        for reply in (one, listed):
            assert reply.status == 200, reply
            for secret in ("target-credential-0815", "also-hidden-value", "url-password-4711",
                           "robot"):
                assert secret not in reply.body, reply.body
        for job in (one.json, listed.json["items"][0], event["data"]["job"]):
            assert job["webhook"]["headers"] == {"Authorization": "***", "X-Plain": "***"}, job
            assert job["webhook"]["url"] == "http://***@127.0.0.1:9/hook", job
        # The masked event has the admin's id: one event, two forms.
        assert event["id"] == admin_events.wait("job", lambda d: d["name"] == "guarded")["id"]
        assert instance.api("GET", "/api/v1/signing-secret", token="viewer").status == 403
        assert instance.api("POST", "/api/v1/signing-secret/rotate", token="viewer").status == 403
    finally:
        admin_events.close()
        viewer_events.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_are_owner_only_and_secrets_come_from_files(tmp_path, processes):
    token_file, secret_file = tmp_path / "admin-token", tmp_path / "signing-secret"
    token = "admin-token-read-from-a-file-0042"
    secret = "signing-secret-read-from-a-file-0042"
    token_file.write_text(token + "\n")
    secret_file.write_text(secret + "\r\n")
    db, log = tmp_path / "files.db", tmp_path / "files.log"
    # Files made before with a wider mode are narrowed at open.
    db.touch()
    log.touch()
    os.chmod(db, 0o644)
    os.chmod(log, 0o644)
    instance = Instance(tmp_path, name="files", db=db, tokens=False,
                        args=["--signing-secret-file", str(secret_file), "--log-file", str(log),
                              "--viewer-token-file", str(token_file) + "-viewer"],
                        env={"CRONFENCE_ADMIN_TOKEN_FILE": str(token_file)})
    (tmp_path / "admin-token-viewer").write_text(VIEWER_TOKEN)
    instance.token = token
    processes.append(instance)
    instance.start()

    assert instance.api("GET", "/api/v1/jobs").status == 200
    assert instance.api("GET", "/api/v1/jobs", token=ADMIN_TOKEN).status == 401
    assert instance.api("GET", "/api/v1/jobs", token="viewer").status == 200
    assert secret_of(instance)["current"] == secret
    cmdline = open(f"/proc/{instance.proc.pid}/cmdline", "rb").read()
    assert token.encode() not in cmdline and secret.encode() not in cmdline
    for path in (db, tmp_path / "files.db-wal", tmp_path / "files.db-shm", log):
        assert path.exists() and mode(path) == 0o600, (path, oct(mode(path)))

    # Standalone, the rotation is kept over a restart; the flag seeds, then rotates.
    rotated = instance.api("POST", "/api/v1/signing-secret/rotate").json
    assert rotated["previous"] == secret
    instance.stop()
    instance.start()
    assert secret_of(instance) == rotated


def test_a_token_file_that_cannot_be_read_is_refused(tmp_path):
    instance = Instance(tmp_path, name="nofile", tokens=False,
                        args=["--admin-token-file", str(tmp_path / "missing")])
    instance.start(expect_ready=False)
    assert instance.proc.wait(30) == 2
    assert "--admin-token-file: cannot read" in instance.stderr(), instance.stderr()


def test_a_replaced_job_secret_signs_for_the_overlap_only(start_instance, target):
    old, new = "job-secret-before-the-change-01", "job-secret-after-the-change-002"
    with_overlap = start_instance(name="overlap")
    without = start_instance(name="no-overlap", args=["--secret-overlap-hours", "0"])
    for instance in (with_overlap, without):
        job = {"name": "own", "schedule": NEVER, "webhook": {"url": target.url},
               "signing_secret": old}
        assert instance.api("POST", "/api/v1/jobs", job).status == 201
        reply = instance.api("PATCH", "/api/v1/jobs/own", {"signing_secret": new})
        assert reply.status == 200, reply
        # The replaced secret is kept, but never shown.
        shown = instance.api("GET", "/api/v1/jobs/own").body
        assert old not in shown and new not in shown and "previous" not in shown, shown
        request = trigger_and_wait(instance, target, "own")
        assert verifies_under(new, request), request["headers"]
        # A rotation of the default secret does not touch a job with its own.
        assert instance.api("POST", "/api/v1/signing-secret/rotate").status == 200
        request_after_rotation = trigger_and_wait(instance, target, "own")
        if instance is with_overlap:
            assert verifies_under(old, request), request["headers"]
            assert len(v2_entries(request_after_rotation["headers"])[1]) == 2
        else:
            assert not verifies_under(old, request), request["headers"]
            assert len(v2_entries(request_after_rotation["headers"])[1]) == 1

        # Back to the default: the job's own secret signs beside it for the overlap.
        reply = instance.api("PATCH", "/api/v1/jobs/own", {"signing_secret": None})
        assert reply.status == 200, reply
        current = secret_of(instance)
        request = trigger_and_wait(instance, target, "own")
        assert verifies_under(current["current"], request), request["headers"]
        assert verifies_under(new, request) == (instance is with_overlap), request["headers"]
        # The default's previous signs only within the overlap of its rotation.
        if instance is with_overlap:
            assert current["previous"] and verifies_under(current["previous"], request), current
            assert len(v2_entries(request["headers"])[1]) == 3, request["headers"]
        else:
            assert current["previous"] is None, current
            assert len(v2_entries(request["headers"])[1]) == 1, request["headers"]
