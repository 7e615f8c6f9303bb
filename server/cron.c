/*
 * cron.c - cron schedules: parser, next-instant search and descriptions.
 *
 * A calendar schedule is a set of bit masks, one per field, plus the special
 * day forms (L, nL, n#k) and the facts the DST and Vixie rules need. The
 * search for the next instant walks time in spans of constant UTC offset;
 * within a span, local time is UTC shifted by a constant, and the search
 * skips by fields (whole months, days, hours, minutes) that cannot match, so
 * one call costs a handful of steps rather than one per second.
 */
#include "cron.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define CRON_EXPR_MAX_BYTES 1024
#define CRON_DAY_S 86400
/* "searched for at most 8 years ahead" (cron.h): covers 2096-02-29 -> 2104-02-29. */
#define CRON_SEARCH_S ((int64_t)8 * 366 * CRON_DAY_S)
/* Instants cron_next() handles, well inside the range tz.c computes exactly. */
#define CRON_INSTANT_LIMIT_S ((int64_t)1 << 52)
/* Longest @every period: 100 years of 365.25 days. */
#define CRON_EVERY_MAX_MS ((int64_t)36525 * CRON_DAY_S * 1000)
/* Transitions within this long before an instant may still shape its span. */
#define CRON_SPAN_LOOKBACK_S (3 * CRON_DAY_S)

enum cron_field_id {
    CRON_SECOND,
    CRON_MINUTE,
    CRON_HOUR,
    CRON_DAY_OF_MONTH,
    CRON_MONTH,
    CRON_DAY_OF_WEEK,
    CRON_FIELD_COUNT,
};

/*
 * A field's grammar: values min..max; an open range ("*", "a/n") ends at
 * open_max (day-of-week stops at 6 so that 7, Sunday again, is not counted
 * twice); steps go 1..open_max - min + 1.
 */
struct cron_field_spec {
    const char *name;
    int min, max, open_max;
    const char *const *names; /* name_count three-letter names for min.., or NULL */
    int name_count;
};

static const char *const cron_month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                               "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const cron_weekday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static const struct cron_field_spec cron_fields[CRON_FIELD_COUNT] = {
    [CRON_SECOND] = {"second", 0, 59, 59, NULL, 0},
    [CRON_MINUTE] = {"minute", 0, 59, 59, NULL, 0},
    [CRON_HOUR] = {"hour", 0, 23, 23, NULL, 0},
    [CRON_DAY_OF_MONTH] = {"day-of-month", 1, 31, 31, NULL, 0},
    [CRON_MONTH] = {"month", 1, 12, 12, cron_month_names, 12},
    [CRON_DAY_OF_WEEK] = {"day-of-week", 0, 7, 6, cron_weekday_names, 7},
};

/*
 * A parsed schedule. For @every, every_ms > 0 and the rest is unused.
 * Otherwise bit n of a mask is set when value n matches (weekday 0 is
 * Sunday, whether written 0 or 7). day_any / weekday_any record a day field
 * written "*" or "?": unrestricted for the Vixie rule. hour_fixed is true
 * when the hour field has no "*" and no step: such schedules fire once in a
 * repeated (fall-back) hour.
 */
