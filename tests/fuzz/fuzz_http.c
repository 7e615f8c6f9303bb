/*
 * fuzz_http.c - libFuzzer target for the request parsing cronfence does
 * itself (server/http_parse.c): the request target, the Host and
 * Content-Length headers, a body collected under a cap, address keys.
 *
 * The input reads like a request without its method and version: the
 * first line is the request target as sent ("/api/v1/runs?job=a%00b"),
 * then "Name: value" header lines up to an empty line, then the body. The
 * body is fed to a capped collector in chunks whose sizes come from the
 * input itself. Beyond crashes, leaks and hangs, it checks the contracts the
 * server relies on: decoded strings are NUL-terminated at their length and
 * never longer than what was sent, a NUL is reported exactly when one was
 * decoded, lookups find what was parsed, a collected body never outgrows its
 * limit or its declared length and holds exactly the bytes given, and a
 * Host is loopback only when it names localhost, 127.x or ::1.
 */
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A small limit, so that inputs reach it. */
#define FUZZ_BODY_LIMIT 512

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static void check_target(const char *raw, size_t raw_len)
{
    struct http_target target;

    if (http_target_parse(raw, raw_len, &target) != CF_OK)
        return;
    fuzz_check(target.path != NULL && target.path_len <= raw_len);
    fuzz_check(target.path[target.path_len] == '\0');
    fuzz_check(http_target_path_has_nul(&target) ==
               (memchr(target.path, '\0', target.path_len) != NULL));
    for (size_t i = 0; i < target.param_count; i++) {
        const struct http_param *param = &target.params[i];
        const struct http_param *found;

        fuzz_check(param->key_len + param->value_len <= raw_len);
        fuzz_check(param->key[param->key_len] == '\0' && param->value[param->value_len] == '\0');
        fuzz_check(http_param_has_nul(param) ==
                   (memchr(param->key, '\0', param->key_len) != NULL ||
                    memchr(param->value, '\0', param->value_len) != NULL));
        if (memchr(param->key, '\0', param->key_len) != NULL)
            continue;
        /* The lookup finds this parameter or an earlier one with the same key. */
        found = http_target_param(&target, param->key);
        fuzz_check(found != NULL && found <= param && found->key_len == param->key_len &&
                   memcmp(found->key, param->key, param->key_len) == 0);
    }
    http_target_release(&target);
    fuzz_check(target.path == NULL && target.param_count == 0);
}

static void check_host(const char *value)
{
    if (!http_host_header_is_loopback(value))
        return;
    fuzz_check(strncasecmp(value, "localhost", 9) == 0 || strncmp(value, "127.", 4) == 0 ||
               value[0] == '[');
}

/* Feeds body[0..len) in chunks sized by the input; checks the collected bytes. */
static void check_body(int64_t declared, const char *body, size_t len)
{
    struct http_body collected;
    size_t fed = 0;
    int ret = http_body_begin(&collected, declared, FUZZ_BODY_LIMIT);

    if (ret != CF_OK) {
        fuzz_check(ret == CF_ERR_TOO_LARGE && declared > FUZZ_BODY_LIMIT);
        fuzz_check(collected.data == NULL);
        return;
    }
    while (fed < len) {
        size_t chunk = 1 + (unsigned char)body[fed] % 97;

        if (chunk > len - fed)
            chunk = len - fed;
        ret = http_body_append(&collected, body + fed, chunk);
        if (ret == CF_ERR_TOO_LARGE) {
            fuzz_check(fed + chunk > FUZZ_BODY_LIMIT ||
                       (declared >= 0 && fed + chunk > (size_t)declared));
            break;
        }
        fuzz_check(ret == CF_OK);
        fed += chunk;
        fuzz_check(collected.len == fed && collected.len <= FUZZ_BODY_LIMIT);
        fuzz_check(collected.cap <= (declared >= 0 ? (size_t)declared : FUZZ_BODY_LIMIT) + 1);
        fuzz_check(collected.data[collected.len] == '\0');
        fuzz_check(memcmp(collected.data, body, fed) == 0);
    }
    http_body_release(&collected);
}

static void check_address(const uint8_t *bytes, size_t len)
{
    struct sockaddr_in6 in6 = {0};
    struct sockaddr_in in4 = {0};
    char key[HTTP_ADDRESS_KEY_LEN];

    if (len < 16)
        return;
    in6.sin6_family = AF_INET6;
    memcpy(&in6.sin6_addr, bytes, 16);
    http_address_key((struct sockaddr *)&in6, key);
    fuzz_check(strlen(key) < sizeof(key));
    in4.sin_family = AF_INET;
    memcpy(&in4.sin_addr, bytes, 4);
    http_address_key((struct sockaddr *)&in4, key);
    fuzz_check(strlen(key) < sizeof(key) && strchr(key, '/') == NULL);
}

/* Checks one "Name: value" header line (NUL-terminated, modified); sets *declared. */
static void check_header(char *line, int64_t *declared)
{
    char *colon = strchr(line, ':');
    const char *value;
    uint64_t length = 0;

    if (colon == NULL)
        return;
    *colon = '\0';
    value = colon + 1;
    while (*value == ' ')
        value++;
    if (strcasecmp(line, "Host") == 0) {
        check_host(value);
    } else if (strcasecmp(line, "Content-Length") == 0 &&
               http_parse_content_length(value, &length) == CF_OK) {
        fuzz_check(length <= ((uint64_t)1 << 53) && value[0] != '\0');
        *declared = (int64_t)length;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char *pos, *end, *newline;
    int64_t declared = -1;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    end = text + size;
    check_address(data, size);

    /* The request target: the first line. */
    newline = memchr(text, '\n', size);
    check_target(text, newline != NULL ? (size_t)(newline - text) : size);

    /* Header lines up to an empty line; what follows it is the body. */
    pos = newline != NULL ? newline + 1 : end;
    while (pos < end) {
        newline = memchr(pos, '\n', (size_t)(end - pos));
        if (newline == NULL)
            break;
        *newline = '\0';
        if (newline == pos) {
            check_body(declared, (const char *)data + (newline + 1 - text),
                       (size_t)(end - newline - 1));
            break;
        }
        check_header(pos, &declared);
        pos = newline + 1;
    }
    free(text);
    return 0;
}
