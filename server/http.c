/*
 * http.c - libmicrohttpd glue: the edge checks, body collection, routing,
 * responses.
 *
 * Per-request state is allocated when libmicrohttpd has read the request
 * line (its URI log callback, which sees the target as sent, before any
 * decoding) and freed only in the completion callback. The target is
 * decoded by http_parse.c, so that a %00 is seen rather than cutting the
 * path or a parameter short. Each connection is registered with a
 * connguard (connection notifications) for the header deadline and the
 * per-address cap of waiting connections.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "connguard.h"
#include "http_parse.h"
#include "log.h"

struct http_server {
    struct http_config cfg;
    struct MHD_Daemon *daemon;
    struct connguard *guard;
    uint16_t port;
};

/* State of one request across access callbacks. */
struct request_state {
    struct http_target target;
    bool target_ok; /* parsed (false only when out of memory) */
    bool started;   /* headers seen: the first access callback is over */
    struct http_request req;
    const struct http_route *route;
    bool path_matched; /* some route matched the path, perhaps not the method */
    struct http_body body;
    /* An answer made before the body (admit, 413): sent once the body is dropped. */
    bool answered;
    struct http_response early;
    size_t discarded_bytes;
};

/* One streaming response: the source and the connection it is sent on. */
struct http_stream {
    struct MHD_Connection *conn;
    int fd; /* the connection's socket, read when the response is made */
    const struct http_stream_ops *ops;
    void *source;
};

/* Bytes asked of a stream's source at a time. */
#define HTTP_STREAM_BLOCK_BYTES ((size_t)16 * 1024)

const char *http_query(const struct http_request *req, const char *key)
{
    const struct http_param *param;

    if (req->target == NULL)
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
    param = http_target_param(req->target, key);
    return param != NULL ? param->value : NULL;
}

bool http_has_body(const struct http_request *req)
{
    return req->content_length > 0 || req->chunked;
}

const struct sockaddr *http_client_address(const struct http_request *req)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    return info != NULL ? info->client_addr : NULL;
}

const char *http_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int http_add_header(struct http_response *res, const char *name, const char *value)
{
    char *copy;

    if (res->header_count == HTTP_MAX_HEADERS)
        return CF_ERR_TOO_LARGE;
    copy = strdup(value);
    if (copy == NULL)
        return CF_ERR_NOMEM;
    res->header_names[res->header_count] = name;
    res->header_values[res->header_count] = copy;
    res->header_count++;
    return CF_OK;
}

void http_set_body(struct http_response *res, int status, const char *content_type, char *body,
                   size_t len)
{
    if (!res->body_static)
        free(res->body);
    res->status = status;
    res->content_type = content_type;
    res->body = body;
    res->body_len = len;
    res->body_static = false;
}

void http_set_stream(struct http_response *res, int status, const char *content_type,
                     const struct http_stream_ops *ops, void *source)
{
    http_set_body(res, status, content_type, NULL, 0);
    res->stream_ops = ops;
    res->stream_source = source;
}

void http_stream_park(struct http_stream *stream)
{
    MHD_suspend_connection(stream->conn);
}

void http_stream_wake(struct http_stream *stream)
{
    MHD_resume_connection(stream->conn);
}

