/*
 * test_departed.c - the members that left the cluster lately: one entry per
 * id, the latest departure kept, forgotten when live again or after ten
 * minutes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "departed.h"

static struct departed_member member(const char *id, int64_t last_seen_ms)
{
    struct departed_member m = {0};

    snprintf(m.id, sizeof(m.id), "%s", id);
    snprintf(m.url, sizeof(m.url), "http://%s:8080", id);
    m.last_seen_ms = last_seen_ms;
    return m;
}

Test(departed, one_entry_per_member_latest_kept)
{
    struct departed list = {0};

    departed_add(&list, &(struct departed_member){0});
    departed_remove(&list, "");
    departed_add(&list, &(struct departed_member){.id = "a", .last_seen_ms = 1000});
    departed_add(&list, &(struct departed_member){.id = "b", .last_seen_ms = 2000});
    departed_add(&list, &(struct departed_member){.id = "a", .last_seen_ms = 3000});
    cr_assert_eq(list.count, 2);
    cr_expect_str_eq(list.items[0].id, "b");
    cr_expect_str_eq(list.items[1].id, "a");
    cr_expect_eq(list.items[1].last_seen_ms, 3000);
    departed_release(&list);
    cr_expect_eq(list.count, 0);
    cr_expect_null(list.items);
    departed_release(&list);
}

Test(departed, live_again_or_expired_members_go)
{
    struct departed list = {0};
    const int64_t now = 1795248000000LL;
    struct departed_member a = member("a", now - DEPARTED_KEEP_MS - 1),
                           b = member("b", now - DEPARTED_KEEP_MS), c = member("c", now - 1000);

    departed_add(&list, &a);
    departed_add(&list, &b);
    departed_add(&list, &c);
    departed_remove(&list, "unknown");
    cr_expect_eq(list.count, 3);
    departed_expire(&list, now);
    cr_assert_eq(list.count, 2, "a member gone over ten minutes ago is dropped");
    cr_expect_str_eq(list.items[0].id, "b");
    cr_expect_str_eq(list.items[1].url, "http://c:8080");
    departed_remove(&list, "b");
    cr_assert_eq(list.count, 1);
    cr_expect_str_eq(list.items[0].id, "c");
    departed_remove(&list, "c");
    cr_expect_eq(list.count, 0);
    departed_release(&list);
}
