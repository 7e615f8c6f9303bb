/*
 * test_job.c - job validation, defaults, serialisation and merge patch.
 *
 * Most cases are data: tests/data/jobs/invalid/ holds one JSON file per
 * invalid job ({"field", "message", "job", optional "allow" and
 * "keep_meta"}), naming the field path that must be reported and a part of
 * its message; tests/data/jobs/valid/ holds valid jobs with a subset of
 * their expected API form ({"job", "expect", optional "allow" and
 * "keep_meta"}).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cron.h"
#include "job.h"
#include "netallow.h"

#ifndef CF_TEST_DATA
#error "CF_TEST_DATA must name the tests/data directory"
#endif

static const char minimal_job[] = "{\"name\": \"nightly-report\", \"schedule\": \"0 8 * * *\","
                                  " \"webhook\": {\"url\": \"https://hooks.example.com/r\"}}";

/* Parses JSON text or fails the test. New reference. */
static json_t *load(const char *text)
{
    json_error_t err;
    json_t *doc = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    cr_assert_not_null(doc, "bad test json: %s: %s", err.text, text);
    return doc;
}

/* Validates doc and requires success; returns the job. */
static struct job *parse_ok(const json_t *doc, const struct netallow *allow, bool keep_meta)
{
    struct job_limits limits = {.webhook_allow = allow};
    struct job *job = NULL;
    json_t *errors = json_array();
    int ret = job_from_json(doc, &limits, keep_meta, &job, errors);
    char *dump = json_dumps(errors, 0);

    cr_assert_eq(ret, CF_OK, "job_from_json returned %d with errors %s", ret, dump);
    cr_assert_not_null(job);
    cr_assert_eq(json_array_size(errors), 0);
    free(dump);
    json_decref(errors);
    return job;
}

/* Validates doc, requires CF_ERR_INVALID and returns the errors array (new reference). */
static json_t *parse_invalid(const json_t *doc, const struct netallow *allow, bool keep_meta)
{
    struct job_limits limits = {.webhook_allow = allow};
    struct job *job = (struct job *)1; /* must come back NULL */
    json_t *errors = json_array();
    int ret = job_from_json(doc, &limits, keep_meta, &job, errors);

    cr_assert_eq(ret, CF_ERR_INVALID, "job_from_json returned %d", ret);
    cr_assert_null(job);
    cr_assert_gt(json_array_size(errors), 0);
    return errors;
}

/* Whether errors holds an entry for field whose message contains part. */
static bool has_error(const json_t *errors, const char *field, const char *part)
{
    size_t i;
    json_t *entry;

    json_array_foreach(errors, i, entry)
    {
        const char *f = json_string_value(json_object_get(entry, "field"));
        const char *m = json_string_value(json_object_get(entry, "message"));

        if (f != NULL && m != NULL && strcmp(f, field) == 0 && strstr(m, part) != NULL)
            return true;
    }
    return false;
}

/* Every entry is {"field": string, "message": string}, lowercase start, no full stop. */
static void expect_error_shape(const json_t *errors, const char *where)
{
    size_t i;
    json_t *entry;

    json_array_foreach(errors, i, entry)
    {
        const char *m = json_string_value(json_object_get(entry, "message"));

        cr_expect(json_is_string(json_object_get(entry, "field")), "%s: entry %zu field", where, i);
        cr_assert_not_null(m, "%s: entry %zu has no message", where, i);
        cr_expect(m[0] != '\0' && !(m[0] >= 'A' && m[0] <= 'Z'), "%s: message \"%s\"", where, m);
        cr_expect(m[strlen(m) - 1] != '.', "%s: message \"%s\" ends with a full stop", where, m);
        cr_expect_eq(json_object_size(entry), 2, "%s: entry %zu has extra members", where, i);
    }
}

/* ---------------------------------------------------------------------------
 * Data-driven cases
 */

struct job_case {
    char path[PATH_MAX];
};

static void free_cases(struct criterion_test_params *params)
{
    cr_free(params->params);
}

static int json_file_filter(const struct dirent *entry)
{
    size_t len = strlen(entry->d_name);

    return len > 5 && strcmp(entry->d_name + len - 5, ".json") == 0;
}

