/*
 * signature.c - HMAC-SHA256 webhook signatures (DESIGN §5).
 *
 * The MAC is streamed through OpenSSL's EVP_MAC interface, so the signed
 * message "t\ntoken\nkey\nbody" is never assembled in memory: a 1 MiB body is
 * not copied just to be signed.
 */
#include "signature.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

#define MAC_LEN 32 /* bytes of an HMAC-SHA256 */

/*
 * Longest header signature_verify() looks at. A sender rotating secrets sends
 * a few v1 values; anything near this size is garbage, refused before any
 * work is done.
 */
#define VERIFY_HEADER_MAX 4096

/* Computes the raw MAC of DESIGN §5 into mac. Returns CF_OK or CF_ERR_NOMEM. */
static int compute_mac(const char *secret, int64_t t_seconds, const char *token,
                       const char *idempotency_key, const char *body, size_t body_len,
                       unsigned char mac[MAC_LEN])
{
    char t_text[24];
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *hmac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    size_t mac_len = 0;
    int t_len;
    int err = CF_ERR_NOMEM; /* every OpenSSL failure here is an allocation failure */

    assert(secret != NULL && token != NULL && idempotency_key != NULL);
    assert(body != NULL || body_len == 0);

    t_len = snprintf(t_text, sizeof(t_text), "%" PRId64, t_seconds);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL)
        goto out;
    /* A non-NULL key pointer even for "": OpenSSL reads a NULL key as "keep the old one". */
    if (!EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params))
        goto out;
    if (!EVP_MAC_update(ctx, (const unsigned char *)t_text, (size_t)t_len) ||
        !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)token, strlen(token)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)idempotency_key, strlen(idempotency_key)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1))
        goto out;
    if (body_len > 0 && !EVP_MAC_update(ctx, (const unsigned char *)body, body_len))
        goto out;
    if (!EVP_MAC_final(ctx, mac, &mac_len, MAC_LEN) || mac_len != MAC_LEN)
        goto out;
    err = CF_OK;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    return err;
}

int signature_compute(const char *secret, int64_t t_seconds, const char *token,
                      const char *idempotency_key, const char *body, size_t body_len,
                      char hex[SIGNATURE_HEX_LEN])
{
    unsigned char mac[MAC_LEN];
    int err;

    err = compute_mac(secret, t_seconds, token, idempotency_key, body, body_len, mac);
    if (err != CF_OK)
        return err;
    cf_hex(mac, MAC_LEN, hex);
    return CF_OK;
}

int signature_header(const char *secret, int64_t t_seconds, const char *token,
                     const char *idempotency_key, const char *body, size_t body_len,
                     char out[SIGNATURE_HEADER_LEN])
{
    char hex[SIGNATURE_HEX_LEN];
    int err;

    err = signature_compute(secret, t_seconds, token, idempotency_key, body, body_len, hex);
    if (err != CF_OK)
        return err;
    snprintf(out, SIGNATURE_HEADER_LEN, "t=%" PRId64 ",v1=%s", t_seconds, hex);
    return CF_OK;
}

/* Decodes exactly 2*MAC_LEN hex characters; false on any other length or character. */
static bool parse_mac(const char *text, size_t len, unsigned char mac[MAC_LEN])
{
    if (len != 2 * MAC_LEN)
        return false;
    for (size_t i = 0; i < MAC_LEN; i++) {
        int hi = cf_hex_value(text[2 * i]), lo = cf_hex_value(text[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return false;
        mac[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* Parses 1 to 19 decimal digits, no sign, into *value; false on overflow or junk. */
static bool parse_seconds(const char *text, size_t len, int64_t *value)
{
    int64_t v = 0;

    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, text[i] - '0', &v))
            return false;
    }
    *value = v;
    return true;
}

/*
 * Walks the comma-separated "key=value" items of header. Finds the single t
 * into *t_seconds; when want is non-NULL, also reports whether any v1 equals
 * want, comparing every one in constant time. Returns false when the header
 * is malformed: an item without '=', a missing or repeated t, a v1 that is
 * not 64 hex digits. Items with other keys are skipped, so a future scheme
 * (v2=...) can be sent alongside v1.
 */
static bool parse_header(const char *header, int64_t *t_seconds, const unsigned char *want,
                         bool *matched)
{
    const char *item = header;
    bool have_t = false, have_v1 = false, any_match = false;

    for (;;) {
        const char *end = strchr(item, ',');
        size_t len = end != NULL ? (size_t)(end - item) : strlen(item);
        const char *eq = memchr(item, '=', len);
        size_t key_len, value_len;
        const char *value;

        if (eq == NULL)
            return false;
        key_len = (size_t)(eq - item);
        value = eq + 1;
        value_len = len - key_len - 1;
        if (key_len == 1 && item[0] == 't') {
            if (have_t || !parse_seconds(value, value_len, t_seconds))
                return false;
            have_t = true;
        } else if (key_len == 2 && memcmp(item, "v1", 2) == 0) {
            unsigned char mac[MAC_LEN];

            if (!parse_mac(value, value_len, mac))
                return false;
            have_v1 = true;
            /* No early exit: the time taken must not tell which value matched. */
            if (want != NULL && CRYPTO_memcmp(mac, want, MAC_LEN) == 0)
                any_match = true;
        }
        if (end == NULL)
            break;
        item = end + 1;
    }
    if (matched != NULL)
        *matched = any_match;
    return have_t && have_v1;
}

bool signature_verify(const char *secret, const char *header, int64_t now_s, int64_t max_age_s,
                      const char *token, const char *idempotency_key, const char *body,
                      size_t body_len)
{
    unsigned char want[MAC_LEN];
    int64_t t_seconds = 0, skew;
    bool matched = false;

    assert(body != NULL || body_len == 0);
    assert(max_age_s >= 0);
    /* An empty secret signs nothing: anyone could compute the MAC. */
    if (secret == NULL || secret[0] == '\0')
        return false;
    if (header == NULL || token == NULL || idempotency_key == NULL)
        return false;
    if (strnlen(header, VERIFY_HEADER_MAX + 1) > VERIFY_HEADER_MAX)
        return false;

    /* First pass: t alone, so the freshness check runs before any MAC work. */
    if (!parse_header(header, &t_seconds, NULL, NULL))
        return false;
    if (__builtin_sub_overflow(now_s, t_seconds, &skew))
        return false;
    if (skew > max_age_s || skew < -max_age_s)
        return false;

    if (compute_mac(secret, t_seconds, token, idempotency_key, body, body_len, want) != CF_OK)
        return false;
    if (!parse_header(header, &t_seconds, want, &matched))
        return false;
    return matched;
}
