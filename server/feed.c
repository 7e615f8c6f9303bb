/*
 * feed.c - turns catalog, history and cluster changes into events.
 */
#include "feed.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "redact.h"
#include "run.h"
#include "view.h"

/* How often the coordinator's view of the cluster is compared with the last one sent. */
#define FEED_CLUSTER_CHECK_MS 1000

struct feed {
    struct events *events;
    struct db *db;
    struct coord *coord; /* NULL until feed_watch() */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

static void run_changed(void *ctx, const struct run *run)
{
    struct feed *feed = ctx;
    json_t *doc = run_to_json(run);

    if (doc != NULL)
        events_publish(feed->events, "run", doc);
}

static void job_changed(void *ctx, const char *name, const struct job *job, bool created)
{
    struct feed *feed = ctx;
    json_t *view = job != NULL ? view_job(feed->db, job) : json_null();
    const char *action = job == NULL ? "deleted" : created ? "created" : "updated";
    json_t *doc, *masked = NULL;

    if (view == NULL)
        return;
    doc = json_pack("{s:s, s:s, s:o}", "action", action, "name", name, "job", view);
    if (doc == NULL)
        return;
    /* Viewers' streams get the job with its credentials masked; none when that fails. */
    masked = json_deep_copy(doc);
    if (masked != NULL && redact_job(json_object_get(masked, "job")) != 0) {
        json_decref(masked);
        masked = NULL;
    }
    events_publish_masked(feed->events, "job", doc, masked);
}

void feed_observer(struct feed *feed, struct db_observer *observer)
{
    observer->run_changed = run_changed;
    observer->job_changed = job_changed;
    observer->ctx = feed;
}

/* Removes keys from every object of array (a borrowed member of a status document). */
static void strip_keys(json_t *array, const char *const *keys)
{
    size_t i;
    json_t *item;

    json_array_foreach(array, i, item)
    {
        for (const char *const *key = keys; *key != NULL; key++)
            json_object_del(item, *key);
    }
}

/*
 * The part of a cluster status that a change of is worth an event: who is
 * there, which nodes are up and trusted, their warnings, the quorum. Newly
 * allocated text, or NULL.
 */
static char *status_digest(const json_t *status)
{
    static const char *const member_noise[] = {"last_seen", "clock_offset_ms", NULL};
    static const char *const node_noise[] = {"latency_ms", "clock_offset_ms", NULL};
    json_t *copy = json_deep_copy(status);
    char *text;

    if (copy == NULL)
        return NULL;
    strip_keys(json_object_get(copy, "members"), member_noise);
    strip_keys(json_object_get(copy, "nodes"), node_noise);
    text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    return text;
}

static void *feed_main(void *arg)
{
    struct feed *feed = arg;
    char *last = NULL;

    pthread_mutex_lock(&feed->lock);
    while (!feed->stopping) {
        struct timespec until;
        json_t *status;
        char *digest;

        pthread_mutex_unlock(&feed->lock);
        status = feed->coord->ops->status(feed->coord);
        digest = status != NULL ? status_digest(status) : NULL;
        if (digest != NULL && (last == NULL || strcmp(digest, last) != 0)) {
            /* The first view is what a client reads from GET /cluster anyway. */
            if (last != NULL)
                events_publish(feed->events, "cluster", json_incref(status));
            free(last);
            last = digest;
        } else {
            free(digest);
        }
        json_decref(status);
        pthread_mutex_lock(&feed->lock);
        if (feed->stopping)
            break;
        cf_monotonic_deadline(FEED_CLUSTER_CHECK_MS, &until);
        pthread_cond_timedwait(&feed->wake, &feed->lock, &until);
    }
    pthread_mutex_unlock(&feed->lock);
    free(last);
    return NULL;
}

int feed_new(struct events *events, struct db *db, struct feed **out)
{
    struct feed *feed = calloc(1, sizeof(*feed));

    *out = NULL;
    if (feed == NULL)
        return CF_ERR_NOMEM;
    feed->events = events;
    feed->db = db;
    pthread_mutex_init(&feed->lock, NULL);
    cf_monotonic_cond_init(&feed->wake);
    *out = feed;
    return CF_OK;
}

int feed_watch(struct feed *feed, struct coord *coord)
{
    assert(feed->coord == NULL);
    feed->coord = coord;
    if (pthread_create(&feed->thread, NULL, feed_main, feed) != 0) {
        feed->coord = NULL;
        return CF_ERR_NOMEM;
    }
    return CF_OK;
}

void feed_unwatch(struct feed *feed)
{
    if (feed == NULL || feed->coord == NULL)
        return;
    pthread_mutex_lock(&feed->lock);
    feed->stopping = true;
    pthread_cond_signal(&feed->wake);
    pthread_mutex_unlock(&feed->lock);
    pthread_join(feed->thread, NULL);
    feed->coord = NULL;
}

void feed_free(struct feed *feed)
{
    if (feed == NULL)
        return;
    feed_unwatch(feed);
    pthread_cond_destroy(&feed->wake);
    pthread_mutex_destroy(&feed->lock);
    free(feed);
}
