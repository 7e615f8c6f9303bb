/*
 * test_signature.c - webhook signatures (server/signature.c).
 *
 * The known answers live in tests/data/signature/vectors.json, written by
 * tests/data/signature/generate.py with Python's hmac and base64 modules
 * (not by this code base), from the messages of DESIGN §5. The last vector
 * is the Standard Webhooks example, whose expected signature the generator
 * checks. The literal below is the first vector's v2:
 *
 *   python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
 *       b"1763712000\nnightly-report\n8589934593\n"
 *       b"nightly-report@2026-11-21T08:00:00.000Z\n"
 *       b"{\"job\":\"nightly-report\",\"fencing_token\":8589934593}",
 *       hashlib.sha256).hexdigest())'
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "signature.h"

#define NOW 1763712000 /* 2025-11-21T08:00:00Z, the "now" of every verify test */
#define MAX_AGE 300

static const char secret[] = "whsec_test";
static const char job[] = "nightly-report";
static const char token[] = "8589934593";
static const char key[] = "nightly-report@2026-11-21T08:00:00.000Z";
static const char body[] = "{\"job\":\"nightly-report\",\"fencing_token\":8589934593}";

/* The first vector, in pieces. */
#define GOOD_T "1763712000"
#define GOOD_V2 "d7597436c58d35576598d651e40b2700bec695ba0aa0296278a83add0708084c"
#define GOOD_WEBHOOK "Hk9+TjRlEPIyL4Odx1O/J7k4HVS/xIS2M3j+lck7h54="
#define EMPTY_BODY_V2 "6dc32a3a16b960f62afcc510e9400eaabbc0747c4dee42641a56dca083c87896"

/* ---- known answers --------------------------------------------------- */

/* Decodes hex (even length, no NUL byte in it) into a new NUL-terminated string. */
static char *secret_of_hex(const char *hex)
{
    size_t len = strlen(hex) / 2;
    char *out = malloc(len + 1);

    cr_assert_not_null(out);
    for (size_t i = 0; i < len; i++) {
        int hi = cf_hex_value(hex[2 * i]), lo = cf_hex_value(hex[2 * i + 1]);

        cr_assert(hi >= 0 && lo >= 0 && (hi | lo) != 0, "bad secret_hex %s", hex);
        out[i] = (char)(hi << 4 | lo);
    }
    out[len] = '\0';
    return out;
}

static const char *field(json_t *vector, const char *name)
{
    const char *value = json_string_value(json_object_get(vector, name));

    cr_assert_not_null(value, "vector without %s", name);
    return value;
}

Test(signature, known_answers)
{
    json_error_t error;
    json_t *vectors = json_load_file(CF_TEST_DATA "/signature/vectors.json", 0, &error);
    size_t i;
    json_t *vector;

    cr_assert_not_null(vectors, "vectors.json: %s", error.text);
    cr_assert_gt(json_array_size(vectors), 0);
    json_array_foreach(vectors, i, vector)
    {
        char *vector_secret = secret_of_hex(field(vector, "secret_hex"));
        const char *vector_body = field(vector, "body");
        int64_t t = json_integer_value(json_object_get(vector, "t"));
        const char *note = field(vector, "note");
        char hex[SIGNATURE_HEX_LEN], base64[SIGNATURE_BASE64_LEN];

        cr_assert_eq(signature_compute(vector_secret, t, field(vector, "job"),
                                       field(vector, "token"), field(vector, "key"), vector_body,
                                       strlen(vector_body), hex),
                     CF_OK);
        cr_expect_str_eq(hex, field(vector, "v2"), "vector %zu (%s): v2", i, note);
        cr_assert_eq(signature_compute_webhook(vector_secret, field(vector, "key"), t, vector_body,
                                               strlen(vector_body), base64),
                     CF_OK);
        cr_expect_str_eq(base64, field(vector, "webhook"), "vector %zu (%s): webhook", i, note);
        free(vector_secret);
    }
    json_decref(vectors);
}

Test(signature, empty_body_may_be_null)
{
    char hex[SIGNATURE_HEX_LEN], base64[SIGNATURE_BASE64_LEN], with_empty[SIGNATURE_BASE64_LEN];

    cr_assert_eq(signature_compute(secret, NOW, job, token, key, NULL, 0, hex), CF_OK);
    cr_expect_str_eq(hex, EMPTY_BODY_V2);
    cr_assert_eq(signature_compute_webhook(secret, key, NOW, NULL, 0, base64), CF_OK);
    cr_assert_eq(signature_compute_webhook(secret, key, NOW, "", 0, with_empty), CF_OK);
    cr_expect_str_eq(base64, with_empty);
}