/*
 * Lists the .json files of dir, sorted. With shared, into Criterion's shared
 * memory (parameters of a test live there); else with calloc().
 */
static size_t list_cases(const char *dir, bool shared, struct job_case **out)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, json_file_filter, alphasort);
    struct job_case *cases;

    *out = NULL;
    if (n <= 0)
        return 0;
    cases = shared ? cr_calloc((size_t)n, sizeof(*cases)) : calloc((size_t)n, sizeof(*cases));
    cr_assert_not_null(cases);
    for (int i = 0; i < n; i++) {
        snprintf(cases[i].path, sizeof(cases[i].path), "%s/%s", dir, names[i]->d_name);
        free(names[i]);
    }
    free(names);
    *out = cases;
    return (size_t)n;
}

/* Loads a case file and the allow list it names (NULL for none). */
static json_t *load_case(const char *path, struct netallow **allow, bool *keep_meta)
{
    json_error_t err;
    json_t *doc = json_load_file(path, JSON_ALLOW_NUL, &err);
    const char *list;
    char errbuf[256];

    cr_assert_not_null(doc, "%s: %s", path, err.text);
    list = json_string_value(json_object_get(doc, "allow"));
    *allow = NULL;
    if (list != NULL)
        cr_assert_eq(netallow_parse(list, allow, errbuf, sizeof(errbuf)), CF_OK, "%s: %s", path,
                     errbuf);
    *keep_meta = json_is_true(json_object_get(doc, "keep_meta"));
    cr_assert_not_null(json_object_get(doc, "job"), "%s: no \"job\"", path);
    return doc;
}

ParameterizedTestParameters(job, invalid)
{
    struct job_case *cases;
    size_t n = list_cases(CF_TEST_DATA "/jobs/invalid", true, &cases);

    return cr_make_param_array(struct job_case, cases, n, free_cases);
}

ParameterizedTest(struct job_case *c, job, invalid)
{
    struct netallow *allow = NULL;
    bool keep_meta;
    json_t *doc = load_case(c->path, &allow, &keep_meta);
    const char *field = json_string_value(json_object_get(doc, "field"));
    const char *message = json_string_value(json_object_get(doc, "message"));
    json_t *errors;
    char *dump;

    cr_assert_not_null(field, "%s: no \"field\"", c->path);
    cr_assert_not_null(message, "%s: no \"message\"", c->path);
    errors = parse_invalid(json_object_get(doc, "job"), allow, keep_meta);
    dump = json_dumps(errors, JSON_ENSURE_ASCII);
    cr_expect(has_error(errors, field, message), "%s: no error {%s: ...%s...} in %s", c->path,
              field, message, dump);
    /* Each case breaks one thing: anything more is a spurious error. */
    cr_expect_eq(json_array_size(errors), 1, "%s: expected one error, got %s", c->path, dump);
    expect_error_shape(errors, c->path);
    free(dump);
    json_decref(errors);
    json_decref(doc);
    netallow_free(allow);
}

Test(job, invalid_case_count)
{
    struct job_case *cases;
    size_t n = list_cases(CF_TEST_DATA "/jobs/invalid", false, &cases);

    cr_expect_geq(n, 40, "only %zu invalid job cases in " CF_TEST_DATA "/jobs/invalid", n);
    free(cases);
}

/*
 * Whether every member of expect is in actual with an equal value; objects
 * compare member by member, so expect may name only what the case is about.
 */
static bool json_subset(const json_t *expect, const json_t *actual, char *where, size_t len)
{
    const char *key;
    json_t *value;

    if (!json_is_object(expect))
        return json_equal(expect, actual);
    if (!json_is_object(actual))
        return false;
    json_object_foreach((json_t *)expect, key, value)
    {
        if (!json_subset(value, json_object_get(actual, key), where, len)) {
            if (where[0] == '\0')
                snprintf(where, len, "%s", key);
            return false;
        }
    }
    return true;
}

