/*
 * signature.c - HMAC-SHA256 webhook signatures (DESIGN §5).
 *
 * The MAC is streamed through OpenSSL's EVP_MAC interface, so a signed
 * message ("t\njob\ntoken\nkey\nbody" for v2, "id.t.body" for Standard
 * Webhooks) is never assembled in memory: a 1 MiB body is not copied just to
 * be signed.
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
 * a few v2 values; anything near this size is garbage, refused before any
 * work is done.
 */
#define VERIFY_HEADER_MAX 4096

/* One piece of a signed message: len bytes at data (NULL only when len is 0). */
struct piece {
    const char *data;
    size_t len;
};

/*
 * Computes HMAC-SHA256(secret, the pieces one after the other) into mac.
 * Returns CF_OK or CF_ERR_NOMEM.
 */
static int compute_mac(const char *secret, const struct piece *pieces, size_t count,
                       unsigned char mac[MAC_LEN])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *hmac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    size_t mac_len = 0;
    int err = CF_ERR_NOMEM; /* every OpenSSL failure here is an allocation failure */

    assert(secret != NULL);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL)
        goto out;
    /* A non-NULL key pointer even for "": OpenSSL reads a NULL key as "keep the old one". */
    if (!EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params))
        goto out;
    for (size_t i = 0; i < count; i++) {
        assert(pieces[i].data != NULL || pieces[i].len == 0);
        if (pieces[i].len > 0 &&
            !EVP_MAC_update(ctx, (const unsigned char *)pieces[i].data, pieces[i].len))
            goto out;
    }
    if (!EVP_MAC_final(ctx, mac, &mac_len, MAC_LEN) || mac_len != MAC_LEN)
        goto out;
    err = CF_OK;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    return err;
}

/* The v2 MAC of DESIGN §5: t "\n" job "\n" token "\n" key "\n" body. */
static int compute_v2(const char *secret, int64_t t_seconds, const char *job, const char *token,
                      const char *idempotency_key, const char *body, size_t body_len,
                      unsigned char mac[MAC_LEN])
{
    char t_text[24];
    int t_len;

    assert(job != NULL && token != NULL && idempotency_key != NULL);
    assert(body != NULL || body_len == 0);
    t_len = snprintf(t_text, sizeof(t_text), "%" PRId64, t_seconds);

    const struct piece pieces[] = {
        {t_text, (size_t)t_len},
        {"\n", 1},
        {job, strlen(job)},
        {"\n", 1},
        {token, strlen(token)},
        {"\n", 1},
        {idempotency_key, strlen(idempotency_key)},
        {"\n", 1},
        {body, body_len},
    };
    return compute_mac(secret, pieces, sizeof(pieces) / sizeof(pieces[0]), mac);
}

/* The Standard Webhooks MAC: webhook_id "." t "." body. */
static int compute_webhook(const char *secret, const char *webhook_id, const char *t_text,
                           const char *body, size_t body_len, unsigned char mac[MAC_LEN])
{
    assert(webhook_id != NULL && t_text != NULL);
    assert(body != NULL || body_len == 0);

    const struct piece pieces[] = {
        {webhook_id, strlen(webhook_id)},
        {".", 1},
        {t_text, strlen(t_text)},
        {".", 1},
        {body, body_len},
    };
    return compute_mac(secret, pieces, sizeof(pieces) / sizeof(pieces[0]), mac);
}

/* Encodes a MAC as padded standard base64 (44 characters and NUL). */
static void mac_base64(const unsigned char mac[MAC_LEN], char base64[SIGNATURE_BASE64_LEN])
{
    int len = EVP_EncodeBlock((unsigned char *)base64, mac, MAC_LEN);

    assert(len == SIGNATURE_BASE64_LEN - 1);
    (void)len;
}

int signature_compute(const char *secret, int64_t t_seconds, const char *job, const char *token,
                      const char *idempotency_key, const char *body, size_t body_len,
                      char hex[SIGNATURE_HEX_LEN])
{
    unsigned char mac[MAC_LEN];
    int err;

    err = compute_v2(secret, t_seconds, job, token, idempotency_key, body, body_len, mac);
    if (err != CF_OK)
        return err;
    cf_hex(mac, MAC_LEN, hex);
    return CF_OK;
}

int signature_compute_webhook(const char *secret, const char *webhook_id, int64_t t_seconds,
                              const char *body, size_t body_len, char base64[SIGNATURE_BASE64_LEN])
{
    unsigned char mac[MAC_LEN];
    char t_text[24];
    int err;

    snprintf(t_text, sizeof(t_text), "%" PRId64, t_seconds);
    err = compute_webhook(secret, webhook_id, t_text, body, body_len, mac);
    if (err != CF_OK)
        return err;
    mac_base64(mac, base64);
    return CF_OK;
}

int signature_header(const char *const *secrets, size_t secret_count, int64_t t_seconds,
                     const char *job, const char *token, const char *idempotency_key,
                     const char *body, size_t body_len, char out[SIGNATURE_HEADER_LEN])
{
    char text[SIGNATURE_HEADER_LEN];
    size_t used;

    assert(secret_count >= 1 && secret_count <= SIGNATURE_SECRETS_MAX);
    used = (size_t)snprintf(text, sizeof(text), "t=%" PRId64, t_seconds);
    for (size_t i = 0; i < secret_count; i++) {
        char hex[SIGNATURE_HEX_LEN];
        int err = signature_compute(secrets[i], t_seconds, job, token, idempotency_key, body,
                                    body_len, hex);

        if (err != CF_OK)
            return err;
        used += (size_t)snprintf(text + used, sizeof(text) - used, ",v2=%s", hex);
    }
    memcpy(out, text, used + 1);
    return CF_OK;
}

