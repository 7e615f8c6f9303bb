/*
 * view.h - the API's JSON form of a job, shared by the REST API and the
 * event stream so that both show a job the same way.
 */
#ifndef CF_VIEW_H
#define CF_VIEW_H

#include <jansson.h>

#include "db.h"
#include "job.h"

/*
 * The job's fields (never its secret) plus schedule_description,
 * next_fire_at (null when paused or never again) and last_run (null when
 * none), consecutive_failures and last_error (null when none), the last
 * three read from db. New reference; NULL when out of memory.
 */
json_t *view_job(struct db *db, const struct job *job);

#endif