struct cron_schedule {
    int64_t every_ms;
    uint64_t seconds;
    uint64_t minutes;
    uint32_t hours;
    uint32_t days;           /* bits 1..31 */
    uint16_t months;         /* bits 1..12 */
    uint8_t weekdays;        /* bits 0..6 */
    uint8_t last_weekdays;   /* "nL": bit n */
    uint8_t nth_weekdays[7]; /* "n#k": bit k-1 of [n] */
    bool last_day;           /* "L" in day-of-month */
    bool day_any;
    bool weekday_any;
    bool hour_fixed;
    bool has_seconds;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t cron_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static bool cron_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool cron_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool cron_is_letter(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static char cron_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* Case-insensitive comparison of the len bytes at text with word (of exactly len bytes). */
static bool cron_word_equals(const char *text, size_t len, const char *word)
{
    if (strlen(word) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (cron_upper(text[i]) != cron_upper(word[i]))
            return false;
    }
    return true;
}

static bool cron_bit(uint64_t mask, int bit)
{
    return (mask >> bit) & 1;
}

/* The lowest set bit of mask at or above from, or -1. */
static int cron_next_bit(uint64_t mask, int from)
{
    if (from >= 64)
        return -1;
    mask >>= from;
    if (mask == 0)
        return -1;
    return from + __builtin_ctzll(mask);
}

/* ---- parsing ------------------------------------------------------------ */

struct cron_parser {
    const char *expr;
    struct cron_error *err;
    struct cron_schedule *schedule;
};

/* Records an error at byte position of the expression; returns CF_ERR_INVALID. */
__attribute__((format(printf, 3, 4))) static int cron_fail(struct cron_parser *parser,
                                                           const char *at, const char *fmt, ...)
{
    if (parser->err != NULL) {
        va_list args;

        parser->err->position = (int)(at - parser->expr);
        va_start(args, fmt);
        vsnprintf(parser->err->message, sizeof(parser->err->message), fmt, args);
        va_end(args);
    }
    return CF_ERR_INVALID;
}

/* "unexpected character 'x' in minute", or the byte in hex when not printable. */
static int cron_fail_unexpected(struct cron_parser *parser, const char *at, const char *where)
{
    unsigned char c = (unsigned char)*at;

    if (c >= 0x21 && c <= 0x7e)
        return cron_fail(parser, at, "unexpected character '%c' in %s", c, where);
    return cron_fail(parser, at, "unexpected byte 0x%02x in %s", c, where);
}

/* Digits shown in messages are cut to this many, so that a message always fits. */
#define CRON_SHOWN_DIGITS 40

/*
 * Reads a run of decimal digits at *p (advancing it). The value saturates at
 * 1e9, which is out of range for every field, so huge inputs stay refused
 * without overflowing. *len gets the number of digits, 0 when there are none.
 */
static int cron_read_number(const char **p, int *len)
{
    int value = 0;

    *len = 0;
    while (cron_is_digit(**p)) {
        if (value < 100000000)
            value = value * 10 + (**p - '0');
        else
            value = 1000000000;
        (*p)++;
        (*len)++;
    }
    return value;
}

static int cron_shown_len(int len)
{
    return len < CRON_SHOWN_DIGITS ? len : CRON_SHOWN_DIGITS;
}

/*
 * Reads one value (a number or, in fields with names, a three-letter name)
 * at *p, range-checked. In day-of-week, "FRIL" reads as FRI followed by the
 * L suffix. Returns CF_OK with *value set, or an error.
 */
static int cron_read_value(struct cron_parser *parser, const struct cron_field_spec *spec,
                           const char **p, int *value)
{
    const char *start = *p;

    if (cron_is_digit(*start)) {
        int len;
        int number = cron_read_number(p, &len);

        if (number < spec->min || number > spec->max)
            return cron_fail(parser, start, "%s %.*s out of range %d-%d", spec->name,
                             cron_shown_len(len), start, spec->min, spec->max);
        *value = number;
        return CF_OK;
    }
    if (!cron_is_letter(*start) || spec->names == NULL)
        return cron_fail_unexpected(parser, start, spec->name);

    const char *end = start;

    while (cron_is_letter(*end))
        end++;

    size_t len = (size_t)(end - start);

    if (spec->names == cron_weekday_names && len == 4 && cron_upper(start[3]) == 'L')
        len = 3;
    for (int i = 0; i < spec->name_count; i++) {
        if (cron_word_equals(start, len, spec->names[i])) {
            *value = spec->min + i;
            *p = start + len;
            return CF_OK;
        }
    }
    return cron_fail(parser, start, "unknown %s name %.*s", spec->name,
                     (int)(end - start > 16 ? 16 : end - start), start);
}

/* Whether p ends the current list item. */
static bool cron_item_end(const char *p, const char *field_end)
{
    return p == field_end || *p == ',';
}

/*
 * Parses one list item of field id in [start, field_end) into the
 * schedule. *p is left after the item.
 */
static int cron_parse_item(struct cron_parser *parser, enum cron_field_id id, const char **p,
                           const char *field_end, uint64_t *mask)
{
    const struct cron_field_spec *spec = &cron_fields[id];
    struct cron_schedule *schedule = parser->schedule;
    const char *start = *p;
    int lo, hi;
    bool open = false;   /* "*": every value */
    bool ranged = false; /* "a-b" */
    bool stepped = false;
    int step = 1;
    int rc;

    if (cron_item_end(start, field_end))
        return cron_fail(parser, start, "empty list item in %s", spec->name);
    if (*start == '?') {
        if (id != CRON_DAY_OF_MONTH && id != CRON_DAY_OF_WEEK)
            return cron_fail(parser, start, "? is only allowed in day-of-month and day-of-week");
        return cron_fail(parser, start, "? must stand alone in %s", spec->name);
    }
    if (id == CRON_DAY_OF_MONTH && cron_upper(*start) == 'L') {
        *p = start + 1;
        if (!cron_item_end(*p, field_end))
            return cron_fail_unexpected(parser, *p, spec->name);
        schedule->last_day = true;
        return CF_OK;
    }
    if (id == CRON_DAY_OF_WEEK && cron_upper(*start) == 'L' && !cron_is_letter(start[1]))
        return cron_fail(parser, start, "L in day-of-week needs a weekday before it, e.g. 5L");

    if (*start == '*') {
        open = true;
        lo = spec->min;
        hi = spec->open_max;
        *p = start + 1;
    } else {
        rc = cron_read_value(parser, spec, p, &lo);
        if (rc != CF_OK)
            return rc;
        hi = lo;
        if (id == CRON_DAY_OF_WEEK && cron_upper(**p) == 'L') {
            (*p)++;
            if (!cron_item_end(*p, field_end))
                return cron_fail_unexpected(parser, *p, spec->name);
            schedule->last_weekdays |= (uint8_t)(1u << (lo % 7));
            return CF_OK;
        }
        if (id == CRON_DAY_OF_WEEK && **p == '#') {
            (*p)++;

            const char *number_at = *p;
            int len;
            int nth = cron_read_number(p, &len);

            if (len == 0)
                return cron_fail(parser, number_at, "expected a number after '#' in day-of-week");
            if (nth < 1 || nth > 5)
                return cron_fail(parser, number_at, "day-of-week occurrence %.*s out of range 1-5",
                                 cron_shown_len(len), number_at);
            if (!cron_item_end(*p, field_end))
                return cron_fail_unexpected(parser, *p, spec->name);
            schedule->nth_weekdays[lo % 7] |= (uint8_t)(1u << (nth - 1));
            return CF_OK;
        }
        if (**p == '-') {
            (*p)++;
            if (cron_item_end(*p, field_end) || **p == '/')
                return cron_fail(parser, *p, "expected a value after '-' in %s", spec->name);
            rc = cron_read_value(parser, spec, p, &hi);
            if (rc != CF_OK)
                return rc;
            /* "FRI-SUN": Sunday as the end of a range is day 7. */
            if (id == CRON_DAY_OF_WEEK && hi == 0 && lo > 0)
                hi = 7;
            if (hi < lo)
                return cron_fail(parser, start, "%s range %d-%d is reversed", spec->name, lo, hi);
            ranged = true;
        }
    }
    if (**p == '/') {
        (*p)++;

        const char *number_at = *p;
        int len;

        step = cron_read_number(p, &len);
        if (len == 0)
            return cron_fail(parser, number_at, "expected a number after '/' in %s", spec->name);
        if (step < 1 || step > spec->open_max - spec->min + 1)
            return cron_fail(parser, number_at, "%s step %.*s out of range 1-%d", spec->name,
                             cron_shown_len(len), number_at, spec->open_max - spec->min + 1);
        stepped = true;
        /* "a/n": from a to the end of the field ("7/n" in day-of-week: Sunday alone). */
        if (!open && !ranged)
            hi = lo > spec->open_max ? spec->max : spec->open_max;
    }
    if (!cron_item_end(*p, field_end))
        return cron_fail_unexpected(parser, *p, spec->name);

    for (int value = lo; value <= hi; value += step)
        *mask |= (uint64_t)1 << (id == CRON_DAY_OF_WEEK ? value % 7 : value);
    if (id == CRON_HOUR && (open || stepped))
        schedule->hour_fixed = false;
    return CF_OK;
}

/* Parses field id, the bytes [start, end) of the expression. */
static int cron_parse_field(struct cron_parser *parser, enum cron_field_id id, const char *start,
                            const char *end)
{
    struct cron_schedule *schedule = parser->schedule;
    uint64_t mask = 0;
    bool any = (end - start == 1) && (*start == '*' || *start == '?');

    if (end - start == 1 && *start == '?') {
        if (id != CRON_DAY_OF_MONTH && id != CRON_DAY_OF_WEEK)
            return cron_fail(parser, start, "? is only allowed in day-of-month and day-of-week");
        mask = id == CRON_DAY_OF_MONTH ? 0xfffffffeu : 0x7fu;
    } else {
        const char *p = start;

        for (;;) {
            int rc = cron_parse_item(parser, id, &p, end, &mask);

            if (rc != CF_OK)
                return rc;
            if (p == end)
                break;
            p++; /* the comma */
            if (p == end)
                return cron_fail(parser, p, "empty list item in %s", cron_fields[id].name);
        }
    }
    switch (id) {
    case CRON_SECOND:
        schedule->seconds = mask;
        break;
    case CRON_MINUTE:
        schedule->minutes = mask;
        break;
    case CRON_HOUR:
        schedule->hours = (uint32_t)mask;
        break;
    case CRON_DAY_OF_MONTH:
        schedule->days = (uint32_t)mask;
        schedule->day_any = any;
        break;
    case CRON_MONTH:
        schedule->months = (uint16_t)mask;
        break;
    case CRON_DAY_OF_WEEK:
        schedule->weekdays = (uint8_t)mask;
        schedule->weekday_any = any;
        break;
    case CRON_FIELD_COUNT:
        break;
    }
    return CF_OK;
}

/*
 * Parses the 5 or 6 whitespace-separated fields starting at p. A wrong count
 * is reported at the end of the last field (too few) or at the start of the
 * first extra one (too many).
 */
static int cron_parse_fields(struct cron_parser *parser, const char *p)
{
    const char *starts[6];
    const char *ends[6];
    const char *extra = NULL; /* start of the seventh field */
    const char *last_end = p;
    int count = 0;

    while (*p != '\0') {
        const char *start = p;

        while (*p != '\0' && !cron_is_space(*p))
            p++;
        if (count < 6) {
            starts[count] = start;
            ends[count] = p;
        } else if (count == 6) {
            extra = start;
        }
        last_end = p;
        count++;
        while (cron_is_space(*p))
            p++;
    }
    if (count < 5)
        return cron_fail(parser, last_end, "expected 5 or 6 fields, got %d", count);
    if (count > 6)
        return cron_fail(parser, extra, "expected 5 or 6 fields, got %d", count);

    struct cron_schedule *schedule = parser->schedule;
    int first = CRON_SECOND;

    schedule->has_seconds = count == 6;
    if (count == 5) {
        schedule->seconds = 1; /* second 0 */
        first = CRON_MINUTE;
    }
    for (int i = 0; i < count; i++) {
        int rc = cron_parse_field(parser, (enum cron_field_id)(first + i), starts[i], ends[i]);

        if (rc != CF_OK)
            return rc;
    }
    return CF_OK;
}

/*
 * Parses an @every duration at *p ("90s", "1h30m", "1500ms" refused: whole
 * seconds only) into *every_ms.
 */
static int cron_parse_duration(struct cron_parser *parser, const char **p, int64_t *every_ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    const char *start = *p;
    int64_t total_ms = 0;

    while (**p != '\0' && !cron_is_space(**p)) {
        const char *number_at = *p;
        int len;
        int64_t number = cron_read_number(p, &len);

        if (len == 0)
            return cron_fail(parser, number_at, "expected a number in duration");

        const char *unit_at = *p;

        while (cron_is_letter(**p))
            (*p)++;

        size_t unit_len = (size_t)(*p - unit_at);
        int64_t unit_ms = 0;

        if (unit_len == 0)
            return cron_fail(parser, unit_at, "missing unit after %.*s in duration (h, m, s or ms)",
                             cron_shown_len(len), number_at);
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strlen(units[i].unit) == unit_len && memcmp(units[i].unit, unit_at, unit_len) == 0)
                unit_ms = units[i].ms;
        }
        if (unit_ms == 0)
            return cron_fail(parser, unit_at, "unknown duration unit %.*s (h, m, s or ms)",
                             (int)(unit_len > 16 ? 16 : unit_len), unit_at);
        /* number <= 1e9 and unit_ms <= 3.6e6: the product fits in int64. */
        total_ms += number * unit_ms;
        if (total_ms > CRON_EVERY_MAX_MS)
            return cron_fail(parser, start, "duration too long");
    }
    if (total_ms < 1000)
        return cron_fail(parser, start, "duration must be at least 1s");
    if (total_ms % 1000 != 0)
        return cron_fail(parser, start, "duration must be a whole number of seconds");
    *every_ms = total_ms;
    return CF_OK;
}

