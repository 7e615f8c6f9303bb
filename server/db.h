/*
 * db.h - the instance's SQLite database: migrations, instance metadata, the
 * job catalog mirror, standalone fencing counters and the run history.
 *
 * A struct db is one SQLite connection guarded by a mutex, so any thread may
 * call any function; subsystems that write often (the scheduler) open their
 * own handle so they do not queue behind API reads. The database runs in WAL
 * mode with a busy timeout; every multi-statement change is one transaction,
 * so a crash at any point leaves it consistent.
 *
 * All times are wall milliseconds since the epoch.
 */
#ifndef CF_DB_H
#define CF_DB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "run.h"

struct db;

/*
 * Opens the database at path (creating it), sets WAL mode, the busy timeout
 * and foreign settings. Does not migrate. Returns CF_OK with *out, or
 * CF_ERR_DB with a message in err (errlen bytes).
 */
int db_open(const char *path, struct db **out, char *err, size_t errlen);

/* Closes the connection and frees the handle; accepts NULL. */
void db_close(struct db *db);

/*
 * Applies the embedded migrations not yet applied, in order, each in its own
 * transaction, recording them in schema_migrations. Refuses (CF_ERR_DB) a
 * database whose newest applied migration is newer than the binary knows,
 * with a message saying so in err.
 */
int db_migrate(struct db *db, char *err, size_t errlen);

/* Number of the newest migration the binary carries. */
int db_schema_version(void);

/*
 * Claims the database for this process before anything else touches it
 * (migrations included): takes an exclusive advisory lock on the database
 * file, held until exit. When another live process holds it, returns
 * CF_ERR_CONFLICT with a message naming its pid and host (from the owner
 * row) in err.
 */
int db_claim_owner(struct db *db, const char *path, char *err, size_t errlen);

/* Records this process's pid, host and start time in the owner row (after migrating). */
int db_record_owner(struct db *db);

/* ---- metadata ---- */

/* Reads meta[key] into a new string *value (free()). CF_ERR_NOT_FOUND when unset. */
int db_meta_get(struct db *db, const char *key, char **value);
int db_meta_set(struct db *db, const char *key, const char *value);

/*
 * Returns meta[key] in *value (free()), first storing a fresh random value of
 * nbytes random bytes in hex when it is unset. Used for the instance id,
 * default signing secret and generated admin token.
 */
int db_meta_get_or_create(struct db *db, const char *key, size_t nbytes, char **value);

/* ---- catalog ---- */

/*
 * Reads the live job name into a new *job (job_free()). CF_ERR_NOT_FOUND
 * when absent or deleted.
 */
int db_job_get(struct db *db, const char *name, struct job **job);

/* Options of db_job_list. */
struct db_job_query {
    const char *q;     /* substring of name or description; NULL for all */
    int paused;        /* -1 any, 0 active only, 1 paused only */
    const char *after; /* cursor: names after this one; NULL from the start */
    int limit;         /* 1..500 */
};

/*
 * Lists live jobs by name into a new array *jobs of *count jobs (free each
 * with job_free(), then the array with free()). *more is set when further
 * jobs follow the last one returned.
 */
int db_job_list(struct db *db, const struct db_job_query *query, struct job ***jobs, size_t *count,
                bool *more);

/* What db_job_list_sorted orders by (GET /jobs?sort=), each with the name after it. */
enum db_job_sort {
    DB_JOB_SORT_NEXT,     /* next_fire_at; jobs without one last */
    DB_JOB_SORT_LAST_RUN, /* the newest run's sort_at; jobs never run first */
    DB_JOB_SORT_FAILURES, /* consecutive_failures */
};

/* Value of DB_JOB_SORT_NEXT for a job without a next instant (year 10000, wall ms). */
#define DB_JOB_NEXT_NEVER INT64_C(253402300800000)

/*
 * Lists live jobs like db_job_list, ordered by (sort key, name), descending
 * when descending is set, starting after (after_key, query->after) (a
 * cursor; query->after NULL: from the start). *last_key is the sort key of
 * the last job returned. Reads the indexes of job_stats (migration 0006);
 * the search index is not used, q filters while walking. For
 * DB_JOB_SORT_NEXT the caller refreshes stale next instants first
 * (db_job_next_stale, db_job_next_store).
 */
int db_job_list_sorted(struct db *db, const struct db_job_query *query, enum db_job_sort sort,
                       bool descending, int64_t after_key, struct job ***jobs, size_t *count,
                       bool *more, int64_t *last_key);

/*
 * Up to limit live jobs whose stored next instant is before now_ms (or was
 * never computed), into a new array as db_job_list returns it.
 */
int db_job_next_stale(struct db *db, int64_t now_ms, int limit, struct job ***jobs, size_t *count);

/* Stores next_ms[i] (wall ms, DB_JOB_NEXT_NEVER for none) as the next instant of names[i]. */
int db_job_next_store(struct db *db, const char *const *names, const int64_t *next_ms, size_t n);

