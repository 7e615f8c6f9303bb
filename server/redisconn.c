/*
 * redisconn.c - a Redis connection: our socket, optional OpenSSL session,
 * hiredis's reader.
 *
 * Representation: out holds the bytes appended and not yet written,
 * [out_start, out_len) of out_cap. With TLS, a write that OpenSSL could not
 * finish must be retried with the same bytes (it may have taken some into
 * its record already), which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows
 * even when the buffer moved; write_wants_read and read_wants_write record
 * the session asking for the other direction, so redisconn_events() polls
 * for what it waits on.
 */
#include "redisconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

/* Bytes read per read() or SSL_read() call. */
#define REDISCONN_READ_CHUNK 16384

struct redisconn {
    int fd;
    SSL *ssl; /* NULL for plain TCP */
    redisReader *reader;
    char *out;
    size_t out_start, out_len, out_cap;
    bool write_wants_read; /* the last SSL_write asked for input first */
    bool read_wants_write; /* the last SSL_read asked for output first */
    char error[160];
};

/* ---------------------------------------------------------------------- */
/* TLS context                                                              */
/* ---------------------------------------------------------------------- */

/* The oldest OpenSSL error queued on this thread, as text, and clears the queue. */
static void ssl_error_text(char *out, size_t size, const char *fallback)
{
    unsigned long code = ERR_get_error();

    if (code == 0)
        snprintf(out, size, "%s", fallback);
    else
        ERR_error_string_n(code, out, size);
    ERR_clear_error();
}

int redisconn_tls_context(const char *ca_file, SSL_CTX **out, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[160];

    *out = NULL;
    if (ctx == NULL) {
        ssl_error_text(why, sizeof(why), "out of memory");
        snprintf(err, errlen, "cannot create the tls context: %s", why);
        return CF_ERR_INVALID;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
                        : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ssl_error_text(why, sizeof(why), "no certificate found");
        if (ca_file != NULL)
            snprintf(err, errlen, "cannot read --redis-ca %s: %s", ca_file, why);
        else
            snprintf(err, errlen, "cannot load the system CA certificates: %s", why);
        SSL_CTX_free(ctx);
        return CF_ERR_INVALID;
    }
    *out = ctx;
    return CF_OK;
}

/* ---------------------------------------------------------------------- */
/* Opening                                                                  */
/* ---------------------------------------------------------------------- */

/* Waits until fd is ready for events or the deadline passed; false on the deadline or an error. */
static bool wait_ready(int fd, short events, int64_t deadline_boot_ms)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int64_t remaining = deadline_boot_ms - cf_boot_ms();
        int ready;

        if (remaining <= 0)
            return false;
        ready = poll(&pfd, 1, (int)remaining);
        if (ready > 0)
            return true;
        if (ready == 0 || errno != EINTR)
            return false;
    }
}

