/*
 * test_tz.c - time zones (server/tz.c).
 *
 * Expected offsets come from the zones' published rules (EU: last Sundays
 * of March and October at 01:00 UTC; US: second Sunday of March and first
 * of November at 02:00 local; New South Wales: first Sundays of October and
 * April; Lord Howe: the same Sundays, 30-minute shift at 02:00 local), and
 * the whole system zoneinfo is compared with glibc's own reader. Footer
 * forms that no shipped zone uses are tested on TZif files written here.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "tz.h"

/* "2026-03-29T01:00:00Z" to epoch seconds. */
static int64_t utc(const char *text)
{
    int year, month, day, hour, minute, second;

    cr_assert_eq(
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2dZ", &year, &month, &day, &hour, &minute, &second), 6,
        "bad time %s", text);
    return tz_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
}

static const struct tz_zone *zone_or_fail(const char *name)
{
    const struct tz_zone *zone = tz_get(name);

    cr_assert_not_null(zone, "cannot load %s", name);
    return zone;
}

/* ---- names and loading ---------------------------------------------------- */

Test(tz_get, utc_and_cache)
{
    const struct tz_zone *zone = zone_or_fail("UTC");

    cr_expect_str_eq(tz_name(zone), "UTC");
    cr_expect_eq(tz_offset_at(zone, 0), 0);
    cr_expect_eq(tz_offset_at(zone, utc("2026-07-01T00:00:00Z")), 0);
    cr_expect_eq(tz_get("UTC"), zone, "a zone is loaded once");
    cr_expect_eq(tz_get("Europe/Berlin"), tz_get("Europe/Berlin"));
    cr_expect_str_eq(tz_name(tz_get("Europe/Berlin")), "Europe/Berlin");
}

Test(tz_get, refuses_bad_names)
{
    static const char *const names[] = {
        "",
        "../etc/passwd",
        "/etc/passwd",
        "Europe/../../etc/passwd",
        "Nope/Zone",
        "Europe",
        "Europe/",
        "Europe//Berlin",
        "/Europe/Berlin",
        "Europe/Berlin ",
        "Europe/Berlin\n",
        "Europe\\Berlin",
        "Europe/Berlin/../Paris",
        ".",
        "zone.tab",
        "Europe/Berlin%00",
        "utc%2f..",
        "localtime",
        "posixrules",
        "posix/Europe/Berlin",
        "right/UTC",
        "Factory",
        "europe/berlin",
        "Europe/berlin",
        "Etc/+5",
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_expect_null(tz_get(names[i]), "\"%s\" was accepted", names[i]);

    char long_name[300];

    memset(long_name, 'A', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    cr_expect_null(tz_get(long_name));
}

Test(tz_get, accepts_iana_name_characters)
{
    cr_expect_not_null(tz_get("America/Argentina/Buenos_Aires"));
    cr_expect_not_null(tz_get("Etc/GMT+5"));
    cr_expect_not_null(tz_get("Etc/GMT-14"));
    cr_expect_not_null(tz_get("America/Port-au-Prince"));
    cr_expect_eq(tz_offset_at(zone_or_fail("Etc/GMT+5"), 0), -5 * 3600);
    cr_expect_eq(tz_offset_at(zone_or_fail("Etc/GMT-14"), 0), 14 * 3600);
}

/* The zones of the system's tzdata.zi: every one loads, but Factory, refused on purpose. */
Test(tz_get, loads_every_system_zone)
{
    FILE *list = fopen("/usr/share/zoneinfo/tzdata.zi", "r");
    char line[512];
    int zones = 0;

    if (list == NULL)
        cr_skip_test("no /usr/share/zoneinfo/tzdata.zi");
    while (fgets(line, sizeof(line), list) != NULL) {
        char kind[4], name[256], target[256];

        /* "Z Europe/Berlin ..." declares a zone, "L Europe/Berlin Arctic/Longyearbyen" a link. */
        if (line[0] == 'Z' && sscanf(line, "%3s %255s", kind, name) == 2 &&
            strcmp(name, "Factory") == 0) {
            cr_expect_null(tz_get(name), "zone %s loaded", name);
        } else if (line[0] == 'Z' && sscanf(line, "%3s %255s", kind, name) == 2) {
            cr_expect_not_null(tz_get(name), "zone %s did not load", name);
            zones++;
        } else if (line[0] == 'L' && sscanf(line, "%3s %255s %255s", kind, target, name) == 3) {
            cr_expect_not_null(tz_get(name), "link %s did not load", name);
            zones++;
        }
    }
    fclose(list);
    cr_expect_gt(zones, 300);
}

struct thread_result {
    const struct tz_zone *zones[4];
};

static void *load_zones(void *arg)
{
    static const char *const names[] = {"Europe/Berlin", "America/New_York", "Australia/Sydney",
                                        "Asia/Kolkata"};
    struct thread_result *result = arg;

    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 4; i++) {
            const struct tz_zone *zone = tz_get(names[i]);

            if (round == 0)
                result->zones[i] = zone;
            else if (zone != result->zones[i])
                result->zones[i] = NULL;
        }
    }
    return NULL;
}

