"""Readers beside the scheduler (DESIGN §2 standalone, §6 GET /jobs?q=, §8):
API reads never hold up a claim, job search keeps its meaning on the
search index, and a large catalog starts quickly."""

import concurrent.futures
import json
import sqlite3
import threading
import time
import urllib.parse

from conftest import SLOW, iso, job_body, ms, wait_for


def put_jobs(instance, bodies, threads=4):
    """Creates the jobs with PUT, a few requests at a time."""
    def put(body):
        reply = instance.api("PUT", f"/api/v1/jobs/{body['name']}", body)
        assert reply.status in (200, 201), reply

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, bodies))


def idle_job(name, description, paused=False):
    """A job that does not fire during a test (once a year)."""
    return {"name": name, "description": description, "schedule": "0 0 1 1 *",
            "paused": paused, "webhook": {"url": "http://127.0.0.1:9/hook"}}


def listed(instance, query, limit=500):
    """Names of every job GET /jobs?<query> lists, following cursors."""
    names, cursor = [], None
    while True:
        suffix = f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""
        reply = instance.api("GET", f"/api/v1/jobs?{query}&limit={limit}{suffix}",
                             token="viewer")
        assert reply.status == 200, reply
        names += [job["name"] for job in reply.json["items"]]
        cursor = reply.json["next_cursor"]
        if not cursor:
            return names


