/*
 * tz.c - IANA time zones from compiled TZif files (RFC 8536), the POSIX TZ
 * rule of their footer, and conversions between UTC instants and local wall
 * time.
 *
 * A loaded zone is reduced to what lookups need: the instants at which the
 * UTC offset changes, the offset from each of them on, and the footer rule
 * that takes over after the file's last transition. Abbreviations and DST
 * flags are dropped, since nothing in cronfence shows or uses them.
 *
 * All instants are seconds since the Unix epoch. Inputs beyond +-2^53 s (some
 * 285 million years) are clamped to that range, so that the calendar
 * arithmetic below can never overflow, whatever a caller passes.
 */
#include "tz.h"

#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
#define TZ_NAME_MAX_BYTES 255
#define TZ_FILE_MAX_BYTES (1024 * 1024)
#define TZ_FOOTER_MAX_BYTES 256
#define TZ_COUNT_MAX 100000               /* transitions, types or characters in one file */
#define TZ_OFFSET_LIMIT_S (26 * 3600)     /* a UTC offset beyond +-26 h is refused as corrupt */
#define TZ_RULE_TIME_LIMIT_S (167 * 3600) /* RFC 8536 section 3.3.1: hours -167..167 */
#define TZ_INSTANT_LIMIT_S ((int64_t)1 << 53)
#define TZ_DAY_S 86400
#define TZ_YEAR_SPAN_S (366 * TZ_DAY_S)

/* ---- calendar arithmetic ------------------------------------------------ */

static int64_t tz_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t tz_clamp(int64_t utc_s)
{
    if (utc_s > TZ_INSTANT_LIMIT_S)
        return TZ_INSTANT_LIMIT_S;
    if (utc_s < -TZ_INSTANT_LIMIT_S)
        return -TZ_INSTANT_LIMIT_S;
    return utc_s;
}

