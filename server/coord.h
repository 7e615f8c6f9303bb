/*
 * coord.h - the coordinator: how instances agree on who fires a slot, mint
 * fencing tokens, share the job catalog and publish run history.
 *
 * Two implementations sit behind this one interface: standalone (SQLite,
 * coord_standalone.c) and cluster (Redlock over N Redis nodes). The scheduler
 * and the API only ever call through struct coord_ops.
 *
 * Calls are batched (n claims at once) because a scheduler tick often holds
 * many slots due at the same instant; the cluster implementation pipelines a
 * batch into one round per node. Every function may be called from any
 * thread, by any number of threads at once.
 */
#ifndef CF_COORD_H
#define CF_COORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "run.h"

/* Fencing tokens: (counter << 16) | instance ordinal, below 2^53 (DESIGN §4.2). */
#define COORD_ORDINAL_BITS 16
#define COORD_TOKEN_MAX ((int64_t)1 << 53)

/*
 * The token minted over the highest committed token seen, m, for an instance
 * with the given ordinal: (floor(m / 2^16) + 1) * 2^16 + ordinal. Returns -1
 * when the result would reach 2^53.
 */
int64_t coord_mint_token(int64_t highest_seen, unsigned ordinal);

/* One firing to claim. The caller fills the inputs; the coordinator the outputs. */
struct coord_claim {
    /* in */
    const char *job;  /* borrowed */
    int64_t slot_ms;  /* T (wall ms); for a manual run, its trigger instant */
    int64_t lease_ms; /* lock lifetime */
    bool per_slot;    /* overlap=allow: the lock covers (job, T) rather than the job */
    bool advance;     /* commit fence.last = max(last, T); false for manual runs */
    /*
     * The run a committed claim starts ("" for none, as for the catalog
     * lock) and its trigger: the commit round records it, "running", in the
     * cluster's run feed, so a committed claim always leaves a record.
     */
    char run_id[RUN_ID_MAX];
    enum run_trigger trigger;
    const char *retry_of; /* a retry: the run it retries (borrowed), else NULL */

    /* out */
    int result;           /* CF_OK, CF_ERR_FIRED, CF_ERR_BUSY, CF_ERR_NO_QUORUM, ... */
    int64_t busy_slot_ms; /* with CF_ERR_BUSY: the holder's T */
    /*
     * With CF_ERR_BUSY: whether the holder is a committed claim of another
     * slot that may still hold the lock on a quorum, i.e. a run that may be
     * in flight (the overlap policy applies). False when only claims racing
     * for this slot, claims never committed, or leftovers of released runs
     * on a minority stand in the way: the caller retries shortly.
     */
    bool busy_in_flight;
    int64_t fired_ms; /* with CF_ERR_FIRED: the newest slot committed (>= T) */
    /*
     * With CF_OK: the committed fencing token. With CF_ERR_LOST: the token
     * minted but committed on fewer than Q nodes when some node may hold
     * it (with its start record), else 0.
     */
    int64_t token;
    int64_t started_at_ms;       /* with CF_OK: the run's start as recorded (wall ms) */
    char nonce[33];              /* lock value's random part, kept for extend and release */
    int64_t valid_until_boot_ms; /* CLOCK_BOOTTIME instant the lease is safe until */
};

/* if_match value of "If-Match: *": any current version, but the job must exist. */
#define COORD_IF_EXISTS ((int64_t)-1)

/* Called by the coordinator when the catalog changes underneath (cluster peers). */
typedef void (*coord_job_changed_fn)(void *ctx, const char *name);

struct coord;

struct coord_ops {
    /*
     * Claims and commits each of n firings (DESIGN §4.2, both rounds),
     * setting claims[i].result: CF_OK (token minted, lease held), CF_ERR_FIRED
     * (the slot was delivered already), CF_ERR_BUSY (another claim holds the
     * lock; busy_slot_ms says which slot, busy_in_flight whether it is a
     * run that may be in flight), CF_ERR_NO_QUORUM or another error
     * (nothing held; the caller may retry within the starting deadline).
     * Returns CF_OK when the batch was processed.
     */
    int (*claim)(struct coord *coord, struct coord_claim *claims, size_t n);
    /*
     * Extends the leases of n held claims by their lease_ms (never
     * re-creating a lost lock): per claim CF_OK with valid_until_boot_ms
     * moved on, or CF_ERR_LOST.
     */
    int (*extend)(struct coord *coord, struct coord_claim *claims, size_t n);
    /* Releases n held claims; best effort, never waits beyond the node timeout. */
    void (*release)(struct coord *coord, const struct coord_claim *claims, size_t n);

