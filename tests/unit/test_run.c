/*
 * test_run.c - runs: names, slot ids and the JSON form of DESIGN §6.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "run.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* A finished, delivered run with every field set; strings on the heap. */
static void fill_run(struct run *run)
{
    memset(run, 0, sizeof(*run));
    run_slot_id("nightly-report", 1795248000000LL, run->id);
    run->job = strdup("nightly-report");
    run->trigger = RUN_TRIGGER_SCHEDULE;
    run->scheduled_at_ms = 1795248000000LL; /* 2026-11-21T08:00:00.000Z */
    run->started_at_ms = 1795248000025LL;   /* 25 ms of stagger */
    run->finished_at_ms = 1795248001337LL;
    run->status = RUN_SUCCEEDED;
    run->fencing_token = 8589934593LL; /* 2^33 + 1 */
    run->instance = strdup("node-a");
    run->attempts = 2;
    run->http_status = 200;
    run->duration_ms = 1312;
    run->error = strdup("previous attempt: timeout");
    run->response_excerpt = strdup("{\"ok\": true}");
    run->lease_lost = true;
}

Test(run, json_has_every_field)
{
    static const char *const fields[] = {
        "id",          "job",         "trigger",     "scheduled_at",  "started_at",
        "finished_at", "status",      "reason",      "fencing_token", "instance",
        "attempts",    "http_status", "duration_ms", "error",         "response_excerpt",
        "lease_lost",  "lag_ms",      "retry_of",    "attempt_log",
    };
    struct run run;
    json_t *obj;
    const char *key;
    json_t *value;
    size_t i = 0;

    fill_run(&run);
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_eq(json_object_size(obj), COUNT(fields));
    json_object_foreach(obj, key, value)
    {
        cr_assert_lt(i, COUNT(fields));
        cr_expect_str_eq(key, fields[i], "member %zu is %s, not %s", i, key, fields[i]);
        i++;
    }

    cr_expect_str_eq(json_string_value(json_object_get(obj, "id")), "nightly-report@1795248000000");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "job")), "nightly-report");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "trigger")), "schedule");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "scheduled_at")),
                     "2026-11-21T08:00:00.000Z");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "started_at")),
                     "2026-11-21T08:00:00.025Z");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "finished_at")),
                     "2026-11-21T08:00:01.337Z");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "status")), "succeeded");
    cr_expect(json_is_null(json_object_get(obj, "reason")));
    cr_expect(json_is_integer(json_object_get(obj, "fencing_token")));
    cr_expect_eq(json_integer_value(json_object_get(obj, "fencing_token")), 8589934593LL);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "instance")), "node-a");
    cr_expect_eq(json_integer_value(json_object_get(obj, "attempts")), 2);
    cr_expect_eq(json_integer_value(json_object_get(obj, "http_status")), 200);
    cr_expect_eq(json_integer_value(json_object_get(obj, "duration_ms")), 1312);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "error")), "previous attempt: timeout");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "response_excerpt")), "{\"ok\": true}");
    cr_expect(json_is_true(json_object_get(obj, "lease_lost")));
    json_decref(obj);
    run_clear(&run);
}

Test(run, json_nulls_for_absent_values)
{
    struct run run;
    json_t *obj;

    /* A manual run still in flight: no slot, no end, no answer yet. */
    memset(&run, 0, sizeof(run));
    strcpy(run.id, "0123456789abcdef0123456789abcdef");
    run.job = strdup("nightly-report");
    run.trigger = RUN_TRIGGER_MANUAL;
    run.started_at_ms = 1795248000000LL;
    run.status = RUN_RUNNING;
    run.duration_ms = 99; /* ignored while not finished */
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "trigger")), "manual");
    cr_expect(json_is_null(json_object_get(obj, "scheduled_at")));
    cr_expect(json_is_string(json_object_get(obj, "started_at")));
    cr_expect(json_is_null(json_object_get(obj, "finished_at")));
    cr_expect_str_eq(json_string_value(json_object_get(obj, "status")), "running");
    cr_expect(json_is_null(json_object_get(obj, "reason")));
    cr_expect_eq(json_integer_value(json_object_get(obj, "fencing_token")), 0);
    cr_expect(json_is_integer(json_object_get(obj, "fencing_token")));
    cr_expect(json_is_null(json_object_get(obj, "instance")));
    cr_expect(json_is_null(json_object_get(obj, "http_status")));
    cr_expect(json_is_null(json_object_get(obj, "duration_ms")));
    cr_expect(json_is_null(json_object_get(obj, "error")));
    cr_expect(json_is_null(json_object_get(obj, "response_excerpt")));
    cr_expect(json_is_false(json_object_get(obj, "lease_lost")));
    json_decref(obj);
    run_clear(&run);
}