ParameterizedTestParameters(job, valid)
{
    struct job_case *cases;
    size_t n = list_cases(CF_TEST_DATA "/jobs/valid", true, &cases);

    return cr_make_param_array(struct job_case, cases, n, free_cases);
}

ParameterizedTest(struct job_case *c, job, valid)
{
    struct netallow *allow = NULL;
    bool keep_meta;
    json_t *doc = load_case(c->path, &allow, &keep_meta);
    struct job *job = parse_ok(json_object_get(doc, "job"), allow, keep_meta);
    json_t *api = job_to_json(job, false);
    json_t *storage = job_to_json(job, true);
    char where[256] = "";
    char *dump = json_dumps(api, JSON_ENSURE_ASCII);

    cr_assert_not_null(api);
    cr_assert_not_null(storage);
    cr_expect(json_subset(json_object_get(doc, "expect"), api, where, sizeof(where)),
              "%s: member %s differs in %s", c->path, where, dump);
    cr_expect_null(json_object_get(api, "signing_secret"), "%s: secret in the api form", c->path);

    /* Storage form reads back to the same job; so does a copy. */
    struct job *again = parse_ok(storage, allow, true);
    json_t *storage_again = job_to_json(again, true);
    struct job *copy = job_copy(job);
    json_t *storage_copy = job_to_json(copy, true);

    cr_expect(json_equal(storage, storage_again), "%s: storage round trip differs", c->path);
    cr_expect(json_equal(storage, storage_copy), "%s: copy differs", c->path);

    free(dump);
    json_decref(storage_copy);
    job_free(copy);
    json_decref(storage_again);
    job_free(again);
    json_decref(storage);
    json_decref(api);
    job_free(job);
    json_decref(doc);
    netallow_free(allow);
}

Test(job, valid_case_count)
{
    struct job_case *cases;
    size_t n = list_cases(CF_TEST_DATA "/jobs/valid", false, &cases);

    cr_expect_geq(n, 20, "only %zu valid job cases", n);
    free(cases);
}

/* ---------------------------------------------------------------------------
 * Defaults, round trip and serialised forms
 */

Test(job, minimal_gets_every_default)
{
    json_t *doc = load(minimal_job);
    struct job *job = parse_ok(doc, NULL, false);

    cr_expect_str_eq(job->name, "nightly-report");
    cr_expect_str_eq(job->description, "");
    cr_expect_str_eq(job->schedule, "0 8 * * *");
    cr_expect_str_eq(job->timezone, "UTC");
    cr_expect_not(job->paused);
    cr_expect_str_eq(job->webhook.url, "https://hooks.example.com/r");
    cr_expect_str_eq(job->webhook.method, "POST");
    cr_expect_eq(job->webhook.header_count, 0);
    cr_expect(json_is_null(job->webhook.body));
    cr_expect_not(job->webhook.raw_body);
    cr_expect_null(job->webhook.content_type);
    cr_expect_eq(job->webhook.timeout_ms, 30000);
    cr_expect_null(job->signing_secret);
    cr_expect_eq(job->overlap, JOB_OVERLAP_FORBID);
    cr_expect_eq(job->starting_deadline_ms, 60000);
    cr_expect_eq(job->catchup, JOB_CATCHUP_NONE);
    cr_expect_eq(job->retry.attempts, 3);
    cr_expect_eq(job->retry.backoff_ms, 1000);
    cr_expect_eq(job->retry.max_backoff_ms, 60000);
    cr_expect_eq(job->lease_ms, 30000);
    cr_expect_eq(job->version, 0);
    cr_expect_eq(job->created_at_ms, 0);
    cr_expect_eq(job->updated_at_ms, 0);
    job_free(job);
    json_decref(doc);
}

