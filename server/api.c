/*
 * api.c - handlers of the REST API, health, metrics and the dashboard.
 *
 * Every handler validates first and changes nothing on error; errors are
 * RFC 9457 problem documents with an "errors" list naming each bad field.
 */
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authlimit.h"
#include "cluster_view.h"
#include "common.h"
#include "cron.h"
#include "embedded.h"
#include "http_parse.h"
#include "job_batch.h"
#include "job_order.h"
#include "log.h"
#include "metrics.h"
#include "redact.h"
#include "signing_secrets.h"
#include "tz.h"
#include "view.h"

#define API_DEFAULT_LIMIT 100
#define API_MAX_LIMIT 500
#define API_PREVIEW_MAX 100
/* How often a PATCH without If-Match retries after losing a race with another writer. */
#define API_PATCH_RETRIES 5
/*
 * Failed tokens one address may present in a burst, and how fast that
 * budget comes back (one every API_AUTH_REFILL_MS): 30 guesses a minute at
 * most once the burst is spent. Only requests that carried a token count.
 */
#define API_AUTH_FAILURE_BURST 50
#define API_AUTH_REFILL_MS 2000

struct api {
    struct api_config cfg;
    char *web_root; /* the --web-dir folder, resolved; NULL for the built-in dashboard */
    struct authlimit *auth_limit;
};

enum access { ACCESS_NONE, ACCESS_VIEWER, ACCESS_ADMIN };

/* ---------------------------------------------------------------------- */
/* Responses                                                                */
/* ---------------------------------------------------------------------- */

int api_status_for(int err)
{
    static const struct {
        int err;
        int status;
    } table[] = {
        {CF_OK, 200},
        {CF_ERR_INVALID, 422},
        {CF_ERR_NOT_FOUND, 404},
        {CF_ERR_CONFLICT, 409},
        {CF_ERR_PRECONDITION, 412},
        {CF_ERR_TOO_LARGE, 413},
        {CF_ERR_UNAUTHORIZED, 401},
        {CF_ERR_FORBIDDEN, 403},
        {CF_ERR_NO_QUORUM, 503},
        {CF_ERR_SHUTDOWN, 503},
        {CF_ERR_TIMEOUT, 504},
        {CF_ERR_BUSY, 409},
        {CF_ERR_FIRED, 409}, /* the slot was delivered already */
        {CF_ERR_LOST, 503},  /* a claim that could not be committed: try again */
    };

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].err == err)
            return table[i].status;
    return 500;
}

static const char *status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Internal Server Error";
    }
}

/* Sends json (stolen) with status. */
static void send_json(struct http_response *res, int status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

    json_decref(json);
    if (text == NULL) {
        http_set_body(res, 500, "application/problem+json",
                      strdup("{\"title\":\"Internal Server Error\",\"status\":500}"),
                      strlen("{\"title\":\"Internal Server Error\",\"status\":500}"));
        return;
    }
    http_set_body(res, status, "application/json", text, strlen(text));
}

/* Sends a problem document; errors (stolen, may be NULL) lists the bad fields. */
__attribute__((format(printf, 4, 5))) static void
send_problem(struct http_response *res, int status, json_t *errors, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    json_t *doc;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    doc =
        json_pack("{s:s, s:s, s:i, s:s, s:o}", "type", "about:blank", "title", status_title(status),
                  "status", status, "detail", detail, "errors", errors ? errors : json_array());
    send_json(res, status, doc);
    res->content_type = "application/problem+json";
}

/* A new one-entry error list. */
static json_t *field_error(const char *field, const char *message)
{
    return json_pack("[{s:s, s:s}]", "field", field, "message", message);
}

/* Appends {field, message} to an error list (borrowed). */
static void add_error(json_t *errors, const char *field, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", message));
}

static void send_error_code(struct http_response *res, int err, const char *what)
{
    int status = api_status_for(err);

    send_problem(res, status, NULL, "%s: %s", what, cf_err_str(err));
}

/* ---------------------------------------------------------------------- */
/* Auth                                                                     */
/* ---------------------------------------------------------------------- */

static bool token_in(const char *token, char **tokens, size_t count)
{
    bool found = false;

    /* Compare against every token, so timing says nothing of which matched. */
    for (size_t i = 0; i < count; i++)
        found |= cf_secure_equal(token, tokens[i]);
    return found;
}

static enum access access_of(struct api *api, const struct http_request *req)
{
    const char *header = http_header(req, "Authorization");
    const char *token;

    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return ACCESS_NONE;
    token = header + 7;
    while (*token == ' ')
        token++;
    if (token_in(token, api->cfg.admin_tokens, api->cfg.admin_token_count))
        return ACCESS_ADMIN;
    if (token_in(token, api->cfg.viewer_tokens, api->cfg.viewer_token_count))
        return ACCESS_VIEWER;
    return ACCESS_NONE;
}

/*
 * The access the request's token gives. A request that presented a wrong
 * token counts against its address (authlimit.h); while the address is
 * rate-limited no token is even looked at. On failure answers 401 or 429
 * into res and returns ACCESS_NONE.
 */
static enum access authenticate(struct api *api, const struct http_request *req,
                                struct http_response *res)
{
    char key[HTTP_ADDRESS_KEY_LEN], value[16];
    unsigned retry_after_s = 1;
    enum access access;

    http_address_key(http_client_address(req), key);
    if (!authlimit_allowed(api->auth_limit, key, cf_boot_ms(), &retry_after_s)) {
        send_problem(res, 429, NULL,
                     "too many failed authentications from this address; retry in %u s",
                     retry_after_s);
        snprintf(value, sizeof(value), "%u", retry_after_s);
        http_add_header(res, "Retry-After", value);
        return ACCESS_NONE;
    }
    access = access_of(api, req);
    if (access != ACCESS_NONE)
        return access;
    if (http_header(req, "Authorization") != NULL &&
        authlimit_failed(api->auth_limit, key, cf_boot_ms()))
        log_warn("authentication failures rate-limited", "client=%s burst=%d refill_ms=%d", key,
                 API_AUTH_FAILURE_BURST, API_AUTH_REFILL_MS);
    send_problem(res, 401, NULL, "a valid bearer token is required");
    http_add_header(res, "WWW-Authenticate", "Bearer realm=\"cronfence\"");
    return ACCESS_NONE;
}

