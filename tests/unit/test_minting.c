/*
 * test_minting.c - tokens minted by one instance's claims in flight: two
 * claims of a job that read the same committed token never mint the same
 * one, a job's entry lives only while it has claims in flight, and claims
 * racing from many threads mint distinct tokens above what they read.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>

#include "common.h"
#include "coord.h"
#include "minting.h"

#define ORDINAL 7u

Test(minting, concurrent_claims_of_a_job_mint_distinct_tokens)
{
    struct minting *m = minting_new();
    int64_t first, second;

    cr_assert_not_null(m);
    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    first = minting_mint(m, "a", 5 << COORD_ORDINAL_BITS, ORDINAL);
    second = minting_mint(m, "a", 5 << COORD_ORDINAL_BITS, ORDINAL);
    cr_expect_eq(first, coord_mint_token(5 << COORD_ORDINAL_BITS, ORDINAL));
    cr_expect_eq(second, coord_mint_token(first, ORDINAL));
    /* A higher committed token read later still wins. */
    cr_expect_eq(minting_mint(m, "a", 100 << COORD_ORDINAL_BITS, ORDINAL),
                 coord_mint_token(100 << COORD_ORDINAL_BITS, ORDINAL));
    minting_leave(m, "a");
    minting_leave(m, "a");
    minting_free(m);
}

Test(minting, jobs_are_apart)
{
    struct minting *m = minting_new();

    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    cr_assert_eq(minting_enter(m, "b"), CF_OK);
    cr_expect_eq(minting_mint(m, "a", 0, ORDINAL), coord_mint_token(0, ORDINAL));
    cr_expect_eq(minting_mint(m, "b", 0, ORDINAL), coord_mint_token(0, ORDINAL));
    cr_expect_eq(minting_jobs(m), 2);
    minting_leave(m, "a");
    minting_leave(m, "b");
    minting_free(m);
}

Test(minting, entry_lives_while_claims_are_in_flight)
{
    struct minting *m = minting_new();

    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    minting_mint(m, "a", 9 << COORD_ORDINAL_BITS, ORDINAL);
    minting_leave(m, "a");
    cr_expect_eq(minting_jobs(m), 1);
    /* The claim still in flight keeps the token it minted in mind. */
    cr_expect_eq(minting_mint(m, "a", 0, ORDINAL),
                 coord_mint_token(coord_mint_token(9 << COORD_ORDINAL_BITS, ORDINAL), ORDINAL));
    minting_leave(m, "a");
    cr_expect_eq(minting_jobs(m), 0);
    /* Afterwards only what the nodes say counts. */
    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    cr_expect_eq(minting_mint(m, "a", 0, ORDINAL), coord_mint_token(0, ORDINAL));
    minting_leave(m, "a");
    minting_free(m);
}

Test(minting, spent_token_space_mints_nothing)
{
    struct minting *m = minting_new();

    cr_assert_eq(minting_enter(m, "a"), CF_OK);
    cr_expect_eq(minting_mint(m, "a", COORD_TOKEN_MAX - 1, ORDINAL), -1);
    minting_leave(m, "a");
    minting_free(m);
}

#define THREADS 8
#define CLAIMS 500

struct racer {
    struct minting *m;
    int64_t tokens[CLAIMS];
};

static void *race(void *arg)
{
    struct racer *r = arg;

    for (int i = 0; i < CLAIMS; i++) {
        const char *job = i % 2 ? "odd" : "even";

        if (minting_enter(r->m, job) != CF_OK)
            return NULL;
        /* Every claim read the same committed token: only the table keeps them apart. */
        r->tokens[i] = minting_mint(r->m, job, 1 << COORD_ORDINAL_BITS, ORDINAL);
        minting_leave(r->m, job);
    }
    return NULL;
}

static int compare(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

Test(minting, racing_threads_keep_tokens_apart_while_in_flight)
{
    struct minting *m = minting_new();
    struct racer *racers = calloc(THREADS, sizeof(*racers));
    pthread_t threads[THREADS];
    int64_t *all = calloc(THREADS * CLAIMS, sizeof(*all));
    size_t n = 0;

    cr_assert_not_null(racers);
    cr_assert_not_null(all);
    /* One long claim of each job holds the entries, so every racer's claim overlaps it. */
    cr_assert_eq(minting_enter(m, "odd"), CF_OK);
    cr_assert_eq(minting_enter(m, "even"), CF_OK);
    for (int t = 0; t < THREADS; t++) {
        racers[t].m = m;
        cr_assert_eq(pthread_create(&threads[t], NULL, race, &racers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < CLAIMS; i += 2)
            all[n++] = racers[t].tokens[i]; /* the "even" job's */
    qsort(all, n, sizeof(*all), compare);
    for (size_t i = 0; i < n; i++) {
        cr_assert_gt(all[i], 1 << COORD_ORDINAL_BITS);
        cr_assert_eq(all[i] & ((1 << COORD_ORDINAL_BITS) - 1), ORDINAL);
        if (i > 0)
            cr_assert_gt(all[i], all[i - 1], "token %lld minted twice", (long long)all[i]);
    }
    minting_leave(m, "odd");
    minting_leave(m, "even");
    cr_expect_eq(minting_jobs(m), 0);
    minting_free(m);
    free(racers);
    free(all);
}
