"""GET /metrics: the Prometheus text format (0.0.4), read strictly, and
figures that agree with what the API says happened.

The parser below follows the exposition format's rules: every sample
belongs to a family announced by one HELP and one TYPE line before it,
names and labels are well formed, no series appears twice, histograms have
increasing `le` bounds, cumulative buckets, a +Inf bucket equal to _count,
and a _sum.
"""

import math
import re
import signal
import time

from conftest import SLOW, VIEWER_TOKEN, Instance, http, job_body, wait_for

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)\Z')


def parse_labels(text):
    """{a="x",b="y"} -> (("a","x"),("b","y")), refusing anything malformed."""
    if not text:
        return ()
    inner, labels, pos = text[1:-1], [], 0
    while pos < len(inner):
        match = LABEL.match(inner, pos)
        assert match, f"bad label set {text!r} at {inner[pos:]!r}"
        value = match.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        labels.append((match.group(1), value))
        pos = match.end()
        if pos < len(inner):
            assert inner[pos] == ",", f"bad label separator in {text!r}"
            pos += 1
    names = [name for name, _ in labels]
    assert len(names) == len(set(names)), f"repeated label in {text!r}"
    return tuple(labels)


def parse(text):
    """Families {name: {"type", "help", "samples": {(sample name, labels): value}}}."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families, current, seen = {}, None, set()
    for line in text.splitlines():
        assert line.strip() == line and line, f"stray whitespace or empty line: {line!r}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert NAME.match(name) and help_text, line
            assert name not in families, f"family {name} announced twice"
            families[name] = {"help": help_text, "type": None, "samples": {}}
            current = name
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and families[name]["type"] is None, f"TYPE out of place: {line}"
            assert kind in ("counter", "gauge", "histogram"), line
            families[name]["type"] = kind
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        match = SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        sample, labels, value = match.group(1), parse_labels(match.group(2)), match.group(3)
        family = families.get(current)
        assert family and family["type"], f"sample before its HELP and TYPE: {line}"
        allowed = {current} if family["type"] != "histogram" else {
            current + "_bucket", current + "_sum", current + "_count"}
        assert sample in allowed, f"{sample} does not belong to family {current}"
        key = (sample, labels)
        assert key not in seen, f"series repeated: {line}"
        seen.add(key)
        number = float(value)
        assert not math.isnan(number), line
        if family["type"] in ("counter", "histogram"):
            assert number >= 0, f"negative counter: {line}"
        family["samples"][key] = number
    for name, family in families.items():
        assert family["type"], f"{name} has no TYPE"
        if family["type"] == "histogram":
            check_histogram(name, family["samples"])
    return families


def check_histogram(name, samples):
    buckets = sorted(((float(dict(labels)["le"]), value) for (sample, labels), value
                      in samples.items() if sample == name + "_bucket"))
    assert buckets and buckets[-1][0] == math.inf, f"{name} lacks its +Inf bucket"
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative: {buckets}"
    assert samples[(name + "_count", ())] == counts[-1], f"{name}_count differs from +Inf"
    assert (name + "_sum", ()) in samples, f"{name} lacks _sum"


def scrape(instance, token="viewer"):
    reply = instance.api("GET", "/metrics", token=token)
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4"), reply.headers
    return parse(reply.body)


def value(families, name, **labels):
    family = families[name]
    sample = name if family["type"] != "histogram" else name + "_count"
    key = (sample, tuple(sorted(labels.items())))
    for (got_name, got_labels), got in family["samples"].items():
        if got_name == sample and tuple(sorted(got_labels)) == key[1]:
            return got
    raise AssertionError(f"no series {name}{labels} in {sorted(family['samples'])}")


def agree(compare, timeout=10):
    """Waits until compare() lists no disagreement; fails with the last list."""
    problems = compare()
    deadline = time.monotonic() + timeout * SLOW
    while problems and time.monotonic() < deadline:
        time.sleep(0.1)
        problems = compare()
    assert not problems, problems


def test_parser_refuses_what_prometheus_refuses():
    """The checks above can fail: each broken exposition is refused."""
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3\nh_count 2\n")
    parse(good)
    broken = [
        good.replace("# TYPE a_total counter\n", ""),                 # no TYPE
        good + "a_total{x=\"1\"} 3\n",                                 # repeated series
        good.replace('{x="1"}', '{x="1}'),                             # bad label
        good.replace("h_count 2", "h_count 3"),                        # count != +Inf
        good.replace('h_bucket{le="1"} 1', 'h_bucket{le="1"} 5'),      # not cumulative
        good.replace("a_total{x=\"1\"} 2", "a_total{x=\"1\"} -1"),     # negative counter
        good.replace("a_total{x", "b_total{x"),                        # sample of another family
        good.rstrip("\n"),                                             # no final newline
    ]
    for text in broken:
        try:
            parse(text)
        except AssertionError:
            continue
        raise AssertionError(f"accepted a broken exposition:\n{text}")


def test_metrics_count_what_the_history_shows(instance, receiver):
    """Outcomes, skips, histograms and request counts against the API's own record."""
    bodies = [
        job_body("ok", receiver.hook()),
        job_body("broken", receiver.hook(status=500), retry={"attempts": 1}),
        job_body("stale", receiver.hook(status=409), retry={"attempts": 1}),
        job_body("slow", receiver.hook(delay_ms=2500), overlap="forbid"),
    ]
    for body in bodies:
        assert instance.api("POST", "/api/v1/jobs", body).status == 201
    assert instance.api("GET", "/api/v1/jobs/nope").status == 404
    assert instance.api("GET", "/api/v1/jobs", token=None).status == 401

    wait_for(lambda: len(instance.runs(job="slow", status="skipped")) >= 2
             and len(instance.runs(job="stale", status="fenced")) >= 2
             and len(instance.runs(job="broken", status="failed")) >= 2
             and len(instance.runs(job="slow", status="succeeded")) >= 1,
             timeout=30 * SLOW, what="every outcome at least twice")
    for name in ("ok", "broken", "stale", "slow"):
        assert instance.api("POST", f"/api/v1/jobs/{name}/pause").status == 200
    wait_for(lambda: not instance.runs(status="running"), timeout=15 * SLOW,
             what="nothing in flight")

    def disagreements():
        metrics, runs = scrape(instance), instance.runs()
        delivered = [r for r in runs if r["status"] in ("succeeded", "failed", "fenced")]
        want = {
            ("cronfence_runs_in_flight",): 0,
            ("cronfence_jobs",): 0,  # all paused
            ("cronfence_firings_total", "lost"): 0,
            ("cronfence_slots_skipped_total", "overlap"):
                sum(r["status"] == "skipped" for r in runs),
            ("missed, every reason",): sum(r["status"] == "missed" for r in runs),
            ("cronfence_webhook_duration_seconds",): sum(r["attempts"] for r in delivered),
            ("cronfence_schedule_lag_seconds",):
                sum(r["trigger"] == "schedule" for r in delivered),
        }
        for outcome in ("succeeded", "failed", "fenced"):
            want[("cronfence_firings_total", outcome)] = sum(r["status"] == outcome
                                                             for r in delivered)
        got = {
            ("cronfence_runs_in_flight",): value(metrics, "cronfence_runs_in_flight"),
            ("cronfence_jobs",): value(metrics, "cronfence_jobs"),
            ("cronfence_slots_skipped_total", "overlap"):
                value(metrics, "cronfence_slots_skipped_total", reason="overlap"),
            ("missed, every reason",): sum(
                value(metrics, "cronfence_slots_missed_total", reason=reason) for reason in
                ("late", "queue", "no_quorum", "contended", "claim_failed", "uncommitted")),
            ("cronfence_webhook_duration_seconds",):
                value(metrics, "cronfence_webhook_duration_seconds"),
            ("cronfence_schedule_lag_seconds",): value(metrics, "cronfence_schedule_lag_seconds"),
        }
        for outcome in ("succeeded", "failed", "fenced", "lost"):
            got[("cronfence_firings_total", outcome)] = value(
                metrics, "cronfence_firings_total", outcome=outcome)
        return [(key, got[key], want[key]) for key in want if got[key] != want[key]]

    agree(disagreements)
    metrics, delivered = scrape(instance), [
        r for r in instance.runs() if r["status"] in ("succeeded", "failed", "fenced")]
    assert value(metrics, "cronfence_claim_duration_seconds") >= 1
    # The slow job's webhook takes 2.5 s: its attempts sit above the 2.5 s bound.
    slow_attempts = sum(r["attempts"] for r in delivered if r["job"] == "slow")
    webhook = metrics["cronfence_webhook_duration_seconds"]["samples"]
    below_2_5 = webhook[("cronfence_webhook_duration_seconds_bucket", (("le", "2.5"),))]
    assert value(metrics, "cronfence_webhook_duration_seconds") - below_2_5 >= slow_attempts >= 1

    def requests(route, method, code):
        return value(metrics, "cronfence_http_requests_total", route=route, method=method,
                     code=str(code))
    assert requests("/api/v1/jobs", "POST", 201) == 4
    assert requests("/api/v1/jobs/{name}/pause", "POST", 200) == 4
    assert requests("/api/v1/jobs/{name}", "GET", 404) == 1
    assert requests("/api/v1/jobs", "GET", 401) == 1

    assert value(metrics, "cronfence_quorum_healthy") == 1
    assert value(metrics, "cronfence_cluster_members") == 1
    info = [labels for (_, labels) in metrics["cronfence_info"]["samples"]]
    assert dict(info[0])["mode"] == "standalone"
    assert not metrics["cronfence_redis_node_up"]["samples"]


