/*
 * signature.h - the webhook signatures of DESIGN §5.
 *
 * Both are HMAC-SHA256 keyed with the raw bytes of a signing secret:
 *
 *   Cronfence-Signature: t=<unix seconds>,v2=<hex>
 *   v2 = hex(HMAC(secret, t + "\n" + job + "\n" + fencing_token + "\n" +
 *                 idempotency_key + "\n" + body))
 *
 *   webhook-id: <idempotency key>
 *   webhook-timestamp: <unix seconds>
 *   webhook-signature: v1,<base64>
 *   base64(HMAC(secret, webhook_id + "." + webhook_timestamp + "." + body))
 *
 * The second is Standard Webhooks 1.0: its libraries verify it given
 * "whsec_" + base64(secret). While a secret is rotated, a header carries one
 * value per secret: "t=<s>,v2=<hex>,v2=<hex>" and "v1,<b64> v1,<b64>".
 * (The former v1 scheme, which left the job out, is gone: a manual delivery
 * of one job could be replayed as another's.)
 */
#ifndef CF_SIGNATURE_H
#define CF_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hex length of an HMAC-SHA256, plus NUL. */
#define SIGNATURE_HEX_LEN 65
/* Base64 length of an HMAC-SHA256 (with its one '=' of padding), plus NUL. */
#define SIGNATURE_BASE64_LEN 45
/* Most secrets one request is signed with (a rotation needs two). */
#define SIGNATURE_SECRETS_MAX 4
/* Enough for "t=<20 digits>" and SIGNATURE_SECRETS_MAX ",v2=<64 hex>", and NUL. */
#define SIGNATURE_HEADER_LEN (2 + 20 + SIGNATURE_SECRETS_MAX * (4 + 64) + 1)
/* Enough for SIGNATURE_SECRETS_MAX "v1,<44 base64>" separated by spaces, and NUL. */
#define SIGNATURE_WEBHOOK_HEADER_LEN (SIGNATURE_SECRETS_MAX * (3 + 44 + 1))

/*
 * Computes v2 into hex (SIGNATURE_HEX_LEN bytes, lowercase, NUL-terminated).
 * token is the decimal fencing token exactly as sent in Fencing-Token, job
 * the name sent in Cronfence-Job. All strings are borrowed; body may be NULL
 * when body_len is 0. Returns CF_OK, or CF_ERR_NOMEM when OpenSSL cannot
 * allocate (hex is then unaltered).
 */
int signature_compute(const char *secret, int64_t t_seconds, const char *job, const char *token,
                      const char *idempotency_key, const char *body, size_t body_len,
                      char hex[SIGNATURE_HEX_LEN]);

/*
 * Computes the Standard Webhooks signature (without its "v1," prefix) into
 * base64 (SIGNATURE_BASE64_LEN bytes, padded, NUL-terminated). webhook_id is
 * the idempotency key. Same ownership and failure as signature_compute().
 */
int signature_compute_webhook(const char *secret, const char *webhook_id, int64_t t_seconds,
                              const char *body, size_t body_len, char base64[SIGNATURE_BASE64_LEN]);

/*
 * Formats the Cronfence-Signature value "t=<t_seconds>,v2=<hex>" into out,
 * with one v2 per secret in the order given (secret_count from 1 to
 * SIGNATURE_SECRETS_MAX, each secret borrowed). Otherwise as
 * signature_compute(); on failure out holds no partial header.
 */
int signature_header(const char *const *secrets, size_t secret_count, int64_t t_seconds,
                     const char *job, const char *token, const char *idempotency_key,
                     const char *body, size_t body_len, char out[SIGNATURE_HEADER_LEN]);

/*
 * Formats the webhook-signature value "v1,<base64>" into out, with one
 * space-separated entry per secret in the order given (secret_count from 1
 * to SIGNATURE_SECRETS_MAX). Otherwise as signature_compute_webhook(); on
 * failure out holds no partial header.
 */
int signature_webhook_header(const char *const *secrets, size_t secret_count,
                             const char *webhook_id, int64_t t_seconds, const char *body,
                             size_t body_len, char out[SIGNATURE_WEBHOOK_HEADER_LEN]);

/*
 * Verifies a Cronfence-Signature value against the request: parses t and
 * every v2 (a header carries several during secret rotation), recomputes,
 * compares in constant time, and refuses a t more than max_age_s away from
 * now_s (either direction). Returns true when one v2 matches and t is fresh.
 *
 * The header must be comma-separated key=value items without spaces: exactly
 * one t (decimal seconds, no sign), at least one v2 (64 hex digits, either
 * case). Items with other keys are ignored, so a later scheme can be sent
 * next to v2; a header with only the retired v1 is refused. Anything else, a
 * header over 4096 bytes, a NULL header, job, token or key, or an empty
 * secret (which would authenticate nothing) gives false. All strings are
 * borrowed; body may be NULL when body_len is 0.
 */
bool signature_verify(const char *secret, const char *header, int64_t now_s, int64_t max_age_s,
                      const char *job, const char *token, const char *idempotency_key,
                      const char *body, size_t body_len);

/*
 * Verifies a Standard Webhooks delivery: webhook_timestamp must be decimal
 * seconds no more than max_age_s away from now_s, and one of the
 * space-separated "v1,<base64>" entries of header must match (entries of
 * other versions are ignored). False on anything malformed, a NULL argument,
 * a header over 4096 bytes or an empty secret. Strings are borrowed.
 */
bool signature_verify_webhook(const char *secret, const char *header, int64_t now_s,
                              int64_t max_age_s, const char *webhook_id,
                              const char *webhook_timestamp, const char *body, size_t body_len);

#endif