int64_t tz_days_from_civil(int year, int month, int day)
{
    return cf_days_from_civil(year, month, day);
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int tz_weekday_from_days(int64_t days)
{
    return (int)(((days % 7) + 11) % 7);
}

/* ---- POSIX TZ rules (the TZif footer) ----------------------------------- */

enum tz_date_kind {
    TZ_DATE_JULIAN,         /* "Jn": day 1..365, February 29 never counted */
    TZ_DATE_ZERO_BASED,     /* "n": day 0..365, February 29 counted */
    TZ_DATE_MONTH_WEEK_DAY, /* "Mm.w.d": weekday d of week w (5 = last) of month m */
};

struct tz_rule_date {
    enum tz_date_kind kind;
    int day;        /* the day for Jn and n, the weekday (0 = Sunday) for Mm.w.d */
    int week;       /* Mm.w.d only: 1..5 */
    int month;      /* Mm.w.d only: 1..12 */
    int32_t time_s; /* local time of day of the change, may be negative or past 24 h */
};

/*
 * A parsed footer. Offsets are east-positive (the TZ string writes them
 * west-positive). DST starts at start.time_s of standard time and ends at
 * end.time_s of daylight time, every year.
 */
struct tz_rule {
    int32_t std_offset_s;
    int32_t dst_offset_s;
    bool has_dst;
    struct tz_rule_date start, end;
};

/* Reads an unsigned decimal number of at most max_digits digits, no larger than max. */
static bool tz_rule_number(const char **p, int max_digits, int max, int *value)
{
    int digits = 0;
    int result = 0;

    while (**p >= '0' && **p <= '9' && digits < max_digits) {
        result = result * 10 + (**p - '0');
        (*p)++;
        digits++;
    }
    if (digits == 0 || result > max)
        return false;
    *value = result;
    return true;
}

/* Reads "[+-]hh[:mm[:ss]]" with hh <= max_hours into signed seconds. */
static bool tz_rule_hms(const char **p, int max_hours, int32_t *seconds)
{
    int sign = 1;
    int hours = 0;
    int minutes = 0;
    int secs = 0;

    if (**p == '+' || **p == '-') {
        sign = **p == '-' ? -1 : 1;
        (*p)++;
    }
    if (!tz_rule_number(p, 3, max_hours, &hours))
        return false;
    if (**p == ':') {
        (*p)++;
        if (!tz_rule_number(p, 2, 59, &minutes))
            return false;
        if (**p == ':') {
            (*p)++;
            if (!tz_rule_number(p, 2, 59, &secs))
                return false;
        }
    }
    *seconds = sign * (hours * 3600 + minutes * 60 + secs);
    return true;
}

/* Skips a zone abbreviation: "<+0530>" quoted, or at least three letters. */
static bool tz_rule_name(const char **p)
{
    const char *start = *p;

    if (**p == '<') {
        (*p)++;
        start = *p;
        while ((**p >= 'A' && **p <= 'Z') || (**p >= 'a' && **p <= 'z') ||
               (**p >= '0' && **p <= '9') || **p == '+' || **p == '-')
            (*p)++;
        if (**p != '>' || *p - start < 3)
            return false;
        (*p)++;
        return true;
    }
    while ((**p >= 'A' && **p <= 'Z') || (**p >= 'a' && **p <= 'z'))
        (*p)++;
    return *p - start >= 3;
}

/* Reads one ",date[/time]" change date of a rule (the comma already consumed). */
static bool tz_rule_date(const char **p, struct tz_rule_date *date)
{
    date->time_s = 2 * 3600; /* POSIX default: 02:00:00 */
    date->week = 0;
    date->month = 0;
    if (**p == 'J') {
        (*p)++;
        date->kind = TZ_DATE_JULIAN;
        if (!tz_rule_number(p, 3, 365, &date->day) || date->day < 1)
            return false;
    } else if (**p == 'M') {
        (*p)++;
        date->kind = TZ_DATE_MONTH_WEEK_DAY;
        if (!tz_rule_number(p, 2, 12, &date->month) || date->month < 1 || **p != '.')
            return false;
        (*p)++;
        if (!tz_rule_number(p, 1, 5, &date->week) || date->week < 1 || **p != '.')
            return false;
        (*p)++;
        if (!tz_rule_number(p, 1, 6, &date->day))
            return false;
    } else {
        date->kind = TZ_DATE_ZERO_BASED;
        if (!tz_rule_number(p, 3, 365, &date->day))
            return false;
    }
    if (**p == '/') {
        (*p)++;
        if (!tz_rule_hms(p, 167, &date->time_s))
            return false;
    }
    return true;
}

/*
 * Parses a POSIX TZ string with the RFC 8536 extensions ("CET-1CEST,M3.5.0,
 * M10.5.0/3", "<+0530>-5:30", "<-02>2<-01>,M3.5.0/-1,M10.5.0/0"). A DST name
 * without dates gets the US rule "M3.2.0,M11.1.0", as glibc does. Returns
 * false on any syntax error, leaving *rule unspecified.
 */
static bool tz_rule_parse(const char *text, struct tz_rule *rule)
{
    const char *p = text;
    int32_t west_s = 0;

    memset(rule, 0, sizeof(*rule));
    if (!tz_rule_name(&p) || !tz_rule_hms(&p, 24, &west_s))
        return false;
    rule->std_offset_s = -west_s;
    rule->dst_offset_s = rule->std_offset_s;
    if (*p == '\0')
        return true;
    if (!tz_rule_name(&p))
        return false;
    rule->has_dst = true;
    rule->dst_offset_s = rule->std_offset_s + 3600;
    if (*p != ',' && *p != '\0') {
        if (!tz_rule_hms(&p, 24, &west_s))
            return false;
        rule->dst_offset_s = -west_s;
    }
    if (*p == '\0') {
        rule->start = (struct tz_rule_date){TZ_DATE_MONTH_WEEK_DAY, 0, 2, 3, 2 * 3600};
        rule->end = (struct tz_rule_date){TZ_DATE_MONTH_WEEK_DAY, 0, 1, 11, 2 * 3600};
        return true;
    }
    if (*p != ',')
        return false;
    p++;
    if (!tz_rule_date(&p, &rule->start) || *p != ',')
        return false;
    p++;
    if (!tz_rule_date(&p, &rule->end) || *p != '\0')
        return false;
    return true;
}

/* Days since the epoch of a rule date in year. */
static int64_t tz_rule_date_days(const struct tz_rule_date *date, int year)
{
    int64_t jan1 = tz_days_from_civil(year, 1, 1);

    switch (date->kind) {
    case TZ_DATE_JULIAN:
        return jan1 + date->day - 1 + (cf_is_leap_year(year) && date->day >= 60 ? 1 : 0);
    case TZ_DATE_ZERO_BASED:
        return jan1 + date->day;
    case TZ_DATE_MONTH_WEEK_DAY:
        break;
    }
    int64_t first = tz_days_from_civil(year, date->month, 1);
    int64_t last = first + cf_days_in_month(year, date->month) - 1;
    int64_t days = first + (date->day - tz_weekday_from_days(first) + 7) % 7 + 7 * (date->week - 1);

    while (days > last)
        days -= 7;
    return days;
}

/* Whether the rule ever changes the offset. */
static bool tz_rule_changes(const struct tz_rule *rule)
{
    return rule->has_dst && rule->dst_offset_s != rule->std_offset_s;
}

/* The year, in standard time, that contains utc_s. */
static int tz_rule_year(const struct tz_rule *rule, int64_t utc_s)
{
    int year, month, day;

    cf_civil_from_days(tz_floor_div(utc_s + rule->std_offset_s, TZ_DAY_S), &year, &month, &day);
    return year;
}

/*
 * The two changes of year, in the order they happen: events[i] is the UTC
 * instant, offsets[i] the offset from then on.
 */
static void tz_rule_events(const struct tz_rule *rule, int year, int64_t events[2],
                           int32_t offsets[2])
{
    int64_t start_s =
        tz_rule_date_days(&rule->start, year) * TZ_DAY_S + rule->start.time_s - rule->std_offset_s;
    int64_t end_s =
        tz_rule_date_days(&rule->end, year) * TZ_DAY_S + rule->end.time_s - rule->dst_offset_s;

    if (start_s <= end_s) {
        events[0] = start_s;
        offsets[0] = rule->dst_offset_s;
        events[1] = end_s;
        offsets[1] = rule->std_offset_s;
    } else {
        events[0] = end_s;
        offsets[0] = rule->std_offset_s;
        events[1] = start_s;
        offsets[1] = rule->dst_offset_s;
    }
}

/*
 * The offset the rule gives at utc_s: that of the latest change at or before
 * it. Changes are visited year by year; on a tie the later year wins, so a
 * DST that ends on December 31 at 25:00 and starts again on January 1 at
 * 00:00 ("EST5EDT,0/0,J365/25") stays in force all year.
 */
static int32_t tz_rule_offset_at(const struct tz_rule *rule, int64_t utc_s)
{
    if (!tz_rule_changes(rule))
        return rule->std_offset_s;

    int year = tz_rule_year(rule, utc_s);
    int64_t best_s = INT64_MIN;
    int32_t offset_s = rule->std_offset_s;

    /* Change times reach up to 167 h past their date, so look two years back. */
    for (int y = year - 2; y <= year + 1; y++) {
        int64_t events[2];
        int32_t offsets[2];

        tz_rule_events(rule, y, events, offsets);
        for (int i = 0; i < 2; i++) {
            if (events[i] <= utc_s && events[i] >= best_s) {
                best_s = events[i];
                offset_s = offsets[i];
            }
        }
    }
    return offset_s;
}

/* The first rule change strictly after utc_s; false if the rule has none. */
static bool tz_rule_next_event(const struct tz_rule *rule, int64_t utc_s, int64_t *when_s)
{
    if (!tz_rule_changes(rule))
        return false;

    int year = tz_rule_year(rule, utc_s);
    bool found = false;

    for (int y = year - 1; y <= year + 2; y++) {
        int64_t events[2];
        int32_t offsets[2];

        tz_rule_events(rule, y, events, offsets);
        for (int i = 0; i < 2; i++) {
            if (events[i] > utc_s && (!found || events[i] < *when_s)) {
                *when_s = events[i];
                found = true;
            }
        }
    }
    return found;
}

/* ---- zones -------------------------------------------------------------- */

/*
 * A loaded zone; immutable once published in the cache, so lookups take no
 * lock. transitions_s holds the instants at which the offset changes (only
 * real changes: entries that keep the offset are merged away), ascending;
 * offsets_s[i] is in force from transitions_s[i] on. Before the first one,
 * initial_offset_s applies (the file's time type 0, RFC 8536 section 3.2).
 * From rule_from_s on (the file's last transition, or always when the file
 * has none) the footer rule decides, when there is one.
 */
struct tz_zone {
    char *name;
    int64_t *transitions_s;
    int32_t *offsets_s;
    size_t transition_count;
    int32_t initial_offset_s;
    bool has_rule;
    struct tz_rule rule;
    int64_t rule_from_s;
    struct tz_zone *next; /* cache list, guarded by tz_cache_lock */
};

static pthread_mutex_t tz_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tz_zone *tz_cache;

static void tz_zone_free(struct tz_zone *zone)
{
    if (zone == NULL)
        return;
    free(zone->name);
    free(zone->transitions_s);
    free(zone->offsets_s);
    free(zone);
}

/* A new zone with no transitions and a fixed offset, or NULL when out of memory. */
static struct tz_zone *tz_zone_new(const char *name)
{
    struct tz_zone *zone = calloc(1, sizeof(*zone));

    if (zone == NULL)
        return NULL;
    zone->name = strdup(name);
    if (zone->name == NULL) {
        free(zone);
        return NULL;
    }
    zone->rule_from_s = INT64_MIN;
    return zone;
}

const char *tz_name(const struct tz_zone *zone)
{
    assert(zone != NULL);
    return zone->name;
}

int32_t tz_offset_at(const struct tz_zone *zone, int64_t utc_s)
{
    assert(zone != NULL);
    utc_s = tz_clamp(utc_s);
    if (zone->has_rule && utc_s >= zone->rule_from_s)
        return tz_rule_offset_at(&zone->rule, utc_s);
    if (zone->transition_count == 0 || utc_s < zone->transitions_s[0])
        return zone->initial_offset_s;

    /* Binary search for the last transition at or before utc_s. */
    size_t lo = 0;
    size_t hi = zone->transition_count;

    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (zone->transitions_s[mid] <= utc_s)
            lo = mid;
        else
            hi = mid;
    }
    return zone->offsets_s[lo];
}