/* Checks the bearer token; on failure answers 401/403/429 and returns false. */
static bool authorize(struct api *api, const struct http_request *req, struct http_response *res,
                      bool write)
{
    enum access access = authenticate(api, req, res);

    if (access == ACCESS_NONE)
        return false;
    /* The dashboard shows write controls only to tokens that may write. */
    http_add_header(res, "Cronfence-Access", access == ACCESS_ADMIN ? "admin" : "viewer");
    if (write && access != ACCESS_ADMIN) {
        send_problem(res, 403, NULL, "this token may only read");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Parsing helpers                                                          */
/* ---------------------------------------------------------------------- */

/* Parses the request body as a JSON object; on failure answers 400 and returns NULL. */
static json_t *parse_body(const struct http_request *req, struct http_response *res)
{
    const char *type = http_header(req, "Content-Type");
    json_error_t jerr;
    json_t *doc;

    if (type != NULL && strncasecmp(type, "application/json", 16) != 0 &&
        strncasecmp(type, "application/merge-patch+json", 28) != 0) {
        send_problem(res, 415, NULL, "Content-Type %.100s is not accepted; send application/json",
                     type);
        return NULL;
    }
    if (req->body_len == 0) {
        send_problem(res, 400, NULL, "request body is empty, expected a JSON object");
        return NULL;
    }
    doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        send_problem(res, 400, NULL, "malformed JSON at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        send_problem(res, 400, NULL, "request body must be a JSON object");
        return NULL;
    }
    return doc;
}

/* Parses a query integer in [min, max]; absent gives fallback. Appends to errors on failure. */
static bool query_int(const struct http_request *req, const char *key, long min, long max,
                      long fallback, long *value, json_t *errors)
{
    const char *text = http_query(req, key);
    char *end, message[96];
    long parsed;

    *value = fallback;
    if (text == NULL)
        return true;
    errno = 0;
    parsed = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || parsed < min || parsed > max) {
        snprintf(message, sizeof(message), "must be an integer from %ld to %ld", min, max);
        add_error(errors, key, message);
        return false;
    }
    *value = parsed;
    return true;
}

/* Parses a query time (RFC 3339 or epoch ms); absent gives fallback. */
static bool query_time(const struct http_request *req, const char *key, int64_t fallback,
                       int64_t *value, json_t *errors)
{
    const char *text = http_query(req, key);

    *value = fallback;
    if (text == NULL || cf_parse_time(text, value) == CF_OK)
        return true;
    add_error(errors, key, "must be an RFC 3339 time or epoch milliseconds");
    return false;
}

/*
 * Parses an If-Match header into *version: 0 when absent, COORD_IF_EXISTS for
 * "*", else the version of the ETag. Returns false when it is malformed.
 */
static bool if_match_version(const struct http_request *req, int64_t *version)
{
    const char *text = http_header(req, "If-Match");
    char *end;
    long long value;

    *version = 0;
    if (text == NULL)
        return true;
    while (*text == ' ')
        text++;
    if (strcmp(text, "*") == 0) {
        *version = COORD_IF_EXISTS;
        return true;
    }
    /* If-Match compares strongly (RFC 9110 13.1.1): a weak ETag never matches. */
    if (strncmp(text, "W/", 2) == 0)
        return false;
    if (*text == '"')
        text++;
    value = strtoll(text, &end, 10);
    if (end == text || (*end != '"' && *end != '\0') || value <= 0)
        return false;
    *version = value;
    return true;
}

/* ---------------------------------------------------------------------- */
/* Jobs                                                                     */
/* ---------------------------------------------------------------------- */

static void set_job_headers(struct http_response *res, const struct job *job)
{
    char etag[32];

    snprintf(etag, sizeof(etag), "\"%lld\"", (long long)job->version);
    http_add_header(res, "ETag", etag);
}

/* A job's API form, masked (redact.h) unless the reader's token is an admin token. */
static json_t *job_view_for(struct api *api, const struct http_request *req, const struct job *job)
{
    json_t *doc = view_job(api->cfg.db, job);

    if (doc != NULL && access_of(api, req) != ACCESS_ADMIN && redact_job(doc) != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void send_job(struct api *api, struct http_response *res, int status, const struct job *job)
{
    send_json(res, status, view_job(api->cfg.db, job));
    set_job_headers(res, job);
}

/*
 * Validates doc into a job; on failure answers 422 (naming the fields) and
 * returns NULL.
 */
static struct job *validate_job(struct api *api, const json_t *doc, struct http_response *res)
{
    json_t *errors = json_array();
    struct job *job = NULL;
    int ret = job_from_json(doc, api->cfg.limits, false, &job, errors);

    if (ret == CF_OK) {
        json_decref(errors);
        return job;
    }
    if (ret == CF_ERR_INVALID)
        send_problem(res, 422, errors, "the job is invalid");
    else
        send_error_code(res, ret, "cannot validate job");
    if (ret != CF_ERR_INVALID)
        json_decref(errors);
    return NULL;
}

/* Writes job through the catalog and tells the scheduler; answers the client. */
static void put_job(struct api *api, struct http_response *res, struct job *job, bool create_only,
                    int64_t if_match, int ok_status)
{
    bool created = false;
    struct job *current = NULL;
    int ret = CF_OK;
    char location[128];

    /* A replaced signing secret keeps signing for the overlap (signing_secrets.h). */
    if (!create_only && db_job_get(api->cfg.db, job->name, &current) == CF_OK)
        ret = signing_secrets_carry(current, job, cf_wall_ms());
    job_free(current);
    if (ret == CF_OK)
        ret =
            api->cfg.coord->ops->catalog_put(api->cfg.coord, job, create_only, if_match, &created);

    if (ret == CF_ERR_CONFLICT) {
        send_problem(res, 409, field_error("name", "a job with this name exists"),
                     "job %s already exists", job->name);
        return;
    }
    if (ret == CF_ERR_PRECONDITION) {
        send_problem(res, 412, NULL, "job %s has changed since version given in If-Match",
                     job->name);
        return;
    }
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot store job");
        return;
    }
    scheduler_job_changed(api->cfg.scheduler, job->name);
    job_order_store_next(api->cfg.db, job, cf_wall_ms());
    log_info(created ? "job created" : "job updated", "job=%s version=%lld", job->name,
             (long long)job->version);
    send_job(api, res, created ? 201 : ok_status, job);
    if (created) {
        snprintf(location, sizeof(location), "/api/v1/jobs/%s", job->name);
        http_add_header(res, "Location", location);
    }
}

/*
 * A page of jobs in a keyed order (?sort= other than name); the cursor is
 * "<key>:<name>" of the last job of the previous page. CF_ERR_INVALID for a
 * cursor of another form, else as db_job_list_sorted.
 */
static int list_jobs_sorted(struct api *api, struct db_job_query *query,
                            const struct job_order *order, struct job ***jobs, size_t *count,
                            bool *more, int64_t *last_key)
{
    int64_t after_key = 0;
    int ret;

    if (query->after != NULL &&
        job_order_cursor_parse(query->after, &after_key, &query->after) != CF_OK)
        return CF_ERR_INVALID;
    if (order->key == DB_JOB_SORT_NEXT) {
        ret = job_order_refresh_next(api->cfg.db, cf_wall_ms());
        if (ret != CF_OK)
            return ret;
    }
    return db_job_list_sorted(api->cfg.db, query, order->key, order->descending, after_key, jobs,
                              count, more, last_key);
}

/* The query parameters of GET /api/v1/jobs. */
static const char *const jobs_list_query[] = {"q", "paused", "sort", "limit", "cursor", NULL};

static void handle_jobs_list(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct db_job_query query = {0};
    json_t *errors = json_array(), *items, *doc;
    const char *paused = http_query(req, "paused");
    struct job **jobs = NULL;
    struct job_order order;
    size_t count = 0;
    bool more = false;
    int64_t last_key = 0;
    char cursor[160];
    const char *next_cursor;
    long limit;
    int ret;

    if (!authorize(api, req, res, false))
        goto out;
    query_int(req, "limit", 1, API_MAX_LIMIT, API_DEFAULT_LIMIT, &limit, errors);
    if (job_order_parse(http_query(req, "sort"), &order) != CF_OK)
        add_error(errors, "sort",
                  "must be name, next, last_run or failures (the last three with a leading - for "
                  "descending)");
    query.paused = -1;
    if (paused != NULL) {
        if (strcmp(paused, "true") == 0)
            query.paused = 1;
        else if (strcmp(paused, "false") == 0)
            query.paused = 0;
        else
            add_error(errors, "paused", "must be true or false");
    }
    if (json_array_size(errors) > 0) {
        send_problem(res, 422, errors, "invalid query parameters");
        errors = NULL;
        goto out;
    }
    query.q = http_query(req, "q");
    if (query.q != NULL && *query.q == '\0')
        query.q = NULL;
    query.after = http_query(req, "cursor");
    query.limit = (int)limit;
    if (order.by_name)
        ret = db_job_list(api->cfg.db, &query, &jobs, &count, &more);
    else
        ret = list_jobs_sorted(api, &query, &order, &jobs, &count, &more, &last_key);
    if (ret == CF_ERR_INVALID) {
        send_problem(res, 422, field_error("cursor", "is not a cursor of this sort order"),
                     "invalid query parameters");
        goto out;
    }
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot list jobs");
        goto out;
    }
    items = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(items, job_view_for(api, req, jobs[i]));
    next_cursor = NULL;
    if (more && count > 0)
        next_cursor = order.by_name ? jobs[count - 1]->name
                                    : job_order_cursor_format(last_key, jobs[count - 1]->name,
                                                              cursor, sizeof(cursor));
    doc = json_pack("{s:o, s:o}", "items", items, "next_cursor",
                    next_cursor ? json_string(next_cursor) : json_null());
    send_json(res, 200, doc);
    for (size_t i = 0; i < count; i++)
        job_free(jobs[i]);
    free(jobs);
out:
    json_decref(errors);
}

static void handle_jobs_create(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    json_t *doc;
    struct job *job;

    if (!authorize(api, req, res, true))
        return;
    doc = parse_body(req, res);
    if (doc == NULL)
        return;
    job = validate_job(api, doc, res);
    json_decref(doc);
    if (job == NULL)
        return;
    put_job(api, res, job, true, 0, 201);
    job_free(job);
}

/*
 * POST /jobs/validate: checks a whole set of job documents and changes
 * nothing; `cronfence apply` writes only after every document passed.
 * Reading tokens may call it: it reads and writes no job.
 */
static void handle_jobs_validate(void *ctx, const struct http_request *req,
                                 struct http_response *res)
{
    struct api *api = ctx;
    json_t *doc, *errors = NULL, *jobs = NULL;
    size_t invalid = 0;
    int ret;

    if (!authorize(api, req, res, false))
        return;
    doc = parse_body(req, res);
    if (doc == NULL)
        return;
    errors = json_array();
    ret = errors ? job_batch_validate(doc, api->cfg.limits, &jobs, errors, &invalid) : CF_ERR_NOMEM;
    if (ret == CF_OK) {
        send_json(res, 200, json_pack("{s:b, s:o}", "valid", 1, "jobs", jobs));
    } else if (ret == CF_ERR_INVALID) {
        if (invalid == 0)
            send_problem(res, 422, errors, "expected {\"jobs\": [job documents]}");
        else
            send_problem(res, 422, errors, "%zu of %zu jobs are invalid", invalid,
                         json_array_size(json_object_get(doc, "jobs")));
        errors = NULL;
    } else {
        send_error_code(res, ret, "cannot validate jobs");
    }
    json_decref(errors);
    json_decref(doc);
}

/* Loads job name; on failure answers 404 (or the error) and returns NULL. */
static struct job *load_job(struct api *api, const char *name, struct http_response *res)
{
    struct job *job = NULL;
    int ret = job_name_valid(name) ? db_job_get(api->cfg.db, name, &job) : CF_ERR_NOT_FOUND;

    if (ret == CF_ERR_NOT_FOUND)
        send_problem(res, 404, NULL, "no job named %s", name);
    else if (ret != CF_OK)
        send_error_code(res, ret, "cannot read job");
    return ret == CF_OK ? job : NULL;
}

static void handle_job_get(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct job *job;

    if (!authorize(api, req, res, false))
        return;
    job = load_job(api, req->params[0], res);
    if (job == NULL)
        return;
    send_json(res, 200, job_view_for(api, req, job));
    set_job_headers(res, job);
    job_free(job);
}

/* Checks the If-Match header; on a malformed one answers 412 and returns false. */
static bool read_if_match(const struct http_request *req, struct http_response *res,
                          int64_t *version)
{
    if (!if_match_version(req, version)) {
        send_problem(res, 412, NULL, "If-Match must be an ETag of this API, such as \"12\"");
        return false;
    }
    return true;
}

static void handle_job_put(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    const char *name = req->params[0];
    struct job *job = NULL, *current = NULL;
    json_t *doc, *body_name;
    int64_t if_match;

    if (!authorize(api, req, res, true) || !read_if_match(req, res, &if_match))
        return;
    doc = parse_body(req, res);
    if (doc == NULL)
        return;
    body_name = json_object_get(doc, "name");
    if (body_name == NULL) {
        json_object_set_new(doc, "name", json_string(name));
    } else if (!json_is_string(body_name) || strcmp(json_string_value(body_name), name) != 0) {
        send_problem(res, 422, field_error("name", "must match the name in the path"),
                     "the job is invalid");
        goto out;
    }
    /* The secret is write-only: a PUT that leaves it out keeps the one set before. */
    if (json_object_get(doc, "signing_secret") == NULL && job_name_valid(name) &&
        db_job_get(api->cfg.db, name, &current) == CF_OK && current->signing_secret != NULL)
        json_object_set_new(doc, "signing_secret", json_string(current->signing_secret));
    job = validate_job(api, doc, res);
    if (job != NULL)
        put_job(api, res, job, false, if_match, 200);
out:
    job_free(job);
    job_free(current);
    json_decref(doc);
}

/*
 * Applies a merge patch to job name under optimistic concurrency: with an
 * If-Match the write must match it; without, a lost race is retried.
 */
static void patch_job(struct api *api, const char *name, const json_t *patch, int64_t if_match,
                      struct http_response *res)
{
    for (int attempt = 0; attempt < API_PATCH_RETRIES; attempt++) {
        struct job *current = load_job(api, name, res), *job = NULL;
        json_t *stored, *merged, *patched_name;
        bool created;
        int ret;

        if (current == NULL)
            return;
        stored = job_to_json(current, true);
        /* What only storage holds is no field of the API's; carried over below. */
        json_object_del(stored, "previous_signing_secret");
        json_object_del(stored, "signing_secret_changed_at");
        merged = stored ? job_merge_patch(stored, patch) : NULL;
        if (merged == NULL) {
            json_decref(stored);
            job_free(current);
            send_error_code(res, CF_ERR_NOMEM, "cannot patch job");
            return;
        }
        if (if_match > 0 && if_match != current->version) {
            json_decref(stored);
            json_decref(merged);
            job_free(current);
            send_problem(res, 412, NULL, "job %s has changed since the version in If-Match", name);
            return;
        }
        if (json_equal(merged, stored)) {
            /* Nothing changes: no new version, so other clients' ETags stay valid. */
            json_decref(stored);
            json_decref(merged);
            send_job(api, res, 200, current);
            job_free(current);
            return;
        }
        json_decref(stored);
        patched_name = json_object_get(merged, "name");
        if (!json_is_string(patched_name) || strcmp(json_string_value(patched_name), name) != 0) {
            send_problem(res, 422, field_error("name", "is immutable"), "the job is invalid");
            json_decref(merged);
            job_free(current);
            return;
        }
        job = validate_job(api, merged, res);
        json_decref(merged);
        if (job == NULL) {
            job_free(current);
            return;
        }
        ret = signing_secrets_carry(current, job, cf_wall_ms());
        if (ret == CF_OK)
            ret = api->cfg.coord->ops->catalog_put(
                api->cfg.coord, job, false, if_match > 0 ? if_match : current->version, &created);
        job_free(current);
        if (ret == CF_OK) {
            scheduler_job_changed(api->cfg.scheduler, name);
            log_info("job updated", "job=%s version=%lld", name, (long long)job->version);
            send_job(api, res, 200, job);
            job_free(job);
            return;
        }
        job_free(job);
        if (ret != CF_ERR_PRECONDITION || if_match > 0) {
            if (ret == CF_ERR_PRECONDITION)
                send_problem(res, 412, NULL, "job %s has changed since the version in If-Match",
                             name);
            else
                send_error_code(res, ret, "cannot store job");
            return;
        }
    }
    send_problem(res, 409, NULL, "job %s kept changing while being patched; try again", name);
}

static void handle_job_patch(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    json_t *patch;
    int64_t if_match;

    if (!authorize(api, req, res, true) || !read_if_match(req, res, &if_match))
        return;
    patch = parse_body(req, res);
    if (patch == NULL)
        return;
    patch_job(api, req->params[0], patch, if_match, res);
    json_decref(patch);
}

static void handle_job_delete(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    const char *name = req->params[0];
    int64_t if_match;
    int ret;

    if (!authorize(api, req, res, true) || !read_if_match(req, res, &if_match))
        return;
    ret = job_name_valid(name) ? api->cfg.coord->ops->catalog_delete(api->cfg.coord, name, if_match)
                               : CF_ERR_NOT_FOUND;
    if (ret == CF_ERR_NOT_FOUND) {
        send_problem(res, 404, NULL, "no job named %s", name);
        return;
    }
    if (ret == CF_ERR_PRECONDITION) {
        send_problem(res, 412, NULL, "job %s has changed since the version in If-Match", name);
        return;
    }
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot delete job");
        return;
    }
    scheduler_job_changed(api->cfg.scheduler, name);
    log_info("job deleted", "job=%s", name);
    http_set_body(res, 204, NULL, NULL, 0);
}

