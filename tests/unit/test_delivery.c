/*
 * test_delivery.c - the pure parts of delivery: verdicts, backoff,
 * Retry-After parsing and the webhook body. The engine itself is tested
 * against a real HTTP server in test_delivery_engine.c.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "delivery.h"

/* 2026-11-21T08:00:00.000Z */
#define SLOT_MS INT64_C(1795248000000)
/* 1994-11-06T08:49:37Z, the example date of RFC 9110 */
#define RFC_DATE_MS INT64_C(784111777000)

/* ---- delivery_classify ---- */

struct classify_case {
    bool transport_failed;
    int http_status;
    enum delivery_verdict want;
};

Test(delivery_classify, every_status_class)
{
    static const struct classify_case cases[] = {
        /* network errors and timeouts, whatever status was seen */
        {true, 0, DELIVERY_RETRY},
        {true, 200, DELIVERY_RETRY},
        /* 2xx */
        {false, 200, DELIVERY_SUCCESS},
        {false, 201, DELIVERY_SUCCESS},
        {false, 202, DELIVERY_SUCCESS},
        {false, 204, DELIVERY_SUCCESS},
        {false, 299, DELIVERY_SUCCESS},
        /* 1xx and 3xx: not retried */
        {false, 100, DELIVERY_FAIL},
        {false, 101, DELIVERY_FAIL},
        {false, 199, DELIVERY_FAIL},
        {false, 300, DELIVERY_FAIL},
        {false, 301, DELIVERY_FAIL},
        {false, 302, DELIVERY_FAIL},
        {false, 304, DELIVERY_FAIL},
        {false, 307, DELIVERY_FAIL},
        {false, 399, DELIVERY_FAIL},
        /* other 4xx: not retried */
        {false, 400, DELIVERY_FAIL},
        {false, 401, DELIVERY_FAIL},
        {false, 403, DELIVERY_FAIL},
        {false, 404, DELIVERY_FAIL},
        {false, 405, DELIVERY_FAIL},
        {false, 410, DELIVERY_FAIL},
        {false, 413, DELIVERY_FAIL},
        {false, 422, DELIVERY_FAIL},
        {false, 499, DELIVERY_FAIL},
        /* retried 4xx */
        {false, 408, DELIVERY_RETRY},
        {false, 425, DELIVERY_RETRY},
        {false, 429, DELIVERY_RETRY},
        /* the target fenced us out */
        {false, 409, DELIVERY_FENCED},
        {false, 412, DELIVERY_FENCED},
        /* 5xx */
        {false, 500, DELIVERY_RETRY},
        {false, 502, DELIVERY_RETRY},
        {false, 503, DELIVERY_RETRY},
        {false, 504, DELIVERY_RETRY},
        {false, 599, DELIVERY_RETRY},
        /* nonsense statuses */
        {false, 0, DELIVERY_FAIL},
        {false, 600, DELIVERY_FAIL},
        {false, -1, DELIVERY_FAIL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct classify_case *c = &cases[i];

        cr_expect_eq(delivery_classify(c->transport_failed, c->http_status), c->want,
                     "transport_failed=%d status=%d", c->transport_failed, c->http_status);
    }
}

/* ---- delivery_backoff_ms ---- */

static const struct job_retry default_retry = {
    .attempts = 3, .backoff_ms = 1000, .max_backoff_ms = 60000};

Test(delivery_backoff, doubles_from_backoff_ms_with_random_zero)
{
    static const int64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000};

    for (int attempt = 1; attempt <= 8; attempt++)
        cr_expect_eq(delivery_backoff_ms(&default_retry, attempt, -1, 0.0), want[attempt - 1],
                     "attempt %d", attempt);
}

Test(delivery_backoff, capped_at_max_backoff_ms)
{
    cr_expect_eq(delivery_backoff_ms(&default_retry, 7, -1, 0.999), 59970);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 50, -1, 0.999), 59970);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1000, -1, 0.0), 30000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, INT_MAX, -1, 0.0), 30000);
}

Test(delivery_backoff, max_below_backoff_wins)
{
    struct job_retry retry = {.attempts = 3, .backoff_ms = 5000, .max_backoff_ms = 2000};

    cr_expect_eq(delivery_backoff_ms(&retry, 1, -1, 0.0), 1000);
    cr_expect_eq(delivery_backoff_ms(&retry, 4, -1, 0.0), 1000);
}

