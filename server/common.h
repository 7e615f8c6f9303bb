/*
 * common.h - error codes, clocks and small helpers shared by every module.
 *
 * Every action in cronfence returns 0 (CF_OK) or one of the negative codes
 * below. Detail goes into a caller-supplied buffer or to the log once, where
 * the error is handled; the API maps codes to HTTP statuses in one table.
 *
 * Times: "wall" times are milliseconds since the Unix epoch (UTC), used only
 * for schedule instants and display. "boot" times are milliseconds of
 * CLOCK_BOOTTIME, used for timeouts, leases and backoff, because they never
 * jump and keep counting during suspend.
 */
#ifndef CF_COMMON_H
#define CF_COMMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cf_err {
    CF_OK = 0,
    CF_ERR_NOMEM = -1,         /* allocation failed */
    CF_ERR_INVALID = -2,       /* input refused by validation */
    CF_ERR_NOT_FOUND = -3,     /* no such job, run or key */
    CF_ERR_CONFLICT = -4,      /* exists already, or in flight */
    CF_ERR_PRECONDITION = -5,  /* If-Match did not match */
    CF_ERR_IO = -6,            /* file or network error */
    CF_ERR_DB = -7,            /* SQLite error */
    CF_ERR_BUSY = -8,          /* lock held by another claim */
    CF_ERR_FIRED = -9,         /* slot already delivered */
    CF_ERR_NO_QUORUM = -10,    /* too few coordinators answered */
    CF_ERR_TOO_LARGE = -11,    /* input over its size limit */
    CF_ERR_UNAUTHORIZED = -12, /* no or unknown credentials */
    CF_ERR_FORBIDDEN = -13,    /* credentials lack the right */
    CF_ERR_LOST = -14,         /* lease lost or expired */
    CF_ERR_TIMEOUT = -15,      /* deadline passed */
    CF_ERR_SHUTDOWN = -16,     /* the process is stopping */
};

/* A short lowercase name for an error code, e.g. "not found". Never NULL. */
const char *cf_err_str(int err);

/* Milliseconds since the Unix epoch from CLOCK_REALTIME. */
int64_t cf_wall_ms(void);

/* Milliseconds of CLOCK_BOOTTIME (monotonic, counts during suspend). */
int64_t cf_boot_ms(void);

/* Microseconds of CLOCK_BOOTTIME, for measuring short durations. */
int64_t cf_boot_us(void);

/*
 * Initialises cond on CLOCK_MONOTONIC (CLOCK_BOOTTIME cannot be used), so
 * that timed waits on it are immune to wall-clock jumps.
 */
void cf_monotonic_cond_init(pthread_cond_t *cond);

/* The CLOCK_MONOTONIC instant wait_ms from now, for timed waits on such a cond. */
void cf_monotonic_deadline(int64_t wait_ms, struct timespec *deadline);

/* Sleeps for ms milliseconds of CLOCK_BOOTTIME; returns early only on a signal. */
void cf_sleep_ms(int64_t ms);

/*
 * The proleptic Gregorian calendar (Howard Hinnant's algorithms, exact for
 * every representable date): days since 1970-01-01 of a date (month 1..12)
 * and back, leap years and month lengths.
 */
int64_t cf_days_from_civil(int64_t year, int month, int day);
void cf_civil_from_days(int64_t days, int *year, int *month, int *day);
bool cf_is_leap_year(int64_t year);
int cf_days_in_month(int64_t year, int month);

/* RFC 3339 has four-digit years: 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z. */
#define CF_TIME_MIN_MS (-62167219200000LL)
#define CF_TIME_MAX_MS 253402300799999LL

/* Length of an RFC 3339 UTC timestamp with milliseconds, plus NUL. */
#define CF_TIME_LEN 32

/*
 * Formats wall time ms as "2026-11-21T08:00:00.000Z" into out (CF_TIME_LEN
 * bytes). Returns out.
 */
char *cf_format_time(int64_t wall_ms, char out[CF_TIME_LEN]);

/*
 * Parses an RFC 3339 timestamp (any offset, optional fraction) or a decimal
 * number of epoch milliseconds into *wall_ms; years 0000 to 9999 only. Returns CF_OK or
 * CF_ERR_INVALID, leaving *wall_ms unaltered on error.
 */
int cf_parse_time(const char *text, int64_t *wall_ms);

/*
 * Fills out with 2*nbytes lowercase hex characters of cryptographic
 * randomness and a NUL (out must hold 2*nbytes+1). Returns CF_OK or
 * CF_ERR_IO when the random source fails.
 */
int cf_random_hex(char *out, size_t nbytes);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void cf_hex(const unsigned char *bytes, size_t len, char *out);

/* Value of one hex digit (either case), or -1 when c is not one. */
int cf_hex_value(char c);

/* The 64-bit FNV-1a offset basis: where a hash starts. */
#define CF_FNV1A_START 14695981039346656037ULL

/* FNV-1a of text's bytes, continuing from hash (CF_FNV1A_START for a new one). */
uint64_t cf_fnv1a(uint64_t hash, const char *text);

/*
 * Reads exactly n decimal digits at *p into *value and advances *p past
 * them. Returns false (leaving *p and *value alone) when fewer are there.
 */
bool cf_read_digits(const char **p, int n, int *value);

/* strdup that returns NULL for NULL. */
char *cf_strdup(const char *s);

/* Constant-time comparison of two NUL-terminated strings. */
bool cf_secure_equal(const char *a, const char *b);

#endif
