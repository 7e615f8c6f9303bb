/*
 * api.h - the REST API of DESIGN §6, the health endpoints, metrics and the
 * embedded dashboard, as routes of the HTTP server.
 */
#ifndef CF_API_H
#define CF_API_H

#include <stdbool.h>
#include <stddef.h>

#include "coord.h"
#include "db.h"
#include "events.h"
#include "http.h"
#include "job.h"
#include "metrics.h"
#include "scheduler.h"

struct signing_secrets;

struct api_config {
    struct db *db;                   /* the API's own handle; borrowed */
    struct coord *coord;             /* borrowed */
    struct scheduler *scheduler;     /* borrowed */
    const struct job_limits *limits; /* borrowed */
    char **admin_tokens;             /* borrowed arrays of tokens */
    size_t admin_token_count;
    char **viewer_tokens;
    size_t viewer_token_count;
    size_t max_body_bytes;
    const char *web_dir;     /* NULL: serve the dashboard built into the binary */
    struct events *events;   /* borrowed: GET /api/v1/events */
    struct metrics *metrics; /* borrowed: GET /metrics and the request counts */
    /* GET /api/v1/signing-secret and its rotation; borrowed. */
    struct signing_secrets *secrets;
    /* Tokenless mode: answer only requests whose Host is a loopback name (DNS rebinding). */
    bool loopback_hosts_only;
};

struct api;

/*
 * Creates the API; cfg is copied (what it points to is borrowed). Returns
 * CF_OK with *out, CF_ERR_NOMEM, or CF_ERR_INVALID with a message in err
 * when web_dir is not a folder.
 */
int api_new(const struct api_config *cfg, struct api **out, char *err, size_t errlen);

/* Frees the API; accepts NULL. */
void api_free(struct api *api);

/* The route table, fallback and request observer for http_start(); ctx is the api. */
const struct http_route *api_routes(void);
void api_not_found(void *ctx, const struct http_request *req, struct http_response *res,
                   bool method_mismatch);
void api_observe(void *ctx, const struct http_route *route, const char *method, int status);

/*
 * The admit callback for http_start() (see http.h): before a body is read,
 * refuses a Host other than loopback in tokenless mode (421), a request
 * without a valid token where one is needed or where a body follows (401,
 * or 429 while the client's address is rate-limited for failed tokens),
 * and a NUL byte in the path or query or a query parameter the endpoint
 * does not declare (422).
 */
bool api_admit(void *ctx, const struct http_route *route, const struct http_request *req,
               struct http_response *res);

/* The HTTP status an error code maps to (the one table of DESIGN's errors). */
int api_status_for(int err);

#endif
