/*
 * delivery.c - webhook delivery over libcurl's multi interface.
 *
 * One engine thread owns the multi handle, every firing it has taken in,
 * every retry timer and the PRNG. Other threads only touch the inbound queue
 * and the counters guarded by engine->lock, and wake the engine thread with
 * curl_multi_wakeup(). Because nothing else runs curl or the callbacks, the
 * per-firing state needs no locking.
 *
 * A firing lives in exactly one place at a time: the inbound queue (waiting
 * for the engine thread to take it), the transfer list (an attempt is in the
 * multi handle, holding a slot of the bulkhead), or the timer heap, either
 * waiting out a backoff or waiting in its target's queue of the bulkhead for
 * a slot (its heap time is then the end of that wait). It leaves the engine
 * through firing_finish(), which calls done once and frees it.
 *
 * Only the bulkhead decides how many attempts curl gets: curl is given no
 * connection limit of its own, because a handle curl keeps pending for a
 * connection is not bounded by its timeout.
 */
#include "delivery.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "common.h"
#include "fence_scope.h"
#include "log.h"
#include "signature.h"
#include "signing_secrets.h"

/* A target cannot hold a firing back for longer than this with Retry-After. */
#define RETRY_AFTER_CAP_MS (3600 * 1000)
/* Delta seconds above this are clamped, so that the conversion to ms cannot overflow. */
#define RETRY_AFTER_MAX_SECONDS (INT64_MAX / 1000)
/* Per-attempt timeout used when a job carries none (DESIGN §3 default). */
#define DEFAULT_TIMEOUT_MS 30000
/*
 * Attempts in flight to one target (scheme, host, port) at once. A handful,
 * like a browser's six connections per host: enough to keep a healthy target
 * busy, since its answers free them again at once, and all that a target
 * that hangs can hold; its other firings wait in its own queue, and jobs of
 * other targets never wait behind them.
 */
#define TARGET_MAX_ATTEMPTS 16
/*
 * Attempts in flight across all targets. Each holds a socket and a curl
 * handle with its buffers (tens of KiB), so this bounds both; it takes
 * sixteen targets hanging at once to use it all, and targets then take
 * turns for the slots that free up.
 */
#define MAX_ATTEMPTS 256
/* Idle keep-alive connections kept for reuse. */
#define MAX_IDLE_CONNECTIONS 256L
/* Position of a firing that is not in the timer heap. */
#define NOT_IN_HEAP ((size_t)-1)
/* Longest wait in curl_multi_poll() when no timer is due; wake-ups end it sooner. */
#define IDLE_POLL_MS 60000
/* Pause after a failed curl_multi_poll(), so that a persistent error does not spin. */
#define POLL_ERROR_PAUSE_MS 10
/* Content type of a raw_body job that names none (job.c fills in the same). */
#define RAW_DEFAULT_CONTENT_TYPE "application/octet-stream"
#define ERROR_MAX 256

/*
 * One submitted firing and the state of its current attempt. Owned by the
 * engine thread once it has left the inbound queue.
 */
enum firing_state {
    FIRING_INBOUND, /* in the inbound queue */
    FIRING_BACKOFF, /* in the timer heap until its next attempt is due */
    FIRING_WAITING, /* in its target's queue and in the timer heap until the wait ends */
    FIRING_SENDING, /* an attempt in the multi handle, holding a slot */
};

struct firing {
    struct delivery_engine *engine;
    struct delivery_request *req;
    struct firing *inbound_next;                  /* inbound queue link, under engine->lock */
    struct firing *transfer_prev, *transfer_next; /* transfer list links, while easy is set */
    char *host;   /* URL host without brackets, for netallow_names_host() */
    char *target; /* bulkhead key, "<scheme>://<host>:<port>" */
    struct delivery_slot slot;
    enum firing_state state;
    size_t heap_index;        /* in engine->timers, or NOT_IN_HEAP */
    int64_t wake_boot_ms;     /* BACKOFF: next attempt due; WAITING: the wait ends */
    bool wait_misses;         /* WAITING: the end of the wait is the starting deadline */
    int64_t due_boot_ms;      /* when the current attempt became due */
    int64_t start_by_boot_ms; /* starting deadline of a scheduled slot; INT64_MAX for none */
    int attempt;              /* attempts made so far; the current one while easy is set */
    bool sent;                /* an attempt went to curl: the firing can no longer be missed */
    bool missed;              /* ended without sending: not started by the deadline */
    int64_t started_at_ms;    /* wall ms when the first attempt was sent */
    int64_t finished_at_ms;   /* wall ms when the last attempt ended */
    bool stopped_early;
    int64_t submitted_at_ms;       /* wall ms of delivery_submit(): a retry's lag counts from it */
    int64_t attempt_started_at_ms; /* wall ms when the current attempt was sent */
    bool has_lag;                  /* lag_ms is known: a request went out */
    int64_t lag_ms;                /* slot (a retry: its submission) to the first request sent */
    struct run_attempt *attempt_log; /* the last attempts, for the run's attempt_log */
    int attempt_log_count;

    /* The current attempt, released by attempt_release(). */
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char curl_error[CURL_ERROR_SIZE];
    bool address_refused; /* the connect-time check refused an address */
    bool address_opened;  /* ... and let another one through */
    char refused_address[INET6_ADDRSTRLEN];
    int64_t retry_after_ms; /* from the response's Retry-After, -1 when absent */

    /*
     * Outcome of the last attempt, kept until the next one starts. The
     * excerpt buffer (RUN_EXCERPT_MAX + 1 bytes) comes with the first attempt
     * sent, so that a firing waiting in a queue stays small.
     */
    char *excerpt;
    size_t excerpt_len;
    bool excerpt_truncated;
    enum delivery_verdict verdict;
    int http_status;
    char error[ERROR_MAX];
};

struct delivery_engine {
    struct delivery_config cfg; /* cfg.allow points at own_allow when the caller gave none */
    struct netallow *own_allow; /* the empty list, owned, when cfg->allow was NULL */
    CURLM *multi;               /* engine thread only, except curl_multi_wakeup() */
    struct delivery_bulkhead *bulkhead; /* engine thread only */
    pthread_t thread;

    pthread_mutex_t lock; /* guards the fields below up to the next comment */
    struct firing *inbound_head, *inbound_tail;
    int in_flight; /* submitted and not yet past done */
    bool stopping;
    int64_t stop_deadline_boot_ms;

    /* Engine thread only. */
    struct firing *transfers; /* firings with an attempt in the multi handle */
    struct firing **timers;   /* min-heap on wake_boot_ms, positions in heap_index */
    size_t timer_count, timer_cap;
    bool draining; /* stop seen: no new attempts after the ones in flight */
    int64_t drain_deadline_boot_ms;
    uint64_t rng_state; /* xorshift64* state, never 0 */
};

/* ------------------------------------------------------------------------ */
/* Pure parts                                                               */
/* ------------------------------------------------------------------------ */

enum delivery_verdict delivery_classify(bool transport_failed, int http_status)
{
    if (transport_failed)
        return DELIVERY_RETRY;
    if (http_status >= 200 && http_status <= 299)
        return DELIVERY_SUCCESS;
    if (http_status == 409 || http_status == 412)
        return DELIVERY_FENCED;
    if (http_status == 408 || http_status == 425 || http_status == 429)
        return DELIVERY_RETRY;
    if (http_status >= 500 && http_status <= 599)
        return DELIVERY_RETRY;
    return DELIVERY_FAIL;
}