/*
 * The next instant after utc_s at which the offset may change: a stored
 * transition, the hand-over to the rule, or a rule change.
 */
static bool tz_next_candidate(const struct tz_zone *zone, int64_t utc_s, int64_t *when_s)
{
    if (!zone->has_rule || utc_s < zone->rule_from_s) {
        size_t lo = 0;
        size_t hi = zone->transition_count;

        /* First transition strictly after utc_s. */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;

            if (zone->transitions_s[mid] <= utc_s)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < zone->transition_count &&
            (!zone->has_rule || zone->transitions_s[lo] < zone->rule_from_s)) {
            *when_s = zone->transitions_s[lo];
            return true;
        }
        if (zone->has_rule) {
            *when_s = zone->rule_from_s;
            return true;
        }
        return false;
    }
    return tz_rule_next_event(&zone->rule, utc_s, when_s);
}

bool tz_next_transition(const struct tz_zone *zone, int64_t utc_s, int64_t *when_s)
{
    assert(zone != NULL && when_s != NULL);
    utc_s = tz_clamp(utc_s);

    /*
     * A candidate may leave the offset as it was (a rule whose changes
     * cancel out, or a footer that agrees with the last transition); skip
     * those, but give up once three years of rule changes brought nothing.
     */
    int64_t from_s = utc_s;
    int64_t candidate_s = 0; /* set by tz_next_candidate before any use */

    while (tz_next_candidate(zone, from_s, &candidate_s)) {
        if (candidate_s >= TZ_INSTANT_LIMIT_S)
            return false;
        if (tz_offset_at(zone, candidate_s) != tz_offset_at(zone, candidate_s - 1)) {
            *when_s = candidate_s;
            return true;
        }
        if (zone->has_rule && candidate_s > zone->rule_from_s &&
            candidate_s - utc_s > 3 * TZ_YEAR_SPAN_S)
            return false;
        from_s = candidate_s;
    }
    return false;
}

