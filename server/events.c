/*
 * events.c - the ring of recent events and the streams that follow it.
 *
 * One mutex guards the ring, the stream list and every stream's position.
 * Events are formatted once, when published, into a frame holding the exact
 * bytes a stream sends ("id: ...\nevent: ...\ndata: ...\n\n"). A stream
 * copies whole frames from the ring under the lock; a frame larger than
 * what a read takes is held (reference-counted, so one copy serves every
 * stream) until it is sent, even when the ring drops it meanwhile. A stream
 * parks under the same lock that publishers wake it under, so no wake is
 * lost.
 */
#include "events.h"

#include <assert.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "log.h"

/* Bytes to send: an event, or one stream's preface. */
struct frame {
    size_t refs; /* the ring and the streams holding it; guarded by the hub's lock */
    /*
     * What masked streams send instead (events_publish_masked()), held by
     * this frame; NULL when they send this one. A frame of len 0 is skipped.
     */
    struct frame *masked;
    size_t len;
    char bytes[];
};

/* One client's stream. Its fields are guarded by the hub's lock. */
struct stream {
    struct events *hub;
    struct http_stream *http; /* known from the first read on */
    uint64_t next_seq;        /* the next event of the ring to send */
    struct frame *sending; /* held while being sent: the preface, or an event split across reads */
    size_t sent;           /* bytes of it sent */
    uint64_t keepalives_sent; /* the hub's keepalive count at the last comment sent */
    bool parked;
    bool gone;   /* the client went away while the stream was parked */
    bool masked; /* a viewer's: sends the masked form of events */
    struct stream *prev, *next;
};

struct events {
    struct events_config cfg;
    pthread_mutex_t lock;
    /* Events first_seq .. last_seq (none when first_seq > last_seq) at ring[seq % max_events]. */
    struct frame **ring;
    uint64_t first_seq, last_seq;
    size_t ring_bytes;
    uint64_t epoch; /* random: tells this process's ids from others' */
    struct stream *streams;
    size_t stream_count;
    uint64_t keepalives; /* keepalive ticks so far */
    bool closed;
    bool stopping;
    pthread_t thread;
    pthread_cond_t wake;
};

static const char keepalive_frame[] = ": keepalive\n\n";

/* How often parked streams are checked for departed clients. */
#define EVENTS_TEND_MS 1000

/* ---------------------------------------------------------------------- */
/* The ring                                                                 */
/* ---------------------------------------------------------------------- */

/* A frame of len bytes (copied from bytes when not NULL), held once. NULL when out of memory. */
static struct frame *frame_new(const char *bytes, size_t len)
{
    struct frame *f = malloc(sizeof(*f) + len + 1);

    if (f == NULL)
        return NULL;
    f->refs = 1;
    f->masked = NULL;
    f->len = len;
    if (bytes != NULL)
        memcpy(f->bytes, bytes, len);
    return f;
}

/* Drops one hold on f, freeing it with the last; accepts NULL. The lock is held. */
static void frame_release(struct frame *f)
{
    if (f != NULL && --f->refs == 0) {
        frame_release(f->masked);
        free(f);
    }
}

static void drop_oldest(struct events *hub)
{
    struct frame **oldest = &hub->ring[hub->first_seq % hub->cfg.max_events];

    hub->ring_bytes -= (*oldest)->len + ((*oldest)->masked ? (*oldest)->masked->len : 0);
    frame_release(*oldest);
    *oldest = NULL;
    hub->first_seq++;
}

/* Wakes every parked stream; the lock is held. */
static void wake_parked(struct events *hub)
{
    for (struct stream *s = hub->streams; s != NULL; s = s->next) {
        if (s->parked) {
            s->parked = false;
            http_stream_wake(s->http);
        }
    }
}

#define EVENT_FORMAT "id: %" PRIu64 "-%" PRIu64 "\nevent: %s\ndata: %s\n\n"

/* The frame of event seq with text (NULL: an empty frame, skipped); NULL when out of memory. */
static struct frame *event_frame(struct events *hub, uint64_t seq, const char *type,
                                 const char *text)
{
    struct frame *frame;
    int len;

    if (text == NULL)
        return frame_new(NULL, 0);
    /* JSON_COMPACT output holds no newline, so the document is one data line. */
    len = snprintf(NULL, 0, EVENT_FORMAT, hub->epoch, seq, type, text);
    if (len < 0)
        return NULL;
    frame = frame_new(NULL, (size_t)len);
    if (frame != NULL)
        snprintf(frame->bytes, (size_t)len + 1, EVENT_FORMAT, hub->epoch, seq, type, text);
    return frame;
}

