/*
 * coord_cluster_catalog.c - the cluster coordinator's catalog (DESIGN §4.6):
 * the catalog lock, the local mirror, catalog writes by group commit, the
 * poll, garbage collection of tombstones and catalog repair.
 */

#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "db.h"
#include "log.h"

/* The catalog lock is the claim path on this pseudo-job, which no job name can match. */
#define CATALOG_JOB "__catalog"
/* How long a catalog write waits for the catalog lock. */
#define CATALOG_WAIT_MS 3000
#define CATALOG_PAGE 500
#define TOMBSTONE_TTL_MS (7 * 86400000LL)

/* ---------------------------------------------------------------------- */
/* Catalog (DESIGN §4.6)                                                    */
/* ---------------------------------------------------------------------- */

/* Jitter for retries; not secret. */
static uint64_t random_u64(void)
{
    unsigned char bytes[8];
    uint64_t value = 0;

    if (RAND_bytes(bytes, sizeof(bytes)) == 1)
        memcpy(&value, bytes, sizeof(value));
    return value;
}

/* Takes the catalog lock, retrying within CATALOG_WAIT_MS. */
static int catalog_lock(struct coord_cluster *self, struct coord_claim *claim)
{
    int64_t deadline = cf_boot_ms() + CATALOG_WAIT_MS;

    for (;;) {
        memset(claim, 0, sizeof(*claim));
        claim->job = CATALOG_JOB;
        claim->slot_ms = cf_wall_ms();
        claim->lease_ms = CATALOG_LEASE_MS;
        ccl_claim(&self->base, claim, 1);
        if (claim->result == CF_OK)
            return CF_OK;
        if (claim->result != CF_ERR_BUSY && claim->result != CF_ERR_NO_QUORUM)
            return claim->result;
        if (cf_boot_ms() >= deadline)
            return claim->result == CF_ERR_BUSY ? CF_ERR_TIMEOUT : CF_ERR_NO_QUORUM;
        /* Short: a catalog hold is brief, and losing the race costs one round that writes nothing.
         */
        cf_sleep_ms(2 + (int64_t)(random_u64() % 10));
    }
}

/* The version of a catalog document (live job or tombstone); 0 when unreadable. */
static int64_t doc_version(const json_t *doc)
{
    return json_integer_value(json_object_get(doc, "version"));
}

static bool doc_deleted(const json_t *doc)
{
    return json_object_get(doc, "deleted_at") != NULL;
}

/*
 * Applies a catalog document to the local mirror: 1 when it changed it, 0
 * when the mirror was as new already (or the entry is unusable), -1 on a
 * database error (to be read again).
 */
static int mirror_apply(struct coord_cluster *self, const char *name, const json_t *doc)
{
    int64_t version = doc_version(doc), stored = 0;
    bool deleted = false;

    if (db_job_version(self->db, name, &stored, &deleted) != CF_OK)
        return -1;
    if (version <= stored)
        return 0;
    if (doc_deleted(doc)) {
        int64_t deleted_at = 0;

        cf_parse_time(json_string_value(json_object_get(doc, "deleted_at")), &deleted_at);
        return db_job_store(self->db, name, NULL, version,
                            deleted_at ? deleted_at : cf_wall_ms()) == CF_OK
                   ? 1
                   : -1;
    } else {
        json_t *errors = json_array();
        struct job *job = NULL;
        int changed = 0;

        if (errors != NULL && job_from_json(doc, NULL, true, &job, errors) == CF_OK) {
            changed = db_job_store(self->db, name, job, version, 0) == CF_OK ? 1 : -1;
        } else {
            const char *message =
                json_string_value(json_object_get(json_array_get(errors, 0), "message"));
            char quoted[512];

            log_error("catalog entry not valid here", "job=%s version=%lld error=\"%s\"", name,
                      (long long)version,
                      log_quote(message ? message : "unreadable", quoted, sizeof(quoted)));
        }
        job_free(job);
        json_decref(errors);
        return changed;
    }
}

