/*
 * cli_http.h - the command-line client's HTTP exchanges with a cronfence
 * API (libcurl): JSON in, JSON out, bearer token, problem+json errors.
 */
#ifndef CF_CLI_HTTP_H
#define CF_CLI_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* Where and as whom the client talks; both strings borrowed. */
struct cli_server {
    const char *url;   /* "http://127.0.0.1:8080", no trailing path */
    const char *token; /* bearer token; NULL sends none */
    long timeout_ms;   /* per request */
};

/* One answer. Release with cli_response_release(). */
struct cli_response {
    long status;   /* HTTP status */
    json_t *body;  /* owned; NULL when the body is empty or not JSON */
    char etag[64]; /* the ETag header, "" when absent */
    bool viewer;   /* Cronfence-Access: viewer (a token that may only read) */
};

/*
 * Sends method path (path and query, already escaped) with body (borrowed,
 * NULL for none) as JSON, and If-Match: if_match when not NULL. Returns
 * CF_OK with any HTTP status in *res, or CF_ERR_IO with a message in err
 * when no answer came (connection refused, timeout, TLS failure), or
 * CF_ERR_NOMEM.
 */
int cli_http_request(const struct cli_server *server, const char *method, const char *path,
                     const json_t *body, const char *if_match, struct cli_response *res, char *err,
                     size_t errlen);

/* Frees what res holds and clears it; accepts a cleared response. */
void cli_response_release(struct cli_response *res);

/*
 * Writes an error answer readably to out: "error: DETAIL (HTTP STATUS)"
 * then one "  FIELD: MESSAGE" line per entry of the problem's errors list.
 */
void cli_http_print_problem(FILE *out, const struct cli_response *res);

/*
 * Appends text to buffer (at most cap bytes, NUL included) escaped for a
 * URL path segment or query value. Returns false when it does not fit.
 */
bool cli_http_escape(char *buffer, size_t cap, const char *text);

#endif
