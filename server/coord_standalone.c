/*
 * coord_standalone.c - the coordinator of a single instance on SQLite.
 *
 * Fencing counters live in the fences table and are committed before a
 * delivery starts, so tokens keep increasing across restarts and kill -9.
 * Locks only guard against this process racing itself (db_claim_owner()
 * keeps other processes off the database), so they live in memory: a crash
 * drops them together with the runs they guarded. The catalog is the jobs
 * table itself, versioned by a counter in meta.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "coord.h"
#include "db.h"
#include "log.h"

/* Buckets of the lock table; locks held at once are the runs in flight. */
#define LOCK_BUCKETS 1024

/* A held lock: key "job" or "job:T" (per-slot), the claim's nonce and slot. */
struct lock_entry {
    struct lock_entry *next;
    char *key;
    char nonce[33];
    int64_t slot_ms;
    int64_t expires_boot_ms;
};

struct coord_standalone {
    struct coord base;
    struct db *db; /* borrowed */
    char *instance_id;
    char *advertise_url;
    int64_t started_at_ms;
    pthread_mutex_t lock;         /* guards buckets */
    pthread_mutex_t catalog_lock; /* the catalog lock: check and write as one step */
    struct lock_entry *buckets[LOCK_BUCKETS];
};

int64_t coord_mint_token(int64_t highest_seen, unsigned ordinal)
{
    int64_t counter = (highest_seen >> COORD_ORDINAL_BITS) + 1;
    int64_t token;

    if (highest_seen < 0 || ordinal >= (1u << COORD_ORDINAL_BITS))
        return -1;
    if (counter >= COORD_TOKEN_MAX >> COORD_ORDINAL_BITS)
        return -1;
    token = (counter << COORD_ORDINAL_BITS) + (int64_t)ordinal;
    return token;
}

void coord_free(struct coord *coord)
{
    if (coord != NULL)
        coord->ops->destroy(coord);
}

static struct coord_standalone *from_base(struct coord *coord)
{
    return (struct coord_standalone *)coord;
}

static unsigned bucket_of(const char *key)
{
    return (unsigned)(cf_fnv1a(CF_FNV1A_START, key) % LOCK_BUCKETS);
}

static void lock_key(const struct coord_claim *claim, char *key, size_t len)
{
    if (claim->per_slot)
        snprintf(key, len, "%s:%lld", claim->job, (long long)claim->slot_ms);
    else
        snprintf(key, len, "%s", claim->job);
}

/* Finds the live lock under key; expired entries are dropped on the way. */
static struct lock_entry **find_lock(struct coord_standalone *self, const char *key, int64_t now)
{
    struct lock_entry **link = &self->buckets[bucket_of(key)];

    while (*link != NULL) {
        struct lock_entry *entry = *link;

        if (entry->expires_boot_ms <= now) {
            *link = entry->next;
            free(entry->key);
            free(entry);
            continue;
        }
        if (strcmp(entry->key, key) == 0)
            return link;
        link = &entry->next;
    }
    return link;
}

/* Claims one firing inside the batch transaction; the lock table mutex is held. */
static void claim_one(struct coord_standalone *self, struct coord_claim *claim, int64_t now)
{
    char key[RUN_ID_MAX + 32];
    struct lock_entry **link, *entry;
    int64_t highest, last, token;

    claim->result = CF_ERR_DB;
    claim->busy_in_flight = false;
    lock_key(claim, key, sizeof(key));
    link = find_lock(self, key, now);
    if (*link != NULL) {
        claim->result = CF_ERR_BUSY;
        claim->busy_slot_ms = (*link)->slot_ms;
        /* Claimed and committed in one transaction: a holder is a run in flight. */
        claim->busy_in_flight = (*link)->slot_ms != claim->slot_ms;
        return;
    }
    if (db_fence_read(self->db, claim->job, &highest, &last) != CF_OK)
        return;
    if (claim->advance && last >= claim->slot_ms) {
        claim->result = CF_ERR_FIRED;
        return;
    }
    token = coord_mint_token(highest, 0);
    if (token < 0) {
        log_error("fencing token space exhausted", "job=%s", claim->job);
        return;
    }
    entry = calloc(1, sizeof(*entry));
    if (entry == NULL || (entry->key = strdup(key)) == NULL ||
        cf_random_hex(entry->nonce, 16) != CF_OK) {
        if (entry != NULL)
            free(entry->key);
        free(entry);
        claim->result = CF_ERR_NOMEM;
        return;
    }
    if (db_fence_commit(self->db, claim->job, token, claim->slot_ms, claim->advance) != CF_OK) {
        free(entry->key);
        free(entry);
        return;
    }
    entry->slot_ms = claim->slot_ms;
    entry->expires_boot_ms = now + claim->lease_ms;
    entry->next = NULL;
    *link = entry;
    memcpy(claim->nonce, entry->nonce, sizeof(claim->nonce));
    claim->token = token;
    claim->valid_until_boot_ms = entry->expires_boot_ms;
    claim->result = CF_OK;
}