void tz_to_local(const struct tz_zone *zone, int64_t utc_s, struct tz_local *out)
{
    assert(zone != NULL && out != NULL);
    utc_s = tz_clamp(utc_s);

    int64_t local_s = utc_s + tz_offset_at(zone, utc_s);
    int64_t days = tz_floor_div(local_s, TZ_DAY_S);
    int64_t second_of_day = local_s - days * TZ_DAY_S;

    cf_civil_from_days(days, &out->year, &out->month, &out->day);
    out->hour = (int)(second_of_day / 3600);
    out->minute = (int)(second_of_day / 60 % 60);
    out->second = (int)(second_of_day % 60);
    out->weekday = tz_weekday_from_days(days);
}

int tz_from_local(const struct tz_zone *zone, const struct tz_local *local, int64_t utc_s[2],
                  int64_t *gap_end_s)
{
    assert(zone != NULL && local != NULL && utc_s != NULL);

    int64_t local_s =
        tz_clamp(tz_days_from_civil(local->year, local->month, local->day) * TZ_DAY_S +
                 (int64_t)local->hour * 3600 + (int64_t)local->minute * 60 + local->second);

    /*
     * An instant t shows local_s when t + offset_at(t) == local_s. Offsets
     * stay within +-26 h, so t lies within a day of local_s: gather every
     * offset in force in a window of two days around it and test each.
     */
    int32_t offsets[8];
    int offset_count = 0;
    int64_t window_end_s = local_s + 2 * TZ_DAY_S;
    int64_t when_s = local_s - 2 * TZ_DAY_S;
    int32_t before_s = tz_offset_at(zone, when_s);
    bool in_gap = false;
    int64_t gap_s = 0;

    offsets[offset_count++] = before_s;
    while (offset_count < 8 && tz_next_transition(zone, when_s, &when_s) &&
           when_s <= window_end_s) {
        int32_t after_s = tz_offset_at(zone, when_s);

        /* A forward change skips local times [when + before, when + after). */
        if (before_s < after_s && when_s + before_s <= local_s && local_s < when_s + after_s) {
            in_gap = true;
            gap_s = when_s;
        }
        bool known = false;
        for (int i = 0; i < offset_count; i++)
            known = known || offsets[i] == after_s;
        if (!known)
            offsets[offset_count++] = after_s;
        before_s = after_s;
    }

    int64_t found[8];
    int found_count = 0;

    for (int i = 0; i < offset_count; i++) {
        int64_t t = local_s - offsets[i];

        if (tz_offset_at(zone, t) != offsets[i])
            continue;
        /* Insert in ascending order; distinct offsets give distinct instants. */
        int j = found_count++;
        while (j > 0 && found[j - 1] > t) {
            found[j] = found[j - 1];
            j--;
        }
        found[j] = t;
    }
    for (int i = 0; i < found_count && i < 2; i++)
        utc_s[i] = found[i];
    if (found_count == 0 && gap_end_s != NULL)
        *gap_end_s = in_gap ? gap_s : local_s - offsets[0];
    return found_count < 2 ? found_count : 2;
}

