/*
 * run.c - runs of a job: names of statuses and triggers, slot ids, and the
 * JSON form of DESIGN §6 "Run fields".
 */
#include "run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *const run_status_names[] = {
    [RUN_RUNNING] = "running", [RUN_SUCCEEDED] = "succeeded", [RUN_FAILED] = "failed",
    [RUN_FENCED] = "fenced",   [RUN_SKIPPED] = "skipped",     [RUN_MISSED] = "missed",
    [RUN_LOST] = "lost",
};

static const char *const run_trigger_names[] = {
    [RUN_TRIGGER_SCHEDULE] = "schedule",
    [RUN_TRIGGER_MANUAL] = "manual",
    [RUN_TRIGGER_CATCHUP] = "catchup",
    [RUN_TRIGGER_RETRY] = "retry",
};

#define RUN_COUNT(array) (sizeof(array) / sizeof((array)[0]))

void run_clear(struct run *run)
{
    if (run == NULL)
        return;
    free(run->job);
    free(run->reason);
    free(run->instance);
    free(run->error);
    free(run->response_excerpt);
    free(run->retry_of);
    free(run->attempt_log);
    memset(run, 0, sizeof(*run));
}

/* A copy of text (NULL stays NULL); *failed is set when the copy could not be made. */
static char *run_strdup(const char *text, bool *failed)
{
    char *copy;

    if (text == NULL)
        return NULL;
    copy = strdup(text);
    if (copy == NULL)
        *failed = true;
    return copy;
}

int run_copy(struct run *dst, const struct run *src)
{
    bool failed = false;

    *dst = *src;
    dst->job = run_strdup(src->job, &failed);
    dst->reason = run_strdup(src->reason, &failed);
    dst->instance = run_strdup(src->instance, &failed);
    dst->error = run_strdup(src->error, &failed);
    dst->response_excerpt = run_strdup(src->response_excerpt, &failed);
    dst->retry_of = run_strdup(src->retry_of, &failed);
    dst->attempt_log = NULL;
    if (src->attempt_log_count > 0) {
        size_t bytes = (size_t)src->attempt_log_count * sizeof(*src->attempt_log);

        dst->attempt_log = malloc(bytes);
        if (dst->attempt_log == NULL)
            failed = true;
        else
            memcpy(dst->attempt_log, src->attempt_log, bytes);
    }
    if (failed) {
        run_clear(dst);
        return CF_ERR_NOMEM;
    }
    return CF_OK;
}

int run_attempt_log_add(struct run_attempt **log, int *count, const struct run_attempt *entry)
{
    struct run_attempt *grown;

    if (*count >= RUN_ATTEMPT_LOG_MAX) {
        memmove(*log, *log + 1, (size_t)(RUN_ATTEMPT_LOG_MAX - 1) * sizeof(**log));
        (*log)[RUN_ATTEMPT_LOG_MAX - 1] = *entry;
        return CF_OK;
    }
    grown = realloc(*log, (size_t)(*count + 1) * sizeof(**log));
    if (grown == NULL)
        return CF_ERR_NOMEM;
    grown[*count] = *entry;
    *log = grown;
    (*count)++;
    return CF_OK;
}

void run_free(struct run *run)
{
    run_clear(run);
    free(run);
}

void run_slot_id(const char *job, int64_t scheduled_at_ms, char id[RUN_ID_MAX])
{
    snprintf(id, RUN_ID_MAX, "%s@%" PRId64, job, scheduled_at_ms);
}

const char *run_status_name(enum run_status status)
{
    if ((size_t)status >= RUN_COUNT(run_status_names))
        return "unknown";
    return run_status_names[status];
}

const char *run_trigger_name(enum run_trigger trigger)
{
    if ((size_t)trigger >= RUN_COUNT(run_trigger_names))
        return "unknown";
    return run_trigger_names[trigger];
}

int run_status_parse(const char *name)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < RUN_COUNT(run_status_names); i++) {
        if (strcmp(run_status_names[i], name) == 0)
            return (int)i;
    }
    return -1;
}

int run_trigger_parse(const char *name)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < RUN_COUNT(run_trigger_names); i++) {
        if (strcmp(run_trigger_names[i], name) == 0)
            return (int)i;
    }
    return -1;
}

bool run_status_final(enum run_status status)
{
    return status != RUN_RUNNING;
}