Test(delivery_backoff, zero_backoff_is_zero)
{
    struct job_retry retry = {.attempts = 3, .backoff_ms = 0, .max_backoff_ms = 60000};

    cr_expect_eq(delivery_backoff_ms(&retry, 1, -1, 0.5), 0);
    cr_expect_eq(delivery_backoff_ms(&retry, 30, -1, 0.999), 0);
}

Test(delivery_backoff, equal_jitter_stays_in_upper_half)
{
    static const double randoms[] = {0.0, 0.25, 0.5, 0.75, 0.999};

    for (int attempt = 1; attempt <= 30; attempt++) {
        int64_t base = 1000;

        for (int i = 1; i < attempt && base < 60000; i++)
            base = base * 2 > 60000 ? 60000 : base * 2;
        for (size_t r = 0; r < sizeof(randoms) / sizeof(randoms[0]); r++) {
            int64_t delay = delivery_backoff_ms(&default_retry, attempt, -1, randoms[r]);

            cr_expect_geq(delay, base / 2, "attempt %d random %f", attempt, randoms[r]);
            cr_expect_lt(delay, base, "attempt %d random %f", attempt, randoms[r]);
        }
    }
    /* Jitter grows with random01. */
    cr_expect_lt(delivery_backoff_ms(&default_retry, 3, -1, 0.0),
                 delivery_backoff_ms(&default_retry, 3, -1, 0.5));
    cr_expect_lt(delivery_backoff_ms(&default_retry, 3, -1, 0.5),
                 delivery_backoff_ms(&default_retry, 3, -1, 0.999));
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, -1, 0.999), 999);
}

Test(delivery_backoff, random01_out_of_range_is_clamped)
{
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, -1, -1.0), 500);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, -1, NAN), 500);
    cr_expect_lt(delivery_backoff_ms(&default_retry, 1, -1, 1.0), 1000);
    cr_expect_lt(delivery_backoff_ms(&default_retry, 1, -1, 7.0), 1000);
}

Test(delivery_backoff, retry_after_is_a_floor)
{
    /* Longer than the backoff: the target's word wins, even past max_backoff_ms. */
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 5000, 0.0), 5000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 5000, 0.999), 5000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 120000, 0.5), 120000);
    /* Shorter than the backoff: the backoff stands. */
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 100, 0.0), 500);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 3, 0, 0.0), 2000);
    /* Absent. */
    cr_expect_eq(delivery_backoff_ms(&default_retry, 2, -1, 0.0), 1000);
}

Test(delivery_backoff, retry_after_capped_at_one_hour)
{
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 3600000, 0.0), 3600000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 3600001, 0.0), 3600000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, 7200000, 0.999), 3600000);
    cr_expect_eq(delivery_backoff_ms(&default_retry, 1, INT64_MAX, 0.0), 3600000);
}

/* ---- delivery_parse_retry_after ---- */

Test(delivery_retry_after, delta_seconds)
{
    cr_expect_eq(delivery_parse_retry_after("120", SLOT_MS), 120000);
    cr_expect_eq(delivery_parse_retry_after("0", SLOT_MS), 0);
    cr_expect_eq(delivery_parse_retry_after("1", SLOT_MS), 1000);
    cr_expect_eq(delivery_parse_retry_after(" 7\t", SLOT_MS), 7000);
    cr_expect_eq(delivery_parse_retry_after("7\r\n", SLOT_MS), 7000);
    cr_expect_eq(delivery_parse_retry_after("007", SLOT_MS), 7000);
}

Test(delivery_retry_after, huge_delta_saturates)
{
    int64_t ms = delivery_parse_retry_after("99999999999999999999999999", SLOT_MS);

    cr_expect_geq(ms, INT64_C(3600000));
    cr_expect_gt(delivery_backoff_ms(&default_retry, 1, ms, 0.0), 0);
}

Test(delivery_retry_after, imf_fixdate)
{
    cr_expect_eq(delivery_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 10000),
                 10000);
    cr_expect_eq(delivery_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 9500),
                 9500);
    cr_expect_eq(delivery_parse_retry_after("Sat, 21 Nov 2026 08:01:00 GMT", SLOT_MS), 60000);
    cr_expect_eq(
        delivery_parse_retry_after("Thu, 29 Feb 2024 12:00:00 GMT", INT64_C(1709208000000) - 1000),
        1000);
    cr_expect_eq(
        delivery_parse_retry_after("  Sun, 06 Nov 1994 08:49:37 GMT  ", RFC_DATE_MS - 1000), 1000);
}

