/*
 * test_fence_scope.c - the Cronfence-Fence-Scope rule: which scope a job's
 * deliveries name, how a target parses it, and that a target never lets the
 * unsigned header downgrade a job it has seen with scope job.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "fence_scope.h"

Test(fence_scope, of_overlap)
{
    cr_expect_eq(fence_scope_of_overlap(JOB_OVERLAP_FORBID), FENCE_SCOPE_JOB);
    cr_expect_eq(fence_scope_of_overlap(JOB_OVERLAP_QUEUE), FENCE_SCOPE_JOB);
    cr_expect_eq(fence_scope_of_overlap(JOB_OVERLAP_ALLOW), FENCE_SCOPE_SLOT);
}

Test(fence_scope, names_parse_back)
{
    enum fence_scope scopes[] = {FENCE_SCOPE_JOB, FENCE_SCOPE_SLOT};

    cr_expect_str_eq(fence_scope_name(FENCE_SCOPE_JOB), "job");
    cr_expect_str_eq(fence_scope_name(FENCE_SCOPE_SLOT), "slot");
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
        enum fence_scope parsed = (enum fence_scope) - 1;

        cr_expect(fence_scope_parse(fence_scope_name(scopes[i]), &parsed));
        cr_expect_eq(parsed, scopes[i]);
    }
}

Test(fence_scope, missing_header_is_job)
{
    enum fence_scope parsed = FENCE_SCOPE_SLOT;

    cr_expect(fence_scope_parse(NULL, &parsed));
    cr_expect_eq(parsed, FENCE_SCOPE_JOB);
}

Test(fence_scope, anything_else_is_refused_and_leaves_out_alone)
{
    const char *bad[] = {"", "Slot", "JOB", "slot ", " job", "slots", "key", "job,slot", "none"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum fence_scope parsed = FENCE_SCOPE_SLOT;

        cr_expect_not(fence_scope_parse(bad[i], &parsed), "\"%s\" accepted", bad[i]);
        cr_expect_eq(parsed, FENCE_SCOPE_SLOT, "\"%s\" changed the output", bad[i]);
    }
}

/* The downgrade rule, as a table: (named, job seen with scope job) -> enforced. */
Test(fence_scope, enforced_never_downgrades_a_job_seen_with_scope_job)
{
    static const struct {
        enum fence_scope named;
        bool job_scope_seen;
        enum fence_scope want;
    } cases[] = {
        {FENCE_SCOPE_JOB, false, FENCE_SCOPE_JOB},
        {FENCE_SCOPE_SLOT, false, FENCE_SCOPE_SLOT},
        {FENCE_SCOPE_JOB, true, FENCE_SCOPE_JOB},
        {FENCE_SCOPE_SLOT, true, FENCE_SCOPE_JOB}, /* the downgrade is refused */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(fence_scope_enforced(cases[i].named, cases[i].job_scope_seen), cases[i].want,
                     "case %zu", i);
}
