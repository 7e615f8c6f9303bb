/*
 * http_parse.c - request target, Host, Content-Length, capped bodies and
 * address keys, without a socket (see http_parse.h).
 */
#include "http_parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "http.h"

/* First size of a body buffer whose length was not announced. */
#define HTTP_BODY_FIRST_CAP ((size_t)4096)

/* Largest Content-Length parsed: 2^53, well past any limit. */
#define HTTP_CONTENT_LENGTH_MAX ((uint64_t)1 << 53)

/*
 * Percent-decodes n bytes of text into a new NUL-terminated string; with
 * plus_is_space, '+' becomes ' '. Returns it with *len, or NULL (no memory).
 */
static char *decode(const char *text, size_t n, bool plus_is_space, size_t *len)
{
    char *out = malloc(n + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int high = i + 2 < n && text[i] == '%' ? cf_hex_value(text[i + 1]) : -1;
        int low = high >= 0 ? cf_hex_value(text[i + 2]) : -1;

        if (low >= 0) {
            out[o++] = (char)(high << 4 | low);
            i += 2;
        } else if (plus_is_space && text[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = text[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* Adds the query piece text[0..n) to target; empty pieces are skipped. */
static int add_param(struct http_target *target, const char *text, size_t n, size_t *cap)
{
    const char *equals = memchr(text, '=', n);
    size_t key_n = equals != NULL ? (size_t)(equals - text) : n;
    struct http_param *param;

    if (n == 0)
        return CF_OK;
    if (target->param_count == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 8;
        struct http_param *grown = realloc(target->params, grown_cap * sizeof(*grown));

        if (grown == NULL)
            return CF_ERR_NOMEM;
        target->params = grown;
        *cap = grown_cap;
    }
    param = &target->params[target->param_count];
    param->key = decode(text, key_n, true, &param->key_len);
    if (param->key == NULL)
        return CF_ERR_NOMEM;
    if (equals != NULL)
        param->value = decode(equals + 1, n - key_n - 1, true, &param->value_len);
    else
        param->value = decode("", 0, true, &param->value_len);
    if (param->value == NULL) {
        free(param->key);
        return CF_ERR_NOMEM;
    }
    target->param_count++;
    return CF_OK;
}

int http_target_parse(const char *raw, size_t raw_len, struct http_target *out)
{
    const char *query = memchr(raw, '?', raw_len);
    size_t path_n = query != NULL ? (size_t)(query - raw) : raw_len;
    size_t cap = 0;

    memset(out, 0, sizeof(*out));
    out->path = decode(raw, path_n, false, &out->path_len);
    if (out->path == NULL)
        return CF_ERR_NOMEM;
    if (query == NULL)
        return CF_OK;
    query++;
    for (const char *end = raw + raw_len; query <= end;) {
        const char *amp = memchr(query, '&', (size_t)(end - query));
        size_t n = amp != NULL ? (size_t)(amp - query) : (size_t)(end - query);

        if (add_param(out, query, n, &cap) != CF_OK) {
            http_target_release(out);
            return CF_ERR_NOMEM;
        }
        if (amp == NULL)
            break;
        query = amp + 1;
    }
    return CF_OK;
}

void http_target_release(struct http_target *target)
{
    for (size_t i = 0; i < target->param_count; i++) {
        free(target->params[i].key);
        free(target->params[i].value);
    }
    free(target->params);
    free(target->path);
    memset(target, 0, sizeof(*target));
}

const struct http_param *http_target_param(const struct http_target *target, const char *key)
{
    size_t len = strlen(key);

    for (size_t i = 0; i < target->param_count; i++) {
        const struct http_param *param = &target->params[i];

        if (param->key_len == len && memcmp(param->key, key, len) == 0)
            return param;
    }
    return NULL;
}

bool http_param_has_nul(const struct http_param *param)
{
    return memchr(param->key, '\0', param->key_len) != NULL ||
           memchr(param->value, '\0', param->value_len) != NULL;
}

bool http_target_path_has_nul(const struct http_target *target)
{
    return target->path != NULL && memchr(target->path, '\0', target->path_len) != NULL;
}

/* Whether text is 1 to 5 decimal digits. */
static bool is_port(const char *text)
{
    size_t len = strlen(text);

    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)text[i]))
            return false;
    return true;
}

bool http_host_header_is_loopback(const char *host)
{
    char name[64];
    const char *port = NULL;
    size_t len;

    if (host == NULL || host[0] == '\0')
        return false;
    if (host[0] == '[') {
        const char *close = strchr(host, ']');

        if (close == NULL)
            return false;
        len = (size_t)(close - host - 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return false;
        if (len == 0 || len >= sizeof(name))
            return false;
        memcpy(name, host + 1, len);
        name[len] = '\0';
        /* Only an IPv6 address goes in brackets. */
        if (strchr(name, ':') == NULL)
            return false;
    } else {
        const char *colon = strchr(host, ':');

        len = colon != NULL ? (size_t)(colon - host) : strlen(host);
        if (colon != NULL)
            port = colon + 1;
        if (len == 0 || len >= sizeof(name))
            return false;
        memcpy(name, host, len);
        name[len] = '\0';
        /* A bare IPv6 address is not a valid Host. */
        if (strchr(name, ':') != NULL)
            return false;
    }
    if (port != NULL && !is_port(port))
        return false;
    return http_host_is_loopback(name);
}

int http_parse_content_length(const char *text, uint64_t *length)
{
    uint64_t value = 0;

    if (text == NULL || text[0] == '\0')
        return CF_ERR_INVALID;
    for (const char *p = text; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p))
            return CF_ERR_INVALID;
        value = value * 10 + (uint64_t)(*p - '0');
        if (value > HTTP_CONTENT_LENGTH_MAX)
            return CF_ERR_INVALID;
    }
    *length = value;
    return CF_OK;
}

int http_body_begin(struct http_body *body, int64_t declared, size_t limit)
{
    memset(body, 0, sizeof(*body));
    body->limit = limit;
    body->declared = declared < 0 ? -1 : declared;
    if (declared >= 0 && (uint64_t)declared > limit)
        return CF_ERR_TOO_LARGE;
    return CF_OK;
}

int http_body_append(struct http_body *body, const char *data, size_t n)
{
    size_t need;

    if (n > body->limit - body->len)
        return CF_ERR_TOO_LARGE;
    if (body->declared >= 0 && n > (size_t)body->declared - body->len)
        return CF_ERR_TOO_LARGE;
    need = body->len + n + 1;
    if (need > body->cap) {
        size_t cap;
        char *grown;

        if (body->declared >= 0) {
            cap = (size_t)body->declared + 1;
        } else {
            cap = body->cap ? body->cap : HTTP_BODY_FIRST_CAP;
            while (cap < need)
                cap *= 2;
            if (cap > body->limit + 1)
                cap = body->limit + 1;
        }
        grown = realloc(body->data, cap);
        if (grown == NULL)
            return CF_ERR_NOMEM;
        body->data = grown;
        body->cap = cap;
    }
    memcpy(body->data + body->len, data, n);
    body->len += n;
    body->data[body->len] = '\0';
    return CF_OK;
}

void http_body_release(struct http_body *body)
{
    free(body->data);
    memset(body, 0, sizeof(*body));
    body->declared = -1;
}

char *http_address_key(const struct sockaddr *addr, char key[HTTP_ADDRESS_KEY_LEN])
{
    snprintf(key, HTTP_ADDRESS_KEY_LEN, "unknown");
    if (addr == NULL)
        return key;
    if (addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, key,
                  HTTP_ADDRESS_KEY_LEN);
    } else if (addr->sa_family == AF_INET6) {
        struct in6_addr prefix = ((const struct sockaddr_in6 *)addr)->sin6_addr;
        char text[INET6_ADDRSTRLEN];

        if (IN6_IS_ADDR_V4MAPPED(&prefix)) {
            inet_ntop(AF_INET, &prefix.s6_addr[12], key, HTTP_ADDRESS_KEY_LEN);
            return key;
        }
        if (IN6_IS_ADDR_LOOPBACK(&prefix)) {
            snprintf(key, HTTP_ADDRESS_KEY_LEN, "::1");
            return key;
        }
        memset(&prefix.s6_addr[8], 0, 8);
        inet_ntop(AF_INET6, &prefix, text, sizeof(text));
        snprintf(key, HTTP_ADDRESS_KEY_LEN, "%s/64", text);
    }
    return key;
}