/*
 * Tells the listener that a job changed. Before there is one, the name is
 * kept and told when it is set: the scheduler loads its jobs from the
 * mirror first, and a change applied between that and set_listener() would
 * otherwise never reach it.
 */
static void notify_job(struct coord_cluster *self, const char *name)
{
    coord_job_changed_fn fn;
    void *ctx;

    pthread_mutex_lock(&self->state_lock);
    fn = self->listener;
    ctx = self->listener_ctx;
    if (fn == NULL) {
        if (self->unheard_count == self->unheard_cap) {
            size_t cap = self->unheard_cap ? self->unheard_cap * 2 : 16;
            char **grown = realloc(self->unheard, cap * sizeof(*grown));

            if (grown != NULL) {
                self->unheard = grown;
                self->unheard_cap = cap;
            }
        }
        if (self->unheard_count < self->unheard_cap &&
            (self->unheard[self->unheard_count] = strdup(name)) != NULL)
            self->unheard_count++;
        else
            log_error("job change lost before the scheduler started", "job=%s", name);
    }
    pthread_mutex_unlock(&self->state_lock);
    if (fn != NULL)
        fn(ctx, name);
}

/*
 * A catalog write read a newer entry than the local mirror holds: apply it
 * now, so that a retry (PATCH re-reads the mirror) or the next GET here sees
 * what the quorum holds without waiting for the poll.
 */
static void catch_up_mirror(struct coord_cluster *self, const char *name, const json_t *current)
{
    if (current != NULL && mirror_apply(self, name, current) > 0)
        notify_job(self, name);
}

/* ---------------------------------------------------------------------- */
/* Catalog writes: group commit (DESIGN §4.6)                              */
/* ---------------------------------------------------------------------- */

/*
 * Concurrent catalog writes of this instance are committed in batches. A
 * caller queues its write and waits; a waiting caller that finds no batch
 * under way takes up to CATALOG_BATCH_MAX queued writes, at most one per job
 * name, and commits them under one hold of the catalog lock:
 *
 *   1. the claim path takes the lock; its committed token t = (c << 16) | o,
 *      o this instance's ordinal;
 *   2. one round reads every name of the batch from every node and raises
 *      the catalog fence to t + ((n - 1) << 16), n the batch size;
 *   3. the existence, If-Match and create-only checks of each write are
 *      made against the newest entry read, and the k-th write that passes
 *      gets version t + (k << 16);
 *   4. one round writes every document to every node; a write succeeds when
 *      Q trusted nodes took it, and goes to the local mirror;
 *   5. the lock is released.
 *
 * Why the versions are safe: steps 3-4 run only after step 2 put the raised
 * fence on a trusted quorum, so every version of the batch is above what any
 * claim committed before this one (the claim read a quorum) and below what
 * any claim starting after step 2 mints (it reads a quorum that holds the
 * raised fence): versions increase in commit order, as a token per write
 * did. Every version keeps this instance's ordinal in its low bits, so a
 * holder that overlapped ours after a broken lease (another ordinal) cannot
 * mint any of them. Each write uses one counter step, as one claim per write
 * did. The checks of step 3 run under the lock, against a quorum read, and no
 * two writes of a batch name one job, so none depends on another's outcome.
 */
#define CATALOG_BATCH_MAX 256
/*
 * How long one hold of the catalog lock may serve batch after batch while
 * writes keep coming, before it is released so that other instances' writes
 * get their turn (they wait up to CATALOG_WAIT_MS for it).
 */
#define CATALOG_HOLD_MS 50

/* One queued catalog write. */
struct catalog_request {
    struct catalog_request *next; /* queue link, under catalog_mutex */
    const char *name;             /* borrowed */
    struct job *job;              /* borrowed; NULL for a delete */
    bool create_only;
    int64_t if_match;
    /* out, set by the committing thread */
    int result;
    bool created;
    bool done; /* under catalog_mutex */
    /* the committing thread's working state */
    json_t *current; /* newest entry on the nodes (new reference), NULL when none */
    char *json;      /* the document to write (owned), NULL when none */
    int64_t version; /* 0: nothing to write */
    int64_t deleted_at_ms;
    int index[MAX_NODES]; /* command index per node, -1 when not sent */
};