static void set_paused(struct api *api, const struct http_request *req, struct http_response *res,
                       bool paused)
{
    json_t *patch = json_pack("{s:b}", "paused", paused);

    if (!authorize(api, req, res, true)) {
        json_decref(patch);
        return;
    }
    patch_job(api, req->params[0], patch, 0, res);
    json_decref(patch);
}

static void handle_job_pause(void *ctx, const struct http_request *req, struct http_response *res)
{
    set_paused(ctx, req, res, true);
}

static void handle_job_resume(void *ctx, const struct http_request *req, struct http_response *res)
{
    set_paused(ctx, req, res, false);
}

static void handle_job_trigger(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    const char *name = req->params[0];
    struct run run;
    char reason[256] = "";
    char location[RUN_ID_MAX + 32];
    int ret;

    if (!authorize(api, req, res, true))
        return;
    if (!job_name_valid(name)) {
        send_problem(res, 404, NULL, "no job named %s", name);
        return;
    }
    ret = scheduler_trigger(api->cfg.scheduler, name, &run, reason, sizeof(reason));
    if (ret == CF_ERR_NOT_FOUND) {
        send_problem(res, 404, NULL, "no job named %s", name);
        return;
    }
    if (ret == CF_ERR_CONFLICT) {
        send_problem(res, 409, NULL, "cannot run %s now: %s", name, reason);
        return;
    }
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot trigger job");
        return;
    }
    log_info("job triggered", "job=%s run=%s", name, run.id);
    send_json(res, 202, run_to_json(&run));
    snprintf(location, sizeof(location), "/api/v1/runs/%s", run.id);
    http_add_header(res, "Location", location);
    run_clear(&run);
}