/* Position of a status in the merge order of run_merge_compare(). */
static int run_status_order(enum run_status status)
{
    static const int order[] = {
        /* lost is a peer's inference; missed with a token is the claimer's own word */
        [RUN_RUNNING] = 0, [RUN_SKIPPED] = 1, [RUN_LOST] = 2,      [RUN_MISSED] = 3,
        [RUN_FENCED] = 4,  [RUN_FAILED] = 5,  [RUN_SUCCEEDED] = 6,
    };

    return (size_t)status < RUN_COUNT(order) ? order[status] : -1;
}

/* Whether a status is the outcome of a delivery (the target was called). */
static bool run_status_delivered(enum run_status status)
{
    return status == RUN_SUCCEEDED || status == RUN_FAILED || status == RUN_FENCED;
}

static int run_compare_int(int64_t a, int64_t b)
{
    return (a > b) - (a < b);
}

/* NULL sorts before every string; strings compare as bytes, like SQLite's BINARY collation. */
static int run_compare_text(const char *a, const char *b)
{
    int c;

    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL);
    c = strcmp(a, b);
    return (c > 0) - (c < 0);
}

int run_merge_compare(const struct run *a, const struct run *b)
{
    const int steps[] = {
        run_compare_int(a->fencing_token > 0, b->fencing_token > 0),
        run_compare_int(run_status_delivered(a->status), run_status_delivered(b->status)),
        run_compare_int(a->fencing_token, b->fencing_token),
        run_compare_int(run_status_final(a->status), run_status_final(b->status)),
        run_compare_int(run_status_order(a->status), run_status_order(b->status)),
        run_compare_int(a->attempts, b->attempts),
        run_compare_int(a->finished_at_ms, b->finished_at_ms),
        run_compare_int(a->started_at_ms, b->started_at_ms),
        run_compare_text(a->instance, b->instance),
        run_compare_text(a->reason, b->reason),
        run_compare_text(a->error, b->error),
    };

    for (size_t i = 0; i < RUN_COUNT(steps); i++)
        if (steps[i] != 0)
            return steps[i];
    return 0;
}

/*
 * Length of the valid UTF-8 sequence at s (at most avail bytes), or 0 when
 * the bytes there are not one: a stray continuation byte, a truncated
 * sequence, an overlong form, a surrogate or a code point above U+10FFFF.
 */
static size_t run_utf8_len(const unsigned char *s, size_t avail)
{
    size_t len;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > avail)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * A JSON string of the first max bytes of text, or JSON null for NULL. A
 * webhook's response body is arbitrary bytes and JSON strings must be UTF-8,
 * so every invalid byte becomes U+FFFD, and a cut at max that would split a
 * character drops that character instead.
 * Returns a new reference, NULL on allocation failure.
 */
static json_t *run_json_text(const char *text, size_t max)
{
    static const char replacement[] = "\xef\xbf\xbd";
    const unsigned char *in = (const unsigned char *)text;
    size_t len, used = 0;
    char *buf;
    json_t *value;

    if (text == NULL)
        return json_null();
    len = strnlen(text, max);
    /* A cut inside a character moves back to where that character starts. */
    if (len == max && text[len] != '\0') {
        for (int back = 0; back < 3 && len > 0 && (in[len] & 0xc0) == 0x80; back++)
            len--;
    }
    /* Each input byte yields at most 3 output bytes (one U+FFFD). */
    buf = malloc(3 * len + 1);
    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        size_t n = run_utf8_len(in + i, len - i);

        if (n == 0) {
            memcpy(buf + used, replacement, 3);
            used += 3;
            i++;
        } else {
            memcpy(buf + used, in + i, n);
            used += n;
            i += n;
        }
    }
    value = json_stringn(buf, used);
    free(buf);
    return value;
}

/* An RFC 3339 string for wall time ms, or JSON null for 0 ("never"). */
static json_t *run_json_time(int64_t wall_ms)
{
    char buf[CF_TIME_LEN];

    if (wall_ms == 0)
        return json_null();
    return json_string(cf_format_time(wall_ms, buf));
}

/* Sets key in obj to value (stolen); clears *ok when value is NULL or the set fails. */
static void run_put(json_t *obj, const char *key, json_t *value, bool *ok)
{
    if (json_object_set_new(obj, key, value) != 0)
        *ok = false;
}