/* A non-blocking socket connected to one of host's addresses, or -1 with why. */
static int connect_tcp(const char *host, int port, int64_t deadline_boot_ms, char *why,
                       size_t why_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *addresses = NULL;
    char service[8];
    int fd = -1, rc;

    snprintf(service, sizeof(service), "%d", port);
    rc = getaddrinfo(host, service, &hints, &addresses);
    if (rc != 0) {
        snprintf(why, why_len, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    snprintf(why, why_len, "connection refused or timed out");
    for (struct addrinfo *a = addresses; a != NULL; a = a->ai_next) {
        int so_error = 0, one = 1;
        socklen_t len = sizeof(so_error);

        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS && wait_ready(fd, POLLOUT, deadline_boot_ms) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 && so_error == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(addresses);
    return fd;
}

/* Runs the TLS handshake on c until done or the deadline; false with why. */
static bool handshake_tls(struct redisconn *c, SSL_CTX *tls, const char *host,
                          int64_t deadline_boot_ms, char *why, size_t why_len)
{
    unsigned char address[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;

    ERR_clear_error();
    c->ssl = SSL_new(tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        ssl_error_text(why, why_len, "out of memory");
        return false;
    }
    /* The certificate must name the host of the URL: a DNS name or an IP address. */
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1
              : SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1) {
        ssl_error_text(why, why_len, "cannot set the expected host name");
        return false;
    }
    for (;;) {
        int rc = SSL_connect(c->ssl), reason;
        short events;

        if (rc == 1)
            return true;
        reason = SSL_get_error(c->ssl, rc);
        if (reason == SSL_ERROR_WANT_READ)
            events = POLLIN;
        else if (reason == SSL_ERROR_WANT_WRITE)
            events = POLLOUT;
        else {
            long verify = SSL_get_verify_result(c->ssl);

            if (verify != X509_V_OK)
                snprintf(why, why_len, "tls certificate refused: %s",
                         X509_verify_cert_error_string(verify));
            else
                ssl_error_text(why, why_len, "tls handshake failed");
            ERR_clear_error();
            return false;
        }
        if (!wait_ready(c->fd, events, deadline_boot_ms)) {
            snprintf(why, why_len, "tls handshake timed out");
            return false;
        }
    }
}

struct redisconn *redisconn_open(const char *host, int port, SSL_CTX *tls, int64_t deadline_boot_ms,
                                 char *why, size_t why_len)
{
    struct redisconn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->reader = redisReaderCreate();
    if (c->reader == NULL) {
        snprintf(why, why_len, "out of memory");
        goto out_free;
    }
    c->fd = connect_tcp(host, port, deadline_boot_ms, why, why_len);
    if (c->fd < 0)
        goto out_free;
    if (tls != NULL && !handshake_tls(c, tls, host, deadline_boot_ms, why, why_len))
        goto out_free;
    return c;

out_free:
    redisconn_free(c);
    return NULL;
}

void redisconn_free(struct redisconn *c)
{
    if (c == NULL)
        return;
    /* No close_notify: the peer learns from the closed socket, and a send here could block. */
    SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    free(c->out);
    free(c);
}

/* ---------------------------------------------------------------------- */
/* I/O                                                                      */
/* ---------------------------------------------------------------------- */

int redisconn_fd(const struct redisconn *c)
{
    return c->fd;
}

bool redisconn_unflushed(const struct redisconn *c)
{
    return c->out_len > c->out_start;
}

short redisconn_events(const struct redisconn *c)
{
    bool write = (redisconn_unflushed(c) && !c->write_wants_read) || c->read_wants_write;

    return (short)(POLLIN | (write ? POLLOUT : 0));
}

int redisconn_append(struct redisconn *c, const char *resp, size_t len)
{
    if (c->out_start > 0 && c->out_start == c->out_len)
        c->out_start = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        char *grown;

        while (cap < c->out_len + len)
            cap *= 2;
        grown = realloc(c->out, cap);
        if (grown == NULL)
            return CF_ERR_NOMEM;
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, resp, len);
    c->out_len += len;
    return CF_OK;
}

int redisconn_append_argv(struct redisconn *c, int argc, const char **argv)
{
    char *resp = NULL;
    int len = redisFormatCommandArgv(&resp, argc, argv, NULL);
    int ret;

    if (len < 0)
        return CF_ERR_NOMEM;
    ret = redisconn_append(c, resp, (size_t)len);
    redisFreeCommand(resp);
    return ret;
}

/* Records why the connection failed; returns CF_ERR_IO. */
static int fail(struct redisconn *c, const char *why)
{
    snprintf(c->error, sizeof(c->error), "%s", why);
    return CF_ERR_IO;
}

/* Records the OpenSSL error of a failed call, or errno's for a failed system call. */
static int fail_ssl(struct redisconn *c, int reason)
{
    char why[sizeof(c->error)];

    if (reason == SSL_ERROR_ZERO_RETURN)
        return fail(c, "server closed the connection");
    if (reason == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return fail(c, errno != 0 ? strerror(errno) : "server closed the connection");
    ssl_error_text(why, sizeof(why), "tls error");
    return fail(c, why);
}

int redisconn_flush(struct redisconn *c)
{
    while (redisconn_unflushed(c)) {
        size_t left = c->out_len - c->out_start;

        if (c->ssl != NULL) {
            int rc, reason;

            ERR_clear_error();
            errno = 0;
            rc = SSL_write(c->ssl, c->out + c->out_start, left > INT32_MAX ? INT32_MAX : (int)left);
            c->write_wants_read = false;
            if (rc > 0) {
                c->out_start += (size_t)rc;
                if ((size_t)rc < left)
                    return CF_OK; /* the socket is full: poll says when it takes more */
                continue;
            }
            reason = SSL_get_error(c->ssl, rc);
            if (reason == SSL_ERROR_WANT_WRITE)
                return CF_OK;
            if (reason == SSL_ERROR_WANT_READ) {
                c->write_wants_read = true;
                return CF_OK;
            }
            return fail_ssl(c, reason);
        } else {
            ssize_t sent = send(c->fd, c->out + c->out_start, left, MSG_NOSIGNAL);

            if (sent >= 0) {
                c->out_start += (size_t)sent;
                if ((size_t)sent < left)
                    return CF_OK; /* the socket is full: poll says when it takes more */
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return CF_OK;
            if (errno == EINTR)
                continue;
            return fail(c, strerror(errno));
        }
    }
    c->out_start = c->out_len = 0;
    return CF_OK;
}

/* Hands n bytes read to the reply reader. */
static int feed(struct redisconn *c, const char *buf, size_t n)
{
    if (redisReaderFeed(c->reader, buf, n) != REDIS_OK)
        return fail(c, c->reader->errstr[0] ? c->reader->errstr : "out of memory");
    return CF_OK;
}

int redisconn_read(struct redisconn *c)
{
    char buf[REDISCONN_READ_CHUNK];

    for (;;) {
        if (c->ssl != NULL) {
            int rc, reason;

            ERR_clear_error();
            errno = 0;
            rc = SSL_read(c->ssl, buf, sizeof(buf));
            c->read_wants_write = false;
            if (rc > 0) {
                if (feed(c, buf, (size_t)rc) != CF_OK)
                    return CF_ERR_IO;
                /* Nothing left inside OpenSSL: the rest is in the socket, seen by poll. */
                if ((size_t)rc < sizeof(buf) && !SSL_has_pending(c->ssl))
                    break;
                continue;
            }
            reason = SSL_get_error(c->ssl, rc);
            if (reason == SSL_ERROR_WANT_READ)
                break;
            if (reason == SSL_ERROR_WANT_WRITE) {
                c->read_wants_write = true;
                break;
            }
            return fail_ssl(c, reason);
        } else {
            ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

            if (n > 0) {
                if (feed(c, buf, (size_t)n) != CF_OK)
                    return CF_ERR_IO;
                if ((size_t)n < sizeof(buf))
                    break; /* drained: a further recv() would only say EAGAIN */
                continue;
            }
            if (n == 0)
                return fail(c, "server closed the connection");
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            return fail(c, strerror(errno));
        }
    }
    /* A write that waited for input may go on now. */
    if (c->write_wants_read)
        return redisconn_flush(c);
    return CF_OK;
}

int redisconn_reply(struct redisconn *c, void **reply)
{
    *reply = NULL;
    if (redisReaderGetReply(c->reader, reply) != REDIS_OK)
        return fail(c, c->reader->errstr[0] ? c->reader->errstr : "protocol error");
    return CF_OK;
}

const char *redisconn_error(const struct redisconn *c)
{
    return c->error;
}
