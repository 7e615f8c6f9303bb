/*
 * job_order.h - GET /jobs?sort=: parsing the sort and its cursor, and
 * keeping the stored next instants that sorting by "next" reads.
 */
#ifndef CF_JOB_ORDER_H
#define CF_JOB_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

/* A parsed ?sort=: by name (the default) or by a key of db_job_list_sorted. */
struct job_order {
    bool by_name;
    enum db_job_sort key; /* when !by_name */
    bool descending;      /* a leading '-' */
};

/*
 * Parses text ("name", or "next", "last_run", "failures", each optionally
 * prefixed by '-' for descending; NULL means "name") into *order. CF_OK, or
 * CF_ERR_INVALID for any other text.
 */
int job_order_parse(const char *text, struct job_order *order);

/*
 * Parses a cursor of a keyed order, "<key>:<name>", into *key and a pointer
 * into text for the name (borrowed). CF_OK or CF_ERR_INVALID.
 */
int job_order_cursor_parse(const char *text, int64_t *key, const char **name);

/* Writes the cursor "<key>:<name>" into out (out_len bytes); NULL when it does not fit. */
char *job_order_cursor_format(int64_t key, const char *name, char *out, size_t out_len);

/*
 * Computes again the stored next instant of every live job whose stored
 * value is before now_ms (it fired since, or was written), so that a list
 * sorted by "next" is right. Paused jobs and schedules without a future
 * instant store DB_JOB_NEXT_NEVER. CF_OK or the db error.
 */
int job_order_refresh_next(struct db *db, int64_t now_ms);

/*
 * Stores the next instant of job (just written) after now_ms, so that a
 * catalog filled through the API needs no bulk refresh when first sorted by
 * "next". Best effort: a later write or refresh corrects it. CF_OK or the
 * db error.
 */
int job_order_store_next(struct db *db, const struct job *job, int64_t now_ms);

#endif