/*
 * Step 2: reads the entry of each of the batch's names from every node and
 * raises the catalog fence to top, in one round. CF_OK when Q trusted nodes
 * answered every read and took the raise; each request's current then holds
 * the newest entry seen. CF_ERR_NO_QUORUM otherwise.
 */
static int catalog_read_batch(struct coord_cluster *self, struct catalog_request **batch,
                              size_t count, int64_t top)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char key[KEY_MAX], fence[KEY_MAX], fences[KEY_MAX], top_text[24];
    int raise[MAX_NODES];
    size_t answered = 0;

    ccl_make_key(self, fence, "fence:", CATALOG_JOB);
    ccl_make_key(self, fences, "fences", "");
    snprintf(top_text, sizeof(top_text), "%lld", (long long)top);
    for (size_t node = 0; node < self->n; node++) {
        bool up = nodeset_round_node_up(round, node);

        raise[node] =
            up ? nodeset_round_script(round, node, S_FENCE_RAISE, 2, 5,
                                      (const char *[]){fence, fences, top_text, "0", CATALOG_JOB})
               : -1;
        for (size_t i = 0; i < count; i++) {
            ccl_make_key(self, key, "job:", batch[i]->name);
            batch[i]->index[node] =
                up ? nodeset_round_command(round, node, 2, (const char *[]){"GET", key}, NULL) : -1;
        }
    }
    /* A catalog write is worth a slow fsync on a node: wait as a commit does. */
    nodeset_round_exec_within(round, ccl_wait_at_least(self, COMMIT_WAIT_MS));
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *raised = nodeset_round_reply(round, node, raise[node]);
        bool complete = raised != NULL && raised->type == REDIS_REPLY_INTEGER;

        for (size_t i = 0; i < count; i++) {
            const redisReply *reply = nodeset_round_reply(round, node, batch[i]->index[node]);
            json_t *doc;

            if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
                complete = false;
                continue;
            }
            if (reply->type != REDIS_REPLY_STRING)
                continue;
            doc = json_loadb(reply->str, reply->len, 0, NULL);
            if (doc != NULL &&
                (batch[i]->current == NULL || doc_version(doc) > doc_version(batch[i]->current))) {
                json_decref(batch[i]->current);
                batch[i]->current = doc;
            } else {
                json_decref(doc);
            }
        }
        if (complete && ccl_node_trusted(self, node, nodeset_round_generation(round, node)))
            answered++;
    }
    nodeset_round_end(round);
    return answered >= self->quorum ? CF_OK : CF_ERR_NO_QUORUM;
}

/*
 * Step 3 for one write: its checks against the newest entry, then, when they
 * pass, its document with the given version. Sets request->result (CF_OK
 * with json set, or why not).
 */
static void catalog_judge(struct catalog_request *request, int64_t version)
{
    const json_t *current = request->current;
    bool exists = current != NULL && !doc_deleted(current);
    int64_t now = cf_wall_ms();
    json_t *doc;

    if (request->job == NULL) {
        char when[CF_TIME_LEN];

        if (!exists) {
            request->result = CF_ERR_NOT_FOUND;
            return;
        }
        if (request->if_match > 0 && doc_version(current) != request->if_match) {
            request->result = CF_ERR_PRECONDITION;
            return;
        }
        request->deleted_at_ms = now;
        doc = json_pack("{s:s, s:I, s:s}", "name", request->name, "version", (json_int_t)version,
                        "deleted_at", cf_format_time(now, when));
    } else {
        struct job *job = request->job;

        request->created = !exists;
        if (request->create_only && exists) {
            request->result = CF_ERR_CONFLICT;
            return;
        }
        if ((request->if_match > 0 && (!exists || doc_version(current) != request->if_match)) ||
            (request->if_match == COORD_IF_EXISTS && !exists)) {
            request->result = CF_ERR_PRECONDITION;
            return;
        }
        job->version = version;
        job->updated_at_ms = now;
        job->created_at_ms = now;
        if (exists) {
            int64_t created_at = 0;

            if (cf_parse_time(json_string_value(json_object_get(current, "created_at")),
                              &created_at) == CF_OK)
                job->created_at_ms = created_at;
        }
        doc = job_to_json(job, true);
    }
    request->json = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (request->json == NULL) {
        request->result = CF_ERR_NOMEM;
        return;
    }
    request->version = version;
    request->result = CF_OK;
}

