/*
 * http_parse.h - the pieces of an HTTP request that cronfence parses and
 * checks itself, as pure functions that need no socket (the fuzzer calls
 * them directly): the request target (path and query, percent-decoded with
 * their real lengths, so that a %00 is seen instead of cutting a string),
 * the Host header, Content-Length, a request body collected under a cap,
 * and the key that groups client addresses for per-address limits.
 */
#ifndef CF_HTTP_PARSE_H
#define CF_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One query parameter, percent-decoded ('+' is a space). */
struct http_param {
    char *key; /* NUL-terminated, but may hold a NUL of its own before key_len */
    size_t key_len;
    char *value; /* "" when the parameter had no '=' */
    size_t value_len;
};

/*
 * A request target such as "/api/v1/runs?job=a&limit=5". The path is
 * percent-decoded ('+' stays a plus) and the query split on '&' and the
 * first '=' of each piece; empty pieces are skipped. Owned by the struct.
 */
struct http_target {
    char *path; /* NUL-terminated; may hold a decoded NUL before path_len */
    size_t path_len;
    struct http_param *params; /* in the order given */
    size_t param_count;
};

/*
 * Parses raw (raw_len bytes, the target as it came on the request line).
 * Returns CF_OK with *out filled, or CF_ERR_NOMEM with *out empty.
 * A malformed escape ("%zz", "%4") is kept as it is, as libmicrohttpd does.
 */
int http_target_parse(const char *raw, size_t raw_len, struct http_target *out);

/* Frees what target owns and empties it; accepts an empty one. */
void http_target_release(struct http_target *target);

/* The first parameter named key (compared over its whole length), or NULL. Borrowed. */
const struct http_param *http_target_param(const struct http_target *target, const char *key);

/* Whether a decoded path or parameter holds a NUL byte (from %00). */
bool http_param_has_nul(const struct http_param *param);
bool http_target_path_has_nul(const struct http_target *target);

/*
 * Whether a Host header names this machine's loopback: "localhost",
 * 127.0.0.0/8 or [::1], each with an optional ":port". Anything else,
 * including an absent (NULL) or empty Host, is not: a name a DNS server
 * can point at 127.0.0.1 is exactly what DNS rebinding sends.
 */
bool http_host_header_is_loopback(const char *host);

/*
 * Parses a Content-Length value (decimal digits only, at most 2^53).
 * Returns CF_OK or CF_ERR_INVALID.
 */
int http_parse_content_length(const char *text, uint64_t *length);

/*
 * A request body collected under a cap. The buffer grows to at most the
 * declared length (plus a NUL) when there is one, else doubling from 4 KiB
 * up to limit + 1 bytes: never more than the client has announced, never
 * more than the limit.
 */
struct http_body {
    char *data; /* NUL-terminated when not NULL; owned */
    size_t len;
    size_t cap;
    size_t limit;     /* bytes accepted at most */
    int64_t declared; /* the Content-Length, or -1 when none (chunked) */
};

/*
 * Starts a body of declared bytes (-1 when unknown) under limit bytes.
 * Returns CF_OK, or CF_ERR_TOO_LARGE when declared is over the limit
 * (nothing is allocated either way).
 */
int http_body_begin(struct http_body *body, int64_t declared, size_t limit);

/*
 * Appends n bytes. Returns CF_OK, CF_ERR_TOO_LARGE when the body would pass
 * its limit or its declared length (the bytes are not kept; what was kept
 * stays), or CF_ERR_NOMEM.
 */
int http_body_append(struct http_body *body, const char *data, size_t n);

/* Frees the buffer and empties the body; accepts an empty one. */
void http_body_release(struct http_body *body);

/* Length of an address key, NUL included. */
#define HTTP_ADDRESS_KEY_LEN 64

/*
 * The key under which per-address limits count a client: the IPv4 address
 * ("192.0.2.7", IPv4-mapped IPv6 included), or the /64 of an IPv6 address
 * ("2001:db8:1:2::/64"), since one host usually holds a whole /64. Writes
 * "unknown" for other families or a NULL address. Returns key.
 */
char *http_address_key(const struct sockaddr *addr, char key[HTTP_ADDRESS_KEY_LEN]);

#endif
