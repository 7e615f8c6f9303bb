/*
 * events.h - the instance's event stream (GET /api/v1/events): a ring of
 * recent events and the Server-Sent Events streams that follow it.
 *
 * Publishers append events (a type and a JSON document) from any thread.
 * Each stream sends, in order, every event it has not sent yet and then
 * parks without a thread until the next one. Event ids are "<epoch>-<seq>":
 * epoch names this process's lifetime and seq counts from 1, so a client
 * that reconnects with Last-Event-ID gets exactly the events it missed. When
 * those are no longer in the ring, or the id comes from another process (a
 * restart, or another instance behind a load balancer), the stream starts
 * with a "resync" event (no id) and goes on with new events only: the
 * client must reload what it shows. A client that reads more slowly than
 * events come gets the same when the ring has moved past it.
 *
 * Every keepalive_ms each stream sends a comment line, which keeps proxies
 * from closing it. A stream whose client went away ends within a second.
 */
#ifndef CF_EVENTS_H
#define CF_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct events_config {
    size_t max_events;    /* events kept for replay */
    size_t max_bytes;     /* bytes of formatted events kept for replay */
    size_t max_streams;   /* concurrent streams; more are refused */
    int64_t keepalive_ms; /* interval of the keepalive comment */
    int64_t retry_ms;     /* reconnection delay suggested to clients */
};

struct events;

/* Starts the hub and its keepalive thread. Returns CF_OK with *out, or CF_ERR_NOMEM. */
int events_new(const struct events_config *cfg, struct events **out);

/*
 * Appends an event of type ("run", "job", "cluster") with data and wakes
 * every parked stream. Steals data; an event that cannot be formatted is
 * dropped with a log line.
 */
void events_publish(struct events *hub, const char *type, json_t *data);

/*
 * events_publish() of an event that masked streams (viewer tokens) see as
 * masked_data instead, under the same id. Steals both; a NULL masked_data
 * drops the event for masked streams, which then skip it.
 */
void events_publish_masked(struct events *hub, const char *type, json_t *data, json_t *masked_data);

/*
 * Makes res the event stream for a client that last saw last_event_id
 * (NULL for a new client, which gets only events published from now on).
 * A masked stream (a viewer's) gets the masked form of events that have one.
 * Returns CF_OK, CF_ERR_BUSY when max_streams are open, CF_ERR_SHUTDOWN
 * after events_close(), or CF_ERR_NOMEM; res is untouched on error.
 */
int events_serve(struct events *hub, const char *last_event_id, bool masked,
                 struct http_response *res);

/* Streams open now. */
size_t events_stream_count(struct events *hub);

/*
 * Ends every stream (each finishes what it is sending, then its response
 * ends) and refuses new ones. Call before http_stop(): libmicrohttpd must
 * not be stopped with parked connections.
 */
void events_close(struct events *hub);

/* Stops the keepalive thread and frees the hub; accepts NULL. Call after http_stop(). */
void events_free(struct events *hub);

#endif