int http_stream_fd(const struct http_stream *stream)
{
    return stream->fd;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_stream *stream = cls;
    ssize_t n = stream->ops->read(stream->source, stream, buf, max);

    return n == HTTP_STREAM_END ? (ssize_t)MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void stream_free(void *cls)
{
    struct http_stream *stream = cls;

    stream->ops->close(stream->source);
    free(stream);
}

static void response_release(struct http_response *res)
{
    /* A stream not handed to libmicrohttpd is closed here. */
    if (res->stream_ops != NULL)
        res->stream_ops->close(res->stream_source);
    if (!res->body_static)
        free(res->body);
    for (int i = 0; i < res->header_count; i++)
        free(res->header_values[i]);
}

/* Matches path against pattern, capturing "{...}" segments into req->params. */
static bool route_matches(const char *pattern, const char *path, struct http_request *req)
{
    req->param_count = 0;
    while (*pattern != '\0') {
        if (pattern[0] == '*' && pattern[1] == '\0')
            return true;
        if (pattern[0] == '{') {
            size_t len = strcspn(path, "/");
            const char *close = strchr(pattern, '}');

            if (len == 0 || len >= HTTP_PARAM_MAX || req->param_count == HTTP_MAX_PARAMS)
                return false;
            memcpy(req->params[req->param_count], path, len);
            req->params[req->param_count][len] = '\0';
            req->param_count++;
            path += len;
            pattern = close != NULL ? close + 1 : pattern + strlen(pattern);
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *path == '\0';
}

/*
 * Finds the route for req's method and path, capturing its parameters into
 * req; NULL when none matches (*path_matched tells whether some route
 * matched the path with another method).
 */
static const struct http_route *find_route(struct http_server *server, struct http_request *req,
                                           bool *path_matched)
{
    *path_matched = false;
    for (const struct http_route *route = server->cfg.routes; route->pattern != NULL; route++) {
        if (!route_matches(route->pattern, req->path, req))
            continue;
        *path_matched = true;
        if (strcmp(route->method, "*") == 0 || strcmp(route->method, req->method) == 0 ||
            (strcmp(req->method, "HEAD") == 0 && strcmp(route->method, "GET") == 0))
            return route;
    }
    req->param_count = 0;
    return NULL;
}

/* Answers req with route, or with the fallback when route is NULL. */
static void dispatch(struct http_server *server, const struct http_route *route, bool path_matched,
                     struct http_request *req, struct http_response *res)
{
    char allow[128] = "";

    if (route != NULL) {
        route->handler(server->cfg.ctx, req, res);
        return;
    }
    server->cfg.not_found(server->cfg.ctx, req, res, path_matched);
    if (!path_matched)
        return;
    for (const struct http_route *r = server->cfg.routes; r->pattern != NULL; r++) {
        struct http_request probe = *req;

        if (route_matches(r->pattern, req->path, &probe))
            snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                     allow[0] ? ", " : "", r->method);
    }
    http_add_header(res, "Allow", allow);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct http_response *res)
{
    struct MHD_Response *response;
    enum MHD_Result ret;

    if (res->stream_ops != NULL) {
        struct http_stream *stream = calloc(1, sizeof(*stream));
        const union MHD_ConnectionInfo *info;

        if (stream == NULL)
            return MHD_NO;
        stream->conn = conn;
        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        stream->fd = info != NULL ? info->connect_fd : -1;
        stream->ops = res->stream_ops;
        stream->source = res->stream_source;
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK_BYTES,
                                                     stream_read, stream, stream_free);
        if (response == NULL) {
            free(stream);
            return MHD_NO;
        }
        /* From here on libmicrohttpd owns the source and closes it through stream_free. */
        res->stream_ops = NULL;
    } else {
        response = MHD_create_response_from_buffer(
            res->body_len, res->body ? res->body : (void *)"", MHD_RESPMEM_MUST_COPY);
    }
    if (response == NULL)
        return MHD_NO;
    if (res->content_type != NULL)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(response, "Cache-Control", "no-store");
    for (int i = 0; i < res->header_count; i++)
        MHD_add_response_header(response, res->header_names[i], res->header_values[i]);
    ret = MHD_queue_response(conn, (unsigned)res->status, response);
    MHD_destroy_response(response);
    return ret;
}

/* How much of a refused body is read and dropped before the connection is closed. */
#define HTTP_DISCARD_MAX_BYTES ((size_t)64 * 1024 * 1024)

/* Fills res with a static problem document. */
static void static_problem(struct http_response *res, int status, const char *body)
{
    memset(res, 0, sizeof(*res));
    res->status = status;
    res->content_type = "application/problem+json";
    res->body = (char *)body;
    res->body_len = strlen(body);
    res->body_static = true;
}

/* The connection's guard entry, or NULL. */
static struct connguard_conn *guard_entry(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return info != NULL ? info->socket_context : NULL;
}

/*
 * The first access callback of a request: its headers are in. Matches the
 * route, asks admit, checks the announced length. Returns false when the
 * connection must be closed (out of memory).
 */
static bool request_begin(struct http_server *server, struct MHD_Connection *conn,
                          struct request_state *state, const char *url, const char *method)
{
    static const char too_large[] =
        "{\"type\":\"about:blank\",\"title\":\"Content Too Large\",\"status\":413,"
        "\"detail\":\"request body exceeds the limit\",\"errors\":[]}";
    static const char bad_length[] =
        "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,"
        "\"detail\":\"invalid Content-Length\",\"errors\":[]}";
    struct http_request *req = &state->req;
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    uint64_t declared = 0;

    connguard_headers_done(server->guard, guard_entry(conn));
    state->started = true;
    req->method = method;
    req->path = state->target_ok ? state->target.path : url;
    req->target = state->target_ok ? &state->target : NULL;
    req->body = "";
    req->conn = conn;
    req->content_length = -1;
    req->chunked = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding") != NULL;
    if (length != NULL && http_parse_content_length(length, &declared) != CF_OK) {
        static_problem(&state->early, 400, bad_length);
        state->answered = true;
        return true;
    }
    if (length != NULL)
        req->content_length = (int64_t)declared;
    state->route = find_route(server, req, &state->path_matched);
    if (server->cfg.admit != NULL &&
        !server->cfg.admit(server->cfg.ctx, state->route, req, &state->early)) {
        state->answered = true;
        return true;
    }
    if (http_body_begin(&state->body, req->chunked ? -1 : req->content_length,
                        server->cfg.max_body_bytes) != CF_OK) {
        static_problem(&state->early, 413, too_large);
        state->answered = true;
    }
    return true;
}

/*
 * Takes upload bytes: kept in the body, or dropped after an early answer.
 * Returns MHD_NO to close the connection.
 */
static enum MHD_Result request_upload(struct http_server *server, struct request_state *state,
                                      const char *data, size_t size)
{
    static const char too_large[] =
        "{\"type\":\"about:blank\",\"title\":\"Content Too Large\",\"status\":413,"
        "\"detail\":\"request body exceeds the limit\",\"errors\":[]}";
    int ret;

    if (!state->answered) {
        ret = http_body_append(&state->body, data, size);
        if (ret == CF_ERR_NOMEM)
            return MHD_NO;
        if (ret == CF_OK)
            return MHD_YES;
        http_body_release(&state->body);
        static_problem(&state->early, 413, too_large);
        state->answered = true;
    }
    /*
     * Read and drop the rest, so that every client, even one that does not
     * read while it sends, gets the answer; but only up to
     * HTTP_DISCARD_MAX_BYTES, past which the connection is closed.
     */
    state->discarded_bytes += size;
    return state->discarded_bytes > HTTP_DISCARD_MAX_BYTES ? MHD_NO : MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct http_server *server = cls;
    struct request_state *state = *con_cls;
    const struct http_route *route = NULL;
    struct http_response res;
    enum MHD_Result ret;

    if (state == NULL) {
        /* No URI callback ran (should not happen): a state without a parsed target. */
        state = calloc(1, sizeof(*state));
        if (state == NULL)
            return MHD_NO;
        *con_cls = state;
    }
    if (!state->started) {
        const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");

        if (!request_begin(server, conn, state, url, method))
            return MHD_NO;
        /*
         * A client that waits for "100 Continue" before sending its body is
         * answered now: it sends nothing more, and libmicrohttpd closes the
         * connection after the answer.
         */
        if (!state->answered || expect == NULL || strcasecmp(expect, "100-continue") != 0)
            return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t incoming = *upload_data_size;

        *upload_data_size = 0;
        return request_upload(server, state, upload_data, incoming);
    }

    route = state->route;
    if (state->answered) {
        res = state->early;
        memset(&state->early, 0, sizeof(state->early));
    } else {
        memset(&res, 0, sizeof(res));
        state->req.body = state->body.data != NULL ? state->body.data : "";
        state->req.body_len = state->body.len;
        dispatch(server, route, state->path_matched, &state->req, &res);
    }
    if (strcmp(method, "HEAD") == 0) {
        res.body_len = 0;
        if (res.stream_ops != NULL) {
            res.stream_ops->close(res.stream_source);
            res.stream_ops = NULL;
        }
    }
    ret = send_response(conn, &res);
    if (server->cfg.observe != NULL)
        server->cfg.observe(server->cfg.ctx, route, method, res.status);
    response_release(&res);
    return ret;
}

/* libmicrohttpd's URI callback: the request line is in; uri is the target as sent. */
static void *request_created(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct request_state *state = calloc(1, sizeof(*state));

    if (state == NULL)
        return NULL;
    state->target_ok = http_target_parse(uri, strlen(uri), &state->target) == CF_OK;
    /* An empty body until request_begin() knows the announced length. */
    http_body_begin(&state->body, -1, 0);
    return state;
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct http_server *server = cls;
    struct request_state *state = *con_cls;

    connguard_request_done(server->guard, guard_entry(conn), cf_boot_ms());
    if (state == NULL)
        return;
    response_release(&state->early);
    http_body_release(&state->body);
    http_target_release(&state->target);
    free(state);
    *con_cls = NULL;
}

/* libmicrohttpd's connection callback: registers and forgets connections with the guard. */
static void connection_notified(void *cls, struct MHD_Connection *conn, void **socket_context,
                                enum MHD_ConnectionNotificationCode code)
{
    struct http_server *server = cls;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

        *socket_context =
            fd != NULL ? connguard_open(server->guard, fd->connect_fd,
                                        addr != NULL ? addr->client_addr : NULL, cf_boot_ms())
                       : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        connguard_close(server->guard, *socket_context);
        *socket_context = NULL;
    }
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    char quoted[600];

    log_debug("http server", "detail=\"%s\"", log_quote(line, quoted, sizeof(quoted)));
}

