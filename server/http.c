/*
 * http.c - libmicrohttpd glue: body collection, routing, responses.
 *
 * libmicrohttpd hands over the path already percent-decoded.
 * Per-request state is allocated on the first access callback and freed
 * only in the completion callback, as libmicrohttpd's examples do.
 */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "log.h"

struct http_server {
    struct http_config cfg;
    struct MHD_Daemon *daemon;
    uint16_t port;
};

/* State of one request across access callbacks. */
struct request_state {
    char *body;
    size_t body_len;
    size_t body_cap;
    bool too_large;
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

/* How much of an oversized body is read and dropped before the connection is closed. */
#define HTTP_DISCARD_MAX_BYTES ((size_t)64 * 1024 * 1024)

const char *http_query(const struct http_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
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

/* Answers req into res; returns the route that answered, or NULL for the fallback. */
static const struct http_route *dispatch(struct http_server *server, struct http_request *req,
                                         struct http_response *res)
{
    bool path_matched = false;
    char allow[128] = "";

    for (const struct http_route *route = server->cfg.routes; route->pattern != NULL; route++) {
        if (!route_matches(route->pattern, req->path, req))
            continue;
        path_matched = true;
        snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s", allow[0] ? ", " : "",
                 route->method);
        if (strcmp(route->method, "*") == 0 || strcmp(route->method, req->method) == 0 ||
            (strcmp(req->method, "HEAD") == 0 && strcmp(route->method, "GET") == 0)) {
            route->handler(server->cfg.ctx, req, res);
            return route;
        }
    }
    req->param_count = 0;
    server->cfg.not_found(server->cfg.ctx, req, res, path_matched);
    if (path_matched)
        http_add_header(res, "Allow", allow);
    return NULL;
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

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct http_server *server = cls;
    struct request_state *state = *con_cls;
    const struct http_route *route = NULL;
    struct http_request req;
    struct http_response res;
    enum MHD_Result ret;

    if (state == NULL) {
        state = calloc(1, sizeof(*state));
        if (state == NULL)
            return MHD_NO;
        *con_cls = state;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t incoming = *upload_data_size;

        *upload_data_size = 0;
        if (state->too_large || state->body_len + incoming > server->cfg.max_body_bytes) {
            /*
             * Read and drop the rest, so that every client, even one that
             * does not read while it sends, gets the 413; but only up to
             * HTTP_DISCARD_MAX_BYTES, past which the connection is closed.
             */
            state->too_large = true;
            state->discarded_bytes += incoming;
            return state->discarded_bytes > HTTP_DISCARD_MAX_BYTES ? MHD_NO : MHD_YES;
        }
        if (state->body_len + incoming + 1 > state->body_cap) {
            size_t cap = state->body_cap ? state->body_cap : 4096;
            char *grown;

            while (cap < state->body_len + incoming + 1)
                cap *= 2;
            grown = realloc(state->body, cap);
            if (grown == NULL)
                return MHD_NO;
            state->body = grown;
            state->body_cap = cap;
        }
        memcpy(state->body + state->body_len, upload_data, incoming);
        state->body_len += incoming;
        state->body[state->body_len] = '\0';
        return MHD_YES;
    }

    memset(&res, 0, sizeof(res));
    if (state->too_large) {
        static const char body[] =
            "{\"type\":\"about:blank\",\"title\":\"Content Too Large\",\"status\":413,"
            "\"detail\":\"request body exceeds the limit\",\"errors\":[]}";

        res.status = 413;
        res.content_type = "application/problem+json";
        res.body = (char *)body;
        res.body_len = sizeof(body) - 1;
        res.body_static = true;
    } else {
        memset(&req, 0, sizeof(req));
        req.method = method;
        req.path = url;
        req.body = state->body ? state->body : "";
        req.body_len = state->body_len;
        req.conn = conn;
        route = dispatch(server, &req, &res);
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

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct request_state *state = *con_cls;

    if (state == NULL)
        return;
    free(state->body);
    free(state);
    *con_cls = NULL;
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

int http_start(const struct http_config *cfg, struct http_server **out, char *err, size_t errlen)
{
    struct http_server *server;
    struct sockaddr_storage addr = {0};
    char host[128];
    uint16_t port;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    const union MHD_DaemonInfo *info;
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
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&addr)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&addr)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "invalid listen address %s: host must be an IP address", cfg->listen);
        return CF_ERR_INVALID;
    }
    server = calloc(1, sizeof(*server));
    if (server == NULL)
        return CF_ERR_NOMEM;
    server->cfg = *cfg;
    server->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, access_handler, server, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_THREAD_POOL_SIZE, cfg->threads ? cfg->threads : 4u, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, server, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)2048, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, server,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_ARRAY, tls_options,
        MHD_OPTION_END);
    if (server->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on %s (address in use or not available%s)",
                 cfg->listen, cfg->tls_cert_pem != NULL ? ", or the certificate refused" : "");
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
    free(server);
}