Test(tz_get, is_thread_safe)
{
    pthread_t threads[8];
    struct thread_result results[8];

    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, load_zones, &results[i]), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(threads[i], NULL);
    for (int t = 0; t < 8; t++) {
        for (int i = 0; i < 4; i++) {
            cr_expect_not_null(results[t].zones[i]);
            cr_expect_eq(results[t].zones[i], results[0].zones[i], "two copies of one zone");
        }
    }
}

/* ---- offsets around real transitions -------------------------------------------- */

struct offset_case {
    const char *zone;
    const char *when;
    int32_t offset_s;
};

static const struct offset_case offset_cases[] = {
    /* Europe/Berlin 2026: 01:00 UTC on Mar 29 and Oct 25 */
    {"Europe/Berlin", "2026-01-15T12:00:00Z", 3600},
    {"Europe/Berlin", "2026-03-29T00:59:59Z", 3600},
    {"Europe/Berlin", "2026-03-29T01:00:00Z", 7200},
    {"Europe/Berlin", "2026-10-25T00:59:59Z", 7200},
    {"Europe/Berlin", "2026-10-25T01:00:00Z", 3600},
    /* America/New_York 2026: 02:00 EST on Mar 8 (07:00 UTC), 02:00 EDT on Nov 1 (06:00 UTC) */
    {"America/New_York", "2026-03-08T06:59:59Z", -5 * 3600},
    {"America/New_York", "2026-03-08T07:00:00Z", -4 * 3600},
    {"America/New_York", "2026-11-01T05:59:59Z", -4 * 3600},
    {"America/New_York", "2026-11-01T06:00:00Z", -5 * 3600},
    /* Australia/Sydney 2026: 03:00 AEDT on Apr 5, 02:00 AEST on Oct 4 (both 16:00 UTC the day
       before) */
    {"Australia/Sydney", "2026-01-15T00:00:00Z", 11 * 3600},
    {"Australia/Sydney", "2026-04-04T15:59:59Z", 11 * 3600},
    {"Australia/Sydney", "2026-04-04T16:00:00Z", 10 * 3600},
    {"Australia/Sydney", "2026-10-03T15:59:59Z", 10 * 3600},
    {"Australia/Sydney", "2026-10-03T16:00:00Z", 11 * 3600},
    /* Australia/Lord_Howe 2026: 02:00 local both times, a 30-minute shift */
    {"Australia/Lord_Howe", "2026-04-04T14:59:59Z", 11 * 3600},
    {"Australia/Lord_Howe", "2026-04-04T15:00:00Z", 10 * 3600 + 1800},
    {"Australia/Lord_Howe", "2026-10-03T15:29:59Z", 10 * 3600 + 1800},
    {"Australia/Lord_Howe", "2026-10-03T15:30:00Z", 11 * 3600},
    /* Asia/Kolkata: +05:30 since 1945 */
    {"Asia/Kolkata", "2026-01-01T00:00:00Z", 5 * 3600 + 1800},
    {"Asia/Kolkata", "2026-07-01T00:00:00Z", 5 * 3600 + 1800},
    /* far beyond the stored transitions: the footer rule */
    {"Europe/Berlin", "2100-03-28T00:59:59Z", 3600},
    {"Europe/Berlin", "2100-03-28T01:00:00Z", 7200},
    {"Europe/Berlin", "2100-10-31T00:59:59Z", 7200},
    {"Europe/Berlin", "2100-10-31T01:00:00Z", 3600},
    {"Australia/Sydney", "2100-04-03T15:59:59Z", 11 * 3600},
    {"Australia/Sydney", "2100-04-03T16:00:00Z", 10 * 3600},
    /* 2500-03-14 is the second Sunday of March 2500 */
    {"America/New_York", "2500-03-14T06:59:59Z", -5 * 3600},
    {"America/New_York", "2500-03-14T07:00:00Z", -4 * 3600},
    /* before the first transition: local mean time, +00:53:28 in Berlin */
    {"Europe/Berlin", "1800-01-01T00:00:00Z", 3208},
};

