/*
 * job_batch.c - validation of a set of job documents (see job_batch.h).
 */
#include "job_batch.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

/* Appends {"index"?, "field", "message"} to errors (borrowed); false on allocation failure. */
static bool add_error(json_t *errors, long index, const char *field, const char *message)
{
    json_t *entry = json_pack("{s:s, s:s}", "field", field, "message", message);

    if (entry == NULL)
        return false;
    if (index >= 0 && json_object_set_new(entry, "index", json_integer(index)) != 0) {
        json_decref(entry);
        return false;
    }
    return json_array_append_new(errors, entry) == 0;
}

/*
 * Copies the errors of document index from doc_errors into errors, naming
 * their fields jobs[i] and keeping their other members (a schedule's
 * position). False on allocation failure.
 */
static bool add_document_errors(json_t *errors, size_t index, const json_t *doc_errors)
{
    const json_t *entry;
    size_t i;

    json_array_foreach(doc_errors, i, entry)
    {
        const char *field = json_string_value(json_object_get(entry, "field"));
        json_t *copy = json_deep_copy(entry);
        char path[256];

        if (field != NULL && field[0] != '\0')
            snprintf(path, sizeof(path), "jobs[%zu].%s", index, field);
        else
            snprintf(path, sizeof(path), "jobs[%zu]", index);
        if (copy == NULL)
            return false;
        if (json_object_set_new(copy, "field", json_string(path)) != 0 ||
            json_object_set_new(copy, "index", json_integer((json_int_t)index)) != 0) {
            json_decref(copy);
            return false;
        }
        /* json_array_append_new() releases copy when it fails. */
        if (json_array_append_new(errors, copy) != 0)
            return false;
    }
    return true;
}

/* Whether an earlier document of jobs, before index, is named name. */
static bool name_seen_before(const json_t *jobs, size_t index, const char *name)
{
    for (size_t i = 0; i < index; i++) {
        const char *other = json_string_value(json_object_get(json_array_get(jobs, i), "name"));

        if (other != NULL && strcmp(other, name) == 0)
            return true;
    }
    return false;
}

/* The API form of job without its read-only fields; NULL on allocation failure. */
static json_t *normalize(const struct job *job)
{
    json_t *doc = job_to_json(job, false);

    if (doc == NULL)
        return NULL;
    json_object_del(doc, "version");
    json_object_del(doc, "created_at");
    json_object_del(doc, "updated_at");
    return doc;
}

int job_batch_validate(const json_t *request, const struct job_limits *limits, json_t **normalized,
                       json_t *errors, size_t *invalid_count)
{
    const json_t *jobs = json_object_get(request, "jobs");
    json_t *result = NULL, *doc_errors = NULL, *value;
    const char *key;
    size_t errors_before = json_array_size(errors);
    int ret = CF_ERR_NOMEM;

    *normalized = NULL;
    *invalid_count = 0;
    if (!json_is_object(request))
        return add_error(errors, -1, "", "must be an object with a list of jobs") ? CF_ERR_INVALID
                                                                                  : CF_ERR_NOMEM;
    json_object_foreach((json_t *)request, key, value)
    {
        if (strcmp(key, "jobs") != 0 && !add_error(errors, -1, key, "unknown field"))
            return CF_ERR_NOMEM;
    }
    if (!json_is_array(jobs))
        return add_error(errors, -1, "jobs", "must be a list of job documents") ? CF_ERR_INVALID
                                                                                : CF_ERR_NOMEM;
    if (json_array_size(errors) > errors_before)
        return CF_ERR_INVALID;
    result = json_array();
    if (result == NULL)
        return CF_ERR_NOMEM;
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        const json_t *doc = json_array_get(jobs, i);
        const char *name = json_string_value(json_object_get(doc, "name"));
        struct job *job = NULL;
        bool bad;

        doc_errors = json_array();
        if (doc_errors == NULL)
            goto out;
        ret = job_from_json(doc, limits, false, &job, doc_errors);
        if (ret == CF_ERR_NOMEM)
            goto out;
        bad = ret != CF_OK;
        if (name != NULL && name_seen_before(jobs, i, name)) {
            bad = true;
            if (!add_error(doc_errors, -1, "name", "another job of the list has this name")) {
                job_free(job);
                ret = CF_ERR_NOMEM;
                goto out;
            }
        }
        if (bad) {
            (*invalid_count)++;
        } else if (json_array_append_new(result, normalize(job)) != 0) {
            job_free(job);
            ret = CF_ERR_NOMEM;
            goto out;
        }
        job_free(job);
        if (!add_document_errors(errors, i, doc_errors)) {
            ret = CF_ERR_NOMEM;
            goto out;
        }
        json_decref(doc_errors);
        doc_errors = NULL;
    }
    ret = *invalid_count > 0 ? CF_ERR_INVALID : CF_OK;
out:
    json_decref(doc_errors);
    if (ret != CF_OK) {
        json_decref(result);
        return ret;
    }
    *normalized = result;
    return CF_OK;
}