/*
 * Step 4: writes every judged document of the batch to every node, and
 * announces them once. Each such request's result becomes CF_OK when Q
 * trusted nodes hold its document, CF_ERR_NO_QUORUM otherwise (the write may
 * still surface later through read repair, as with any quorum write).
 */
static void catalog_write_batch(struct coord_cluster *self, struct catalog_request **batch,
                                size_t count)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char key[KEY_MAX], jobs[KEY_MAX], version_text[24], ttl[24];
    const char *announced = NULL;

    ccl_make_key(self, jobs, "jobs", "");
    for (size_t node = 0; node < self->n; node++) {
        bool up = nodeset_round_node_up(round, node);

        for (size_t i = 0; i < count; i++) {
            struct catalog_request *request = batch[i];

            request->index[node] = -1;
            if (!up || request->version == 0)
                continue;
            ccl_make_key(self, key, "job:", request->name);
            snprintf(version_text, sizeof(version_text), "%lld", (long long)request->version);
            snprintf(ttl, sizeof(ttl), "%lld",
                     request->job == NULL ? (long long)TOMBSTONE_TTL_MS : 0LL);
            request->index[node] = nodeset_round_script(
                round, node, S_CATALOG_WRITE, 2, 6,
                (const char *[]){key, jobs, request->name, version_text, request->json, ttl});
            announced = request->name;
        }
        if (up && announced != NULL)
            nodeset_round_command(round, node, 3,
                                  (const char *[]){"PUBLISH", self->catalog_channel, announced},
                                  NULL);
    }
    nodeset_round_exec_within(round, ccl_wait_at_least(self, COMMIT_WAIT_MS));
    for (size_t i = 0; i < count; i++) {
        size_t acked = 0;

        if (batch[i]->version == 0)
            continue;
        for (size_t node = 0; node < self->n; node++) {
            const redisReply *reply = nodeset_round_reply(round, node, batch[i]->index[node]);

            if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer >= 0 &&
                ccl_node_trusted(self, node, nodeset_round_generation(round, node)))
                acked++;
        }
        batch[i]->result = acked >= self->quorum ? CF_OK : CF_ERR_NO_QUORUM;
    }
    nodeset_round_end(round);
}

/* Stores the batch's written documents in the local mirror, in one transaction. */
static void catalog_mirror_batch(struct coord_cluster *self, struct catalog_request **batch,
                                 size_t count)
{
    struct db_job_change changes[CATALOG_BATCH_MAX];
    size_t stored = 0;
    int ret;

    for (size_t i = 0; i < count; i++)
        if (batch[i]->version != 0 && batch[i]->result == CF_OK)
            changes[stored++] = (struct db_job_change){batch[i]->name, batch[i]->job,
                                                       batch[i]->version, batch[i]->deleted_at_ms};
    ret = db_job_store_many(self->db, changes, stored);
    if (ret == CF_OK)
        return;
    for (size_t i = 0; i < count; i++)
        if (batch[i]->version != 0 && batch[i]->result == CF_OK)
            batch[i]->result = ret;
}

/* Releases the catalog lock if this instance holds it; committing thread only. */
static void catalog_unlock(struct coord_cluster *self)
{
    if (self->catalog_held)
        ccl_release(&self->base, &self->catalog_claim, 1);
    self->catalog_held = false;
}

/*
 * Commits a batch of count writes (steps 1-5 above); sets every request's
 * result. Committing thread only. The lock stays held for the next batch
 * (see catalog_submit), unless an error makes its state uncertain.
 */
