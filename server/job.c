/*
 * job.c - job definitions: validation from JSON with every problem reported,
 * defaults, serialisation in API and storage form, deep copies and RFC 7386
 * JSON merge patch.
 *
 * Validation never stops at the first problem: a client fixing a job should
 * see everything that is wrong with it in one answer. Each object level is
 * first checked for unknown members, then each known member is read; a
 * member that is wrong is reported and left at its default, so that checks
 * depending on it (content_type needs raw_body) can be skipped rather than
 * produce a second, misleading error.
 */
#include "job.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "cron.h"
#include "tz.h"

/* Defaults and limits of DESIGN §3 and §6; durations in milliseconds. */
#define JOB_DEFAULT_TIMEZONE "UTC"
#define JOB_DEFAULT_METHOD "POST"
#define JOB_DEFAULT_CONTENT_TYPE "application/octet-stream"
#define JOB_TIMEOUT_MS_DEFAULT 30000
#define JOB_TIMEOUT_MS_MIN 1
#define JOB_TIMEOUT_MS_MAX 3600000
#define JOB_DEADLINE_MS_DEFAULT 60000
#define JOB_DEADLINE_MS_MIN 1000
#define JOB_DEADLINE_MS_MAX 86400000
#define JOB_LEASE_MS_DEFAULT 30000
#define JOB_LEASE_MS_MIN 1000
#define JOB_LEASE_MS_MAX 3600000
#define JOB_ATTEMPTS_DEFAULT 3
#define JOB_ATTEMPTS_MIN 1
#define JOB_ATTEMPTS_MAX 20
#define JOB_BACKOFF_MS_DEFAULT 1000
#define JOB_BACKOFF_MS_MAX 3600000
#define JOB_MAX_BACKOFF_MS_DEFAULT 60000
#define JOB_MAX_BACKOFF_MS_MAX 86400000
#define JOB_HEADERS_MAX 50
#define JOB_HEADER_VALUE_MAX 8192
/* Longest webhook URL, in bytes (what browsers and proxies reliably pass on). */
#define JOB_URL_MAX 2048
#define JOB_SECRET_MIN 16
#define JOB_SECRET_MAX 256
/* Latest time accepted for created_at/updated_at: 9999-12-31T23:59:59.999Z. */
#define JOB_TIME_MAX_MS 253402300799999LL

/* Members of each object level, read-only ones included (accepted, ignored). */
static const char *const job_root_fields[] = {
    "name",
    "description",
    "schedule",
    "timezone",
    "paused",
    "webhook",
    "signing_secret",
    "overlap",
    "starting_deadline_ms",
    "catchup",
    "retry",
    "lease_ms",
    "notify",
    "version",
    "created_at",
    "updated_at",
    "next_fire_at",
    "schedule_description",
    "last_run",
    "signing_secret_set",
    "consecutive_failures",
    "last_error",
    NULL,
};
/* Members only storage holds (job_from_json() with keep_meta). */
static const char *const job_stored_fields[] = {
    "previous_signing_secret",
    "signing_secret_changed_at",
    NULL,
};
static const char *const job_webhook_fields[] = {
    "url", "method", "headers", "body", "raw_body", "content_type", "timeout_ms", NULL,
};
static const char *const job_retry_fields[] = {"attempts", "backoff_ms", "max_backoff_ms", NULL};
static const char *const job_notify_fields[] = {"url", "on", "format", NULL};

static const char *const job_methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};

/* Headers cronfence sets itself (DESIGN §5) or that belong to the transport. */
static const char *const job_reserved_headers[] = {
    "Content-Length",
    "Host",
    "Transfer-Encoding",
    "Connection",
    "Fencing-Token",
    "Idempotency-Key",
    "User-Agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    NULL,
};
#define JOB_RESERVED_HEADER_PREFIX "Cronfence-"

static const char *const job_overlap_names[] = {
    [JOB_OVERLAP_FORBID] = "forbid",
    [JOB_OVERLAP_ALLOW] = "allow",
    [JOB_OVERLAP_QUEUE] = "queue",
};
static const char *const job_catchup_names[] = {
    [JOB_CATCHUP_NONE] = "none",
    [JOB_CATCHUP_LATEST] = "latest",
};

#define JOB_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* ---------------------------------------------------------------------------
 * Error collection
 */

/* State of one validation: where problems go, and whether memory ran out. */
struct job_check {
    json_t *errors; /* borrowed array of {"field", "message"} */
    bool nomem;     /* an allocation failed: the result is CF_ERR_NOMEM */
};

/*
 * A JSON string of text. Messages may quote user input cut at a byte limit,
 * which can split a UTF-8 character, and JSON strings must be UTF-8; then
 * every non-ASCII byte is replaced by '?'. Returns a new reference, NULL on
 * allocation failure.
 */
static json_t *job_error_text(char *text)
{
    json_t *value = json_string(text);

    if (value != NULL)
        return value;
    for (char *p = text; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    }
    return json_string(text);
}

