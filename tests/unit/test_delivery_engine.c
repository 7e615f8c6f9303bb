/*
 * test_delivery_engine.c - the delivery engine against a real HTTP server.
 *
 * Each test starts a libmicrohttpd daemon on 127.0.0.1, port 0, that records
 * every request (method, path, headers, body) and answers from a script,
 * then drives the engine at it and checks what was sent and what done
 * reported. Backoffs are 10..50 ms so that retries take milliseconds. Waits
 * are bounded generously (WAIT_MS) only so that a bug cannot hang the suite;
 * no test asserts how fast anything happens, except where a fast answer is
 * the behaviour (a refused address, a stop that must not wait for a backoff).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "delivery.h"
#include "netallow.h"
#include "signature.h"

#define MAX_REQUESTS 256
#define MAX_HEADERS 64
#define MAX_OUTCOMES 256
#define MAX_SCRIPT 8
/* Upper bound on any wait, against hangs; far above what any test needs. */
#define WAIT_MS 20000
#define JOB_SECRET "job-secret"
#define DEFAULT_SECRET "default-secret"
#define INSTANCE "instance-a"
#define TOKEN INT64_C(8589934593)
#define TOKEN_TEXT "8589934593"
#define SLOT_MS INT64_C(1795248000000) /* 2026-11-21T08:00:00.000Z */
#define SLOT_TEXT "2026-11-21T08:00:00.000Z"
#define KEY "nightly-report@" SLOT_TEXT
#define RUN "nightly-report@1795248000000"

/* ------------------------------------------------------------------------ */
/* The recording webhook server                                             */
/* ------------------------------------------------------------------------ */

struct recorded_header {
    char *name;
    char *value;
};

struct recorded {
    char method[16];
    char path[128];
    struct recorded_header headers[MAX_HEADERS];
    int header_count;
    char *body; /* NUL-terminated copy of body_len bytes */
    size_t body_len;
    int64_t arrived_boot_ms;
};

/* What the server answers to request number n; the last entry repeats. */
struct reply {
    int status;
    int delay_ms;            /* wait before answering; cut short when the server closes */
    bool hold_for_all;       /* answer only once server.hold_count requests have arrived */
    const char *retry_after; /* Retry-After value, or NULL */
    const char *location;    /* Location value, or NULL */
    const char *body;        /* NULL: "ok" */
    size_t big_body_bytes;   /* when nonzero, a body of that many 'x' instead */
};

/* Body bytes of one connection's request, collected across upload callbacks. */
struct upload {
    char *data;
    size_t len;
};

static struct {
    struct MHD_Daemon *daemon;
    uint16_t port;
    char url[64]; /* http://127.0.0.1:<port>/hook */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on every request and on closing */
    bool closing;
    struct recorded requests[MAX_REQUESTS];
    int request_count;
    struct reply script[MAX_SCRIPT];
    int script_len;
    int hold_count;
    int active, max_active; /* requests being answered at once */
} server;

/* Deadline for pthread_cond_timedwait on a CLOCK_MONOTONIC condition. */
static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

static bool past(const struct timespec *deadline)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void init_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct recorded *rec = cls;

    if (rec->header_count < MAX_HEADERS) {
        rec->headers[rec->header_count].name = strdup(key);
        rec->headers[rec->header_count].value = strdup(value != NULL ? value : "");
        rec->header_count++;
    }
    return MHD_YES;
}

