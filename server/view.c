/*
 * view.c - the API's JSON form of a job.
 */
#include "view.h"

#include <stdlib.h>

#include "common.h"
#include "cron.h"
#include "run.h"
#include "tz.h"

json_t *view_job(struct db *db, const struct job *job)
{
    json_t *doc = job_to_json(job, false);
    struct cron_schedule *cron = NULL;
    const struct tz_zone *zone = tz_get(job->timezone);
    struct db_job_stats stats;
    struct run last;
    int64_t next;
    char when[CF_TIME_LEN], description[256];

    if (doc == NULL)
        return NULL;
    if (cron_parse(job->schedule, &cron, NULL) == CF_OK &&
        cron_describe(cron, description, sizeof(description)) != NULL)
        json_object_set_new(doc, "schedule_description", json_string(description));
    if (!job->paused && zone != NULL && cron != NULL &&
        cron_next(cron, zone, cf_wall_ms(), &next) == CF_OK)
        json_object_set_new(doc, "next_fire_at", json_string(cf_format_time(next, when)));
    else
        json_object_set_new(doc, "next_fire_at", json_null());
    cron_free(cron);
    if (db_job_stats_get(db, job->name, &stats) == CF_OK) {
        json_object_set_new(doc, "consecutive_failures", json_integer(stats.consecutive_failures));
        json_object_set_new(doc, "last_error",
                            stats.last_error ? json_string(stats.last_error) : json_null());
        free(stats.last_error);
    }
    if (db_run_latest(db, job->name, &last) == CF_OK) {
        json_object_set_new(doc, "last_run", run_to_json(&last));
        run_clear(&last);
    } else {
        json_object_set_new(doc, "last_run", json_null());
    }
    return doc;
}