/* Appends {"field": field, "message": printf(fmt, ...)} to the errors. */
__attribute__((format(printf, 3, 0))) static void
job_verror(struct job_check *check, const char *field, const char *fmt, va_list ap)
{
    char message[512];
    char *field_copy = cf_strdup(field);
    json_t *entry = NULL;
    json_t *field_json = NULL;
    json_t *message_json = NULL;

    if (field_copy == NULL)
        goto nomem;
    vsnprintf(message, sizeof(message), fmt, ap);
    field_json = job_error_text(field_copy);
    message_json = job_error_text(message);
    entry = json_object();
    if (field_json == NULL || message_json == NULL || entry == NULL)
        goto nomem;
    if (json_object_set(entry, "field", field_json) != 0 ||
        json_object_set(entry, "message", message_json) != 0 ||
        json_array_append(check->errors, entry) != 0)
        goto nomem;
    goto out;
nomem:
    check->nomem = true;
out:
    free(field_copy);
    json_decref(field_json);
    json_decref(message_json);
    json_decref(entry);
}

__attribute__((format(printf, 3, 4))) static void job_error(struct job_check *check,
                                                            const char *field, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    job_verror(check, field, fmt, ap);
    va_end(ap);
}

/*
 * Like job_error() for the member key of the object at parent: the field is
 * "parent.key", or "key" at the top level (parent "").
 */
__attribute__((format(printf, 4, 5))) static void
job_error_at(struct job_check *check, const char *parent, const char *key, const char *fmt, ...)
{
    char *field = NULL;
    va_list ap;

    if (asprintf(&field, "%s%s%s", parent, parent[0] != '\0' ? "." : "", key) < 0) {
        check->nomem = true;
        return;
    }
    va_start(ap, fmt);
    job_verror(check, field, fmt, ap);
    va_end(ap);
    free(field);
}

/* ---------------------------------------------------------------------------
 * Member readers. Each takes a member's value (NULL when absent), reports
 * what is wrong with it under field, and returns whether *out was set.
 */

/* Whether a JSON string holds a NUL byte (jansson allows them with JSON_ALLOW_NUL). */
static bool job_string_has_nul(const json_t *value)
{
    return strlen(json_string_value(value)) != json_string_length(value);
}

/*
 * Reads a string of min_len to max_len bytes without NUL into a new copy in
 * *out (freeing what *out held). An absent member is reported as missing
 * only when required.
 */
static bool job_read_string(struct job_check *check, const json_t *value, const char *field,
                            bool required, size_t min_len, size_t max_len, char **out)
{
    char *copy;

    if (value == NULL) {
        if (required)
            job_error(check, field, "is required");
        return false;
    }
    if (!json_is_string(value)) {
        job_error(check, field, "must be a string");
        return false;
    }
    if (job_string_has_nul(value)) {
        job_error(check, field, "must not contain nul bytes");
        return false;
    }
    if (json_string_length(value) < min_len || json_string_length(value) > max_len) {
        if (min_len == 0)
            job_error(check, field, "must be at most %zu bytes", max_len);
        else
            job_error(check, field, "must be between %zu and %zu bytes", min_len, max_len);
        return false;
    }
    copy = cf_strdup(json_string_value(value));
    if (copy == NULL) {
        check->nomem = true;
        return false;
    }
    free(*out);
    *out = copy;
    return true;
}

/* Reads a JSON integer (not a real, not a string) in min..max into *out. */
static bool job_read_int(struct job_check *check, const json_t *value, const char *field,
                         int64_t min, int64_t max, int64_t *out)
{
    json_int_t number;

    if (value == NULL)
        return false;
    if (!json_is_integer(value)) {
        job_error(check, field, "must be an integer");
        return false;
    }
    number = json_integer_value(value);
    if (number < min || number > max) {
        job_error(check, field, "must be between %lld and %lld", (long long)min, (long long)max);
        return false;
    }
    *out = number;
    return true;
}

static bool job_read_bool(struct job_check *check, const json_t *value, const char *field,
                          bool *out)
{
    if (value == NULL)
        return false;
    if (!json_is_boolean(value)) {
        job_error(check, field, "must be true or false");
        return false;
    }
    *out = json_is_true(value);
    return true;
}

/*
 * Reads a string that must be one of names[0..count), two or three names
 * matched exactly, into *out as its index.
 */
static bool job_read_enum(struct job_check *check, const json_t *value, const char *field,
                          const char *const *names, size_t count, int *out)
{
    assert(count == 2 || count == 3);
    if (value == NULL)
        return false;
    if (json_is_string(value) && !job_string_has_nul(value)) {
        for (size_t i = 0; i < count; i++) {
            if (strcmp(names[i], json_string_value(value)) == 0) {
                *out = (int)i;
                return true;
            }
        }
    }
    if (count == 2)
        job_error(check, field, "must be \"%s\" or \"%s\"", names[0], names[1]);
    else
        job_error(check, field, "must be \"%s\", \"%s\" or \"%s\"", names[0], names[1], names[2]);
    return false;
}

/* Whether key (key_len bytes) is one of the member names in known (NULL-terminated). */
static bool job_known_field(const char *const *known, const char *key, size_t key_len)
{
    if (strlen(key) != key_len)
        return false; /* a NUL inside the key: it cannot be one of ours */
    for (size_t i = 0; known[i] != NULL; i++) {
        if (strcmp(known[i], key) == 0)
            return true;
    }
    return false;
}

/* Reports every member of obj (an object at path parent) that is not in known. */
static void job_check_unknown(struct job_check *check, const json_t *obj, const char *parent,
                              const char *const *known, const char *const *also_known)
{
    /* Iteration does not modify obj; jansson's iterator API just is not const. */
    json_t *mutable_obj = (json_t *)obj;

    for (void *iter = json_object_iter(mutable_obj); iter != NULL;
         iter = json_object_iter_next(mutable_obj, iter)) {
        const char *key = json_object_iter_key(iter);
        size_t key_len = json_object_iter_key_len(iter);

        if (job_known_field(known, key, key_len) ||
            (also_known != NULL && job_known_field(also_known, key, key_len)))
            continue;
        if (strlen(key) != key_len)
            job_error_at(check, parent, key, "unknown field (its name holds a nul byte)");
        else
            job_error_at(check, parent, key, "unknown field");
    }
}