int64_t delivery_backoff_ms(const struct job_retry *retry, int attempt, int64_t retry_after_ms,
                            double random01)
{
    int64_t cap_ms = retry->max_backoff_ms > 0 ? retry->max_backoff_ms : 0;
    int64_t base_ms = retry->backoff_ms > 0 ? retry->backoff_ms : 0;
    int64_t half_ms, delay_ms;

    if (base_ms > cap_ms)
        base_ms = cap_ms;
    /* Doubling stops at the cap, so no attempt number can overflow it. */
    for (int i = 1; i < attempt && base_ms > 0 && base_ms < cap_ms; i++)
        base_ms = base_ms > cap_ms / 2 ? cap_ms : base_ms * 2;

    /*
     * Equal jitter: half of the delay is fixed, so a failing target always
     * gets a real pause, and half is random, so that the firings of many
     * jobs (and instances) that failed together do not retry in lockstep.
     */
    if (!(random01 >= 0.0))
        random01 = 0.0; /* also NaN */
    if (random01 >= 1.0)
        random01 = nextafter(1.0, 0.0);
    half_ms = base_ms / 2;
    delay_ms = half_ms + (int64_t)(random01 * (double)(base_ms - half_ms));

    if (retry_after_ms >= 0) {
        int64_t floor_ms =
            retry_after_ms < RETRY_AFTER_CAP_MS ? retry_after_ms : RETRY_AFTER_CAP_MS;

        if (delay_ms < floor_ms)
            delay_ms = floor_ms;
    }
    return delay_ms;
}

/* Matches the literal lit at *p (case-sensitive, as HTTP dates are) and advances *p. */
static bool take_literal(const char **p, const char *lit)
{
    size_t len = strlen(lit);

    if (strncmp(*p, lit, len) != 0)
        return false;
    *p += len;
    return true;
}

/* Matches one of names at *p and advances *p; returns its index, or -1. */
static int take_name(const char **p, const char *const *names, int count)
{
    for (int i = 0; i < count; i++) {
        if (take_literal(p, names[i]))
            return i;
    }
    return -1;
}

static const char *const short_days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const long_days[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                        "Friday", "Saturday", "Sunday"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Reads "HH:MM:SS" at *p. */
static bool take_clock(const char **p, int *hour, int *minute, int *second)
{
    return cf_read_digits(p, 2, hour) && take_literal(p, ":") && cf_read_digits(p, 2, minute) &&
           take_literal(p, ":") && cf_read_digits(p, 2, second);
}

/*
 * Parses an HTTP date in the three forms of RFC 9110 §5.6.7 into epoch
 * seconds: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", the obsolete
 * RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and asctime "Sun Nov  6 08:49:37
 * 1994". The weekday is checked for spelling only. now_wall_ms places the
 * two-digit years of RFC 850 (at most 50 years ahead). False when invalid.
 */
static bool parse_http_date(const char *text, int64_t now_wall_ms, int64_t *epoch_s)
{
    const char *p = text;
    int year = 0, month = -1, day = 0, hour = 0, minute = 0, second = 0;
    bool parsed = false;

    /* Long weekday names first: "Sun" is a prefix of "Sunday". */
    if (take_name(&p, long_days, 7) >= 0) {
        int year2 = 0, now_year;

        parsed = take_literal(&p, ", ") && cf_read_digits(&p, 2, &day) && take_literal(&p, "-") &&
                 (month = take_name(&p, months, 12)) >= 0 && take_literal(&p, "-") &&
                 cf_read_digits(&p, 2, &year2) && take_literal(&p, " ") &&
                 take_clock(&p, &hour, &minute, &second) && take_literal(&p, " GMT");
        if (parsed) {
            time_t now_s = (time_t)(now_wall_ms / 1000);
            struct tm now_tm;

            gmtime_r(&now_s, &now_tm);
            now_year = now_tm.tm_year + 1900;
            year = now_year - now_year % 100 + year2;
            if (year > now_year + 50)
                year -= 100;
        }
    } else if (take_name(&p, short_days, 7) >= 0) {
        if (take_literal(&p, ", ")) {
            parsed = cf_read_digits(&p, 2, &day) && take_literal(&p, " ") &&
                     (month = take_name(&p, months, 12)) >= 0 && take_literal(&p, " ") &&
                     cf_read_digits(&p, 4, &year) && take_literal(&p, " ") &&
                     take_clock(&p, &hour, &minute, &second) && take_literal(&p, " GMT");
        } else if (take_literal(&p, " ")) {
            parsed = (month = take_name(&p, months, 12)) >= 0 && take_literal(&p, " ") &&
                     (take_literal(&p, " ") ? cf_read_digits(&p, 1, &day)
                                            : cf_read_digits(&p, 2, &day)) &&
                     take_literal(&p, " ") && take_clock(&p, &hour, &minute, &second) &&
                     take_literal(&p, " ") && cf_read_digits(&p, 4, &year);
        }
    }
    if (!parsed || *p != '\0')
        return false;

    static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > month_days[month] || (month == 1 && day == 29 && !leap) || hour > 23 ||
        minute > 59 || second > 60)
        return false;
    *epoch_s =
        cf_days_from_civil(year, month + 1, day) * 86400 + hour * 3600 + minute * 60 + second;
    return true;
}

int64_t delivery_parse_retry_after(const char *value, int64_t now_wall_ms)
{
    char text[64];
    size_t len;
    int64_t date_s;

    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    len = strlen(value);
    while (len > 0 && isspace((unsigned char)value[len - 1]))
        len--;
    if (len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, value, len);
    text[len] = '\0';

    if (isdigit((unsigned char)text[0])) {
        int64_t seconds = 0;

        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)text[i]))
                return -1;
            if (seconds <= (RETRY_AFTER_MAX_SECONDS - 9) / 10)
                seconds = seconds * 10 + (text[i] - '0');
            else
                seconds = RETRY_AFTER_MAX_SECONDS;
        }
        return seconds * 1000;
    }
    /* A four-digit year keeps date_s * 1000 far from overflow. */
    if (!parse_http_date(text, now_wall_ms, &date_s))
        return -1;
    return date_s * 1000 > now_wall_ms ? date_s * 1000 - now_wall_ms : 0;
}

/*
 * The raw body of a raw_body job, as a new string: the JSON string verbatim;
 * "" for null; any other JSON value (job validation should not let one
 * through) serialised compactly. NULL on allocation failure.
 */
static char *raw_body_text(const json_t *body)
{
    if (body == NULL || json_is_null(body))
        return strdup("");
    if (json_is_string(body))
        return strdup(json_string_value(body));
    return json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
}

char *delivery_build_body(const struct delivery_request *req, const char *instance_id, int attempt)
{
    const struct job *job = req->job;
    json_t *payload = job->webhook.body != NULL ? job->webhook.body : json_null();
    char scheduled_at[CF_TIME_LEN];
    json_t *doc = NULL;
    char *text = NULL;

    if (job->webhook.raw_body)
        return raw_body_text(job->webhook.body);

    cf_format_time(req->scheduled_at_ms, scheduled_at);
    doc = json_pack("{s:s, s:s, s:s, s:I, s:i, s:s?, s:s, s:O}", "job", job->name, "run_id",
                    req->run_id, "scheduled_at", scheduled_at, "fencing_token",
                    (json_int_t)req->fencing_token, "attempt", attempt, "instance", instance_id,
                    "trigger", run_trigger_name(req->trigger), "payload", payload);
    if (doc == NULL)
        goto out;
    text = json_dumps(doc, JSON_COMPACT);
out:
    json_decref(doc);
    return text;
}

void delivery_request_free(struct delivery_request *req)
{
    if (req == NULL)
        return;
    job_free(req->job);
    free(req);
}

/* ------------------------------------------------------------------------ */
/* Bulkheads (pure)                                                         */
/* ------------------------------------------------------------------------ */

