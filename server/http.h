/*
 * http.h - the HTTP server: connections, request bodies, routing by table,
 * responses. It knows routes and bytes, not jobs.
 *
 * Built on libmicrohttpd with its internal thread pool. Once a request's
 * headers are in, the admit callback may answer it before any of its body
 * is read (authorisation comes before the body). An admitted body is
 * collected up to max_body_bytes into a buffer never larger than its
 * Content-Length; a larger one is answered 413 without reaching a handler.
 * Handlers run on the pool's threads and must be thread-safe.
 *
 * The edge (DESIGN §9): request headers must be complete within
 * HTTP_HEADER_TIMEOUT_MS of a connection's start or of its previous
 * response; at most HTTP_WAITING_PER_ADDRESS connections of one client
 * address may wait for their headers at once (a new one beyond that drops
 * the address's oldest waiting one, see connguard.h), and at most
 * HTTP_CONNECTIONS_PER_ADDRESS may be open at once. The listening socket is
 * never shared: an address in use is an error.
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

/* Time a connection has to send complete request headers. */
#define HTTP_HEADER_TIMEOUT_MS 10000
/* Connections of one address that may wait for request headers at once. */
#define HTTP_WAITING_PER_ADDRESS 32
/* Connections of one address that may be open at once (libmicrohttpd refuses more). */
#define HTTP_CONNECTIONS_PER_ADDRESS 256

struct http_target;
struct sockaddr;

struct http_request {
    const char *method;
    const char *path; /* URL-decoded, without the query */
    const char *body; /* NUL-terminated; "" when none */
    size_t body_len;
    /* Path parameters captured by the route's "{...}" segments. */
    char params[HTTP_MAX_PARAMS][HTTP_PARAM_MAX];
    int param_count;
    void *conn; /* the libmicrohttpd connection, for http_query/http_header */
    /* The request target as parsed by http_parse.c (path and every query parameter). */
    const struct http_target *target;
    /* The Content-Length, or -1 when the request announced none (no body, or chunked). */
    int64_t content_length;
    bool chunked; /* Transfer-Encoding was given: a body of unknown length follows */
};

/*
 * A query argument (URL-decoded), or NULL when absent; the first one when
 * given twice. Borrowed.
 */
const char *http_query(const struct http_request *req, const char *key);

/* Whether the request carries a body (a Content-Length above 0, or chunked). */
bool http_has_body(const struct http_request *req);

/* The client's address, or NULL when unknown. Borrowed. */
const struct sockaddr *http_client_address(const struct http_request *req);

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
     * Called after each answer is queued, with the route the request matched
     * (NULL when none did, as for not_found; an early answer from admit or a
     * refused body counts for its route) and the status sent; may be NULL.
     */
    void (*observe)(void *ctx, const struct http_route *route, const char *method, int status);
    /*
     * Called once a request's headers are in, before any of its body is
     * read, with the route that matches it (NULL when none does; req has its
     * path parameters). Returns true to go on; false after answering into
     * res: the body is then read and dropped (up to a bound, so that a
     * client that sends before it reads still gets the answer), never kept,
     * and no handler runs. May be NULL.
     */
    bool (*admit)(void *ctx, const struct http_route *route, const struct http_request *req,
                  struct http_response *res);
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
 * (cannot bind, as when another process listens on the address: the socket
 * is bound without SO_REUSEPORT, or the TLS library refused the
 * certificate) with a message
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