int signature_webhook_header(const char *const *secrets, size_t secret_count,
                             const char *webhook_id, int64_t t_seconds, const char *body,
                             size_t body_len, char out[SIGNATURE_WEBHOOK_HEADER_LEN])
{
    char text[SIGNATURE_WEBHOOK_HEADER_LEN];
    size_t used = 0;

    assert(secret_count >= 1 && secret_count <= SIGNATURE_SECRETS_MAX);
    text[0] = '\0';
    for (size_t i = 0; i < secret_count; i++) {
        char base64[SIGNATURE_BASE64_LEN];
        int err =
            signature_compute_webhook(secrets[i], webhook_id, t_seconds, body, body_len, base64);

        if (err != CF_OK)
            return err;
        used +=
            (size_t)snprintf(text + used, sizeof(text) - used, "%sv1,%s", i > 0 ? " " : "", base64);
    }
    memcpy(out, text, used + 1);
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
 * into *t_seconds; when want is non-NULL, also reports whether any v2 equals
 * want, comparing every one in constant time. Returns false when the header
 * is malformed: an item without '=', a missing or repeated t, a v2 that is
 * not 64 hex digits, no v2 at all. Items with other keys (the retired v1, a
 * future v3) are skipped.
 */
static bool parse_header(const char *header, int64_t *t_seconds, const unsigned char *want,
                         bool *matched)
{
    const char *item = header;
    bool have_t = false, have_v2 = false, any_match = false;

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
        } else if (key_len == 2 && memcmp(item, "v2", 2) == 0) {
            unsigned char mac[MAC_LEN];

            if (!parse_mac(value, value_len, mac))
                return false;
            have_v2 = true;
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
    return have_t && have_v2;
}

/* Whether t_seconds is at most max_age_s away from now_s, either way, without overflow. */
static bool is_fresh(int64_t t_seconds, int64_t now_s, int64_t max_age_s)
{
    int64_t skew;

    if (__builtin_sub_overflow(now_s, t_seconds, &skew))
        return false;
    return skew <= max_age_s && skew >= -max_age_s;
}

bool signature_verify(const char *secret, const char *header, int64_t now_s, int64_t max_age_s,
                      const char *job, const char *token, const char *idempotency_key,
                      const char *body, size_t body_len)
{
    unsigned char want[MAC_LEN];
    int64_t t_seconds = 0;
    bool matched = false;

    assert(body != NULL || body_len == 0);
    assert(max_age_s >= 0);
    /* An empty secret signs nothing: anyone could compute the MAC. */
    if (secret == NULL || secret[0] == '\0')
        return false;
    if (header == NULL || job == NULL || token == NULL || idempotency_key == NULL)
        return false;
    if (strnlen(header, VERIFY_HEADER_MAX + 1) > VERIFY_HEADER_MAX)
        return false;

    /* First pass: t alone, so the freshness check runs before any MAC work. */
    if (!parse_header(header, &t_seconds, NULL, NULL))
        return false;
    if (!is_fresh(t_seconds, now_s, max_age_s))
        return false;

    if (compute_v2(secret, t_seconds, job, token, idempotency_key, body, body_len, want) != CF_OK)
        return false;
    if (!parse_header(header, &t_seconds, want, &matched))
        return false;
    return matched;
}

bool signature_verify_webhook(const char *secret, const char *header, int64_t now_s,
                              int64_t max_age_s, const char *webhook_id,
                              const char *webhook_timestamp, const char *body, size_t body_len)
{
    unsigned char mac[MAC_LEN];
    char want[SIGNATURE_BASE64_LEN];
    const char *entry;
    int64_t t_seconds = 0;
    bool matched = false;

    assert(body != NULL || body_len == 0);
    assert(max_age_s >= 0);
    if (secret == NULL || secret[0] == '\0')
        return false;
    if (header == NULL || webhook_id == NULL || webhook_timestamp == NULL)
        return false;
    if (strnlen(header, VERIFY_HEADER_MAX + 1) > VERIFY_HEADER_MAX)
        return false;
    if (!parse_seconds(webhook_timestamp, strlen(webhook_timestamp), &t_seconds) ||
        !is_fresh(t_seconds, now_s, max_age_s))
        return false;
    if (compute_webhook(secret, webhook_id, webhook_timestamp, body, body_len, mac) != CF_OK)
        return false;
    mac_base64(mac, want);

    /* Space-separated "<version>,<signature>" entries; only v1 is ours to check. */
    entry = header;
    while (*entry != '\0') {
        size_t len = strcspn(entry, " ");

        /* No early exit: the time taken must not tell which entry matched. */
        if (len == 3 + SIGNATURE_BASE64_LEN - 1 && memcmp(entry, "v1,", 3) == 0 &&
            CRYPTO_memcmp(entry + 3, want, SIGNATURE_BASE64_LEN - 1) == 0)
            matched = true;
        entry += len;
        entry += strspn(entry, " ");
    }
    return matched;
}
