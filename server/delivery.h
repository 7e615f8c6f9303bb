/*
 * delivery.h - webhook delivery of one firing, with retries, over libcurl's
 * multi interface: one thread drives every delivery in flight, with no
 * thread per request.
 *
 * A firing is submitted once; the engine makes up to job->retry.attempts
 * attempts, each with the headers, body and signature of DESIGN §5 and a
 * per-attempt timeout of job->webhook.timeout_ms, waiting between attempts
 * with exponential backoff and jitter, honouring Retry-After. All attempts of
 * a firing share its run id, token and idempotency key. When it is over, the
 * engine calls the done callback once, on the engine thread.
 *
 * A GET attempt carries no body and no Content-Type; its signature covers the
 * empty body. Redirects are not followed, and connections go direct (proxy
 * settings in the environment are ignored), so that every address connected
 * to is checked against the allow list after name resolution.
 */
#ifndef CF_DELIVERY_H
#define CF_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "metrics.h"
#include "netallow.h"
#include "run.h"

/* One firing to deliver. The engine owns it from delivery_submit() until done returns. */
struct delivery_request {
    struct job *job; /* owned copy of the job at claim time */
    char run_id[RUN_ID_MAX];
    char idempotency_key[RUN_ID_MAX + 32]; /* "<job>@<RFC 3339 T>", or the run id for manual */
    int64_t fencing_token;
    int64_t scheduled_at_ms; /* wall ms of the slot (manual: the trigger time) */
    enum run_trigger trigger;
    void *owner; /* caller's handle (its lease), passed back to may_retry and done */
};

/* How a firing ended. Strings are borrowed for the duration of the done call. */
struct delivery_result {
    enum run_status status; /* RUN_SUCCEEDED, RUN_FAILED or RUN_FENCED */
    int attempts;
    int http_status;              /* of the last attempt; 0 when none answered */
    const char *error;            /* of the last attempt; NULL when it succeeded */
    const char *response_excerpt; /* first RUN_EXCERPT_MAX bytes of the last response, or NULL */
    int64_t started_at_ms;        /* wall ms when the first attempt was sent */
    int64_t finished_at_ms;       /* wall ms when the last attempt ended */
    bool stopped_early;           /* no further attempt because may_retry said no */
};

struct delivery_config {
    const char *instance_id;      /* for the body's "instance"; borrowed for the engine's life */
    const char *default_secret;   /* when the job has none; borrowed */
    const struct netallow *allow; /* checked at connect time; borrowed; NULL = all but link-local */
    /*
     * Asked before every attempt after the first; returning false ends the
     * firing with what it has (e.g. the lease was lost). May be NULL.
     */
    bool (*may_retry)(void *ctx, void *owner);
    /* Called once per firing on the engine thread; the request is freed after it returns. */
    void (*done)(void *ctx, struct delivery_request *req, const struct delivery_result *result);
    void *ctx;
    /* Webhook durations and schedule lag are observed here; borrowed, may be NULL. */
    struct metrics *metrics;
};

struct delivery_engine;

/*
 * Starts the engine thread. cfg is copied; the strings it points to are
 * borrowed. Returns CF_OK with *out set, or CF_ERR_NOMEM / CF_ERR_IO.
 */
int delivery_engine_start(const struct delivery_config *cfg, struct delivery_engine **out);

/*
 * Hands a firing to the engine (steals req, also on error: it is then freed).
 * Thread-safe; returns at once. Returns CF_OK, or CF_ERR_SHUTDOWN when the
 * engine is stopping, CF_ERR_NOMEM when the engine's per-firing state cannot
 * be allocated, CF_ERR_INVALID for a NULL req (done is not called then).
 */
int delivery_submit(struct delivery_engine *engine, struct delivery_request *req);

/* How many firings are in flight (submitted and not yet done). */
int delivery_in_flight(struct delivery_engine *engine);

/*
 * Begins the stop without waiting: refuses new submissions, starts no new
 * retry (a firing waiting for one ends with what it has), and lets the
 * attempts in flight finish for at most grace_ms, after which they are
 * aborted (done is called for them with RUN_FAILED and error "shutdown").
 * The engine thread ends when no firing is left. A second call may shorten
 * the grace, never extend it. Accepts NULL.
 */
void delivery_engine_drain(struct delivery_engine *engine, int64_t grace_ms);

/*
 * Stops the engine: delivery_engine_drain(grace_ms), then joins the thread
 * and frees the engine. Accepts NULL.
 */
void delivery_engine_stop(struct delivery_engine *engine, int64_t grace_ms);

/* Frees a request and the job it owns; accepts NULL. */
void delivery_request_free(struct delivery_request *req);

/* ---- Pure parts, exposed for unit tests ---- */

enum delivery_verdict {
    DELIVERY_SUCCESS, /* 2xx */
    DELIVERY_RETRY,   /* network error, timeout, 408, 425, 429, 5xx */
    DELIVERY_FAIL,    /* other 4xx, 1xx, 3xx: not retried */
    DELIVERY_FENCED,  /* 409, 412: the target fenced us out */
};

/* Classifies an attempt: transport_failed for network errors and timeouts, else http_status. */
enum delivery_verdict delivery_classify(bool transport_failed, int http_status);

/*
 * Delay before the attempt after `attempt` (1-based) failed:
 * min(max_backoff_ms, backoff_ms * 2^(attempt-1)), with "equal jitter" (half
 * fixed, half uniform from random01 in [0,1)), and at least retry_after_ms
 * when the target sent Retry-After (-1 when absent), the latter capped at
 * one hour.
 */
int64_t delivery_backoff_ms(const struct job_retry *retry, int attempt, int64_t retry_after_ms,
                            double random01);

/*
 * Parses a Retry-After value (delta seconds or an HTTP date) into
 * milliseconds from now_wall_ms; returns -1 when absent or unparsable, 0 for
 * a date in the past.
 */
int64_t delivery_parse_retry_after(const char *value, int64_t now_wall_ms);

/*
 * Builds the JSON body of DESIGN §5 for one attempt, as a new malloc'd
 * NUL-terminated string (or the raw body for raw_body jobs). NULL on
 * allocation failure.
 */
char *delivery_build_body(const struct delivery_request *req, const char *instance_id, int attempt);

#endif
