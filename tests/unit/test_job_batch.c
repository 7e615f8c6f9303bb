/*
 * test_job_batch.c - validation of a list of job documents at once (the
 * POST /api/v1/jobs/validate behind `cronfence apply`).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "job_batch.h"

static json_t *load(const char *text)
{
    json_error_t err;
    json_t *doc = json_loads(text, 0, &err);

    cr_assert_not_null(doc, "bad test json: %s: %s", err.text, text);
    return doc;
}

/* Whether errors holds an entry with this field (and index, unless index < 0). */
static bool has_error(const json_t *errors, const char *field, long index)
{
    const json_t *entry;
    size_t i;

    json_array_foreach(errors, i, entry)
    {
        const json_t *at = json_object_get(entry, "index");

        if (strcmp(json_string_value(json_object_get(entry, "field")), field) != 0)
            continue;
        if (index < 0 ? at == NULL : json_integer_value(at) == index)
            return true;
    }
    return false;
}

Test(job_batch, valid_jobs_come_back_normalized_in_order)
{
    json_t *request = load("{\"jobs\": ["
                           "{\"name\": \"b\", \"schedule\": \"@hourly\","
                           " \"webhook\": {\"url\": \"http://127.0.0.1:9/b\"},"
                           " \"signing_secret\": \"0123456789abcdef\"},"
                           "{\"name\": \"a\", \"schedule\": \"0 8 * * *\","
                           " \"webhook\": {\"url\": \"http://127.0.0.1:9/a\"}, \"version\": 7}]}");
    json_t *errors = json_array(), *jobs = NULL, *first;
    size_t invalid = 99;

    cr_assert_eq(job_batch_validate(request, NULL, &jobs, errors, &invalid), CF_OK);
    cr_expect_eq(invalid, 0);
    cr_expect_eq(json_array_size(errors), 0);
    cr_assert_eq(json_array_size(jobs), 2);
    first = json_array_get(jobs, 0);
    cr_expect_str_eq(json_string_value(json_object_get(first, "name")), "b");
    cr_expect_str_eq(json_string_value(json_object_get(first, "timezone")), "UTC");
    cr_expect(json_is_true(json_object_get(first, "signing_secret_set")));
    cr_expect_null(json_object_get(first, "signing_secret"), "the secret is never echoed");
    cr_expect_null(json_object_get(json_array_get(jobs, 1), "version"));
    cr_expect_null(json_object_get(json_array_get(jobs, 1), "created_at"));
    json_decref(jobs);
    json_decref(errors);
    json_decref(request);
}

Test(job_batch, errors_name_the_document_and_field)
{
    json_t *request = load("{\"jobs\": ["
                           "{\"name\": \"ok\", \"schedule\": \"@hourly\","
                           " \"webhook\": {\"url\": \"http://127.0.0.1:9/ok\"}},"
                           "{\"name\": \"bad\", \"schedule\": \"61 * * * *\","
                           " \"webhook\": {\"url\": \"ftp://x\"}},"
                           "{\"name\": \"ok\", \"schedule\": \"@daily\","
                           " \"webhook\": {\"url\": \"http://127.0.0.1:9/ok\"}},"
                           "42]}");
    json_t *errors = json_array(), *jobs = NULL;
    size_t invalid = 0;
    char *dump;

    cr_assert_eq(job_batch_validate(request, NULL, &jobs, errors, &invalid), CF_ERR_INVALID);
    dump = json_dumps(errors, 0);
    cr_expect_null(jobs);
    cr_expect_eq(invalid, 3, "%zu invalid: %s", invalid, dump);
    cr_expect(has_error(errors, "jobs[1].schedule", 1), "%s", dump);
    cr_expect(has_error(errors, "jobs[1].webhook.url", 1), "%s", dump);
    cr_expect(has_error(errors, "jobs[2].name", 2), "duplicate name: %s", dump);
    cr_expect(has_error(errors, "jobs[3]", 3), "not an object: %s", dump);
    cr_expect(!strstr(dump, "jobs[0]"), "the valid document has no error: %s", dump);
    free(dump);
    json_decref(errors);
    json_decref(request);
}

Test(job_batch, the_request_itself_must_be_a_jobs_list)
{
    static const char *const requests[] = {"[]", "{}", "{\"jobs\": {}}",
                                           "{\"jobs\": [], \"force\": true}"};
    static const char *const fields[] = {"", "jobs", "jobs", "force"};

    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        json_t *request = load(requests[i]), *errors = json_array(), *jobs = NULL;
        size_t invalid = 0;

        cr_expect_eq(job_batch_validate(request, NULL, &jobs, errors, &invalid), CF_ERR_INVALID,
                     "%s accepted", requests[i]);
        cr_expect(has_error(errors, fields[i], -1), "%s: no error on \"%s\"", requests[i],
                  fields[i]);
        cr_expect_null(jobs);
        json_decref(errors);
        json_decref(request);
    }
}

Test(job_batch, an_empty_list_is_valid)
{
    json_t *request = load("{\"jobs\": []}"), *errors = json_array(), *jobs = NULL;
    size_t invalid = 0;

    cr_assert_eq(job_batch_validate(request, NULL, &jobs, errors, &invalid), CF_OK);
    cr_expect_eq(json_array_size(jobs), 0);
    json_decref(jobs);
    json_decref(errors);
    json_decref(request);
}
