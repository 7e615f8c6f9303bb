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

/* Writes s as a label value: backslash, double quote and newline escaped. */
void metrics_write_label_value(FILE *out, const char *s);

#endif