/* ---- loading TZif files ------------------------------------------------- */

/* IANA zone names: [A-Za-z0-9/_+-], no leading, trailing or doubled "/". */
static bool tz_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > TZ_NAME_MAX_BYTES || name[0] == '/' || name[len - 1] == '/')
        return false;
    /* Not a place: a zone of "-00" kept for installers. */
    if (strcmp(name, "Factory") == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '/' || c == '_' || c == '+' || c == '-';

        if (!ok || (c == '/' && name[i + 1] == '/'))
            return false;
        /*
         * Every component of an IANA name starts with a capital letter;
         * the other files of a zoneinfo folder (localtime, posixrules,
         * posix/..., right/...) do not.
         */
        if ((i == 0 || name[i - 1] == '/') && !(c >= 'A' && c <= 'Z'))
            return false;
    }
    return true;
}

static uint32_t tz_read_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t tz_read_i64(const unsigned char *p)
{
    uint64_t value = (uint64_t)tz_read_u32(p) << 32 | tz_read_u32(p + 4);

    return (int64_t)value;
}

/* The counts of a TZif header (RFC 8536 section 3.1). */
struct tz_header {
    int version; /* 1, 2, 3, ... */
    size_t isut_count, isstd_count, leap_count, time_count, type_count, char_count;
};