static const char full_job[] =
    "{\"name\": \"billing.sync_2\", \"description\": \"sync invoices \\u00e9\","
    " \"schedule\": \"0 */15 8-18 * * 1-5\", \"timezone\": \"Europe/Berlin\", \"paused\": true,"
    " \"webhook\": {\"url\": \"https://hooks.example.com:8443/sync?x=1\", \"method\": \"put\","
    "  \"headers\": {\"Authorization\": \"Bearer abc\", \"X-Tenant\": \"42\"},"
    "  \"body\": {\"full\": true, \"tables\": [\"a\", \"b\"], \"n\": 1.5, \"none\": null},"
    "  \"raw_body\": false, \"timeout_ms\": 5000},"
    " \"signing_secret\": \"0123456789abcdef0123\", \"overlap\": \"queue\","
    " \"starting_deadline_ms\": 120000, \"catchup\": \"latest\","
    " \"retry\": {\"attempts\": 5, \"backoff_ms\": 250, \"max_backoff_ms\": 10000},"
    " \"lease_ms\": 45000, \"version\": 8589934593,"
    " \"created_at\": \"2026-11-21T08:00:00.000Z\", \"updated_at\": \"2026-11-22T09:15:30.125Z\"}";

Test(job, full_job_round_trips)
{
    json_t *doc = load(full_job);
    struct job *job = parse_ok(doc, NULL, true);
    json_t *storage = job_to_json(job, true);
    struct job *again = parse_ok(storage, NULL, true);
    json_t *storage_again = job_to_json(again, true);

    cr_expect_str_eq(job->webhook.method, "PUT");
    cr_expect_eq(job->webhook.header_count, 2);
    cr_expect_str_eq(job->webhook.headers[0].name, "Authorization");
    cr_expect_str_eq(job->webhook.headers[1].value, "42");
    cr_expect_str_eq(job->signing_secret, "0123456789abcdef0123");
    cr_expect_eq(job->overlap, JOB_OVERLAP_QUEUE);
    cr_expect_eq(job->catchup, JOB_CATCHUP_LATEST);
    cr_expect_eq(job->version, 8589934593LL);
    cr_expect_eq(job->created_at_ms, 1795248000000LL);
    cr_expect_eq(job->updated_at_ms, 1795338930125LL);

    /* Every member of the definition comes back the same. */
    cr_expect_str_eq(again->name, job->name);
    cr_expect_str_eq(again->description, job->description);
    cr_expect_str_eq(again->schedule, job->schedule);
    cr_expect_str_eq(again->timezone, job->timezone);
    cr_expect_eq(again->paused, job->paused);
    cr_expect_str_eq(again->webhook.url, job->webhook.url);
    cr_expect_str_eq(again->webhook.method, job->webhook.method);
    cr_expect_eq(again->webhook.header_count, job->webhook.header_count);
    for (size_t i = 0; i < job->webhook.header_count; i++) {
        cr_expect_str_eq(again->webhook.headers[i].name, job->webhook.headers[i].name);
        cr_expect_str_eq(again->webhook.headers[i].value, job->webhook.headers[i].value);
    }
    cr_expect(json_equal(again->webhook.body, job->webhook.body));
    cr_expect_eq(again->webhook.raw_body, job->webhook.raw_body);
    cr_expect_null(again->webhook.content_type);
    cr_expect_eq(again->webhook.timeout_ms, job->webhook.timeout_ms);
    cr_expect_str_eq(again->signing_secret, job->signing_secret);
    cr_expect_eq(again->overlap, job->overlap);
    cr_expect_eq(again->starting_deadline_ms, job->starting_deadline_ms);
    cr_expect_eq(again->catchup, job->catchup);
    cr_expect_eq(again->retry.attempts, job->retry.attempts);
    cr_expect_eq(again->retry.backoff_ms, job->retry.backoff_ms);
    cr_expect_eq(again->retry.max_backoff_ms, job->retry.max_backoff_ms);
    cr_expect_eq(again->lease_ms, job->lease_ms);
    cr_expect_eq(again->version, job->version);
    cr_expect_eq(again->created_at_ms, job->created_at_ms);
    cr_expect_eq(again->updated_at_ms, job->updated_at_ms);
    cr_expect(json_equal(storage, storage_again));

    json_decref(storage_again);
    job_free(again);
    json_decref(storage);
    job_free(job);
    json_decref(doc);
}

