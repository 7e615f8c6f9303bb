"""The shortest path a user takes: create a job, see it delivered and recorded."""

from conftest import job_body, wait_for


def test_every_second_job_is_delivered_and_recorded(instance, receiver):
    reply = instance.api("POST", "/api/v1/jobs", job_body("tick", receiver.hook()))
    assert reply.status == 201, reply
    deliveries = wait_for(lambda: len(receiver.deliveries("tick")) >= 3 and
                          receiver.deliveries("tick"), what="three deliveries")
    tokens = [d["token"] for d in deliveries]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    runs = wait_for(lambda: [r for r in instance.runs(job="tick") if r["status"] == "succeeded"],
                    what="succeeded runs")
    assert all(r["id"] == f"tick@{r['id'].split('@')[1]}" for r in runs)