/* ---------------------------------------------------------------------- */
/* Runs                                                                     */
/* ---------------------------------------------------------------------- */

/* A run cursor is "<sort_at>~<id>" of the last run of the previous page. */
static bool parse_run_cursor(const char *text, struct db_run_query *query)
{
    const char *tilde = strchr(text, '~');
    char *end;

    if (tilde == NULL || strlen(tilde + 1) >= sizeof(query->cursor_id) || tilde[1] == '\0')
        return false;
    errno = 0;
    query->cursor_sort_at = strtoll(text, &end, 10);
    if (end != tilde || errno != 0)
        return false;
    snprintf(query->cursor_id, sizeof(query->cursor_id), "%s", tilde + 1);
    query->has_cursor = true;
    return true;
}

/* The query parameters of GET /api/v1/runs. */
static const char *const runs_list_query[] = {"job",   "status", "instance", "trigger", "since",
                                              "until", "limit",  "cursor",   NULL};

static void handle_runs_list(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct db_run_query query = {0};
    json_t *errors = json_array(), *items, *cursor = json_null();
    const char *status = http_query(req, "status"), *cursor_text = http_query(req, "cursor");
    const char *trigger = http_query(req, "trigger");
    struct run *runs = NULL;
    size_t count = 0;
    bool more = false;
    long limit;
    int ret;

    if (!authorize(api, req, res, false))
        goto out;
    query_int(req, "limit", 1, API_MAX_LIMIT, 50, &limit, errors);
    query_time(req, "since", INT64_MIN, &query.since_ms, errors);
    query_time(req, "until", INT64_MAX, &query.until_ms, errors);
    query.status = status != NULL ? run_status_parse(status) : -1;
    if (status != NULL && query.status < 0)
        add_error(errors, "status",
                  "must be one of running, succeeded, failed, fenced, skipped, missed, lost");
    query.trigger = trigger != NULL ? run_trigger_parse(trigger) : -1;
    if (trigger != NULL && query.trigger < 0)
        add_error(errors, "trigger", "must be one of schedule, manual, catchup, retry");
    if (cursor_text != NULL && !parse_run_cursor(cursor_text, &query))
        add_error(errors, "cursor", "is not a cursor this API returned");
    if (json_array_size(errors) > 0) {
        send_problem(res, 422, errors, "invalid query parameters");
        errors = NULL;
        goto out;
    }
    query.job = http_query(req, "job");
    query.instance = http_query(req, "instance");
    query.limit = (int)limit;
    ret = db_run_list(api->cfg.db, &query, &runs, &count, &more);
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot list runs");
        goto out;
    }
    items = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(items, run_to_json(&runs[i]));
    if (more && count > 0) {
        char text[RUN_ID_MAX + 32];

        snprintf(text, sizeof(text), "%lld~%s", (long long)db_run_sort_at(&runs[count - 1]),
                 runs[count - 1].id);
        cursor = json_string(text);
    }
    send_json(res, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", cursor));
    for (size_t i = 0; i < count; i++)
        run_clear(&runs[i]);
    free(runs);
out:
    json_decref(errors);
}