static void catalog_commit_batch(struct coord_cluster *self, struct catalog_request **batch,
                                 size_t count)
{
    const int64_t step = (int64_t)1 << COORD_ORDINAL_BITS;
    int64_t version;
    int ret;

    if (self->catalog_held &&
        (cf_boot_ms() - self->catalog_held_since_ms >= CATALOG_HOLD_MS ||
         self->catalog_claim.valid_until_boot_ms - cf_boot_ms() < CATALOG_LEASE_MS / 2))
        catalog_unlock(self);
    if (!self->catalog_held) {
        ret = catalog_lock(self, &self->catalog_claim);
        if (ret != CF_OK)
            goto out;
        self->catalog_held = true;
        self->catalog_held_since_ms = cf_boot_ms();
        self->catalog_next_version = self->catalog_claim.token;
    }
    if (self->catalog_next_version > COORD_TOKEN_MAX - (int64_t)count * step) {
        ret = CF_ERR_INVALID; /* the token space is exhausted */
        goto out_unlock;
    }
    ret = catalog_read_batch(self, batch, count,
                             self->catalog_next_version + ((int64_t)count - 1) * step);
    if (ret != CF_OK)
        goto out_unlock;
    version = self->catalog_next_version;
    for (size_t i = 0; i < count; i++) {
        catch_up_mirror(self, batch[i]->name, batch[i]->current);
        catalog_judge(batch[i], version);
        if (batch[i]->result == CF_OK)
            version += step;
    }
    self->catalog_next_version = version;
    /* The checks hold only while the lock does: at least half the lease must be left. */
    if (self->catalog_claim.valid_until_boot_ms - cf_boot_ms() < CATALOG_LEASE_MS / 2) {
        ret = CF_ERR_LOST;
        goto out_unlock;
    }
    catalog_write_batch(self, batch, count);
    catalog_mirror_batch(self, batch, count);
    return;
out_unlock:
    catalog_unlock(self);
out:
    for (size_t i = 0; i < count; i++)
        batch[i]->result = ret;
}

/*
 * Queues request and waits until a batch committed it, committing batches
 * itself when none is under way. Returns request->result.
 */
static int catalog_submit(struct coord_cluster *self, struct catalog_request *request)
{
    struct catalog_request *batch[CATALOG_BATCH_MAX];

    for (size_t node = 0; node < MAX_NODES; node++)
        request->index[node] = -1;
    pthread_mutex_lock(&self->catalog_mutex);
    *self->catalog_tail = request;
    self->catalog_tail = &request->next;
    while (!request->done) {
        struct catalog_request **link = &self->catalog_queue;
        size_t count = 0;

        if (self->catalog_committing) {
            pthread_cond_wait(&self->catalog_cond, &self->catalog_mutex);
            continue;
        }
        /* Take the queued writes in order, leaving a second write of a name to a later batch. */
        while (*link != NULL && count < CATALOG_BATCH_MAX) {
            struct catalog_request *queued = *link;
            bool repeated = false;

            for (size_t i = 0; i < count && !repeated; i++)
                repeated = strcmp(batch[i]->name, queued->name) == 0;
            if (repeated) {
                link = &queued->next;
                continue;
            }
            *link = queued->next;
            if (self->catalog_tail == &queued->next)
                self->catalog_tail = link;
            queued->next = NULL;
            batch[count++] = queued;
        }
        self->catalog_committing = true;
        pthread_mutex_unlock(&self->catalog_mutex);
        catalog_commit_batch(self, batch, count);
        pthread_mutex_lock(&self->catalog_mutex);
        for (size_t i = 0; i < count; i++) {
            json_decref(batch[i]->current);
            batch[i]->current = NULL;
            free(batch[i]->json);
            batch[i]->json = NULL;
            batch[i]->done = true;
        }
        pthread_cond_broadcast(&self->catalog_cond);
        /* The lock stays for writes queued meanwhile: their caller commits them next. */
        if (self->catalog_queue == NULL && self->catalog_held) {
            pthread_mutex_unlock(&self->catalog_mutex);
            catalog_unlock(self);
            pthread_mutex_lock(&self->catalog_mutex);
        }
        self->catalog_committing = false;
        pthread_cond_broadcast(&self->catalog_cond);
    }
    pthread_mutex_unlock(&self->catalog_mutex);
    return request->result;
}