Test(signature, header_format)
{
    const char *const secrets[] = {secret};
    char header[SIGNATURE_HEADER_LEN];

    cr_assert_eq(signature_header(secrets, 1, NOW, job, token, key, body, strlen(body), header),
                 CF_OK);
    cr_expect_str_eq(header, "t=" GOOD_T ",v2=" GOOD_V2);

    /* The longest t still fits the buffer. */
    cr_assert_eq(
        signature_header(secrets, 1, INT64_MAX, job, token, key, body, strlen(body), header),
        CF_OK);
    cr_expect_eq(strncmp(header, "t=9223372036854775807,v2=", 25), 0);
    cr_expect_eq(strlen(header), 25 + 64);
}

Test(signature, header_rotation_format)
{
    const char *const two[] = {secret, "next secret"};
    const char *const most[SIGNATURE_SECRETS_MAX] = {"a", "b", "c", "d"};
    char header[SIGNATURE_HEADER_LEN], next_hex[SIGNATURE_HEX_LEN], expected[256];

    cr_assert_eq(
        signature_compute("next secret", NOW, job, token, key, body, strlen(body), next_hex),
        CF_OK);
    cr_assert_eq(signature_header(two, 2, NOW, job, token, key, body, strlen(body), header), CF_OK);
    snprintf(expected, sizeof(expected), "t=" GOOD_T ",v2=" GOOD_V2 ",v2=%s", next_hex);
    cr_expect_str_eq(header, expected);
    cr_expect(
        signature_verify("next secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));

    /* The most secrets with the longest t fill the buffer exactly. */
    cr_assert_eq(signature_header(most, SIGNATURE_SECRETS_MAX, INT64_MIN, job, token, key, body,
                                  strlen(body), header),
                 CF_OK);
    cr_expect_eq(strlen(header) + 1, SIGNATURE_HEADER_LEN);
}

Test(signature, webhook_header_format)
{
    const char *const one[] = {secret};
    const char *const two[] = {secret, "next secret"};
    const char *const most[SIGNATURE_SECRETS_MAX] = {"a", "b", "c", "d"};
    char header[SIGNATURE_WEBHOOK_HEADER_LEN], next[SIGNATURE_BASE64_LEN], expected[256];

    cr_assert_eq(signature_webhook_header(one, 1, key, NOW, body, strlen(body), header), CF_OK);
    cr_expect_str_eq(header, "v1," GOOD_WEBHOOK);

    /* A rotation: space-separated entries, in the order of the secrets. */
    cr_assert_eq(signature_compute_webhook("next secret", key, NOW, body, strlen(body), next),
                 CF_OK);
    cr_assert_eq(signature_webhook_header(two, 2, key, NOW, body, strlen(body), header), CF_OK);
    snprintf(expected, sizeof(expected), "v1," GOOD_WEBHOOK " v1,%s", next);
    cr_expect_str_eq(header, expected);

    cr_assert_eq(
        signature_webhook_header(most, SIGNATURE_SECRETS_MAX, key, NOW, body, strlen(body), header),
        CF_OK);
    cr_expect_eq(strlen(header) + 1, SIGNATURE_WEBHOOK_HEADER_LEN);
}

/* ---- verify ---------------------------------------------------------- */

/* A header signed with secret over the default request at time t. */
static void sign_at(const char *with_secret, int64_t t, char header[SIGNATURE_HEADER_LEN])
{
    const char *const secrets[] = {with_secret};

    cr_assert_eq(signature_header(secrets, 1, t, job, token, key, body, strlen(body), header),
                 CF_OK);
}

static bool verify(const char *header)
{
    return signature_verify(secret, header, NOW, MAX_AGE, job, token, key, body, strlen(body));
}

Test(signature, verify_good)
{
    char header[SIGNATURE_HEADER_LEN];

    sign_at(secret, NOW, header);
    cr_expect(verify(header));
    /* The literal from the known answers, typed by hand. */
    cr_expect(verify("t=" GOOD_T ",v2=" GOOD_V2));
    /* Upper-case hex is the same digest. */
    cr_expect(
        verify("t=" GOOD_T ",v2=D7597436C58D35576598D651E40B2700BEC695BA0AA0296278A83ADD0708084C"));
}

Test(signature, verify_empty_body)
{
    char header[SIGNATURE_HEADER_LEN];

    const char *const secrets[] = {secret};

    cr_assert_eq(signature_header(secrets, 1, NOW, job, token, key, NULL, 0, header), CF_OK);
    cr_expect(signature_verify(secret, header, NOW, MAX_AGE, job, token, key, NULL, 0));
    cr_expect(signature_verify(secret, header, NOW, MAX_AGE, job, token, key, "", 0));
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, token, key, " ", 1));
}