/* Waits, with server.lock held, until the reply's condition is met or the server closes. */
static void hold_reply(const struct reply *reply)
{
    struct timespec deadline = deadline_in(reply->hold_for_all ? WAIT_MS : reply->delay_ms);

    while (!server.closing && !past(&deadline)) {
        if (reply->hold_for_all && server.request_count >= server.hold_count)
            break;
        pthread_cond_timedwait(&server.cond, &server.lock, &deadline);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct upload *up = *con_cls;
    struct MHD_Response *response;
    struct reply reply;
    enum MHD_Result ret;
    int n;

    if (up == NULL) {
        up = calloc(1, sizeof(*up));
        if (up == NULL)
            return MHD_NO;
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        char *grown = realloc(up->data, up->len + *upload_data_size + 1);

        if (grown == NULL)
            return MHD_NO;
        memcpy(grown + up->len, upload_data, *upload_data_size);
        up->data = grown;
        up->len += *upload_data_size;
        up->data[up->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }

    pthread_mutex_lock(&server.lock);
    n = server.request_count;
    if (n < MAX_REQUESTS) {
        struct recorded *rec = &server.requests[n];

        snprintf(rec->method, sizeof(rec->method), "%s", method);
        snprintf(rec->path, sizeof(rec->path), "%s", url);
        MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, rec);
        rec->body = up->data != NULL ? up->data : strdup("");
        rec->body_len = up->len;
        up->data = NULL;
        up->len = 0;
        rec->arrived_boot_ms = cf_boot_ms();
        server.request_count++;
    }
    reply = server.script[n < server.script_len ? n : server.script_len - 1];
    server.active++;
    if (server.active > server.max_active)
        server.max_active = server.active;
    pthread_cond_broadcast(&server.cond);
    hold_reply(&reply);
    server.active--;
    pthread_mutex_unlock(&server.lock);

    if (reply.big_body_bytes > 0) {
        char *big = malloc(reply.big_body_bytes);

        if (big == NULL)
            return MHD_NO;
        memset(big, 'x', reply.big_body_bytes);
        response =
            MHD_create_response_from_buffer(reply.big_body_bytes, big, MHD_RESPMEM_MUST_FREE);
    } else {
        const char *body = reply.body != NULL ? reply.body : "ok";

        response =
            MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    }
    if (response == NULL)
        return MHD_NO;
    if (reply.retry_after != NULL)
        MHD_add_response_header(response, "Retry-After", reply.retry_after);
    if (reply.location != NULL)
        MHD_add_response_header(response, "Location", reply.location);
    ret = MHD_queue_response(conn, (unsigned int)reply.status, response);
    MHD_destroy_response(response);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct upload *up = *con_cls;

    if (up != NULL) {
        free(up->data);
        free(up);
        *con_cls = NULL;
    }
}

/* Sets what the server answers, request by request (the last entry repeats). */
static void script(int count, const struct reply *replies)
{
    cr_assert(count >= 1 && count <= MAX_SCRIPT);
    pthread_mutex_lock(&server.lock);
    memcpy(server.script, replies, (size_t)count * sizeof(*replies));
    server.script_len = count;
    pthread_mutex_unlock(&server.lock);
}

/* Waits until the server has seen n requests; false after WAIT_MS. */
static bool wait_requests(int n)
{
    struct timespec deadline = deadline_in(WAIT_MS);
    bool reached;

    pthread_mutex_lock(&server.lock);
    while (server.request_count < n && !past(&deadline))
        pthread_cond_timedwait(&server.cond, &server.lock, &deadline);
    reached = server.request_count >= n;
    pthread_mutex_unlock(&server.lock);
    return reached;
}

static int request_count(void)
{
    int n;

    pthread_mutex_lock(&server.lock);
    n = server.request_count;
    pthread_mutex_unlock(&server.lock);
    return n;
}

/* The value of header name in request rec (case-insensitive), or NULL. Fails if repeated. */
static const char *header_of(const struct recorded *rec, const char *name)
{
    const char *found = NULL;
    int seen = 0;

    for (int i = 0; i < rec->header_count; i++) {
        if (strcasecmp(rec->headers[i].name, name) == 0) {
            found = rec->headers[i].value;
            seen++;
        }
    }
    cr_assert_leq(seen, 1, "header %s sent %d times", name, seen);
    return found;
}

static void expect_header(const struct recorded *rec, const char *name, const char *want)
{
    const char *got = header_of(rec, name);

    cr_expect_not_null(got, "header %s missing", name);
    if (got != NULL)
        cr_expect_str_eq(got, want, "header %s", name);
}

static json_t *body_json(const struct recorded *rec)
{
    json_error_t error;
    json_t *doc = json_loadb(rec->body, rec->body_len, 0, &error);

    cr_assert_not_null(doc, "body is not JSON: %s", error.text);
    return doc;
}

/*
 * Verifies the request's Cronfence-Signature (v2) and its Standard Webhooks
 * webhook-signature against its own headers and body.
 */
static bool signed_with(const struct recorded *rec, const char *secret)
{
    const char *header = header_of(rec, "Cronfence-Signature");
    const char *webhook_signature = header_of(rec, "webhook-signature");
    const char *webhook_id = header_of(rec, "webhook-id");
    const char *key = header_of(rec, "Idempotency-Key");
    int64_t now_s = cf_wall_ms() / 1000;

    if (header == NULL || webhook_signature == NULL || webhook_id == NULL || key == NULL ||
        strcmp(webhook_id, key) != 0)
        return false;
    return signature_verify(secret, header, now_s, 300, header_of(rec, "Cronfence-Job"),
                            header_of(rec, "Fencing-Token"), key, rec->body, rec->body_len) &&
           signature_verify_webhook(secret, webhook_signature, now_s, 300, webhook_id,
                                    header_of(rec, "webhook-timestamp"), rec->body, rec->body_len);
}

static void server_start(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    const union MHD_DaemonInfo *info;

    pthread_mutex_init(&server.lock, NULL);
    init_cond(&server.cond);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.script[0] = (struct reply){.status = 200};
    server.script_len = 1;
    server.daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    cr_assert_not_null(server.daemon, "cannot start the test server");
    info = MHD_get_daemon_info(server.daemon, MHD_DAEMON_INFO_BIND_PORT);
    cr_assert_not_null(info);
    server.port = info->port;
    cr_assert_gt(server.port, 0);
    snprintf(server.url, sizeof(server.url), "http://127.0.0.1:%u/hook", server.port);
}

static void server_stop(void)
{
    pthread_mutex_lock(&server.lock);
    server.closing = true;
    pthread_cond_broadcast(&server.cond);
    pthread_mutex_unlock(&server.lock);
    MHD_stop_daemon(server.daemon);
    for (int i = 0; i < server.request_count; i++) {
        for (int h = 0; h < server.requests[i].header_count; h++) {
            free(server.requests[i].headers[h].name);
            free(server.requests[i].headers[h].value);
        }
        free(server.requests[i].body);
    }
}

/* ------------------------------------------------------------------------ */
/* The engine side: jobs, requests, done and may_retry                      */
/* ------------------------------------------------------------------------ */

struct outcome {
    char run_id[RUN_ID_MAX];
    void *owner;
    enum run_status status;
    int attempts;
    int http_status;
    char *error;
    char *reason;
    char *excerpt;
    bool stopped_early;
    int64_t started_at_ms, finished_at_ms;
    int late_submit_result; /* what delivery_submit returned from inside done, when tried */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct outcome outcomes[MAX_OUTCOMES];
    int count;
    int may_retry_calls;
    int may_retry_yes; /* answer yes this many times, then no */
    void *may_retry_owner;
    struct delivery_request *submit_in_done; /* submitted from inside done, when set */
    int bad_calls; /* done calls with the wrong ctx, or past MAX_OUTCOMES */
} sink;

static struct delivery_engine *engine;
static int owner_marker; /* its address is the requests' owner */

/*
 * Records an outcome. Runs on the engine thread, where a Criterion assertion
 * cannot abort the test, so problems are recorded for the test to check.
 */
static void on_done(void *ctx, struct delivery_request *req, const struct delivery_result *result)
{
    struct outcome *out;

    pthread_mutex_lock(&sink.lock);
    if (ctx != &sink)
        sink.bad_calls++;
    if (sink.count >= MAX_OUTCOMES) {
        sink.bad_calls++;
        pthread_mutex_unlock(&sink.lock);
        return;
    }
    out = &sink.outcomes[sink.count];
    snprintf(out->run_id, sizeof(out->run_id), "%s", req->run_id);
    out->owner = req->owner;
    out->status = result->status;
    out->attempts = result->attempts;
    out->http_status = result->http_status;
    out->error = result->error != NULL ? strdup(result->error) : NULL;
    out->reason = result->reason != NULL ? strdup(result->reason) : NULL;
    out->excerpt = result->response_excerpt != NULL ? strdup(result->response_excerpt) : NULL;
    out->stopped_early = result->stopped_early;
    out->started_at_ms = result->started_at_ms;
    out->finished_at_ms = result->finished_at_ms;
    out->late_submit_result = CF_OK;
    pthread_mutex_unlock(&sink.lock);

    if (sink.submit_in_done != NULL) {
        out->late_submit_result = delivery_submit(engine, sink.submit_in_done);
        sink.submit_in_done = NULL; /* stolen, also on error */
    }

    pthread_mutex_lock(&sink.lock);
    sink.count++;
    pthread_cond_broadcast(&sink.cond);
    pthread_mutex_unlock(&sink.lock);
}

static bool on_may_retry(void *ctx, void *owner)
{
    bool yes;

    pthread_mutex_lock(&sink.lock);
    sink.may_retry_calls++;
    sink.may_retry_owner = owner;
    yes = sink.may_retry_calls <= sink.may_retry_yes;
    pthread_mutex_unlock(&sink.lock);
    return yes;
}

/* Waits until done was called n times; false after WAIT_MS. */
static bool wait_outcomes(int n)
{
    struct timespec deadline = deadline_in(WAIT_MS);
    bool reached;

    pthread_mutex_lock(&sink.lock);
    while (sink.count < n && !past(&deadline))
        pthread_cond_timedwait(&sink.cond, &sink.lock, &deadline);
    reached = sink.count >= n;
    pthread_mutex_unlock(&sink.lock);
    return reached;
}

static int outcome_count(void)
{
    int n;

    pthread_mutex_lock(&sink.lock);
    n = sink.count;
    pthread_mutex_unlock(&sink.lock);
    return n;
}

/* Starts the engine with at most target_max attempts per target (0: the default). */
static void start_engine_limited(bool with_may_retry, const struct netallow *allow, int target_max)
{
    struct delivery_config cfg = {
        .instance_id = INSTANCE,
        .default_secret = DEFAULT_SECRET,
        .allow = allow,
        .may_retry = with_may_retry ? on_may_retry : NULL,
        .done = on_done,
        .ctx = &sink,
        .target_max_attempts = target_max,
    };

    cr_assert_eq(delivery_engine_start(&cfg, &engine), CF_OK);
    cr_assert_not_null(engine);
}

static void start_engine(bool with_may_retry, const struct netallow *allow)
{
    start_engine_limited(with_may_retry, allow, 0);
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);

    cr_assert_not_null(copy);
    return copy;
}

