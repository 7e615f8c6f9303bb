/*
 * notify.h - run notifications (DESIGN §5 Notifications): when a run ends in
 * a status its job asks for (job->notify, or --notify-url for jobs without
 * one), one signed POST to the job's notification URL, retried with backoff.
 *
 * Who sends: for a delivered run (succeeded, failed, fenced), the instance
 * named in its record, the one that claimed its slot. A missed slot may be
 * recorded by several instances; their records merge into one (DESIGN §4.7,
 * the same on every instance), so each instance waits NOTIFY_SETTLE_MS for
 * the merge, reads the record again, and sends only when it still names
 * itself with that status. A lost run is marked lost by every live instance
 * once its own instance is gone or restarted, keeping that instance's name:
 * it is sent, after the same wait, by the live instance ranked first for
 * the run's (job, slot) (coord rank 0, DESIGN §4.4), whoever ran it. Each
 * notice is checked against the stored record before it is sent, so a slot
 * whose miss was superseded by a delivery says nothing.
 *
 * The request: POST with Content-Type application/json, Cronfence-Event
 * "run.<event>", Cronfence-Job, Cronfence-Run, Fencing-Token (the run's),
 * Idempotency-Key "<job>@notify-<run id>" (the same on every attempt), and
 * the signatures of a delivery over the body (Cronfence-Signature v2 and
 * webhook-id/-timestamp/-signature), with the job's secret or the default
 * one. Body: {"type": "run.<event>", "job": <name>, "run": <run JSON>}, or
 * for format slack {"text": ...}. Addresses are checked against
 * --webhook-allow when connecting, as for webhooks.
 *
 * Notices wait in a queue of at most NOTIFY_QUEUE_MAX; beyond that new ones
 * are dropped with a warning. Each is tried NOTIFY_ATTEMPTS times, 1 s
 * apart doubling, 10 s per attempt; 2xx ends it, anything else retries.
 */
#ifndef CF_NOTIFY_H
#define CF_NOTIFY_H

#include "coord.h"
#include "db.h"
#include "netallow.h"
#include "run.h"

#define NOTIFY_QUEUE_MAX 1000
#define NOTIFY_ATTEMPTS 5
#define NOTIFY_SETTLE_MS 3000

struct notify_config {
    struct db *db;                /* reads jobs and runs; borrowed */
    const char *instance_id;      /* borrowed */
    const char *default_url;      /* --notify-url; NULL for none; borrowed */
    const struct netallow *allow; /* borrowed; NULL = all but link-local */
};

struct notify;

/*
 * Checks --notify-url: an http or https URL whose host the allow list
 * accepts. Returns CF_OK, or CF_ERR_INVALID with a message in err.
 */
int notify_check_url(const char *url, const struct netallow *allow, char *err, size_t errlen);

/*
 * Starts the notification thread; cfg is copied, its strings borrowed for
 * the notifier's life. Returns CF_OK with *out, or CF_ERR_NOMEM / CF_ERR_IO.
 */
int notify_start(const struct notify_config *cfg, struct notify **out);

/*
 * Sets the coordinator (borrowed until unset with NULL) that ranks the
 * instances for lost runs; while none is set, this instance counts as
 * first. Unsetting waits for a call into the old one in progress. Accepts a
 * NULL notify.
 */
void notify_set_coord(struct notify *notify, struct coord *coord);

struct signing_secrets;

/*
 * Sets the signing secrets (borrowed until unset with NULL) notices are
 * signed with, like the job's deliveries; a notice prepared while none is
 * set, or with no secret known, is not sent (never unsigned). Accepts a
 * NULL notify.
 */
void notify_set_secrets(struct notify *notify, struct signing_secrets *secrets);

/*
 * A run's stored state changed (any thread; run borrowed). Queues a notice
 * when the run has ended and this instance ran it; cheap otherwise.
 */
void notify_run_changed(struct notify *notify, const struct run *run);

/* Stops the thread (a send in progress ends within its timeout), drops what is queued, frees.
 * Accepts NULL. */
void notify_stop(struct notify *notify);

#endif