int delivery_target_key(const char *url, char *out, size_t len)
{
    CURLU *parsed = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int err = CF_ERR_NOMEM;
    int n;

    assert(url != NULL && out != NULL);
    if (parsed == NULL)
        return CF_ERR_NOMEM;
    err = CF_ERR_INVALID;
    if (curl_url_set(parsed, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(parsed, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    /* Host names are case-insensitive: EXAMPLE.com and example.com are one target. */
    for (char *c = host; *c != '\0'; c++)
        *c = (char)tolower((unsigned char)*c);
    for (char *c = scheme; *c != '\0'; c++)
        *c = (char)tolower((unsigned char)*c);
    n = snprintf(out, len, "%s://%s:%s", scheme, host, port);
    err = n >= 0 && (size_t)n < len ? CF_OK : CF_ERR_NOMEM;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(parsed);
    return err;
}

int64_t delivery_wait_deadline(int64_t due_ms, int64_t timeout_ms, int64_t start_by_ms, bool sent,
                               bool *missed)
{
    int64_t deadline_ms = timeout_ms > INT64_MAX - due_ms ? INT64_MAX : due_ms + timeout_ms;

    *missed = false;
    if (!sent && start_by_ms <= deadline_ms) {
        *missed = true;
        deadline_ms = start_by_ms;
    }
    return deadline_ms;
}

/* Buckets of the target table; targets without holder or waiter are freed, so few live. */
#define TARGET_BUCKETS 256

/*
 * One target (key) with a holder or a waiter. queue_head..queue_tail are its
 * waiting slots, oldest first. It is on the bulkhead's ready list exactly
 * when it has a waiter and a free share of its own, i.e. when only the total
 * keeps its head waiting.
 */
struct delivery_target {
    struct delivery_target *bucket_next;
    struct delivery_target *ready_prev, *ready_next;
    bool ready;
    int holding;
    int waiting;
    struct delivery_slot *queue_head, *queue_tail;
    char key[]; /* NUL-terminated */
};

/* The table of targets and the ready list, in FIFO order of becoming ready. */
struct delivery_bulkhead {
    int target_max, total_max;
    int holding, waiting, targets;
    struct delivery_target *ready_head, *ready_tail;
    struct delivery_target *buckets[TARGET_BUCKETS];
};

static unsigned target_bucket(const char *key)
{
    return (unsigned)(cf_fnv1a(CF_FNV1A_START, key) % TARGET_BUCKETS);
}

struct delivery_bulkhead *delivery_bulkhead_new(int target_max, int total_max)
{
    struct delivery_bulkhead *bulkhead = calloc(1, sizeof(*bulkhead));

    assert(target_max >= 1 && total_max >= 1);
    if (bulkhead == NULL)
        return NULL;
    bulkhead->target_max = target_max;
    bulkhead->total_max = total_max;
    return bulkhead;
}

void delivery_bulkhead_free(struct delivery_bulkhead *bulkhead)
{
    if (bulkhead == NULL)
        return;
    for (size_t i = 0; i < TARGET_BUCKETS; i++) {
        while (bulkhead->buckets[i] != NULL) {
            struct delivery_target *target = bulkhead->buckets[i];

            bulkhead->buckets[i] = target->bucket_next;
            free(target);
        }
    }
    free(bulkhead);
}

/* Puts target on the ready list, or takes it off, as its state now says. */
static void target_update_ready(struct delivery_bulkhead *bulkhead, struct delivery_target *target)
{
    bool ready = target->waiting > 0 && target->holding < bulkhead->target_max;

    if (ready == target->ready)
        return;
    target->ready = ready;
    if (ready) {
        target->ready_prev = bulkhead->ready_tail;
        target->ready_next = NULL;
        if (bulkhead->ready_tail != NULL)
            bulkhead->ready_tail->ready_next = target;
        else
            bulkhead->ready_head = target;
        bulkhead->ready_tail = target;
        return;
    }
    if (target->ready_prev != NULL)
        target->ready_prev->ready_next = target->ready_next;
    else
        bulkhead->ready_head = target->ready_next;
    if (target->ready_next != NULL)
        target->ready_next->ready_prev = target->ready_prev;
    else
        bulkhead->ready_tail = target->ready_prev;
    target->ready_prev = NULL;
    target->ready_next = NULL;
}

/* Frees target once nothing holds or waits on it. */
static void target_forget_if_idle(struct delivery_bulkhead *bulkhead,
                                  struct delivery_target *target)
{
    struct delivery_target **link = &bulkhead->buckets[target_bucket(target->key)];

    if (target->holding > 0 || target->waiting > 0)
        return;
    assert(!target->ready);
    while (*link != target)
        link = &(*link)->bucket_next;
    *link = target->bucket_next;
    bulkhead->targets--;
    free(target);
}

int delivery_bulkhead_enter(struct delivery_bulkhead *bulkhead, const char *key,
                            struct delivery_slot *slot)
{
    unsigned bucket = target_bucket(key);
    struct delivery_target *target = bulkhead->buckets[bucket];

    assert(slot->target == NULL);
    while (target != NULL && strcmp(target->key, key) != 0)
        target = target->bucket_next;
    if (target == NULL) {
        size_t key_len = strlen(key);

        target = calloc(1, sizeof(*target) + key_len + 1);
        if (target == NULL)
            return CF_ERR_NOMEM;
        memcpy(target->key, key, key_len + 1);
        target->bucket_next = bulkhead->buckets[bucket];
        bulkhead->buckets[bucket] = target;
        bulkhead->targets++;
    }
    slot->target = target;
    slot->prev = NULL;
    slot->next = NULL;
    /* First come, first served: nobody overtakes a waiter of the same target. */
    if (target->waiting == 0 && target->holding < bulkhead->target_max &&
        bulkhead->holding < bulkhead->total_max) {
        slot->holding = true;
        target->holding++;
        bulkhead->holding++;
        return CF_OK;
    }
    slot->holding = false;
    slot->prev = target->queue_tail;
    if (target->queue_tail != NULL)
        target->queue_tail->next = slot;
    else
        target->queue_head = slot;
    target->queue_tail = slot;
    target->waiting++;
    bulkhead->waiting++;
    target_update_ready(bulkhead, target);
    return CF_OK;
}

void delivery_bulkhead_leave(struct delivery_bulkhead *bulkhead, struct delivery_slot *slot)
{
    struct delivery_target *target = slot->target;

    if (target == NULL)
        return;
    if (slot->holding) {
        target->holding--;
        bulkhead->holding--;
    } else {
        if (slot->prev != NULL)
            slot->prev->next = slot->next;
        else
            target->queue_head = slot->next;
        if (slot->next != NULL)
            slot->next->prev = slot->prev;
        else
            target->queue_tail = slot->prev;
        target->waiting--;
        bulkhead->waiting--;
    }
    slot->target = NULL;
    slot->prev = NULL;
    slot->next = NULL;
    slot->holding = false;
    target_update_ready(bulkhead, target);
    target_forget_if_idle(bulkhead, target);
}

struct delivery_slot *delivery_bulkhead_next(struct delivery_bulkhead *bulkhead)
{
    struct delivery_target *target = bulkhead->ready_head;
    struct delivery_slot *slot;

    if (target == NULL || bulkhead->holding >= bulkhead->total_max)
        return NULL;
    slot = target->queue_head;
    target->queue_head = slot->next;
    if (slot->next != NULL)
        slot->next->prev = NULL;
    else
        target->queue_tail = NULL;
    slot->next = NULL;
    slot->holding = true;
    target->waiting--;
    bulkhead->waiting--;
    target->holding++;
    bulkhead->holding++;
    /* Round robin: the target goes to the back of the line for its next turn. */
    target_update_ready(bulkhead, target);
    if (target->ready && bulkhead->ready_tail != target) {
        bulkhead->ready_head = target->ready_next;
        bulkhead->ready_head->ready_prev = NULL;
        target->ready_next = NULL;
        target->ready_prev = bulkhead->ready_tail;
        bulkhead->ready_tail->ready_next = target;
        bulkhead->ready_tail = target;
    }
    return slot;
}

int delivery_bulkhead_holding(const struct delivery_bulkhead *bulkhead)
{
    return bulkhead->holding;
}

int delivery_bulkhead_waiting(const struct delivery_bulkhead *bulkhead)
{
    return bulkhead->waiting;
}

int delivery_bulkhead_targets(const struct delivery_bulkhead *bulkhead)
{
    return bulkhead->targets;
}

/* ------------------------------------------------------------------------ */
/* Engine internals: randomness, timers, transfer list                      */
/* ------------------------------------------------------------------------ */

/* Seeds the jitter PRNG; jitter needs no secrecy, only independence between instances. */
static void rng_seed(struct delivery_engine *engine)
{
    uint64_t seed = 0;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)cf_boot_ms() ^ ((uint64_t)(uintptr_t)engine << 16);
    engine->rng_state = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
}

/* A uniform double in [0, 1) from xorshift64*. */
static double rng_next01(struct delivery_engine *engine)
{
    uint64_t x = engine->rng_state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    engine->rng_state = x;
    return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) * 0x1.0p-53;
}

static void timer_place(struct delivery_engine *engine, size_t i, struct firing *f)
{
    engine->timers[i] = f;
    f->heap_index = i;
}

static void timer_sift_up(struct delivery_engine *engine, size_t i)
{
    struct firing *f = engine->timers[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (engine->timers[parent]->wake_boot_ms <= f->wake_boot_ms)
            break;
        timer_place(engine, i, engine->timers[parent]);
        i = parent;
    }
    timer_place(engine, i, f);
}

static void timer_sift_down(struct delivery_engine *engine, size_t i)
{
    struct firing *f = engine->timers[i];

    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, least = left;

        if (left >= engine->timer_count)
            break;
        if (right < engine->timer_count &&
            engine->timers[right]->wake_boot_ms < engine->timers[left]->wake_boot_ms)
            least = right;
        if (f->wake_boot_ms <= engine->timers[least]->wake_boot_ms)
            break;
        timer_place(engine, i, engine->timers[least]);
        i = least;
    }
    timer_place(engine, i, f);
}