int http_parse_listen(const char *listen, char *host, size_t host_len, uint16_t *port)
{
    const char *colon;
    size_t len;
    char *end;
    long value;

    if (listen == NULL)
        return CF_ERR_INVALID;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');

        if (close == NULL || close[1] != ':')
            return CF_ERR_INVALID;
        len = (size_t)(close - listen - 1);
        if (len == 0 || len >= host_len)
            return CF_ERR_INVALID;
        memcpy(host, listen + 1, len);
        host[len] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL)
            return CF_ERR_INVALID;
        len = (size_t)(colon - listen);
        if (len >= host_len)
            return CF_ERR_INVALID;
        memcpy(host, listen, len);
        host[len] = '\0';
        if (len == 0)
            snprintf(host, host_len, "0.0.0.0");
    }
    value = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || value < 0 || value > 65535)
        return CF_ERR_INVALID;
    *port = (uint16_t)value;
    return CF_OK;
}

bool http_host_is_loopback(const char *host)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6);
    return false;
}

/*
 * Binds and listens on addr (addr_len bytes) without SO_REUSEPORT, so that
 * an address another process listens on is refused instead of shared
 * (SO_REUSEADDR only lets a restart bind over connections in TIME_WAIT).
 * Returns the socket, or -1 with errno.
 */