/* Reads run id into *run (run_clear() it), or answers 404 or the error and returns false. */
static bool read_run(struct api *api, const char *id, struct run *run, struct http_response *res)
{
    int ret = db_run_get(api->cfg.db, id, run);

    if (ret == CF_ERR_NOT_FOUND)
        send_problem(res, 404, NULL, "no run with id %s", id);
    else if (ret != CF_OK)
        send_error_code(res, ret, "cannot read run");
    return ret == CF_OK;
}

static void handle_run_get(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct run run;

    if (!authorize(api, req, res, false) || !read_run(api, req->params[0], &run, res))
        return;
    send_json(res, 200, run_to_json(&run));
    run_clear(&run);
}

/* POST /runs/{id}/retry: the run's slot fired again (DESIGN §3). */
static void handle_run_retry(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct run old, run;
    char reason[256] = "";
    char location[RUN_ID_MAX + 32];
    int ret;

    if (!authorize(api, req, res, true) || !read_run(api, req->params[0], &old, res))
        return;
    ret = scheduler_retry(api->cfg.scheduler, &old, &run, reason, sizeof(reason));
    if (ret == CF_ERR_NOT_FOUND) {
        send_problem(res, 404, NULL, "no job named %s", old.job);
    } else if (ret == CF_ERR_CONFLICT) {
        send_problem(res, 409, NULL, "cannot retry run %s: %s", old.id, reason);
    } else if (ret != CF_OK) {
        send_error_code(res, ret, "cannot retry run");
    } else {
        log_info("run retried", "job=%s run=%s retry_of=%s token=%lld", run.job, run.id, old.id,
                 (long long)run.fencing_token);
        send_json(res, 202, run_to_json(&run));
        snprintf(location, sizeof(location), "/api/v1/runs/%s", run.id);
        http_add_header(res, "Location", location);
        run_clear(&run);
    }
    run_clear(&old);
}

/* ---------------------------------------------------------------------- */
/* Schedule preview, cluster, health, metrics                              */
/* ---------------------------------------------------------------------- */

/* The query parameters of GET /api/v1/schedule/preview. */
static const char *const preview_query[] = {"schedule", "timezone", "count", "from", NULL};

static void handle_preview(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    const char *schedule = http_query(req, "schedule");
    const char *timezone = http_query(req, "timezone");
    json_t *errors = json_array(), *next;
    struct cron_schedule *cron = NULL;
    struct cron_error err = {0};
    const struct tz_zone *zone = NULL;
    char description[256], when[CF_TIME_LEN];
    int64_t from, instant;
    long count;

    if (!authorize(api, req, res, false))
        goto out;
    if (timezone == NULL || *timezone == '\0')
        timezone = "UTC";
    query_int(req, "count", 1, API_PREVIEW_MAX, 5, &count, errors);
    query_time(req, "from", cf_wall_ms(), &from, errors);
    if (schedule == NULL || *schedule == '\0') {
        add_error(errors, "schedule", "is required");
    } else if (cron_parse(schedule, &cron, &err) != CF_OK) {
        json_t *item = json_pack("{s:s, s:s, s:i}", "field", "schedule", "message", err.message,
                                 "position", err.position);

        json_array_append_new(errors, item);
    }
    zone = tz_get(timezone);
    if (zone == NULL)
        add_error(errors, "timezone", "is not a known IANA time zone");
    if (json_array_size(errors) > 0) {
        send_problem(res, 422, errors, "cannot preview this schedule");
        errors = NULL;
        goto out;
    }
    next = json_array();
    instant = from;
    /* Times have four-digit years: the list ends, shorter, at the end of 9999. */
    for (long i = 0; i < count && cron_next(cron, zone, instant, &instant) == CF_OK &&
                     instant <= CF_TIME_MAX_MS;
         i++)
        json_array_append_new(next, json_string(cf_format_time(instant, when)));
    cron_describe(cron, description, sizeof(description));
    send_json(res, 200,
              json_pack("{s:s, s:s, s:s, s:s, s:o}", "schedule", schedule, "timezone", timezone,
                        "description", description, "from", cf_format_time(from, when), "next",
                        next));
out:
    cron_free(cron);
    json_decref(errors);
}

static void handle_cluster(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;

    if (!authorize(api, req, res, false))
        return;
    send_json(res, 200, cluster_view(api->cfg.coord, api->cfg.db, cf_wall_ms()));
}

static void handle_events(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    int ret;

    if (!authorize(api, req, res, false))
        return;
    /* A viewer's stream shows jobs masked (redact.h). */
    ret = events_serve(api->cfg.events, http_header(req, "Last-Event-ID"),
                       access_of(api, req) != ACCESS_ADMIN, res);
    if (ret == CF_ERR_BUSY) {
        send_problem(res, 503, NULL, "too many event streams are open; retry later");
        http_add_header(res, "Retry-After", "5");
    } else if (ret != CF_OK) {
        send_error_code(res, ret, "cannot open the event stream");
    }
}

