/*
 * test_cron.c - cron schedules (server/cron.c).
 *
 * Most cases are data: tests/data/cron/next.txt (expected instants, worked
 * out by hand from the calendar and each zone's published DST rules, see the
 * comments there), errors.txt (every parser error with its position) and
 * describe.txt. The tests below run those tables, then check what does not
 * fit a table: limits, buffers, speed, and a differential check of the DST
 * rules against a slow minute-by-minute reading of DESIGN §3.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "cron.h"
#include "data_text.h"
#include "tz.h"

#define DATA_LINE_MAX 4096
#define EXPECTED_MAX 16

/* ---- reading the data files ------------------------------------------- */

/* One line of a data file, split on '|'. */
struct data_case {
    int line;
    char expr[DATA_LINE_MAX];
    char *fields[4]; /* the fields after the expression, trimmed */
    int field_count;
};

/*
 * Reads a quoted expression at *p ("...", with \t, \\, \" and \xNN) into out
 * and leaves *p after the closing quote. Returns false on a malformed quote.
 */
static bool read_quoted(char **p, char *out)
{
    char *s = *p + 1;
    size_t n = 0;

    while (*s != '"') {
        if (*s == '\0')
            return false;
        if (*s == '\\') {
            s++;
            if (*s == 't') {
                out[n++] = '\t';
            } else if (*s == 'x' && cf_hex_value(s[1]) >= 0 && cf_hex_value(s[2]) >= 0) {
                out[n++] = (char)(cf_hex_value(s[1]) * 16 + cf_hex_value(s[2]));
                s += 2;
            } else if (*s == '\\' || *s == '"') {
                out[n++] = *s;
            } else {
                return false;
            }
            s++;
            continue;
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = s + 1;
    return true;
}

/*
 * Splits a data line. Returns 1 for a case, 0 for a blank or comment line,
 * -1 for a malformed line.
 */
static int parse_line(char *line, int line_number, struct data_case *out)
{
    char *p = data_trim(line);

    if (*p == '\0' || *p == '#')
        return 0;
    memset(out, 0, sizeof(*out));
    out->line = line_number;
    if (*p == '"') {
        if (!read_quoted(&p, out->expr))
            return -1;
        p = data_trim(p);
        if (*p != '|')
            return -1;
    } else {
        char *bar = strchr(p, '|');

        if (bar == NULL)
            return -1;
        *bar = '\0';
        snprintf(out->expr, sizeof(out->expr), "%s", data_trim(p));
        *bar = '|';
        p = bar;
    }
    for (char *start = p + 1;;) {
        char *bar = strchr(start, '|');

        if (bar != NULL)
            *bar = '\0';
        if (out->field_count == 4)
            return -1;
        out->fields[out->field_count++] = data_trim(start);
        if (bar == NULL)
            break;
        start = bar + 1;
    }
    return 1;
}

/* Calls check() for every case of a data file; returns how many there were. */
static int for_each_case(const char *path, int field_count, void (*check)(struct data_case *))
{
    FILE *file = fopen(path, "r");
    char line[DATA_LINE_MAX];
    int line_number = 0;
    int cases = 0;

    cr_assert_not_null(file, "cannot open %s", path);
    while (fgets(line, sizeof(line), file) != NULL) {
        struct data_case data;
        int rc;

        line_number++;
        rc = parse_line(line, line_number, &data);
        cr_assert_geq(rc, 0, "%s:%d: malformed line", path, line_number);
        if (rc == 0)
            continue;
        cr_assert_eq(data.field_count, field_count, "%s:%d: expected %d fields, got %d", path,
                     line_number, field_count, data.field_count);
        check(&data);
        cases++;
    }
    fclose(file);
    return cases;
}

/* "2026-03-29T01:00:00Z" or "...00.500Z" to epoch milliseconds. */
static bool parse_utc(const char *text, int64_t *ms)
{
    int year, month, day, hour, minute, second, millis = 0, used = 0;

    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second,
               &used) != 6)
        return false;
    text += used;
    if (*text == '.') {
        if (sscanf(text, ".%3d%n", &millis, &used) != 1 || used != 4)
            return false;
        text += used;
    }
    if (strcmp(text, "Z") != 0)
        return false;
    *ms = ((tz_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second) *
           1000) +
          millis;
    return true;
}

