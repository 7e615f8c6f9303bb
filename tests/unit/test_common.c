/*
 * Time formatting and parsing, hex, constant-time comparison.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "common.h"

struct time_case {
    const char *text;
    int64_t ms;
};

Test(common, format_time)
{
    static const struct time_case cases[] = {
        {"1970-01-01T00:00:00.000Z", 0},
        {"2026-11-21T08:00:00.000Z", 1795248000000},
        {"2024-02-29T23:59:59.999Z", 1709251199999},
        {"2000-03-01T00:00:00.001Z", 951868800001},
        {"1969-12-31T23:59:59.999Z", -1},
    };
    char out[CF_TIME_LEN];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_str_eq(cf_format_time(cases[i].ms, out), cases[i].text);
}

Test(common, parse_time)
{
    static const struct time_case cases[] = {
        {"2026-11-21T08:00:00.000Z", 1795248000000},
        {"2026-11-21T08:00:00Z", 1795248000000},
        {"2026-11-21T09:00:00+01:00", 1795248000000},
        {"2026-11-21T03:00:00.5-05:00", 1795248000500},
        {"2026-11-21t08:00:00z", 1795248000000},
        {"1795248000000", 1795248000000},
        {"2024-02-29T00:00:00Z", 1709164800000},
    };
    static const char *const bad[] = {
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T08:00:00",
        "2026-11-21T08:00:00+0100",
        "2026-11-21T08:00:00.Z",
        "12abc",
        "2026-11-21T08:00:00Zjunk",
    };
    int64_t ms;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_expect_eq(cf_parse_time(cases[i].text, &ms), CF_OK, "%s", cases[i].text);
        cr_expect_eq(ms, cases[i].ms, "%s", cases[i].text);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        cr_expect_eq(cf_parse_time(bad[i], &ms), CF_ERR_INVALID, "%s", bad[i]);
        cr_expect_eq(ms, 42, "%s left the output alone", bad[i]);
    }
}

Test(common, random_hex_and_compare)
{
    char a[33], b[33];

    cr_assert_eq(cf_random_hex(a, 16), CF_OK);
    cr_assert_eq(cf_random_hex(b, 16), CF_OK);
    cr_expect_eq(strlen(a), 32);
    cr_expect_eq(strspn(a, "0123456789abcdef"), 32);
    cr_expect_str_neq(a, b);
    cr_expect(cf_secure_equal(a, a));
    cr_expect(!cf_secure_equal(a, b));
    cr_expect(!cf_secure_equal("abc", "abcd"));
}