json_t *run_attempt_log_to_json(const struct run *run)
{
    json_t *list = json_array();

    for (int i = 0; list != NULL && i < run->attempt_log_count; i++) {
        const struct run_attempt *entry = &run->attempt_log[i];
        json_t *item = json_object();
        bool ok = item != NULL;

        if (ok) {
            run_put(item, "attempt", json_integer(entry->attempt), &ok);
            run_put(item, "started_at", run_json_time(entry->started_at_ms), &ok);
            run_put(item, "duration_ms", json_integer(entry->duration_ms), &ok);
            run_put(item, "http_status",
                    entry->http_status != 0 ? json_integer(entry->http_status) : json_null(), &ok);
            run_put(item, "error",
                    entry->error[0] != '\0' ? run_json_text(entry->error, RUN_ATTEMPT_ERROR_MAX)
                                            : json_null(),
                    &ok);
        }
        if (!ok || json_array_append_new(list, item) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

json_t *run_to_json(const struct run *run)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;

    if (!ok)
        return NULL;
    run_put(obj, "id", run_json_text(run->id, RUN_ID_MAX), &ok);
    run_put(obj, "job", run_json_text(run->job, SIZE_MAX), &ok);
    run_put(obj, "trigger", json_string(run_trigger_name(run->trigger)), &ok);
    run_put(obj, "scheduled_at", run_json_time(run->scheduled_at_ms), &ok);
    run_put(obj, "started_at", run_json_time(run->started_at_ms), &ok);
    run_put(obj, "finished_at", run_json_time(run->finished_at_ms), &ok);
    run_put(obj, "status", json_string(run_status_name(run->status)), &ok);
    run_put(obj, "reason", run_json_text(run->reason, SIZE_MAX), &ok);
    run_put(obj, "fencing_token", json_integer(run->fencing_token), &ok);
    run_put(obj, "instance", run_json_text(run->instance, SIZE_MAX), &ok);
    run_put(obj, "attempts", json_integer(run->attempts), &ok);
    run_put(obj, "http_status",
            run->http_status != 0 ? json_integer(run->http_status) : json_null(), &ok);
    run_put(obj, "duration_ms",
            run->finished_at_ms != 0 ? json_integer(run->duration_ms) : json_null(), &ok);
    run_put(obj, "error", run_json_text(run->error, SIZE_MAX), &ok);
    run_put(obj, "response_excerpt", run_json_text(run->response_excerpt, RUN_EXCERPT_MAX), &ok);
    run_put(obj, "lease_lost", json_boolean(run->lease_lost), &ok);
    run_put(obj, "lag_ms", run->has_lag ? json_integer(run->lag_ms) : json_null(), &ok);
    run_put(obj, "retry_of", run_json_text(run->retry_of, RUN_ID_MAX), &ok);
    run_put(obj, "attempt_log", run_attempt_log_to_json(run), &ok);
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Reads an optional string field into a new copy (NULL for null or absent). */
static bool read_text(const json_t *doc, const char *key, char **out, bool *nomem)
{
    const json_t *value = json_object_get(doc, key);

    *out = NULL;
    if (value == NULL || json_is_null(value))
        return true;
    if (!json_is_string(value))
        return false;
    *out = strdup(json_string_value(value));
    if (*out == NULL)
        *nomem = true;
    return *out != NULL;
}

/* Reads an optional RFC 3339 time (0 for null or absent). */
static bool read_time(const json_t *doc, const char *key, int64_t *out)
{
    const json_t *value = json_object_get(doc, key);

    *out = 0;
    if (value == NULL || json_is_null(value))
        return true;
    return json_is_string(value) && cf_parse_time(json_string_value(value), out) == CF_OK;
}

/* Reads an optional integer in [min, max] (0 for null or absent). */
static bool read_int(const json_t *doc, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const json_t *value = json_object_get(doc, key);

    *out = 0;
    if (value == NULL || json_is_null(value))
        return true;
    if (!json_is_integer(value))
        return false;
    *out = json_integer_value(value);
    return *out >= min && *out <= max;
}

/* Reads the optional lag_ms (absent or null: unknown). */
static bool read_lag(const json_t *doc, struct run *run)
{
    const json_t *value = json_object_get(doc, "lag_ms");

    if (value == NULL || json_is_null(value))
        return true;
    run->has_lag = true;
    return read_int(doc, "lag_ms", INT64_MIN / 2, INT64_MAX / 2, &run->lag_ms);
}

int run_attempt_log_from_json(const json_t *list, struct run *run)
{
    size_t size, first;
    bool nomem = false;

    if (list == NULL || json_is_null(list))
        return CF_OK;
    if (!json_is_array(list))
        return CF_ERR_INVALID;
    size = json_array_size(list);
    first = size > RUN_ATTEMPT_LOG_MAX ? size - RUN_ATTEMPT_LOG_MAX : 0;
    for (size_t i = first; i < size; i++) {
        const json_t *item = json_array_get(list, i);
        struct run_attempt entry = {0};
        int64_t attempt, http_status;
        char *error = NULL;

        if (!json_is_object(item) || !read_int(item, "attempt", 1, INT32_MAX, &attempt) ||
            attempt == 0 || !read_time(item, "started_at", &entry.started_at_ms) ||
            !read_int(item, "duration_ms", INT64_MIN / 2, INT64_MAX / 2, &entry.duration_ms) ||
            !read_int(item, "http_status", 0, 999, &http_status) ||
            !read_text(item, "error", &error, &nomem))
            goto out_fail;
        entry.attempt = (int)attempt;
        entry.http_status = (int)http_status;
        snprintf(entry.error, sizeof(entry.error), "%s", error != NULL ? error : "");
        free(error);
        if (run_attempt_log_add(&run->attempt_log, &run->attempt_log_count, &entry) != CF_OK) {
            nomem = true;
            goto out_fail;
        }
    }
    return CF_OK;

out_fail:
    free(run->attempt_log);
    run->attempt_log = NULL;
    run->attempt_log_count = 0;
    return nomem ? CF_ERR_NOMEM : CF_ERR_INVALID;
}

int run_from_json(const json_t *doc, struct run *run)
{
    const char *id = json_string_value(json_object_get(doc, "id"));
    const char *trigger = json_string_value(json_object_get(doc, "trigger"));
    const char *status = json_string_value(json_object_get(doc, "status"));
    int64_t token, attempts, http_status, duration;
    bool nomem = false, ok;

    memset(run, 0, sizeof(*run));
    if (!json_is_object(doc) || id == NULL || strlen(id) >= RUN_ID_MAX || trigger == NULL ||
        run_trigger_parse(trigger) < 0 || status == NULL || run_status_parse(status) < 0)
        return CF_ERR_INVALID;
    snprintf(run->id, sizeof(run->id), "%s", id);
    run->trigger = (enum run_trigger)run_trigger_parse(trigger);
    run->status = (enum run_status)run_status_parse(status);
    ok = read_text(doc, "job", &run->job, &nomem) && run->job != NULL &&
         read_text(doc, "instance", &run->instance, &nomem) && run->instance != NULL &&
         read_text(doc, "reason", &run->reason, &nomem) &&
         read_text(doc, "error", &run->error, &nomem) &&
         read_text(doc, "response_excerpt", &run->response_excerpt, &nomem) &&
         read_time(doc, "scheduled_at", &run->scheduled_at_ms) &&
         read_time(doc, "started_at", &run->started_at_ms) &&
         read_time(doc, "finished_at", &run->finished_at_ms) &&
         read_int(doc, "fencing_token", 0, ((int64_t)1 << 53) - 1, &token) &&
         read_int(doc, "attempts", 0, INT32_MAX, &attempts) &&
         read_int(doc, "http_status", 0, 999, &http_status) &&
         read_int(doc, "duration_ms", INT64_MIN / 2, INT64_MAX / 2, &duration);
    if (ok) {
        const json_t *lease_lost = json_object_get(doc, "lease_lost");

        ok = lease_lost == NULL || json_is_boolean(lease_lost);
        run->lease_lost = json_is_true(lease_lost);
    }
    if (ok)
        ok = read_text(doc, "retry_of", &run->retry_of, &nomem) &&
             (run->retry_of == NULL || strlen(run->retry_of) < RUN_ID_MAX) && read_lag(doc, run);
    if (ok) {
        int ret = run_attempt_log_from_json(json_object_get(doc, "attempt_log"), run);

        nomem = ret == CF_ERR_NOMEM;
        ok = ret == CF_OK;
    }
    if (!ok) {
        run_clear(run);
        memset(run, 0, sizeof(*run));
        return nomem ? CF_ERR_NOMEM : CF_ERR_INVALID;
    }
    run->fencing_token = token;
    run->attempts = (int)attempts;
    run->http_status = (int)http_status;
    run->duration_ms = duration;
    return CF_OK;
}
