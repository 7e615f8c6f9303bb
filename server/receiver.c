/*
 * receiver.c - cronfence-receiver, the reference webhook target (DESIGN §5).
 *
 * This is the example to copy. A target that wants the guarantees of
 * cronfence does three things with each delivery:
 *
 *   1. Verify Cronfence-Signature v2 (HMAC over t, Cronfence-Job,
 *      Fencing-Token, Idempotency-Key and the body) and refuse a t older
 *      than 5 minutes; check that the body's "job" and the key's "<job>@"
 *      prefix name the job Cronfence-Job names. (The Standard Webhooks
 *      webhook-signature is checked too when sent.)
 *   2. In ONE transaction together with its effect: answer a repeated
 *      Idempotency-Key with 200 and do nothing; refuse a fencing token lower
 *      than the highest already accepted in its fence scope with 409;
 *      otherwise do the work and remember the token. Equal tokens are
 *      retries of the same firing and are accepted.
 *   3. Answer 2xx only once the effect is committed.
 *
 * The fence scope is Cronfence-Fence-Scope (fence_scope.h): "job" (overlap
 * forbid or queue, and a delivery without the header) compares with the
 * highest token of the job; "slot" (overlap allow, whose slots may overlap
 * and arrive out of token order) with the highest token of the idempotency
 * key. The header is not signed, so a job once seen with scope "job" keeps
 * it: a delivery naming "slot" for it is fenced per job all the same.
 *
 * Here "the work" is a row in SQLite (record_delivery) and a JSON line in
 * --log. Everything after "test knobs" exists so the scheduler's retry,
 * timeout and fencing handling can be tested against a real target.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fence_scope.h"
#include "log.h"
#include "signature.h"

#ifndef CF_VERSION
#define CF_VERSION "dev"
#endif

#define MAX_BODY_BYTES (1024 * 1024) /* larger bodies get 413, as in DESIGN §9 */
#define MAX_AGE_S 300                /* oldest (or most future) signature t accepted */
#define BUSY_TIMEOUT_MS 5000         /* wait this long for another writer of the db */
#define MAX_DELAY_MS 300000          /* cap of the delay_ms test knob */

/* Shared by all connection threads. lock serialises use of db and log. */
struct receiver {
    const char *secret;
    sqlite3 *db;
    FILE *log; /* NULL without --log */
    pthread_mutex_t lock;
    /* Jobs whose first delivery the delay_first_ms knob has seen; under lock. */
    char **delayed_jobs;
    size_t delayed_count;
};

/* One HTTP request: created on the first callback, freed in on_completed. */
struct request {
    char *body; /* not NUL-terminated */
    size_t body_len;
    size_t body_cap;
    bool too_large;
};

/* The facts of one delivery; strings are borrowed from the request. */
struct delivery {
    const char *job;
    const char *key; /* Idempotency-Key */
    const char *run_id;
    const char *scheduled_at;
    enum fence_scope scope; /* as Cronfence-Fence-Scope names it */
    int64_t token;
    int64_t attempt;
    int64_t received_at_ms; /* wall time when the whole request had arrived */
    const char *body;
    size_t body_len;
};

enum outcome { OUTCOME_ACCEPTED, OUTCOME_DUPLICATE, OUTCOME_STALE };

static atomic_bool stopping; /* set on SIGINT/SIGTERM; cuts delay_ms short */