static const char *format_utc(int64_t ms, char out[CF_TIME_LEN])
{
    return cf_format_time(ms, out);
}

/* ---- the tables ----------------------------------------------------------- */

static void check_next(struct data_case *data)
{
    struct cron_schedule *schedule = NULL;
    struct cron_error err;
    const struct tz_zone *zone = tz_get(data->fields[0]);
    int64_t after_ms;
    char *expected = data->fields[2];
    char *saveptr = NULL;
    char got[CF_TIME_LEN];
    char after[CF_TIME_LEN];

    cr_assert_eq(cron_parse(data->expr, &schedule, &err), CF_OK, "line %d: \"%s\": %s at %d",
                 data->line, data->expr, err.message, err.position);
    cr_assert_not_null(zone, "line %d: unknown zone %s", data->line, data->fields[0]);
    cr_assert(parse_utc(data->fields[1], &after_ms), "line %d: bad time %s", data->line,
              data->fields[1]);

    for (char *token = strtok_r(expected, " ", &saveptr); token != NULL;
         token = strtok_r(NULL, " ", &saveptr)) {
        int64_t next_ms = 0;
        int rc = cron_next(schedule, zone, after_ms, &next_ms);

        if (strcmp(token, "none") == 0) {
            cr_expect_eq(rc, CF_ERR_NOT_FOUND, "line %d: \"%s\" in %s: expected none, got %s",
                         data->line, data->expr, data->fields[0],
                         rc == CF_OK ? format_utc(next_ms, got) : cf_err_str(rc));
            break;
        }

        int64_t expected_ms;

        cr_assert(parse_utc(token, &expected_ms), "line %d: bad time %s", data->line, token);
        if (rc != CF_OK || next_ms != expected_ms) {
            cr_expect_fail("line %d: \"%s\" in %s after %s: expected %s, got %s", data->line,
                           data->expr, data->fields[0], format_utc(after_ms, after), token,
                           rc == CF_OK ? format_utc(next_ms, got) : cf_err_str(rc));
            break;
        }
        after_ms = next_ms;
    }
    cron_free(schedule);
}

static void check_error(struct data_case *data)
{
    static char sentinel; /* *out must be reset to NULL on error */
    struct cron_schedule *schedule = (struct cron_schedule *)&sentinel;
    struct cron_error err;
    int position = atoi(data->fields[0]);
    int rc = cron_parse(data->expr, &schedule, &err);

    cr_expect_eq(rc, CF_ERR_INVALID, "line %d: \"%s\" parsed", data->line, data->expr);
    cr_expect_null(schedule, "line %d: *out not reset on error", data->line);
    if (rc != CF_ERR_INVALID) {
        cron_free(schedule);
        return;
    }
    cr_expect_eq(err.position, position, "line %d: \"%s\": position %d, expected %d (%s)",
                 data->line, data->expr, err.position, position, err.message);
    cr_expect_str_eq(err.message, data->fields[1], "line %d: \"%s\": \"%s\", expected \"%s\"",
                     data->line, data->expr, err.message, data->fields[1]);
}

static void check_describe(struct data_case *data)
{
    struct cron_schedule *schedule = NULL;
    struct cron_error err;
    char text[256];

    cr_assert_eq(cron_parse(data->expr, &schedule, &err), CF_OK, "line %d: \"%s\": %s", data->line,
                 data->expr, err.message);
    cr_expect_str_eq(cron_describe(schedule, text, sizeof(text)), data->fields[0],
                     "line %d: \"%s\": \"%s\", expected \"%s\"", data->line, data->expr, text,
                     data->fields[0]);
    cron_free(schedule);
}

Test(cron_data, next_instants)
{
    int cases = for_each_case(CF_TEST_DATA "/cron/next.txt", 3, check_next);

    cr_expect_geq(cases, 100, "only %d next cases", cases);
}