/*
 * The number of firings (runs that claimed their slot: running or ended
 * with a delivery outcome) per instance since since_ms (wall ms, by run
 * sort time), as a new JSON object {instance: count} in *counts.
 * CF_OK, CF_ERR_NOMEM or CF_ERR_DB (*counts NULL).
 */
int db_run_firings_by_instance(struct db *db, int64_t since_ms, json_t **counts);

/* What the jobs list shows of a job's recent runs (migration 0006). */
struct db_job_stats {
    int64_t consecutive_failures;
    char *last_error; /* owned, NULL when none; free() */
};

/* The stats of job into *stats (zero when the job has none); CF_OK or CF_ERR_DB. */
int db_job_stats_get(struct db *db, const char *job, struct db_job_stats *stats);

/* Every live job (for the scheduler's load). Same ownership as db_job_list. */
int db_job_all(struct db *db, struct job ***jobs, size_t *count);

/* The longest lease_ms of the live jobs into *lease_ms; 0 when there are none. */
int db_job_max_lease(struct db *db, int64_t *lease_ms);

/* Number of live jobs. */
int db_job_count(struct db *db, int64_t *count);

/*
 * Writes a catalog change in one transaction: with job != NULL, stores it
 * (upsert by name, job->version and timestamps as given); with job == NULL,
 * marks name deleted at deleted_at_ms. Changes with a version not greater
 * than the stored one are ignored (returns CF_OK), so mirrors converge.
 */
int db_job_store(struct db *db, const char *name, const struct job *job, int64_t version,
                 int64_t deleted_at_ms);

/* One catalog change for db_job_store_many(); the pointers are borrowed. */
struct db_job_change {
    const char *name;
    const struct job *job; /* NULL: a tombstone at deleted_at_ms */
    int64_t version;
    int64_t deleted_at_ms;
};

/*
 * Writes count catalog changes as db_job_store() does, in one transaction
 * (all or none), so that a batch waits for the database's write lock once.
 */
int db_job_store_many(struct db *db, const struct db_job_change *changes, size_t count);

/* Version of name (live or tombstone) into *version; 0 when unknown. */
int db_job_version(struct db *db, const char *name, int64_t *version, bool *deleted);

/* ---- standalone catalog transaction ---- */

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK on the handle; the mutex stays held between begin and end. */
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);

/*
 * Standalone catalog write, in one transaction: takes the next catalog
 * version (a counter in meta) into *version, sets it on job, and stores the
 * job (or, with job == NULL, a tombstone for name at deleted_at_ms).
 */
int db_job_write_next(struct db *db, const char *name, struct job *job, int64_t deleted_at_ms,
                      int64_t *version);

/* ---- fencing counters (standalone) ---- */

/* Within db_begin: reads the counter; 0, 0 when the job has none. */
int db_fence_read(struct db *db, const char *job, int64_t *token, int64_t *last_ms);
/* Within db_begin: token = max(token, new), last = max(last, slot) when advance. */
int db_fence_commit(struct db *db, const char *job, int64_t token, int64_t slot_ms, bool advance);

/*
 * The last committed slot of each of n jobs into last_ms[i] (0 for a job
 * without a counter), read in one transaction. On error the slots not read
 * are 0.
 */
int db_fence_last_many(struct db *db, const char *const *jobs, size_t n, int64_t *last_ms);

/* ---- runs ---- */

/*
 * What a handle reports after it changed the catalog mirror or the run
 * history: called on the writing thread, after the change is committed
 * and outside the handle's lock, so a callback may use the database.
 */
struct db_observer {
    /* A run was stored or its stored state changed. run is borrowed. */
    void (*run_changed)(void *ctx, const struct run *run);
    /*
     * A job was stored (job != NULL; created says no live job had the name
     * before) or deleted (job == NULL). job is borrowed.
     */
    void (*job_changed)(void *ctx, const char *name, const struct job *job, bool created);
    void *ctx;
};

/*
 * Sets the handle's observer (copied; NULL removes it). Set it before the
 * handle is used by more than one thread.
 */
void db_set_observer(struct db *db, const struct db_observer *observer);

/*
 * Merges a run into the history by id: the stored record is replaced only
 * by one that wins run_merge_compare() (DESIGN §4.7), so records of one
 * run arriving in any order leave every instance with the same one.
 * Writing a record that does not win changes nothing and is not reported
 * to the observer.
 */
int db_run_upsert(struct db *db, const struct run *run);

/* Merges count runs as db_run_upsert() does, in one transaction (all or none). */
int db_run_upsert_many(struct db *db, const struct run *const *runs, size_t count);

/*
 * db_run_upsert_many(), and with outbox also queues each state the history
 * took in the outbox, in the same transaction: a state on record is then
 * never lost before the cluster's feed has it, whatever kills the process.
 */
int db_run_record(struct db *db, const struct run *const *runs, size_t count, bool outbox);

/* ---- outbox of run states for the cluster's feed (DESIGN §4.7) ---- */