#define TZ_HEADER_BYTES 44

static bool tz_parse_header(const unsigned char *data, size_t size, struct tz_header *header)
{
    if (size < TZ_HEADER_BYTES || memcmp(data, "TZif", 4) != 0)
        return false;
    header->version = data[4] == 0 ? 1 : data[4] - '0';
    if (header->version < 1 || header->version > 9)
        return false;
    header->isut_count = tz_read_u32(data + 20);
    header->isstd_count = tz_read_u32(data + 24);
    header->leap_count = tz_read_u32(data + 28);
    header->time_count = tz_read_u32(data + 32);
    header->type_count = tz_read_u32(data + 36);
    header->char_count = tz_read_u32(data + 40);
    if (header->type_count == 0 || header->char_count == 0 || header->time_count > TZ_COUNT_MAX ||
        header->type_count > 256 || header->char_count > TZ_COUNT_MAX ||
        header->leap_count > TZ_COUNT_MAX)
        return false;
    if ((header->isut_count != 0 && header->isut_count != header->type_count) ||
        (header->isstd_count != 0 && header->isstd_count != header->type_count))
        return false;
    return true;
}

/* Bytes of the data block that follows a header, with time_bytes per time value. */
static size_t tz_block_bytes(const struct tz_header *header, size_t time_bytes)
{
    return header->time_count * time_bytes + header->time_count + header->type_count * 6 +
           header->char_count + header->leap_count * (time_bytes + 4) + header->isstd_count +
           header->isut_count;
}

/*
 * Fills zone from the data block at block (time_bytes 4 for v1, 8 for v2+).
 * Zones with leap-second records ("right/...") are refused: their
 * timestamps do not count seconds the way the rest of cronfence does.
 */
static bool tz_parse_block(const unsigned char *block, const struct tz_header *header,
                           size_t time_bytes, struct tz_zone *zone)
{
    const unsigned char *times = block;
    const unsigned char *indices = times + header->time_count * time_bytes;
    const unsigned char *types = indices + header->time_count;
    int32_t type_offsets_s[256];

    if (header->leap_count != 0)
        return false;
    for (size_t i = 0; i < header->type_count; i++) {
        int32_t offset_s = (int32_t)tz_read_u32(types + 6 * i);

        if (offset_s < -TZ_OFFSET_LIMIT_S || offset_s > TZ_OFFSET_LIMIT_S || types[6 * i + 4] > 1)
            return false;
        type_offsets_s[i] = offset_s;
    }
    zone->initial_offset_s = type_offsets_s[0];
    if (header->time_count == 0)
        return true;

    zone->transitions_s = malloc(header->time_count * sizeof(*zone->transitions_s));
    zone->offsets_s = malloc(header->time_count * sizeof(*zone->offsets_s));
    if (zone->transitions_s == NULL || zone->offsets_s == NULL)
        return false;

    int32_t current_s = zone->initial_offset_s;
    int64_t previous_s = INT64_MIN;

    for (size_t i = 0; i < header->time_count; i++) {
        int64_t when_s = time_bytes == 8 ? tz_read_i64(times + 8 * i)
                                         : (int64_t)(int32_t)tz_read_u32(times + 4 * i);
        size_t type = indices[i];

        if (type >= header->type_count || (i > 0 && when_s <= previous_s))
            return false;
        previous_s = when_s;
        if (type_offsets_s[type] == current_s)
            continue;
        current_s = type_offsets_s[type];
        zone->transitions_s[zone->transition_count] = tz_clamp(when_s);
        zone->offsets_s[zone->transition_count] = current_s;
        zone->transition_count++;
    }
    zone->rule_from_s = tz_clamp(previous_s);
    return true;
}