/* A job as job.c would build it: POST to url, body {"report":"daily"}, 3 quick attempts. */
static struct job *new_job(const char *url)
{
    struct job *job = calloc(1, sizeof(*job));

    cr_assert_not_null(job);
    job->name = xstrdup("nightly-report");
    job->schedule = xstrdup("0 8 * * *");
    job->timezone = xstrdup("UTC");
    job->webhook.url = xstrdup(url);
    job->webhook.method = xstrdup("POST");
    job->webhook.body = json_pack("{s:s}", "report", "daily");
    cr_assert_not_null(job->webhook.body);
    job->webhook.timeout_ms = 5000;
    job->retry = (struct job_retry){.attempts = 3, .backoff_ms = 10, .max_backoff_ms = 50};
    /* The fixed slot is in the past: a deadline of a century keeps it startable. */
    job->starting_deadline_ms = INT64_C(100) * 366 * 24 * 3600 * 1000;
    job->lease_ms = 30000;
    return job;
}

static void job_set_method(struct job *job, const char *method)
{
    free(job->webhook.method);
    job->webhook.method = xstrdup(method);
}

static void job_add_header(struct job *job, const char *name, const char *value)
{
    struct job_header *grown =
        realloc(job->webhook.headers, (job->webhook.header_count + 1) * sizeof(*grown));

    cr_assert_not_null(grown);
    job->webhook.headers = grown;
    grown[job->webhook.header_count].name = xstrdup(name);
    grown[job->webhook.header_count].value = xstrdup(value);
    job->webhook.header_count++;
}

/* A scheduled firing of job (stolen) for the 08:00 slot, with run id run_id. */
static struct delivery_request *new_request(struct job *job, const char *run_id)
{
    struct delivery_request *req = calloc(1, sizeof(*req));

    cr_assert_not_null(req);
    req->job = job;
    snprintf(req->run_id, sizeof(req->run_id), "%s", run_id);
    snprintf(req->idempotency_key, sizeof(req->idempotency_key), "%s", KEY);
    req->fencing_token = TOKEN;
    req->scheduled_at_ms = SLOT_MS;
    req->trigger = RUN_TRIGGER_SCHEDULE;
    req->owner = &owner_marker;
    return req;
}

static void submit(struct job *job)
{
    cr_assert_eq(delivery_submit(engine, new_request(job, RUN)), CF_OK);
}

/* Submits one firing of job and waits for its outcome. */
static const struct outcome *deliver(struct job *job)
{
    int before = outcome_count();

    submit(job);
    cr_assert(wait_outcomes(before + 1), "done was not called");
    return &sink.outcomes[before];
}

/* The listening socket of black_hole_url(), closed at teardown; -1 when none. */
static int black_hole_fd = -1;

/*
 * Writes the URL of a black hole into url: a port on 127.0.0.1 that listens
 * and never accepts, so that connections complete (up to the backlog) and
 * requests go unanswered.
 */