/* Parses a macro at p (the '@') into the schedule. */
static int cron_parse_macro(struct cron_parser *parser, const char *p)
{
    static const struct {
        const char *name;
        const char *expansion;
    } macros[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    const char *start = p;
    const char *end = p;

    while (*end != '\0' && !cron_is_space(*end))
        end++;

    size_t len = (size_t)(end - start);
    const char *rest = end;

    while (cron_is_space(*rest))
        rest++;
    if (cron_word_equals(start, len, "@every")) {
        if (*rest == '\0')
            return cron_fail(parser, rest, "@every needs a duration, e.g. 5m");

        const char *q = rest;
        int rc = cron_parse_duration(parser, &q, &parser->schedule->every_ms);

        if (rc != CF_OK)
            return rc;
        while (cron_is_space(*q))
            q++;
        if (*q != '\0')
            return cron_fail(parser, q, "unexpected text after duration");
        return CF_OK;
    }
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
        if (!cron_word_equals(start, len, macros[i].name))
            continue;
        if (*rest != '\0')
            return cron_fail(parser, rest, "unexpected text after %s", macros[i].name);

        /* The expansions are valid by construction. */
        struct cron_parser inner = {macros[i].expansion, NULL, parser->schedule};

        return cron_parse_fields(&inner, macros[i].expansion);
    }
    return cron_fail(parser, start, "unknown macro %.*s", (int)(len > 32 ? 32 : len), start);
}