/* The member names of obj in order, comma-separated, into buf. */
static const char *member_names(const json_t *obj, char *buf, size_t len)
{
    const char *key;
    json_t *value;
    size_t used = 0;

    buf[0] = '\0';
    json_object_foreach((json_t *)obj, key, value)
    {
        used += (size_t)snprintf(buf + used, len - used, "%s%s", used > 0 ? "," : "", key);
        cr_assert_lt(used, len);
    }
    return buf;
}

Test(job, api_form_members_in_order)
{
    json_t *doc = load(full_job);
    struct job *job = parse_ok(doc, NULL, true);
    json_t *api = job_to_json(job, false);
    json_t *storage = job_to_json(job, true);
    char buf[512];

    cr_expect_str_eq(
        member_names(api, buf, sizeof(buf)),
        "name,description,schedule,timezone,paused,webhook,signing_secret_set,"
        "overlap,starting_deadline_ms,catchup,retry,lease_ms,notify,version,created_at,"
        "updated_at");
    cr_expect_str_eq(member_names(json_object_get(api, "webhook"), buf, sizeof(buf)),
                     "url,method,headers,body,raw_body,timeout_ms");
    cr_expect_str_eq(member_names(json_object_get(api, "retry"), buf, sizeof(buf)),
                     "attempts,backoff_ms,max_backoff_ms");
    cr_expect(json_is_true(json_object_get(api, "signing_secret_set")));
    cr_expect_null(json_object_get(api, "signing_secret"));
    cr_expect_str_eq(json_string_value(json_object_get(api, "created_at")),
                     "2026-11-21T08:00:00.000Z");
    cr_expect_eq(json_integer_value(json_object_get(api, "version")), 8589934593LL);

    cr_expect_str_eq(json_string_value(json_object_get(storage, "signing_secret")),
                     "0123456789abcdef0123");
    cr_expect(json_is_true(json_object_get(storage, "signing_secret_set")));

    json_decref(storage);
    json_decref(api);
    job_free(job);
    json_decref(doc);
}

Test(job, raw_body_form_has_content_type)
{
    json_t *doc = load("{\"name\": \"raw\", \"schedule\": \"@hourly\", \"webhook\": {\"url\":"
                       " \"http://10.0.0.5/x\", \"raw_body\": true, \"body\": \"a=1\","
                       " \"content_type\": \"application/x-www-form-urlencoded\"}}");
    struct job *job = parse_ok(doc, NULL, false);
    json_t *api = job_to_json(job, false);
    char buf[256];

    cr_expect_str_eq(member_names(json_object_get(api, "webhook"), buf, sizeof(buf)),
                     "url,method,headers,body,raw_body,content_type,timeout_ms");
    cr_expect_str_eq(job->webhook.content_type, "application/x-www-form-urlencoded");
    cr_expect_str_eq(json_string_value(job->webhook.body), "a=1");
    json_decref(api);
    job_free(job);
    json_decref(doc);
}

Test(job, get_result_can_be_put_back)
{
    json_t *doc = load(full_job);
    struct job *job = parse_ok(doc, NULL, true);
    json_t *api = job_to_json(job, false);
    struct job *again = parse_ok(api, NULL, false);

    /* Read-only members are ignored; without signing_secret the default applies. */
    cr_expect_str_eq(again->name, job->name);
    cr_expect_null(again->signing_secret);
    cr_expect_eq(again->version, 0);
    cr_expect_eq(again->created_at_ms, 0);
    job_free(again);
    json_decref(api);
    job_free(job);
    json_decref(doc);
}

Test(job, meta_only_with_keep_meta)
{
    json_t *doc = load(full_job);
    struct job *job = parse_ok(doc, NULL, false);

    cr_expect_eq(job->version, 0);
    cr_expect_eq(job->created_at_ms, 0);
    cr_expect_eq(job->updated_at_ms, 0);
    job_free(job);
    json_decref(doc);
}