static void black_hole_url(char *url, size_t len)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t addr_len = sizeof(addr);

    black_hole_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(black_hole_fd, 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(black_hole_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(listen(black_hole_fd, 64), 0);
    cr_assert_eq(getsockname(black_hole_fd, (struct sockaddr *)&addr, &addr_len), 0);
    snprintf(url, len, "http://127.0.0.1:%u/hook", ntohs(addr.sin_port));
}

/* A port on 127.0.0.1 that nothing listens on: bound, read, closed. */
static uint16_t closed_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static void setup(void)
{
    pthread_mutex_init(&sink.lock, NULL);
    init_cond(&sink.cond);
    server_start();
}

static void teardown(void)
{
    delivery_engine_stop(engine, 0);
    engine = NULL;
    server_stop();
    if (black_hole_fd >= 0)
        close(black_hole_fd);
    black_hole_fd = -1;
    cr_expect_eq(sink.bad_calls, 0, "done was called with a wrong ctx or too often");
    delivery_request_free(sink.submit_in_done);
    for (int i = 0; i < sink.count; i++) {
        free(sink.outcomes[i].error);
        free(sink.outcomes[i].reason);
        free(sink.outcomes[i].excerpt);
    }
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------------ */
/* What one attempt sends                                                   */
/* ------------------------------------------------------------------------ */

Test(engine, sends_the_headers_of_the_contract)
{
    struct job *job = new_job(server.url);
    const struct outcome *out;
    const struct recorded *rec;

    job->signing_secret = xstrdup(JOB_SECRET);
    start_engine(false, NULL);
    script(1, &(struct reply){.status = 200, .body = "thanks"});
    out = deliver(job);

    cr_assert_eq(request_count(), 1);
    rec = &server.requests[0];
    cr_expect_str_eq(rec->method, "POST");
    cr_expect_str_eq(rec->path, "/hook");
    expect_header(rec, "Content-Type", "application/json");
    expect_header(rec, "User-Agent", "cronfence/" CF_VERSION);
    expect_header(rec, "Fencing-Token", TOKEN_TEXT);
    expect_header(rec, "Idempotency-Key", KEY);
    expect_header(rec, "Cronfence-Job", "nightly-report");
    expect_header(rec, "Cronfence-Run", RUN);
    expect_header(rec, "Cronfence-Scheduled-At", SLOT_TEXT);
    expect_header(rec, "Cronfence-Attempt", "1");
    expect_header(rec, "Cronfence-Fence-Scope", "job");
    cr_expect_not_null(header_of(rec, "Cronfence-Signature"));
    cr_expect_null(header_of(rec, "Expect"), "no Expect: 100-continue");
    cr_expect(signed_with(rec, JOB_SECRET), "signature must verify with the job's secret");
    /* DESIGN §5: v2 and the Standard Webhooks headers, with one t between them. */
    expect_header(rec, "webhook-id", KEY);
    if (header_of(rec, "Cronfence-Signature") != NULL &&
        header_of(rec, "webhook-timestamp") != NULL) {
        char expected_start[64];

        snprintf(expected_start, sizeof(expected_start),
                 "t=%s,v2=", header_of(rec, "webhook-timestamp"));
        cr_expect_eq(
            strncmp(header_of(rec, "Cronfence-Signature"), expected_start, strlen(expected_start)),
            0, "Cronfence-Signature %s", header_of(rec, "Cronfence-Signature"));
        cr_expect_eq(strlen(header_of(rec, "Cronfence-Signature")), strlen(expected_start) + 64);
    }
    cr_expect_eq(strncmp(header_of(rec, "webhook-signature") != NULL
                             ? header_of(rec, "webhook-signature")
                             : "",
                         "v1,", 3),
                 0);
    cr_expect(!signed_with(rec, DEFAULT_SECRET), "the job's secret wins over the default");

    cr_expect_eq(out->status, RUN_SUCCEEDED);
    cr_expect_eq(out->attempts, 1);
    cr_expect_eq(out->http_status, 200);
    cr_expect_null(out->error);
    cr_expect_str_eq(out->excerpt, "thanks");
    cr_expect_not(out->stopped_early);
    cr_expect_str_eq(out->run_id, RUN);
    cr_expect_eq(out->owner, &owner_marker);
    cr_expect_gt(out->started_at_ms, 0);
    cr_expect_geq(out->finished_at_ms, out->started_at_ms);
}

Test(engine, sends_the_json_body_of_the_contract)
{
    struct job *job = new_job(server.url);
    json_t *doc, *token;

    start_engine(false, NULL);
    deliver(job);

    cr_assert_eq(request_count(), 1);
    doc = body_json(&server.requests[0]);
    token = json_object_get(doc, "fencing_token");
    cr_expect_eq(json_object_size(doc), 8);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "job")), "nightly-report");
    cr_expect_str_eq(json_string_value(json_object_get(doc, "run_id")), RUN);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "scheduled_at")), SLOT_TEXT);
    cr_expect(json_is_integer(token));
    cr_expect_eq(json_integer_value(token), TOKEN);
    cr_expect_eq(json_integer_value(json_object_get(doc, "attempt")), 1);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "instance")), INSTANCE);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "trigger")), "schedule");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(doc, "payload"), "report")),
                     "daily");
    json_decref(doc);
}

Test(engine, fence_scope_follows_the_overlap_of_the_job)
{
    static const struct {
        enum job_overlap overlap;
        enum run_trigger trigger;
        const char *want;
    } cases[] = {
        {JOB_OVERLAP_FORBID, RUN_TRIGGER_SCHEDULE, "job"},
        {JOB_OVERLAP_QUEUE, RUN_TRIGGER_SCHEDULE, "job"},
        {JOB_OVERLAP_ALLOW, RUN_TRIGGER_SCHEDULE, "slot"},
        {JOB_OVERLAP_ALLOW, RUN_TRIGGER_MANUAL, "slot"}, /* a manual run is a slot of its own */
        {JOB_OVERLAP_FORBID, RUN_TRIGGER_MANUAL, "job"},
    };
    int n = (int)(sizeof(cases) / sizeof(cases[0]));

    start_engine(false, NULL);
    for (int i = 0; i < n; i++) {
        struct job *job = new_job(server.url);
        struct delivery_request *req = new_request(job, RUN);
        int before = outcome_count();

        job->overlap = cases[i].overlap;
        req->trigger = cases[i].trigger;
        cr_assert_eq(delivery_submit(engine, req), CF_OK);
        cr_assert(wait_outcomes(before + 1), "done was not called");
    }
    cr_assert_eq(request_count(), n);
    for (int i = 0; i < n; i++) /* header_of() also fails on a repeated header */
        expect_header(&server.requests[i], "Cronfence-Fence-Scope", cases[i].want);
}

Test(engine, signs_with_the_default_secret_when_the_job_has_none)
{
    start_engine(false, NULL);
    deliver(new_job(server.url));

    cr_assert_eq(request_count(), 1);
    cr_expect(signed_with(&server.requests[0], DEFAULT_SECRET));
}

Test(engine, adds_the_job_headers_after_its_own)
{
    struct job *job = new_job(server.url);
    const struct recorded *rec;
    int ours = -1, theirs = -1;

    job_add_header(job, "X-Custom", "yes");
    job_add_header(job, "Authorization", "Bearer abc");
    job_add_header(job, "X-Empty", "");
    start_engine(false, NULL);
    deliver(job);

    cr_assert_eq(request_count(), 1);
    rec = &server.requests[0];
    expect_header(rec, "X-Custom", "yes");
    expect_header(rec, "Authorization", "Bearer abc");
    expect_header(rec, "X-Empty", "");
    expect_header(rec, "Fencing-Token", TOKEN_TEXT);
    for (int i = 0; i < rec->header_count; i++) {
        if (strcasecmp(rec->headers[i].name, "Cronfence-Signature") == 0)
            ours = i;
        if (strcasecmp(rec->headers[i].name, "X-Custom") == 0)
            theirs = i;
    }
    cr_expect_lt(ours, theirs, "job headers come after cronfence's");
}

Test(engine, uses_the_job_method_with_a_body)
{
    static const char *const methods[] = {"PUT", "PATCH", "DELETE"};

    start_engine(false, NULL);
    for (int i = 0; i < 3; i++) {
        struct job *job = new_job(server.url);
        const struct recorded *rec;
        json_t *doc;

        job_set_method(job, methods[i]);
        cr_expect_eq(deliver(job)->status, RUN_SUCCEEDED);
        cr_assert_eq(request_count(), i + 1);
        rec = &server.requests[i];
        cr_expect_str_eq(rec->method, methods[i]);
        expect_header(rec, "Content-Type", "application/json");
        doc = body_json(rec);
        cr_expect_str_eq(json_string_value(json_object_get(doc, "run_id")), RUN);
        json_decref(doc);
        cr_expect(signed_with(rec, DEFAULT_SECRET), "%s", methods[i]);
    }
}