Test(signature, verify_wrong_secret)
{
    char header[SIGNATURE_HEADER_LEN];

    sign_at("another secret", NOW, header);
    cr_expect_not(verify(header));
    sign_at(secret, NOW, header);
    cr_expect_not(
        signature_verify("whsec_tesT", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    /* A prefix of the secret is a different key. */
    cr_expect_not(
        signature_verify("whsec_tes", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
}

Test(signature, verify_empty_secret_refused)
{
    char header[SIGNATURE_HEADER_LEN];

    sign_at("", NOW, header);
    cr_expect_not(signature_verify("", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    cr_expect_not(
        signature_verify(NULL, header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
}

Test(signature, verify_tampered)
{
    char header[SIGNATURE_HEADER_LEN];
    char changed[sizeof(body)];

    sign_at(secret, NOW, header);

    /* body: one byte changed, one byte cut, one byte added */
    memcpy(changed, body, sizeof(body));
    changed[10] ^= 1;
    cr_expect_not(
        signature_verify(secret, header, NOW, MAX_AGE, job, token, key, changed, strlen(changed)));
    cr_expect_not(
        signature_verify(secret, header, NOW, MAX_AGE, job, token, key, body, strlen(body) - 1));
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, token, key,
                                   "{\"job\":\"nightly-report\",\"fencing_token\":8589934593} ",
                                   strlen(body) + 1));

    /* token: a higher or a lower one, or the same number spelled differently */
    cr_expect_not(
        signature_verify(secret, header, NOW, MAX_AGE, job, "8589934594", key, body, strlen(body)));
    cr_expect_not(
        signature_verify(secret, header, NOW, MAX_AGE, job, "8589934592", key, body, strlen(body)));
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, "08589934593", key, body,
                                   strlen(body)));

    /* idempotency key: another slot of the same job, another job */
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, token,
                                   "nightly-report@2026-11-22T08:00:00.000Z", body, strlen(body)));
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, token,
                                   "nightly-reporT@2026-11-21T08:00:00.000Z", body, strlen(body)));

    /* job: another job, the same job with its key (the replay of issue 13) */
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, "nightly-reporT", token, key, body,
                                   strlen(body)));
    cr_expect_not(
        signature_verify(secret, header, NOW, MAX_AGE, "", token, key, body, strlen(body)));

    /* Moving bytes across the separators must not keep the MAC valid. */
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, job, "8589934593\nnightly-report",
                                   "2026-11-21T08:00:00.000Z", body, strlen(body)));
    cr_expect_not(signature_verify(secret, header, NOW, MAX_AGE, "nightly-report\n8589934593",
                                   "nightly-report@2026-11-21T08:00:00.000Z", "", body,
                                   strlen(body)));

    /* t: the signed t replaced by a neighbour (still fresh) */
    header[11] = header[11] == '0' ? '1' : '0';
    cr_expect_not(verify(header));
}

Test(signature, verify_tampered_mac)
{
    char header[SIGNATURE_HEADER_LEN];

    sign_at(secret, NOW, header);
    header[strlen(header) - 1] = header[strlen(header) - 1] == '0' ? '1' : '0';
    cr_expect_not(verify(header));
    sign_at(secret, NOW, header);
    header[16] = header[16] == '0' ? '1' : '0'; /* first hex digit of v2 */
    cr_expect_not(verify(header));
}

