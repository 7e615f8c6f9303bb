/*
 * cron.h - cron schedules: parsing, next instants and plain-English
 * descriptions. Pure logic: no I/O, no global state, thread-safe.
 *
 * Syntax (DESIGN §3): 5 fields (minute hour day-of-month month day-of-week)
 * or 6 fields (a leading seconds field); lists, ranges, steps ("*" + "/n",
 * "a-b/n", "a/n"), month names JAN..DEC and weekday names SUN..SAT (case
 * insensitive), "?" as "*" in the day fields, day-of-week 0..7 (7 = Sunday),
 * "L" (last day of month) in day-of-month, "nL" (last weekday n of the month)
 * and "n#k" (k-th weekday n, k 1..5) in day-of-week. A range may end at
 * SUN ("FRI-SUN"); open ranges in day-of-week ("*", "a/n") stop at 6.
 * Vixie rule: when both day fields are restricted, a day matches if either
 * matches; a day field is unrestricted only when it is exactly "*" or "?"
 * ("*" + "/2" restricts it). Macros
 * @yearly @annually @monthly @weekly @daily @midnight @hourly, and
 * "@every <duration>" (units h, m, s, ms; "90s", "5m", "1h30m"; at least 1s,
 * a whole number of seconds) anchored at the Unix epoch.
 *
 * All instants are in milliseconds since the epoch and fall on whole seconds.
 */
#ifndef CF_CRON_H
#define CF_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "tz.h"

struct cron_schedule;

/* Where and why parsing failed. position is a 0-based byte offset into the expression. */
struct cron_error {
    int position;
    char message[160]; /* lowercase, no full stop, e.g. "minute 61 out of range 0-59" */
};

/*
 * Parses expr into a new schedule stored in *out (free with cron_free()).
 * Returns CF_OK, CF_ERR_INVALID with *err filled (err may be NULL), or
 * CF_ERR_NOMEM. On error *out is set to NULL.
 */
int cron_parse(const char *expr, struct cron_schedule **out, struct cron_error *err);

/* Frees a schedule; accepts NULL. */
void cron_free(struct cron_schedule *schedule);

/*
 * Computes the first instant strictly after after_ms at which the schedule
 * fires in zone, following the DST rules of DESIGN §3:
 * - a local time inside a spring-forward gap fires once, at the first
 *   instant after the gap;
 * - a local time repeated by a fall-back fires once, at its first
 *   occurrence, when the hour field is fixed (a number, list or range);
 *   when the hour field is "*" or a step, the schedule follows real time
 *   and fires in both passes.
 * @every schedules ignore the zone (which may then be NULL). Returns CF_OK
 * with *next_ms set, or CF_ERR_NOT_FOUND when the schedule never fires again
 * (e.g. "0 0 30 2 *"), searched for at most 8 years ahead, or when the
 * next instant would lie beyond +-2^52 seconds (some 140 million years).
 */
int cron_next(const struct cron_schedule *schedule, const struct tz_zone *zone, int64_t after_ms,
              int64_t *next_ms);

/*
 * Writes a plain-English description ("at 08:00, Monday through Friday",
 * "every 5 minutes", "every 90 seconds") into buf (NUL-terminated,
 * truncated to len). Returns buf.
 */
char *cron_describe(const struct cron_schedule *schedule, char *buf, size_t len);

/* Period in ms of an @every schedule, or 0 for a calendar schedule. */
int64_t cron_every_ms(const struct cron_schedule *schedule);

#endif