Test(engine, get_sends_no_body_and_signs_the_empty_body)
{
    struct job *job = new_job(server.url);
    const struct recorded *rec;

    job_set_method(job, "GET");
    start_engine(false, NULL);
    cr_expect_eq(deliver(job)->status, RUN_SUCCEEDED);

    cr_assert_eq(request_count(), 1);
    rec = &server.requests[0];
    cr_expect_str_eq(rec->method, "GET");
    cr_expect_eq(rec->body_len, 0);
    cr_expect_null(header_of(rec, "Content-Type"), "no body, no Content-Type");
    expect_header(rec, "Cronfence-Attempt", "1");
    expect_header(rec, "Fencing-Token", TOKEN_TEXT);
    cr_expect(signed_with(rec, DEFAULT_SECRET), "signed over the empty body");
}

Test(engine, raw_body_is_sent_verbatim_with_its_content_type)
{
    struct job *job = new_job(server.url);
    const struct recorded *rec;

    json_decref(job->webhook.body);
    job->webhook.body = json_string("name=nightly&when=now\n");
    job->webhook.raw_body = true;
    job->webhook.content_type = xstrdup("application/x-www-form-urlencoded");
    start_engine(false, NULL);
    cr_expect_eq(deliver(job)->status, RUN_SUCCEEDED);

    cr_assert_eq(request_count(), 1);
    rec = &server.requests[0];
    expect_header(rec, "Content-Type", "application/x-www-form-urlencoded");
    cr_expect_str_eq(rec->body, "name=nightly&when=now\n");
    expect_header(rec, "Cronfence-Run", RUN);
    cr_expect(signed_with(rec, DEFAULT_SECRET));
}

Test(engine, keeps_an_excerpt_of_a_long_response)
{
    const struct outcome *out;

    start_engine(false, NULL);
    script(1, &(struct reply){.status = 200, .big_body_bytes = 3 * RUN_EXCERPT_MAX + 17});
    out = deliver(new_job(server.url));

    cr_expect_eq(out->status, RUN_SUCCEEDED, "the rest of the body is read and dropped");
    cr_assert_not_null(out->excerpt);
    cr_expect_eq(strlen(out->excerpt), RUN_EXCERPT_MAX);
    cr_expect_eq(out->excerpt[0], 'x');
}

/* ------------------------------------------------------------------------ */
/* Verdicts and retries                                                     */
/* ------------------------------------------------------------------------ */

Test(engine, retries_503_until_success_with_the_same_identity)
{
    const struct outcome *out;

    start_engine(false, NULL);
    script(3, (struct reply[]){{.status = 503}, {.status = 503}, {.status = 200}});
    out = deliver(new_job(server.url));

    cr_expect_eq(out->status, RUN_SUCCEEDED);
    cr_expect_eq(out->attempts, 3);
    cr_expect_eq(out->http_status, 200);
    cr_expect_null(out->error);
    cr_assert_eq(request_count(), 3);
    for (int i = 0; i < 3; i++) {
        const struct recorded *rec = &server.requests[i];
        char attempt[8];
        json_t *doc = body_json(rec);

        snprintf(attempt, sizeof(attempt), "%d", i + 1);
        expect_header(rec, "Cronfence-Attempt", attempt);
        expect_header(rec, "Cronfence-Run", RUN);
        expect_header(rec, "Fencing-Token", TOKEN_TEXT);
        expect_header(rec, "Idempotency-Key", KEY);
        cr_expect_eq(json_integer_value(json_object_get(doc, "attempt")), i + 1);
        cr_expect_str_eq(json_string_value(json_object_get(doc, "run_id")), RUN);
        cr_expect_eq(json_integer_value(json_object_get(doc, "fencing_token")), TOKEN);
        cr_expect(signed_with(rec, DEFAULT_SECRET), "attempt %d is signed over its own body",
                  i + 1);
        json_decref(doc);
    }
}

Test(engine, gives_up_after_the_last_attempt)
{
    const struct outcome *out;

    start_engine(false, NULL);
    script(1, &(struct reply){.status = 503, .body = "down for maintenance"});
    out = deliver(new_job(server.url));

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 3);
    cr_expect_eq(out->http_status, 503);
    cr_expect_str_eq(out->error, "http status 503");
    cr_expect_str_eq(out->excerpt, "down for maintenance");
    cr_expect_not(out->stopped_early);
    cr_expect_eq(request_count(), 3);
}

Test(engine, retries_408_425_and_429)
{
    struct job *job = new_job(server.url);
    const struct outcome *out;

    job->retry.attempts = 4;
    start_engine(false, NULL);
    script(4, (struct reply[]){{.status = 408}, {.status = 425}, {.status = 429}, {.status = 204}});
    out = deliver(job);

    cr_expect_eq(out->status, RUN_SUCCEEDED);
    cr_expect_eq(out->attempts, 4);
    cr_expect_eq(out->http_status, 204);
}

Test(engine, honours_retry_after)
{
    int64_t gap_ms;

    start_engine(false, NULL);
    script(2, (struct reply[]){{.status = 503, .retry_after = "1"}, {.status = 200}});
    cr_expect_eq(deliver(new_job(server.url))->status, RUN_SUCCEEDED);

    cr_assert_eq(request_count(), 2);
    gap_ms = server.requests[1].arrived_boot_ms - server.requests[0].arrived_boot_ms;
    /* The job's backoff is at most 50 ms; only Retry-After explains a second's wait. */
    cr_expect_geq(gap_ms, 990, "second attempt came %lld ms after the first", (long long)gap_ms);
}

Test(engine, honours_retry_after_as_a_date)
{
    char date[64];
    time_t at = time(NULL) + 2;
    struct tm tm;
    int64_t gap_ms;

    gmtime_r(&at, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    start_engine(false, NULL);
    script(2, (struct reply[]){{.status = 429, .retry_after = date}, {.status = 200}});
    cr_expect_eq(deliver(new_job(server.url))->status, RUN_SUCCEEDED);

    cr_assert_eq(request_count(), 2);
    gap_ms = server.requests[1].arrived_boot_ms - server.requests[0].arrived_boot_ms;
    /* Two seconds ahead, at one-second resolution: at least one second of wait. */
    cr_expect_geq(gap_ms, 900, "second attempt came %lld ms after the first", (long long)gap_ms);
}

Test(engine, does_not_retry_400)
{
    const struct outcome *out;

    start_engine(false, NULL);
    script(2, (struct reply[]){{.status = 400, .body = "bad request"}, {.status = 200}});
    out = deliver(new_job(server.url));

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    cr_expect_eq(out->http_status, 400);
    cr_expect_str_eq(out->error, "http status 400");
    cr_expect_str_eq(out->excerpt, "bad request");
    cr_expect_eq(request_count(), 1);
}

Test(engine, fenced_by_409_and_412_without_retry)
{
    static const int statuses[] = {409, 412};

    start_engine(false, NULL);
    /* Request n gets statuses[n]; a retry would get 200. */
    script(3, (struct reply[]){{.status = 409}, {.status = 412}, {.status = 200}});
    for (int i = 0; i < 2; i++) {
        const struct outcome *out = deliver(new_job(server.url));
        char error[32];

        snprintf(error, sizeof(error), "http status %d", statuses[i]);
        cr_expect_eq(out->status, RUN_FENCED, "status %d", statuses[i]);
        cr_expect_eq(out->attempts, 1);
        cr_expect_eq(out->http_status, statuses[i]);
        cr_expect_str_eq(out->error, error);
        cr_expect_eq(request_count(), i + 1, "status %d is not retried", statuses[i]);
    }
}

Test(engine, does_not_follow_redirects)
{
    const struct outcome *out;

    start_engine(false, NULL);
    script(2, (struct reply[]){{.status = 302, .location = "/elsewhere"}, {.status = 200}});
    out = deliver(new_job(server.url));

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    cr_expect_eq(out->http_status, 302);
    cr_expect_str_eq(out->error, "http status 302");
    cr_expect_eq(request_count(), 1);
    cr_expect_str_eq(server.requests[0].path, "/hook");
}

Test(engine, times_out_each_attempt_then_fails)
{
    struct job *job = new_job(server.url);
    const struct outcome *out;

    job->webhook.timeout_ms = 200;
    job->retry.attempts = 2;
    start_engine(false, NULL);
    script(1, &(struct reply){.status = 200, .delay_ms = 5000});
    out = deliver(job);

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 2);
    cr_assert_not_null(out->error);
    cr_expect_str_eq(out->error, "timeout after 200 ms");
    cr_expect_eq(request_count(), 2, "the timed-out attempt was retried");
}