def test_missed_slots_are_counted_late(instance, receiver):
    """A stopped process misses its slots: on waking they are recorded and counted 'late'."""
    body = job_body("paused-process", receiver.hook(), starting_deadline_ms=1000)
    assert instance.api("POST", "/api/v1/jobs", body).status == 201
    wait_for(lambda: receiver.deliveries("paused-process"), timeout=10, what="a first delivery")
    instance.proc.send_signal(signal.SIGSTOP)
    time.sleep(4)
    instance.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: instance.runs(job="paused-process", status="missed"), timeout=10 * SLOW,
             what="missed slots")
    assert instance.api("POST", "/api/v1/jobs/paused-process/pause").status == 200
    wait_for(lambda: not instance.runs(status="running"), timeout=10 * SLOW, what="idle")

    def disagreements():
        missed = len(instance.runs(job="paused-process", status="missed"))
        counted = value(scrape(instance), "cronfence_slots_missed_total", reason="late")
        return [] if counted == missed >= 2 else [(counted, missed)]

    agree(disagreements)


def test_metrics_need_a_token_and_accept_the_viewer(instance):
    assert http("GET", instance.url + "/metrics").status == 401
    assert instance.api("GET", "/metrics", token="wrong-token-0123456789012345").status == 401
    assert instance.api("GET", "/metrics", token=VIEWER_TOKEN).status == 200
    assert instance.api("GET", "/metrics", token="admin").status == 200


