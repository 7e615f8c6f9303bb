/*
 * signature.h - the webhook signature of DESIGN §5.
 *
 *   Cronfence-Signature: t=<unix seconds>,v1=<hex>
 *   v1 = hex(HMAC-SHA256(secret, t + "\n" + fencing_token + "\n" +
 *                        idempotency_key + "\n" + body))
 */
#ifndef CF_SIGNATURE_H
#define CF_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hex length of an HMAC-SHA256, plus NUL. */
#define SIGNATURE_HEX_LEN 65
/* Enough for "t=<20 digits>,v1=<64 hex>" and NUL. */
#define SIGNATURE_HEADER_LEN 96

/*
 * Computes v1 into hex (SIGNATURE_HEX_LEN bytes, lowercase, NUL-terminated).
 * token is the decimal fencing token exactly as sent in Fencing-Token. All
 * strings are borrowed; body may be NULL when body_len is 0. Returns CF_OK,
 * or CF_ERR_NOMEM when OpenSSL cannot allocate (hex is then unaltered).
 */
int signature_compute(const char *secret, int64_t t_seconds, const char *token,
                      const char *idempotency_key, const char *body, size_t body_len,
                      char hex[SIGNATURE_HEX_LEN]);

/*
 * Formats the Cronfence-Signature value "t=<t_seconds>,v1=<hex>" into out.
 * Same arguments and failure as signature_compute().
 */
int signature_header(const char *secret, int64_t t_seconds, const char *token,
                     const char *idempotency_key, const char *body, size_t body_len,
                     char out[SIGNATURE_HEADER_LEN]);

/*
 * Verifies a header value against the request: parses t and every v1 (a
 * header may carry several during secret rotation), recomputes, compares in
 * constant time, and refuses a t more than max_age_s away from now_s (either
 * direction). Returns true when one v1 matches and t is fresh.
 *
 * The header must be comma-separated key=value items without spaces: exactly
 * one t (decimal seconds, no sign), at least one v1 (64 hex digits, either
 * case). Items with other keys are ignored, so a later scheme can be sent
 * next to v1. Anything else, a header over 4096 bytes, a NULL header, token
 * or key, or an empty secret (which would authenticate nothing) gives false.
 * All strings are borrowed; body may be NULL when body_len is 0.
 */
bool signature_verify(const char *secret, const char *header, int64_t now_s, int64_t max_age_s,
                      const char *token, const char *idempotency_key, const char *body,
                      size_t body_len);

#endif