Test(engine, retries_a_refused_connection)
{
    char url[64];
    const struct outcome *out;

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook", closed_port());
    start_engine(false, NULL);
    out = deliver(new_job(url));

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 3);
    cr_expect_eq(out->http_status, 0);
    cr_expect_str_eq(out->error, "connection refused");
    cr_expect_null(out->excerpt);
}

Test(engine, may_retry_false_stops_early)
{
    struct job *job = new_job(server.url);
    const struct outcome *out;

    job->retry.attempts = 5;
    start_engine(true, NULL);
    script(1, &(struct reply){.status = 503});
    out = deliver(job);

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    cr_expect(out->stopped_early);
    cr_expect_str_eq(out->error, "http status 503");
    cr_expect_eq(sink.may_retry_calls, 1);
    cr_expect_eq(sink.may_retry_owner, &owner_marker, "may_retry gets the request's owner");
    cr_expect_eq(request_count(), 1);
}

Test(engine, may_retry_is_asked_before_every_retry)
{
    struct job *job = new_job(server.url);
    const struct outcome *out;

    job->retry.attempts = 5;
    sink.may_retry_yes = 2;
    start_engine(true, NULL);
    script(1, &(struct reply){.status = 500});
    out = deliver(job);

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 3);
    cr_expect(out->stopped_early);
    cr_expect_eq(sink.may_retry_calls, 3);
    cr_expect_eq(request_count(), 3);
}