int cron_parse(const char *expr, struct cron_schedule **out, struct cron_error *err)
{
    assert(expr != NULL && out != NULL);

    struct cron_parser parser = {expr, err, NULL};
    const char *p = expr;
    int rc;

    *out = NULL;
    if (err != NULL) {
        err->position = 0;
        err->message[0] = '\0';
    }
    if (strnlen(expr, CRON_EXPR_MAX_BYTES + 1) > CRON_EXPR_MAX_BYTES)
        return cron_fail(&parser, expr + CRON_EXPR_MAX_BYTES, "expression longer than %d bytes",
                         CRON_EXPR_MAX_BYTES);
    parser.schedule = calloc(1, sizeof(*parser.schedule));
    if (parser.schedule == NULL)
        return CF_ERR_NOMEM;
    parser.schedule->hour_fixed = true;
    while (cron_is_space(*p))
        p++;
    if (*p == '\0')
        rc = cron_fail(&parser, expr, "empty expression");
    else if (*p == '@')
        rc = cron_parse_macro(&parser, p);
    else
        rc = cron_parse_fields(&parser, p);
    if (rc != CF_OK) {
        free(parser.schedule);
        return rc;
    }
    *out = parser.schedule;
    return CF_OK;
}

void cron_free(struct cron_schedule *schedule)
{
    free(schedule);
}

