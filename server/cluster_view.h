/*
 * cluster_view.h - GET /cluster: the coordinator's status with what this
 * instance's history adds to it.
 */
#ifndef CF_CLUSTER_VIEW_H
#define CF_CLUSTER_VIEW_H

#include <jansson.h>
#include <stdint.h>

#include "coord.h"
#include "db.h"

/* The window of firings_last_minute. */
#define CLUSTER_VIEW_FIRINGS_WINDOW_MS 60000

/*
 * The coordinator's status document (mode, instance, members, nodes,
 * quorum) with, on each member, firings_last_minute: the firings it made
 * in the minute before now_ms as this instance's history holds them
 * (null when the history could not be read). New reference; NULL when
 * out of memory.
 */
json_t *cluster_view(struct coord *coord, struct db *db, int64_t now_ms);

#endif
