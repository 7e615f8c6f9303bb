/*
 * job.h - the job definition: validation from JSON, defaults, serialisation
 * and JSON merge patch. Pure logic: no I/O beyond reading time zones.
 *
 * A struct job is plain owned data: every pointer in it belongs to the job
 * and is released by job_free(). Durations are in milliseconds.
 */
#ifndef CF_JOB_H
#define CF_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "netallow.h"
#include "notify_rule.h"

#define JOB_NAME_MAX 63
#define JOB_DESCRIPTION_MAX 1024

enum job_overlap { JOB_OVERLAP_FORBID, JOB_OVERLAP_ALLOW, JOB_OVERLAP_QUEUE };
enum job_catchup { JOB_CATCHUP_NONE, JOB_CATCHUP_LATEST };

struct job_header {
    char *name;
    char *value;
};

struct job_webhook {
    char *url;    /* http or https */
    char *method; /* GET POST PUT PATCH DELETE; default POST */
    struct job_header *headers;
    size_t header_count;
    json_t *body;       /* owned reference; json_null() when absent */
    bool raw_body;      /* send body (then a JSON string) verbatim */
    char *content_type; /* for raw_body; NULL otherwise */
    int64_t timeout_ms; /* per attempt; default 30000 */
};

struct job_retry {
    int attempts;           /* total attempts, default 3 */
    int64_t backoff_ms;     /* first delay, default 1000 */
    int64_t max_backoff_ms; /* cap, default 60000 */
};

/* DESIGN §5 Notifications; url NULL: none set (the instance's --notify-url applies). */
struct job_notify {
    char *url;   /* http or https */
    unsigned on; /* NOTIFY_BIT set; default NOTIFY_ON_DEFAULT */
    enum notify_format format;
};

struct job {
    char *name; /* ^[a-z0-9][a-z0-9._-]{0,62}$, immutable id */
    char *description;
    char *schedule;
    char *timezone; /* IANA name, default "UTC" */
    bool paused;
    struct job_webhook webhook;
    char *signing_secret; /* NULL: the instance-wide default */
    enum job_overlap overlap;
    int64_t starting_deadline_ms; /* default 60000 */
    enum job_catchup catchup;
    struct job_retry retry;
    int64_t lease_ms; /* default 30000 */
    struct job_notify notify;

    /*
     * Kept by the catalog, never shown by the API: the signing secret that
     * signing_secret replaced at signing_secret_changed_at_ms (NULL: the
     * default secret was in use then), which still signs during the
     * overlap (signing_secrets.h). 0: never changed.
     */
    char *previous_signing_secret;
    int64_t signing_secret_changed_at_ms;

    /* Read-only, kept by the catalog. */
    int64_t version;
    int64_t created_at_ms;
    int64_t updated_at_ms;
};

/* What validation needs from the instance. */
struct job_limits {
    const struct netallow *webhook_allow; /* borrowed; NULL allows all but link-local */
};

/* Whether name matches ^[a-z0-9][a-z0-9._-]{0,62}$. */
bool job_name_valid(const char *name);

/*
 * Validates doc (a JSON object from the API or storage) and builds a new job
 * with defaults for absent fields into *out (free with job_free()).
 *
 * Every problem is appended to errors (a JSON array, borrowed) as
 * {"field": "webhook.url", "message": "..."}: unknown fields, wrong types,
 * values out of range, an invalid schedule (with its position), an unknown
 * time zone, a non-http(s) URL or a host the allow list refuses, CR/LF or
 * invalid characters in header names or values, reserved headers. The
 * read-only fields (version, created_at, updated_at, next_fire_at, last_run,
 * signing_secret_set, consecutive_failures, last_error) are accepted and ignored, so a GET result
 * can be PUT back; "version", "created_at" and "updated_at" are read back only when keep_meta is
 * true (storage). Returns CF_OK, CF_ERR_INVALID (errors holds at least one entry, *out is NULL) or
 * CF_ERR_NOMEM.
 */
int job_from_json(const json_t *doc, const struct job_limits *limits, bool keep_meta,
                  struct job **out, json_t *errors);

/*
 * Serialises a job as a new JSON object. With include_secret, for storage:
 * signing_secret is written when set, and previous_signing_secret and
 * signing_secret_changed_at after a change of secret (read back by
 * job_from_json() with keep_meta, refused as unknown without). Without, for
 * the API: only
 * "signing_secret_set": true|false. version, created_at and updated_at
 * (RFC 3339) are always written. Returns NULL on allocation failure.
 */
json_t *job_to_json(const struct job *job, bool include_secret);

/* Deep copy; NULL on allocation failure. */
struct job *job_copy(const struct job *job);

/* Frees a job; accepts NULL. */
void job_free(struct job *job);

/*
 * Applies patch to target as RFC 7386 JSON merge patch and returns the
 * result as a new reference (target and patch are borrowed and unchanged).
 * NULL on allocation failure.
 */
json_t *job_merge_patch(const json_t *target, const json_t *patch);

const char *job_overlap_name(enum job_overlap overlap);
const char *job_catchup_name(enum job_catchup catchup);

#endif