int64_t cron_every_ms(const struct cron_schedule *schedule)
{
    assert(schedule != NULL);
    return schedule->every_ms;
}

/* ---- next instant ------------------------------------------------------- */

/* Whether the day matches, under the Vixie rule for the two day fields. */
static bool cron_day_matches(const struct cron_schedule *schedule, int year, int month, int day,
                             int weekday)
{
    int month_days = cf_days_in_month(year, month);
    bool day_match = cron_bit(schedule->days, day) || (schedule->last_day && day == month_days);
    bool weekday_match = cron_bit(schedule->weekdays, weekday) ||
                         (cron_bit(schedule->last_weekdays, weekday) && day + 7 > month_days) ||
                         cron_bit(schedule->nth_weekdays[weekday], (day - 1) / 7);

    if (schedule->day_any)
        return weekday_match;
    if (schedule->weekday_any)
        return day_match;
    return day_match || weekday_match;
}

/*
 * Finds the first local wall time in [from_s, until_s) that the schedule
 * matches, local times counted in seconds like UTC ones ("naive" local
 * time). Skips whole months, days, hours and minutes that cannot match.
 */
static bool cron_find_local(const struct cron_schedule *schedule, int64_t from_s, int64_t until_s,
                            int64_t *found_s)
{
    int64_t t = from_s;

    while (t < until_s) {
        int64_t days = cron_floor_div(t, CRON_DAY_S);
        int64_t day_start = days * CRON_DAY_S;
        int second_of_day = (int)(t - day_start);
        int year, month, day;

        cf_civil_from_days(days, &year, &month, &day);
        if (!cron_bit(schedule->months, month)) {
            t = day_start + (int64_t)(cf_days_in_month(year, month) - day + 1) * CRON_DAY_S;
            continue;
        }
        if (!cron_day_matches(schedule, year, month, day, (int)(((days % 7) + 11) % 7))) {
            t = day_start + CRON_DAY_S;
            continue;
        }

        int hour = second_of_day / 3600;
        int minute = second_of_day / 60 % 60;
        int second = second_of_day % 60;
        int next_hour = cron_next_bit(schedule->hours, hour);

        if (next_hour < 0) {
            t = day_start + CRON_DAY_S;
            continue;
        }
        if (next_hour != hour) {
            t = day_start + next_hour * 3600;
            continue;
        }

        int next_minute = cron_next_bit(schedule->minutes, minute);

        if (next_minute < 0) {
            t = day_start + (hour + 1) * 3600;
            continue;
        }
        if (next_minute != minute) {
            t = day_start + hour * 3600 + next_minute * 60;
            continue;
        }

        int next_second = cron_next_bit(schedule->seconds, second);

        if (next_second < 0) {
            t = day_start + hour * 3600 + (minute + 1) * 60;
            continue;
        }
        t += next_second - second;
        if (t >= until_s)
            return false;
        *found_s = t;
        return true;
    }
    return false;
}

static int cron_next_every(const struct cron_schedule *schedule, int64_t after_ms, int64_t *next_ms)
{
    int64_t periods = cron_floor_div(after_ms, schedule->every_ms) + 1;

    if (periods > INT64_MAX / schedule->every_ms)
        return CF_ERR_NOT_FOUND;
    *next_ms = periods * schedule->every_ms;
    return CF_OK;
}

/*
 * The search walks spans of constant UTC offset [span_start, span_end).
 * Within one, local = utc + offset is a bijection, so matching local times
 * map straight to instants. At a span's start the DST rules apply:
 * - a forward change leaves local times [start + before, start + after)
 *   out; if the schedule matches one of them, it fires at the change;
 * - a backward change repeats local times [start + after, start + before);
 *   a schedule with a fixed hour already fired at their first occurrence,
 *   so its search in the new span starts after them.
 */
