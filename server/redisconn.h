/*
 * redisconn.h - one non-blocking connection to a Redis node, over plain TCP
 * or TLS (rediss://, DESIGN §7).
 *
 * hiredis is kept for the protocol only: its reply reader parses what this
 * module reads, and commands are formatted by redisFormatCommandArgv(). The
 * transport is a socket of our own, with OpenSSL on it for TLS (Debian's
 * hiredis 0.14 has no TLS). Bytes appended wait in an output buffer until
 * redisconn_flush() writes them; redisconn_read() reads until the socket
 * has nothing more to give and, with TLS, nothing is left buffered inside
 * the session, so a reply never waits in OpenSSL where poll() cannot see it.
 *
 * A connection is not thread-safe: its owner serialises every call (the
 * node set does so under its lock).
 */
#ifndef CF_REDISCONN_H
#define CF_REDISCONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisconn;

/*
 * A client TLS context for rediss:// nodes: peers are verified against the
 * CA bundle in ca_file (PEM), or the system's CAs when ca_file is NULL.
 * Returns CF_OK with *out (SSL_CTX_free() it), or CF_ERR_INVALID with the
 * reason, naming the file, in err.
 */
int redisconn_tls_context(const char *ca_file, SSL_CTX **out, char *err, size_t errlen);

/*
 * Connects to host:port, then with tls (borrowed; NULL for plain TCP) runs
 * the TLS handshake, sending host as SNI (unless it is an IP address) and
 * verifying that the certificate names host. Blocks until done or
 * deadline_boot_ms (cf_boot_ms()). Returns the connection, or NULL with the
 * reason in why.
 */
struct redisconn *redisconn_open(const char *host, int port, SSL_CTX *tls, int64_t deadline_boot_ms,
                                 char *why, size_t why_len);

/* Closes the connection and frees it; accepts NULL. */
void redisconn_free(struct redisconn *c);

/* The socket, for poll(). Borrowed: never close it. */
int redisconn_fd(const struct redisconn *c);

/* What to poll the socket for: POLLIN always, POLLOUT when a write or the TLS session needs it. */
short redisconn_events(const struct redisconn *c);

/* Whether appended bytes are still waiting to be written. */
bool redisconn_unflushed(const struct redisconn *c);

/* Appends len bytes of RESP to the output buffer. Returns CF_OK or CF_ERR_NOMEM. */
int redisconn_append(struct redisconn *c, const char *resp, size_t len);

/* Formats a command (argv C strings) and appends it. Returns CF_OK or CF_ERR_NOMEM. */
int redisconn_append_argv(struct redisconn *c, int argc, const char **argv);

/*
 * Writes what the socket takes now of the output buffer. Returns CF_OK, or
 * CF_ERR_IO (see redisconn_error(); the connection is then unusable).
 */
int redisconn_flush(struct redisconn *c);

/*
 * Reads everything available and feeds it to the reply reader. Returns
 * CF_OK (also when nothing was there), or CF_ERR_IO on an error or when the
 * server closed the connection.
 */
int redisconn_read(struct redisconn *c);

/*
 * Takes the next complete reply (a redisReply, freeReplyObject() it) into
 * *reply, or NULL when none is complete yet. Returns CF_OK, or CF_ERR_IO
 * on a protocol error.
 */
int redisconn_reply(struct redisconn *c, void **reply);

/* The last error, for logs; "" when none. Borrowed until the next call. */
const char *redisconn_error(const struct redisconn *c);

#endif
