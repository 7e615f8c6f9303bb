/*
 * job_order.c - GET /jobs?sort=: the sort keys, their cursors and the
 * refresh of stored next instants.
 */
#include "job_order.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cron.h"
#include "tz.h"

/* Jobs computed per read of stale rows: one transaction each, the db lock released between. */
#define REFRESH_BATCH 500

int job_order_parse(const char *text, struct job_order *order)
{
    static const struct {
        const char *name;
        enum db_job_sort key;
    } keys[] = {
        {"next", DB_JOB_SORT_NEXT},
        {"last_run", DB_JOB_SORT_LAST_RUN},
        {"failures", DB_JOB_SORT_FAILURES},
    };

    memset(order, 0, sizeof(*order));
    order->by_name = true;
    if (text == NULL)
        return CF_OK;
    if (*text == '-') {
        order->descending = true;
        text++;
    }
    if (strcmp(text, "name") == 0)
        return order->descending ? CF_ERR_INVALID : CF_OK;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(text, keys[i].name) == 0) {
            order->by_name = false;
            order->key = keys[i].key;
            return CF_OK;
        }
    }
    return CF_ERR_INVALID;
}

int job_order_cursor_parse(const char *text, int64_t *key, const char **name)
{
    const char *colon = strchr(text, ':');
    char *end = NULL;
    long long value;

    if (colon == NULL || colon == text || colon[1] == '\0')
        return CF_ERR_INVALID;
    errno = 0;
    value = strtoll(text, &end, 10);
    if (errno != 0 || end != colon)
        return CF_ERR_INVALID;
    *key = value;
    *name = colon + 1;
    return CF_OK;
}

char *job_order_cursor_format(int64_t key, const char *name, char *out, size_t out_len)
{
    int written = snprintf(out, out_len, "%" PRId64 ":%s", key, name);

    return written < 0 || (size_t)written >= out_len ? NULL : out;
}

/* The next instant of job after now_ms, DB_JOB_NEXT_NEVER when it has none. */
static int64_t next_instant(const struct job *job, int64_t now_ms)
{
    struct cron_schedule *cron = NULL;
    const struct tz_zone *zone = tz_get(job->timezone);
    int64_t next = DB_JOB_NEXT_NEVER;

    if (!job->paused && zone != NULL && cron_parse(job->schedule, &cron, NULL) == CF_OK &&
        cron_next(cron, zone, now_ms, &next) != CF_OK)
        next = DB_JOB_NEXT_NEVER;
    cron_free(cron);
    return next;
}

int job_order_refresh_next(struct db *db, int64_t now_ms)
{
    for (;;) {
        struct job **jobs = NULL;
        size_t count = 0;
        const char *names[REFRESH_BATCH];
        int64_t next[REFRESH_BATCH];
        int ret = db_job_next_stale(db, now_ms, REFRESH_BATCH, &jobs, &count);

        if (ret != CF_OK)
            return ret;
        for (size_t i = 0; i < count; i++) {
            names[i] = jobs[i]->name;
            next[i] = next_instant(jobs[i], now_ms);
        }
        ret = count > 0 ? db_job_next_store(db, names, next, count) : CF_OK;
        for (size_t i = 0; i < count; i++)
            job_free(jobs[i]);
        free(jobs);
        if (ret != CF_OK || count < REFRESH_BATCH)
            return ret;
    }
}

int job_order_store_next(struct db *db, const struct job *job, int64_t now_ms)
{
    const char *name = job->name;
    int64_t next = next_instant(job, now_ms);

    return db_job_next_store(db, &name, &next, 1);
}