static void usage(FILE *out)
{
    fputs("usage: cronfence-receiver --secret S [--listen HOST:PORT] [--db PATH] [--log PATH]\n"
          "\n"
          "The reference webhook target of cronfence: verifies Cronfence-Signature v2\n"
          "(and webhook-signature when sent), checks that the Idempotency-Key starts\n"
          "with \"<Cronfence-Job>@\" and that the body's job is Cronfence-Job, refuses\n"
          "fencing tokens lower than the highest accepted in their fence scope\n"
          "(409): per job for Cronfence-Fence-Scope: job (or no such header), per\n"
          "Idempotency-Key for slot, unless the job was seen with scope job; answers a\n"
          "repeated Idempotency-Key with 200 \"duplicate\", and records each accepted\n"
          "delivery in SQLite.\n"
          "\n"
          "  --listen HOST:PORT  address to serve (default 127.0.0.1:9090; port 0 picks a\n"
          "                      free one); \"listening on HOST:PORT\" is printed on stdout\n"
          "  --db PATH           SQLite database (default ./receiver.db)\n"
          "  --secret S          signing secret, required (prefer the environment variable)\n"
          "  --log PATH          append one JSON line per accepted delivery\n"
          "  --help, --version\n"
          "Each flag can also be set as CRONFENCE_RECEIVER_LISTEN, _DB, _SECRET, _LOG.\n"
          "\n"
          "Test knobs, query parameters of the webhook URL (e.g. /hook?fail=2&retry_after=1),\n"
          "applied in this order after the signature check and before the fencing step;\n"
          "when a knob answers, nothing is recorded:\n"
          "  delay_ms=N     sleep N ms (at most 300000) before answering\n"
          "  delay_first_ms=N  sleep N ms before the fencing step, only for the first\n"
          "                 delivery of each job this process sees (a late, stale one)\n"
          "  status=CODE    always answer CODE (100-599)\n"
          "  fail=N         answer 503 while Cronfence-Attempt <= N\n"
          "  retry_after=S  add \"Retry-After: S\" to those 503s\n"
          "\n"
          "Answers (application/json): 200 {\"status\":\"accepted\"}, 200 "
          "{\"status\":\"duplicate\"},\n"
          "409 {\"status\":\"stale\",\"highest\":N,\"scope\":\"job\"},\n"
          "a knob's {\"status\":\"injected\",\"knob\":K},\n"
          "errors {\"status\":\"error\",\"error\":MSG}: 400 missing or bad header or knob,\n"
          "401 bad signature, 413 body over 1 MiB, 500 database, 503 stopping.\n",
          out);
}

