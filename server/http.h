/*
 * http.h - the HTTP server: connections, request bodies, routing by table,
 * responses. It knows routes and bytes, not jobs.
 *
 * Built on libmicrohttpd with its internal thread pool. A request's body is
 * collected up to max_body_bytes; a larger one is answered 413 without
 * reaching a handler. Handlers run on the pool's threads and must be
 * thread-safe.
 */
#ifndef CF_HTTP_H
#define CF_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_MAX_PARAMS 4
#define HTTP_PARAM_MAX 256
#define HTTP_MAX_HEADERS 8

struct http_request {
    const char *method;
    const char *path; /* URL-decoded, without the query */
    const char *body; /* NUL-terminated; "" when none */
    size_t body_len;
    /* Path parameters captured by the route's "{...}" segments. */
    char params[HTTP_MAX_PARAMS][HTTP_PARAM_MAX];
    int param_count;
    void *conn; /* the libmicrohttpd connection, for http_query/http_header */
};

/* A query argument (URL-decoded), or NULL when absent. Borrowed. */
const char *http_query(const struct http_request *req, const char *key);

/* A request header (case-insensitive name), or NULL. Borrowed. */
const char *http_header(const struct http_request *req, const char *name);

struct http_stream;
struct http_stream_ops;

struct http_response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* owned (malloc); may be NULL */
    size_t body_len;
    bool body_static;                           /* body points to static data: not freed */
    const char *header_names[HTTP_MAX_HEADERS]; /* static strings */
    char *header_values[HTTP_MAX_HEADERS];      /* owned */
    int header_count;
    /* A streaming body instead of body (see http_set_stream). */
    const struct http_stream_ops *stream_ops;
    void *stream_source;
};

/* Adds a header; value is copied. Returns CF_OK or CF_ERR_NOMEM / CF_ERR_TOO_LARGE. */
int http_add_header(struct http_response *res, const char *name, const char *value);

/* Sets an owned body (steals body, which must be malloc'd). */
void http_set_body(struct http_response *res, int status, const char *content_type, char *body,
                   size_t len);

/*
 * A body produced over time, such as Server-Sent Events. http.c calls
 * read() on a pool thread whenever the client can take more. It returns
 * the bytes it wrote to buf (at most max), HTTP_STREAM_END to finish the
 * response, or 0 after calling http_stream_park(), which takes the
 * connection off the pool, without a thread, until http_stream_wake().
 * close() is called once, when the connection ends or the response could
 * not be sent; source is not used after it.
 */
struct http_stream_ops {
    ssize_t (*read)(void *source, struct http_stream *stream, char *buf, size_t max);
    void (*close)(void *source);
};

#define HTTP_STREAM_END ((ssize_t)-1)

/*
 * Makes the response a stream of unknown length (chunked in HTTP/1.1) read
 * from source through ops; source is handed over: http.c calls close() on
 * it in every case.
 */
void http_set_stream(struct http_response *res, int status, const char *content_type,
                     const struct http_stream_ops *ops, void *source);

/*
 * Parks the stream: only from read(), which then returns 0. A parked
 * connection does not notice that its client went away until it is woken
 * and writes. The caller must serialise park and wake (one lock around
 * both) so that a wake cannot be lost.
 */
void http_stream_park(struct http_stream *stream);

/* Wakes a parked stream: read() is called again soon. Only on a parked stream. */
void http_stream_wake(struct http_stream *stream);

/*
 * The stream's socket, for watching whether the client of a parked stream
 * went away (poll for POLLRDHUP); -1 when unknown. Borrowed: never close it.
 */
int http_stream_fd(const struct http_stream *stream);

typedef void (*http_handler_fn)(void *ctx, const struct http_request *req,
                                struct http_response *res);

/*
 * A route: method ("GET", or "*" for any) and a path pattern where "{name}"
 * (any name in braces) matches one segment ("/api/v1/jobs/{name}/trigger"),
 * or a prefix ending in "*" (as in "/assets/" followed by "*").
 */
struct http_route {
    const char *method;
    const char *pattern;
    http_handler_fn handler;
};

struct http_config {
    const char *listen;              /* "HOST:PORT", "[::1]:PORT"; port 0 picks a free one */
    const struct http_route *routes; /* terminated by a route with pattern NULL; borrowed */
    /* Called when no route matches the path (or, with method_mismatch, only the method). */
    void (*not_found)(void *ctx, const struct http_request *req, struct http_response *res,
                      bool method_mismatch);
    /*
     * Called after each answer is queued, with the route that answered (NULL
     * for not_found or a refused body) and the status sent; may be NULL.
     */
    void (*observe)(void *ctx, const struct http_route *route, const char *method, int status);
    void *ctx;
    size_t max_body_bytes;
    unsigned threads;
    /* PEM certificate chain and key to serve HTTPS (borrowed); both NULL: plain HTTP. */
    const char *tls_cert_pem;
    const char *tls_key_pem;
};

struct http_server;

/*
 * Binds and starts serving (over TLS when tls_cert_pem is given). Returns
 * CF_OK with *out, or CF_ERR_INVALID (bad listen address) / CF_ERR_IO
 * (cannot bind, or the TLS library refused the certificate) with a message
 * in err.
 */
int http_start(const struct http_config *cfg, struct http_server **out, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
uint16_t http_port(const struct http_server *server);

/* Stops serving and frees the server; accepts NULL. */
void http_stop(struct http_server *server);

/*
 * Splits "HOST:PORT" or "[V6]:PORT" into host (without brackets) and port.
 * Returns CF_OK or CF_ERR_INVALID.
 */
int http_parse_listen(const char *listen, char *host, size_t host_len, uint16_t *port);

/* Whether host is a loopback address or "localhost". */
bool http_host_is_loopback(const char *host);

#endif