Test(run, json_missed_run_has_reason)
{
    struct run run;
    json_t *obj;

    memset(&run, 0, sizeof(run));
    run_slot_id("hourly", 1795244400000LL, run.id);
    run.job = strdup("hourly");
    run.trigger = RUN_TRIGGER_CATCHUP;
    run.scheduled_at_ms = 1795244400000LL;
    run.finished_at_ms = 1795248000000LL;
    run.status = RUN_MISSED;
    run.reason = strdup("no quorum");
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "trigger")), "catchup");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "status")), "missed");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "reason")), "no quorum");
    cr_expect(json_is_null(json_object_get(obj, "started_at")));
    cr_expect_eq(json_integer_value(json_object_get(obj, "duration_ms")), 0);
    json_decref(obj);
    run_clear(&run);
}

Test(run, excerpt_made_valid_utf8)
{
    struct run run;
    json_t *obj;

    memset(&run, 0, sizeof(run));
    run.job = strdup("j");
    /* Binary bytes, an overlong '/', a surrogate, then valid "é" and "€". */
    run.response_excerpt = strdup("a\xff\xfe"
                                  "b\xc0\xaf"
                                  "c\xed\xa0\x80"
                                  "d\xc3\xa9\xe2\x82\xac");
    run.error = strdup("cut \xe2\x82");
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "response_excerpt")),
                     "a\xef\xbf\xbd\xef\xbf\xbd"
                     "b\xef\xbf\xbd\xef\xbf\xbd"
                     "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                     "d\xc3\xa9\xe2\x82\xac");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "error")),
                     "cut \xef\xbf\xbd\xef\xbf\xbd");
    json_decref(obj);
    run_clear(&run);
}

Test(run, excerpt_capped_on_a_character_boundary)
{
    struct run run;
    json_t *obj;
    char *text = malloc(RUN_EXCERPT_MAX + 16);
    const char *excerpt;

    cr_assert_not_null(text);
    /* RUN_EXCERPT_MAX - 1 ASCII bytes, then "é" straddling the limit. */
    memset(text, 'x', RUN_EXCERPT_MAX - 1);
    memcpy(text + RUN_EXCERPT_MAX - 1, "\xc3\xa9tail", 7);
    memset(&run, 0, sizeof(run));
    run.job = strdup("j");
    run.response_excerpt = text;
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    excerpt = json_string_value(json_object_get(obj, "response_excerpt"));
    cr_expect_eq(strlen(excerpt), RUN_EXCERPT_MAX - 1);
    cr_expect_eq(strspn(excerpt, "x"), RUN_EXCERPT_MAX - 1);
    json_decref(obj);

    /* Exactly RUN_EXCERPT_MAX bytes are kept whole. */
    memset(text, 'y', RUN_EXCERPT_MAX + 8);
    text[RUN_EXCERPT_MAX + 8] = '\0';
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_eq(json_string_length(json_object_get(obj, "response_excerpt")), RUN_EXCERPT_MAX);
    json_decref(obj);
    run_clear(&run);
}

Test(run, slot_id)
{
    char id[RUN_ID_MAX];

    run_slot_id("nightly-report", 1795248000000LL, id);
    cr_expect_str_eq(id, "nightly-report@1795248000000");
    run_slot_id("a", 0, id);
    cr_expect_str_eq(id, "a@0");
    /* The longest name and a 13-digit instant fit. */
    run_slot_id("abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0", 9999999999999LL,
                id);
    cr_expect_eq(strlen(id), 63 + 1 + 13);
}

struct name_case {
    int value;
    char name[16];
};

static const struct name_case status_cases[] = {
    {RUN_RUNNING, "running"}, {RUN_SUCCEEDED, "succeeded"}, {RUN_FAILED, "failed"},
    {RUN_FENCED, "fenced"},   {RUN_SKIPPED, "skipped"},     {RUN_MISSED, "missed"},
    {RUN_LOST, "lost"},
};

ParameterizedTestParameters(run, status_names)
{
    return cr_make_param_array(struct name_case, (struct name_case *)status_cases,
                               COUNT(status_cases));
}

ParameterizedTest(const struct name_case *c, run, status_names)
{
    cr_expect_str_eq(run_status_name((enum run_status)c->value), c->name);
    cr_expect_eq(run_status_parse(c->name), c->value);
    cr_expect_eq(run_status_final((enum run_status)c->value), c->value != RUN_RUNNING);
}

static const struct name_case trigger_cases[] = {
    {RUN_TRIGGER_SCHEDULE, "schedule"},
    {RUN_TRIGGER_MANUAL, "manual"},
    {RUN_TRIGGER_CATCHUP, "catchup"},
    {RUN_TRIGGER_RETRY, "retry"},
};

ParameterizedTestParameters(run, trigger_names)
{
    return cr_make_param_array(struct name_case, (struct name_case *)trigger_cases,
                               COUNT(trigger_cases));
}