Test(tz_offset_at, around_transitions)
{
    for (size_t i = 0; i < sizeof(offset_cases) / sizeof(offset_cases[0]); i++) {
        const struct offset_case *c = &offset_cases[i];
        int32_t got = tz_offset_at(zone_or_fail(c->zone), utc(c->when));

        cr_expect_eq(got, c->offset_s, "%s at %s: %d, expected %d", c->zone, c->when, got,
                     c->offset_s);
    }
}

Test(tz_offset_at, extreme_instants_are_clamped)
{
    const struct tz_zone *berlin = zone_or_fail("Europe/Berlin");
    struct tz_local local;

    /* Any answer will do; it must not overflow (UBSan watches). */
    (void)tz_offset_at(berlin, INT64_MAX);
    (void)tz_offset_at(berlin, INT64_MIN);
    tz_to_local(berlin, INT64_MAX, &local);
    tz_to_local(berlin, INT64_MIN, &local);
}

/*
 * glibc reads the same files independently; both must agree for every
 * system zone from 1900 to 2200 (sampled every 7 hours and 13 seconds, so
 * the samples drift across every hour of the day).
 */
Test(tz_offset_at, agrees_with_glibc, .timeout = 120)
{
    static const char *const zones[] = {
        "Europe/Berlin",    "America/New_York",  "Australia/Sydney",  "Australia/Lord_Howe",
        "Asia/Kolkata",     "America/Sao_Paulo", "Africa/Casablanca", "America/Nuuk",
        "Pacific/Apia",     "Asia/Tehran",       "Europe/Dublin",     "Pacific/Chatham",
        "America/Santiago", "Antarctica/Troll",  "Asia/Gaza",         "America/St_Johns",
    };

    for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        const struct tz_zone *zone = zone_or_fail(zones[z]);
        int mismatches = 0;

        setenv("TZ", zones[z], 1);
        tzset();
        for (int64_t t = utc("1900-01-01T00:00:00Z"); t < utc("2200-01-01T00:00:00Z");
             t += 7 * 3600 + 13) {
            time_t glibc_t = (time_t)t;
            struct tm tm;

            localtime_r(&glibc_t, &tm);
            if (tz_offset_at(zone, t) != tm.tm_gmtoff && mismatches++ < 3)
                cr_expect_fail("%s at %lld: %d, glibc %ld", zones[z], (long long)t,
                               tz_offset_at(zone, t), tm.tm_gmtoff);
        }
    }
}

/* ---- local time ------------------------------------------------------------------ */

Test(tz_to_local, fields)
{
    struct tz_local local;

    tz_to_local(zone_or_fail("Europe/Berlin"), utc("2026-03-29T01:00:00Z"), &local);
    cr_expect(local.year == 2026 && local.month == 3 && local.day == 29 && local.hour == 3 &&
              local.minute == 0 && local.second == 0 && local.weekday == 0);

    tz_to_local(zone_or_fail("Asia/Kolkata"), utc("2026-01-01T00:00:00Z"), &local);
    cr_expect(local.year == 2026 && local.month == 1 && local.day == 1 && local.hour == 5 &&
              local.minute == 30 && local.weekday == 4);

    tz_to_local(zone_or_fail("UTC"), -1, &local);
    cr_expect(local.year == 1969 && local.month == 12 && local.day == 31 && local.hour == 23 &&
              local.minute == 59 && local.second == 59 && local.weekday == 3);

    tz_to_local(zone_or_fail("America/New_York"), utc("2028-02-29T04:59:59Z"), &local);
    cr_expect(local.year == 2028 && local.month == 2 && local.day == 28 && local.hour == 23 &&
              local.minute == 59 && local.second == 59 && local.weekday == 1);
}