Test(signature, verify_freshness)
{
    char header[SIGNATURE_HEADER_LEN];

    /* exactly max age away, either side: still accepted */
    sign_at(secret, NOW - MAX_AGE, header);
    cr_expect(verify(header));
    sign_at(secret, NOW + MAX_AGE, header);
    cr_expect(verify(header));

    /* stale: one second past the max age, and much older */
    sign_at(secret, NOW - MAX_AGE - 1, header);
    cr_expect_not(verify(header));
    sign_at(secret, NOW - 86400, header);
    cr_expect_not(verify(header));
    sign_at(secret, 0, header);
    cr_expect_not(verify(header));

    /* from the future beyond the max age */
    sign_at(secret, NOW + MAX_AGE + 1, header);
    cr_expect_not(verify(header));
    sign_at(secret, INT64_MAX, header);
    cr_expect_not(verify(header));

    /* a max age of 0 accepts only t == now */
    sign_at(secret, NOW, header);
    cr_expect(signature_verify(secret, header, NOW, 0, job, token, key, body, strlen(body)));
    cr_expect_not(
        signature_verify(secret, header, NOW + 1, 0, job, token, key, body, strlen(body)));

    /* a far-off "now" must not overflow the difference */
    cr_expect_not(
        signature_verify(secret, header, INT64_MIN, MAX_AGE, job, token, key, body, strlen(body)));
}