/* GET /api/v1/signing-secret: admin only, the default secret (DESIGN §6). */
static void handle_secret_get(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;

    if (!authorize(api, req, res, true))
        return;
    send_json(res, 200, signing_secrets_json(api->cfg.secrets));
    http_add_header(res, "Cache-Control", "no-store");
}

/* POST /api/v1/signing-secret/rotate: a new current; the old one signs for the overlap. */
static void handle_secret_rotate(void *ctx, const struct http_request *req,
                                 struct http_response *res)
{
    struct api *api = ctx;
    struct signing_secret_state state;
    int ret;

    if (!authorize(api, req, res, true))
        return;
    ret = signing_secrets_rotate(api->cfg.secrets, &state);
    OPENSSL_cleanse(&state, sizeof(state));
    if (ret != CF_OK) {
        send_error_code(res, ret, "cannot rotate the signing secret");
        return;
    }
    send_json(res, 200, signing_secrets_json(api->cfg.secrets));
    http_add_header(res, "Cache-Control", "no-store");
}

static void handle_healthz(void *ctx, const struct http_request *req, struct http_response *res)
{
    send_json(res, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    char reason[300] = "";
    bool database = db_check(api->cfg.db) == CF_OK;
    bool writable = database && db_storage_ok(reason, sizeof(reason));
    bool coordinator = api->cfg.coord->ops->ready(api->cfg.coord);
    const char *not_firing = scheduler_not_ready(api->cfg.scheduler);
    bool scheduler = not_firing == NULL;
    bool ready = writable && coordinator && scheduler;
    json_t *doc;

    if (!database)
        snprintf(reason, sizeof(reason), "database not readable");
    else if (writable && !coordinator)
        snprintf(reason, sizeof(reason), "no quorum of trusted redis nodes");
    else if (writable && !scheduler)
        snprintf(reason, sizeof(reason), "%s", not_firing);
    doc = json_pack("{s:s, s:b, s:b, s:b}", "status", ready ? "ready" : "not ready", "database",
                    writable, "coordinator", coordinator, "scheduler", scheduler);
    if (doc != NULL && !ready)
        json_object_set_new(doc, "reason", json_string(reason));
    send_json(res, ready ? 200 : 503, doc);
}

/* How a per-node gauge reads its field of a node object of GET /cluster. */
enum node_value { NODE_FLAG, NODE_LIST_LENGTH, NODE_MS_AS_SECONDS };

static const struct node_gauge {
    const char *name;
    const char *help;
    const char *field;
    enum node_value kind;
} node_gauges[] = {
    {"cronfence_redis_node_up", "Whether the Redis lock node answers (1) or not (0).", "up",
     NODE_FLAG},
    {"cronfence_redis_node_trusted",
     "Whether the node's counters are trusted for a quorum (0 while a wiped node is "
     "quarantined or repaired).",
     "trusted", NODE_FLAG},
    {"cronfence_redis_node_warnings",
     "Configuration warnings of the node (appendonly, appendfsync, maxmemory-policy against "
     "DESIGN 4.5, clock offset, missing trust marker); 0 when it is set up as lock nodes must be.",
     "warnings", NODE_LIST_LENGTH},
    {"cronfence_redis_node_latency_seconds",
     "Last round-trip time to the node (only while it is up).", "latency_ms", NODE_MS_AS_SECONDS},
};

/* Writes one family per node gauge, a series per node labelled with its host:port. */
static void write_node_gauges(FILE *out, json_t *nodes)
{
    for (size_t g = 0; g < sizeof(node_gauges) / sizeof(node_gauges[0]); g++) {
        const struct node_gauge *gauge = &node_gauges[g];

        fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauge->name, gauge->help, gauge->name);
        for (size_t i = 0; i < json_array_size(nodes); i++) {
            json_t *node = json_array_get(nodes, i);
            json_t *value = json_object_get(node, gauge->field);

            /* A latency not measured yet is no series rather than a made-up 0. */
            if (gauge->kind == NODE_MS_AS_SECONDS && !json_is_number(value))
                continue;
            fprintf(out, "%s{node=\"", gauge->name);
            metrics_write_label_value(out, json_string_value(json_object_get(node, "url")));
            if (gauge->kind == NODE_FLAG)
                fprintf(out, "\"} %d\n", json_is_true(value));
            else if (gauge->kind == NODE_LIST_LENGTH)
                fprintf(out, "\"} %zu\n", json_array_size(value));
            else
                fprintf(out, "\"} %.6f\n", json_number_value(value) / 1000.0);
        }
    }
}

/* The members of a status document that are up (departed ones are listed with up false). */
static size_t live_members(const json_t *members)
{
    size_t i, live = 0;
    json_t *member;

    json_array_foreach(members, i, member)
    {
        live += !json_is_false(json_object_get(member, "up"));
    }
    return live;
}

/* Writes the gauges read from the coordinator's status document (GET /cluster). */
static void write_cluster_gauges(FILE *out, json_t *status)
{
    json_t *nodes = json_object_get(status, "nodes"), *quorum;
    const char *mode = json_string_value(json_object_get(status, "mode"));

    fputs("# HELP cronfence_info This instance: version, mode (standalone or cluster) and id.\n"
          "# TYPE cronfence_info gauge\ncronfence_info{version=\"",
          out);
    metrics_write_label_value(out, CF_VERSION);
    fputs("\",mode=\"", out);
    metrics_write_label_value(out, mode);
    fputs("\",instance_id=\"", out);
    metrics_write_label_value(
        out, json_string_value(json_object_get(json_object_get(status, "instance"), "id")));
    fputs("\"} 1\n", out);
    fprintf(out,
            "# HELP cronfence_cluster_members Live instances this instance knows of, itself "
            "included.\n# TYPE cronfence_cluster_members gauge\ncronfence_cluster_members %zu\n",
            live_members(json_object_get(status, "members")));

    write_node_gauges(out, nodes);
    /* Standalone has no quorum to lose: its SQLite file is the only lock. */
    quorum = json_object_get(status, "quorum");
    fprintf(out,
            "# HELP cronfence_quorum_healthy Whether a quorum of trusted Redis nodes answers "
            "(always 1 in standalone mode).\n"
            "# TYPE cronfence_quorum_healthy gauge\ncronfence_quorum_healthy %d\n",
            json_is_object(quorum) ? json_is_true(json_object_get(quorum, "healthy")) : 1);
}