/* Queues f until f->wake_boot_ms. CF_OK or CF_ERR_NOMEM (f not queued). */
static int timer_push(struct delivery_engine *engine, struct firing *f)
{
    if (engine->timer_count == engine->timer_cap) {
        size_t cap = engine->timer_cap ? engine->timer_cap * 2 : 64;
        struct firing **grown = realloc(engine->timers, cap * sizeof(*grown));

        if (grown == NULL)
            return CF_ERR_NOMEM;
        engine->timers = grown;
        engine->timer_cap = cap;
    }
    timer_place(engine, engine->timer_count++, f);
    timer_sift_up(engine, f->heap_index);
    return CF_OK;
}

/* Takes f out of the timer heap; a firing not in it is left alone. */
static void timer_remove(struct delivery_engine *engine, struct firing *f)
{
    size_t i = f->heap_index;
    struct firing *last;

    if (i == NOT_IN_HEAP)
        return;
    assert(i < engine->timer_count && engine->timers[i] == f);
    f->heap_index = NOT_IN_HEAP;
    last = engine->timers[--engine->timer_count];
    if (last == f)
        return;
    timer_place(engine, i, last);
    timer_sift_down(engine, i);
    timer_sift_up(engine, last->heap_index);
}

/* Removes and returns the firing due first; the heap must not be empty. */
static struct firing *timer_pop(struct delivery_engine *engine)
{
    struct firing *top = engine->timers[0];

    timer_remove(engine, top);
    return top;
}

static void transfer_link(struct delivery_engine *engine, struct firing *f)
{
    f->transfer_prev = NULL;
    f->transfer_next = engine->transfers;
    if (engine->transfers != NULL)
        engine->transfers->transfer_prev = f;
    engine->transfers = f;
}

static void transfer_unlink(struct delivery_engine *engine, struct firing *f)
{
    if (f->transfer_prev != NULL)
        f->transfer_prev->transfer_next = f->transfer_next;
    else
        engine->transfers = f->transfer_next;
    if (f->transfer_next != NULL)
        f->transfer_next->transfer_prev = f->transfer_prev;
    f->transfer_prev = NULL;
    f->transfer_next = NULL;
}

/* ------------------------------------------------------------------------ */
/* Finishing a firing                                                       */
/* ------------------------------------------------------------------------ */

static enum run_status status_of(enum delivery_verdict verdict)
{
    switch (verdict) {
    case DELIVERY_SUCCESS:
        return RUN_SUCCEEDED;
    case DELIVERY_FENCED:
        return RUN_FENCED;
    case DELIVERY_RETRY:
    case DELIVERY_FAIL:
        break;
    }
    return RUN_FAILED;
}

/*
 * Reports f's outcome through done (once), then frees f and its request.
 * f must be in neither the transfer list nor the timer heap.
 */
static void firing_finish(struct firing *f)
{
    struct delivery_engine *engine = f->engine;
    struct delivery_result result = {
        .status = f->missed ? RUN_MISSED : status_of(f->verdict),
        .attempts = f->attempt,
        .http_status = f->http_status,
        .error =
            !f->missed && f->verdict != DELIVERY_SUCCESS && f->error[0] != '\0' ? f->error : NULL,
        .reason = f->missed ? f->error : NULL,
        .response_excerpt = f->excerpt != NULL && f->excerpt_len > 0 ? f->excerpt : NULL,
        .started_at_ms = f->started_at_ms,
        .finished_at_ms = f->finished_at_ms != 0 ? f->finished_at_ms : cf_wall_ms(),
        .stopped_early = f->stopped_early,
        .has_lag = f->has_lag,
        .lag_ms = f->lag_ms,
        .attempt_log = f->attempt_log,
        .attempt_log_count = f->attempt_log_count,
    };

    assert(f->heap_index == NOT_IN_HEAP && f->easy == NULL);
    delivery_bulkhead_leave(engine->bulkhead, &f->slot);
    if (engine->cfg.done != NULL)
        engine->cfg.done(engine->cfg.ctx, f->req, &result);
    delivery_request_free(f->req);
    free(f->host);
    free(f->target);
    free(f->excerpt);
    free(f->attempt_log);
    free(f);

    pthread_mutex_lock(&engine->lock);
    engine->in_flight--;
    pthread_mutex_unlock(&engine->lock);
}

/* The target's name in messages: the key without its scheme. */
static const char *target_name(const struct firing *f)
{
    const char *sep = f->target != NULL ? strstr(f->target, "://") : NULL;

    return sep != NULL ? sep + 3 : f->req->job->webhook.url;
}

/* Ends f unsent: its starting deadline came before a free slot did. */
static void firing_miss(struct firing *f)
{
    f->missed = true;
    f->finished_at_ms = cf_wall_ms();
    snprintf(f->error, sizeof(f->error),
             "not sent: target %s had no free connection before the starting deadline",
             target_name(f));
    log_debug("webhook firing missed", "job=%s run=%s target=%s", f->req->job->name, f->req->run_id,
              target_name(f));
    firing_finish(f);
}

/* Ends f without a response: a local failure before or instead of an attempt. */
static void firing_fail(struct firing *f, const char *error)
{
    f->verdict = DELIVERY_FAIL;
    f->http_status = 0;
    f->excerpt_len = 0;
    f->finished_at_ms = cf_wall_ms();
    snprintf(f->error, sizeof(f->error), "%s", error);
    firing_finish(f);
}

/* ------------------------------------------------------------------------ */
/* One attempt                                                              */
/* ------------------------------------------------------------------------ */

/* Releases the current attempt's handle, headers, body and slot; leaves its outcome. */
static void attempt_release(struct firing *f)
{
    delivery_bulkhead_leave(f->engine->bulkhead, &f->slot);
    if (f->easy != NULL) {
        curl_multi_remove_handle(f->engine->multi, f->easy);
        curl_easy_cleanup(f->easy);
        f->easy = NULL;
        transfer_unlink(f->engine, f);
    }
    curl_slist_free_all(f->headers);
    f->headers = NULL;
    free(f->body);
    f->body = NULL;
}