Test(cron_data, parse_errors)
{
    int cases = for_each_case(CF_TEST_DATA "/cron/errors.txt", 2, check_error);

    cr_expect_geq(cases, 60, "only %d error cases", cases);
}

Test(cron_data, descriptions)
{
    int cases = for_each_case(CF_TEST_DATA "/cron/describe.txt", 1, check_describe);

    cr_expect_geq(cases, 30, "only %d description cases", cases);
}

/* ---- what does not fit a table ---------------------------------------------- */

Test(cron_parse, over_long_expression)
{
    char expr[1100];
    struct cron_schedule *schedule = NULL;
    struct cron_error err;

    /* 1024 bytes is still accepted ... */
    memset(expr, ' ', 1024);
    memcpy(expr, "0 0 * * *", 9);
    expr[1024] = '\0';
    cr_assert_eq(cron_parse(expr, &schedule, &err), CF_OK, "%s", err.message);
    cron_free(schedule);

    /* ... 1025 is not. */
    expr[1024] = ' ';
    expr[1025] = '\0';
    cr_assert_eq(cron_parse(expr, &schedule, &err), CF_ERR_INVALID);
    cr_expect_eq(err.position, 1024);
    cr_expect_str_eq(err.message, "expression longer than 1024 bytes");
    cr_expect_null(schedule);
}

Test(cron_parse, error_output_is_optional)
{
    struct cron_schedule *schedule = NULL;

    cr_expect_eq(cron_parse("61 * * * *", &schedule, NULL), CF_ERR_INVALID);
    cr_expect_null(schedule);
    cr_expect_eq(cron_parse("@every 5m", &schedule, NULL), CF_OK);
    cron_free(schedule);
    cron_free(NULL);
}

Test(cron_parse, success_clears_error)
{
    struct cron_schedule *schedule = NULL;
    struct cron_error err = {42, "stale"};

    cr_assert_eq(cron_parse("* * * * *", &schedule, &err), CF_OK);
    cr_expect_eq(err.position, 0);
    cr_expect_str_eq(err.message, "");
    cron_free(schedule);
}

Test(cron_every, period)
{
    struct cron_schedule *schedule = NULL;

    cr_assert_eq(cron_parse("@every 1h30m", &schedule, NULL), CF_OK);
    cr_expect_eq(cron_every_ms(schedule), 5400000);
    cron_free(schedule);
    cr_assert_eq(cron_parse("*/5 * * * *", &schedule, NULL), CF_OK);
    cr_expect_eq(cron_every_ms(schedule), 0);
    cron_free(schedule);
}

Test(cron_next, far_instants_do_not_overflow)
{
    struct cron_schedule *schedule = NULL;
    const struct tz_zone *berlin = tz_get("Europe/Berlin");
    int64_t next_ms = 0;

    cr_assert_not_null(berlin);
    cr_assert_eq(cron_parse("* * * * * *", &schedule, NULL), CF_OK);
    cr_expect_eq(cron_next(schedule, berlin, INT64_MAX, &next_ms), CF_ERR_NOT_FOUND);
    cr_expect_eq(cron_next(schedule, berlin, INT64_MIN, &next_ms), CF_ERR_NOT_FOUND);
    cron_free(schedule);

    cr_assert_eq(cron_parse("@every 1s", &schedule, NULL), CF_OK);
    cr_expect_eq(cron_next(schedule, berlin, INT64_MAX - 1, &next_ms), CF_ERR_NOT_FOUND);
    cr_expect_eq(cron_next(schedule, berlin, INT64_MIN, &next_ms), CF_OK);
    cr_expect_eq(next_ms, INT64_MIN - (INT64_MIN % 1000));
    cron_free(schedule);
}