int ccl_catalog_put(struct coord *coord, struct job *job, bool create_only, int64_t if_match,
                    bool *created)
{
    struct catalog_request request = {
        .name = job->name, .job = job, .create_only = create_only, .if_match = if_match};
    int ret = catalog_submit(ccl_from_base(coord), &request);

    *created = request.created;
    return ret;
}

int ccl_catalog_delete(struct coord *coord, const char *name, int64_t if_match)
{
    struct catalog_request request = {.name = name, .if_match = if_match};

    return catalog_submit(ccl_from_base(coord), &request);
}

static int compare_seen(const void *a, const void *b)
{
    return strcmp(((const struct seen_entry *)a)->name, ((const struct seen_entry *)b)->name);
}

/*
 * Reads catalog entries from every node (those above after[node], or all with
 * after NULL), keeps the newest per job (sorted by name) in *entries.
 * *full says whether some node returned a whole page (more may follow).
 */
int ccl_catalog_gather(struct coord_cluster *self, const int64_t *after, bool trusted_only,
                       struct seen_entry **entries, size_t *count, int64_t *newest, bool *full,
                       size_t *answered)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char jobs[KEY_MAX], prefix[KEY_MAX], since[MAX_NODES][24];
    const char *limit = after != NULL ? "500" : "1000000";
    int index[MAX_NODES];
    struct seen_entry *list = NULL;
    size_t n = 0, cap = 0;
    int ret = CF_OK;

    *full = false;
    *answered = 0;
    ccl_make_key(self, jobs, "jobs", "");
    ccl_make_key(self, prefix, "job:", "");
    for (size_t node = 0; node < self->n; node++) {
        newest[node] = after != NULL ? after[node] : 0;
        index[node] = -1;
        if (!nodeset_round_node_up(round, node) ||
            (trusted_only && !ccl_node_trusted(self, node, nodeset_round_generation(round, node))))
            continue;
        snprintf(since[node], sizeof(since[node]), "%lld", (long long)newest[node]);
        index[node] = nodeset_round_script(round, node, S_CATALOG_SINCE, 1, 4,
                                           (const char *[]){jobs, since[node], limit, prefix});
    }
    nodeset_round_exec(round);
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, index[node]);

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
            continue;
        (*answered)++;
        if (after != NULL && reply->elements / 3 >= CATALOG_PAGE)
            *full = true;
        for (size_t k = 0; k + 2 < reply->elements; k += 3) {
            const redisReply *name = reply->element[k], *json = reply->element[k + 2];
            int64_t version = ccl_reply_int(reply->element[k + 1], 0);
            struct seen_entry *entry = NULL;

            if (name->type != REDIS_REPLY_STRING || version <= 0)
                continue;
            if (version > newest[node])
                newest[node] = version;
            if (json->type != REDIS_REPLY_STRING || json->len == 0 ||
                name->len >= sizeof(list->name))
                continue;
            for (size_t e = 0; e < n; e++) {
                if (strcmp(list[e].name, name->str) == 0) {
                    entry = &list[e];
                    break;
                }
            }
            if (entry == NULL) {
                if (n == cap) {
                    size_t grown = cap ? cap * 2 : 64;
                    struct seen_entry *bigger = realloc(list, grown * sizeof(*list));

                    if (bigger == NULL) {
                        ret = CF_ERR_NOMEM;
                        goto out;
                    }
                    list = bigger;
                    cap = grown;
                }
                entry = &list[n++];
                memset(entry, 0, sizeof(*entry));
                snprintf(entry->name, sizeof(entry->name), "%s", name->str);
            }
            if (version > entry->version) {
                char *copy = strdup(json->str);

                if (copy == NULL) {
                    ret = CF_ERR_NOMEM;
                    goto out;
                }
                free(entry->json);
                entry->json = copy;
                entry->version = version;
                entry->holders = 0;
            }
            if (version == entry->version)
                entry->holders |= 1u << node;
        }
    }
