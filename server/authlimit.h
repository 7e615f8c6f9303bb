/*
 * authlimit.h - rate limit of failed authentications per client address.
 *
 * Each address key (http_address_key()) has a budget of `burst` failures
 * that refills by one every refill_ms. While an address has no budget left,
 * its requests that need a token are refused (429) without their token
 * being looked at, so guessing cannot go on faster than the refill. The
 * table has a fixed number of slots (AUTHLIMIT_SLOTS): memory stays bounded
 * whatever the number of addresses; when it is full, the slot whose budget
 * has refilled the most is reused (an address that stopped failing).
 * Thread-safe. Times are CLOCK_BOOTTIME milliseconds.
 */
#ifndef CF_AUTHLIMIT_H
#define CF_AUTHLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTHLIMIT_SLOTS 4096

struct authlimit;

/* Returns CF_OK with *out, or CF_ERR_NOMEM. */
int authlimit_new(unsigned burst, int64_t refill_ms, struct authlimit **out);

/* Frees it; accepts NULL. */
void authlimit_free(struct authlimit *limit);

/*
 * Whether key may present a token now. When not, *retry_after_s (if not
 * NULL) is the number of seconds until it may, at least 1.
 */
bool authlimit_allowed(struct authlimit *limit, const char *key, int64_t now_ms,
                       unsigned *retry_after_s);

/*
 * Counts a failed authentication of key. Returns true when this failure
 * used the last of its budget (the moment to log it once), false otherwise.
 */
bool authlimit_failed(struct authlimit *limit, const char *key, int64_t now_ms);

#endif