Test(delivery_retry_after, obsolete_date_forms)
{
    cr_expect_eq(delivery_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE_MS - 2000),
                 2000);
    cr_expect_eq(delivery_parse_retry_after("Sun Nov  6 08:49:37 1994", RFC_DATE_MS - 3000), 3000);
    cr_expect_eq(delivery_parse_retry_after("Wed Nov 16 08:49:37 1994", RFC_DATE_MS), 864000000);
    /* Two-digit years: at most 50 years ahead, else the century before. */
    cr_expect_eq(delivery_parse_retry_after("Saturday, 21-Nov-26 08:00:05 GMT", SLOT_MS), 5000);
    cr_expect_gt(delivery_parse_retry_after("Wednesday, 01-Jan-76 00:00:00 GMT", SLOT_MS), 0);
    cr_expect_eq(delivery_parse_retry_after("Tuesday, 01-Jan-80 00:00:00 GMT", SLOT_MS), 0);
}

Test(delivery_retry_after, past_date_is_zero)
{
    cr_expect_eq(delivery_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", SLOT_MS), 0);
    cr_expect_eq(delivery_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS), 0);
    cr_expect_eq(delivery_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS + 1), 0);
}

Test(delivery_retry_after, garbage_is_absent)
{
    static const char *const garbage[] = {
        "",
        "   ",
        "abc",
        "-5",
        "+5",
        "5.5",
        "12abc",
        "1 2",
        "0x10",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Wed, 29 Feb 2023 12:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "sun, 06 nov 1994 08:49:37 gmt",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "2026-11-21T08:00:00Z",
        "Sun, 06 Nov 1994 08:49:37 GMT Sun, 06 Nov 1994 08:49:37 GMT Sun, 06 Nov",
    };

    cr_expect_eq(delivery_parse_retry_after(NULL, SLOT_MS), -1);
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
        cr_expect_eq(delivery_parse_retry_after(garbage[i], SLOT_MS), -1, "\"%s\"", garbage[i]);
}

/* ---- delivery_build_body ---- */

/* A request for a job named nightly-report with body (stolen), as the scheduler builds one. */
static struct delivery_request *make_request(json_t *body, enum run_trigger trigger)
{
    struct delivery_request *req = calloc(1, sizeof(*req));
    struct job *job = calloc(1, sizeof(*job));

    cr_assert_not_null(req);
    cr_assert_not_null(job);
    job->name = strdup("nightly-report");
    job->webhook.url = strdup("http://127.0.0.1:9/hook");
    job->webhook.method = strdup("POST");
    job->webhook.body = body;
    job->webhook.timeout_ms = 30000;
    job->retry = default_retry;
    cr_assert_not_null(job->name);
    cr_assert_not_null(job->webhook.url);
    cr_assert_not_null(job->webhook.method);
    req->job = job;
    snprintf(req->run_id, sizeof(req->run_id), "nightly-report@%lld", (long long)SLOT_MS);
    snprintf(req->idempotency_key, sizeof(req->idempotency_key),
             "nightly-report@2026-11-21T08:00:00.000Z");
    req->fencing_token = INT64_C(8589934593);
    req->scheduled_at_ms = SLOT_MS;
    req->trigger = trigger;
    return req;
}

/* Builds and parses the body; the caller decrefs. */
static json_t *parsed_body(const struct delivery_request *req, const char *instance, int attempt)
{
    char *text = delivery_build_body(req, instance, attempt);
    json_error_t error;
    json_t *doc;

    cr_assert_not_null(text);
    doc = json_loads(text, 0, &error);
    cr_assert_not_null(doc, "body is not JSON: %s (%s)", error.text, text);
    cr_assert(json_is_object(doc));
    free(text);
    return doc;
}

Test(delivery_body, has_every_field_of_the_contract)
{
    json_t *payload = json_pack("{s:s, s:i}", "report", "daily", "n", 3);
    struct delivery_request *req = make_request(json_incref(payload), RUN_TRIGGER_SCHEDULE);
    json_t *doc = parsed_body(req, "instance-a", 2);
    json_t *token = json_object_get(doc, "fencing_token");

    cr_expect_eq(json_object_size(doc), 8);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "job")), "nightly-report");
    cr_expect_str_eq(json_string_value(json_object_get(doc, "run_id")),
                     "nightly-report@1795248000000");
    cr_expect_str_eq(json_string_value(json_object_get(doc, "scheduled_at")),
                     "2026-11-21T08:00:00.000Z");
    cr_expect(json_is_integer(token), "fencing_token must be a JSON integer");
    cr_expect_eq(json_integer_value(token), INT64_C(8589934593));
    cr_expect(json_is_integer(json_object_get(doc, "attempt")));
    cr_expect_eq(json_integer_value(json_object_get(doc, "attempt")), 2);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "instance")), "instance-a");
    cr_expect_str_eq(json_string_value(json_object_get(doc, "trigger")), "schedule");
    cr_expect(json_equal(json_object_get(doc, "payload"), payload));

    json_decref(doc);
    json_decref(payload);
    delivery_request_free(req);
}

