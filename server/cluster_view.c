/*
 * cluster_view.c - GET /cluster: coordinator status plus per-member firings.
 */
#include "cluster_view.h"

#include "common.h"

json_t *cluster_view(struct coord *coord, struct db *db, int64_t now_ms)
{
    json_t *status = coord->ops->status(coord), *counts = NULL, *member;
    size_t i;

    if (status == NULL)
        return NULL;
    if (db_run_firings_by_instance(db, now_ms - CLUSTER_VIEW_FIRINGS_WINDOW_MS, &counts) != CF_OK)
        counts = NULL;
    json_array_foreach(json_object_get(status, "members"), i, member)
    {
        json_t *id = json_object_get(member, "id"), *count = NULL;

        if (counts != NULL && json_is_string(id)) {
            count = json_object_get(counts, json_string_value(id));
            count = count != NULL ? json_incref(count) : json_integer(0);
        }
        json_object_set_new(member, "firings_last_minute", count ? count : json_null());
    }
    json_decref(counts);
    return status;
}
