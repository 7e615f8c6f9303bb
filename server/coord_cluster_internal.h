/*
 * coord_cluster_internal.h - what the coord_cluster_*.c files share: the
 * constants, the coordinator's state and the functions used across them.
 * Not for use outside the cluster coordinator (its interface is coord.h).
 *
 * Locking: rounds from any threads run at once (the nodeset pipelines
 * them), so a commit waiting for its quorum holds up no heartbeat, extend
 * or other claim. state_lock guards the node trust table, the membership
 * view, the history positions and the listener; it may be taken inside a
 * round, and nothing waits for a round or calls into the nodeset while
 * holding it. release_lock guards the releases to retry; it may be taken
 * inside a round. Run states waiting to be published live in the
 * database's outbox, read by the background thread alone.
 */

#ifndef CF_COORD_CLUSTER_INTERNAL_H
#define CF_COORD_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "coord.h"
#include "departed.h"
#include "fired_slots.h"
#include "minting.h"
#include "nodeset.h"

#define CATALOG_LEASE_MS 10000
/*
 * The run feed is trimmed to what every live member has read (see
 * script_feed_trim), so a reader that falls behind, pauses or restarts
 * loses nothing; this hard cap only bounds a node's memory when a reader
 * stays behind for long.
 */
#define HISTORY_MAXLEN "1000000"
#define PUBLISH_MS 50
#define MAX_NODES 15
#define KEY_MAX (RUN_ID_MAX + 128)
/* How long the commit round waits for each node, at least. */
#define COMMIT_WAIT_MS 250

enum script {
    S_CLAIM,
    S_COMMIT,
    S_EXTEND,
    S_RELEASE,
    S_FENCE_READ,
    S_FENCE_RAISE,
    S_FENCE_DUMP,
    S_CATALOG_WRITE,
    S_CATALOG_SINCE,
    S_CATALOG_GC,
    S_HEARTBEAT,
    S_PUBLISH,
    S_FEED_TRIM,
    S_COUNT
};

/* What this instance knows of a node's trust and clock; under state_lock. */
struct node_state {
    bool answered;                   /* has answered a heartbeat since it last came up */
    bool trusted;                    /* its last reply said it holds the marker */
    uint64_t generation;             /* the connection that reply came over */
    int64_t untrusted_since_boot_ms; /* 0 while trusted or never seen */
    int64_t clock_offset_ms;         /* node TIME minus our wall clock */
    bool clock_known;
};

/* A live member, as the heartbeat reads it back. */
struct member {
    char id[128];
    char url[256];
    char version[32];
    int64_t started_at_ms;
    int64_t seen_ms;         /* node time of its last heartbeat */
    int64_t clock_offset_ms; /* its wall clock minus the node's, at that heartbeat */
    unsigned ordinal;
};

/*
 * A release some nodes did not confirm (down, or too slow for the round):
 * retried in the background until they do or the lease has run out, so a
 * finished run does not block its job on the other instances for a lease.
 */
struct pending_release {
    struct pending_release *next;
    char lock[KEY_MAX];
    char value[64];
    uint32_t nodes; /* nodes still to release on */
    int64_t expires_boot_ms;
    int64_t next_try_boot_ms; /* retried with backoff: a storm of retries is what slows a node */
    int64_t backoff_ms;
};

struct coord_cluster {
    struct coord base;
    struct nodeset *ns;
    struct db *db; /* borrowed; the coordinator's own handle */
    char *instance_id;
    char *prefix;
    int64_t started_at_ms;
    int64_t stagger_ms;
    int64_t node_timeout_ms;
    int64_t quarantine_ms; /* 0: derived from the leases */
    size_t n, quorum;

    pthread_mutex_t state_lock;
    char *advertise_url;
    struct node_state nodes[MAX_NODES];
    struct member *members;
    size_t member_count;
    /* Members that left lately, shown as down. */
    struct departed departed;
    bool view_fresh;      /* the last heartbeat was answered by a trusted quorum */
    int64_t view_boot_ms; /* when the view was last refreshed */
    bool first_view;      /* a heartbeat round has completed */
    pthread_cond_t first_view_cond;
    char history_pos[MAX_NODES][48];
    char trim_warned[MAX_NODES][48]; /* background thread only: the first entry last warned of */
    int64_t catalog_cursor[MAX_NODES];
    coord_job_changed_fn listener;
    void *listener_ctx;
    /* Jobs changed before the listener was set (the scheduler loaded its jobs meanwhile). */
    char **unheard;
    size_t unheard_count, unheard_cap;

    /*
     * The ordinal and until when it is ours (CLOCK_BOOTTIME ms, 0: not
     * held): a heartbeat that confirms it on a trusted quorum extends it,
     * one that goes unanswered does not take it away (see ccl_heartbeat).
     */
    atomic_uint ordinal;
    _Atomic int64_t ordinal_until;
    bool ordinal_noted; /* heartbeat thread only: "ordinal held" was logged */