/*
 * Connect-time address check: every address curl is about to connect to,
 * after name resolution, goes through the allow list, so that a name that
 * resolves to a link-local (or otherwise refused) address is refused too.
 */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
    struct firing *f = clientp;
    const struct netallow *allow = f->engine->cfg.allow;
    bool listed = netallow_names_host(allow, f->host);

    if (!netallow_address_allowed(allow, &address->addr, listed)) {
        const void *raw = NULL;

        if (f->address_refused)
            return CURL_SOCKET_BAD; /* the error names the first address refused */

        if (address->family == AF_INET)
            raw = &((const struct sockaddr_in *)(const void *)&address->addr)->sin_addr;
        else if (address->family == AF_INET6)
            raw = &((const struct sockaddr_in6 *)(const void *)&address->addr)->sin6_addr;
        if (raw == NULL ||
            inet_ntop(address->family, raw, f->refused_address, sizeof(f->refused_address)) == NULL)
            snprintf(f->refused_address, sizeof(f->refused_address), "family %d", address->family);
        f->address_refused = true;
        return CURL_SOCKET_BAD;
    }
    f->address_opened = true;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

/* Keeps the first RUN_EXCERPT_MAX bytes of the response body and reads past the rest. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct firing *f = userdata;
    size_t len = size * nmemb;
    size_t room = RUN_EXCERPT_MAX - f->excerpt_len;
    size_t take = len < room ? len : room;

    memcpy(f->excerpt + f->excerpt_len, data, take);
    f->excerpt_len += take;
    f->excerpt[f->excerpt_len] = '\0';
    if (take < len)
        f->excerpt_truncated = true;
    return len;
}

/* Captures Retry-After of the final response (a status line resets it). */
static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    static const char name[] = "retry-after:";
    struct firing *f = userdata;
    size_t len = size * nitems;
    char value[128];

    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        f->retry_after_ms = -1;
    } else if (len > sizeof(name) - 1 && strncasecmp(line, name, sizeof(name) - 1) == 0) {
        size_t value_len = len - (sizeof(name) - 1);

        if (value_len >= sizeof(value))
            value_len = sizeof(value) - 1;
        memcpy(value, line + sizeof(name) - 1, value_len);
        value[value_len] = '\0';
        f->retry_after_ms = delivery_parse_retry_after(value, cf_wall_ms());
    }
    return len;
}

/* Appends one formatted header line to *list; false on allocation failure (*list intact). */
static bool header_append(struct curl_slist **list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool header_append(struct curl_slist **list, const char *fmt, ...)
{
    struct curl_slist *grown;
    char *line = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    grown = curl_slist_append(*list, line);
    free(line);
    if (grown == NULL)
        return false;
    *list = grown;
    return true;
}

/*
 * Builds the header list of DESIGN §5 for attempt number `attempt`, signed
 * over body (body_len bytes; empty for GET) twice, Cronfence-Signature (v2)
 * and the Standard Webhooks webhook-id/-timestamp/-signature, then the job's
 * own headers. Cronfence-Fence-Scope follows the job's overlap
 * (fence_scope.h); it is outside the signatures. CF_OK or CF_ERR_NOMEM.
 */
static int build_headers(struct firing *f, int attempt, bool has_body, const char *body,
                         size_t body_len)
{
    const struct delivery_request *req = f->req;
    const struct job *job = req->job;
    const char *secret =
        job->signing_secret != NULL ? job->signing_secret : f->engine->cfg.default_secret;
    char chosen[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1];
    const char *secrets[SIGNATURE_SECRETS_MAX] = {secret};
    size_t secret_count = secret != NULL ? 1 : 0;
    /* Both schemes carry the same t, so the two headers describe one signing. */
    int64_t now_ms = cf_wall_ms(), now_s = now_ms / 1000;
    char token[24], scheduled_at[CF_TIME_LEN], signature[SIGNATURE_HEADER_LEN];
    char webhook_signature[SIGNATURE_WEBHOOK_HEADER_LEN];
    struct curl_slist **list = &f->headers;

    snprintf(token, sizeof(token), "%" PRId64, req->fencing_token);
    cf_format_time(req->scheduled_at_ms, scheduled_at);

    if (has_body) {
        const char *type = !job->webhook.raw_body              ? "application/json"
                           : job->webhook.content_type != NULL ? job->webhook.content_type
                                                               : RAW_DEFAULT_CONTENT_TYPE;

        if (!header_append(list, "Content-Type: %s", type))
            return CF_ERR_NOMEM;
    }
    if (!header_append(list, "User-Agent: cronfence/%s", CF_VERSION) ||
        !header_append(list, "Fencing-Token: %s", token) ||
        !header_append(list, "Idempotency-Key: %s", req->idempotency_key) ||
        !header_append(list, "Cronfence-Job: %s", job->name) ||
        !header_append(list, "Cronfence-Run: %s", req->run_id) ||
        !header_append(list, "Cronfence-Scheduled-At: %s", scheduled_at) ||
        !header_append(list, "Cronfence-Attempt: %d", attempt) ||
        !header_append(list, FENCE_SCOPE_HEADER ": %s",
                       fence_scope_name(fence_scope_of_overlap(job->overlap))))
        return CF_ERR_NOMEM;
    if (f->engine->cfg.secrets != NULL) {
        /* During a rotation's overlap: one signature per valid secret, newest first. */
        secret_count = signing_secrets_for_job(f->engine->cfg.secrets, job, now_ms, chosen);
        for (size_t i = 0; i < secret_count; i++)
            secrets[i] = chosen[i];
    }
    /*
     * Never unsigned: with no secret known (a cluster instance that has not
     * read the cluster's yet) the attempt fails, and may be retried.
     */
    if (secret_count == 0)
        return CF_ERR_NOT_FOUND;
    if (signature_header(secrets, secret_count, now_s, job->name, token, req->idempotency_key, body,
                         body_len, signature) != CF_OK ||
        signature_webhook_header(secrets, secret_count, req->idempotency_key, now_s, body, body_len,
                                 webhook_signature) != CF_OK ||
        !header_append(list, "Cronfence-Signature: %s", signature) ||
        !header_append(list, "webhook-id: %s", req->idempotency_key) ||
        !header_append(list, "webhook-timestamp: %" PRId64, now_s) ||
        !header_append(list, "webhook-signature: %s", webhook_signature))
        return CF_ERR_NOMEM;
    /* No "Expect: 100-continue" round trip before larger bodies. */
    if (!header_append(list, "Expect:"))
        return CF_ERR_NOMEM;
    for (size_t i = 0; i < job->webhook.header_count; i++) {
        const struct job_header *h = &job->webhook.headers[i];
        /* curl drops "Name:" with nothing after it; "Name;" sends it empty. */
        bool ok = h->value[0] != '\0' ? header_append(list, "%s: %s", h->name, h->value)
                                      : header_append(list, "%s;", h->name);

        if (!ok)
            return CF_ERR_NOMEM;
    }
    return CF_OK;
}

/* The job's per-attempt timeout in ms. */
static int64_t timeout_of(const struct firing *f)
{
    const struct job *job = f->req->job;

    return job->webhook.timeout_ms > 0 ? job->webhook.timeout_ms : DEFAULT_TIMEOUT_MS;
}

/*
 * Sends the next attempt of f, which holds a slot: builds its body, headers
 * and easy handle and adds it to the multi handle, with the part of the
 * attempt's timeout that waiting for the slot left. On failure the firing
 * is finished as failed, and f is gone.
 */
static void attempt_start(struct firing *f)
{
    struct delivery_engine *engine = f->engine;
    const struct job *job = f->req->job;
    const char *method = job->webhook.method != NULL ? job->webhook.method : "POST";
    bool has_body = strcmp(method, "GET") != 0;
    int attempt = f->attempt + 1;
    int64_t timeout_ms = timeout_of(f) - (cf_boot_ms() - f->due_boot_ms);
    const char *error = "out of memory";
    CURL *easy = NULL;

    assert(f->slot.holding);
    f->state = FIRING_SENDING;
    /* A wait that used the whole timeout ends as a timeout before this is called. */
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (f->excerpt == NULL) {
        f->excerpt = malloc(RUN_EXCERPT_MAX + 1);
        if (f->excerpt == NULL)
            goto undo_attempt;
    }

    f->address_refused = false;
    f->address_opened = false;
    f->refused_address[0] = '\0';
    f->curl_error[0] = '\0';
    f->retry_after_ms = -1;
    f->excerpt_len = 0;
    f->excerpt_truncated = false;
    f->excerpt[0] = '\0';
    f->attempt_started_at_ms = cf_wall_ms();
    if (f->started_at_ms == 0)
        f->started_at_ms = f->attempt_started_at_ms;
    if (has_body) {
        f->body = delivery_build_body(f->req, engine->cfg.instance_id, attempt);
        if (f->body == NULL)
            goto undo_attempt;
    }
    switch (build_headers(f, attempt, has_body, has_body ? f->body : "",
                          has_body ? strlen(f->body) : 0)) {
    case CF_OK:
        break;
    case CF_ERR_NOT_FOUND:
        error = "no signing secret known yet (the cluster's is read from the lock nodes): "
                "nothing is sent unsigned";
        goto undo_attempt;
    default:
        goto undo_attempt;
    }

    easy = curl_easy_init();
    if (easy == NULL)
        goto undo_attempt;
    error = "cannot set up the request";
    curl_easy_setopt(easy, CURLOPT_PRIVATE, f);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, f->curl_error);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, f);
    if (curl_easy_setopt(easy, CURLOPT_URL, job->webhook.url) != CURLE_OK ||
        curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        /* No proxy from the environment: the address check must see the target itself. */
        curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK)
        goto undo_attempt;
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, f->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(f->body));
        if (strcmp(method, "POST") != 0 &&
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)
            goto undo_attempt;
    }
    if (curl_multi_add_handle(engine->multi, easy) != CURLM_OK)
        goto undo_attempt;

    f->easy = easy;
    f->attempt = attempt;
    f->sent = true;
    transfer_link(engine, f);
    return;