Test(delivery_body, trigger_names)
{
    static const struct {
        enum run_trigger trigger;
        const char *name;
    } cases[] = {
        {RUN_TRIGGER_SCHEDULE, "schedule"},
        {RUN_TRIGGER_MANUAL, "manual"},
        {RUN_TRIGGER_CATCHUP, "catchup"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct delivery_request *req = make_request(json_null(), cases[i].trigger);
        json_t *doc = parsed_body(req, "i", 1);

        cr_expect_str_eq(json_string_value(json_object_get(doc, "trigger")), cases[i].name);
        json_decref(doc);
        delivery_request_free(req);
    }
}

Test(delivery_body, payload_defaults_to_null)
{
    struct delivery_request *req = make_request(json_null(), RUN_TRIGGER_MANUAL);
    json_t *doc = parsed_body(req, "i", 1);

    cr_expect(json_is_null(json_object_get(doc, "payload")));
    json_decref(doc);

    /* A job whose body pointer was never set behaves the same. */
    req->job->webhook.body = NULL;
    doc = parsed_body(req, "i", 1);
    cr_expect(json_is_null(json_object_get(doc, "payload")));
    json_decref(doc);
    delivery_request_free(req);
}

Test(delivery_body, payload_of_any_json_type)
{
    static const char *const payloads[] = {
        "[1,2,3]", "\"text\"", "42", "true", "{\"nested\":{\"k\":[null]}}", "\"\\u00e9t\\u00e9\""};

    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        json_t *payload = json_loads(payloads[i], JSON_DECODE_ANY, NULL);
        struct delivery_request *req;
        json_t *doc;

        cr_assert_not_null(payload);
        req = make_request(json_incref(payload), RUN_TRIGGER_SCHEDULE);
        doc = parsed_body(req, "i", 1);
        cr_expect(json_equal(json_object_get(doc, "payload"), payload), "%s", payloads[i]);
        json_decref(doc);
        json_decref(payload);
        delivery_request_free(req);
    }
}

Test(delivery_body, missing_instance_is_null)
{
    struct delivery_request *req = make_request(json_null(), RUN_TRIGGER_SCHEDULE);
    json_t *doc = parsed_body(req, NULL, 1);

    cr_expect(json_is_null(json_object_get(doc, "instance")));
    json_decref(doc);
    delivery_request_free(req);
}

Test(delivery_body, raw_body_is_verbatim)
{
    struct delivery_request *req =
        make_request(json_string("a=1&b=two\nline \"three\""), RUN_TRIGGER_SCHEDULE);
    char *text;

    req->job->webhook.raw_body = true;
    req->job->webhook.content_type = strdup("application/x-www-form-urlencoded");
    text = delivery_build_body(req, "i", 3);
    cr_assert_not_null(text);
    cr_expect_str_eq(text, "a=1&b=two\nline \"three\"");
    free(text);
    delivery_request_free(req);
}

Test(delivery_body, raw_body_null_is_empty)
{
    struct delivery_request *req = make_request(json_null(), RUN_TRIGGER_SCHEDULE);
    char *text;

    req->job->webhook.raw_body = true;
    text = delivery_build_body(req, "i", 1);
    cr_assert_not_null(text);
    cr_expect_str_eq(text, "");
    free(text);
    delivery_request_free(req);
}

Test(delivery_request, free_accepts_null)
{
    delivery_request_free(NULL);
}

/* ---- delivery_target_key ---- */

struct target_key_case {
    const char *url;
    int want_result;
    const char *want_key;
};