/* Parses a decimal number 0..max, digits only; false otherwise. */
static bool parse_uint(const char *text, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (text == NULL || text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- storage ---------------------------------------------------------- */

/*
 * jobs.highest_token is the highest token accepted for the job in any scope
 * (tokens increase per job across slots). jobs.fence_scope is 'job' once a
 * delivery with scope job was accepted for it, and then stays 'job'; 'slot'
 * while every accepted delivery named slot. A slot's highest token is the one
 * in its deliveries row: a key is accepted once.
 */
static const char schema[] =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;"
    "CREATE TABLE IF NOT EXISTS jobs (job TEXT PRIMARY KEY, highest_token INTEGER NOT NULL,"
    " fence_scope TEXT NOT NULL DEFAULT 'job');"
    "CREATE TABLE IF NOT EXISTS deliveries (idempotency_key TEXT PRIMARY KEY, job TEXT NOT NULL,"
    " token INTEGER NOT NULL, run_id TEXT, attempt INTEGER NOT NULL, scheduled_at TEXT,"
    " received_at_ms INTEGER NOT NULL, body TEXT NOT NULL);";

/*
 * Adds jobs.fence_scope to a database made before it existed. Its jobs saw
 * only deliveries without the header, that is with scope job, so they get
 * 'job' and keep it. Returns true when the column is there.
 */
static bool db_add_fence_scope(sqlite3 *db)
{
    sqlite3_stmt *probe = NULL;

    if (sqlite3_prepare_v2(db, "SELECT fence_scope FROM jobs", -1, &probe, NULL) == SQLITE_OK) {
        sqlite3_finalize(probe);
        return true;
    }
    return sqlite3_exec(db, "ALTER TABLE jobs ADD COLUMN fence_scope TEXT NOT NULL DEFAULT 'job'",
                        NULL, NULL, NULL) == SQLITE_OK;
}

/* Opens (creating if needed) the database into *db. Returns CF_OK or CF_ERR_DB, logged. */
static int db_open(const char *path, sqlite3 **db)
{
    if (sqlite3_open(path, db) != SQLITE_OK ||
        sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
        sqlite3_exec(*db, schema, NULL, NULL, NULL) != SQLITE_OK || !db_add_fence_scope(*db)) {
        log_error("cannot open database", "path=%s error=\"%s\"", path, sqlite3_errmsg(*db));
        return CF_ERR_DB;
    }
    return CF_OK;
}

/*
 * The fencing rule, in one transaction with the effect. BEGIN IMMEDIATE takes
 * the write lock before the reads, so no other writer (thread or process) can
 * slip a higher token in between the check and the insert. Sets *enforced to
 * the scope applied. Returns an outcome, setting *highest for OUTCOME_STALE,
 * or CF_ERR_DB (logged; nothing is changed).
 */
static int record_delivery(sqlite3 *db, const struct delivery *d, enum fence_scope *enforced,
                           int64_t *highest)
{
    sqlite3_stmt *lookup = NULL, *insert = NULL, *set_highest = NULL;
    const unsigned char *seen_scope;
    bool in_transaction = false;
    int rc = CF_ERR_DB;

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    in_transaction = true;

    /* One row: was the key seen, the job's highest token and scope (NULLs for a new job). */
    if (sqlite3_prepare_v2(db,
                           "SELECT EXISTS (SELECT 1 FROM deliveries WHERE idempotency_key = ?1),"
                           " (SELECT highest_token FROM jobs WHERE job = ?2),"
                           " (SELECT fence_scope FROM jobs WHERE job = ?2)",
                           -1, &lookup, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(lookup, 1, d->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(lookup, 2, d->job, -1, SQLITE_STATIC);
    if (sqlite3_step(lookup) != SQLITE_ROW)
        goto out;
    seen_scope = sqlite3_column_text(lookup, 2);
    *enforced = fence_scope_enforced(d->scope, seen_scope != NULL &&
                                                   strcmp((const char *)seen_scope, "job") == 0);
    /*
     * A seen key is a repeat, whatever the scope. That is also the whole of
     * the per-slot fence here: a key is accepted once, so an unseen key has
     * no highest token yet, whatever other slots of the job have accepted.
     */
    if (sqlite3_column_int(lookup, 0) != 0) {
        rc = OUTCOME_DUPLICATE;
        goto out;
    }
    if (*enforced == FENCE_SCOPE_JOB && sqlite3_column_type(lookup, 1) != SQLITE_NULL &&
        d->token < sqlite3_column_int64(lookup, 1)) {
        *highest = sqlite3_column_int64(lookup, 1);
        rc = OUTCOME_STALE;
        goto out;
    }

    /* The effect. A real target does its work here, inside the same transaction. */
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO deliveries (idempotency_key, job, token, run_id, attempt,"
                           " scheduled_at, received_at_ms, body) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                           -1, &insert, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(insert, 1, d->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 2, d->job, -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 3, d->token);
    sqlite3_bind_text(insert, 4, d->run_id, -1, SQLITE_STATIC); /* NULL binds NULL */
    sqlite3_bind_int64(insert, 5, d->attempt);
    sqlite3_bind_text(insert, 6, d->scheduled_at, -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 7, d->received_at_ms);
    sqlite3_bind_text(insert, 8, d->body != NULL ? d->body : "", (int)d->body_len, SQLITE_STATIC);
    if (sqlite3_step(insert) != SQLITE_DONE)
        goto out;

    /* max(): a slot-scoped token may be below the job's highest. The scope only tightens. */
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO jobs (job, highest_token, fence_scope) VALUES (?1, ?2, ?3)"
                           " ON CONFLICT (job) DO UPDATE SET"
                           " highest_token = max(highest_token, excluded.highest_token),"
                           " fence_scope = excluded.fence_scope",
                           -1, &set_highest, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(set_highest, 1, d->job, -1, SQLITE_STATIC);
    sqlite3_bind_int64(set_highest, 2, d->token);
    sqlite3_bind_text(set_highest, 3, fence_scope_name(*enforced), -1, SQLITE_STATIC);
    if (sqlite3_step(set_highest) != SQLITE_DONE)
        goto out;

    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    in_transaction = false;
    rc = OUTCOME_ACCEPTED;
out:
    if (rc == CF_ERR_DB)
        log_error("database error", "job=%s error=\"%s\"", d->job, sqlite3_errmsg(db));
    sqlite3_finalize(lookup);
    sqlite3_finalize(insert);
    sqlite3_finalize(set_highest);
    if (in_transaction)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/*
 * Appends the --log line of an accepted delivery; instance and trigger come
 * from the body, fence_scope is the one the delivery named.
 */
static void append_log(FILE *log, const struct delivery *d)
{
    char received_at[CF_TIME_LEN];
    json_t *body = json_loadb(d->body != NULL ? d->body : "", d->body_len, 0, NULL);
    json_t *line;

    cf_format_time(d->received_at_ms, received_at);
    /* "s?" and "O?" write null for a missing header or field. */
    line =
        json_pack("{s:s, s:s, s:s?, s:I, s:s, s:s, s:I, s:s?, s:O?, s:O?}", "received_at",
                  received_at, "job", d->job, "run_id", d->run_id, "token", (json_int_t)d->token,
                  "idempotency_key", d->key, "fence_scope", fence_scope_name(d->scope), "attempt",
                  (json_int_t)d->attempt, "scheduled_at", d->scheduled_at, "instance",
                  json_object_get(body, "instance"), "trigger", json_object_get(body, "trigger"));
    if (line == NULL || json_dumpf(line, log, JSON_COMPACT) != 0 || fputc('\n', log) == EOF ||
        fflush(log) != 0)
        log_error("cannot write log line", "job=%s key=%s", d->job, d->key);
    json_decref(line);
    json_decref(body);
}

/* ---- HTTP ------------------------------------------------------------- */

/* Queues a JSON answer; retry_after_s < 0 means no Retry-After header. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status, const char *json,
                               int64_t retry_after_s)
{
    struct MHD_Response *response;
    enum MHD_Result ret;
    char seconds[24];

    response = MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after_s >= 0) {
        snprintf(seconds, sizeof(seconds), "%lld", (long long)retry_after_s);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    ret = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return ret;
}

/* Logs and answers a refused request. reason is a constant without quotes. */
static enum MHD_Result refuse(struct MHD_Connection *conn, unsigned int status, const char *reason)
{
    char json[256];

    log_warn("delivery refused", "http_status=%u reason=\"%s\"", status, reason);
    snprintf(json, sizeof(json), "{\"status\":\"error\",\"error\":\"%s\"}", reason);
    return respond(conn, status, json, -1);
}

/* Sleeps ms of CLOCK_BOOTTIME in short steps; false when the receiver is stopping. */
static bool sleep_unless_stopping(int64_t ms)
{
    int64_t deadline = cf_boot_ms() + ms;

    for (;;) {
        int64_t left = deadline - cf_boot_ms();

        if (atomic_load(&stopping))
            return false;
        if (left <= 0)
            return true;
        cf_sleep_ms(left < 50 ? left : 50);
    }
}

static const char *header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* Reads knob name into *value (unchanged when absent); false when present but invalid. */
static bool knob(struct MHD_Connection *conn, const char *name, int64_t max, int64_t *value)
{
    const char *text = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);

    return text == NULL || parse_uint(text, max, value);
}

/* Whether this is the first delivery of job the delay_first_ms knob sees (remembers it). */
static bool first_of_job(struct receiver *rc, const char *job)
{
    char **grown, *copy;
    bool first = true;

    pthread_mutex_lock(&rc->lock);
    for (size_t i = 0; i < rc->delayed_count && first; i++)
        first = strcmp(rc->delayed_jobs[i], job) != 0;
    if (first) {
        grown = realloc(rc->delayed_jobs, (rc->delayed_count + 1) * sizeof(*grown));
        copy = strdup(job);
        if (grown != NULL)
            rc->delayed_jobs = grown;
        if (grown != NULL && copy != NULL)
            rc->delayed_jobs[rc->delayed_count++] = copy;
        else
            free(copy);
    }
    pthread_mutex_unlock(&rc->lock);
    return first;
}

/*
 * Whether the body's "job" is the delivery's job. A body that is not a JSON
 * object with a "job" member (a job's raw body) names no job and passes: the
 * signature binds its job all the same.
 */
static bool body_job_matches(const struct delivery *d)
{
    json_t *body = json_loadb(d->body != NULL ? d->body : "", d->body_len, 0, NULL);
    json_t *job = json_object_get(body, "job");
    bool matches =
        job == NULL || (json_is_string(job) && strcmp(json_string_value(job), d->job) == 0);

    json_decref(body);
    return matches;
}

/* Handles a complete request: verify, test knobs, fencing, answer. */
static enum MHD_Result handle_delivery(struct receiver *rc, struct MHD_Connection *conn,
                                       struct request *req)
{
    struct delivery d = {.attempt = 1, .received_at_ms = cf_wall_ms()};
    int64_t delay_ms = 0, delay_first_ms = 0, forced_status = 0, fail = 0, retry_after_s = -1,
            highest = 0;
    const char *signature = header(conn, "Cronfence-Signature");
    const char *token_text = header(conn, "Fencing-Token");
    const char *attempt_text = header(conn, "Cronfence-Attempt");
    const char *scope_text = header(conn, FENCE_SCOPE_HEADER);
    const char *webhook_signature = header(conn, "webhook-signature");
    const char *webhook_id = header(conn, "webhook-id");
    enum fence_scope enforced = FENCE_SCOPE_JOB;
    const char *at;
    char json[128];
    int outcome;

    if (req->too_large)
        return refuse(conn, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
    if (!knob(conn, "delay_ms", MAX_DELAY_MS, &delay_ms) ||
        !knob(conn, "delay_first_ms", MAX_DELAY_MS, &delay_first_ms) ||
        !knob(conn, "status", 599, &forced_status) || !knob(conn, "fail", INT32_MAX, &fail) ||
        !knob(conn, "retry_after", INT32_MAX, &retry_after_s) ||
        (forced_status != 0 && forced_status < 100))
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "bad test knob");

    d.job = header(conn, "Cronfence-Job");
    d.key = header(conn, "Idempotency-Key");
    d.run_id = header(conn, "Cronfence-Run");
    d.scheduled_at = header(conn, "Cronfence-Scheduled-At");
    d.body = req->body;
    d.body_len = req->body_len;
    if (signature == NULL || token_text == NULL || d.key == NULL || d.job == NULL)
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "missing cronfence header");
    if (!parse_uint(token_text, INT64_MAX, &d.token) ||
        (attempt_text != NULL && !parse_uint(attempt_text, INT32_MAX, &d.attempt)))
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "bad fencing token or attempt");
    if (!fence_scope_parse(scope_text, &d.scope))
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "bad cronfence-fence-scope");

    if (!signature_verify(rc->secret, signature, cf_wall_ms() / 1000, MAX_AGE_S, d.job, token_text,
                          d.key, d.body, d.body_len))
        return refuse(conn, MHD_HTTP_UNAUTHORIZED, "bad signature");
    if (webhook_signature != NULL &&
        (webhook_id == NULL || strcmp(webhook_id, d.key) != 0 ||
         !signature_verify_webhook(rc->secret, webhook_signature, cf_wall_ms() / 1000, MAX_AGE_S,
                                   webhook_id, header(conn, "webhook-timestamp"), d.body,
                                   d.body_len)))
        return refuse(conn, MHD_HTTP_UNAUTHORIZED, "bad webhook-signature");
    /*
     * v2 signs the job, so Cronfence-Job is authentic. Every key, scheduled
     * ("<job>@<instant>") or manual ("<job>@manual-<run id>"), starts with
     * "<job>@", and the body names the job too: a delivery whose parts name
     * different jobs is refused rather than allowed to raise another job's
     * highest token or take another job's key.
     */
    at = strchr(d.key, '@');
    if (at == NULL || strlen(d.job) != (size_t)(at - d.key) ||
        strncmp(d.job, d.key, strlen(d.job)) != 0)
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "cronfence-job does not match idempotency-key");
    if (!body_job_matches(&d))
        return refuse(conn, MHD_HTTP_BAD_REQUEST, "cronfence-job does not match the body's job");

    /* Test knobs. */
    /* A delay cut short by SIGTERM answers 503; MHD_stop_daemon may close the socket first. */
    if (delay_ms > 0 && !sleep_unless_stopping(delay_ms))
        return refuse(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down");
    if (delay_first_ms > 0 && first_of_job(rc, d.job) && !sleep_unless_stopping(delay_first_ms))
        return refuse(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down");
    if (forced_status != 0 || d.attempt <= fail) {
        unsigned int status = forced_status != 0 ? (unsigned int)forced_status : 503;
        const char *which = forced_status != 0 ? "status" : "fail";

        log_info("delivery answered by test knob",
                 "job=%s token=%lld attempt=%lld http_status=%u knob=%s", d.job, (long long)d.token,
                 (long long)d.attempt, status, which);
        snprintf(json, sizeof(json), "{\"status\":\"injected\",\"knob\":\"%s\"}", which);
        return respond(conn, status, json, status == 503 ? retry_after_s : -1);
    }

    /* The fencing step; the log line is written under the same lock, so its order is the db's. */
    pthread_mutex_lock(&rc->lock);
    outcome = record_delivery(rc->db, &d, &enforced, &highest);
    if (outcome == OUTCOME_ACCEPTED && rc->log != NULL)
        append_log(rc->log, &d);
    pthread_mutex_unlock(&rc->lock);

    switch (outcome) {
    case OUTCOME_ACCEPTED:
        log_info("delivery accepted", "job=%s token=%lld run=%s attempt=%lld key=%s scope=%s",
                 d.job, (long long)d.token, d.run_id != NULL ? d.run_id : "-", (long long)d.attempt,
                 d.key, fence_scope_name(enforced));
        return respond(conn, MHD_HTTP_OK, "{\"status\":\"accepted\"}", -1);
    case OUTCOME_DUPLICATE:
        log_info("delivery duplicate", "job=%s token=%lld key=%s", d.job, (long long)d.token,
                 d.key);
        return respond(conn, MHD_HTTP_OK, "{\"status\":\"duplicate\"}", -1);
    case OUTCOME_STALE:
        log_warn("delivery stale", "job=%s token=%lld highest=%lld key=%s named_scope=%s", d.job,
                 (long long)d.token, (long long)highest, d.key, fence_scope_name(d.scope));
        snprintf(json, sizeof(json), "{\"status\":\"stale\",\"highest\":%lld,\"scope\":\"%s\"}",
                 (long long)highest, fence_scope_name(enforced));
        return respond(conn, MHD_HTTP_CONFLICT, json, -1);
    default:
        return refuse(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "database error");
    }
}

/*
 * Keeps up to MAX_BODY_BYTES of the body; past that, marks the request too
 * large and drops the rest. Returns CF_OK or CF_ERR_NOMEM.
 */
static int append_body(struct request *req, const char *data, size_t len)
{
    if (req->too_large || len > MAX_BODY_BYTES - req->body_len) {
        req->too_large = true;
        return CF_OK;
    }
    if (req->body_len + len > req->body_cap) {
        size_t cap = 2 * (req->body_len + len); /* doubling: few copies for many pieces */
        char *grown = realloc(req->body, cap);

        if (grown == NULL)
            return CF_ERR_NOMEM;
        req->body = grown;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    return CF_OK;
}

/*
 * MHD calls this first with the headers (we allocate the request), then with
 * each piece of the body, then once more with *upload_data_size == 0 (we
 * answer). Any path and any method are accepted.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct request *req = *req_cls;
    int64_t content_length;

    if (req == NULL) {
        const char *length_text = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);

        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        *req_cls = req;
        /* Refuse a declared oversize body at once; MHD then skips reading it. */
        if (length_text != NULL && (!parse_uint(length_text, INT64_MAX, &content_length) ||
                                    content_length > MAX_BODY_BYTES))
            return refuse(conn, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (append_body(req, upload_data, *upload_data_size) != CF_OK)
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    return handle_delivery(cls, conn, req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode why)
{
    struct request *req = *req_cls;

    if (req != NULL)
        free(req->body);
    free(req);
    *req_cls = NULL;
}

/*
 * Starts the HTTP daemon on listen ("HOST:PORT", "[V6]:PORT"). Writes the
 * address actually bound, with the port chosen for port 0, into bound.
 * Returns the daemon, or NULL after logging why.
 */
static struct MHD_Daemon *start_daemon(const char *listen, struct receiver *rc, char *bound,
                                       size_t bound_len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *addr = NULL;
    struct MHD_Daemon *daemon = NULL;
    const char *colon = strrchr(listen, ':');
    char host[256], numeric[NI_MAXHOST];
    int64_t port;
    unsigned int flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    if (colon == NULL || !parse_uint(colon + 1, 65535, &port) ||
        (size_t)(colon - listen) >= sizeof(host)) {
        log_error("bad listen address", "listen=%s", listen);
        goto out;
    }
    /* Strip the brackets of an IPv6 literal. */
    if (listen[0] == '[' && colon > listen + 1 && colon[-1] == ']')
        snprintf(host, sizeof(host), "%.*s", (int)(colon - listen - 2), listen + 1);
    else
        snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    if (getaddrinfo(host, colon + 1, &hints, &addr) != 0) {
        log_error("bad listen address", "listen=%s", listen);
        goto out;
    }
    if (addr->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, rc, MHD_OPTION_SOCK_ADDR,
                              addr->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                              MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (daemon == NULL) {
        log_error("cannot listen", "listen=%s", listen);
        goto out;
    }
    getnameinfo(addr->ai_addr, addr->ai_addrlen, numeric, sizeof(numeric), NULL, 0, NI_NUMERICHOST);
    snprintf(bound, bound_len, addr->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", numeric,
             (unsigned int)MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT)->port);
out:
    if (addr != NULL)
        freeaddrinfo(addr);
    return daemon;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *value = getenv(name);

    return value != NULL && value[0] != '\0' ? value : fallback;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"db", required_argument, NULL, 'd'},
        {"secret", required_argument, NULL, 's'},
        {"log", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct receiver rc = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct MHD_Daemon *daemon = NULL;
    const char *listen = env_or("CRONFENCE_RECEIVER_LISTEN", "127.0.0.1:9090");
    const char *db_path = env_or("CRONFENCE_RECEIVER_DB", "./receiver.db");
    const char *log_path = env_or("CRONFENCE_RECEIVER_LOG", NULL);
    char bound[NI_MAXHOST + 16];
    sigset_t signals;
    int opt, sig, status = EXIT_FAILURE;

    rc.secret = env_or("CRONFENCE_RECEIVER_SECRET", NULL);
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen = optarg;
            break;
        case 'd':
            db_path = optarg;
            break;
        case 's':
            rc.secret = optarg;
            break;
        case 'o':
            log_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("cronfence-receiver %s\n", CF_VERSION);
            return EXIT_SUCCESS;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || rc.secret == NULL || rc.secret[0] == '\0') {
        fprintf(stderr, "cronfence-receiver: %s\n",
                optind < argc ? "unexpected argument" : "missing --secret");
        usage(stderr);
        return 2;
    }
    log_setup(LOG_INFO, false);

    if (db_open(db_path, &rc.db) != CF_OK)
        goto out;
    if (log_path != NULL) {
        rc.log = fopen(log_path, "a");
        if (rc.log == NULL) {
            log_error("cannot open log", "path=%s error=\"%s\"", log_path, strerror(errno));
            goto out;
        }
    }

    /* Block the stop signals before MHD starts its threads, so only sigwait() sees them. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    daemon = start_daemon(listen, &rc, bound, sizeof(bound));
    if (daemon == NULL)
        goto out;
    printf("listening on %s\n", bound);
    fflush(stdout);
    log_info("receiver started", "listen=%s db=%s cronfence_version=%s", bound, db_path,
             CF_VERSION);

    sigwait(&signals, &sig);
    atomic_store(&stopping, true);
    log_info("receiver stopping", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = EXIT_SUCCESS;
out:
    if (daemon != NULL)
        MHD_stop_daemon(daemon); /* waits for the connection threads */
    if (rc.log != NULL)
        fclose(rc.log);
    sqlite3_close(rc.db);
    for (size_t i = 0; i < rc.delayed_count; i++)
        free(rc.delayed_jobs[i]);
    free(rc.delayed_jobs);
    return status;
}