/* ---------------------------------------------------------------------------
 * Validation of single members
 */

/* Whether c is one of [a-z0-9], spelled out: islower() depends on the locale. */
static bool job_is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool job_name_valid(const char *name)
{
    size_t len;

    if (name == NULL)
        return false;
    len = strlen(name);
    if (len == 0 || len > JOB_NAME_MAX || !job_is_lower_alnum(name[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!job_is_lower_alnum(name[i]) && name[i] != '.' && name[i] != '_' && name[i] != '-')
            return false;
    }
    return true;
}

/*
 * Whether a calendar can ever match, such as "0 0 30 2 *" cannot. Asked from
 * a fixed instant so that validation stays a pure function of its input;
 * cron_next looks 8 years ahead, which covers every leap-day schedule.
 */
static bool job_schedule_fires(const struct cron_schedule *schedule)
{
    const int64_t year_2000_ms = 946684800000;
    int64_t next;

    return cron_next(schedule, tz_get("UTC"), year_2000_ms, &next) == CF_OK;
}

static void job_read_schedule(struct job_check *check, const json_t *value, struct job *job)
{
    struct cron_schedule *schedule = NULL;
    struct cron_error err = {0};
    int ret;

    if (!job_read_string(check, value, "schedule", true, 0, SIZE_MAX, &job->schedule))
        return;
    ret = cron_parse(job->schedule, &schedule, &err);
    if (ret == CF_ERR_NOMEM) {
        check->nomem = true;
    } else if (ret != CF_OK) {
        err.message[sizeof(err.message) - 1] = '\0';
        job_error(check, "schedule", "invalid schedule at position %d: %s", err.position,
                  err.message);
    } else if (!job_schedule_fires(schedule)) {
        job_error(check, "schedule", "schedule never fires (no such date)");
    }
    cron_free(schedule);
}

static void job_read_timezone(struct job_check *check, const json_t *value, struct job *job)
{
    if (value == NULL)
        return;
    if (!job_read_string(check, value, "timezone", false, 0, SIZE_MAX, &job->timezone))
        return;
    if (tz_get(job->timezone) == NULL)
        job_error(check, "timezone", "unknown time zone \"%.100s\"", job->timezone);
}

/* Writes msg lowercased into buf (len bytes): curl's messages start with a capital. */
static const char *job_lowercase(const char *msg, char *buf, size_t len)
{
    size_t i = 0;

    for (; msg[i] != '\0' && i + 1 < len; i++)
        buf[i] = (char)tolower((unsigned char)msg[i]);
    buf[i] = '\0';
    return buf;
}

/*
 * Checks webhook.url with libcurl's URL parser, the one that will send the
 * request, so that what is validated is what will be reached: http or https
 * only, a host, and a host the allow list accepts. curl also normalises
 * numeric hosts ("http://2852039166/" is 169.254.169.254).
 */
static void job_check_url(struct job_check *check, const char *field, const char *text,
                          const struct netallow *allow)
{
    CURLU *url = NULL;
    char *scheme = NULL;
    char *host = NULL;
    char buf[160];
    CURLUcode rc;
    size_t host_len;

    url = curl_url();
    if (url == NULL) {
        check->nomem = true;
        goto out;
    }
    rc = curl_url_set(url, CURLUPART_URL, text, 0);
    if (rc == CURLUE_OUT_OF_MEMORY) {
        check->nomem = true;
        goto out;
    }
    if (rc == CURLUE_UNSUPPORTED_SCHEME || rc == CURLUE_BAD_SCHEME ||
        (rc != CURLUE_OK && strstr(text, "://") == NULL)) {
        job_error(check, field, "must be an http or https url");
        goto out;
    }
    if (rc != CURLUE_OK) {
        job_error(check, field, "invalid url: %s",
                  job_lowercase(curl_url_strerror(rc), buf, sizeof(buf)));
        goto out;
    }
    rc = curl_url_get(url, CURLUPART_SCHEME, &scheme, 0);
    if (rc == CURLUE_OUT_OF_MEMORY) {
        check->nomem = true;
        goto out;
    }
    if (rc != CURLUE_OK || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        job_error(check, field, "must be an http or https url");
        goto out;
    }
    if (strstr(text, ":///") != NULL) {
        /* curl reads "http:///x" as host x; a URL without an authority names no host. */
        job_error(check, field, "must name a host");
        goto out;
    }
    rc = curl_url_get(url, CURLUPART_HOST, &host, 0);
    if (rc == CURLUE_OUT_OF_MEMORY) {
        check->nomem = true;
        goto out;
    }
    host_len = rc == CURLUE_OK ? strlen(host) : 0;
    if (host_len == 0 || (host_len == 2 && strcmp(host, "[]") == 0)) {
        job_error(check, field, "must name a host");
        goto out;
    }
    if (!netallow_host_allowed(allow, host))
        job_error(check, field, "host %.255s is not allowed", host);
out:
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(url);
}

static void job_read_method(struct job_check *check, const json_t *value, struct job *job)
{
    static const char field[] = "webhook.method";

    if (value == NULL)
        return;
    if (json_is_string(value) && !job_string_has_nul(value)) {
        for (size_t i = 0; job_methods[i] != NULL; i++) {
            if (strcasecmp(job_methods[i], json_string_value(value)) == 0) {
                char *copy = cf_strdup(job_methods[i]);

                if (copy == NULL) {
                    check->nomem = true;
                    return;
                }
                free(job->webhook.method);
                job->webhook.method = copy;
                return;
            }
        }
    }
    job_error(check, field, "must be one of GET, POST, PUT, PATCH, DELETE");
}

/* Whether c is an RFC 7230 tchar: ASCII letters and digits spelled out, isalnum() follows the
 * locale. */
static bool job_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Whether name (name_len bytes, NUL bytes included) is an RFC 7230 token. */
static bool job_is_token(const char *name, size_t name_len)
{
    if (name_len == 0)
        return false;
    for (size_t i = 0; i < name_len; i++) {
        if (!job_is_tchar((unsigned char)name[i]))
            return false;
    }
    return true;
}

/*
 * Why a header name may not be set by a job, or NULL when it may. The
 * request's Content-Type is application/json, or webhook.content_type for
 * a raw body: never a header of the job's.
 */
static const char *job_header_refusal(const char *name, bool raw_body)
{
    for (size_t i = 0; job_reserved_headers[i] != NULL; i++) {
        if (strcasecmp(job_reserved_headers[i], name) == 0)
            return "header is reserved: cronfence sets it";
    }
    if (strncasecmp(name, JOB_RESERVED_HEADER_PREFIX, strlen(JOB_RESERVED_HEADER_PREFIX)) == 0)
        return "header names starting with cronfence- are reserved";
    if (strcasecmp(name, "Content-Type") == 0) {
        if (raw_body)
            return "header is reserved: set webhook.content_type for a raw body";
        return "header is reserved: the body is application/json unless raw_body is true";
    }
    return NULL;
}

/*
 * Whether a header value (len bytes) holds a control character other than
 * tab: CR, LF and NUL are the bytes of header injection, and the others
 * (VT, FF, DEL...) are not field content either (RFC 9110 5.5).
 */
static bool job_has_control(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

static void job_read_headers(struct job_check *check, const json_t *value, struct job *job)
{
    static const char parent[] = "webhook.headers";
    json_t *headers = (json_t *)value; /* iterated, never modified */
    size_t count;

    if (value == NULL)
        return;
    if (!json_is_object(value)) {
        job_error(check, parent, "must be an object of header names to string values");
        return;
    }
    count = json_object_size(value);
    if (count > JOB_HEADERS_MAX) {
        job_error(check, parent, "must have at most %d entries", JOB_HEADERS_MAX);
        return;
    }
    if (count == 0)
        return;
    job->webhook.headers = calloc(count, sizeof(*job->webhook.headers));
    if (job->webhook.headers == NULL) {
        check->nomem = true;
        return;
    }

    for (void *iter = json_object_iter(headers); iter != NULL;
         iter = json_object_iter_next(headers, iter)) {
        const char *name = json_object_iter_key(iter);
        size_t name_len = json_object_iter_key_len(iter);
        const json_t *header_value = json_object_iter_value(iter);
        struct job_header *header;
        const char *refusal;
        bool duplicate = false;

        if (!job_is_token(name, name_len)) {
            job_error_at(check, parent, name, "invalid header name");
            continue;
        }
        refusal = job_header_refusal(name, job->webhook.raw_body);
        if (refusal != NULL)
            job_error_at(check, parent, name, "%s", refusal);
        /* Names differ in the object but may be one header on the wire. */
        for (size_t i = 0; i < job->webhook.header_count; i++) {
            if (strcasecmp(job->webhook.headers[i].name, name) == 0)
                duplicate = true;
        }
        if (duplicate)
            job_error_at(check, parent, name, "duplicate header name");
        if (!json_is_string(header_value)) {
            job_error_at(check, parent, name, "must be a string");
            continue;
        }
        if (job_has_control(json_string_value(header_value), json_string_length(header_value))) {
            job_error_at(check, parent, name, "must not contain control characters but tab");
            continue;
        }
        if (json_string_length(header_value) > JOB_HEADER_VALUE_MAX) {
            job_error_at(check, parent, name, "must be at most %d bytes", JOB_HEADER_VALUE_MAX);
            continue;
        }
        if (refusal != NULL || duplicate)
            continue;
        header = &job->webhook.headers[job->webhook.header_count];
        header->name = cf_strdup(name);
        header->value = cf_strdup(json_string_value(header_value));
        if (header->name == NULL || header->value == NULL) {
            free(header->name);
            free(header->value);
            header->name = NULL;
            header->value = NULL;
            check->nomem = true;
            return;
        }
        job->webhook.header_count++;
    }
}

/*
 * Reads webhook.body. A JSON body may be any value; a raw body is sent
 * verbatim, so it must be a string, and an absent one is empty.
 */
static void job_read_body(struct job_check *check, const json_t *value, struct job *job)
{
    static const char field[] = "webhook.body";
    json_t *body;

    if (!job->webhook.raw_body && value == NULL)
        return; /* the default, JSON null, is in place */
    if (job->webhook.raw_body && value == NULL) {
        body = json_string("");
    } else if (job->webhook.raw_body && !json_is_string(value)) {
        job_error(check, field, "must be a string when raw_body is true");
        return;
    } else if (job->webhook.raw_body && job_string_has_nul(value)) {
        job_error(check, field, "must not contain nul bytes");
        return;
    } else {
        body = json_deep_copy(value);
    }
    if (body == NULL) {
        check->nomem = true;
        return;
    }
    json_decref(job->webhook.body);
    job->webhook.body = body;
}

/* Reads webhook.content_type, the Content-Type of a raw body. */
static void job_read_content_type(struct job_check *check, const json_t *value, struct job *job)
{
    static const char field[] = "webhook.content_type";

    if (!job->webhook.raw_body) {
        if (value != NULL)
            job_error(check, field, "is only allowed when raw_body is true");
        return;
    }
    if (value == NULL) {
        job->webhook.content_type = cf_strdup(JOB_DEFAULT_CONTENT_TYPE);
        if (job->webhook.content_type == NULL)
            check->nomem = true;
        return;
    }
    if (!job_read_string(check, value, field, false, 1, JOB_HEADER_VALUE_MAX,
                         &job->webhook.content_type))
        return;
    if (job_has_control(job->webhook.content_type, strlen(job->webhook.content_type)))
        job_error(check, field, "must not contain control characters but tab");
}

static void job_read_webhook(struct job_check *check, const json_t *webhook,
                             const struct job_limits *limits, struct job *job)
{
    const json_t *raw_body;
    bool raw_body_valid = true;

    if (webhook == NULL) {
        job_error(check, "webhook", "is required");
        return;
    }
    if (!json_is_object(webhook)) {
        job_error(check, "webhook", "must be an object");
        return;
    }
    job_check_unknown(check, webhook, "webhook", job_webhook_fields, NULL);

    if (job_read_string(check, json_object_get(webhook, "url"), "webhook.url", true, 0, JOB_URL_MAX,
                        &job->webhook.url))
        job_check_url(check, "webhook.url", job->webhook.url,
                      limits != NULL ? limits->webhook_allow : NULL);
    job_read_method(check, json_object_get(webhook, "method"), job);

    /* raw_body decides what headers, body and content_type may be: read it first. */
    raw_body = json_object_get(webhook, "raw_body");
    if (raw_body != NULL &&
        !job_read_bool(check, raw_body, "webhook.raw_body", &job->webhook.raw_body))
        raw_body_valid = false;
    job_read_headers(check, json_object_get(webhook, "headers"), job);
    if (raw_body_valid) {
        job_read_body(check, json_object_get(webhook, "body"), job);
        job_read_content_type(check, json_object_get(webhook, "content_type"), job);
    }
    job_read_int(check, json_object_get(webhook, "timeout_ms"), "webhook.timeout_ms",
                 JOB_TIMEOUT_MS_MIN, JOB_TIMEOUT_MS_MAX, &job->webhook.timeout_ms);
}

static void job_read_secret(struct job_check *check, const json_t *value, struct job *job)
{
    /* null, like absence, means the instance-wide default secret. */
    if (value == NULL || json_is_null(value))
        return;
    if (!json_is_string(value)) {
        job_error(check, "signing_secret", "must be a string or null");
        return;
    }
    job_read_string(check, value, "signing_secret", false, JOB_SECRET_MIN, JOB_SECRET_MAX,
                    &job->signing_secret);
}

static void job_read_retry(struct job_check *check, const json_t *retry, struct job *job)
{
    const json_t *backoff = json_object_get(retry, "backoff_ms");
    const json_t *max_backoff = json_object_get(retry, "max_backoff_ms");
    int64_t attempts;
    bool backoff_valid = true;
    bool max_backoff_valid = true;

    if (retry == NULL)
        return;
    if (!json_is_object(retry)) {
        job_error(check, "retry", "must be an object");
        return;
    }
    job_check_unknown(check, retry, "retry", job_retry_fields, NULL);
    if (job_read_int(check, json_object_get(retry, "attempts"), "retry.attempts", JOB_ATTEMPTS_MIN,
                     JOB_ATTEMPTS_MAX, &attempts))
        job->retry.attempts = (int)attempts;
    if (backoff != NULL)
        backoff_valid = job_read_int(check, backoff, "retry.backoff_ms", 0, JOB_BACKOFF_MS_MAX,
                                     &job->retry.backoff_ms);
    if (max_backoff != NULL)
        max_backoff_valid = job_read_int(check, max_backoff, "retry.max_backoff_ms", 0,
                                         JOB_MAX_BACKOFF_MS_MAX, &job->retry.max_backoff_ms);
    if (backoff_valid && max_backoff_valid && job->retry.max_backoff_ms < job->retry.backoff_ms)
        job_error(check, "retry.max_backoff_ms", "must be at least retry.backoff_ms (%lld)",
                  (long long)job->retry.backoff_ms);
}

/* Reads notify (DESIGN §5): null or absent for none, else url, on and format. */
static void job_read_notify(struct job_check *check, const json_t *notify,
                            const struct job_limits *limits, struct job *job)
{
    const json_t *on = json_object_get(notify, "on");
    const json_t *item;
    size_t index;
    int format;

    if (notify == NULL || json_is_null(notify))
        return;
    if (!json_is_object(notify)) {
        job_error(check, "notify", "must be an object or null");
        return;
    }
    job_check_unknown(check, notify, "notify", job_notify_fields, NULL);
    if (job_read_string(check, json_object_get(notify, "url"), "notify.url", true, 0, SIZE_MAX,
                        &job->notify.url))
        job_check_url(check, "notify.url", job->notify.url,
                      limits != NULL ? limits->webhook_allow : NULL);
    if (on != NULL) {
        if (!json_is_array(on) || json_array_size(on) == 0) {
            job_error(check, "notify.on", "must be a non-empty list of run statuses");
        } else {
            job->notify.on = 0;
            json_array_foreach(on, index, item)
            {
                enum notify_event event = notify_event_parse(json_string_value(item));

                if (event == NOTIFY_NONE) {
                    job_error(check, "notify.on",
                              "must list only failed, fenced, missed, lost, succeeded, recovered");
                    break;
                }
                job->notify.on |= NOTIFY_BIT(event);
            }
        }
    }
    if (json_object_get(notify, "format") != NULL) {
        format = notify_format_parse(json_string_value(json_object_get(notify, "format")));
        if (format < 0)
            job_error(check, "notify.format", "must be json or slack");
        else
            job->notify.format = (enum notify_format)format;
    }
}

/* Reads an RFC 3339 time (or cf_parse_time()'s epoch milliseconds) into *out_ms. */
static void job_read_time(struct job_check *check, const json_t *value, const char *field,
                          int64_t *out_ms)
{
    int64_t ms = 0;

    if (value == NULL)
        return;
    if (!json_is_string(value) || job_string_has_nul(value) ||
        cf_parse_time(json_string_value(value), &ms) != CF_OK || ms < 0 || ms > JOB_TIME_MAX_MS) {
        job_error(check, field, "must be an rfc 3339 time");
        return;
    }
    *out_ms = ms;
}

/* A new job holding every default; NULL on allocation failure. */
static struct job *job_new_defaults(void)
{
    struct job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return NULL;
    job->description = cf_strdup("");
    job->timezone = cf_strdup(JOB_DEFAULT_TIMEZONE);
    job->webhook.method = cf_strdup(JOB_DEFAULT_METHOD);
    job->webhook.body = json_null();
    job->webhook.timeout_ms = JOB_TIMEOUT_MS_DEFAULT;
    job->overlap = JOB_OVERLAP_FORBID;
    job->starting_deadline_ms = JOB_DEADLINE_MS_DEFAULT;
    job->catchup = JOB_CATCHUP_NONE;
    job->retry.attempts = JOB_ATTEMPTS_DEFAULT;
    job->retry.backoff_ms = JOB_BACKOFF_MS_DEFAULT;
    job->retry.max_backoff_ms = JOB_MAX_BACKOFF_MS_DEFAULT;
    job->notify.on = NOTIFY_ON_DEFAULT;
    job->lease_ms = JOB_LEASE_MS_DEFAULT;
    if (job->description == NULL || job->timezone == NULL || job->webhook.method == NULL) {
        job_free(job);
        return NULL;
    }
    return job;
}

/* ---------------------------------------------------------------------------
 * Public API
 */

int job_from_json(const json_t *doc, const struct job_limits *limits, bool keep_meta,
                  struct job **out, json_t *errors)
{
    struct job_check check = {.errors = errors, .nomem = false};
    struct job *job = NULL;
    size_t errors_before;
    int choice;
    int ret;

    assert(out != NULL);
    assert(json_is_array(errors));
    *out = NULL;
    errors_before = json_array_size(errors);

    if (!json_is_object(doc)) {
        job_error(&check, "", "must be a json object");
        goto done;
    }
    job = job_new_defaults();
    if (job == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }

    job_check_unknown(&check, doc, "", job_root_fields, keep_meta ? job_stored_fields : NULL);
    if (job_read_string(&check, json_object_get(doc, "name"), "name", true, 0, SIZE_MAX,
                        &job->name) &&
        !job_name_valid(job->name))
        job_error(&check, "name", "must match ^[a-z0-9][a-z0-9._-]{0,62}$");
    job_read_string(&check, json_object_get(doc, "description"), "description", false, 0,
                    JOB_DESCRIPTION_MAX, &job->description);
    job_read_schedule(&check, json_object_get(doc, "schedule"), job);
    job_read_timezone(&check, json_object_get(doc, "timezone"), job);
    job_read_bool(&check, json_object_get(doc, "paused"), "paused", &job->paused);
    job_read_webhook(&check, json_object_get(doc, "webhook"), limits, job);
    job_read_secret(&check, json_object_get(doc, "signing_secret"), job);
    if (job_read_enum(&check, json_object_get(doc, "overlap"), "overlap", job_overlap_names,
                      JOB_COUNT(job_overlap_names), &choice))
        job->overlap = (enum job_overlap)choice;
    job_read_int(&check, json_object_get(doc, "starting_deadline_ms"), "starting_deadline_ms",
                 JOB_DEADLINE_MS_MIN, JOB_DEADLINE_MS_MAX, &job->starting_deadline_ms);
    if (job_read_enum(&check, json_object_get(doc, "catchup"), "catchup", job_catchup_names,
                      JOB_COUNT(job_catchup_names), &choice))
        job->catchup = (enum job_catchup)choice;
    job_read_retry(&check, json_object_get(doc, "retry"), job);
    job_read_notify(&check, json_object_get(doc, "notify"), limits, job);
    job_read_int(&check, json_object_get(doc, "lease_ms"), "lease_ms", JOB_LEASE_MS_MIN,
                 JOB_LEASE_MS_MAX, &job->lease_ms);
    if (keep_meta) {
        job_read_int(&check, json_object_get(doc, "version"), "version", 0, INT64_MAX,
                     &job->version);
        job_read_time(&check, json_object_get(doc, "created_at"), "created_at",
                      &job->created_at_ms);
        job_read_time(&check, json_object_get(doc, "updated_at"), "updated_at",
                      &job->updated_at_ms);
        if (json_object_get(doc, "signing_secret_changed_at") != NULL)
            job_read_time(&check, json_object_get(doc, "signing_secret_changed_at"),
                          "signing_secret_changed_at", &job->signing_secret_changed_at_ms);
        if (json_object_get(doc, "previous_signing_secret") != NULL)
            job_read_string(&check, json_object_get(doc, "previous_signing_secret"),
                            "previous_signing_secret", false, JOB_SECRET_MIN, JOB_SECRET_MAX,
                            &job->previous_signing_secret);
    }

done:
    if (check.nomem) {
        ret = CF_ERR_NOMEM;
    } else if (json_array_size(errors) > errors_before) {
        ret = CF_ERR_INVALID;
    } else {
        *out = job;
        job = NULL;
        ret = CF_OK;
    }
out:
    job_free(job);
    return ret;
}

/* Sets key in obj to value (stolen, may be NULL); clears *ok when that fails. */
static void job_put(json_t *obj, const char *key, json_t *value, bool *ok)
{
    if (json_object_set_new(obj, key, value) != 0)
        *ok = false;
}

/* An RFC 3339 string of wall time ms; NULL on allocation failure. */
static json_t *job_time_json(int64_t wall_ms)
{
    char buf[CF_TIME_LEN];

    return json_string(cf_format_time(wall_ms, buf));
}

static json_t *job_webhook_to_json(const struct job_webhook *webhook)
{
    json_t *obj = json_object();
    json_t *headers = json_object();
    bool ok = obj != NULL && headers != NULL;

    if (!ok)
        goto fail;
    for (size_t i = 0; i < webhook->header_count; i++)
        job_put(headers, webhook->headers[i].name, json_string(webhook->headers[i].value), &ok);
    job_put(obj, "url", json_string(webhook->url), &ok);
    job_put(obj, "method", json_string(webhook->method), &ok);
    job_put(obj, "headers", headers, &ok);
    headers = NULL; /* owned by obj, or released by the failed set */
    job_put(obj, "body", webhook->body != NULL ? json_deep_copy(webhook->body) : json_null(), &ok);
    job_put(obj, "raw_body", json_boolean(webhook->raw_body), &ok);
    if (webhook->raw_body)
        job_put(obj, "content_type",
                json_string(webhook->content_type != NULL ? webhook->content_type
                                                          : JOB_DEFAULT_CONTENT_TYPE),
                &ok);
    job_put(obj, "timeout_ms", json_integer(webhook->timeout_ms), &ok);
    if (ok)
        return obj;
fail:
    json_decref(headers);
    json_decref(obj);
    return NULL;
}

static json_t *job_retry_to_json(const struct job_retry *retry)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;

    if (!ok)
        return NULL;
    job_put(obj, "attempts", json_integer(retry->attempts), &ok);
    job_put(obj, "backoff_ms", json_integer(retry->backoff_ms), &ok);
    job_put(obj, "max_backoff_ms", json_integer(retry->max_backoff_ms), &ok);
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The notify member of the API and storage JSON: null when none is set. */
static json_t *job_notify_to_json(const struct job_notify *notify)
{
    json_t *obj, *on;
    bool ok = true;

    if (notify->url == NULL)
        return json_null();
    obj = json_object();
    on = json_array();
    if (obj == NULL || on == NULL) {
        json_decref(obj);
        json_decref(on);
        return NULL;
    }
    for (int i = 0; i < NOTIFY_EVENT_COUNT; i++)
        if ((notify->on & NOTIFY_BIT(i)) != 0 &&
            json_array_append_new(on, json_string(notify_event_name((enum notify_event)i))) != 0)
            ok = false;
    job_put(obj, "url", json_string(notify->url), &ok);
    job_put(obj, "on", on, &ok);
    job_put(obj, "format", json_string(notify_format_name(notify->format)), &ok);
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

json_t *job_to_json(const struct job *job, bool include_secret)
{
    json_t *doc = json_object();
    bool ok = doc != NULL;

    if (!ok)
        return NULL;
    job_put(doc, "name", json_string(job->name), &ok);
    job_put(doc, "description", json_string(job->description), &ok);
    job_put(doc, "schedule", json_string(job->schedule), &ok);
    job_put(doc, "timezone", json_string(job->timezone), &ok);
    job_put(doc, "paused", json_boolean(job->paused), &ok);
    job_put(doc, "webhook", job_webhook_to_json(&job->webhook), &ok);
    job_put(doc, "signing_secret_set", json_boolean(job->signing_secret != NULL), &ok);
    if (include_secret && job->signing_secret != NULL)
        job_put(doc, "signing_secret", json_string(job->signing_secret), &ok);
    if (include_secret && job->signing_secret_changed_at_ms > 0) {
        job_put(doc, "signing_secret_changed_at", job_time_json(job->signing_secret_changed_at_ms),
                &ok);
        if (job->previous_signing_secret != NULL)
            job_put(doc, "previous_signing_secret", json_string(job->previous_signing_secret), &ok);
    }
    job_put(doc, "overlap", json_string(job_overlap_name(job->overlap)), &ok);
    job_put(doc, "starting_deadline_ms", json_integer(job->starting_deadline_ms), &ok);
    job_put(doc, "catchup", json_string(job_catchup_name(job->catchup)), &ok);
    job_put(doc, "retry", job_retry_to_json(&job->retry), &ok);
    job_put(doc, "lease_ms", json_integer(job->lease_ms), &ok);
    job_put(doc, "notify", job_notify_to_json(&job->notify), &ok);
    job_put(doc, "version", json_integer(job->version), &ok);
    job_put(doc, "created_at", job_time_json(job->created_at_ms), &ok);
    job_put(doc, "updated_at", job_time_json(job->updated_at_ms), &ok);
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* cf_strdup() that clears *ok when a non-NULL s could not be copied. */
static char *job_dup(const char *s, bool *ok)
{
    char *copy = cf_strdup(s);

    if (s != NULL && copy == NULL)
        *ok = false;
    return copy;
}

struct job *job_copy(const struct job *job)
{
    struct job *copy;
    bool ok = true;

    if (job == NULL)
        return NULL;
    copy = malloc(sizeof(*copy));
    if (copy == NULL)
        return NULL;
    /* Scalars come along; every pointer is replaced below before anything can fail. */
    *copy = *job;
    copy->name = job_dup(job->name, &ok);
    copy->description = job_dup(job->description, &ok);
    copy->schedule = job_dup(job->schedule, &ok);
    copy->timezone = job_dup(job->timezone, &ok);
    copy->signing_secret = job_dup(job->signing_secret, &ok);
    copy->previous_signing_secret = job_dup(job->previous_signing_secret, &ok);
    copy->webhook.url = job_dup(job->webhook.url, &ok);
    copy->notify.url = job_dup(job->notify.url, &ok);
    copy->webhook.method = job_dup(job->webhook.method, &ok);
    copy->webhook.content_type = job_dup(job->webhook.content_type, &ok);
    copy->webhook.body = job->webhook.body != NULL ? json_deep_copy(job->webhook.body) : NULL;
    if (job->webhook.body != NULL && copy->webhook.body == NULL)
        ok = false;
    copy->webhook.headers = NULL;
    copy->webhook.header_count = 0;
    if (ok && job->webhook.header_count > 0) {
        copy->webhook.headers = calloc(job->webhook.header_count, sizeof(struct job_header));
        if (copy->webhook.headers == NULL)
            ok = false;
        for (size_t i = 0; ok && i < job->webhook.header_count; i++) {
            struct job_header *header = &copy->webhook.headers[i];

            header->name = job_dup(job->webhook.headers[i].name, &ok);
            header->value = job_dup(job->webhook.headers[i].value, &ok);
            copy->webhook.header_count = i + 1;
        }
    }
    if (!ok) {
        job_free(copy);
        return NULL;
    }
    return copy;
}

void job_free(struct job *job)
{
    if (job == NULL)
        return;
    free(job->name);
    free(job->description);
    free(job->schedule);
    free(job->timezone);
    free(job->signing_secret);
    free(job->previous_signing_secret);
    free(job->webhook.url);
    free(job->notify.url);
    free(job->webhook.method);
    for (size_t i = 0; i < job->webhook.header_count; i++) {
        free(job->webhook.headers[i].name);
        free(job->webhook.headers[i].value);
    }
    free(job->webhook.headers);
    json_decref(job->webhook.body);
    free(job->webhook.content_type);
    free(job);
}

/*
 * RFC 7386, section 2, building a new value instead of changing target:
 * members of target keep their order, patched members are merged in place,
 * new members follow in the patch's order, and every node is copied once.
 */
json_t *job_merge_patch(const json_t *target, const json_t *patch)
{
    /* Iterated, never modified: jansson's iterator API just is not const. */
    json_t *mutable_target = (json_t *)target;
    json_t *mutable_patch = (json_t *)patch;
    json_t *result;

    if (!json_is_object(patch))
        return patch != NULL ? json_deep_copy(patch) : NULL;
    result = json_object();
    if (result == NULL)
        return NULL;

    if (json_is_object(target)) {
        for (void *iter = json_object_iter(mutable_target); iter != NULL;
             iter = json_object_iter_next(mutable_target, iter)) {
            const char *key = json_object_iter_key(iter);
            size_t key_len = json_object_iter_key_len(iter);
            const json_t *value = json_object_iter_value(iter);
            const json_t *change = json_object_getn(patch, key, key_len);
            json_t *merged;

            if (json_is_null(change))
                continue; /* null removes the member */
            merged = change != NULL ? job_merge_patch(value, change) : json_deep_copy(value);
            if (merged == NULL || json_object_setn_new_nocheck(result, key, key_len, merged) != 0)
                goto fail;
        }
    }
    for (void *iter = json_object_iter(mutable_patch); iter != NULL;
         iter = json_object_iter_next(mutable_patch, iter)) {
        const char *key = json_object_iter_key(iter);
        size_t key_len = json_object_iter_key_len(iter);
        const json_t *change = json_object_iter_value(iter);
        json_t *merged;

        if (json_is_null(change) || json_object_getn(target, key, key_len) != NULL)
            continue; /* nothing to remove, or merged above */
        merged = job_merge_patch(NULL, change);
        if (merged == NULL || json_object_setn_new_nocheck(result, key, key_len, merged) != 0)
            goto fail;
    }
    return result;
fail:
    json_decref(result);
    return NULL;
}

const char *job_overlap_name(enum job_overlap overlap)
{
    if ((size_t)overlap >= JOB_COUNT(job_overlap_names))
        return "unknown";
    return job_overlap_names[overlap];
}

const char *job_catchup_name(enum job_catchup catchup)
{
    if ((size_t)catchup >= JOB_COUNT(job_catchup_names))
        return "unknown";
    return job_catchup_names[catchup];
}