Test(delivery_target_key, scheme_host_and_port)
{
    static const struct target_key_case cases[] = {
        {"http://example.com/hook", CF_OK, "http://example.com:80"},
        {"https://example.com/hook?x=1", CF_OK, "https://example.com:443"},
        {"http://example.com:8080/a/b", CF_OK, "http://example.com:8080"},
        /* host names are case-insensitive, paths and users are not part of the target */
        {"HTTP://Example.COM/Hook", CF_OK, "http://example.com:80"},
        {"http://user:pass@example.com/x", CF_OK, "http://example.com:80"},
        /* one host on two ports, or two schemes, is two targets */
        {"http://127.0.0.1:9000/", CF_OK, "http://127.0.0.1:9000"},
        {"https://127.0.0.1:9000/", CF_OK, "https://127.0.0.1:9000"},
        {"http://[::1]:8080/hook", CF_OK, "http://[::1]:8080"},
        {"not a url", CF_ERR_INVALID, NULL},
        {"", CF_ERR_INVALID, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char key[128] = "";
        int result = delivery_target_key(cases[i].url, key, sizeof(key));

        cr_expect_eq(result, cases[i].want_result, "%s: %d", cases[i].url, result);
        if (cases[i].want_key != NULL)
            cr_expect_str_eq(key, cases[i].want_key, "%s", cases[i].url);
    }
}

Test(delivery_target_key, too_small_a_buffer_is_an_error)
{
    char key[8];

    cr_expect_eq(delivery_target_key("http://example.com/", key, sizeof(key)), CF_ERR_NOMEM);
}

/* ---- delivery_wait_deadline ---- */

struct wait_case {
    int64_t due_ms, timeout_ms, start_by_ms;
    bool sent;
    int64_t want_ms;
    bool want_missed;
};

Test(delivery_wait_deadline, timeout_or_starting_deadline)
{
    static const struct wait_case cases[] = {
        /* nothing sent yet: whichever comes first */
        {1000, 3000, 60000, false, 4000, false},
        {1000, 3000, 2500, false, 2500, true},
        {1000, 3000, 4000, false, 4000, true}, /* a tie: the slot is missed, not failed */
        {1000, 3000, 500, false, 500, true},   /* already past: ends at once */
        /* an attempt was sent: only the timeout counts */
        {1000, 3000, 2500, true, 4000, false},
        /* no starting deadline (manual, catch-up) */
        {1000, 3000, INT64_MAX, false, 4000, false},
        /* no overflow */
        {INT64_MAX - 10, 3000, INT64_MAX, true, INT64_MAX, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct wait_case *c = &cases[i];
        bool missed = !c->want_missed;
        int64_t got =
            delivery_wait_deadline(c->due_ms, c->timeout_ms, c->start_by_ms, c->sent, &missed);

        cr_expect_eq(got, c->want_ms, "case %zu: %lld", i, (long long)got);
        cr_expect_eq(missed, c->want_missed, "case %zu", i);
    }
}

/* ---- delivery_bulkhead ---- */

/*
 * A bulkhead scenario: steps on slots named by index, each entering for a
 * target ("a", "b", ...), leaving, or asking for the next slot to hold.
 */
enum bulkhead_op { ENTER, LEAVE, NEXT, END };

struct bulkhead_step {
    enum bulkhead_op op;
    int slot;          /* ENTER, LEAVE: which slot; NEXT: the slot expected, -1 for none */
    const char *key;   /* ENTER: its target */
    bool want_holding; /* ENTER: holds at once */
};

struct bulkhead_case {
    const char *name;
    int target_max, total_max;
    struct bulkhead_step steps[24];
    int want_holding, want_waiting, want_targets; /* after the last step */
};

#define SLOTS 16

static const struct bulkhead_case bulkhead_cases[] = {
    {"a target's share is its limit; the next waiter of that target takes a freed slot",
     2,
     10,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", true},
      {ENTER, 2, "a", false},
      {NEXT, -1, NULL, false},
      {LEAVE, 0, NULL, false},
      {NEXT, 2, NULL, false},
      {NEXT, -1, NULL, false},
      {END, 0, NULL, false}},
     2,
     0,
     1},
    {"a full target does not hold up another",
     2,
     10,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", true},
      {ENTER, 2, "a", false},
      {ENTER, 3, "a", false},
      {ENTER, 4, "b", true},
      {ENTER, 5, "b", true},
      {ENTER, 6, "c", true},
      {END, 0, NULL, false}},
     5,
     2,
     3},
    {"first come first served within a target, a waiter may leave its queue",
     1,
     10,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", false},
      {ENTER, 2, "a", false},
      {ENTER, 3, "a", false},
      {LEAVE, 2, NULL, false},
      {LEAVE, 0, NULL, false},
      {NEXT, 1, NULL, false},
      {LEAVE, 1, NULL, false},
      {NEXT, 3, NULL, false},
      {END, 0, NULL, false}},
     1,
     0,
     1},
    {"a newcomer does not overtake a waiter of its target",
     2,
     10,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", true},
      {ENTER, 2, "a", false},
      {LEAVE, 0, NULL, false},
      /* a slot of "a" is free, but 2 was first */
      {ENTER, 3, "a", false},
      {NEXT, 2, NULL, false},
      {END, 0, NULL, false}},
     2,
     1,
     1},
    {"at the total limit, targets take turns for freed slots",
     2,
     3,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", true},
      {ENTER, 2, "b", true},
      /* total full: b and c wait for the total, a for its own share */
      {ENTER, 3, "b", false},
      {ENTER, 4, "c", false},
      {ENTER, 5, "a", false},
      {ENTER, 6, "c", false},
      {LEAVE, 0, NULL, false},
      {NEXT, 3, NULL, false},
      {NEXT, -1, NULL, false},
      {LEAVE, 2, NULL, false},
      {NEXT, 4, NULL, false},
      {LEAVE, 1, NULL, false},
      {NEXT, 5, NULL, false},
      {LEAVE, 3, NULL, false},
      {NEXT, 6, NULL, false},
      {NEXT, -1, NULL, false},
      {END, 0, NULL, false}},
     3,
     0,
     2},
    {"a target without holder or waiter is forgotten",
     1,
     10,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "a", false},
      {ENTER, 2, "b", true},
      {LEAVE, 1, NULL, false},
      {LEAVE, 0, NULL, false},
      {LEAVE, 2, NULL, false},
      /* leaving twice is harmless */
      {LEAVE, 2, NULL, false},
      {NEXT, -1, NULL, false},
      {END, 0, NULL, false}},
     0,
     0,
     0},
    {"a waiter leaving before its turn gives the turn to the next target",
     1,
     2,
     {{ENTER, 0, "a", true},
      {ENTER, 1, "b", true},
      {ENTER, 2, "c", false},
      {ENTER, 3, "d", false},
      {LEAVE, 2, NULL, false},
      {LEAVE, 0, NULL, false},
      {NEXT, 3, NULL, false},
      {END, 0, NULL, false}},
     2,
     0,
     2},
};