    /*
     * Writes job (the catalog's copy) under the catalog lock: with
     * create_only, CF_ERR_CONFLICT when the name exists; with if_match > 0,
     * CF_ERR_PRECONDITION unless the current version equals it; with
     * COORD_IF_EXISTS, CF_ERR_PRECONDITION unless the job exists. On success
     * the new version and timestamps are written into job (created_at kept
     * from the previous version) and *created says whether it is new.
     */
    int (*catalog_put)(struct coord *coord, struct job *job, bool create_only, int64_t if_match,
                       bool *created);
    /* Deletes name (a tombstone); CF_ERR_NOT_FOUND, CF_ERR_PRECONDITION as above. */
    int (*catalog_delete)(struct coord *coord, const char *name, int64_t if_match);

    /*
     * Whether run states this instance records must be queued in the
     * database's outbox (db_run_record() with outbox) to reach the other
     * instances: true in a cluster, false standalone.
     */
    bool (*shares_history)(struct coord *coord);
    /*
     * Run states were queued in the outbox: they are appended to every
     * node's run feed in the background, soon and without blocking, and
     * retried (also after a restart) until a quorum of nodes holds each.
     */
    void (*history_queued)(struct coord *coord);

    /*
     * The newest slot committed for each of n jobs (fence.last, wall ms; 0
     * when none) into last_ms. Cluster: the highest any node answering in
     * time holds; CF_ERR_NO_QUORUM when fewer than Q trusted nodes answered
     * (last_ms then holds what was seen).
     */
    int (*fired_until)(struct coord *coord, const char *const *jobs, size_t n, int64_t *last_ms);
    /*
     * How long after its instant this instance should claim (job, slot_ms):
     * its rank among the live members for that slot times the stagger
     * (DESIGN §4.4). 0 in standalone mode.
     */
    int64_t (*claim_delay_ms)(struct coord *coord, const char *job, int64_t slot_ms);
    /*
     * This instance's rank among the live members for (job, slot_ms), the
     * order of DESIGN §4.4: 0 for the instance that claims first. 0 in
     * standalone mode. Thread-safe.
     */
    int64_t (*rank)(struct coord *coord, const char *job, int64_t slot_ms);
    /*
     * Sets the function told, from a coordinator thread, of catalog entries
     * peers changed once they are in the local mirror; changes applied
     * before it was set are told to it at once. fn may be NULL.
     */
    void (*set_listener)(struct coord *coord, coord_job_changed_fn fn, void *ctx);

    /* Sets the URL other instances and the dashboard show for this one (copied). */
    int (*set_url)(struct coord *coord, const char *url);
    /* The ordinal of this instance, the low 16 bits of its tokens. */
    unsigned (*ordinal)(struct coord *coord);
    /* Whether claims can succeed now (readiness: a trusted quorum). */
    bool (*ready)(struct coord *coord);
    /* A new JSON object for GET /cluster: mode, members, nodes, quorum. */
    json_t *(*status)(struct coord *coord);
    /* Stops background work and frees the coordinator; accepts NULL through coord_free(). */
    void (*destroy)(struct coord *coord);
};

/* The common head of every coordinator. */
struct coord {
    const struct coord_ops *ops;
};

/* Frees a coordinator; accepts NULL. */
void coord_free(struct coord *coord);

struct db;

/*
 * Creates the standalone coordinator over db (borrowed; it must outlive the
 * coordinator, be a handle of its own, so that claims do not queue behind
 * other users, and open a database this process claimed with
 * db_claim_owner()). instance_id and
 * advertise_url are copied. Returns CF_OK or CF_ERR_NOMEM.
 */
int coord_standalone_new(struct db *db, const char *instance_id, const char *advertise_url,
                         struct coord **out);

/* Settings of the cluster coordinator (DESIGN §4). */
struct coord_cluster_config {
    const char *redis_urls;    /* comma-separated node URLs */
    const char *redis_ca;      /* CA bundle for rediss:// nodes; NULL: the system's */
    const char *prefix;        /* key prefix, "cf:" */
    const char *instance_id;   /* copied */
    const char *advertise_url; /* copied */
    int64_t node_timeout_ms;   /* per node per round */
    int64_t stagger_ms;        /* claim delay per rank */
    int64_t quarantine_ms;     /* 0: twice the longest lease, at least 60000 */
    struct db *db;             /* the coordinator's own handle; borrowed, outlives it */
};

/*
 * Creates the cluster coordinator and starts its background thread
 * (connections, membership, catalog and history sync, node repair). Waits up
 * to about two seconds for a first view of the nodes, then returns CF_OK
 * with *out even when no quorum is reachable yet (claims fail until it is).
 * Returns CF_ERR_INVALID with a message in err for a bad URL list.
 */
int coord_cluster_new(const struct coord_cluster_config *cfg, struct coord **out, char *err,
                      size_t errlen);

struct nodeset;

/*
 * The node set and key prefix of a cluster coordinator (both borrowed for
 * the coordinator's life), for state kept on the lock nodes beside the
 * coordinator's own (signing_secrets.c). coord must be a cluster one.
 */
struct nodeset *coord_cluster_nodeset(struct coord *coord);
const char *coord_cluster_prefix(struct coord *coord);

#endif