ParameterizedTest(const struct name_case *c, run, trigger_names)
{
    cr_expect_str_eq(run_trigger_name((enum run_trigger)c->value), c->name);
    cr_expect_eq(run_trigger_parse(c->name), c->value);
}

Test(run, unknown_names)
{
    cr_expect_eq(run_status_parse("done"), -1);
    cr_expect_eq(run_status_parse("Running"), -1);
    cr_expect_eq(run_status_parse(""), -1);
    cr_expect_eq(run_status_parse(NULL), -1);
    cr_expect_eq(run_trigger_parse("cron"), -1);
    cr_expect_eq(run_trigger_parse(NULL), -1);
    cr_expect_str_eq(run_status_name((enum run_status)99), "unknown");
    cr_expect_str_eq(run_trigger_name((enum run_trigger)99), "unknown");
}

Test(run, clear_and_free)
{
    struct run *run = calloc(1, sizeof(*run));

    cr_assert_not_null(run);
    fill_run(run);
    run_clear(run);
    cr_expect_null(run->job);
    cr_expect_null(run->instance);
    cr_expect_eq(run->id[0], '\0');
    run_clear(run); /* twice is harmless */
    fill_run(run);
    run_free(run);
    run_free(NULL);
    run_clear(NULL);
}

/* A peer's history record reads back into the very run that was written. */
Test(run, json_round_trip)
{
    struct run run, back;
    json_t *obj;

    fill_run(&run);
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_assert_eq(run_from_json(obj, &back), CF_OK);
    cr_expect_str_eq(back.id, run.id);
    cr_expect_str_eq(back.job, run.job);
    cr_expect_eq(back.trigger, run.trigger);
    cr_expect_eq(back.scheduled_at_ms, run.scheduled_at_ms);
    cr_expect_eq(back.started_at_ms, run.started_at_ms);
    cr_expect_eq(back.finished_at_ms, run.finished_at_ms);
    cr_expect_eq(back.status, run.status);
    cr_expect_null(back.reason);
    cr_expect_eq(back.fencing_token, run.fencing_token);
    cr_expect_str_eq(back.instance, run.instance);
    cr_expect_eq(back.attempts, run.attempts);
    cr_expect_eq(back.http_status, run.http_status);
    cr_expect_eq(back.duration_ms, run.duration_ms);
    cr_expect_str_eq(back.error, run.error);
    cr_expect_str_eq(back.response_excerpt, run.response_excerpt);
    cr_expect_eq(back.lease_lost, run.lease_lost);
    json_decref(obj);
    run_clear(&run);
    run_clear(&back);
}

/* The forensics fields (DESIGN §6): lag_ms, retry_of and the attempt log survive a peer's feed. */
Test(run, json_round_trip_forensics)
{
    struct run run, back;
    struct run_attempt first = {.attempt = 1,
                                .started_at_ms = 1795248000030LL,
                                .duration_ms = 12,
                                .http_status = 503,
                                .error = "http status 503"};
    struct run_attempt second = {
        .attempt = 2, .started_at_ms = 1795248001000LL, .duration_ms = 337, .http_status = 200};
    json_t *obj, *log;

    fill_run(&run);
    run.trigger = RUN_TRIGGER_RETRY;
    run.retry_of = strdup("nightly-report@1795247000000");
    run.has_lag = true;
    run.lag_ms = 31;
    cr_assert_eq(run_attempt_log_add(&run.attempt_log, &run.attempt_log_count, &first), CF_OK);
    cr_assert_eq(run_attempt_log_add(&run.attempt_log, &run.attempt_log_count, &second), CF_OK);
    obj = run_to_json(&run);
    cr_assert_not_null(obj);
    cr_expect_eq(json_integer_value(json_object_get(obj, "lag_ms")), 31);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "trigger")), "retry");
    log = json_object_get(obj, "attempt_log");
    cr_assert_eq(json_array_size(log), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(log, 0), "error")),
                     "http status 503");
    cr_expect(json_is_null(json_object_get(json_array_get(log, 1), "error")));
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(log, 1), "started_at")),
                     "2026-11-21T08:00:01.000Z");
    cr_assert_eq(run_from_json(obj, &back), CF_OK);
    cr_expect(back.has_lag);
    cr_expect_eq(back.lag_ms, 31);
    cr_expect_str_eq(back.retry_of, run.retry_of);
    cr_assert_eq(back.attempt_log_count, 2);
    cr_expect_eq(back.attempt_log[0].attempt, 1);
    cr_expect_eq(back.attempt_log[0].http_status, 503);
    cr_expect_eq(back.attempt_log[0].duration_ms, 12);
    cr_expect_eq(back.attempt_log[0].started_at_ms, first.started_at_ms);
    cr_expect_str_eq(back.attempt_log[0].error, "http status 503");
    cr_expect_str_eq(back.attempt_log[1].error, "");
    json_decref(obj);
    run_clear(&run);
    run_clear(&back);
}