def test_node_and_quorum_gauges_follow_the_redis_nodes(tmp_path, processes, nodes):
    instance = Instance(tmp_path, name="cf0",
                        args=["--redis", ",".join(node.url for node in nodes)])
    processes.append(instance)
    instance.start()

    def gauges():
        metrics = scrape(instance)
        up = {dict(labels)["node"]: v for (_, labels), v in
              metrics["cronfence_redis_node_up"]["samples"].items()}
        trusted = {dict(labels)["node"]: v for (_, labels), v in
                   metrics["cronfence_redis_node_trusted"]["samples"].items()}
        return up, trusted, value(metrics, "cronfence_quorum_healthy"), metrics

    everyone = {node.address: 1 for node in nodes}
    wait_for(lambda: gauges()[:3] == (everyone, everyone, 1), timeout=20 * SLOW,
             what="all nodes up and trusted")
    metrics = gauges()[3]
    assert dict(next(iter(metrics["cronfence_info"]["samples"]))[1])["mode"] == "cluster"
    # A node's latency is shown once measured (a round under 1 ms may read as not yet).
    latency = {dict(labels)["node"]: v for (_, labels), v in
               metrics["cronfence_redis_node_latency_seconds"]["samples"].items()}
    assert set(latency) <= set(everyone) and all(v >= 0 for v in latency.values()), latency

    def warnings():
        return {dict(labels)["node"]: v for (_, labels), v in
                scrape(instance)["cronfence_redis_node_warnings"]["samples"].items()}
    assert warnings() == {node.address: 0 for node in nodes}
    # A node no longer fsyncing every write is reported, and only that node.
    assert nodes[2].cli("CONFIG", "SET", "appendfsync", "everysec") == "OK"
    # The configuration is read when an instance connects: make it reconnect.
    nodes[2].cli("CLIENT", "KILL", "TYPE", "normal")
    nodes[2].cli("CLIENT", "KILL", "TYPE", "pubsub")
    wait_for(lambda: warnings()[nodes[2].address] >= 1, timeout=20 * SLOW,
             what="a configuration warning")
    assert warnings()[nodes[0].address] == warnings()[nodes[1].address] == 0

    nodes[0].kill9()
    wait_for(lambda: gauges()[0][nodes[0].address] == 0 and gauges()[2] == 1,
             timeout=20 * SLOW, what="one node down, quorum kept")
    nodes[1].kill9()
    wait_for(lambda: gauges()[2] == 0, timeout=20 * SLOW, what="quorum lost")
    up = gauges()[0]
    assert up == {nodes[0].address: 0, nodes[1].address: 0, nodes[2].address: 1}
    assert instance.api("GET", "/readyz").status == 503