undo_attempt:
    curl_easy_cleanup(easy);
    attempt_release(f);
    firing_fail(f, error);
}

/*
 * Copies s into out with a capitalised first word lowercased, for lowercase
 * error messages ("Could not resolve" becomes "could not resolve"; "SSL"
 * stays).
 */
static void lowercase_first(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s);
    if (isupper((unsigned char)out[0]) && !isupper((unsigned char)out[1]))
        out[0] = (char)tolower((unsigned char)out[0]);
}

/* Describes a transport failure into f->error and says whether it is worth retrying. */
static enum delivery_verdict describe_failure(struct firing *f, CURLcode code, long os_errno)
{
    const struct job *job = f->req->job;
    char buf[ERROR_MAX];

    /* Refused only when no allowed address was tried: else that one's failure says more. */
    if (f->address_refused && !f->address_opened) {
        snprintf(f->error, sizeof(f->error), "address not allowed: %s", f->refused_address);
        return DELIVERY_FAIL;
    }
    if (code == CURLE_OPERATION_TIMEDOUT) {
        snprintf(f->error, sizeof(f->error), "timeout after %" PRId64 " ms",
                 job->webhook.timeout_ms > 0 ? job->webhook.timeout_ms
                                             : (int64_t)DEFAULT_TIMEOUT_MS);
        return DELIVERY_RETRY;
    }
    if (code == CURLE_COULDNT_CONNECT && os_errno != 0) {
        lowercase_first(f->error, sizeof(f->error), strerror_r((int)os_errno, buf, sizeof(buf)));
        return DELIVERY_RETRY;
    }
    /* curl's error buffer names the detail ("could not resolve host: x"); its code the kind. */
    lowercase_first(f->error, sizeof(f->error),
                    f->curl_error[0] != '\0' ? f->curl_error : curl_easy_strerror(code));
    if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL)
        return DELIVERY_FAIL; /* the same URL will fail the same way */
    return delivery_classify(true, 0);
}

/*
 * Cuts a multi-byte UTF-8 sequence that the RUN_EXCERPT_MAX limit split in
 * two, so that a text body stays valid text in the run record.
 */
static size_t utf8_whole_prefix(const char *text, size_t len)
{
    size_t start = len;
    size_t need;
    unsigned char lead;

    while (start > 0 && len - start < 3 && ((unsigned char)text[start - 1] & 0xc0) == 0x80)
        start--;
    if (start == 0)
        return len;
    lead = (unsigned char)text[start - 1];
    need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return len - (start - 1) < need ? start - 1 : len;
}

/*
 * Observes the attempt just ended: its duration, and for the first attempt
 * of a scheduled slot the lag from the slot's instant to the request sent
 * (the attempt's start plus libcurl's time to the start of the transfer).
 */
static void observe_attempt(struct firing *f)
{
    struct metrics *metrics = f->engine->cfg.metrics;
    curl_off_t total_us = 0, pretransfer_us = 0;

    if (metrics == NULL)
        return;
    curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    metrics_observe(metrics, METRICS_WEBHOOK_DURATION, (int64_t)total_us);
    if (f->attempt != 1 || f->req->trigger != RUN_TRIGGER_SCHEDULE)
        return;
    /* No request went out when the connection failed: there is no lag to tell. */
    if (curl_easy_getinfo(f->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us) != CURLE_OK ||
        pretransfer_us <= 0)
        return;
    metrics_observe(metrics, METRICS_SCHEDULE_LAG,
                    (f->started_at_ms - f->req->scheduled_at_ms) * 1000 + (int64_t)pretransfer_us);
}

/*
 * Notes the attempt just ended in f's attempt log (started at started_ms,
 * wall). Out of memory, the entry is left out: the log is forensics, the
 * firing goes on without it.
 */
static void log_attempt(struct firing *f, int64_t started_ms)
{
    struct run_attempt entry = {
        .attempt = f->attempt,
        .started_at_ms = started_ms,
        .duration_ms = f->finished_at_ms - started_ms,
        .http_status = f->http_status,
    };

    if (f->verdict != DELIVERY_SUCCESS) {
        size_t len = strnlen(f->error, sizeof(entry.error) - 1);

        memcpy(entry.error, f->error, len);
        entry.error[len] = '\0';
    }
    run_attempt_log_add(&f->attempt_log, &f->attempt_log_count, &entry);
}

/*
 * Notes the lag of the first request that went out: from the slot (a
 * retry: from its submission) to the attempt's start plus libcurl's time
 * to the start of the transfer. Called before the attempt's handle is released.
 */
static void note_lag(struct firing *f)
{
    curl_off_t pretransfer_us = 0;
    int64_t base_ms =
        f->req->trigger == RUN_TRIGGER_RETRY ? f->submitted_at_ms : f->req->scheduled_at_ms;

    if (f->has_lag ||
        curl_easy_getinfo(f->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us) != CURLE_OK ||
        pretransfer_us <= 0)
        return;
    f->has_lag = true;
    f->lag_ms = f->attempt_started_at_ms - base_ms + (int64_t)pretransfer_us / 1000;
}

/* After an attempt's verdict: done, or the backoff before the next attempt. */
static void attempt_over(struct firing *f)
{
    struct delivery_engine *engine = f->engine;
    const struct delivery_request *req = f->req;
    int attempts = req->job->retry.attempts > 0 ? req->job->retry.attempts : 1;

    /* During a stop, no new attempt starts: the firing ends with what it has. */
    if (f->verdict != DELIVERY_RETRY || f->attempt >= attempts || engine->draining) {
        firing_finish(f);
        return;
    }
    f->state = FIRING_BACKOFF;
    f->wake_boot_ms = cf_boot_ms() + delivery_backoff_ms(&req->job->retry, f->attempt,
                                                         f->retry_after_ms, rng_next01(engine));
    if (timer_push(engine, f) != CF_OK)
        firing_finish(f);
}