Test(delivery_bulkhead, scenarios)
{
    for (size_t c = 0; c < sizeof(bulkhead_cases) / sizeof(bulkhead_cases[0]); c++) {
        const struct bulkhead_case *bc = &bulkhead_cases[c];
        struct delivery_bulkhead *bulkhead = delivery_bulkhead_new(bc->target_max, bc->total_max);
        struct delivery_slot slots[SLOTS];

        cr_assert_not_null(bulkhead);
        memset(slots, 0, sizeof(slots));
        for (const struct bulkhead_step *step = bc->steps; step->op != END; step++) {
            size_t at = (size_t)(step - bc->steps);

            switch (step->op) {
            case ENTER:
                cr_assert_eq(delivery_bulkhead_enter(bulkhead, step->key, &slots[step->slot]),
                             CF_OK);
                cr_expect_eq(slots[step->slot].holding, step->want_holding,
                             "%s: step %zu: slot %d holding", bc->name, at, step->slot);
                break;
            case LEAVE:
                delivery_bulkhead_leave(bulkhead, &slots[step->slot]);
                cr_expect_null(slots[step->slot].target);
                break;
            case NEXT: {
                struct delivery_slot *got = delivery_bulkhead_next(bulkhead);
                int index = got != NULL ? (int)(got - slots) : -1;

                cr_expect_eq(index, step->slot, "%s: step %zu: next is %d, want %d", bc->name, at,
                             index, step->slot);
                if (got != NULL)
                    cr_expect(got->holding);
                break;
            }
            case END:
                break;
            }
        }
        cr_expect_eq(delivery_bulkhead_holding(bulkhead), bc->want_holding, "%s: holding %d",
                     bc->name, delivery_bulkhead_holding(bulkhead));
        cr_expect_eq(delivery_bulkhead_waiting(bulkhead), bc->want_waiting, "%s: waiting %d",
                     bc->name, delivery_bulkhead_waiting(bulkhead));
        cr_expect_eq(delivery_bulkhead_targets(bulkhead), bc->want_targets, "%s: targets %d",
                     bc->name, delivery_bulkhead_targets(bulkhead));
        delivery_bulkhead_free(bulkhead);
    }
}

Test(delivery_bulkhead, free_accepts_null)
{
    delivery_bulkhead_free(NULL);
}
