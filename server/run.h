/*
 * run.h - one run of a job: a scheduled slot, a catch-up or a manual trigger,
 * with its outcome. Plain owned data; run_free() releases it.
 */
#ifndef CF_RUN_H
#define CF_RUN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Longest run id: a job name, "@" and a 13-digit instant; or 32 hex chars. */
#define RUN_ID_MAX 96
/* Bytes of the response body kept in response_excerpt. */
#define RUN_EXCERPT_MAX 4096

enum run_trigger {
    RUN_TRIGGER_SCHEDULE,
    RUN_TRIGGER_MANUAL,
    RUN_TRIGGER_CATCHUP,
    RUN_TRIGGER_RETRY, /* POST /runs/{id}/retry: the slot of an earlier run again */
};

/* Entries kept in a run's attempt_log: the most recent ones, older ones dropped. */
#define RUN_ATTEMPT_LOG_MAX 10
/* Bytes kept of one attempt's error, terminator included. */
#define RUN_ATTEMPT_ERROR_MAX 160

/* One attempt of a firing (DESIGN §6 attempt_log). */
struct run_attempt {
    int attempt;           /* 1-based */
    int64_t started_at_ms; /* wall ms */
    int64_t duration_ms;
    int http_status;                   /* 0 when none answered */
    char error[RUN_ATTEMPT_ERROR_MAX]; /* "" when it succeeded */
};

enum run_status {
    RUN_RUNNING,
    RUN_SUCCEEDED,
    RUN_FAILED,
    RUN_FENCED,
    RUN_SKIPPED,
    RUN_MISSED,
    RUN_LOST,
};

struct run {
    char id[RUN_ID_MAX];
    char *job;
    enum run_trigger trigger;
    int64_t scheduled_at_ms; /* wall ms; 0 for none */
    int64_t started_at_ms;   /* wall ms; 0 when it never started */
    int64_t finished_at_ms;  /* wall ms; 0 while running or never started */
    enum run_status status;
    char *reason;          /* why skipped, missed, lost; NULL otherwise */
    int64_t fencing_token; /* 0 when none was minted */
    char *instance;
    int attempts;
    int http_status; /* last attempt's status, 0 for none */
    int64_t duration_ms;
    char *error;            /* last attempt's error, NULL for none */
    char *response_excerpt; /* first RUN_EXCERPT_MAX bytes, NULL for none */
    bool lease_lost;
    bool has_lag;   /* lag_ms is known: a request was sent */
    int64_t lag_ms; /* slot (a retry: its start) to the first request sent */
    char *retry_of; /* the run this one retries, NULL for none */
    /* The last attempt_log_count attempts, oldest first; NULL when none. Owned. */
    struct run_attempt *attempt_log;
    int attempt_log_count;
};

/*
 * Appends an attempt to log (a heap array of *count entries, at most
 * RUN_ATTEMPT_LOG_MAX: the oldest entry is dropped when full). Returns
 * CF_OK, or CF_ERR_NOMEM with the log unchanged.
 */
int run_attempt_log_add(struct run_attempt **log, int *count, const struct run_attempt *entry);

/* Frees what a run owns (not the struct itself, which may live on the stack); accepts NULL. */
void run_clear(struct run *run);

/*
 * Copies src into dst (overwritten, not freed first), strings duplicated.
 * Returns CF_OK, or CF_ERR_NOMEM with dst left empty.
 */
int run_copy(struct run *dst, const struct run *src);

/* Frees a heap run; accepts NULL. */
void run_free(struct run *run);

/* Writes the id of a scheduled slot, "<job>@<T in ms>", into id (RUN_ID_MAX bytes). */
void run_slot_id(const char *job, int64_t scheduled_at_ms, char id[RUN_ID_MAX]);

const char *run_status_name(enum run_status status);
const char *run_trigger_name(enum run_trigger trigger);
/* Parse a name; return -1 when unknown. */
int run_status_parse(const char *name);
int run_trigger_parse(const char *name);

/* Whether a status is final (anything but running). */
bool run_status_final(enum run_status status);

/*
 * The merge order of two records of one run (DESIGN §4.7): > 0 when a wins
 * over b, < 0 when b wins, 0 when they are the same record. Every instance
 * keeps, for each run id, the greatest record it has seen, so histories
 * converge whatever order records arrive in. Records are compared by, in
 * turn:
 *
 *   1. a record carrying a fencing token (a claim was committed) beats one
 *      without: a delivery is never hidden by a skip or a miss;
 *   2. a delivery's outcome (succeeded, failed, fenced) beats every other
 *      status: a claim that lost its lease and was recorded missed or lost
 *      never hides the delivery of another claim of the slot, whatever
 *      their tokens (two claims of one high part differ only by ordinal);
 *   3. the higher token (a later claim of the slot);
 *   4. a final status beats "running";
 *   5. status order: running < skipped < missed < lost < fenced < failed <
 *      succeeded;
 *   6. more attempts; 7. the later finish; 8. the later start;
 *   9. then instance, reason and error, as bytes, for a deterministic tie.
 *
 * db.c's RUN_MERGE_KEY_SQL is the same order in SQL; the unit tests hold
 * the two together.
 */
int run_merge_compare(const struct run *a, const struct run *b);

/* New JSON object with every field of DESIGN §6, times as RFC 3339; NULL on allocation failure. */
json_t *run_to_json(const struct run *run);

/*
 * Reads a run back from the JSON run_to_json() writes (a peer's history
 * record) into run, which is zeroed first (run_clear() it after CF_OK).
 * Returns CF_ERR_INVALID, with run left empty, when a field is missing, of
 * the wrong type or out of range; CF_ERR_NOMEM.
 */
int run_from_json(const json_t *doc, struct run *run);

/* The attempt_log array of a run (new reference; [] for none), NULL on allocation failure. */
json_t *run_attempt_log_to_json(const struct run *run);

/*
 * Reads an attempt_log array (NULL or JSON null: none) into run's log,
 * which must be empty; only the last RUN_ATTEMPT_LOG_MAX entries are kept,
 * errors cut to RUN_ATTEMPT_ERROR_MAX - 1 bytes. Returns CF_OK, or
 * CF_ERR_INVALID / CF_ERR_NOMEM with the log left empty.
 */
int run_attempt_log_from_json(const json_t *list, struct run *run);

#endif