Test(cron_describe, truncates_safely)
{
    struct cron_schedule *schedule = NULL;
    char text[8];

    cr_assert_eq(cron_parse("0 9 * * 1#1,5L", &schedule, NULL), CF_OK);
    cr_expect_str_eq(cron_describe(schedule, text, sizeof(text)), "at 09:0");
    cr_expect_str_eq(cron_describe(schedule, text, 1), "");
    text[0] = 'x';
    cron_describe(schedule, text, 0);
    cr_expect_eq(text[0], 'x');
    cron_free(schedule);
}

/*
 * 1,000 jobs each computing their next instant every second must cost
 * next to nothing: here 1,000 schedules times 200 successive instants
 * across the Berlin spring change, which a second-by-second search could
 * never do in time.
 */
Test(cron_next, skips_by_fields, .timeout = 30)
{
    static const char *const exprs[] = {
        "0 8 * * 1-5",  "*/5 * * * *", "30 2 * * *", "0 0 L * *",   "0 18 * * 5L",
        "0 10 * * 1#2", "* * * * * *", "0 0 29 2 *", "@hourly",     "0 0 13 * FRI",
        "15 */2 * * *", "0 0 1 1 *",   "0 0 31 * *", "59 23 * * 0", "0 0 30 2 *",
    };
    const size_t expr_count = sizeof(exprs) / sizeof(exprs[0]);
    const struct tz_zone *berlin = tz_get("Europe/Berlin");
    struct cron_schedule *schedules[1000];
    int64_t start_ms;
    int64_t calls = 0;

    cr_assert_not_null(berlin);
    cr_assert(parse_utc("2026-03-27T00:00:00Z", &start_ms));
    for (size_t i = 0; i < 1000; i++)
        cr_assert_eq(cron_parse(exprs[i % expr_count], &schedules[i], NULL), CF_OK);

    clock_t begin = clock();

    for (size_t i = 0; i < 1000; i++) {
        int64_t after_ms = start_ms;

        for (int step = 0; step < 200; step++) {
            int64_t next_ms;

            calls++;
            if (cron_next(schedules[i], berlin, after_ms, &next_ms) != CF_OK)
                break;
            cr_assert_gt(next_ms, after_ms);
            after_ms = next_ms;
        }
    }

    double cpu_s = (double)(clock() - begin) / CLOCKS_PER_SEC;

    for (size_t i = 0; i < 1000; i++)
        cron_free(schedules[i]);
    /* Generous enough for sanitizer builds on a slow machine. */
    cr_expect_lt(cpu_s, 10.0, "%lld calls took %.2f s", (long long)calls, cpu_s);
    cr_log_info("%lld cron_next calls in %.3f s CPU\n", (long long)calls, cpu_s);
}

/* ---- DST rules against a slow reading of DESIGN §3 --------------------------- */

/* Whether the schedule matches local wall time local_s (seconds, read as if UTC). */
static bool matches_local(const struct cron_schedule *schedule, const struct tz_zone *utc,
                          int64_t local_s)
{
    int64_t next_ms;

    return cron_next(schedule, utc, local_s * 1000 - 1, &next_ms) == CF_OK &&
           next_ms == local_s * 1000;
}

static struct tz_local local_of_seconds(int64_t local_s, const struct tz_zone *utc)
{
    struct tz_local local;

    tz_to_local(utc, local_s, &local);
    return local;
}

/*
 * Whether the schedule fires at UTC minute t_s, straight from the rules:
 * - t shows a matching local time, and either the hour field follows real
 *   time or this is the local time's first occurrence; or
 * - t is a forward change and a local time it skips matches.
 */
static bool fires_at(const struct cron_schedule *schedule, bool hour_fixed,
                     const struct tz_zone *zone, const struct tz_zone *utc, int64_t t_s)
{
    int32_t offset_s = tz_offset_at(zone, t_s);
    int32_t before_s = tz_offset_at(zone, t_s - 1);
    int64_t local_s = t_s + offset_s;

    if (before_s < offset_s) {
        for (int64_t skipped = t_s + before_s; skipped < local_s; skipped += 60) {
            if (matches_local(schedule, utc, skipped))
                return true;
        }
    }
    if (!matches_local(schedule, utc, local_s))
        return false;
    if (!hour_fixed)
        return true;

    struct tz_local local = local_of_seconds(local_s, utc);
    int64_t instants[2];

    return tz_from_local(zone, &local, instants, NULL) < 2 || instants[0] == t_s;
}