int cron_next(const struct cron_schedule *schedule, const struct tz_zone *zone, int64_t after_ms,
              int64_t *next_ms)
{
    assert(schedule != NULL && next_ms != NULL);
    if (schedule->every_ms > 0)
        return cron_next_every(schedule, after_ms, next_ms);
    assert(zone != NULL);

    int64_t t = cron_floor_div(after_ms, 1000) + 1; /* first whole second after after_ms */

    if (t > CRON_INSTANT_LIMIT_S || t < -CRON_INSTANT_LIMIT_S)
        return CF_ERR_NOT_FOUND;

    int64_t limit_s = t + CRON_SEARCH_S;
    int32_t offset_s = tz_offset_at(zone, t);
    int64_t span_start = t;
    int32_t before_s = offset_s;
    int64_t when_s = t - CRON_SPAN_LOOKBACK_S;
    bool recent_change = false;

    /* Where did the span holding t start? Only a recent change matters. */
    while (tz_next_transition(zone, when_s, &when_s) && when_s <= t) {
        span_start = when_s;
        recent_change = true;
    }
    if (recent_change)
        before_s = tz_offset_at(zone, span_start - 1);

    for (;;) {
        int64_t span_end;
        int64_t local_s;

        if (!tz_next_transition(zone, t, &span_end) || span_end > limit_s)
            span_end = limit_s;
        if (t == span_start && before_s < offset_s &&
            cron_find_local(schedule, span_start + before_s, span_start + offset_s, &local_s)) {
            *next_ms = t * 1000;
            return CF_OK;
        }

        int64_t from_s = t + offset_s;

        if (schedule->hour_fixed && before_s > offset_s && from_s < span_start + before_s)
            from_s = span_start + before_s;
        if (cron_find_local(schedule, from_s, span_end + offset_s, &local_s)) {
            *next_ms = (local_s - offset_s) * 1000;
            return CF_OK;
        }
        if (span_end >= limit_s)
            return CF_ERR_NOT_FOUND;
        before_s = offset_s;
        span_start = t = span_end;
        offset_s = tz_offset_at(zone, t);
    }
}

/* ---- descriptions ------------------------------------------------------- */

/* A bounded string builder over the caller's buffer. */
struct cron_text {
    char *buf;
    size_t len;
    size_t used;
};

__attribute__((format(printf, 2, 3))) static void cron_text_add(struct cron_text *text,
                                                                const char *fmt, ...)
{
    va_list args;
    int n;

    if (text->used + 1 >= text->len)
        return;
    va_start(args, fmt);
    n = vsnprintf(text->buf + text->used, text->len - text->used, fmt, args);
    va_end(args);
    if (n < 0)
        return;
    text->used += (size_t)n;
    if (text->used >= text->len)
        text->used = text->len - 1;
}

static const char *const cron_month_words[] = {"January",   "February", "March",    "April",
                                               "May",       "June",     "July",     "August",
                                               "September", "October",  "November", "December"};
static const char *const cron_weekday_words[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                 "Thursday", "Friday", "Saturday"};
static const char *const cron_ordinal_words[] = {"first", "second", "third", "fourth", "fifth"};

static const char *cron_ordinal_suffix(int n)
{
    if (n % 100 >= 11 && n % 100 <= 13)
        return "th";
    switch (n % 10) {
    case 1:
        return "st";
    case 2:
        return "nd";
    case 3:
        return "rd";
    default:
        return "th";
    }
}

enum cron_value_style { CRON_NUMBER, CRON_MONTH_WORD, CRON_WEEKDAY_WORD };

static void cron_text_value(struct cron_text *text, enum cron_value_style style, int value)
{
    switch (style) {
    case CRON_NUMBER:
        cron_text_add(text, "%d", value);
        break;
    case CRON_MONTH_WORD:
        cron_text_add(text, "%s", cron_month_words[value - 1]);
        break;
    case CRON_WEEKDAY_WORD:
        cron_text_add(text, "%s", cron_weekday_words[value % 7]);
        break;
    }
}

static void cron_text_separator(struct cron_text *text, int index, int count)
{
    if (index == 0)
        return;
    cron_text_add(text, index == count - 1 ? " and " : ", ");
}

/*
 * Writes the values of mask between lo and hi as "1, 5 and 10 through 20":
 * runs of three or more values become "a through b". Weekdays run Monday
 * first: lo 1, hi 7, bit 0 standing for 7.
 */
static void cron_text_list(struct cron_text *text, uint64_t mask, int lo, int hi,
                           enum cron_value_style style)
{
    int run_starts[64];
    int run_ends[64];
    int runs = 0;
    int items = 0;

    for (int v = lo; v <= hi; v++) {
        bool set = cron_bit(mask, v % 64);

        if (style == CRON_WEEKDAY_WORD)
            set = cron_bit(mask, v % 7);
        if (!set)
            continue;
        if (runs > 0 && run_ends[runs - 1] == v - 1) {
            run_ends[runs - 1] = v;
        } else {
            run_starts[runs] = v;
            run_ends[runs] = v;
            runs++;
        }
    }
    for (int i = 0; i < runs; i++)
        items += run_ends[i] - run_starts[i] >= 2 ? 1 : run_ends[i] - run_starts[i] + 1;