/* Handles the end of f's current attempt: verdict, then done or a retry timer. */
static void attempt_ended(struct firing *f, CURLcode code)
{
    const struct delivery_request *req = f->req;
    long status = 0, os_errno = 0;

    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(f->easy, CURLINFO_OS_ERRNO, &os_errno);
    observe_attempt(f);
    note_lag(f);
    attempt_release(f);
    f->finished_at_ms = cf_wall_ms();
    f->http_status = (int)status;
    if (f->excerpt_truncated) {
        f->excerpt_len = utf8_whole_prefix(f->excerpt, f->excerpt_len);
        f->excerpt[f->excerpt_len] = '\0';
    }

    if (code == CURLE_OK) {
        f->verdict = delivery_classify(false, f->http_status);
        if (f->verdict == DELIVERY_SUCCESS)
            f->error[0] = '\0';
        else
            snprintf(f->error, sizeof(f->error), "http status %d", f->http_status);
    } else {
        f->verdict = describe_failure(f, code, os_errno);
    }
    if (log_enabled(LOG_DEBUG)) {
        char quoted[ERROR_MAX];

        log_debug("webhook attempt ended", "job=%s run=%s attempt=%d http_status=%d error=\"%s\"",
                  req->job->name, req->run_id, f->attempt, f->http_status,
                  log_quote(f->error, quoted, sizeof(quoted)));
    }
    log_attempt(f, f->attempt_started_at_ms);
    attempt_over(f);
}

/*
 * Ends the attempt f waited for when the wait is over without a slot: at
 * the starting deadline the firing is missed; at the attempt's timeout the
 * attempt failed as a timeout, and may be retried like any other.
 */
static void wait_expired(struct firing *f)
{
    delivery_bulkhead_leave(f->engine->bulkhead, &f->slot);
    if (f->wait_misses) {
        firing_miss(f);
        return;
    }
    f->attempt++;
    f->verdict = DELIVERY_RETRY;
    f->http_status = 0;
    f->excerpt_len = 0;
    f->retry_after_ms = -1;
    f->finished_at_ms = cf_wall_ms();
    snprintf(f->error, sizeof(f->error),
             "timeout after %" PRId64 " ms waiting for a free connection to %s", timeout_of(f),
             target_name(f));
    log_debug("webhook attempt ended", "job=%s run=%s attempt=%d error=\"waited for a slot\"",
              f->req->job->name, f->req->run_id, f->attempt);
    log_attempt(f, f->finished_at_ms - timeout_of(f));
    attempt_over(f);
}

/*
 * The next attempt of f is due (since f->due_boot_ms): sends it when its
 * target has a free slot, else queues it there until a slot frees up or the
 * wait ends (wait_expired()). A scheduled firing that has sent nothing by
 * its starting deadline is missed instead.
 */
static void attempt_due(struct firing *f)
{
    struct delivery_engine *engine = f->engine;

    if (!f->sent && cf_boot_ms() >= f->start_by_boot_ms) {
        firing_miss(f);
        return;
    }
    if (delivery_bulkhead_enter(engine->bulkhead, f->target, &f->slot) != CF_OK) {
        firing_fail(f, "out of memory");
        return;
    }
    if (f->slot.holding) {
        attempt_start(f);
        return;
    }
    f->state = FIRING_WAITING;
    f->wake_boot_ms = delivery_wait_deadline(f->due_boot_ms, timeout_of(f), f->start_by_boot_ms,
                                             f->sent, &f->wait_misses);
    if (timer_push(engine, f) != CF_OK) {
        delivery_bulkhead_leave(engine->bulkhead, &f->slot);
        firing_fail(f, "out of memory");
    }
}

/* ------------------------------------------------------------------------ */
/* The engine thread                                                        */
/* ------------------------------------------------------------------------ */

/* Takes a firing just out of the inbound queue; its first attempt is due. */
static void firing_begin(struct firing *f)
{
    CURLU *url = curl_url();
    char *host = NULL;
    size_t target_len;

    if (url == NULL) {
        firing_fail(f, "out of memory");
        return;
    }
    if (curl_url_set(url, CURLUPART_URL, f->req->job->webhook.url, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        curl_url_cleanup(url);
        firing_fail(f, "invalid url");
        return;
    }
    curl_url_cleanup(url);
    /* An IPv6 literal comes back bracketed; the allow list wants it bare. */
    if (host[0] == '[') {
        size_t len = strlen(host);

        memmove(host, host + 1, len);
        if (len >= 2 && host[len - 2] == ']')
            host[len - 2] = '\0';
    }
    f->host = strdup(host);
    curl_free(host);
    if (f->host == NULL) {
        firing_fail(f, "out of memory");
        return;
    }
    /* The key is the URL's scheme, host and port: never longer than the URL and a port. */
    target_len = strlen(f->req->job->webhook.url) + 16;
    f->target = malloc(target_len);
    if (f->target == NULL) {
        firing_fail(f, "out of memory");
        return;
    }
    if (delivery_target_key(f->req->job->webhook.url, f->target, target_len) != CF_OK) {
        firing_fail(f, "invalid url");
        return;
    }
    attempt_due(f);
}

/* Collects the attempts curl has finished. */
static void collect_finished(struct delivery_engine *engine)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(engine->multi, &left)) != NULL) {
        CURLcode code = msg->data.result;
        char *private = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &private);
        attempt_ended((struct firing *)(void *)private, code);
    }
}

/*
 * Handles the timers that are due: attempts whose backoff has passed
 * (asking may_retry first), and waits for a slot that are over.
 */
static void fire_due_timers(struct delivery_engine *engine)
{
    int64_t now_ms = cf_boot_ms();

    while (engine->timer_count > 0 && engine->timers[0]->wake_boot_ms <= now_ms) {
        struct firing *f = timer_pop(engine);

        if (f->state == FIRING_WAITING) {
            wait_expired(f);
            continue;
        }
        if (engine->cfg.may_retry != NULL &&
            !engine->cfg.may_retry(engine->cfg.ctx, f->req->owner)) {
            f->stopped_early = true;
            firing_finish(f);
            continue;
        }
        f->due_boot_ms = f->wake_boot_ms;
        attempt_due(f);
    }
}

/*
 * Gives the slots that are free to waiting attempts, targets taking turns.
 * A wait may have outlived the lease: may_retry is asked first.
 */
static void start_waiting(struct delivery_engine *engine)
{
    for (;;) {
        struct delivery_slot *slot = delivery_bulkhead_next(engine->bulkhead);
        struct firing *f;

        if (slot == NULL)
            break;
        f = (struct firing *)(void *)((char *)slot - offsetof(struct firing, slot));
        timer_remove(engine, f);
        if (cf_boot_ms() >= f->wake_boot_ms) {
            wait_expired(f);
            continue;
        }
        if (engine->cfg.may_retry != NULL &&
            !engine->cfg.may_retry(engine->cfg.ctx, f->req->owner)) {
            delivery_bulkhead_leave(engine->bulkhead, &f->slot);
            f->stopped_early = true;
            if (f->attempt == 0) {
                f->verdict = DELIVERY_FAIL;
                f->finished_at_ms = cf_wall_ms();
                snprintf(f->error, sizeof(f->error),
                         "not sent: the lease ended while waiting for a free connection to %s",
                         target_name(f));
            }
            firing_finish(f);
            continue;
        }
        attempt_start(f);
    }
}

/*
 * At the stop: ends every firing waiting for a retry, or queued for an
 * attempt after the first, with the outcome of its last attempt. Firings
 * queued for their first attempt keep their place within the grace.
 */
static void drop_timers(struct delivery_engine *engine)
{
    struct firing *dropped = NULL;

    for (size_t i = 0; i < engine->timer_count; i++) {
        struct firing *f = engine->timers[i];

        if (f->state == FIRING_BACKOFF || f->attempt > 0) {
            f->inbound_next = dropped;
            dropped = f;
        }
    }
    while (dropped != NULL) {
        struct firing *next = dropped->inbound_next;

        timer_remove(engine, dropped);
        firing_finish(dropped);
        dropped = next;
    }
}

/* Ends the firings still queued for their first attempt once the grace is over. */
static void abort_waiting(struct delivery_engine *engine)
{
    while (engine->timer_count > 0) {
        struct firing *f = timer_pop(engine);

        delivery_bulkhead_leave(engine->bulkhead, &f->slot);
        firing_fail(f, "shutdown");
    }
}

