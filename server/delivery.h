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
 * Bulkheads: attempts in flight are limited per target (scheme, host, port)
 * and overall. An attempt that finds its target's share (or the overall
 * share) taken waits in that target's own queue, first come first served,
 * and targets with waiting attempts take turns for the overall share; so a
 * target that hangs delays only the firings that call it. An attempt's
 * timeout_ms counts from when it became due, the wait for a free slot
 * included; the transfer gets what is left. A scheduled firing that has sent
 * nothing by its slot + job->starting_deadline_ms is not sent at all and
 * ends RUN_MISSED with a reason.
 *
 * A GET attempt carries no body and no Content-Type; its signature covers the
 * empty body. Redirects are not followed, and connections go direct (proxy
 * settings in the environment are ignored), so that every address connected
 * to is checked against the allow list after name resolution.
 */
#ifndef CF_DELIVERY_H
#define CF_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "metrics.h"
#include "netallow.h"
#include "run.h"

/* One firing to deliver. The engine owns it from delivery_submit() until done returns. */
struct delivery_request {
    struct job *job; /* owned copy of the job at claim time */
    char run_id[RUN_ID_MAX];
    /* "<job>@<RFC 3339 T>", or "<job>@manual-<run id>" for a manual run */
    char idempotency_key[JOB_NAME_MAX + sizeof("@manual-") + RUN_ID_MAX];
    int64_t fencing_token;
    int64_t scheduled_at_ms; /* wall ms of the slot (manual: the trigger time) */
    enum run_trigger trigger;
    void *owner; /* caller's handle (its lease), passed back to may_retry and done */
};

/* How a firing ended. Strings are borrowed for the duration of the done call. */
struct delivery_result {
    enum run_status status;       /* RUN_SUCCEEDED, RUN_FAILED, RUN_FENCED or RUN_MISSED */
    int attempts;                 /* attempts made, those that timed out while waiting included */
    int http_status;              /* of the last attempt; 0 when none answered */
    const char *error;            /* of the last attempt; NULL when it succeeded or was missed */
    const char *reason;           /* RUN_MISSED: why nothing was sent; NULL otherwise */
    const char *response_excerpt; /* first RUN_EXCERPT_MAX bytes of the last response, or NULL */
    int64_t started_at_ms;        /* wall ms when the first attempt was sent; 0 for none */
    int64_t finished_at_ms;       /* wall ms when the last attempt ended */
    bool stopped_early;           /* no further attempt because may_retry said no */
    bool has_lag;                 /* a request went out: lag_ms is known */
    int64_t lag_ms;               /* slot (a retry: its submission) to the first request sent */
    const struct run_attempt *attempt_log; /* the last attempt_log_count attempts, oldest first */
    int attempt_log_count;
};

struct signing_secrets;

struct delivery_config {
    const char *instance_id;      /* for the body's "instance"; borrowed for the engine's life */
    const char *default_secret;   /* when the job has none; borrowed */
    const struct netallow *allow; /* checked at connect time; borrowed; NULL = all but link-local */
    /*
     * When not NULL, chooses the secrets instead of the job's and
     * default_secret: several during a rotation's overlap. Borrowed.
     */
    struct signing_secrets *secrets;
    /*
     * Asked before every attempt after the first, and before a first attempt
     * that had to wait for a free slot; returning false ends the firing with
     * what it has (e.g. the lease was lost). May be NULL.
     */
    bool (*may_retry)(void *ctx, void *owner);
    /* Called once per firing on the engine thread; the request is freed after it returns. */
    void (*done)(void *ctx, struct delivery_request *req, const struct delivery_result *result);
    void *ctx;
    /* Webhook durations and schedule lag are observed here; borrowed, may be NULL. */
    struct metrics *metrics;
    /* Attempts in flight per target and overall; 0 for the defaults (delivery.c says why). */
    int target_max_attempts;
    int max_attempts;
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

/*
 * Writes the bulkhead key of url, "<scheme>://<host>:<port>" with the host
 * lowercased and the scheme's default port filled in, into out (len bytes).
 * Returns CF_OK, CF_ERR_INVALID for a URL without scheme or host, or
 * CF_ERR_NOMEM when out is too small or memory is short.
 */
int delivery_target_key(const char *url, char *out, size_t len);

/*
 * When an attempt that became due at due_ms (any one clock, in ms) stops
 * waiting for a free slot: due_ms + timeout_ms, or start_by_ms when nothing
 * of the firing was sent yet (sent false) and that comes first. *missed
 * says which: true when the starting deadline ends the wait (the firing is
 * then missed, not failed). start_by_ms INT64_MAX: no starting deadline.
 */
int64_t delivery_wait_deadline(int64_t due_ms, int64_t timeout_ms, int64_t start_by_ms, bool sent,
                               bool *missed);

/*
 * Bulkhead bookkeeping: slots of at most target_max holders per target key
 * and total_max overall. A waiter is a struct delivery_slot embedded in the
 * caller's own record (the bulkhead allocates nothing per waiter, only per
 * target with a holder or a waiter, freed when it has neither).
 */
struct delivery_bulkhead;
struct delivery_target;

struct delivery_slot {
    struct delivery_target *target;    /* while holding or waiting; NULL otherwise */
    struct delivery_slot *prev, *next; /* the target's queue, while waiting */
    bool holding;
};

/* A new empty bulkhead (both limits at least 1), or NULL when out of memory. */
struct delivery_bulkhead *delivery_bulkhead_new(int target_max, int total_max);

/* Frees the bulkhead; slots still in it are forgotten (not touched). Accepts NULL. */
void delivery_bulkhead_free(struct delivery_bulkhead *bulkhead);

/*
 * Enters slot (which must be in no bulkhead) for key: it holds at once when
 * its target has a free share, nobody waits before it there, and the total
 * has room; else it waits at the tail of its target's queue. slot->holding
 * says which. Returns CF_OK, or CF_ERR_NOMEM (slot not entered).
 */
int delivery_bulkhead_enter(struct delivery_bulkhead *bulkhead, const char *key,
                            struct delivery_slot *slot);

/* Takes slot out, whether holding or waiting; a slot in no bulkhead is left alone. */
void delivery_bulkhead_leave(struct delivery_bulkhead *bulkhead, struct delivery_slot *slot);

/*
 * The next waiting slot that may hold now, made holding: the head of a
 * target's queue, targets taking turns. NULL when none may.
 */
struct delivery_slot *delivery_bulkhead_next(struct delivery_bulkhead *bulkhead);

/* Slots holding, slots waiting and targets known, for tests and metrics. */
int delivery_bulkhead_holding(const struct delivery_bulkhead *bulkhead);
int delivery_bulkhead_waiting(const struct delivery_bulkhead *bulkhead);
int delivery_bulkhead_targets(const struct delivery_bulkhead *bulkhead);

#endif
