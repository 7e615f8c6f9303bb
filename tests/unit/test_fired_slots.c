/*
 * test_fired_slots.c - the table of slots heard committed: latest slot per
 * job, announcements parsed strictly, jobs sharing an entry evict each other
 * without ever answering for one another.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "fired_slots.h"

Test(fired_slots, keeps_the_latest_slot_per_job)
{
    struct fired_slots *f = fired_slots_new();

    cr_assert_not_null(f);
    cr_expect_eq(fired_slots_latest(f, "a"), 0);
    fired_slots_note(f, "a", 2000);
    fired_slots_note(f, "a", 1000);
    fired_slots_note(f, "b", 5000);
    cr_expect_eq(fired_slots_latest(f, "a"), 2000);
    cr_expect_eq(fired_slots_latest(f, "b"), 5000);
    cr_expect_eq(fired_slots_latest(f, "c"), 0);
    fired_slots_free(f);
}

Test(fired_slots, announcements)
{
    static const struct {
        const char *text;
        bool ok;
        const char *job;
        long long slot;
    } cases[] = {
        {"1700000000000 nightly", true, "nightly", 1700000000000LL},
        {"1 a", true, "a", 1},
        {"", false, NULL, 0},
        {"1700000000000", false, NULL, 0},
        {"1700000000000 ", false, NULL, 0},
        {" nightly", false, NULL, 0},
        {"17x nightly", false, NULL, 0},
        {"12345678901234567 a", false, NULL, 0},
        {"1 0123456789012345678901234567890123456789012345678901234567890123", false, NULL, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fired_slots *f = fired_slots_new();

        cr_expect_eq(fired_slots_note_announcement(f, cases[i].text, strlen(cases[i].text)),
                     cases[i].ok, "%s", cases[i].text);
        if (cases[i].ok)
            cr_expect_eq(fired_slots_latest(f, cases[i].job), cases[i].slot, "%s", cases[i].text);
        fired_slots_free(f);
    }
}

Test(fired_slots, embedded_nul_is_refused)
{
    struct fired_slots *f = fired_slots_new();

    cr_expect_not(fired_slots_note_announcement(f, "5 a\0b", 5));
    cr_expect_eq(fired_slots_latest(f, "a"), 0);
    fired_slots_free(f);
}

Test(fired_slots, evicted_jobs_answer_nothing)
{
    struct fired_slots *f = fired_slots_new();
    char name[32];

    /* Far more jobs than entries: every answer is the job's own slot or nothing. */
    for (int i = 0; i < 50000; i++) {
        snprintf(name, sizeof(name), "job-%d", i);
        fired_slots_note(f, name, 1000 + i);
    }
    for (int i = 0; i < 50000; i++) {
        long long latest;

        snprintf(name, sizeof(name), "job-%d", i);
        latest = fired_slots_latest(f, name);
        cr_assert(latest == 0 || latest == 1000 + i, "%s answered %lld", name, latest);
    }
    snprintf(name, sizeof(name), "job-%d", 49999);
    cr_expect_eq(fired_slots_latest(f, name), 1000 + 49999);
    fired_slots_free(f);
}