/* Drops the lock entry of claims that failed to commit, so they do not block the next try. */
static void drop_lock(struct coord_standalone *self, const struct coord_claim *claim, int64_t now)
{
    char key[RUN_ID_MAX + 32];
    struct lock_entry **link, *entry;

    lock_key(claim, key, sizeof(key));
    link = find_lock(self, key, now);
    entry = *link;
    if (entry == NULL || strcmp(entry->nonce, claim->nonce) != 0)
        return;
    *link = entry->next;
    free(entry->key);
    free(entry);
}

static int standalone_claim(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_standalone *self = from_base(coord);
    int64_t now = cf_boot_ms();
    int ret;

    ret = db_begin(self->db);
    if (ret != CF_OK) {
        for (size_t i = 0; i < n; i++)
            claims[i].result = ret;
        return ret;
    }
    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < n; i++)
        claim_one(self, &claims[i], now);
    ret = db_commit(self->db);
    if (ret != CF_OK) {
        /* Nothing was committed: no token may be used and no lock kept. */
        for (size_t i = 0; i < n; i++) {
            if (claims[i].result == CF_OK)
                drop_lock(self, &claims[i], now);
            claims[i].result = ret;
        }
    }
    pthread_mutex_unlock(&self->lock);
    return ret;
}

static int standalone_extend(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_standalone *self = from_base(coord);
    int64_t now = cf_boot_ms();

    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < n; i++) {
        char key[RUN_ID_MAX + 32];
        struct lock_entry *entry;

        lock_key(&claims[i], key, sizeof(key));
        entry = *find_lock(self, key, now);
        if (entry == NULL || strcmp(entry->nonce, claims[i].nonce) != 0) {
            claims[i].result = CF_ERR_LOST;
            continue;
        }
        entry->expires_boot_ms = now + claims[i].lease_ms;
        claims[i].valid_until_boot_ms = entry->expires_boot_ms;
        claims[i].result = CF_OK;
    }
    pthread_mutex_unlock(&self->lock);
    return CF_OK;
}

static void standalone_release(struct coord *coord, const struct coord_claim *claims, size_t n)
{
    struct coord_standalone *self = from_base(coord);
    int64_t now = cf_boot_ms();

    pthread_mutex_lock(&self->lock);
    for (size_t i = 0; i < n; i++)
        drop_lock(self, &claims[i], now);
    pthread_mutex_unlock(&self->lock);
}

static int standalone_catalog_put(struct coord *coord, struct job *job, bool create_only,
                                  int64_t if_match, bool *created)
{
    struct coord_standalone *self = from_base(coord);
    struct job *current = NULL;
    int64_t version;
    int ret;

    pthread_mutex_lock(&self->catalog_lock);
    ret = db_job_get(self->db, job->name, &current);
    if (ret != CF_OK && ret != CF_ERR_NOT_FOUND)
        goto out;
    *created = current == NULL;
    if (create_only && current != NULL) {
        ret = CF_ERR_CONFLICT;
        goto out;
    }
    if ((if_match > 0 && (current == NULL || current->version != if_match)) ||
        (if_match == COORD_IF_EXISTS && current == NULL)) {
        ret = CF_ERR_PRECONDITION;
        goto out;
    }
    job->updated_at_ms = cf_wall_ms();
    job->created_at_ms = current != NULL ? current->created_at_ms : job->updated_at_ms;
    ret = db_job_write_next(self->db, job->name, job, 0, &version);
out:
    pthread_mutex_unlock(&self->catalog_lock);
    job_free(current);
    return ret;
}