void events_publish(struct events *hub, const char *type, json_t *data)
{
    events_publish_masked(hub, type, data, json_incref(data));
}

void events_publish_masked(struct events *hub, const char *type, json_t *data, json_t *masked_data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    char *masked_text =
        masked_data == NULL || masked_data == data ? NULL : json_dumps(masked_data, JSON_COMPACT);
    bool same = masked_data == data;
    struct frame *frame = NULL;
    size_t bytes;
    uint64_t seq;

    json_decref(data);
    json_decref(masked_data);
    pthread_mutex_lock(&hub->lock);
    seq = hub->last_seq + 1;
    if (text != NULL)
        frame = event_frame(hub, seq, type, text);
    if (frame != NULL && !same) {
        frame->masked = event_frame(hub, seq, type, masked_text);
        if (frame->masked == NULL) {
            frame_release(frame);
            frame = NULL;
        }
    }
    free(text);
    free(masked_text);
    if (frame == NULL) {
        pthread_mutex_unlock(&hub->lock);
        log_warn("event dropped", "type=%s reason=\"out of memory\"", type);
        return;
    }
    bytes = frame->len + (frame->masked != NULL ? frame->masked->len : 0);
    while (hub->first_seq <= hub->last_seq &&
           (hub->last_seq - hub->first_seq + 1 >= hub->cfg.max_events ||
            hub->ring_bytes + bytes > hub->cfg.max_bytes))
        drop_oldest(hub);
    hub->ring[seq % hub->cfg.max_events] = frame;
    hub->ring_bytes += bytes;
    hub->last_seq = seq;
    wake_parked(hub);
    pthread_mutex_unlock(&hub->lock);
}

/* ---------------------------------------------------------------------- */
/* Streams                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * Makes the stream send prefix, then (when reason is not NULL) a resync
 * event saying why, before anything else. Returns false when out of memory.
 */
static bool send_first(struct stream *s, const char *prefix, const char *reason)
{
    char text[256];
    int len;

    if (reason != NULL)
        len = snprintf(text, sizeof(text), "%sevent: resync\ndata: {\"reason\":\"%s\"}\n\n", prefix,
                       reason);
    else
        len = snprintf(text, sizeof(text), "%s", prefix);
    if (len < 0 || (size_t)len >= sizeof(text))
        return false;
    assert(s->sending == NULL);
    s->sending = frame_new(text, (size_t)len);
    s->sent = 0;
    return s->sending != NULL;
}

/*
 * Sets where a new stream starts and returns the reason to resync, or NULL.
 * An id of this process resumes after it when the ring still holds the
 * next event; after anything else the client reloads what it shows, so
 * the stream goes on with new events only. The lock is held.
 */
static const char *position_stream(struct events *hub, struct stream *s, const char *last_event_id)
{
    uint64_t epoch, seq;
    int consumed = 0;

    s->next_seq = hub->last_seq + 1;
    if (last_event_id == NULL || last_event_id[0] == '\0')
        return NULL;
    if (sscanf(last_event_id, "%" SCNu64 "-%" SCNu64 "%n", &epoch, &seq, &consumed) != 2 ||
        last_event_id[consumed] != '\0' || epoch != hub->epoch)
        return "unknown event id";
    if (seq > hub->last_seq)
        return "event id from the future";
    if (seq + 1 < hub->first_seq)
        return "events since that id are no longer kept";
    s->next_seq = seq + 1;
    return NULL;
}

/*
 * Copies up to max bytes of what the stream has to send: the rest of the
 * frame it is sending, else whole events from the ring (one longer than
 * what is left of max is held and sent over several reads), else a
 * keepalive when one is due. Returns the bytes copied, or HTTP_STREAM_END
 * when out of memory. The lock is held.
 */