/* The log keeps the last RUN_ATTEMPT_LOG_MAX attempts, oldest first; a copy is deep. */
Test(run, attempt_log_is_capped)
{
    struct run run = {0}, copy;

    for (int i = 1; i <= RUN_ATTEMPT_LOG_MAX + 5; i++) {
        struct run_attempt entry = {.attempt = i, .http_status = 500};

        cr_assert_eq(run_attempt_log_add(&run.attempt_log, &run.attempt_log_count, &entry), CF_OK);
    }
    cr_assert_eq(run.attempt_log_count, RUN_ATTEMPT_LOG_MAX);
    cr_expect_eq(run.attempt_log[0].attempt, 6);
    cr_expect_eq(run.attempt_log[RUN_ATTEMPT_LOG_MAX - 1].attempt, RUN_ATTEMPT_LOG_MAX + 5);
    run.job = strdup("job");
    run.instance = strdup("node-a");
    cr_assert_eq(run_copy(&copy, &run), CF_OK);
    cr_expect_neq(copy.attempt_log, run.attempt_log);
    cr_expect_eq(copy.attempt_log[0].attempt, 6);
    run_clear(&run);
    run_clear(&copy);
}

/* A peer's record with a malformed attempt log is refused as a whole. */
Test(run, json_refuses_bad_attempt_log)
{
    struct run run, back;
    json_t *obj;

    fill_run(&run);
    obj = run_to_json(&run);
    json_object_set_new(obj, "attempt_log", json_pack("[{s:i}]", "attempt", 0));
    cr_expect_eq(run_from_json(obj, &back), CF_ERR_INVALID);
    json_object_set_new(obj, "attempt_log", json_string("many"));
    cr_expect_eq(run_from_json(obj, &back), CF_ERR_INVALID);
    json_object_set_new(obj, "lag_ms", json_string("late"));
    json_object_set_new(obj, "attempt_log", json_array());
    cr_expect_eq(run_from_json(obj, &back), CF_ERR_INVALID);
    json_decref(obj);
    run_clear(&run);
}

/* A missed slot: no times but its slot, no token, nulls everywhere. */
Test(run, json_round_trip_unstarted)
{
    struct run run = {0}, back;
    json_t *obj;

    run_slot_id("a", 60000, run.id);
    run.job = "a";
    run.scheduled_at_ms = 60000;
    run.status = RUN_MISSED;
    run.reason = "no quorum";
    run.instance = "i";
    obj = run_to_json(&run);
    cr_assert_eq(run_from_json(obj, &back), CF_OK);
    cr_expect_eq(back.status, RUN_MISSED);
    cr_expect_str_eq(back.reason, "no quorum");
    cr_expect_eq(back.started_at_ms, 0);
    cr_expect_eq(back.finished_at_ms, 0);
    cr_expect_eq(back.fencing_token, 0);
    cr_expect_eq(back.http_status, 0);
    json_decref(obj);
    run_clear(&back);
}

/* Records a peer could send that must be refused, leaving the run empty. */
static const char *const bad_records[] = {
    "[]",
    "{}",
    "{\"id\":\"a@1\",\"trigger\":\"schedule\",\"status\":\"succeeded\",\"instance\":\"i\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"later\",\"status\":\"succeeded\",\"instance\":"
    "\"i\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"done\",\"instance\":"
    "\"i\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\","
    "\"instance\":\"i\",\"scheduled_at\":\"yesterday\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\","
    "\"instance\":\"i\",\"fencing_token\":-1}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\","
    "\"instance\":\"i\",\"fencing_token\":9007199254740993}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\","
    "\"instance\":\"i\",\"attempts\":\"2\"}",
    "{\"id\":\"a@1\",\"job\":\"a\",\"trigger\":\"schedule\",\"status\":\"succeeded\","
    "\"instance\":\"i\",\"lease_lost\":1}",
    "{\"id\":\"a@1\",\"job\":7,\"trigger\":\"schedule\",\"status\":\"succeeded\",\"instance\":"
    "\"i\"}",
};

Test(run, json_refuses_bad_records)
{
    for (size_t i = 0; i < COUNT(bad_records); i++) {
        json_t *doc = json_loads(bad_records[i], 0, NULL);
        struct run back;

        cr_assert_not_null(doc, "case %zu does not parse", i);
        cr_expect_eq(run_from_json(doc, &back), CF_ERR_INVALID, "case %zu: %s", i, bad_records[i]);
        cr_expect_null(back.job, "case %zu left a job", i);
        cr_expect_null(back.instance, "case %zu left an instance", i);
        json_decref(doc);
    }
}