Test(engine, may_retry_not_asked_without_retry)
{
    start_engine(true, NULL);
    cr_expect_eq(deliver(new_job(server.url))->status, RUN_SUCCEEDED);
    cr_expect_eq(sink.may_retry_calls, 0);
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

Test(engine, delivers_a_hundred_firings_in_flight_at_once)
{
    enum { FIRINGS = 100 };
    bool seen[FIRINGS] = {false};

    /* One target: its share must be all hundred for this to complete. */
    start_engine_limited(false, NULL, FIRINGS);
    cr_expect_eq(delivery_in_flight(engine), 0);
    pthread_mutex_lock(&server.lock);
    server.hold_count = FIRINGS;
    pthread_mutex_unlock(&server.lock);
    /* Every answer waits until all hundred requests have arrived: only concurrency completes. */
    script(1, &(struct reply){.status = 200, .hold_for_all = true});
    for (int i = 0; i < FIRINGS; i++) {
        char run_id[RUN_ID_MAX];

        snprintf(run_id, sizeof(run_id), "run-%03d", i);
        cr_assert_eq(delivery_submit(engine, new_request(new_job(server.url), run_id)), CF_OK);
    }
    cr_expect_gt(delivery_in_flight(engine), 0);
    cr_expect_leq(delivery_in_flight(engine), FIRINGS);
    cr_assert(wait_outcomes(FIRINGS), "only %d of %d firings done", outcome_count(), FIRINGS);

    cr_expect_eq(server.max_active, FIRINGS, "all requests were answered at once");
    cr_expect_eq(request_count(), FIRINGS);
    for (int i = 0; i < FIRINGS; i++) {
        const struct outcome *out = &sink.outcomes[i];
        int n = atoi(out->run_id + strlen("run-"));

        cr_expect_eq(out->status, RUN_SUCCEEDED, "%s", out->run_id);
        cr_expect_eq(out->attempts, 1);
        cr_assert(n >= 0 && n < FIRINGS);
        cr_expect_not(seen[n], "%s reported twice", out->run_id);
        seen[n] = true;
    }
    /* in_flight drops after done returns, just after the last outcome was recorded. */
    for (int i = 0; i < WAIT_MS / 10 && delivery_in_flight(engine) > 0; i++)
        cf_sleep_ms(10);
    cr_expect_eq(delivery_in_flight(engine), 0);
}

/* ------------------------------------------------------------------------ */
/* Bulkheads                                                                */
/* ------------------------------------------------------------------------ */

/* The outcome of run_id, or NULL. */
static const struct outcome *outcome_of(const char *run_id)
{
    const struct outcome *found = NULL;

    pthread_mutex_lock(&sink.lock);
    for (int i = 0; i < sink.count && found == NULL; i++)
        if (strcmp(sink.outcomes[i].run_id, run_id) == 0)
            found = &sink.outcomes[i];
    pthread_mutex_unlock(&sink.lock);
    return found;
}

/* Submits a firing of job (stolen) as run_id. */
static void submit_as(struct job *job, const char *run_id)
{
    cr_assert_eq(delivery_submit(engine, new_request(job, run_id)), CF_OK);
}

Test(engine, one_target_gets_at_most_its_share_at_once)
{
    enum { FIRINGS = 20, SHARE = 4 };

    start_engine_limited(false, NULL, SHARE);
    script(1, &(struct reply){.status = 200, .delay_ms = 50});
    for (int i = 0; i < FIRINGS; i++) {
        char run_id[RUN_ID_MAX];

        snprintf(run_id, sizeof(run_id), "run-%02d", i);
        submit_as(new_job(server.url), run_id);
    }
    cr_assert(wait_outcomes(FIRINGS), "only %d of %d firings done", outcome_count(), FIRINGS);
    cr_expect_eq(server.max_active, SHARE, "attempts in flight to the target: %d",
                 server.max_active);
    for (int i = 0; i < FIRINGS; i++) {
        cr_expect_eq(sink.outcomes[i].status, RUN_SUCCEEDED, "%s", sink.outcomes[i].run_id);
        cr_expect_eq(sink.outcomes[i].attempts, 1);
    }
}

Test(engine, a_hung_target_does_not_delay_another_target)
{
    char hole[64];
    const struct outcome *out;

    black_hole_url(hole, sizeof(hole));
    start_engine_limited(false, NULL, 2);
    for (int i = 0; i < 10; i++) {
        char run_id[RUN_ID_MAX];

        snprintf(run_id, sizeof(run_id), "hung-%d", i);
        submit_as(new_job(hole), run_id);
    }
    submit_as(new_job(server.url), "healthy");
    /* The hung attempts run for their 5 s timeout; the healthy one is answered at once. */
    cr_assert(wait_outcomes(1));
    out = outcome_of("healthy");
    cr_assert_not_null(out, "the first firing done was %s", sink.outcomes[0].run_id);
    cr_expect_eq(out->status, RUN_SUCCEEDED);
}

Test(engine, waiting_for_a_slot_counts_against_the_timeout)
{
    enum { FIRINGS = 3 };
    char hole[64], want[128];
    int64_t submitted_ms = cf_wall_ms();

    black_hole_url(hole, sizeof(hole));
    snprintf(want, sizeof(want), "timeout after 300 ms waiting for a free connection to %s",
             hole + strlen("http://"));
    *strrchr(want, '/') = '\0';
    start_engine_limited(false, NULL, 1);
    for (int i = 0; i < FIRINGS; i++) {
        char run_id[RUN_ID_MAX];
        struct job *job = new_job(hole);

        job->webhook.timeout_ms = 300;
        job->retry.attempts = 1;
        snprintf(run_id, sizeof(run_id), "run-%d", i);
        submit_as(job, run_id);
    }
    cr_assert(wait_outcomes(FIRINGS));

    cr_expect_str_eq(outcome_of("run-0")->error, "timeout after 300 ms");
    for (int i = 0; i < FIRINGS; i++) {
        const struct outcome *out = &sink.outcomes[i];

        cr_expect_eq(out->status, RUN_FAILED, "%s", out->run_id);
        cr_expect_eq(out->attempts, 1, "%s", out->run_id);
        /* Bounded generously, against a wait of several timeouts in a row. */
        cr_expect_lt(out->finished_at_ms - submitted_ms, 300 + 500, "%s ended after %lld ms",
                     out->run_id, (long long)(out->finished_at_ms - submitted_ms));
        if (strcmp(out->run_id, "run-0") != 0)
            cr_expect_str_eq(out->error, want, "%s", out->run_id);
    }
}

Test(engine, a_slot_not_started_by_its_deadline_is_missed)
{
    char hole[64], host_port[64], want[160];
    struct job *first = NULL, *second = NULL;
    struct delivery_request *req;
    const struct outcome *out;

    black_hole_url(hole, sizeof(hole));
    snprintf(host_port, sizeof(host_port), "%s", hole + strlen("http://"));
    *strchr(host_port, '/') = '\0';
    snprintf(want, sizeof(want),
             "not sent: target %s had no free connection before the starting deadline", host_port);
    start_engine_limited(false, NULL, 1);
    first = new_job(hole);
    first->webhook.timeout_ms = 2000;
    first->retry.attempts = 1;
    submit_as(first, "first");
    second = new_job(hole);
    second->starting_deadline_ms = 300;
    req = new_request(second, "second");
    req->scheduled_at_ms = cf_wall_ms();
    cr_assert_eq(delivery_submit(engine, req), CF_OK);

    cr_assert(wait_outcomes(1));
    out = outcome_of("second");
    cr_assert_not_null(out, "the deadline did not end the wait first");
    cr_expect_eq(out->status, RUN_MISSED);
    cr_expect_null(out->error);
    cr_expect_str_eq(out->reason, want);
    cr_expect_eq(out->attempts, 0);
    cr_expect_eq(out->started_at_ms, 0, "nothing was sent");
    cr_assert(wait_outcomes(2));
    cr_expect_eq(outcome_of("first")->status, RUN_FAILED);
}

Test(engine, a_slot_past_its_deadline_is_missed_without_a_request)
{
    struct job *job = new_job(server.url);
    struct delivery_request *req;

    job->starting_deadline_ms = 1000;
    req = new_request(job, "late");
    req->scheduled_at_ms = cf_wall_ms() - 5000;
    start_engine(false, NULL);
    cr_assert_eq(delivery_submit(engine, req), CF_OK);
    cr_assert(wait_outcomes(1));
    cr_expect_eq(sink.outcomes[0].status, RUN_MISSED);
    cr_expect_eq(request_count(), 0);
}

Test(engine, a_manual_firing_has_no_starting_deadline)
{
    struct job *job = new_job(server.url);
    struct delivery_request *req;

    job->starting_deadline_ms = 1000;
    req = new_request(job, "manual");
    req->scheduled_at_ms = cf_wall_ms() - 5000;
    req->trigger = RUN_TRIGGER_MANUAL;
    start_engine(false, NULL);
    cr_assert_eq(delivery_submit(engine, req), CF_OK);
    cr_assert(wait_outcomes(1));
    cr_expect_eq(sink.outcomes[0].status, RUN_SUCCEEDED);
}

Test(engine, stop_ends_firings_waiting_for_a_slot)
{
    char hole[64];

    black_hole_url(hole, sizeof(hole));
    start_engine_limited(false, NULL, 1);
    for (int i = 0; i < 3; i++) {
        char run_id[RUN_ID_MAX];

        snprintf(run_id, sizeof(run_id), "run-%d", i);
        submit_as(new_job(hole), run_id);
    }
    delivery_engine_stop(engine, 200);
    engine = NULL;
    cr_assert_eq(outcome_count(), 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(sink.outcomes[i].status, RUN_FAILED);
        cr_expect_str_eq(sink.outcomes[i].error, "shutdown");
    }
}

/* ------------------------------------------------------------------------ */
/* Address checks at connect time                                           */
/* ------------------------------------------------------------------------ */

Test(engine, refuses_a_link_local_target_at_connect_time)
{
    struct job *job = new_job("http://169.254.1.1/hook");
    const struct outcome *out;
    int64_t started_ms = cf_boot_ms();

    /* Were a packet sent, nothing would answer: the attempt would take the whole timeout. */
    job->webhook.timeout_ms = 60000;
    start_engine(false, NULL);
    out = deliver(job);

    cr_expect_lt(cf_boot_ms() - started_ms, 30000, "refused before any connection attempt");
    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1, "a refused address is not retried");
    cr_expect_eq(out->http_status, 0);
    cr_expect_str_eq(out->error, "address not allowed: 169.254.1.1");
}