    int index = 0;

    for (int i = 0; i < runs; i++) {
        if (run_ends[i] - run_starts[i] >= 2) {
            cron_text_separator(text, index++, items);
            cron_text_value(text, style, run_starts[i]);
            cron_text_add(text, " through ");
            cron_text_value(text, style, run_ends[i]);
            continue;
        }
        for (int v = run_starts[i]; v <= run_ends[i]; v++) {
            cron_text_separator(text, index++, items);
            cron_text_value(text, style, v);
        }
    }
}

static int cron_popcount(uint64_t mask)
{
    return __builtin_popcountll(mask);
}

/* All values lo..hi set. */
static bool cron_mask_all(uint64_t mask, int lo, int hi)
{
    for (int v = lo; v <= hi; v++) {
        if (!cron_bit(mask, v))
            return false;
    }
    return true;
}

/* Whether mask is exactly {lo, lo+step, lo+2*step, ...} up to hi, with step >= 2. */
static bool cron_mask_step(uint64_t mask, int lo, int hi, int *step)
{
    int second = cron_next_bit(mask, lo + 1);

    if (!cron_bit(mask, lo) || second < 0)
        return false;
    *step = second - lo;

    uint64_t expected = 0;

    for (int v = lo; v <= hi; v += *step)
        expected |= (uint64_t)1 << v;
    return *step >= 2 && expected == mask;
}

/*
 * "seconds 0 and 30", "minute 5": the unit in singular or plural, then the
 * list.
 */
static void cron_text_unit_list(struct cron_text *text, const char *unit, uint64_t mask, int lo,
                                int hi)
{
    cron_text_add(text, "%s%s ", unit, cron_popcount(mask) == 1 ? "" : "s");
    cron_text_list(text, mask, lo, hi, CRON_NUMBER);
}

/* "every minute", "every 5 minutes", "every 7th minute". Returns false if mask is none of those. */
static bool cron_text_repeat(struct cron_text *text, const char *unit, uint64_t mask, int hi)
{
    int step;

    if (cron_mask_all(mask, 0, hi)) {
        cron_text_add(text, "every %s", unit);
        return true;
    }
    if (!cron_mask_step(mask, 0, hi, &step))
        return false;
    if ((hi + 1) % step == 0)
        cron_text_add(text, "every %d %ss", step, unit);
    else
        cron_text_add(text, "every %d%s %s", step, cron_ordinal_suffix(step), unit);
    return true;
}

/*
 * The time-of-day part: "at 08:00", "every 5 minutes", "at minute 30 past
 * every hour", "every 15 minutes during hours 9 through 17". The finest
 * field that is not the single second 0 leads; coarser fields follow,
 * joined by "past" after a point in time and by "during" or "of" after a
 * repetition.
 */
static void cron_describe_time(const struct cron_schedule *schedule, struct cron_text *text)
{
    uint64_t seconds = schedule->seconds;
    uint64_t minutes = schedule->minutes;
    uint64_t hours = schedule->hours;
    int second = cron_next_bit(seconds, 0);
    int minute = cron_next_bit(minutes, 0);
    int step;

    if (cron_popcount(seconds) == 1 && cron_popcount(minutes) == 1 && cron_popcount(hours) <= 6) {
        int index = 0;
        int count = cron_popcount(hours);

        cron_text_add(text, "at ");
        for (int hour = 0; hour < 24; hour++) {
            if (!cron_bit(hours, hour))
                continue;
            cron_text_separator(text, index++, count);
            cron_text_add(text, "%02d:%02d", hour, minute);
            if (second != 0)
                cron_text_add(text, ":%02d", second);
        }
        return;
    }

    bool point; /* the last clause names points in time ("at minute 30") */
    bool minutes_listed = false;

    if (seconds != 1) {
        point = !cron_text_repeat(text, "second", seconds, 59);
        if (point) {
            cron_text_add(text, "at ");
            cron_text_unit_list(text, "second", seconds, 0, 59);
        }
        if (cron_mask_all(minutes, 0, 59)) {
            if (point)
                cron_text_add(text, " of every minute");
            point = false;
        } else if (cron_mask_step(minutes, 0, 59, &step)) {
            cron_text_add(text, " of every %d%s minute", step, cron_ordinal_suffix(step));
            point = false;
        } else {
            cron_text_add(text, point ? " past " : " during ");
            cron_text_unit_list(text, "minute", minutes, 0, 59);
            minutes_listed = true;
        }
    } else {
        point = !cron_text_repeat(text, "minute", minutes, 59);
        if (point) {
            cron_text_add(text, "at ");
            cron_text_unit_list(text, "minute", minutes, 0, 59);
            minutes_listed = true;
        }
    }

    if (cron_mask_all(hours, 0, 23)) {
        if (minutes_listed)
            cron_text_add(text, point ? " past every hour" : " of every hour");
    } else if (cron_mask_step(hours, 0, 23, &step)) {
        cron_text_add(text, " %s every %d%s hour", point ? "past" : "of", step,
                      cron_ordinal_suffix(step));
    } else {
        cron_text_add(text, point ? " past " : " during ");
        cron_text_unit_list(text, "hour", hours, 0, 23);
    }
}