struct db_outbox_entry {
    int64_t seq; /* increasing, never reused in one database */
    char *doc;   /* the run's JSON (run_to_json()) */
};

/*
 * Reads the oldest limit queued states, oldest first, into a new array
 * *entries of *count (db_outbox_entries_free()). On error nothing is
 * returned.
 */
int db_outbox_peek(struct db *db, size_t limit, struct db_outbox_entry **entries, size_t *count);

/* Frees what db_outbox_peek() returned; accepts NULL. */
void db_outbox_entries_free(struct db_outbox_entry *entries, size_t count);

/* Deletes the queued states of the count seqs, in one transaction. */
int db_outbox_delete(struct db *db, const int64_t *seqs, size_t count);

/* Number of queued states into *count. */
int db_outbox_count(struct db *db, int64_t *count);

/* Reads run id into *run (run_clear() it). CF_ERR_NOT_FOUND when absent. */
int db_run_get(struct db *db, const char *id, struct run *run);

struct db_run_query {
    const char *job;      /* NULL for all */
    int status;           /* enum run_status, -1 for any */
    const char *instance; /* NULL for all */
    int trigger;          /* enum run_trigger, -1 for any */
    int64_t since_ms;     /* sort_at >= since; INT64_MIN for none */
    int64_t until_ms;     /* sort_at < until; INT64_MAX for none */
    bool has_cursor;      /* continue after (cursor_sort_at, cursor_id) */
    int64_t cursor_sort_at;
    char cursor_id[RUN_ID_MAX];
    int limit; /* 1..500 */
};

/*
 * Lists runs newest first into a new array *runs of *count (run_clear()
 * each, then free() the array). *more is set when more follow; the cursor
 * of the next page is the last run's (sort_at, id), see db_run_sort_at().
 */
int db_run_list(struct db *db, const struct db_run_query *query, struct run **runs, size_t *count,
                bool *more);

/* The ordering key of a run: its slot, or its start for manual runs and retries. */
int64_t db_run_sort_at(const struct run *run);

/*
 * Calls each, with the database lock held (each must not use db), once per
 * job of the history with: when its latest succeeded run and its latest
 * failed, fenced, missed or lost run ended (wall ms, 0 for none), and how
 * many of the latter ended after the former. Reads the whole history once
 * (for the per-job metrics at start). Returns CF_OK or CF_ERR_DB.
 */
int db_run_job_health(struct db *db,
                      void (*each)(void *ctx, const char *job, int64_t last_success_ms,
                                   int64_t last_failure_ms, int64_t consecutive_failures),
                      void *ctx);

/*
 * The status (enum run_status) of the newest run of run's job that comes
 * before run in the history order and ended (neither running nor skipped),
 * into *status. CF_ERR_NOT_FOUND (*status -1) when there is none.
 */
int db_run_previous_status(struct db *db, const struct run *run, int *status);

/* The latest run of job into *run (run_clear()), CF_ERR_NOT_FOUND when none. */
int db_run_latest(struct db *db, const char *job, struct run *run);

/* Latest slot (wall ms) recorded for job by a scheduled or catch-up run (not a retry); 0 when none.
 */
int db_run_last_slot(struct db *db, const char *job, int64_t *slot_ms);

/*
 * db_run_last_slot() of each of n jobs into slot_ms[i], read in one
 * transaction (for the scheduler's load). On error the slots not read are 0.
 */
int db_run_last_slots(struct db *db, const char *const *jobs, size_t n, int64_t *slot_ms);

/*
 * Reads at most limit runs still "running" (of instance, or of every
 * instance when it is NULL) into a new array *runs of *count (run_clear()
 * each, then free() the array).
 */
int db_run_running(struct db *db, const char *instance, size_t limit, struct run **runs,
                   size_t *count);

/* Deletes at most batch finished runs older than before_ms; *deleted receives how many. */
int db_run_prune(struct db *db, int64_t before_ms, int batch, int *deleted);

/*
 * The jobs (live or deleted) with more than keep runs in the history, as a
 * new array *jobs of *count names (free each, then the array). One pass over
 * the runs_by_job index, whatever the size of the catalog.
 */
int db_run_jobs_over(struct db *db, int keep, char ***jobs, size_t *count);

/* Deletes at most batch runs of job beyond its newest keep; *deleted receives how many. */
int db_run_prune_job(struct db *db, const char *job, int keep, int batch, int *deleted);

/*
 * Whether the database's storage takes writes: false from a write that
 * failed for want of storage (a full disk, an I/O error, a read-only file)
 * until one succeeds, for every handle of the process. When false and why
 * is not NULL, why receives the reason (why_len bytes).
 */
bool db_storage_ok(char *why, size_t why_len);

/* Writes a small row (meta storage_probe) to learn whether the storage takes writes again. */
int db_probe_write(struct db *db);

/*
 * Whether the database answers a read (CF_OK), for /readyz: a probe that
 * costs the same on any size of database, not an integrity check (a
 * readiness probe every few seconds must not scan 100 MiB).
 */
int db_check(struct db *db);

#endif