Test(job, copy_is_deep)
{
    json_t *doc = load(full_job);
    struct job *job = parse_ok(doc, NULL, true);
    struct job *copy = job_copy(job);
    json_t *a, *b;

    cr_assert_not_null(copy);
    cr_expect_neq(copy->name, job->name);
    cr_expect_neq(copy->webhook.headers, job->webhook.headers);
    cr_expect_neq(copy->webhook.body, job->webhook.body);
    a = job_to_json(job, true);
    job_free(job);
    b = job_to_json(copy, true);
    cr_expect(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    job_free(copy);
    json_decref(doc);
    cr_expect_null(job_copy(NULL));
    job_free(NULL);
}

/* ---------------------------------------------------------------------------
 * Error reporting
 */

Test(job, collects_every_error)
{
    json_t *doc = load("{\"name\": \"Bad Name\", \"owner\": 1, \"timezone\": \"Nowhere/Else\","
                       " \"webhook\": {\"url\": \"ftp://x/\", \"colour\": \"red\","
                       "  \"headers\": {\"Host\": \"x\", \"X-Ok\": \"1\", \"X-Bad\": \"a\\nb\"},"
                       "  \"timeout_ms\": 0},"
                       " \"retry\": {\"attempts\": 0, \"backoff_ms\": \"1s\"},"
                       " \"lease_ms\": 1.5, \"overlap\": \"sometimes\"}");
    json_t *errors = parse_invalid(doc, NULL, false);
    static const char *const fields[] = {
        "owner",
        "name",
        "schedule",
        "timezone",
        "webhook.colour",
        "webhook.url",
        "webhook.headers.Host",
        "webhook.headers.X-Bad",
        "webhook.timeout_ms",
        "retry.attempts",
        "retry.backoff_ms",
        "lease_ms",
        "overlap",
    };
    size_t count = sizeof(fields) / sizeof(fields[0]);
    char *dump = json_dumps(errors, 0);

    for (size_t i = 0; i < count; i++)
        cr_expect(has_error(errors, fields[i], ""), "no error for %s in %s", fields[i], dump);
    cr_expect_eq(json_array_size(errors), count, "%s", dump);
    expect_error_shape(errors, "collects_every_error");
    free(dump);
    json_decref(errors);
    json_decref(doc);
}

Test(job, schedule_error_names_parser_position)
{
    static const char expr[] = "61 * * * *";
    struct cron_schedule *schedule = NULL;
    struct cron_error err = {0};
    char expected[256];
    json_t *doc = load(minimal_job);
    json_t *errors;

    cr_assert_eq(cron_parse(expr, &schedule, &err), CF_ERR_INVALID);
    snprintf(expected, sizeof(expected), "invalid schedule at position %d: %s", err.position,
             err.message);
    json_object_set_new(doc, "schedule", json_string(expr));
    errors = parse_invalid(doc, NULL, false);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                     expected);
    json_decref(errors);
    json_decref(doc);
}

Test(job, appends_to_existing_errors)
{
    json_t *doc = load(minimal_job);
    json_t *errors = json_pack("[{s:s, s:s}]", "field", "x", "message", "earlier");
    struct job *job = NULL;

    cr_assert_eq(job_from_json(doc, NULL, false, &job, errors), CF_OK);
    cr_expect_eq(json_array_size(errors), 1);
    job_free(job);
    job = NULL;
    json_object_set_new(doc, "lease_ms", json_integer(1));
    cr_assert_eq(job_from_json(doc, NULL, false, &job, errors), CF_ERR_INVALID);
    cr_expect_null(job);
    cr_expect_eq(json_array_size(errors), 2);
    cr_expect(has_error(errors, "lease_ms", "between"));
    json_decref(errors);
    json_decref(doc);
}

Test(job, null_document_is_invalid)
{
    json_t *errors = parse_invalid(NULL, NULL, false);

    cr_expect(has_error(errors, "", "must be a json object"));
    json_decref(errors);
}

/* ---------------------------------------------------------------------------
 * Small helpers
 */

/*
 * Parameters are copied into another process, so they hold text, not
 * pointers into this one.
 */
struct name_case {
    char name[80];
    bool valid;
};

static const struct name_case name_cases[] = {
    {"a", true},
    {"0", true},
    {"nightly-report", true},
    {"billing.sync_2", true},
    {"a-._", true},
    {"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0", true},   /* 63 */
    {"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01", false}, /* 64 */
    {"", false},
    {"-a", false},
    {".a", false},
    {"_a", false},
    {"A", false},
    {"aB", false},
    {"a b", false},
    {"a/b", false},
    {"a@b", false},
    {"caf\xc3\xa9", false},
};