/* "day 1 and the last day of the month", "days 1 through 7 of the month". */
static void cron_describe_days(const struct cron_schedule *schedule, struct cron_text *text)
{
    int count = cron_popcount(schedule->days);

    if (count > 0) {
        cron_text_add(text, "day%s ", count == 1 ? "" : "s");
        cron_text_list(text, schedule->days, 1, 31, CRON_NUMBER);
        if (schedule->last_day)
            cron_text_add(text, " and ");
    }
    if (schedule->last_day)
        cron_text_add(text, "the last day");
    cron_text_add(text, " of the month");
}

/* "Monday through Friday, the last Friday of the month and the second Monday of the month". */
static void cron_describe_weekdays(const struct cron_schedule *schedule, struct cron_text *text)
{
    int count = schedule->weekdays != 0 ? 1 : 0;
    int index = 0;

    for (int weekday = 0; weekday < 7; weekday++) {
        count += cron_bit(schedule->last_weekdays, weekday);
        count += cron_popcount(schedule->nth_weekdays[weekday]);
    }
    if (schedule->weekdays != 0) {
        cron_text_list(text, schedule->weekdays, 1, 7, CRON_WEEKDAY_WORD);
        index++;
    }
    for (int i = 1; i <= 7; i++) {
        int weekday = i % 7;

        for (int nth = 0; nth < 5; nth++) {
            if (!cron_bit(schedule->nth_weekdays[weekday], nth))
                continue;
            cron_text_separator(text, index++, count);
            cron_text_add(text, "the %s %s of the month", cron_ordinal_words[nth],
                          cron_weekday_words[weekday]);
        }
        if (cron_bit(schedule->last_weekdays, weekday)) {
            cron_text_separator(text, index++, count);
            cron_text_add(text, "the last %s of the month", cron_weekday_words[weekday]);
        }
    }
}

/* The day and month part: " on Monday through Friday", " in March". */
static void cron_describe_dates(const struct cron_schedule *schedule, struct cron_text *text)
{
    bool days_every = cron_mask_all(schedule->days, 1, 31);
    bool weekdays_every = schedule->weekdays == 0x7f;
    bool all_months = cron_mask_all(schedule->months, 1, 12);
    bool use_days = false;
    bool use_weekdays = false;

    /* Mirrors cron_day_matches(); a field that matches every day needs no words. */
    if (schedule->day_any && !schedule->weekday_any) {
        use_weekdays = !weekdays_every;
    } else if (!schedule->day_any && schedule->weekday_any) {
        use_days = !days_every;
    } else if (!schedule->day_any && !schedule->weekday_any) {
        use_days = !days_every && !weekdays_every;
        use_weekdays = use_days;
    }

    /* "on February 29": one day of one month. */
    if (use_days && !use_weekdays && !schedule->last_day && cron_popcount(schedule->days) == 1 &&
        cron_popcount(schedule->months) == 1) {
        int month = cron_next_bit(schedule->months, 1);

        cron_text_add(text, " on %s %d", cron_month_words[month - 1],
                      cron_next_bit(schedule->days, 1));
        return;
    }
    if (use_days) {
        cron_text_add(text, " on ");
        cron_describe_days(schedule, text);
    }
    if (use_weekdays) {
        cron_text_add(text, use_days ? " or " : " on ");
        cron_describe_weekdays(schedule, text);
    }
    if (!all_months) {
        cron_text_add(text, " in ");
        cron_text_list(text, schedule->months, 1, 12, CRON_MONTH_WORD);
    }
}

static void cron_describe_every(int64_t every_ms, struct cron_text *text)
{
    int64_t seconds = every_ms / 1000;
    const char *unit = "second";
    int64_t count = seconds;

    if (seconds % 3600 == 0) {
        unit = "hour";
        count = seconds / 3600;
    } else if (seconds % 60 == 0) {
        unit = "minute";
        count = seconds / 60;
    }
    if (count == 1)
        cron_text_add(text, "every %s", unit);
    else
        cron_text_add(text, "every %lld %ss", (long long)count, unit);
}

char *cron_describe(const struct cron_schedule *schedule, char *buf, size_t len)
{
    assert(schedule != NULL && buf != NULL);

    struct cron_text text = {buf, len, 0};

    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (schedule->every_ms > 0) {
        cron_describe_every(schedule->every_ms, &text);
        return buf;
    }
    cron_describe_time(schedule, &text);
    cron_describe_dates(schedule, &text);
    return buf;
}