/* Aborts every attempt still in flight once the grace period is over. */
static void abort_transfers(struct delivery_engine *engine)
{
    while (engine->transfers != NULL) {
        struct firing *f = engine->transfers;

        observe_attempt(f);
        attempt_release(f);
        firing_fail(f, "shutdown");
    }
}

/* How long curl_multi_poll() may sleep: until the next timer or the stop deadline. */
static int poll_timeout_ms(const struct delivery_engine *engine)
{
    int64_t now_ms = cf_boot_ms();
    int64_t wait_ms = IDLE_POLL_MS;

    if (engine->timer_count > 0 && engine->timers[0]->wake_boot_ms - now_ms < wait_ms)
        wait_ms = engine->timers[0]->wake_boot_ms - now_ms;
    if (engine->draining && engine->drain_deadline_boot_ms - now_ms < wait_ms)
        wait_ms = engine->drain_deadline_boot_ms - now_ms;
    return wait_ms > 0 ? (int)wait_ms : 0;
}

static void *engine_main(void *arg)
{
    struct delivery_engine *engine = arg;

    for (;;) {
        struct firing *arrived;
        bool stopping;
        int running = 0;
        CURLMcode mc;

        pthread_mutex_lock(&engine->lock);
        arrived = engine->inbound_head;
        engine->inbound_head = NULL;
        engine->inbound_tail = NULL;
        stopping = engine->stopping;
        engine->drain_deadline_boot_ms = engine->stop_deadline_boot_ms;
        pthread_mutex_unlock(&engine->lock);

        /* Firings submitted before the stop are in flight too: they get their first attempt. */
        while (arrived != NULL) {
            struct firing *next = arrived->inbound_next;

            firing_begin(arrived);
            arrived = next;
        }
        if (stopping && !engine->draining) {
            engine->draining = true;
            drop_timers(engine);
        }

        mc = curl_multi_perform(engine->multi, &running);
        if (mc != CURLM_OK)
            log_error("webhook engine perform failed", "error=\"%s\"", curl_multi_strerror(mc));
        collect_finished(engine);
        /* While draining the heap holds only waits for a first attempt. */
        fire_due_timers(engine);
        start_waiting(engine);

        if (engine->draining) {
            if (engine->transfers == NULL && engine->timer_count == 0)
                break;
            if (cf_boot_ms() >= engine->drain_deadline_boot_ms) {
                abort_transfers(engine);
                abort_waiting(engine);
                break;
            }
        }

        mc = curl_multi_poll(engine->multi, NULL, 0, poll_timeout_ms(engine), NULL);
        if (mc != CURLM_OK) {
            log_error("webhook engine poll failed", "error=\"%s\"", curl_multi_strerror(mc));
            cf_sleep_ms(POLL_ERROR_PAUSE_MS);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                      */
/* ------------------------------------------------------------------------ */

/* Frees an engine whose thread is not running (never started, or joined). */
static void engine_free(struct delivery_engine *engine)
{
    curl_multi_cleanup(engine->multi);
    delivery_bulkhead_free(engine->bulkhead);
    free(engine->timers);
    netallow_free(engine->own_allow);
    pthread_mutex_destroy(&engine->lock);
    free(engine);
    curl_global_cleanup();
}

int delivery_engine_start(const struct delivery_config *cfg, struct delivery_engine **out)
{
    struct delivery_engine *engine = NULL;
    char errbuf[128];
    int err = CF_ERR_NOMEM;

    assert(cfg != NULL && out != NULL);
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return CF_ERR_IO;
    engine = calloc(1, sizeof(*engine));
    if (engine == NULL) {
        curl_global_cleanup();
        return CF_ERR_NOMEM;
    }
    engine->cfg = *cfg;
    rng_seed(engine);
    if (pthread_mutex_init(&engine->lock, NULL) != 0) {
        free(engine);
        curl_global_cleanup();
        return CF_ERR_NOMEM;
    }
    /* From here on engine_free() undoes everything. */
    if (engine->cfg.allow == NULL) {
        err = netallow_parse(NULL, &engine->own_allow, errbuf, sizeof(errbuf));
        if (err != CF_OK)
            goto out;
        engine->cfg.allow = engine->own_allow;
    }
    err = CF_ERR_NOMEM;
    engine->multi = curl_multi_init();
    if (engine->multi == NULL)
        goto out;
    /* No connection limit in curl: the bulkhead hands it only what it can start at once. */
    curl_multi_setopt(engine->multi, CURLMOPT_MAXCONNECTS, MAX_IDLE_CONNECTIONS);
    engine->bulkhead = delivery_bulkhead_new(
        cfg->target_max_attempts > 0 ? cfg->target_max_attempts : TARGET_MAX_ATTEMPTS,
        cfg->max_attempts > 0 ? cfg->max_attempts : MAX_ATTEMPTS);
    if (engine->bulkhead == NULL)
        goto out;
    if (pthread_create(&engine->thread, NULL, engine_main, engine) != 0) {
        err = CF_ERR_IO;
        goto out;
    }
    *out = engine;
    engine = NULL;
    err = CF_OK;
out:
    if (engine != NULL)
        engine_free(engine);
    return err;
}

int delivery_submit(struct delivery_engine *engine, struct delivery_request *req)
{
    struct firing *f;

    assert(engine != NULL);
    if (req == NULL)
        return CF_ERR_INVALID;
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        delivery_request_free(req);
        return CF_ERR_NOMEM;
    }
    f->engine = engine;
    f->req = req;
    f->submitted_at_ms = cf_wall_ms();
    f->retry_after_ms = -1;
    f->state = FIRING_INBOUND;
    f->heap_index = NOT_IN_HEAP;
    /* The first attempt is due now; a scheduled slot must start by its deadline (DESIGN §3). */
    f->due_boot_ms = cf_boot_ms();
    f->start_by_boot_ms = INT64_MAX;
    if (req->trigger == RUN_TRIGGER_SCHEDULE && req->job != NULL &&
        req->job->starting_deadline_ms > 0)
        f->start_by_boot_ms =
            f->due_boot_ms + (req->scheduled_at_ms + req->job->starting_deadline_ms - cf_wall_ms());

    pthread_mutex_lock(&engine->lock);
    if (engine->stopping) {
        pthread_mutex_unlock(&engine->lock);
        free(f);
        delivery_request_free(req);
        return CF_ERR_SHUTDOWN;
    }
    if (engine->inbound_tail != NULL)
        engine->inbound_tail->inbound_next = f;
    else
        engine->inbound_head = f;
    engine->inbound_tail = f;
    engine->in_flight++;
    /* Under the lock, so that a concurrent stop cannot free the multi handle first. */
    curl_multi_wakeup(engine->multi);
    pthread_mutex_unlock(&engine->lock);
    return CF_OK;
}

int delivery_in_flight(struct delivery_engine *engine)
{
    int count;

    pthread_mutex_lock(&engine->lock);
    count = engine->in_flight;
    pthread_mutex_unlock(&engine->lock);
    return count;
}

void delivery_engine_drain(struct delivery_engine *engine, int64_t grace_ms)
{
    int64_t deadline;

    if (engine == NULL)
        return;
    deadline = cf_boot_ms() + (grace_ms > 0 ? grace_ms : 0);
    pthread_mutex_lock(&engine->lock);
    /* A second call may shorten the grace, never extend it. */
    if (!engine->stopping || deadline < engine->stop_deadline_boot_ms)
        engine->stop_deadline_boot_ms = deadline;
    engine->stopping = true;
    curl_multi_wakeup(engine->multi);
    pthread_mutex_unlock(&engine->lock);
}

void delivery_engine_stop(struct delivery_engine *engine, int64_t grace_ms)
{
    if (engine == NULL)
        return;
    delivery_engine_drain(engine, grace_ms);
    pthread_join(engine->thread, NULL);
    engine_free(engine);
}
