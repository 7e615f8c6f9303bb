/*
 * job_batch.h - validation of a whole set of job documents at once, for
 * POST /api/v1/jobs/validate: `cronfence apply` changes nothing unless the
 * server accepts every document of the file first. Pure logic, like job.c.
 */
#ifndef CF_JOB_BATCH_H
#define CF_JOB_BATCH_H

#include <jansson.h>
#include <stddef.h>

#include "job.h"

/*
 * Validates request (borrowed), an object {"jobs": [job documents]}, with
 * the rules of job_from_json() plus: "jobs" is required and is a list, no
 * other field is allowed, and no two documents share a name.
 *
 * Every problem is appended to errors (a JSON array, borrowed) as
 * {"index": i, "field": "jobs[i].webhook.url", "message": ...}, where i is
 * the position of the document in the list ("index" is absent for errors
 * of the request itself, field "jobs"). *invalid_count is the number of
 * documents with at least one error.
 *
 * On success *normalized is a new array holding each job as the API shows
 * it, defaults filled in, without the read-only fields (version,
 * created_at, updated_at), in the order of the request. Returns CF_OK,
 * CF_ERR_INVALID (errors holds at least one entry, *normalized is NULL) or
 * CF_ERR_NOMEM.
 */
int job_batch_validate(const json_t *request, const struct job_limits *limits, json_t **normalized,
                       json_t *errors, size_t *invalid_count);

#endif