Test(signature, verify_rotation)
{
    char old_hex[SIGNATURE_HEX_LEN], new_hex[SIGNATURE_HEX_LEN], junk[SIGNATURE_HEX_LEN];
    char header[512];

    cr_assert_eq(signature_compute("old secret", NOW, job, token, key, body, strlen(body), old_hex),
                 CF_OK);
    cr_assert_eq(signature_compute("new secret", NOW, job, token, key, body, strlen(body), new_hex),
                 CF_OK);
    memset(junk, 'a', SIGNATURE_HEX_LEN - 1);
    junk[SIGNATURE_HEX_LEN - 1] = '\0';

    /* Both orders, and a target holding either secret. */
    snprintf(header, sizeof(header), "t=%d,v2=%s,v2=%s", NOW, old_hex, new_hex);
    cr_expect(
        signature_verify("old secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    cr_expect(
        signature_verify("new secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    cr_expect_not(
        signature_verify("third", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    snprintf(header, sizeof(header), "v2=%s,v2=%s,t=%d", new_hex, old_hex, NOW);
    cr_expect(
        signature_verify("old secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));

    /* The match may be anywhere among non-matching values. */
    snprintf(header, sizeof(header), "t=%d,v2=%s,v2=%s,v2=%s", NOW, junk, junk, new_hex);
    cr_expect(
        signature_verify("new secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));

    /* An unknown scheme is skipped; it alone is not enough. */
    snprintf(header, sizeof(header), "t=%d,v3=whatever,v2=%s", NOW, new_hex);
    cr_expect(
        signature_verify("new secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    snprintf(header, sizeof(header), "t=%d,v0=%s", NOW, new_hex);
    cr_expect_not(
        signature_verify("new secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
    /* The retired v1 scheme is such an unknown scheme now, even with a matching MAC. */
    snprintf(header, sizeof(header), "t=%d,v1=%s", NOW, new_hex);
    cr_expect_not(
        signature_verify("new secret", header, NOW, MAX_AGE, job, token, key, body, strlen(body)));
}

Test(signature, verify_malformed)
{
    static const char *const cases[] = {
        "", "t=", "v2=", "t=,v2=", "v2=abc", "t=" GOOD_T, "t=" GOOD_T ",", "t=" GOOD_T ",v2=abc",
        "garbage", ",,,,", "=", "t=" GOOD_T ",v2", "\xff\xfe",
        "t=-" GOOD_T ",v2=0000000000000000000000000000000000000000000000000000000000000000",
        "t=99999999999999999999,v2="
        "0000000000000000000000000000000000000000000000000000000000000000",
        /* the good MAC in headers that are broken around it */
        "v2=" GOOD_V2,                           /* no t */
        "t=" GOOD_T ",t=" GOOD_T ",v2=" GOOD_V2, /* t twice */
        "t=" GOOD_T ", v2=" GOOD_V2,             /* a space */
        " t=" GOOD_T ",v2=" GOOD_V2,             /* leading space */
        "t=" GOOD_T ",v2=" GOOD_V2 ",",          /* trailing comma */
        "t=" GOOD_T ",,v2=" GOOD_V2,             /* empty item */
        "t=+" GOOD_T ",v2=" GOOD_V2,             /* signed t */
        "t=" GOOD_T ".0,v2=" GOOD_V2,            /* fractional t */
        "t=" GOOD_T ",v2=" GOOD_V2 "0",          /* 65 hex digits */
        "t=" GOOD_T ",v2=" GOOD_V2 ",v2=xyz",    /* a malformed v2 after the good one */
        "T=" GOOD_T ",v2=" GOOD_V2,              /* keys are case-sensitive */
        "t=" GOOD_T ";v2=" GOOD_V2,              /* wrong separator */
        "t=" GOOD_T ",v2=d7597436c58d35576598d651e40b2700bec695ba0aa0296278a83add0708084", /* 63 */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_not(verify(cases[i]), "case %zu: \"%s\"", i, cases[i]);
    cr_expect_not(verify(NULL));
    /* The same MAC in the plain form passes, so the cases above failed for their form. */
    cr_expect(verify("t=" GOOD_T ",v2=" GOOD_V2));
}

Test(signature, verify_very_long_header)
{
    char good[SIGNATURE_HEADER_LEN];
    size_t len = 1 << 20;
    char *header = malloc(len + 1);

    cr_assert_not_null(header);
    /* 1 MiB of junk */
    memset(header, 'x', len);
    header[len] = '\0';
    cr_expect_not(verify(header));

    /* A good signature followed by padding past the 4 KiB limit is refused too. */
    sign_at(secret, NOW, good);
    memset(header, 0, len + 1);
    strcpy(header, good);
    for (size_t n = strlen(header); n < 5000; n = strlen(header))
        strcat(header, ",x=yyyyyyyyyyyyyyyyyy");
    cr_expect_not(verify(header));

    /* Under the limit, many rotated values are fine. */
    strcpy(header, good);
    for (int i = 0; i < 40; i++)
        strcat(header, ",v2=0000000000000000000000000000000000000000000000000000000000000000");
    cr_expect_lt(strlen(header), 4096);
    cr_expect(verify(header));
    free(header);
}

/* ---- Standard Webhooks verify ----------------------------------------- */

static bool verify_webhook(const char *header, const char *timestamp)
{
    return signature_verify_webhook(secret, header, NOW, MAX_AGE, key, timestamp, body,
                                    strlen(body));
}

Test(signature, webhook_verify)
{
    char other[SIGNATURE_BASE64_LEN], header[256];

    cr_expect(verify_webhook("v1," GOOD_WEBHOOK, GOOD_T));
    /* Among other entries, in any order; entries of other versions are skipped. */
    cr_assert_eq(signature_compute_webhook("other", key, NOW, body, strlen(body), other), CF_OK);
    snprintf(header, sizeof(header), "v1,%s v1," GOOD_WEBHOOK, other);
    cr_expect(verify_webhook(header, GOOD_T));
    cr_expect(verify_webhook("v1a,xyz v1," GOOD_WEBHOOK, GOOD_T));
    snprintf(header, sizeof(header), "v1,%s", other);
    cr_expect_not(verify_webhook(header, GOOD_T));

    /* Another id, timestamp or body; a stale or malformed timestamp. */
    cr_expect_not(signature_verify_webhook(secret, "v1," GOOD_WEBHOOK, NOW, MAX_AGE,
                                           "job-b@2026-11-21T08:00:00.000Z", GOOD_T, body,
                                           strlen(body)));
    cr_expect_not(signature_verify_webhook(secret, "v1," GOOD_WEBHOOK, NOW, MAX_AGE, key, GOOD_T,
                                           body, strlen(body) - 1));
    cr_expect_not(signature_verify_webhook(secret, "v1," GOOD_WEBHOOK, NOW + MAX_AGE + 1, MAX_AGE,
                                           key, GOOD_T, body, strlen(body)));
    cr_expect_not(verify_webhook("v1," GOOD_WEBHOOK, "1763712001"));
    cr_expect_not(verify_webhook("v1," GOOD_WEBHOOK, "+1763712000"));
    cr_expect_not(verify_webhook("v1," GOOD_WEBHOOK, ""));
    cr_expect_not(verify_webhook("v1," GOOD_WEBHOOK, NULL));

    /* Malformed or tampered entries. */
    cr_expect_not(verify_webhook("", GOOD_T));
    cr_expect_not(verify_webhook(GOOD_WEBHOOK, GOOD_T));
    cr_expect_not(verify_webhook("v2," GOOD_WEBHOOK, GOOD_T));
    cr_expect_not(verify_webhook("v1," GOOD_WEBHOOK "x", GOOD_T));
    cr_expect_not(verify_webhook("v1,Hk9+TjRlEPIyL4Odx1O/J7k4HVS/xIS2M3j+lck7h55=", GOOD_T));
    cr_expect_not(verify_webhook(NULL, GOOD_T));
    cr_expect_not(signature_verify_webhook("", "v1," GOOD_WEBHOOK, NOW, MAX_AGE, key, GOOD_T, body,
                                           strlen(body)));
}