static int standalone_catalog_delete(struct coord *coord, const char *name, int64_t if_match)
{
    struct coord_standalone *self = from_base(coord);
    int64_t current, version;
    bool deleted;
    int ret;

    pthread_mutex_lock(&self->catalog_lock);
    ret = db_job_version(self->db, name, &current, &deleted);
    if (ret != CF_OK)
        goto out;
    if (current == 0 || deleted) {
        ret = CF_ERR_NOT_FOUND;
        goto out;
    }
    if (if_match > 0 && current != if_match) {
        ret = CF_ERR_PRECONDITION;
        goto out;
    }
    ret = db_job_write_next(self->db, name, NULL, cf_wall_ms(), &version);
out:
    pthread_mutex_unlock(&self->catalog_lock);
    return ret;
}

/* The local database is the whole history. */
static bool standalone_shares_history(struct coord *coord)
{
    return false;
}

static void standalone_history_queued(struct coord *coord)
{
}

static int standalone_fired_until(struct coord *coord, const char *const *jobs, size_t n,
                                  int64_t *last_ms)
{
    struct coord_standalone *self = from_base(coord);

    return db_fence_last_many(self->db, jobs, n, last_ms);
}

static int64_t standalone_rank(struct coord *coord, const char *job, int64_t slot_ms)
{
    return 0;
}

static int64_t standalone_claim_delay_ms(struct coord *coord, const char *job, int64_t slot_ms)
{
    return 0;
}

static void standalone_set_listener(struct coord *coord, coord_job_changed_fn fn, void *ctx)
{
    /* Only this instance changes the catalog, and its API tells the scheduler itself. */
}

static int standalone_set_url(struct coord *coord, const char *url)
{
    struct coord_standalone *self = from_base(coord);
    char *copy = strdup(url);

    if (copy == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_lock(&self->lock);
    free(self->advertise_url);
    self->advertise_url = copy;
    pthread_mutex_unlock(&self->lock);
    return CF_OK;
}

static unsigned standalone_ordinal(struct coord *coord)
{
    return 0;
}

static bool standalone_ready(struct coord *coord)
{
    return true;
}

static json_t *standalone_status(struct coord *coord)
{
    struct coord_standalone *self = from_base(coord);
    char started[CF_TIME_LEN];
    json_t *member;

    cf_format_time(self->started_at_ms, started);
    pthread_mutex_lock(&self->lock);
    member = json_pack("{s:s, s:s, s:s, s:s, s:i, s:b}", "id", self->instance_id, "url",
                       self->advertise_url, "version", CF_VERSION, "started_at", started, "ordinal",
                       0, "self", 1);
    pthread_mutex_unlock(&self->lock);
    return json_pack("{s:s, s:O, s:[o], s:[], s:n}", "mode", "standalone", "instance", member,
                     "members", member, "nodes", "quorum");
}

static void standalone_destroy(struct coord *coord)
{
    struct coord_standalone *self = from_base(coord);

    for (size_t i = 0; i < LOCK_BUCKETS; i++) {
        struct lock_entry *entry = self->buckets[i];

        while (entry != NULL) {
            struct lock_entry *next = entry->next;

            free(entry->key);
            free(entry);
            entry = next;
        }
    }
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->catalog_lock);
    free(self->instance_id);
    free(self->advertise_url);
    free(self);
}

static const struct coord_ops standalone_ops = {
    .claim = standalone_claim,
    .extend = standalone_extend,
    .release = standalone_release,
    .catalog_put = standalone_catalog_put,
    .catalog_delete = standalone_catalog_delete,
    .shares_history = standalone_shares_history,
    .history_queued = standalone_history_queued,
    .fired_until = standalone_fired_until,
    .claim_delay_ms = standalone_claim_delay_ms,
    .rank = standalone_rank,
    .set_listener = standalone_set_listener,
    .set_url = standalone_set_url,
    .ordinal = standalone_ordinal,
    .ready = standalone_ready,
    .status = standalone_status,
    .destroy = standalone_destroy,
};

int coord_standalone_new(struct db *db, const char *instance_id, const char *advertise_url,
                         struct coord **out)
{
    struct coord_standalone *self = calloc(1, sizeof(*self));

    *out = NULL;
    if (self == NULL)
        return CF_ERR_NOMEM;
    self->base.ops = &standalone_ops;
    self->db = db;
    self->instance_id = strdup(instance_id);
    self->advertise_url = strdup(advertise_url);
    self->started_at_ms = cf_wall_ms();
    pthread_mutex_init(&self->lock, NULL);
    pthread_mutex_init(&self->catalog_lock, NULL);
    if (self->instance_id == NULL || self->advertise_url == NULL) {
        standalone_destroy(&self->base);
        return CF_ERR_NOMEM;
    }
    *out = &self->base;
    return CF_OK;
}