ParameterizedTestParameters(job, name_valid)
{
    return cr_make_param_array(struct name_case, (struct name_case *)name_cases,
                               sizeof(name_cases) / sizeof(name_cases[0]));
}

ParameterizedTest(const struct name_case *c, job, name_valid)
{
    cr_expect_eq(job_name_valid(c->name), c->valid, "job_name_valid(\"%s\")", c->name);
}

Test(job, name_valid_null)
{
    cr_expect_not(job_name_valid(NULL));
}

Test(job, enum_names)
{
    cr_expect_str_eq(job_overlap_name(JOB_OVERLAP_FORBID), "forbid");
    cr_expect_str_eq(job_overlap_name(JOB_OVERLAP_ALLOW), "allow");
    cr_expect_str_eq(job_overlap_name(JOB_OVERLAP_QUEUE), "queue");
    cr_expect_str_eq(job_catchup_name(JOB_CATCHUP_NONE), "none");
    cr_expect_str_eq(job_catchup_name(JOB_CATCHUP_LATEST), "latest");
}

/* ---------------------------------------------------------------------------
 * JSON merge patch: every example of RFC 7386 Appendix A
 */

struct merge_case {
    char target[64];
    char patch[64];
    char result[64];
};

static const struct merge_case rfc7386_cases[] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
};

ParameterizedTestParameters(job, merge_patch_rfc7386)
{
    return cr_make_param_array(struct merge_case, (struct merge_case *)rfc7386_cases,
                               sizeof(rfc7386_cases) / sizeof(rfc7386_cases[0]));
}

ParameterizedTest(const struct merge_case *c, job, merge_patch_rfc7386)
{
    json_t *target = load(c->target);
    json_t *patch = load(c->patch);
    json_t *expected = load(c->result);
    json_t *target_before = json_deep_copy(target);
    json_t *patch_before = json_deep_copy(patch);
    json_t *result = job_merge_patch(target, patch);
    char *dump = json_dumps(result, JSON_ENCODE_ANY);

    cr_assert_not_null(result);
    cr_expect(json_equal(result, expected), "%s + %s gave %s, not %s", c->target, c->patch, dump,
              c->result);
    cr_expect(json_equal(target, target_before), "target changed");
    cr_expect(json_equal(patch, patch_before), "patch changed");
    free(dump);
    json_decref(result);
    json_decref(patch_before);
    json_decref(target_before);
    json_decref(expected);
    json_decref(patch);
    json_decref(target);
}

Test(job, merge_patch_on_a_job)
{
    json_t *doc = load(full_job);
    json_t *patch = load("{\"description\": null, \"paused\": false,"
                         " \"webhook\": {\"method\": \"GET\", \"headers\": {\"X-Tenant\": null,"
                         " \"X-New\": \"1\"}, \"body\": null}, \"retry\": {\"attempts\": 2}}");
    json_t *merged = job_merge_patch(doc, patch);
    struct job *job = parse_ok(merged, NULL, true);
    char buf[512];

    cr_expect_str_eq(job->description, "");
    cr_expect_not(job->paused);
    cr_expect_str_eq(job->webhook.method, "GET");
    cr_expect(json_is_null(job->webhook.body));
    cr_expect_eq(job->retry.attempts, 2);
    cr_expect_eq(job->retry.backoff_ms, 250);
    cr_expect_str_eq(member_names(json_object_get(json_object_get(merged, "webhook"), "headers"),
                                  buf, sizeof(buf)),
                     "Authorization,X-New");
    /* Members keep the target's order. */
    cr_expect_str_eq(member_names(merged, buf, sizeof(buf)),
                     "name,schedule,timezone,paused,webhook,signing_secret,overlap,"
                     "starting_deadline_ms,catchup,retry,lease_ms,version,created_at,updated_at");
    job_free(job);
    json_decref(merged);
    json_decref(patch);
    json_decref(doc);
}
