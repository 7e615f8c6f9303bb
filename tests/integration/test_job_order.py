"""GET /jobs?sort= (issue 15: the jobs page sorts and pages on the server) and what
the jobs list shows of a job's trouble (consecutive_failures, last_error), plus the
per-instance firings of GET /cluster. A real instance and the reference receiver;
every wait is a generous poll."""

import urllib.parse

from conftest import SLOW, job_body, ms, wait_for

NEVER = 253402300800000  # year 10000: how a job without a next instant sorts


def jobs_page(instance, sort, limit, cursor=None):
    query = {"sort": sort, "limit": limit}
    if cursor is not None:
        query["cursor"] = cursor
    reply = instance.api("GET", "/api/v1/jobs?" + urllib.parse.urlencode(query))
    assert reply.status == 200, reply
    return reply.json


def walk(instance, sort, limit):
    """Every job in the order of sort, following next_cursor page by page."""
    names, cursor = [], None
    while True:
        page = jobs_page(instance, sort, limit, cursor)
        assert len(page["items"]) <= limit
        names += [job["name"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return names


def last_run_key(job):
    run = job["last_run"]
    if run is None:
        return -1
    return ms(run["started_at"] if run["trigger"] == "manual" else run["scheduled_at"])


def job_named(instance, name):
    reply = instance.api("GET", "/api/v1/jobs?limit=500")
    return next(job for job in reply.json["items"] if job["name"] == name)


def test_jobs_sort_and_page_on_the_server(instance, receiver):
    # Two jobs that fire (one failing, one succeeding), one paused, fillers that fire
    # daily at distinct minutes, so every key has ties and distinct values.
    bodies = [job_body("fails", receiver.hook(status=500), retry={"attempts": 1}),
              job_body("works", receiver.hook()),
              job_body("sleeper", receiver.hook(), schedule="0 4 * * *", paused=True)]
    bodies += [job_body(f"filler-{i:02}", receiver.hook(), schedule=f"{(i * 7) % 60} 3 * * *")
               for i in range(14)]
    for body in bodies:
        assert instance.api("POST", "/api/v1/jobs", body).status == 201

    wait_for(lambda: job_named(instance, "fails")["consecutive_failures"] >= 2 and
             (job_named(instance, "works")["last_run"] or {}).get("status") == "succeeded",
             timeout=20 * SLOW, what="two failures of one job and a success of the other")
    # Paused, the two stop changing, so the orders below are stable.
    for name in ("fails", "works"):
        assert instance.api("POST", f"/api/v1/jobs/{name}/pause").status == 200
    wait_for(lambda: not instance.runs(status="running"), timeout=20 * SLOW,
             what="the runs in flight ended")
    everything = {job["name"]: job for job in instance.api("GET", "/api/v1/jobs?limit=500")
                  .json["items"]}
    assert len(everything) == len(bodies)

    failing = everything["fails"]
    assert failing["last_error"], failing
    assert everything["works"]["consecutive_failures"] == 0
    assert everything["works"]["last_error"] is None
    assert everything["sleeper"]["consecutive_failures"] == 0

    def next_key(job):
        return ms(job["next_fire_at"]) if job["next_fire_at"] else NEVER

    keys = {"next": next_key, "last_run": last_run_key,
            "failures": lambda job: job["consecutive_failures"]}
    for sort, key in keys.items():
        ascending = sorted(everything.values(), key=lambda job: (key(job), job["name"]))
        expected = [job["name"] for job in ascending]
        assert walk(instance, sort, 4) == expected, sort
        assert walk(instance, "-" + sort, 5) == expected[::-1], "-" + sort
    assert walk(instance, "name", 6) == sorted(everything)
    assert walk(instance, "-failures", 1)[0] == "fails"
    assert walk(instance, "next", 3)[-3:] == sorted(["fails", "works", "sleeper"])

    # A sort cursor carries its key; a cursor of another order is refused, as are
    # unknown sorts.
    page = jobs_page(instance, "next", 2)
    assert page["next_cursor"] and page["next_cursor"].endswith(":" + page["items"][1]["name"])
    for query in ("sort=bogus", "sort=-name", "sort=next&cursor=filler-01",
                  "sort=failures&cursor=x:filler-01"):
        reply = instance.api("GET", "/api/v1/jobs?" + query)
        assert reply.status == 422, (query, reply)
        assert reply.json["errors"][0]["field"] in ("sort", "cursor"), reply.json

    # Sorting by next computes again the next instant of a job written since.
    assert instance.api("POST", "/api/v1/jobs/sleeper/resume").status == 200
    order = walk(instance, "next", 50)
    assert order.index("sleeper") < order.index("fails")

    # A success resets the count and clears the error.
    fixed = instance.api("PATCH", "/api/v1/jobs/fails",
                         {"webhook": {"url": receiver.hook()}, "paused": False},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert fixed.status == 200, fixed
    wait_for(lambda: job_named(instance, "fails")["consecutive_failures"] == 0,
             timeout=20 * SLOW, what="the failure count reset by a success")
    assert job_named(instance, "fails")["last_error"] is None


def test_cluster_counts_firings_of_the_last_minute(instance, receiver):
    body = job_body("ticks", receiver.hook())
    assert instance.api("POST", "/api/v1/jobs", body).status == 201

    def firings():
        view = instance.api("GET", "/api/v1/cluster").json
        return view["members"][0]["firings_last_minute"]

    wait_for(lambda: firings() >= 3, timeout=20 * SLOW, what="three firings counted")
    view = instance.api("GET", "/api/v1/cluster").json
    assert view["instance"]["id"] == view["members"][0]["id"]
    assert instance.api("POST", "/api/v1/jobs/ticks/pause").status == 200
    # The count is of firings, not of jobs: it never exceeds the runs recorded.
    ran = [run for run in instance.runs(job="ticks") if run["status"] == "succeeded"]
    assert firings() <= len(ran) + 1