struct from_local_case {
    const char *zone;
    int year, month, day, hour, minute;
    int count;
    const char *first;  /* the first instant, or the gap end when count is 0 */
    const char *second; /* the second instant when count is 2 */
};

static const struct from_local_case from_local_cases[] = {
    {"Europe/Berlin", 2026, 3, 29, 1, 59, 1, "2026-03-29T00:59:00Z", NULL},
    {"Europe/Berlin", 2026, 3, 29, 2, 0, 0, "2026-03-29T01:00:00Z", NULL},
    {"Europe/Berlin", 2026, 3, 29, 2, 30, 0, "2026-03-29T01:00:00Z", NULL},
    {"Europe/Berlin", 2026, 3, 29, 3, 0, 1, "2026-03-29T01:00:00Z", NULL},
    {"Europe/Berlin", 2026, 10, 25, 2, 30, 2, "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
    {"Europe/Berlin", 2026, 10, 25, 3, 0, 1, "2026-10-25T02:00:00Z", NULL},
    {"Europe/Berlin", 2026, 10, 25, 1, 59, 1, "2026-10-24T23:59:00Z", NULL},
    {"America/New_York", 2026, 3, 8, 2, 30, 0, "2026-03-08T07:00:00Z", NULL},
    {"America/New_York", 2026, 11, 1, 1, 30, 2, "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"},
    {"Australia/Sydney", 2026, 4, 5, 2, 30, 2, "2026-04-04T15:30:00Z", "2026-04-04T16:30:00Z"},
    {"Australia/Sydney", 2026, 10, 4, 2, 30, 0, "2026-10-03T16:00:00Z", NULL},
    {"Australia/Lord_Howe", 2026, 4, 5, 1, 45, 2, "2026-04-04T14:45:00Z", "2026-04-04T15:15:00Z"},
    {"Australia/Lord_Howe", 2026, 4, 5, 1, 29, 1, "2026-04-04T14:29:00Z", NULL},
    {"Australia/Lord_Howe", 2026, 4, 5, 2, 0, 1, "2026-04-04T15:30:00Z", NULL},
    {"Australia/Lord_Howe", 2026, 10, 4, 2, 15, 0, "2026-10-03T15:30:00Z", NULL},
    {"Australia/Lord_Howe", 2026, 10, 4, 2, 30, 1, "2026-10-03T15:30:00Z", NULL},
    {"Asia/Kolkata", 2026, 1, 1, 0, 0, 1, "2025-12-31T18:30:00Z", NULL},
    {"Europe/Berlin", 2100, 3, 28, 2, 30, 0, "2100-03-28T01:00:00Z", NULL},
    {"Europe/Berlin", 2100, 10, 31, 2, 30, 2, "2100-10-31T00:30:00Z", "2100-10-31T01:30:00Z"},
    /* Samoa skipped December 30, 2011 whole: a 24-hour gap */
    {"Pacific/Apia", 2011, 12, 30, 12, 0, 0, "2011-12-30T10:00:00Z", NULL},
};

Test(tz_from_local, gaps_and_repeats)
{
    for (size_t i = 0; i < sizeof(from_local_cases) / sizeof(from_local_cases[0]); i++) {
        const struct from_local_case *c = &from_local_cases[i];
        struct tz_local local = {c->year, c->month, c->day, c->hour, c->minute, 0, 0};
        int64_t instants[2] = {0, 0};
        int64_t gap_end_s = 0;
        int count = tz_from_local(zone_or_fail(c->zone), &local, instants, &gap_end_s);

        cr_expect_eq(count, c->count, "%s %04d-%02d-%02d %02d:%02d: %d instants, expected %d",
                     c->zone, c->year, c->month, c->day, c->hour, c->minute, count, c->count);
        if (count != c->count)
            continue;
        if (count == 0)
            cr_expect_eq(gap_end_s, utc(c->first), "%s %02d:%02d: gap end", c->zone, c->hour,
                         c->minute);
        if (count >= 1)
            cr_expect_eq(instants[0], utc(c->first), "%s %02d:%02d: first", c->zone, c->hour,
                         c->minute);
        if (count == 2)
            cr_expect_eq(instants[1], utc(c->second), "%s %02d:%02d: second", c->zone, c->hour,
                         c->minute);
    }
}

Test(tz_from_local, gap_end_is_optional)
{
    struct tz_local local = {2026, 3, 29, 2, 30, 0, 0};
    int64_t instants[2];

    cr_expect_eq(tz_from_local(zone_or_fail("Europe/Berlin"), &local, instants, NULL), 0);
}

Test(tz_next_transition, walks_changes)
{
    const struct tz_zone *berlin = zone_or_fail("Europe/Berlin");
    const struct tz_zone *lord_howe = zone_or_fail("Australia/Lord_Howe");
    int64_t when_s = 0;

    cr_assert(tz_next_transition(berlin, utc("2026-01-01T00:00:00Z"), &when_s));
    cr_expect_eq(when_s, utc("2026-03-29T01:00:00Z"));
    cr_assert(tz_next_transition(berlin, when_s, &when_s));
    cr_expect_eq(when_s, utc("2026-10-25T01:00:00Z"));
    cr_assert(tz_next_transition(berlin, utc("2100-04-01T00:00:00Z"), &when_s));
    cr_expect_eq(when_s, utc("2100-10-31T01:00:00Z"));

    cr_assert(tz_next_transition(lord_howe, utc("2026-01-01T00:00:00Z"), &when_s));
    cr_expect_eq(when_s, utc("2026-04-04T15:00:00Z"));
    cr_assert(tz_next_transition(lord_howe, when_s, &when_s));
    cr_expect_eq(when_s, utc("2026-10-03T15:30:00Z"));

    cr_expect_not(
        tz_next_transition(zone_or_fail("Asia/Kolkata"), utc("2026-01-01T00:00:00Z"), &when_s));
    cr_expect_not(tz_next_transition(zone_or_fail("UTC"), 0, &when_s));
}

Test(tz_days_from_civil, known_dates)
{
    cr_expect_eq(tz_days_from_civil(1970, 1, 1), 0);
    cr_expect_eq(tz_days_from_civil(1969, 12, 31), -1);
    cr_expect_eq(tz_days_from_civil(2000, 3, 1), 11017);
    cr_expect_eq(tz_days_from_civil(2026, 1, 1), 20454);
    cr_expect_eq(tz_days_from_civil(2100, 3, 1), 47541);
    cr_expect_eq(tz_days_from_civil(2400, 2, 29), 157113);
    cr_expect_eq(tz_days_from_civil(1900, 3, 1), -25508);
    cr_expect_eq(tz_days_from_civil(1, 1, 1), -719162);
}

/* ---- TZif files written here ------------------------------------------------------- */

static char test_dir[64];

static void make_test_dir(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/cf-tz-test-XXXXXX");
    char sub_dir[96];

    cr_assert_not_null(mkdtemp(test_dir));
    snprintf(sub_dir, sizeof(sub_dir), "%s/Test", test_dir);
    cr_assert_eq(mkdir(sub_dir, 0700), 0);
    setenv("TZDIR", test_dir, 1);
}

static void remove_test_dir(void)
{
    char command[128];

    snprintf(command, sizeof(command), "rm -rf '%s'", test_dir);
    cr_expect_eq(system(command), 0);
}

static void put_u32(FILE *file, uint32_t value)
{
    unsigned char bytes[4] = {value >> 24, value >> 16, value >> 8, value};

    fwrite(bytes, 1, 4, file);
}

static void put_i64(FILE *file, int64_t value)
{
    put_u32(file, (uint32_t)((uint64_t)value >> 32));
    put_u32(file, (uint32_t)value);
}

static void put_header(FILE *file, char version, uint32_t leaps, uint32_t times, uint32_t types)
{
    static const char reserved[15] = {0};

    fwrite("TZif", 1, 4, file);
    fputc(version, file);
    fwrite(reserved, 1, 15, file);
    put_u32(file, 0);     /* isutcnt */
    put_u32(file, 0);     /* isstdcnt */
    put_u32(file, leaps); /* leapcnt */
    put_u32(file, times); /* timecnt */
    put_u32(file, types); /* typecnt */
    put_u32(file, 4);     /* charcnt: "AAA\0" */
}

/*
 * Writes zone file name: transitions at times_s[i] to type type_of[i],
 * types with offsets_s, and (version >= '2') the footer. version 0 writes a
 * version-1 file with 32-bit times only.
 */
static void write_tzif(const char *name, char version, const int64_t *times_s,
                       const unsigned char *type_of, size_t times, const int32_t *offsets_s,
                       size_t types, const char *footer, uint32_t leaps)
{
    char path[256];
    FILE *file;

    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    file = fopen(path, "wb");
    cr_assert_not_null(file);
    if (version == 0) {
        put_header(file, 0, leaps, (uint32_t)times, (uint32_t)types);
        for (size_t i = 0; i < times; i++)
            put_u32(file, (uint32_t)(int32_t)times_s[i]);
    } else {
        /* A minimal version-1 block that readers of version 2+ skip. */
        put_header(file, version, 0, 0, 1);
        put_u32(file, 0);
        fputc(0, file);
        fputc(0, file);
        fwrite("AAA", 1, 4, file);
        put_header(file, version, leaps, (uint32_t)times, (uint32_t)types);
        for (size_t i = 0; i < times; i++)
            put_i64(file, times_s[i]);
    }
    if (times > 0)
        fwrite(type_of, 1, times, file);
    for (size_t i = 0; i < types; i++) {
        put_u32(file, (uint32_t)offsets_s[i]);
        fputc(i > 0, file); /* isdst */
        fputc(0, file);     /* abbreviation index */
    }
    fwrite("AAA", 1, 4, file);
    for (uint32_t i = 0; i < leaps; i++) {
        if (version == 0)
            put_u32(file, 78796800);
        else
            put_i64(file, 78796800);
        put_u32(file, 1);
    }
    if (version != 0 && footer != NULL)
        fprintf(file, "\n%s\n", footer);
    fclose(file);
}

/* A zone with no transitions, only a footer rule. */
static const struct tz_zone *rule_zone(const char *name, const char *footer, int32_t offset_s)
{
    write_tzif(name, '2', NULL, NULL, 0, &offset_s, 1, footer, 0);
    return tz_get(name);
}

static void expect_offsets(const struct tz_zone *zone, const char *const *whens,
                           const int32_t *offsets, size_t count)
{
    cr_assert_not_null(zone);
    for (size_t i = 0; i < count; i++) {
        int32_t got = tz_offset_at(zone, utc(whens[i]));

        cr_expect_eq(got, offsets[i], "%s at %s: %d, expected %d", tz_name(zone), whens[i], got,
                     offsets[i]);
    }
}

Test(tz_footer, negative_change_times)
{
    /* Greenland's rule: changes at -01:00 and -02:00 local, i.e. 01:00 UTC like the EU. */
    static const char *const whens[] = {"2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z",
                                        "2026-10-25T00:59:59Z", "2026-10-25T01:00:00Z"};
    static const int32_t offsets[] = {-3 * 3600, -2 * 3600, -2 * 3600, -3 * 3600};

    make_test_dir();
    expect_offsets(rule_zone("Test/Nuuk", "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1", -3 * 3600), whens,
                   offsets, 4);
    remove_test_dir();
}

Test(tz_footer, change_times_past_24_hours)
{
    /*
     * Southern rule: DST from the first Sunday of October at 26:00 (Monday
     * 02:00, Oct 5 2026 = 16:00 UTC Oct 4) to the first Sunday of April at
     * -1:00 (Saturday 23:00 DST, Apr 4 2026 = 12:00 UTC).
     */
    static const char *const whens[] = {"2026-01-15T00:00:00Z", "2026-04-04T11:59:59Z",
                                        "2026-04-04T12:00:00Z", "2026-07-01T00:00:00Z",
                                        "2026-10-04T15:59:59Z", "2026-10-04T16:00:00Z"};
    static const int32_t offsets[] = {11 * 3600, 11 * 3600, 10 * 3600,
                                      10 * 3600, 10 * 3600, 11 * 3600};

    make_test_dir();
    expect_offsets(rule_zone("Test/South", "AAA-10BBB,M10.1.0/26,M4.1.0/-1", 10 * 3600), whens,
                   offsets, 6);
    remove_test_dir();
}

Test(tz_footer, julian_days_skip_february_29)
{
    /* J60 is March 1 and J300 October 27 in every year, leap or not. */
    static const char *const whens[] = {"2026-02-28T23:59:59Z", "2026-03-01T00:00:00Z",
                                        "2028-02-29T23:59:59Z", "2028-03-01T00:00:00Z",
                                        "2028-10-26T22:59:59Z", "2028-10-26T23:00:00Z"};
    static const int32_t offsets[] = {2 * 3600, 3 * 3600, 2 * 3600, 3 * 3600, 3 * 3600, 2 * 3600};

    make_test_dir();
    expect_offsets(rule_zone("Test/Julian", "AAA-2BBB,J60/2,J300/2", 2 * 3600), whens, offsets, 6);
    remove_test_dir();
}

Test(tz_footer, zero_based_days_count_february_29)
{
    /* Day 59 is March 1, or February 29 in a leap year; day 299 is Oct 27, or Oct 26. */
    static const char *const whens[] = {"2026-02-28T23:59:59Z", "2026-03-01T00:00:00Z",
                                        "2028-02-28T23:59:59Z", "2028-02-29T00:00:00Z",
                                        "2028-10-25T22:59:59Z", "2028-10-25T23:00:00Z",
                                        "2026-10-26T22:59:59Z", "2026-10-26T23:00:00Z"};
    static const int32_t offsets[] = {2 * 3600, 3 * 3600, 2 * 3600, 3 * 3600,
                                      3 * 3600, 2 * 3600, 3 * 3600, 2 * 3600};

    make_test_dir();
    expect_offsets(rule_zone("Test/Zero", "AAA-2BBB,59/2,299/2", 2 * 3600), whens, offsets, 8);
    remove_test_dir();
}

Test(tz_footer, dst_all_year)
{
    /* DST from January 1 00:00 to December 31 25:00: never standard time. */
    static const char *const whens[] = {"2025-12-31T23:00:00Z", "2026-01-01T04:59:59Z",
                                        "2026-01-01T05:00:00Z", "2026-07-01T00:00:00Z",
                                        "2027-01-01T05:00:00Z"};
    static const int32_t offsets[] = {-4 * 3600, -4 * 3600, -4 * 3600, -4 * 3600, -4 * 3600};
    int64_t when_s;

    make_test_dir();

    const struct tz_zone *zone = rule_zone("Test/AllYear", "EST5EDT,0/0,J365/25", -5 * 3600);

    expect_offsets(zone, whens, offsets, 5);
    cr_expect_not(tz_next_transition(zone, utc("2026-01-01T00:00:00Z"), &when_s));
    remove_test_dir();
}

Test(tz_footer, offsets_with_minutes_and_default_rule)
{
    static const char *const india[] = {"2026-01-01T00:00:00Z"};
    static const int32_t india_offsets[] = {5 * 3600 + 1800};
    /* A DST name without dates gets the US rule: Mar 8 and Nov 1 in 2026. */
    static const char *const us[] = {"2026-03-08T06:59:59Z", "2026-03-08T07:00:00Z",
                                     "2026-11-01T05:59:59Z", "2026-11-01T06:00:00Z"};
    static const int32_t us_offsets[] = {-5 * 3600, -4 * 3600, -4 * 3600, -5 * 3600};

    make_test_dir();
    expect_offsets(rule_zone("Test/India", "<+0530>-5:30", 0), india, india_offsets, 1);
    expect_offsets(rule_zone("Test/US", "EST5EDT", -5 * 3600), us, us_offsets, 4);
    remove_test_dir();
}

Test(tz_file, transitions_then_footer)
{
    /* Fixed +01:00 until 2000, then the EU rule from the footer. */
    int64_t times_s[] = {utc("1900-01-01T00:00:00Z"), utc("2000-01-01T00:00:00Z")};
    unsigned char type_of[] = {1, 0};
    int32_t offsets_s[] = {3600, 1800};
    static const char *const whens[] = {"1800-01-01T00:00:00Z", "1950-07-01T00:00:00Z",
                                        "2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z"};
    static const int32_t expected[] = {3600, 1800, 3600, 7200};
    int64_t when_s;

    make_test_dir();
    write_tzif("Test/Handover", '3', times_s, type_of, 2, offsets_s, 2,
               "CET-1CEST,M3.5.0,M10.5.0/3", 0);

    const struct tz_zone *zone = tz_get("Test/Handover");

    expect_offsets(zone, whens, expected, 4);
    cr_assert(tz_next_transition(zone, utc("1950-01-01T00:00:00Z"), &when_s));
    cr_expect_eq(when_s, utc("2000-01-01T00:00:00Z"));
    cr_assert(tz_next_transition(zone, when_s, &when_s));
    cr_expect_eq(when_s, utc("2000-03-26T01:00:00Z"));
    remove_test_dir();
}

Test(tz_file, version_1_and_empty_footer)
{
    int64_t times_s[] = {0, 1000000000};
    unsigned char type_of[] = {1, 0};
    int32_t offsets_s[] = {-3600, 7200};

    make_test_dir();
    write_tzif("Test/V1", 0, times_s, type_of, 2, offsets_s, 2, NULL, 0);
    write_tzif("Test/Empty", '2', times_s, type_of, 2, offsets_s, 2, "", 0);
    for (int i = 0; i < 2; i++) {
        const struct tz_zone *zone = tz_get(i == 0 ? "Test/V1" : "Test/Empty");

        cr_assert_not_null(zone);
        cr_expect_eq(tz_offset_at(zone, -1), -3600);
        cr_expect_eq(tz_offset_at(zone, 0), 7200);
        cr_expect_eq(tz_offset_at(zone, 999999999), 7200);
        cr_expect_eq(tz_offset_at(zone, 1000000000), -3600);
        cr_expect_eq(tz_offset_at(zone, 4000000000), -3600);
    }
    remove_test_dir();
}

Test(tz_file, refuses_malformed_files)
{
    int64_t times_s[] = {100, 50};
    unsigned char type_of[] = {0, 0};
    unsigned char bad_type[] = {0, 5};
    int32_t offsets_s[] = {0, 3600};
    int32_t huge_offset[] = {30 * 3600};
    char path[256];
    FILE *file;

    make_test_dir();
    write_tzif("Test/Unsorted", '2', times_s, type_of, 2, offsets_s, 2, "UTC0", 0);
    cr_expect_null(tz_get("Test/Unsorted"));
    times_s[1] = 200;
    write_tzif("Test/BadType", '2', times_s, bad_type, 2, offsets_s, 2, "UTC0", 0);
    cr_expect_null(tz_get("Test/BadType"));
    write_tzif("Test/Leaps", '2', NULL, NULL, 0, offsets_s, 1, "UTC0", 1);
    cr_expect_null(tz_get("Test/Leaps"));
    write_tzif("Test/Huge", '2', NULL, NULL, 0, huge_offset, 1, "UTC0", 0);
    cr_expect_null(tz_get("Test/Huge"));
    write_tzif("Test/BadFooter", '2', NULL, NULL, 0, offsets_s, 1, "CET-1CEST,M3.5", 0);
    cr_expect_null(tz_get("Test/BadFooter"));
    write_tzif("Test/NoFooter", '2', NULL, NULL, 0, offsets_s, 1, NULL, 0);
    cr_expect_null(tz_get("Test/NoFooter"));

    snprintf(path, sizeof(path), "%s/Test/Garbage", test_dir);
    file = fopen(path, "w");
    cr_assert_not_null(file);
    fputs("TZif2 but not really a zone file", file);
    fclose(file);
    cr_expect_null(tz_get("Test/Garbage"));

    snprintf(path, sizeof(path), "%s/Test/Empty", test_dir);
    file = fopen(path, "w");
    cr_assert_not_null(file);
    fclose(file);
    cr_expect_null(tz_get("Test/Empty"));
    remove_test_dir();
}

Test(tz_get, utc_without_zoneinfo)
{
    make_test_dir();
    cr_expect_null(tz_get("Europe/Berlin"));

    const struct tz_zone *zone = tz_get("UTC");

    cr_assert_not_null(zone);
    cr_expect_eq(tz_offset_at(zone, utc("2026-07-01T00:00:00Z")), 0);
    cr_expect_not_null(tz_get("Etc/UTC"));
    remove_test_dir();
}