static ssize_t fill(struct events *hub, struct stream *s, char *buf, size_t max)
{
    size_t used = 0;

    if (s->sending != NULL) {
        used = s->sending->len - s->sent;
        if (used > max)
            used = max;
        memcpy(buf, s->sending->bytes + s->sent, used);
        s->sent += used;
        if (s->sent == s->sending->len) {
            frame_release(s->sending);
            s->sending = NULL;
        }
        return (ssize_t)used;
    }
    if (s->next_seq < hub->first_seq) {
        /* The client read more slowly than events came, and the ring moved on. */
        s->next_seq = hub->last_seq + 1;
        if (!send_first(s, "", "the client fell behind"))
            return HTTP_STREAM_END;
        return fill(hub, s, buf, max);
    }
    while (s->next_seq <= hub->last_seq) {
        struct frame *f = hub->ring[s->next_seq % hub->cfg.max_events];

        if (s->masked && f->masked != NULL)
            f = f->masked;
        if (f->len == 0) {
            s->next_seq++;
            continue;
        }
        if (f->len <= max - used) {
            memcpy(buf + used, f->bytes, f->len);
            used += f->len;
            s->next_seq++;
            continue;
        }
        if (used > 0)
            break;
        f->refs++;
        s->sending = f;
        s->sent = 0;
        s->next_seq++;
        return fill(hub, s, buf, max);
    }
    if (used == 0 && s->keepalives_sent != hub->keepalives && max >= sizeof(keepalive_frame) - 1) {
        used = sizeof(keepalive_frame) - 1;
        memcpy(buf, keepalive_frame, used);
        s->keepalives_sent = hub->keepalives;
    }
    return (ssize_t)used;
}

static ssize_t stream_read(void *source, struct http_stream *http, char *buf, size_t max)
{
    struct stream *s = source;
    struct events *hub = s->hub;
    ssize_t n;

    pthread_mutex_lock(&hub->lock);
    s->http = http;
    n = s->gone ? HTTP_STREAM_END : fill(hub, s, buf, max);
    if (n == 0 && hub->closed) {
        n = HTTP_STREAM_END;
    } else if (n == 0) {
        s->parked = true;
        http_stream_park(http);
    }
    pthread_mutex_unlock(&hub->lock);
    return n;
}

static void stream_close(void *source)
{
    struct stream *s = source;
    struct events *hub = s->hub;

    pthread_mutex_lock(&hub->lock);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        hub->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    hub->stream_count--;
    frame_release(s->sending);
    pthread_mutex_unlock(&hub->lock);
    free(s);
}

static const struct http_stream_ops stream_ops = {
    .read = stream_read,
    .close = stream_close,
};

int events_serve(struct events *hub, const char *last_event_id, bool masked,
                 struct http_response *res)
{
    struct stream *s = calloc(1, sizeof(*s));
    const char *resync;
    char retry[64];
    int ret = CF_OK;

    if (s == NULL)
        return CF_ERR_NOMEM;
    s->hub = hub;
    s->masked = masked;
    snprintf(retry, sizeof(retry), "retry: %lld\n\n", (long long)hub->cfg.retry_ms);
    pthread_mutex_lock(&hub->lock);
    if (hub->closed)
        ret = CF_ERR_SHUTDOWN;
    else if (hub->stream_count >= hub->cfg.max_streams)
        ret = CF_ERR_BUSY;
    if (ret == CF_OK) {
        resync = position_stream(hub, s, last_event_id);
        if (!send_first(s, retry, resync))
            ret = CF_ERR_NOMEM;
    }
    if (ret != CF_OK) {
        pthread_mutex_unlock(&hub->lock);
        free(s);
        return ret;
    }
    s->keepalives_sent = hub->keepalives;
    s->next = hub->streams;
    if (hub->streams != NULL)
        hub->streams->prev = s;
    hub->streams = s;
    hub->stream_count++;
    pthread_mutex_unlock(&hub->lock);
    http_set_stream(res, 200, "text/event-stream; charset=utf-8", &stream_ops, s);
    /* Proxies such as nginx buffer responses unless told not to. */
    http_add_header(res, "X-Accel-Buffering", "no");
    return CF_OK;
}

size_t events_stream_count(struct events *hub)
{
    size_t count;

    pthread_mutex_lock(&hub->lock);
    count = hub->stream_count;
    pthread_mutex_unlock(&hub->lock);
    return count;
}

