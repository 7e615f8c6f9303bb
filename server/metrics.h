/*
 * metrics.h - the counters and histograms an instance keeps for GET /metrics,
 * and the Prometheus text format (version 0.0.4) they are written in.
 *
 * One struct metrics per instance, shared by the scheduler, the webhook
 * engine and the HTTP server: every update is lock-free except a request
 * count, which takes a short mutex. Every update accepts a NULL metrics and
 * then does nothing, so modules tested alone need none.
 *
 * Durations are observed in microseconds and written in seconds.
 */
#ifndef CF_METRICS_H
#define CF_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "run.h"

enum metrics_histogram {
    METRICS_SCHEDULE_LAG,     /* scheduled instant to the first request sent */
    METRICS_WEBHOOK_DURATION, /* one webhook attempt, start to end */
    METRICS_CLAIM_DURATION,   /* one claim round (a batch of slots) with the coordinator */
    METRICS_HISTOGRAM_COUNT,
};

/*
 * Why a slot was skipped or missed: a small fixed set, so that each is one
 * series. The run's own reason text says more.
 */
enum metrics_slot_reason {
    METRICS_REASON_OVERLAP,      /* skipped: the previous run was still in flight */
    METRICS_REASON_LATE,         /* the instance was down or late past the starting deadline */
    METRICS_REASON_QUEUE,        /* waited behind the previous run past the starting deadline */
    METRICS_REASON_NO_QUORUM,    /* no quorum of trusted Redis nodes */
    METRICS_REASON_CONTENDED,    /* another claim held the slot and nobody delivered it */
    METRICS_REASON_CLAIM_FAILED, /* the claim failed for another reason */
    METRICS_REASON_UNCOMMITTED,  /* claimed, but not committed on a quorum in time */
    METRICS_REASON_COUNT,
};

struct metrics;

/* Creates the metrics, all zero. Returns CF_OK with *out, or CF_ERR_NOMEM. */
int metrics_new(struct metrics **out);

/* Frees the metrics; accepts NULL. */
void metrics_free(struct metrics *metrics);

/* Records one observation of a histogram; a negative duration counts as 0. */
void metrics_observe(struct metrics *metrics, enum metrics_histogram histogram,
                     int64_t duration_us);

/* Counts a firing of this instance that ended with status (succeeded, failed, fenced, lost). */
void metrics_count_firing(struct metrics *metrics, enum run_status status);

/* Counts n slots recorded skipped or missed (status RUN_SKIPPED or RUN_MISSED) for reason. */
void metrics_count_slots(struct metrics *metrics, enum run_status status,
                         enum metrics_slot_reason reason, int64_t n);

/*
 * Counts an answered HTTP request. route is the label, a string that lives
 * as long as the metrics (a route table's pattern); NULL counts as "none". method is folded into
 * the usual verbs or "other", status into 100..599.
 */
void metrics_count_request(struct metrics *metrics, const char *route, const char *method,
                           int status);

/*
 * Writes every counter and histogram kept here, each family with its HELP
 * and TYPE lines, to out. Returns CF_OK or CF_ERR_IO when out failed.
 */
int metrics_write(struct metrics *metrics, FILE *out);

/*
 * ---- Per-job series (DESIGN §7 --metrics-per-job) ----
 *
 * Kept in memory per job name, fed by every run state the instance stores
 * (its own and its peers', so the values are cluster-wide) and by the
 * scheduler's next slots; written by metrics_write() unless switched off.
 * A failure is a run that ended failed, fenced, missed or lost; skipped runs
 * count for nothing. consecutive_failures counts failures that ended after
 * the latest success; a second record of the run counted last is not
 * counted again. Times are wall ms.
 */

/* Whether metrics_write() writes the per-job series (on by default). */
void metrics_set_per_job(struct metrics *metrics, bool on);

/* Whether a final status counts as a failure for the per-job series. */
bool metrics_run_is_failure(enum run_status status);

/* Notes a stored run state (borrowed); states that are not final are ignored. */
void metrics_job_run(struct metrics *metrics, const struct run *run);

/* Sets a job's values read from the history at start (0: none). */
void metrics_job_seed(struct metrics *metrics, const char *job, int64_t last_success_ms,
                      int64_t last_failure_ms, int64_t consecutive_failures);

/* Sets a job's next slot (0: none, e.g. paused). */
void metrics_job_next_fire(struct metrics *metrics, const char *job, int64_t next_ms);

/* Drops every series of a deleted job. */
void metrics_job_forget(struct metrics *metrics, const char *job);

/* Writes s as a label value: backslash, double quote and newline escaped. */
void metrics_write_label_value(FILE *out, const char *s);

#endif