Test(cron_next, dst_rules_match_a_minute_by_minute_reading, .timeout = 120)
{
    static const struct {
        const char *expr;
        bool hour_fixed;
    } schedules[] = {
        {"30 2 * * *", true},     {"0 2 * * *", true},
        {"* 2 * * *", true},      {"45 1 * * *", true},
        {"0,30 1-3 * * *", true}, {"*/15 * * * *", false},
        {"0 * * * *", false},     {"30 */2 * * *", false},
        {"10 1/1 * * *", false},  {"*/20 2,*/3 * * *", false},
        {"5 0-3 * * 0", true},    {"@hourly", false},
        {"@daily", true},         {"59 0-23 * * *", true},
        {"* * * * *", false},
    };
    static const struct {
        const char *zone;
        const char *change; /* a DST change, UTC */
    } changes[] = {
        {"Europe/Berlin", "2026-03-29T01:00:00Z"},
        {"Europe/Berlin", "2026-10-25T01:00:00Z"},
        {"America/New_York", "2026-03-08T07:00:00Z"},
        {"America/New_York", "2026-11-01T06:00:00Z"},
        {"Australia/Sydney", "2026-04-04T16:00:00Z"},
        {"Australia/Sydney", "2026-10-03T16:00:00Z"},
        {"Australia/Lord_Howe", "2026-04-04T15:00:00Z"},
        {"Australia/Lord_Howe", "2026-10-03T15:30:00Z"},
    };
    const struct tz_zone *utc = tz_get("UTC");

    cr_assert_not_null(utc);
    for (size_t c = 0; c < sizeof(changes) / sizeof(changes[0]); c++) {
        const struct tz_zone *zone = tz_get(changes[c].zone);
        int64_t change_ms;

        cr_assert_not_null(zone);
        cr_assert(parse_utc(changes[c].change, &change_ms));
        for (size_t s = 0; s < sizeof(schedules) / sizeof(schedules[0]); s++) {
            struct cron_schedule *schedule = NULL;
            int64_t from_s = change_ms / 1000 - 6 * 3600;
            int64_t until_s = change_ms / 1000 + 6 * 3600;
            int64_t fires_s[12 * 60 + 1];
            size_t fire_count = 0;
            size_t next_fire = 0;
            char a[CF_TIME_LEN], b[CF_TIME_LEN], got[CF_TIME_LEN];

            cr_assert_eq(cron_parse(schedules[s].expr, &schedule, NULL), CF_OK);
            for (int64_t t_s = from_s; t_s <= until_s; t_s += 60) {
                if (fires_at(schedule, schedules[s].hour_fixed, zone, utc, t_s))
                    fires_s[fire_count++] = t_s;
            }
            /* From every minute (and half minute) of the window, the next firing is the next one
             * listed. */
            for (int64_t after_ms = from_s * 1000; after_ms < until_s * 1000; after_ms += 30000) {
                int64_t next_ms = 0;

                while (next_fire < fire_count && fires_s[next_fire] * 1000 <= after_ms)
                    next_fire++;
                cr_assert_eq(cron_next(schedule, zone, after_ms, &next_ms), CF_OK);
                if (next_fire == fire_count) {
                    cr_assert_gt(next_ms, until_s * 1000, "\"%s\" in %s after %s: got %s",
                                 schedules[s].expr, changes[c].zone, format_utc(after_ms, a),
                                 format_utc(next_ms, got));
                    continue;
                }
                cr_assert_eq(next_ms, fires_s[next_fire] * 1000,
                             "\"%s\" in %s after %s: expected %s, got %s", schedules[s].expr,
                             changes[c].zone, format_utc(after_ms, a),
                             format_utc(fires_s[next_fire] * 1000, b), format_utc(next_ms, got));
            }
            cron_free(schedule);
        }
    }
}