    struct minting *minting;   /* tokens minted by claims in flight, per job */
    struct fired_slots *fired; /* slots announced committed, per job (§4.4) */
    char catalog_channel[KEY_MAX];
    char fired_channel[KEY_MAX];

    pthread_mutex_t release_lock; /* guards releases */
    struct pending_release *releases;
    size_t release_count;

    /* The database's outbox (DESIGN §4.7): its name on the nodes, and whether it may hold states.
     */
    char outbox_field[192];
    atomic_bool outbox_queued;

    /* Catalog writes waiting for the group commit (see catalog_submit). */
    pthread_mutex_t catalog_mutex; /* guards the queue and catalog_committing */
    pthread_cond_t catalog_cond;   /* a batch was committed */
    struct catalog_request *catalog_queue, **catalog_tail;
    bool catalog_committing;
    /* The committing thread's: the catalog lock kept between batches, and the next version. */
    struct coord_claim catalog_claim;
    bool catalog_held;
    int64_t catalog_held_since_ms; /* CLOCK_BOOTTIME */
    int64_t catalog_next_version;

    pthread_t thread;
    bool thread_started;
    /* The heartbeat has its own thread: the catalog and the history never delay it. */
    pthread_t heartbeat_thread;
    bool heartbeat_started;
    pthread_cond_t stop_cond; /* signalled with state_lock when stopping is set */
    atomic_bool stopping;
    uint64_t rng; /* background thread only */
};

/* One catalog entry seen in a poll: the newest document and which nodes hold it. */
struct seen_entry {
    char name[JOB_NAME_MAX + 16];
    int64_t version;
    char *json;
    uint32_t holders; /* nodes that returned this version */
};

/* coord_cluster.c */
struct coord_cluster *ccl_from_base(struct coord *coord);
int64_t ccl_wait_at_least(const struct coord_cluster *self, int64_t ms);
void ccl_make_key(const struct coord_cluster *self, char *out, const char *kind, const char *name);
const redisReply *ccl_element(const redisReply *reply, size_t i);
int64_t ccl_reply_int(const redisReply *reply, int64_t fallback);
bool ccl_reply_is(const redisReply *reply, const char *text);

/* coord_cluster_scripts.c */
extern const char *const ccl_scripts[S_COUNT];

/* coord_cluster_claims.c */
bool ccl_retry_releases(struct coord_cluster *self, int64_t wait_ms);
void ccl_flush_releases(struct coord_cluster *self);
int ccl_claim(struct coord *coord, struct coord_claim *claims, size_t n);
int ccl_extend(struct coord *coord, struct coord_claim *claims, size_t n);
void ccl_release(struct coord *coord, const struct coord_claim *claims, size_t n);
int ccl_fired_until(struct coord *coord, const char *const *jobs, size_t n, int64_t *last_ms);
int64_t ccl_rank(struct coord *coord, const char *job, int64_t slot_ms);
int64_t ccl_claim_delay_ms(struct coord *coord, const char *job, int64_t slot_ms);

/* coord_cluster_catalog.c */
int ccl_catalog_put(struct coord *coord, struct job *job, bool create_only, int64_t if_match,
                    bool *created);
int ccl_catalog_delete(struct coord *coord, const char *name, int64_t if_match);
int ccl_catalog_gather(struct coord_cluster *self, const int64_t *after, bool trusted_only,
                       struct seen_entry **entries, size_t *count, int64_t *newest, bool *full,
                       size_t *answered);
void ccl_free_seen(struct seen_entry *entries, size_t count);
void ccl_catalog_repair(struct coord_cluster *self, const struct seen_entry *entries, size_t count,
                        uint32_t mask);
void ccl_catalog_poll(struct coord_cluster *self);
void ccl_catalog_gc(struct coord_cluster *self);

/* coord_cluster_history.c */
bool ccl_shares_history(struct coord *coord);
void ccl_history_queued(struct coord *coord);
void ccl_history_flush(struct coord_cluster *self);
void ccl_history_read(struct coord_cluster *self);
void ccl_feed_trim(struct coord_cluster *self);

/* coord_cluster_members.c */
void ccl_heartbeat(struct coord_cluster *self);
bool ccl_ordinal_held(struct coord_cluster *self, unsigned *ordinal);
void ccl_mark_departed_runs(struct coord_cluster *self);

/* coord_cluster_repair.c */
void ccl_note_trust(struct coord_cluster *self, const bool *answered, const bool *trusted,
                    const uint64_t *generations);
void ccl_round_generations(struct coord_cluster *self, const struct nodeset_round *round,
                           uint64_t *generations);
bool ccl_node_trusted(struct coord_cluster *self, size_t i, uint64_t generation);
void ccl_tend_trust(struct coord_cluster *self);

#endif