static int listen_socket(const struct sockaddr *addr, socklen_t addr_len)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1, saved;

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
        goto out_close;
    if (addr->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)))
        goto out_close;
    if (bind(fd, addr, addr_len) != 0 || listen(fd, SOMAXCONN) != 0)
        goto out_close;
    return fd;
out_close:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int http_start(const struct http_config *cfg, struct http_server **out, char *err, size_t errlen)
{
    struct http_server *server;
    struct sockaddr_storage addr = {0};
    socklen_t addr_len;
    char host[128];
    uint16_t port;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    const union MHD_DaemonInfo *info;
    int fd, ret;
    struct MHD_OptionItem tls_options[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };

    *out = NULL;
    if (cfg->tls_cert_pem != NULL)
        flags |= MHD_USE_TLS;
    else
        tls_options[0].option = MHD_OPTION_END;
    if (http_parse_listen(cfg->listen, host, sizeof(host), &port) != CF_OK) {
        snprintf(err, errlen, "invalid listen address %s, expected HOST:PORT", cfg->listen);
        return CF_ERR_INVALID;
    }
    if (strcasecmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&addr)->sin_addr) == 1) {
        ((struct sockaddr_in *)&addr)->sin_family = AF_INET;
        ((struct sockaddr_in *)&addr)->sin_port = htons(port);
        addr_len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&addr)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&addr)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
        addr_len = sizeof(struct sockaddr_in6);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "invalid listen address %s: host must be an IP address", cfg->listen);
        return CF_ERR_INVALID;
    }
    server = calloc(1, sizeof(*server));
    if (server == NULL)
        return CF_ERR_NOMEM;
    server->cfg = *cfg;
    ret = connguard_new(HTTP_HEADER_TIMEOUT_MS, HTTP_WAITING_PER_ADDRESS, true, &server->guard);
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot start the connection guard: %s", cf_err_str(ret));
        free(server);
        return ret;
    }
    fd = listen_socket((struct sockaddr *)&addr, addr_len);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen,
                 errno == EADDRINUSE ? "address already in use" : strerror(errno));
        connguard_free(server->guard);
        free(server);
        return CF_ERR_IO;
    }
    /* libmicrohttpd owns fd from here on and closes it when it stops. */
    server->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, access_handler, server, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, cfg->threads ? cfg->threads : 4u, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, server, MHD_OPTION_URI_LOG_CALLBACK, request_created, server,
        MHD_OPTION_NOTIFY_CONNECTION, connection_notified, server, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)2048,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTIONS_PER_ADDRESS,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, server, MHD_OPTION_ARRAY, tls_options, MHD_OPTION_END);
    if (server->daemon == NULL) {
        /* Whether a daemon that failed to start closed fd is not said: it is left alone. */
        snprintf(err, errlen, "cannot serve on %s%s", cfg->listen,
                 cfg->tls_cert_pem != NULL ? " (the certificate may be refused)" : "");
        connguard_free(server->guard);
        free(server);
        return CF_ERR_IO;
    }
    info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    server->port = info != NULL ? info->port : port;
    *out = server;
    return CF_OK;
}

uint16_t http_port(const struct http_server *server)
{
    return server->port;
}

void http_stop(struct http_server *server)
{
    if (server == NULL)
        return;
    MHD_stop_daemon(server->daemon);
    connguard_free(server->guard);
    free(server);
}