def ascii_lower(text):
    """lower() as SQLite does it: ASCII letters only."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def expected(jobs, q, paused=None):
    """The names GET /jobs?q= has always listed: a substring of the name or of the
    description, ASCII letters compared without case."""
    needle = ascii_lower(q)
    return sorted(job["name"] for job in jobs
                  if (needle in job["name"] or needle in ascii_lower(job["description"]))
                  and (paused is None or job["paused"] == paused))


# Jobs of the catalog the viewers read: enough that a listing which reads
# every job takes a good part of a second.
CATALOG_JOBS = 50000

# --------------------------------------------------------------------------
# Readers do not delay the scheduler
# --------------------------------------------------------------------------

def test_viewer_loops_do_not_delay_a_healthy_job(instance, receiver):
    healthy = job_body("healthy", receiver.hook(), starting_deadline_ms=1000)
    reply = instance.api("PUT", "/api/v1/jobs/healthy", healthy)
    assert reply.status == 201, reply
    # A large catalog, written straight into the database while the instance is down.
    instance.stop()
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 15
    insert_jobs(instance.db, [f"catalog-{i:05d}" for i in range(CATALOG_JOBS)],
                lambda name: idle_job(name, f"{filler} {name} Team{sum(map(ord, name)) % 97}"))
    instance.start()
    wait_for(lambda: receiver.deliveries("healthy"), what="a first delivery")

    stop = threading.Event()
    errors = []
    queries = ["/api/v1/jobs?q=nothing-matches-this&limit=500",
               "/api/v1/jobs?q=team4&limit=500", "/api/v1/jobs?q=x&limit=500",
               "/api/v1/jobs?q=NUMBER%2029&limit=500", "/api/v1/runs?limit=500",
               "/api/v1/runs?job=healthy&limit=500"]

    def viewer(path):
        while not stop.is_set():
            reply = instance.api("GET", path, token="viewer")
            if reply.status != 200:
                errors.append(reply)

    threads = [threading.Thread(target=viewer, args=(path,), daemon=True) for path in queries]
    started = time.time()
    for thread in threads:
        thread.start()
    time.sleep(15)
    stop.set()
    ended = time.time()
    for thread in threads:
        thread.join(30 * SLOW)
    assert not errors, errors[:3]

    # Every slot of the window is a run that succeeded; none was missed or skipped.
    first, last = int(started) * 1000 + 1000, int(ended) * 1000 - 1000
    window = {ms(run["scheduled_at"]): run for run in instance.runs(job="healthy")
              if first <= ms(run["scheduled_at"]) <= last}
    wait_for(lambda: all(run["status"] != "running" for run in
                         instance.runs(job="healthy")
                         if first <= ms(run["scheduled_at"]) <= last),
             what="the window's runs to finish")
    window = {ms(run["scheduled_at"]): run for run in instance.runs(job="healthy")
              if first <= ms(run["scheduled_at"]) <= last}
    slots = list(range(first, last + 1, 1000))
    missing = [iso(slot) for slot in slots if slot not in window]
    assert not missing, f"slots without a run: {missing}"
    failed = {iso(slot): (run["status"], run.get("reason")) for slot, run in window.items()
              if run["status"] != "succeeded"}
    assert not failed, f"slots that did not succeed: {failed}"


# --------------------------------------------------------------------------
# Search keeps its meaning
# --------------------------------------------------------------------------

SEARCH_JOBS = [
    idle_job("alpha-report", "Nightly REPORT for Finance"),
    idle_job("beta", "weekly Report, sent on mondays"),
    idle_job("gamma-sync", "Syncs the CRM"),
    idle_job("delta", "", paused=True),
    idle_job("epsilon-report", "paused report", paused=True),
    idle_job("zeta", "Ärger Über Öl, café"),
    idle_job("eta", "temperature in \u212aelvin"),
    idle_job("theta", 'quotes "inside" and a % and an _ underscore'),
    idle_job("iota-x", "ends with xyz"),
    idle_job("kappa", "xyz starts it"),
    idle_job("lambda", "the middle xyz is here"),
    idle_job("mu", "AbC"),
    idle_job("nu-abc", "nothing"),
] + [idle_job(f"bulk-{i:03d}", f"Bulk job {i} of the Batch") for i in range(120)]

SEARCH_QUERIES = [
    "report", "REPORT", "RePoRt", "alpha", "-rep", "port", "finance", "FINANCE",
    "mondays", "crm", "sync", "xyz", "xy", "x", "z", "a", "ab", "AB", "abc", "ABC",
    "ärger", "Ärger", "über", "ÜBER", "öl", "café", "CAFÉ", "kelvin", "\u212aelvin",
    '"inside"', '"', "%", "_", "a % and", "_ underscore", "bulk", "BULK-1", "job 1",
    "batch", "of the batch", "nothing-like-this", "zz", "é", "eta", "ta", "t",
    "  ", "e ", "bulk-119",
]


def test_search_keeps_its_meaning(instance):
    put_jobs(instance, SEARCH_JOBS)
    for q in SEARCH_QUERIES:
        quoted = urllib.parse.quote(q)
        assert listed(instance, f"q={quoted}") == expected(SEARCH_JOBS, q), q
        assert listed(instance, f"q={quoted}&paused=true") == \
            expected(SEARCH_JOBS, q, paused=True), q
        assert listed(instance, f"q={quoted}&paused=false") == \
            expected(SEARCH_JOBS, q, paused=False), q
    # Paging with a cursor, through the index (3+ characters) and the scan.
    for q in ("bulk", "b", "job 1", "e"):
        quoted = urllib.parse.quote(q)
        for limit in (1, 7, 50):
            assert listed(instance, f"q={quoted}", limit=limit) == expected(SEARCH_JOBS, q), q


def test_search_follows_catalog_changes(instance):
    put_jobs(instance, [idle_job("first", "Original words"), idle_job("second", "other")])
    assert listed(instance, "q=original") == ["first"]

    changed = idle_job("first", "Replacement text")
    assert instance.api("PUT", "/api/v1/jobs/first", changed).status == 200
    assert listed(instance, "q=original") == []
    assert listed(instance, "q=replacement") == ["first"]

    reply = instance.api("PATCH", "/api/v1/jobs/second", {"description": "now REPLACEMENT too"},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200, reply
    assert listed(instance, "q=replacement") == ["first", "second"]

    assert instance.api("DELETE", "/api/v1/jobs/first").status == 204
    assert listed(instance, "q=replacement") == ["second"]
    assert listed(instance, "q=first") == []

    # Re-created under a deleted name, it is found again.
    assert instance.api("PUT", "/api/v1/jobs/first", idle_job("first", "back")).status == 201
    assert listed(instance, "q=first") == ["first"]
    assert listed(instance, "q=back") == ["first"]
    assert listed(instance, "q=replacement") == ["second"]


# --------------------------------------------------------------------------
# A large catalog starts quickly
# --------------------------------------------------------------------------

def insert_jobs(path, names, make_doc):
    """Writes jobs straight into the database, as the catalog stores them."""
    now = int(time.time() * 1000)
    connection = sqlite3.connect(str(path), timeout=10)
    try:
        version = int(connection.execute(
            "SELECT coalesce((SELECT value FROM meta WHERE key = 'catalog_version'), 0)"
        ).fetchone()[0])
        rows = []
        for name in names:
            version += 1
            doc = make_doc(name)
            doc.update({"version": version, "created_at": iso(now), "updated_at": iso(now)})
            rows.append((name, version, json.dumps(doc, separators=(",", ":")), now, now))
        connection.executemany("INSERT INTO jobs (name, version, doc, paused, created_at,"
                               " updated_at) VALUES (?, ?, ?, 0, ?, ?)", rows)
        connection.execute("INSERT INTO meta (key, value) VALUES ('catalog_version', ?)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (str(version),))
        connection.commit()
    finally:
        connection.close()


def test_restart_with_many_jobs_listens_soon_and_schedules_them(instance, receiver):
    # A stored job exactly as the catalog writes it, as the template of the others.
    reply = instance.api("PUT", "/api/v1/jobs/template", job_body("template", receiver.hook()))
    assert reply.status == 201, reply
    instance.stop()
    connection = sqlite3.connect(str(instance.db))
    (template,) = connection.execute("SELECT doc FROM jobs WHERE name = 'template'").fetchone()
    connection.close()
    template = json.loads(template)

    def doc(name, schedule, description):
        copy = json.loads(json.dumps(template))
        copy.update({"name": name, "schedule": schedule, "description": description})
        return copy

    idle = [f"many-{i:05d}" for i in range(20000)]
    insert_jobs(instance.db, idle, lambda name: doc(name, "0 0 1 1 *", f"Idle {name}"))
    firing = [f"fires-{i}" for i in range(5)]
    insert_jobs(instance.db, firing, lambda name: doc(name, "* * * * * *", f"Busy {name}"))

    started = time.monotonic()
    instance.start(wait_catalog=False)
    took = time.monotonic() - started
    assert took < 5 * SLOW, f"listening after {took:.1f} s"
    # The API answers while the catalog loads; /readyz says when the scheduler runs.
    reply = instance.api("GET", "/api/v1/jobs/many-12345")
    assert reply.status == 200, reply
    wait_for(instance.scheduler_running, timeout=60, what="the catalog loaded")

    # Every job is in the catalog, found by search, and the firing ones fire.
    assert listed(instance, "q=many-1999") == [f"many-1999{i}" for i in range(10)]
    assert listed(instance, "q=busy") == firing
    for name in firing:
        wait_for(lambda name=name: any(d["job"] == name for d in receiver.deliveries()),
                 timeout=15, what=f"a delivery of {name}")
    reply = instance.api("GET", "/api/v1/jobs/many-12345")
    assert reply.status == 200, reply
    assert reply.json["next_fire_at"] is not None, reply.json
