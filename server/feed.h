/*
 * feed.h - what goes on the event stream: a "run" event whenever a run's
 * stored state changes and a "job" event whenever the catalog changes (both
 * reported by the database handles that write them, so changes made by
 * other instances and mirrored here are included), and a "cluster" event
 * whenever the coordinator's view of the cluster changes (checked every
 * second; latencies, clock offsets and last-seen times alone do not count).
 */
#ifndef CF_FEED_H
#define CF_FEED_H

#include "coord.h"
#include "db.h"
#include "events.h"

struct feed;

/*
 * Creates the feed, publishing to events and reading job views (last_run)
 * from db; both borrowed. Returns CF_OK with *out, or CF_ERR_NOMEM.
 */
int feed_new(struct events *events, struct db *db, struct feed **out);

/* The observer to set on every database handle that writes the catalog or the history. */
void feed_observer(struct feed *feed, struct db_observer *observer);

/*
 * Starts watching coord (borrowed) for cluster changes, on a thread of the
 * feed. Returns CF_OK or CF_ERR_NOMEM.
 */
int feed_watch(struct feed *feed, struct coord *coord);

/* Stops watching the coordinator; call before freeing it. Accepts NULL. */
void feed_unwatch(struct feed *feed);

/*
 * Frees the feed (stopping the watch if still on); accepts NULL. Call once
 * no database handle that has its observer writes any more.
 */
void feed_free(struct feed *feed);

#endif
