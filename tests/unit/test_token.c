/*
 * Fencing token arithmetic (DESIGN §4.2): token = (floor(m / 2^16) + 1) * 2^16 + ordinal.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "coord.h"

struct mint_case {
    int64_t highest_seen;
    unsigned ordinal;
    int64_t expected; /* -1: refused */
};

ParameterizedTestParameters(token, mint)
{
    static struct mint_case cases[] = {
        {0, 0, 65536},
        {0, 7, 65536 + 7},
        {65535, 0, 65536},          /* a counter of 0 with the highest ordinal */
        {65536, 0, 131072},         /* another instance's token: next counter */
        {65536 + 3, 9, 131072 + 9}, /* ordinal bits of the seen token do not matter */
        {8589934593, 1, 8590000128 + 1},
        {((int64_t)1 << 53) - 65536 * 2, 0, ((int64_t)1 << 53) - 65536},
        {((int64_t)1 << 53) - 65536, 0, -1}, /* would reach 2^53 */
        {0, 65535, 65536 + 65535},
        {0, 65536, -1}, /* ordinal out of range */
        {-1, 0, -1},    /* nonsense input */
    };

    return cr_make_param_array(struct mint_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct mint_case *c, token, mint)
{
    cr_expect_eq(coord_mint_token(c->highest_seen, c->ordinal), c->expected,
                 "mint(%lld, %u) = %lld, expected %lld", (long long)c->highest_seen, c->ordinal,
                 (long long)coord_mint_token(c->highest_seen, c->ordinal), (long long)c->expected);
}

/*
 * The property the protocol relies on: minting over any token already
 * committed, by any instance, gives a strictly larger token, and two
 * instances minting over the same value never collide.
 */
Test(token, strictly_greater_and_unique_per_instance)
{
    int64_t seen = 0;

    for (unsigned round = 0; round < 10000; round++) {
        unsigned a = round % 65536, b = (round * 7919 + 1) % 65536;
        int64_t ta = coord_mint_token(seen, a), tb = coord_mint_token(seen, b);

        cr_assert_gt(ta, seen);
        cr_assert_gt(tb, seen);
        if (a != b)
            cr_assert_neq(ta, tb);
        cr_assert_eq(ta & 0xffff, (int64_t)a);
        seen = ta > tb ? ta : tb;
    }
}
