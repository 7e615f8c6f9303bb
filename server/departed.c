/*
 * departed.c - the members that left the cluster in the last ten minutes.
 */
#include "departed.h"

#include <stdlib.h>
#include <string.h>

void departed_remove(struct departed *list, const char *id)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i].id, id) == 0) {
            memmove(&list->items[i], &list->items[i + 1],
                    (list->count - i - 1) * sizeof(list->items[0]));
            list->count--;
            return;
        }
    }
}

void departed_add(struct departed *list, const struct departed_member *member)
{
    struct departed_member *bigger;

    departed_remove(list, member->id);
    bigger = realloc(list->items, (list->count + 1) * sizeof(list->items[0]));
    if (bigger == NULL)
        return;
    list->items = bigger;
    list->items[list->count++] = *member;
}

void departed_expire(struct departed *list, int64_t now_ms)
{
    size_t kept = 0;

    for (size_t i = 0; i < list->count; i++)
        if (list->items[i].last_seen_ms >= now_ms - DEPARTED_KEEP_MS)
            list->items[kept++] = list->items[i];
    list->count = kept;
}

void departed_release(struct departed *list)
{
    free(list->items);
    list->items = NULL;
    list->count = 0;
}
