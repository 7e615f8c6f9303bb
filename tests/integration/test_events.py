"""GET /api/v1/events: the Server-Sent Events stream the dashboard follows.

Checks what a client sees: run, job events in the order things happened,
replay of exactly the missed events after a reconnect with Last-Event-ID, a
resync when that is impossible, keepalives, access rules, 200 concurrent
streams that all get every event while the API keeps answering, and a clean
stop with streams open.
"""

import signal
import socket
import threading

import pytest

from conftest import SLOW, VIEWER_TOKEN, EventStream, http, job_body, wait_for


def event_seq(event):
    """The sequence part of an event id "<epoch>-<seq>"."""
    return int(event["id"].rsplit("-", 1)[1])


@pytest.fixture
def streams():
    """Event streams opened by a test; closed afterwards."""
    opened = []
    yield opened
    for stream in opened:
        stream.close()


def open_stream(streams, instance, **kwargs):
    stream = EventStream(instance, **kwargs)
    streams.append(stream)
    return stream


def test_job_and_run_events_follow_what_happens(instance, receiver, streams):
    stream = open_stream(streams, instance)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    wait_for(lambda: stream.retry is not None, what="the retry hint")
    assert stream.retry == 2000

    body = job_body("evt", receiver.hook(), schedule="@every 1h")
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    created = stream.wait("job", lambda d: d["name"] == "evt")
    assert created["data"]["action"] == "created"
    assert created["data"]["job"] == instance.api("GET", "/api/v1/jobs/evt").json

    run = instance.api("POST", "/api/v1/jobs/evt/trigger").json
    finished = stream.wait("run", lambda d: d["id"] == run["id"] and d["status"] == "succeeded")
    # The event carries the run as the API shows it, fencing token included.
    assert finished["data"] == instance.api("GET", f"/api/v1/runs/{run['id']}").json
    states = [e["data"]["status"] for e in stream.of("run", lambda d: d["id"] == run["id"])]
    assert states == ["running", "succeeded"]

    assert instance.api("POST", "/api/v1/jobs/evt/pause").status == 200
    paused = stream.wait("job", lambda d: d["action"] == "updated")
    assert paused["data"]["job"]["paused"] is True
    assert instance.api("DELETE", "/api/v1/jobs/evt").status == 204
    deleted = stream.wait("job", lambda d: d["action"] == "deleted")
    assert deleted["data"] == {"action": "deleted", "name": "evt", "job": None}

    # Ids are of one process and strictly increasing, in the order sent.
    ids = [e["id"] for e in stream.events]
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1
    seqs = [event_seq(e) for e in stream.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_reconnect_with_last_event_id_replays_exactly_what_was_missed(instance, receiver,
                                                                        streams):
    first = open_stream(streams, instance)
    body = job_body("replay", receiver.hook(), schedule="@every 1h", paused=True)
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    last = first.wait("job", lambda d: d["name"] == "replay")
    first.close()

    # Changes made while no client listens.
    for description in ("one", "two", "three"):
        patch = instance.api("PATCH", "/api/v1/jobs/replay", {"description": description},
                             headers={"Content-Type": "application/merge-patch+json"})
        assert patch.status == 200, patch

    again = open_stream(streams, instance, last_event_id=last["id"])
    wait_for(lambda: len(again.of("job")) >= 3, what="the missed events")
    replayed = again.of("job")
    assert [e["data"]["job"]["description"] for e in replayed] == ["one", "two", "three"]
    assert event_seq(replayed[0]) == event_seq(last) + 1
    assert again.of("resync") == []

    # A client that had seen everything gets nothing old.
    current = open_stream(streams, instance, last_event_id=replayed[-1]["id"])
    assert instance.api("PATCH", "/api/v1/jobs/replay", {"description": "four"},
                        headers={"Content-Type": "application/merge-patch+json"}).status == 200
    current.wait("job", lambda d: d["job"]["description"] == "four")
    assert [e["data"]["job"]["description"] for e in current.of("job")] == ["four"]


@pytest.mark.parametrize("last_event_id", ["12345-1", "garbage", "0-0"])
def test_an_id_that_cannot_be_replayed_starts_with_resync(instance, receiver, streams,
                                                          last_event_id):
    """After a resync the client reloads, so the stream goes on with new events only."""
    assert instance.api("POST", "/api/v1/jobs",
                        job_body("earlier", receiver.hook(), paused=True)).status == 201
    stream = open_stream(streams, instance, last_event_id=last_event_id)
    event = stream.wait("resync")
    assert event["id"] is None and event["data"]["reason"]
    assert instance.api("POST", "/api/v1/jobs",
                        job_body("later", receiver.hook(), paused=True)).status == 201
    stream.wait("job", lambda d: d["name"] == "later")
    assert [e["event"] for e in stream.events] == ["resync", "job"]


def test_an_id_from_before_a_restart_starts_with_resync(instance, receiver, streams):
    stream = open_stream(streams, instance)
    assert instance.api("POST", "/api/v1/jobs",
                        job_body("before", receiver.hook(), paused=True)).status == 201
    seen = stream.wait("job")
    stream.close()
    instance.stop()
    instance.start()
    again = open_stream(streams, instance, last_event_id=seen["id"])
    assert again.wait("resync")["data"]["reason"] == "unknown event id"


def test_access(instance, streams):
    viewer = open_stream(streams, instance, token=VIEWER_TOKEN)
    assert viewer.status == 200
    assert viewer.headers["Cronfence-Access"] == "viewer"
    nobody = http("GET", instance.url + "/api/v1/events")
    assert nobody.status == 401
    wrong = open_stream(streams, instance, token="not-a-token")
    assert wrong.status == 401


def test_a_client_that_falls_behind_is_told_to_resync(instance, receiver, streams):
    """A client that stops reading while more events come than the ring keeps
    (4096) gets a resync event when it reads again, then new events only."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window, set before connecting, so that little is buffered in transit.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", instance.port))
    raw.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {instance.token}\r\n\r\n".encode())
    # 6000 job events of more than 1 KB each, from 4 writers with a job each:
    # more than the ring and the socket buffers hold.
    for n in range(4):
        assert instance.api("POST", "/api/v1/jobs", job_body(
            f"flood{n}", receiver.hook(), schedule="@every 1h", paused=True,
            description="x" * 1000)).status == 201
    statuses = []

    def patch_many(job, count):
        for i in range(count):
            statuses.append(instance.api(
                "PATCH", f"/api/v1/jobs/{job}", {"webhook": {"headers": {"X-N": str(i)}}},
                headers={"Content-Type": "application/merge-patch+json"}).status)
    workers = [threading.Thread(target=patch_many, args=(f"flood{n}", 1500)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert statuses == [200] * 6000

    def read_all():
        """Everything the server sends until it has nothing more to say."""
        received = b""
        raw.settimeout(3 * SLOW)
        try:
            while True:
                chunk = raw.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            pass
        return received.decode(errors="replace")

    backlog = read_all()
    assert instance.api("PATCH", "/api/v1/jobs/flood0", {"description": "after"},
                        headers={"Content-Type": "application/merge-patch+json"}).status == 200
    text = backlog + read_all()
    raw.close()
    assert "event: resync" in text
    assert '"reason":"the client fell behind"' in text
    after = text.split("event: resync", 1)[1]
    assert after.count("event: job") == 1, after[:2000]
    assert '"description":"after"' in after


def test_keepalive_comments_are_sent(instance, streams):
    """With nothing happening, the stream still carries a comment every 15 s."""
    stream = open_stream(streams, instance)
    wait_for(lambda: stream.comments >= 1, timeout=25, what="a keepalive")
    assert stream.of("run") == [] and stream.of("job") == []


def test_two_hundred_streams_all_get_every_event_and_the_api_answers(instance, receiver,
                                                                      streams):
    assert instance.api("POST", "/api/v1/jobs",
                        job_body("many", receiver.hook(), schedule="@every 1h")).status == 201
    for _ in range(200):
        assert open_stream(streams, instance).status == 200

    # While all 200 are open, the API keeps answering.
    for _ in range(50):
        assert instance.api("GET", "/api/v1/jobs").status == 200
    run = instance.api("POST", "/api/v1/jobs/many/trigger").json
    for stream in streams:
        stream.wait("run", lambda d: d["id"] == run["id"] and d["status"] == "succeeded")
    assert instance.api("GET", "/metrics").status == 200


def test_sigterm_with_streams_open_exits_cleanly(instance, streams):
    for _ in range(20):
        open_stream(streams, instance)
    wait_for(lambda: all(s.retry == 2000 for s in streams), what="streams open")
    instance.proc.send_signal(signal.SIGTERM)
    assert instance.proc.wait(30 * SLOW) == 0
    # Every stream was ended by the server, not left hanging.
    for stream in streams:
        assert stream.closed.wait(5 * SLOW)


def event_streams_gauge(instance):
    text = instance.api("GET", "/metrics").body
    return int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("cronfence_event_streams ")))


def test_streams_of_departed_clients_end(instance, streams):
    """A client that goes away while its stream waits for events frees its
    place within seconds, not at the next keepalive."""
    for _ in range(30):
        open_stream(streams, instance)
    wait_for(lambda: event_streams_gauge(instance) == 30, what="30 streams counted")
    for stream in streams[:20]:
        stream.close()
    wait_for(lambda: event_streams_gauge(instance) == 10, timeout=5,
             what="the departed clients' streams ended")