/* GET /metrics: the Prometheus text format, for admin and viewer tokens. */
static void handle_metrics(void *ctx, const struct http_request *req, struct http_response *res)
{
    struct api *api = ctx;
    struct scheduler_stats stats;
    json_t *status;
    char *text = NULL;
    size_t len = 0;
    FILE *out;
    int ret;

    if (!authorize(api, req, res, false))
        return;
    out = open_memstream(&text, &len);
    if (out == NULL) {
        send_error_code(res, CF_ERR_NOMEM, "cannot render metrics");
        return;
    }
    scheduler_get_stats(api->cfg.scheduler, &stats);
    fprintf(out,
            "# HELP cronfence_runs_in_flight Firings this instance is delivering now.\n"
            "# TYPE cronfence_runs_in_flight gauge\ncronfence_runs_in_flight %lld\n"
            "# HELP cronfence_jobs Jobs in the catalog that are scheduled (not paused).\n"
            "# TYPE cronfence_jobs gauge\ncronfence_jobs %lld\n"
            "# HELP cronfence_event_streams Clients following GET /api/v1/events now.\n"
            "# TYPE cronfence_event_streams gauge\ncronfence_event_streams %zu\n",
            (long long)stats.in_flight, (long long)stats.jobs,
            events_stream_count(api->cfg.events));
    ret = metrics_write(api->cfg.metrics, out);
    status = api->cfg.coord->ops->status(api->cfg.coord);
    if (status != NULL)
        write_cluster_gauges(out, status);
    json_decref(status);
    if (fclose(out) != 0 || ret != CF_OK || status == NULL) {
        free(text);
        send_error_code(res, CF_ERR_NOMEM, "cannot render metrics");
        return;
    }
    http_set_body(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* The API description is public: it holds no data of this instance. */
static void handle_openapi(void *ctx, const struct http_request *req, struct http_response *res)
{
    res->status = 200;
    res->content_type = "application/yaml";
    res->body = (char *)embedded_openapi.data;
    res->body_len = embedded_openapi.size;
    res->body_static = true;
}

/* The same document as JSON, for tools that read no YAML. */
static void handle_openapi_json(void *ctx, const struct http_request *req,
                                struct http_response *res)
{
    res->status = 200;
    res->content_type = "application/json";
    res->body = (char *)embedded_openapi_json.data;
    res->body_len = embedded_openapi_json.size;
    res->body_static = true;
}

/* ---------------------------------------------------------------------- */
/* The dashboard                                                            */
/* ---------------------------------------------------------------------- */

/*
 * The page may load only its own scripts, styles and API: no inline script
 * or style, no framing, no plugins.
 */
static const char content_security_policy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

static const char *content_type_of(const char *path)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');

    for (size_t i = 0; dot != NULL && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* Largest file --web-dir serves. */
#define API_WEB_FILE_MAX_BYTES ((size_t)16 * 1024 * 1024)

/*
 * Reads path (starting with "/") below the --web-dir folder into res. Paths
 * with a segment starting with "." (so "..", and hidden files) are refused,
 * and the resolved file must still lie inside the folder, so neither a
 * relative path nor a symbolic link can leave it. Returns false when there
 * is no such regular file.
 */
static bool read_web_dir(struct api *api, const char *path, struct http_response *res)
{
    char full[PATH_MAX], real[PATH_MAX];
    size_t root_len = strlen(api->web_root);
    struct stat st;
    char *data = NULL;
    FILE *file = NULL;
    bool ok = false;
    int fd;

    if (strstr(path, "/.") != NULL)
        return false;
    if (snprintf(full, sizeof(full), "%s%s", api->web_root, path) >= (int)sizeof(full))
        return false;
    if (realpath(full, real) == NULL || strncmp(real, api->web_root, root_len) != 0 ||
        (real[root_len] != '/' && strcmp(api->web_root, "/") != 0))
        return false;
    /* O_NONBLOCK: opening a FIFO must not block; a regular file reads the same with it. */
    fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    file = fdopen(fd, "rb");
    if (file == NULL) {
        close(fd);
        return false;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > API_WEB_FILE_MAX_BYTES)
        goto out;
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL || fread(data, 1, (size_t)st.st_size, file) != (size_t)st.st_size)
        goto out;
    http_set_body(res, 200, content_type_of(real), data, (size_t)st.st_size);
    data = NULL;
    ok = true;
out:
    free(data);
    if (file != NULL)
        fclose(file);
    return ok;
}

/*
 * Serves a file of the dashboard: by exact name from the table compiled
 * into the binary, so that no path is ever resolved on the file system, or
 * from the --web-dir folder.
 */
static bool serve_static(struct api *api, const struct http_request *req, struct http_response *res)
{
    const char *path = strcmp(req->path, "/") == 0 ? "/index.html" : req->path;
    bool found = false;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        return false;
    if (api->web_root != NULL) {
        found = read_web_dir(api, path, res);
    } else {
        for (const struct embedded_file *file = embedded_web; file->name != NULL; file++) {
            if (strcmp(file->name, path) != 0)
                continue;
            res->status = 200;
            res->content_type = content_type_of(file->name);
            res->body = (char *)file->data;
            res->body_len = file->size;
            res->body_static = true;
            found = true;
            break;
        }
    }
    if (!found)
        return false;
    http_add_header(res, "Content-Security-Policy", content_security_policy);
    http_add_header(res, "Referrer-Policy", "no-referrer");
    http_add_header(res, "X-Frame-Options", "DENY");
    return true;
}

void api_observe(void *ctx, const struct http_route *route, const char *method, int status)
{
    struct api *api = ctx;

    metrics_count_request(api->cfg.metrics, route != NULL ? route->pattern : NULL, method, status);
}

void api_not_found(void *ctx, const struct http_request *req, struct http_response *res,
                   bool method_mismatch)
{
    if (method_mismatch) {
        send_problem(res, 405, NULL, "method %s is not allowed on %s", req->method, req->path);
        return;
    }
    if (strncmp(req->path, "/api/", 5) != 0 && serve_static(ctx, req, res))
        return;
    send_problem(res, 404, NULL, "no such resource: %s", req->path);
}

/* ---------------------------------------------------------------------- */
/* Admission: Host, token and query parameters, before any body is read     */
/* ---------------------------------------------------------------------- */

/* An endpoint that takes no query parameter. */
static const char *const no_query[] = {NULL};

/*
 * What each handler takes: whether it needs a token, and its query
 * parameters (the lists sit next to the handlers). A route whose handler is
 * not listed here takes no query parameter, and its handler checks the
 * token itself (a body is never read without one anyway).
 */
static const struct endpoint {
    http_handler_fn handler;
    bool token;
    const char *const *query;
} endpoints[] = {
    {handle_healthz, false, no_query},         {handle_readyz, false, no_query},
    {handle_metrics, true, no_query},          {handle_jobs_list, true, jobs_list_query},
    {handle_jobs_create, true, no_query},      {handle_job_get, true, no_query},
    {handle_job_put, true, no_query},          {handle_job_patch, true, no_query},
    {handle_job_delete, true, no_query},       {handle_job_trigger, true, no_query},
    {handle_job_pause, true, no_query},        {handle_job_resume, true, no_query},
    {handle_runs_list, true, runs_list_query}, {handle_run_get, true, no_query},
    {handle_preview, true, preview_query},     {handle_cluster, true, no_query},
    {handle_events, true, no_query},           {handle_openapi, false, no_query},
    {handle_openapi_json, false, no_query},    {handle_jobs_validate, true, no_query},
    {handle_run_retry, true, no_query},        {handle_secret_get, true, no_query},
    {handle_secret_rotate, true, no_query},
};

static const struct endpoint *endpoint_of(const struct http_route *route)
{
    for (size_t i = 0; route != NULL && i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
        if (endpoints[i].handler == route->handler)
            return &endpoints[i];
    return NULL;
}

/* Longest parameter name quoted in an error. */
#define API_PARAM_NAME_SHOWN 64

/*
 * A printable copy of a parameter name (n bytes) for an error: bytes other
 * than printable ASCII become '?', and a name longer than
 * API_PARAM_NAME_SHOWN is cut and ends in "...".
 */
static char *printable(const char *text, size_t n, char out[API_PARAM_NAME_SHOWN + 4])
{
    size_t shown = n < API_PARAM_NAME_SHOWN ? n : API_PARAM_NAME_SHOWN;

    for (size_t i = 0; i < shown; i++)
        out[i] = text[i] >= 0x20 && text[i] < 0x7f ? text[i] : '?';
    out[shown] = '\0';
    if (n > shown)
        strcat(out, "...");
    return out;
}

static bool declared(const char *const *query, const struct http_param *param)
{
    for (size_t i = 0; query[i] != NULL; i++)
        if (strlen(query[i]) == param->key_len && memcmp(query[i], param->key, param->key_len) == 0)
            return true;
    return false;
}

/*
 * Checks the path and query of req against what the endpoint takes (any
 * parameter for the dashboard's files, where endpoint is NULL and route
 * too); appends an error per problem.
 */
static void check_target(const struct http_route *route, const struct endpoint *endpoint,
                         const struct http_request *req, json_t *errors)
{
    const struct http_target *target = req->target;
    const char *const *query = endpoint != NULL ? endpoint->query : no_query;
    char name[API_PARAM_NAME_SHOWN + 4];

    if (target == NULL)
        return;
    if (http_target_path_has_nul(target))
        add_error(errors, "path", "must not contain a NUL byte (%00)");
    for (size_t i = 0; i < target->param_count; i++) {
        const struct http_param *param = &target->params[i];

        printable(param->key, param->key_len, name);
        if (http_param_has_nul(param)) {
            add_error(errors, name, "must not contain a NUL byte (%00)");
        } else if (route != NULL && !declared(query, param)) {
            add_error(errors, name, "unknown query parameter");
        } else if (route != NULL && http_target_param(target, param->key) != param) {
            add_error(errors, name, "given more than once");
        }
    }
}

bool api_admit(void *ctx, const struct http_route *route, const struct http_request *req,
               struct http_response *res)
{
    struct api *api = ctx;
    const struct endpoint *endpoint = endpoint_of(route);
    enum access access = ACCESS_NONE;
    json_t *errors;

    if (api->cfg.loopback_hosts_only && !http_host_header_is_loopback(http_header(req, "Host"))) {
        send_problem(res, 421, field_error("Host", "must be localhost, 127.0.0.1 or [::1]"),
                     "this instance has no token configured and answers only requests "
                     "addressed to a loopback host");
        return false;
    }
    if ((endpoint != NULL && endpoint->token) || http_has_body(req)) {
        access = authenticate(api, req, res);
        if (access == ACCESS_NONE)
            return false;
    }
    errors = json_array();
    check_target(route, endpoint, req, errors);
    if (json_array_size(errors) == 0) {
        json_decref(errors);
        return true;
    }
    send_problem(res, 422, errors, "invalid request target");
    if (access != ACCESS_NONE)
        http_add_header(res, "Cronfence-Access", access == ACCESS_ADMIN ? "admin" : "viewer");
    return false;
}

static const struct http_route routes[] = {
    {"GET", "/healthz", handle_healthz},
    {"GET", "/readyz", handle_readyz},
    {"GET", "/metrics", handle_metrics},
    {"GET", "/api/v1/jobs", handle_jobs_list},
    {"POST", "/api/v1/jobs", handle_jobs_create},
    {"POST", "/api/v1/jobs/validate", handle_jobs_validate},
    {"GET", "/api/v1/jobs/{name}", handle_job_get},
    {"PUT", "/api/v1/jobs/{name}", handle_job_put},
    {"PATCH", "/api/v1/jobs/{name}", handle_job_patch},
    {"DELETE", "/api/v1/jobs/{name}", handle_job_delete},
    {"POST", "/api/v1/jobs/{name}/trigger", handle_job_trigger},
    {"POST", "/api/v1/jobs/{name}/pause", handle_job_pause},
    {"POST", "/api/v1/jobs/{name}/resume", handle_job_resume},
    {"GET", "/api/v1/runs", handle_runs_list},
    {"GET", "/api/v1/runs/{id}", handle_run_get},
    {"POST", "/api/v1/runs/{id}/retry", handle_run_retry},
    {"GET", "/api/v1/schedule/preview", handle_preview},
    {"GET", "/api/v1/cluster", handle_cluster},
    {"GET", "/api/v1/events", handle_events},
    {"GET", "/api/v1/openapi.yaml", handle_openapi},
    {"GET", "/api/v1/openapi.json", handle_openapi_json},
    {"GET", "/api/v1/signing-secret", handle_secret_get},
    {"POST", "/api/v1/signing-secret/rotate", handle_secret_rotate},
    {NULL, NULL, NULL},
};

const struct http_route *api_routes(void)
{
    return routes;
}

int api_new(const struct api_config *cfg, struct api **out, char *err, size_t errlen)
{
    struct api *api = calloc(1, sizeof(*api));

    *out = NULL;
    if (api == NULL)
        return CF_ERR_NOMEM;
    api->cfg = *cfg;
    if (authlimit_new(API_AUTH_FAILURE_BURST, API_AUTH_REFILL_MS, &api->auth_limit) != CF_OK) {
        api_free(api);
        return CF_ERR_NOMEM;
    }
    if (cfg->web_dir != NULL) {
        struct stat st;

        api->web_root = realpath(cfg->web_dir, NULL);
        if (api->web_root == NULL || stat(api->web_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "--web-dir %s is not a folder", cfg->web_dir);
            api_free(api);
            return CF_ERR_INVALID;
        }
    }
    *out = api;
    return CF_OK;
}

void api_free(struct api *api)
{
    if (api == NULL)
        return;
    authlimit_free(api->auth_limit);
    free(api->web_root);
    free(api);
}