void events_close(struct events *hub)
{
    pthread_mutex_lock(&hub->lock);
    hub->closed = true;
    wake_parked(hub);
    pthread_mutex_unlock(&hub->lock);
}

/* ---------------------------------------------------------------------- */
/* The tending thread and lifecycle                                        */
/* ---------------------------------------------------------------------- */

/*
 * Ends the parked streams whose clients went away: libmicrohttpd does not
 * watch parked connections, so without this a departed client would hold
 * its stream (and a place under max_streams) until the next keepalive. One
 * poll() over every parked socket, without waiting; the lock is held.
 */
static void end_departed(struct events *hub)
{
    struct pollfd *fds;
    struct stream **owners;
    size_t n = 0;

    if (hub->stream_count == 0)
        return;
    fds = calloc(hub->stream_count, sizeof(*fds));
    owners = calloc(hub->stream_count, sizeof(*owners));
    for (struct stream *s = hub->streams; fds != NULL && owners != NULL && s != NULL; s = s->next) {
        int fd = s->parked ? http_stream_fd(s->http) : -1;

        if (fd < 0)
            continue;
        fds[n].fd = fd;
        fds[n].events = POLLRDHUP;
        owners[n++] = s;
    }
    if (n > 0 && poll(fds, n, 0) > 0) {
        for (size_t i = 0; i < n; i++) {
            if ((fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0)
                continue;
            owners[i]->gone = true;
            owners[i]->parked = false;
            http_stream_wake(owners[i]->http);
        }
    }
    free(fds);
    free(owners);
}

/*
 * Every EVENTS_TEND_MS, ends the streams of departed clients; every
 * keepalive_ms, has every stream send a keepalive comment.
 */
static void *tend_main(void *arg)
{
    struct events *hub = arg;
    int64_t next_keepalive = cf_boot_ms() + hub->cfg.keepalive_ms;

    pthread_mutex_lock(&hub->lock);
    while (!hub->stopping) {
        struct timespec until;

        cf_monotonic_deadline(EVENTS_TEND_MS, &until);
        if (pthread_cond_timedwait(&hub->wake, &hub->lock, &until) == 0)
            continue; /* woken: stopping is checked by the loop */
        end_departed(hub);
        if (cf_boot_ms() >= next_keepalive) {
            next_keepalive += hub->cfg.keepalive_ms;
            hub->keepalives++;
            wake_parked(hub);
        }
    }
    pthread_mutex_unlock(&hub->lock);
    return NULL;
}

/* A random number naming this process's lifetime in event ids; the wall clock if randomness fails.
 */
static uint64_t random_epoch(void)
{
    char hex[17];

    if (cf_random_hex(hex, 8) != CF_OK)
        return (uint64_t)cf_wall_ms();
    return strtoull(hex, NULL, 16);
}

int events_new(const struct events_config *cfg, struct events **out)
{
    struct events *hub = calloc(1, sizeof(*hub));

    *out = NULL;
    if (hub == NULL)
        return CF_ERR_NOMEM;
    hub->cfg = *cfg;
    hub->ring = calloc(cfg->max_events, sizeof(*hub->ring));
    if (hub->ring == NULL) {
        free(hub);
        return CF_ERR_NOMEM;
    }
    hub->first_seq = 1;
    hub->last_seq = 0;
    hub->epoch = random_epoch();
    pthread_mutex_init(&hub->lock, NULL);
    cf_monotonic_cond_init(&hub->wake);
    if (pthread_create(&hub->thread, NULL, tend_main, hub) != 0) {
        pthread_cond_destroy(&hub->wake);
        pthread_mutex_destroy(&hub->lock);
        free(hub->ring);
        free(hub);
        return CF_ERR_NOMEM;
    }
    *out = hub;
    return CF_OK;
}

void events_free(struct events *hub)
{
    if (hub == NULL)
        return;
    pthread_mutex_lock(&hub->lock);
    hub->stopping = true;
    pthread_cond_signal(&hub->wake);
    pthread_mutex_unlock(&hub->lock);
    pthread_join(hub->thread, NULL);
    assert(hub->streams == NULL);
    while (hub->first_seq <= hub->last_seq)
        drop_oldest(hub);
    free(hub->ring);
    pthread_cond_destroy(&hub->wake);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}