/* Parses a whole TZif file into zone. Returns false when it is malformed. */
static bool tz_parse_file(const unsigned char *data, size_t size, struct tz_zone *zone)
{
    struct tz_header header;

    if (!tz_parse_header(data, size, &header))
        return false;

    size_t block_bytes = tz_block_bytes(&header, 4);

    if (size - TZ_HEADER_BYTES < block_bytes)
        return false;
    if (header.version == 1)
        return tz_parse_block(data + TZ_HEADER_BYTES, &header, 4, zone);

    /* Version 2+: skip the 32-bit block, use the 64-bit one and the footer. */
    const unsigned char *second = data + TZ_HEADER_BYTES + block_bytes;
    size_t rest = size - TZ_HEADER_BYTES - block_bytes;

    if (!tz_parse_header(second, rest, &header))
        return false;
    block_bytes = tz_block_bytes(&header, 8);
    if (rest - TZ_HEADER_BYTES < block_bytes)
        return false;
    if (!tz_parse_block(second + TZ_HEADER_BYTES, &header, 8, zone))
        return false;

    const char *footer = (const char *)second + TZ_HEADER_BYTES + block_bytes;
    size_t footer_bytes = rest - TZ_HEADER_BYTES - block_bytes;
    const char *newline = footer_bytes > 1 ? memchr(footer + 1, '\n', footer_bytes - 1) : NULL;

    if (footer_bytes < 2 || footer[0] != '\n' || newline == NULL)
        return false;

    size_t rule_bytes = (size_t)(newline - footer - 1);
    char rule_text[TZ_FOOTER_MAX_BYTES];

    if (rule_bytes == 0)
        return true; /* an empty footer: the last transition's offset stays */
    if (rule_bytes >= sizeof(rule_text))
        return false;
    memcpy(rule_text, footer + 1, rule_bytes);
    rule_text[rule_bytes] = '\0';
    if (!tz_rule_parse(rule_text, &zone->rule))
        return false;
    zone->has_rule = true;
    return true;
}

/* Reads a regular file of at most TZ_FILE_MAX_BYTES; returns a malloc'd buffer or NULL. */
static unsigned char *tz_read_file(const char *path, size_t *size)
{
    unsigned char *data = NULL;
    size_t done = 0;
    struct stat info;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_size <= 0 ||
        info.st_size > TZ_FILE_MAX_BYTES)
        goto out_close;
    data = malloc((size_t)info.st_size);
    if (data == NULL)
        goto out_close;
    while (done < (size_t)info.st_size) {
        ssize_t n = read(fd, data + done, (size_t)info.st_size - done);

        if (n <= 0) {
            free(data);
            data = NULL;
            goto out_close;
        }
        done += (size_t)n;
    }
    *size = done;
out_close:
    close(fd);
    return data;
}

/* Loads name from the zoneinfo directory; NULL when unreadable or malformed. */
static struct tz_zone *tz_load(const char *name)
{
    const char *dir = getenv("TZDIR");
    char path[PATH_MAX];
    size_t size = 0;

    if (dir == NULL || dir[0] == '\0')
        dir = TZ_DEFAULT_DIR;

    int written = snprintf(path, sizeof(path), "%s/%s", dir, name);

    if (written < 0 || (size_t)written >= sizeof(path))
        return NULL;

    unsigned char *data = tz_read_file(path, &size);

    if (data == NULL)
        return NULL;

    struct tz_zone *zone = tz_zone_new(name);

    if (zone != NULL && !tz_parse_file(data, size, zone)) {
        tz_zone_free(zone);
        zone = NULL;
    }
    free(data);
    return zone;
}

const struct tz_zone *tz_get(const char *name)
{
    assert(name != NULL);
    if (!tz_name_valid(name))
        return NULL;

    struct tz_zone *zone;

    pthread_mutex_lock(&tz_cache_lock);
    for (zone = tz_cache; zone != NULL; zone = zone->next) {
        if (strcmp(zone->name, name) == 0)
            goto out_unlock;
    }
    zone = tz_load(name);
    /* UTC must work on hosts without zoneinfo (minimal containers). */
    if (zone == NULL && (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0))
        zone = tz_zone_new(name);
    if (zone != NULL) {
        zone->next = tz_cache;
        tz_cache = zone;
    }
out_unlock:
    pthread_mutex_unlock(&tz_cache_lock);
    return zone;
}
