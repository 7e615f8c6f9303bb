/*
 * tz.h - IANA time zones, loaded from the system's compiled zoneinfo (TZif)
 * files, with lookups that are pure functions of the loaded data.
 *
 * A zone is loaded once per process and shared: tz_get() returns a borrowed
 * reference that stays valid until the process exits. Lookups beyond the last
 * transition in the file follow the POSIX TZ rule in the file's footer, so
 * instants in any future year are computed correctly.
 *
 * The zoneinfo directory is $TZDIR when set, else /usr/share/zoneinfo.
 * Instants beyond +-2^53 seconds are clamped to that range.
 */
#ifndef CF_TZ_H
#define CF_TZ_H

#include <stdbool.h>
#include <stdint.h>

struct tz_zone;

/*
 * Returns the zone named name ("UTC", "Europe/Berlin"), loading it on first
 * use; thread-safe. Returns NULL when the name is not an IANA zone name or
 * no TZif file for it can be read and parsed. An IANA name is made of
 * components of [A-Za-z0-9_+-] separated by single "/", each starting with
 * a capital letter, and is not "Factory": so neither "..", nor a leading
 * "/", nor the zoneinfo folder's other files ("localtime", "posixrules",
 * "posix/...", "right/...") pass. Borrowed reference: never free it. "UTC" and "Etc/UTC"
 * work even without zoneinfo files (offset 0). Files with leap-second
 * records ("right/...") are refused, since their clock counts differently.
 */
const struct tz_zone *tz_get(const char *name);

/* The zone's name as given to tz_get(). */
const char *tz_name(const struct tz_zone *zone);

/* UTC offset in seconds (east positive) in force at utc_s seconds since the epoch. */
int32_t tz_offset_at(const struct tz_zone *zone, int64_t utc_s);

/*
 * Broken-down local time, with the conventions of struct tm except that
 * year is the full year (2026) and month is 1..12.
 */
struct tz_local {
    int year, month, day; /* month 1..12, day 1..31 */
    int hour, minute, second;
    int weekday; /* 0 = Sunday */
};

/* Converts utc_s to local time in zone. */
void tz_to_local(const struct tz_zone *zone, int64_t utc_s, struct tz_local *out);

/*
 * Finds the UTC instants at which local wall time `local` (weekday ignored)
 * occurs in zone. Returns how many: 0 when it falls in a gap (spring forward),
 * 1 normally, 2 when it is repeated (fall back), with the instants in
 * ascending order in utc_s[0..1]. For a gap, *gap_end_s (if not NULL) is set
 * to the first UTC instant after the gap (the transition instant).
 */
int tz_from_local(const struct tz_zone *zone, const struct tz_local *local, int64_t utc_s[2],
                  int64_t *gap_end_s);

/*
 * Finds the first instant strictly after utc_s at which the zone's UTC offset
 * changes (a change of abbreviation or DST flag alone does not count).
 * Returns true with *when_s set, or false when the offset never changes
 * again. Lets callers walk time in spans of constant offset instead of
 * probing every hour.
 */
bool tz_next_transition(const struct tz_zone *zone, int64_t utc_s, int64_t *when_s);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
int64_t tz_days_from_civil(int year, int month, int day);

#endif