out:
    nodeset_round_end(round);
    if (ret != CF_OK) {
        for (size_t e = 0; e < n; e++)
            free(list[e].json);
        free(list);
        return ret;
    }
    if (n > 1)
        qsort(list, n, sizeof(*list), compare_seen);
    *entries = list;
    *count = n;
    return CF_OK;
}

void ccl_free_seen(struct seen_entry *entries, size_t count)
{
    for (size_t e = 0; e < count; e++)
        free(entries[e].json);
    free(entries);
}

/* Writes entries onto the nodes in mask that do not hold them (read repair). */
void ccl_catalog_repair(struct coord_cluster *self, const struct seen_entry *entries, size_t count,
                        uint32_t mask)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char key[KEY_MAX], jobs[KEY_MAX], version[24], ttl[24];
    size_t repaired = 0;

    ccl_make_key(self, jobs, "jobs", "");
    snprintf(ttl, sizeof(ttl), "%lld", (long long)TOMBSTONE_TTL_MS);
    for (size_t e = 0; e < count; e++) {
        json_t *doc;
        bool deleted;

        /* Most entries are on every node already: only those that lag are parsed. */
        if ((mask & ~entries[e].holders) == 0)
            continue;
        doc = json_loads(entries[e].json, 0, NULL);
        deleted = doc != NULL && doc_deleted(doc);
        json_decref(doc);
        ccl_make_key(self, key, "job:", entries[e].name);
        snprintf(version, sizeof(version), "%lld", (long long)entries[e].version);
        for (size_t node = 0; node < self->n; node++) {
            if (!(mask & (1u << node)) || (entries[e].holders & (1u << node)) ||
                !nodeset_round_node_up(round, node))
                continue;
            nodeset_round_script(round, node, S_CATALOG_WRITE, 2, 6,
                                 (const char *[]){key, jobs, entries[e].name, version,
                                                  entries[e].json, deleted ? ttl : "0"});
            repaired++;
        }
    }
    if (repaired > 0) {
        nodeset_round_exec(round);
        log_debug("catalog read repair", "writes=%zu", repaired);
    }
    nodeset_round_end(round);
}

/* Brings the local mirror up to the newest catalog entries on the nodes. */
void ccl_catalog_poll(struct coord_cluster *self)
{
    bool full = true;

    for (int pages = 0; full && pages < 1000 && !atomic_load(&self->stopping); pages++) {
        struct seen_entry *entries = NULL;
        int64_t newest[MAX_NODES];
        size_t count = 0, answered = 0;
        uint32_t all = 0;
        bool failed = false;

        if (ccl_catalog_gather(self, self->catalog_cursor, false, &entries, &count, newest, &full,
                               &answered) != CF_OK)
            return;
        for (size_t node = 0; node < self->n; node++)
            all |= 1u << node;
        for (size_t e = 0; e < count; e++) {
            json_t *doc = json_loads(entries[e].json, 0, NULL);
            int applied = doc != NULL ? mirror_apply(self, entries[e].name, doc) : 0;

            if (applied > 0) {
                log_info("catalog change applied", "job=%s version=%lld", entries[e].name,
                         (long long)entries[e].version);
                notify_job(self, entries[e].name);
            }
            failed |= applied < 0;
            json_decref(doc);
        }
        ccl_catalog_repair(self, entries, count, all);
        ccl_free_seen(entries, count);
        /* After a database error the same entries are read again next time. */
        if (failed)
            return;
        memcpy(self->catalog_cursor, newest, sizeof(newest));
    }
}

/* Drops index entries of expired tombstones on every node. */
void ccl_catalog_gc(struct coord_cluster *self)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char jobs[KEY_MAX], prefix[KEY_MAX];

    ccl_make_key(self, jobs, "jobs", "");
    ccl_make_key(self, prefix, "job:", "");
    for (size_t node = 0; node < self->n; node++)
        if (nodeset_round_node_up(round, node))
            nodeset_round_script(round, node, S_CATALOG_GC, 1, 2, (const char *[]){jobs, prefix});
    nodeset_round_exec(round);
    nodeset_round_end(round);
}