Test(engine, refuses_an_ipv6_link_local_target)
{
    struct job *job = new_job("http://[fe80::1]:8080/hook");
    const struct outcome *out;

    job->webhook.timeout_ms = 60000;
    start_engine(false, NULL);
    out = deliver(job);

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    cr_expect_str_eq(out->error, "address not allowed: fe80::1");
}

/* Delivers one firing to url with allow list `list`; returns its outcome. */
static const struct outcome *deliver_with_allow(const char *list, const char *url)
{
    struct netallow *allow = NULL;
    const struct outcome *out;
    char errbuf[128];

    cr_assert_eq(netallow_parse(list, &allow, errbuf, sizeof(errbuf)), CF_OK, "%s", errbuf);
    start_engine(false, allow);
    out = deliver(new_job(url));
    /* The engine borrows the list: stop it first. */
    delivery_engine_stop(engine, 0);
    engine = NULL;
    netallow_free(allow);
    return out;
}

Test(engine, allow_list_refuses_addresses_outside_it)
{
    const struct outcome *out = deliver_with_allow("10.0.0.0/8", server.url);

    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    cr_expect_str_eq(out->error, "address not allowed: 127.0.0.1");
    cr_expect_eq(request_count(), 0, "no request reached the server");
}

Test(engine, allow_list_lets_a_listed_cidr_through)
{
    cr_expect_eq(deliver_with_allow("127.0.0.1/32", server.url)->status, RUN_SUCCEEDED);
    cr_expect_eq(request_count(), 1);
}

Test(engine, allow_list_lets_a_listed_host_name_through)
{
    char url[64];

    /* No CIDR holds 127.0.0.1: the name being listed is what lets it through. */
    snprintf(url, sizeof(url), "http://localhost:%u/hook", server.port);
    cr_expect_eq(deliver_with_allow("localhost,10.0.0.0/8", url)->status, RUN_SUCCEEDED);
    cr_expect_eq(request_count(), 1);
}

Test(engine, allow_list_refuses_an_unlisted_host_name)
{
    const struct outcome *out;
    char url[64];

    snprintf(url, sizeof(url), "http://localhost:%u/hook", server.port);
    out = deliver_with_allow("hooks.example.com", url);
    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 1);
    /* localhost may resolve to ::1 as well as 127.0.0.1: the first refused is named. */
    cr_expect(strcmp(out->error, "address not allowed: 127.0.0.1") == 0 ||
                  strcmp(out->error, "address not allowed: ::1") == 0,
              "error: %s", out->error);
    cr_expect_eq(request_count(), 0);
}

Test(engine, allow_list_refusing_one_address_of_a_name_tries_the_others)
{
    char url[64];

    /* When localhost also resolves to ::1, that address is refused and 127.0.0.1 used. */
    snprintf(url, sizeof(url), "http://localhost:%u/hook", server.port);
    cr_expect_eq(deliver_with_allow("127.0.0.1/32", url)->status, RUN_SUCCEEDED);
    cr_expect_eq(request_count(), 1);
}

Test(engine, a_refused_allowed_address_is_reported_as_such)
{
    const struct outcome *out;
    char url[64];

    /* ::1 (if any) refused by the list, 127.0.0.1 refused by the kernel: the latter says more. */
    snprintf(url, sizeof(url), "http://localhost:%u/hook", closed_port());
    out = deliver_with_allow("127.0.0.1/32", url);
    cr_expect_eq(out->status, RUN_FAILED);
    cr_expect_eq(out->attempts, 3, "a network error is retried");
    cr_expect_str_eq(out->error, "connection refused");
}

/* ------------------------------------------------------------------------ */
/* Stopping                                                                 */
/* ------------------------------------------------------------------------ */

Test(engine, stop_lets_firings_in_flight_finish_within_grace)
{
    start_engine(false, NULL);
    script(1, &(struct reply){.status = 200, .delay_ms = 300});
    submit(new_job(server.url));
    cr_assert(wait_requests(1));

    delivery_engine_stop(engine, WAIT_MS);
    engine = NULL;
    cr_assert_eq(outcome_count(), 1, "done was called before stop returned");
    cr_expect_eq(sink.outcomes[0].status, RUN_SUCCEEDED);
}

Test(engine, stop_aborts_what_outlives_the_grace)
{
    int64_t started_ms;

    start_engine(false, NULL);
    sink.submit_in_done = new_request(new_job(server.url), "late");
    script(1, &(struct reply){.status = 200, .delay_ms = WAIT_MS});
    submit(new_job(server.url));
    cr_assert(wait_requests(1));

    started_ms = cf_boot_ms();
    delivery_engine_stop(engine, 100);
    engine = NULL;
    cr_expect_lt(cf_boot_ms() - started_ms, WAIT_MS / 2, "stop did not wait for the response");
    cr_assert_eq(outcome_count(), 1);
    cr_expect_eq(sink.outcomes[0].status, RUN_FAILED);
    cr_expect_eq(sink.outcomes[0].attempts, 1);
    cr_expect_eq(sink.outcomes[0].http_status, 0);
    cr_expect_str_eq(sink.outcomes[0].error, "shutdown");
    cr_expect_eq(sink.outcomes[0].late_submit_result, CF_ERR_SHUTDOWN,
                 "submissions are refused once stopping");
}

Test(engine, stop_starts_no_new_retry)
{
    struct job *job = new_job(server.url);
    int64_t started_ms;

    /* A retry would come after ten seconds at the earliest. */
    job->retry = (struct job_retry){.attempts = 3, .backoff_ms = 20000, .max_backoff_ms = 20000};
    start_engine(false, NULL);
    script(1, &(struct reply){.status = 503});
    submit(job);
    cr_assert(wait_requests(1));

    started_ms = cf_boot_ms();
    delivery_engine_stop(engine, WAIT_MS);
    engine = NULL;
    cr_expect_lt(cf_boot_ms() - started_ms, 9000, "stop did not wait for the backoff");
    cr_assert_eq(outcome_count(), 1);
    cr_expect_eq(sink.outcomes[0].status, RUN_FAILED);
    cr_expect_eq(sink.outcomes[0].attempts, 1);
    cr_expect_str_eq(sink.outcomes[0].error, "http status 503");
    cr_expect_eq(request_count(), 1);
}

Test(engine, stop_accepts_null_and_an_idle_engine)
{
    delivery_engine_stop(NULL, 0);
    start_engine(false, NULL);
    cr_expect_eq(delivery_in_flight(engine), 0);
    delivery_engine_stop(engine, 1000);
    engine = NULL;
    cr_expect_eq(outcome_count(), 0);
}
