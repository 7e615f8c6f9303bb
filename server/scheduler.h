/*
 * scheduler.h - computes every job's slots, claims them through the
 * coordinator, hands claimed firings to the delivery engine and records
 * every outcome in the run history.
 *
 * One scheduler thread owns all scheduling state. Other threads talk to it
 * through an inbox: catalog changes (scheduler_job_changed), manual triggers
 * (scheduler_trigger) and delivery completions. It sleeps until the next
 * slot is due, so a slot is claimed and sent within a few milliseconds of
 * its instant on an idle machine.
 */
#ifndef CF_SCHEDULER_H
#define CF_SCHEDULER_H

#include <stdint.h>

#include "coord.h"
#include "db.h"
#include "netallow.h"
#include "metrics.h"
#include "run.h"

struct signing_secrets;

struct scheduler_config {
    struct db *db;                /* the scheduler's own handle; borrowed */
    struct db *prune_db;          /* the retention thread's own handle; borrowed */
    struct coord *coord;          /* borrowed */
    const char *instance_id;      /* borrowed for the scheduler's life */
    const char *default_secret;   /* borrowed */
    const struct netallow *allow; /* borrowed; NULL = all but link-local */
    int history_days;             /* runs older than this are pruned */
    int history_per_job;          /* at most this many runs kept per job */
    struct metrics *metrics;      /* borrowed; may be NULL */
    /* Chooses the signing secrets, several during an overlap (delivery.h); borrowed. */
    struct signing_secrets *secrets;
    /* Called on the scheduler thread after a run state is stored; may be NULL. */
    void (*run_changed)(void *ctx, const struct run *run);
    void *ctx;
};

struct scheduler_stats {
    int64_t in_flight; /* firings being delivered */
    int64_t jobs;      /* jobs scheduled (not paused) */
};

struct scheduler;

/*
 * Starts the scheduler thread and the delivery engine, and returns at once.
 * The thread first loads every job from the database, marks runs this
 * instance left "running" before a crash as "lost", and records or catches
 * up slots missed while the instance was down (a large catalog takes a
 * second or two, during which the API already answers and
 * scheduler_not_ready() says why; triggers and catalog changes wait in the
 * inbox). Returns CF_OK with *out, or an error (nothing started).
 */
int scheduler_start(const struct scheduler_config *cfg, struct scheduler **out);

/*
 * Stops claiming and lets the firings in flight finish for at most
 * grace_ms: no retry starts after the stop, and attempts still going at the
 * deadline are cut and recorded failed. Each firing is recorded and its
 * lease released as it ends; the others' leases are extended meanwhile.
 * Returns when none is left. The scheduler stays valid for
 * scheduler_trigger() (which then answers CF_ERR_SHUTDOWN),
 * scheduler_get_stats() and scheduler_job_changed() until scheduler_free().
 * Accepts NULL; a second call does nothing.
 */
void scheduler_stop(struct scheduler *sched, int64_t grace_ms);

/* Whether scheduler_stop() has begun. */
bool scheduler_stopping(struct scheduler *sched);

/* Why the scheduler is not firing ("loading the catalog", "stopping"), or NULL when it is. */
const char *scheduler_not_ready(struct scheduler *sched);

/*
 * Frees the scheduler; accepts NULL. Call it after scheduler_stop(): on a
 * scheduler still running it stops it first, at once, which needs the
 * coordinator and the databases still open.
 */
void scheduler_free(struct scheduler *sched);

/* Tells the scheduler that job name was created, changed or deleted in the catalog. */
void scheduler_job_changed(struct scheduler *sched, const char *name);

/*
 * Runs job name now, outside its schedule, through the lock and token path
 * (DESIGN §3 manual trigger). Blocks until the firing is claimed. On CF_OK,
 * *run (run_clear() it) is the run just started. Errors: CF_ERR_NOT_FOUND,
 * CF_ERR_CONFLICT (paused, or a run in flight and overlap is not "allow";
 * detail in reason, reason_len bytes), CF_ERR_NO_QUORUM, CF_ERR_SHUTDOWN.
 */
int scheduler_trigger(struct scheduler *sched, const char *name, struct run *run, char *reason,
                      size_t reason_len);

/*
 * Fires the slot of run old again (DESIGN §3 retry of a run): a new run
 * with a random id, trigger "retry", retry_of = old's id, a new token and
 * old's idempotency key, through the lock path, without advancing the job's
 * last fired slot. old is borrowed for the call. Blocks until the firing is
 * claimed; on CF_OK, *run (run_clear() it) is the run just started. Errors
 * as scheduler_trigger(), and CF_ERR_CONFLICT when old is not a scheduled
 * or catch-up run that ended failed, fenced, missed or lost.
 */
int scheduler_retry(struct scheduler *sched, const struct run *old, struct run *run, char *reason,
                    size_t reason_len);

void scheduler_get_stats(struct scheduler *sched, struct scheduler_stats *stats);

#endif
