/*
 * coord_cluster_claims.c - the cluster coordinator's claims (DESIGN §4.2):
 * claim, extend, release, fired_until, the releases retried in the
 * background, and the rank-staggered claim delay (§4.4).
 */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "log.h"

#define RELEASES_MAX 100000
#define RELEASE_BACKOFF_FIRST_MS 100
#define RELEASE_BACKOFF_MAX_MS 2000
/*
 * How long a stopping coordinator keeps retrying the releases nodes have
 * not confirmed: a lock left behind would keep every peer off its job
 * until the lease ran out.
 */
#define STOP_RELEASE_MS 2000

/* ---------------------------------------------------------------------- */
/* Claims (DESIGN §4.2)                                                     */
/* ---------------------------------------------------------------------- */

static void lock_key(const struct coord_cluster *self, const struct coord_claim *claim, char *out)
{
    if (claim->per_slot)
        snprintf(out, KEY_MAX, "%slock:%s:%lld", self->prefix, claim->job,
                 (long long)claim->slot_ms);
    else
        ccl_make_key(self, out, "lock:", claim->job);
}

/* Per-claim working state of one batch. */
struct claim_work {
    char lock[KEY_MAX];
    char fence[KEY_MAX];
    char value[64];
    char slot[24];
    char lease[24];
    int index[MAX_NODES];         /* command index per node, -1 when not sent */
    bool held[MAX_NODES];         /* the claim round set our lock there */
    bool held_trusted[MAX_NODES]; /* ... on a node holding its trust marker */
    bool new_fence[MAX_NODES];    /* ... and found no fence for the job */
    bool sent[MAX_NODES]; /* the claim reached the node and may have set our lock (no answer) */
    bool entered;         /* a nonce drawn and the claim registered for minting: it goes out */
    bool committing;
    bool release;
};

/* Fills the keys and argument strings every script about claim needs. */
static void claim_work_init(const struct coord_cluster *self, const struct coord_claim *claim,
                            struct claim_work *work)
{
    lock_key(self, claim, work->lock);
    ccl_make_key(self, work->fence, "fence:", claim->job);
    snprintf(work->value, sizeof(work->value), "%s:%lld", claim->nonce, (long long)claim->slot_ms);
    snprintf(work->slot, sizeof(work->slot), "%lld", (long long)claim->slot_ms);
    snprintf(work->lease, sizeof(work->lease), "%lld", (long long)claim->lease_ms);
}

/* Lease minus the clock drift allowance of DESIGN §4.2: lease/100 + 2 ms. */
static int64_t lease_validity(int64_t lease_ms)
{
    return lease_ms - (lease_ms / 100 + 2);
}

/* The T of a lock value "<nonce>:<T>", 0 when unreadable. */
static int64_t holder_slot(const redisReply *value)
{
    const char *colon;

    if (value == NULL || value->type != REDIS_REPLY_STRING)
        return 0;
    colon = strrchr(value->str, ':');
    return colon != NULL ? strtoll(colon + 1, NULL, 10) : 0;
}

/* Queues the release of every lock the claim holds (command indexes in work->index). */
static void queue_release(struct coord_cluster *self, struct nodeset_round *round,
                          struct claim_work *work)
{
    for (size_t node = 0; node < self->n; node++) {
        work->index[node] = -1;
        if ((work->held[node] || work->sent[node]) && nodeset_round_node_up(round, node))
            work->index[node] = nodeset_round_script(round, node, S_RELEASE, 1, 2,
                                                     (const char *[]){work->lock, work->value});
    }
}

/* After the release round: hands the nodes that did not confirm to the background retry. */
static void retry_unreleased(struct coord_cluster *self, struct nodeset_round *round,
                             const struct claim_work *work, int64_t lease_ms)
{
    struct pending_release *entry;
    uint32_t nodes = 0;

    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, work->index[node]);

        if ((work->held[node] || work->sent[node]) &&
            (reply == NULL || reply->type != REDIS_REPLY_INTEGER))
            nodes |= 1u << node;
    }
    if (nodes == 0)
        return;
    entry = calloc(1, sizeof(*entry));
    if (entry == NULL)
        return; /* the lease expires on its own */
    memcpy(entry->lock, work->lock, sizeof(entry->lock));
    memcpy(entry->value, work->value, sizeof(entry->value));
    entry->nodes = nodes;
    entry->expires_boot_ms = cf_boot_ms() + lease_ms;
    entry->backoff_ms = RELEASE_BACKOFF_FIRST_MS;
    entry->next_try_boot_ms = cf_boot_ms() + entry->backoff_ms;
    pthread_mutex_lock(&self->release_lock);
    if (self->release_count < RELEASES_MAX) {
        entry->next = self->releases;
        self->releases = entry;
        self->release_count++;
        entry = NULL;
    }
    pthread_mutex_unlock(&self->release_lock);
    free(entry);
}

/*
 * Background thread: retries the releases nodes have not confirmed yet,
 * waiting wait_ms for each node. With wait_ms 0 (the regular pass), only
 * the entries whose backoff has passed are sent, each waiting
 * COMMIT_WAIT_MS; a stop sends them all. Returns whether some are still
 * unconfirmed.
 */
bool ccl_retry_releases(struct coord_cluster *self, int64_t wait_ms)
{
    struct pending_release *list, *entry, *keep = NULL;
    struct nodeset_round *round;
    int(*index)[MAX_NODES];
    size_t n = 0, kept = 0;
    int64_t now = cf_boot_ms();

    pthread_mutex_lock(&self->release_lock);
    list = self->releases;
    n = self->release_count;
    self->releases = NULL;
    self->release_count = 0;
    pthread_mutex_unlock(&self->release_lock);
    if (list == NULL)
        return false;
    index = calloc(n, sizeof(*index));
    round = nodeset_round_begin(self->ns);
    entry = list;
    for (size_t i = 0; index != NULL && i < n; i++, entry = entry->next) {
        /* Each entry waits for its backoff, except at the stop (wait_ms given). */
        bool due = wait_ms > 0 || entry->next_try_boot_ms <= now;

        for (size_t node = 0; node < self->n; node++) {
            index[i][node] = -1;
            if (due && (entry->nodes & (1u << node)) && nodeset_round_node_up(round, node))
                index[i][node] = nodeset_round_script(round, node, S_RELEASE, 1, 2,
                                                      (const char *[]){entry->lock, entry->value});
        }
    }
    nodeset_round_exec_within(round, wait_ms > 0 ? wait_ms : COMMIT_WAIT_MS);
    entry = list;
    for (size_t i = 0; index != NULL && i < n; i++, entry = entry->next) {
        bool tried = false;

        for (size_t node = 0; node < self->n; node++) {
            const redisReply *reply = nodeset_round_reply(round, node, index[i][node]);

            tried |= index[i][node] >= 0;
            if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
                entry->nodes &= ~(1u << node);
        }
        if (tried) {
            entry->backoff_ms = entry->backoff_ms * 2 > RELEASE_BACKOFF_MAX_MS
                                    ? RELEASE_BACKOFF_MAX_MS
                                    : entry->backoff_ms * 2;
            entry->next_try_boot_ms = cf_boot_ms() + entry->backoff_ms;
        }
    }
    nodeset_round_end(round);
    free(index);
    while (list != NULL) {
        entry = list;
        list = list->next;
        if (entry->nodes == 0 || entry->expires_boot_ms <= now) {
            free(entry);
            continue;
        }
        entry->next = keep;
        keep = entry;
        kept++;
    }
    if (keep == NULL)
        return false;
    pthread_mutex_lock(&self->release_lock);
    for (entry = keep; entry->next != NULL; entry = entry->next)
        ;
    entry->next = self->releases;
    self->releases = keep;
    self->release_count += kept;
    pthread_mutex_unlock(&self->release_lock);
    return true;
}

/*
 * At the stop, after the scheduler released its last leases: retries the
 * releases some node has not confirmed (a node slow on a loaded machine, or
 * reconnecting) for up to STOP_RELEASE_MS, each round waiting longer than
 * the node timeout, instead of leaving those locks to their lease.
 */
void ccl_flush_releases(struct coord_cluster *self)
{
    int64_t until = cf_boot_ms() + STOP_RELEASE_MS;
    size_t left;

    while (ccl_retry_releases(self, COMMIT_WAIT_MS) && cf_boot_ms() < until) {
        nodeset_maintain(self->ns);
        nodeset_wait_message(self->ns, PUBLISH_MS);
    }
    pthread_mutex_lock(&self->release_lock);
    left = self->release_count;
    pthread_mutex_unlock(&self->release_lock);
    if (left > 0)
        log_warn("locks not released at the stop, left to their lease", "count=%zu", left);
}

/*
 * The "running" record of the run a claim starts, as JSON for the commit
 * round (new string, free()); NULL when the claim starts no run (or out of
 * memory: the record then comes only from the scheduler's outbox).
 */
static char *start_record(const struct coord_cluster *self, const struct coord_claim *claim)
{
    struct run run = {0};
    json_t *doc;
    char *text;

    if (claim->run_id[0] == '\0')
        return NULL;
    memcpy(run.id, claim->run_id, sizeof(run.id));
    run.job = (char *)claim->job;
    run.trigger = claim->trigger;
    run.retry_of = (char *)claim->retry_of;
    run.scheduled_at_ms = claim->slot_ms;
    run.started_at_ms = claim->started_at_ms;
    run.status = RUN_RUNNING;
    run.fencing_token = claim->token;
    run.instance = self->instance_id;
    doc = run_to_json(&run);
    text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

/* Whether the ordinal a claim round began with is still this instance's (a pause may end it). */
static bool still_ours(struct coord_cluster *self, unsigned ordinal)
{
    unsigned now;

    return ccl_ordinal_held(self, &now) && now == ordinal;
}

/*
 * Reads the claim round's replies for one claim and decides; returns whether to commit.
 *
 * A lock taken by another slot is a run that may be in flight only when its
 * holder committed and may still hold it on a quorum: the nodes answering
 * that a committed holder of another slot has the lock, with the nodes that
 * did not answer (they may hold it unseen), reach Q. A holder that never
 * committed (its instance paused or gone between the two rounds, or claims
 * that split the nodes) or a committed run's leftover on a minority (a
 * release that did not reach every node) is no run in flight: such a BUSY
 * says busy_in_flight false and the slot is retried shortly.
 */
static bool judge_claim(struct coord_cluster *self, struct nodeset_round *round,
                        struct coord_claim *claim, struct claim_work *work, int64_t t0,
                        unsigned ordinal, bool *answered, bool *trusted)
{
    size_t ok_trusted = 0, held_by_run = 0, unseen = 0;
    int64_t highest = 0, run_slot = 0;
    bool fired = false, busy = false;

    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, work->index[node]);
        const redisReply *status = ccl_element(reply, 0);
        int64_t token = ccl_reply_int(ccl_element(reply, 1), -1);
        bool node_trusted_now = ccl_reply_int(ccl_element(reply, 2), 0) == 1;

        if (status == NULL || token < 0) {
            unseen++;
            continue;
        }
        answered[node] = true;
        trusted[node] = node_trusted_now;
        /* A node that answered did or did not set our lock: nothing to guess there. */
        work->sent[node] = false;
        if (ccl_reply_is(status, "FIRED")) {
            int64_t last = ccl_reply_int(ccl_element(reply, 3), claim->slot_ms);

            if (!fired || last > claim->fired_ms)
                claim->fired_ms = last;
            fired = true;
        } else if (ccl_reply_is(status, "OK")) {
            work->held[node] = true;
            work->held_trusted[node] = node_trusted_now;
            work->new_fence[node] = ccl_reply_int(ccl_element(reply, 3), 1) == 0;
            if (node_trusted_now)
                ok_trusted++;
            if (token > highest)
                highest = token;
        } else if (ccl_reply_is(status, "BUSY")) {
            int64_t slot = holder_slot(ccl_element(reply, 3));
            bool committed = ccl_reply_int(ccl_element(reply, 4), 0) == 1;

            if (!busy || slot < claim->busy_slot_ms)
                claim->busy_slot_ms = slot;
            busy = true;
            if (committed && slot != claim->slot_ms) {
                held_by_run++;
                if (run_slot == 0 || slot < run_slot)
                    run_slot = slot;
            }
        }
    }
    if (busy && run_slot != 0 && held_by_run + unseen >= self->quorum) {
        claim->busy_in_flight = true;
        claim->busy_slot_ms = run_slot;
    }
    if (fired) {
        claim->result = CF_ERR_FIRED;
    } else if (ok_trusted >= self->quorum &&
               t0 + lease_validity(claim->lease_ms) - cf_boot_ms() > 0 &&
               still_ours(self, ordinal)) {
        claim->token = minting_mint(self->minting, claim->job, highest, ordinal);
        if (claim->token > 0)
            return true;
        log_error("fencing token space exhausted", "job=%s", claim->job);
        claim->result = CF_ERR_INVALID;
    } else if (busy) {
        claim->result = CF_ERR_BUSY;
    } else {
        claim->result = CF_ERR_NO_QUORUM;
    }
    work->release = true;
    return false;
}

int ccl_claim(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = ccl_from_base(coord);
    struct claim_work *work;
    struct nodeset_round *round;
    bool answered[MAX_NODES] = {false}, trusted[MAX_NODES] = {false};
    char marker[KEY_MAX], fences[KEY_MAX], stream[KEY_MAX];
    bool any_commit = false, any_release = false;
    uint64_t generations[MAX_NODES] = {0};
    unsigned ordinal;
    int64_t t0;

    for (size_t i = 0; i < n; i++) {
        claims[i].result = CF_ERR_NO_QUORUM;
        claims[i].busy_slot_ms = 0;
        claims[i].busy_in_flight = false;
        claims[i].fired_ms = 0;
        claims[i].token = 0;
        claims[i].started_at_ms = 0;
    }
    if (n == 0 || !ccl_ordinal_held(self, &ordinal))
        return CF_OK;
    work = calloc(n, sizeof(*work));
    if (work == NULL) {
        for (size_t i = 0; i < n; i++)
            claims[i].result = CF_ERR_NOMEM;
        return CF_ERR_NOMEM;
    }
    ccl_make_key(self, marker, "node", "");
    ccl_make_key(self, fences, "fences", "");
    ccl_make_key(self, stream, "runs", "");
    for (size_t i = 0; i < n; i++) {
        int64_t fired = claims[i].advance ? fired_slots_latest(self->fired, claims[i].job) : 0;

        /* Announced committed on a node: a claim would read fence.last >= T there (§4.4). */
        if (fired >= claims[i].slot_ms) {
            claims[i].result = CF_ERR_FIRED;
            claims[i].fired_ms = fired;
            continue;
        }
        if (cf_random_hex(claims[i].nonce, 16) != CF_OK) {
            claims[i].result = CF_ERR_IO;
            continue;
        }
        if (minting_enter(self->minting, claims[i].job) != CF_OK) {
            claims[i].result = CF_ERR_NOMEM;
            continue;
        }
        work[i].entered = true;
        claim_work_init(self, &claims[i], &work[i]);
    }

    round = nodeset_round_begin(self->ns);
    t0 = cf_boot_ms();
    for (size_t i = 0; i < n; i++) {
        for (size_t node = 0; node < self->n; node++) {
            work[i].index[node] = -1;
            if (!work[i].entered || !nodeset_round_node_up(round, node))
                continue;
            work[i].index[node] = nodeset_round_script(
                round, node, S_CLAIM, 3, 7,
                (const char *[]){work[i].lock, work[i].fence, marker, work[i].value, work[i].slot,
                                 work[i].lease, claims[i].advance ? "1" : "0"});
            /* A node that misses the deadline may still set the lock: release it there too. */
            work[i].sent[node] = work[i].index[node] >= 0;
        }
    }
    nodeset_round_exec(round);

    /* Judge each claim; queue the commit round (step 5) for those that won. */
    for (size_t i = 0; i < n; i++) {
        char token[24], *record;
        bool announced = !claims[i].advance;

        if (!work[i].entered)
            continue;
        if (!judge_claim(self, round, &claims[i], &work[i], t0, ordinal, answered, trusted)) {
            any_release = true;
            continue;
        }
        work[i].committing = true;
        any_commit = true;
        snprintf(token, sizeof(token), "%lld", (long long)claims[i].token);
        claims[i].started_at_ms = cf_wall_ms();
        record = start_record(self, &claims[i]);
        for (size_t node = 0; node < self->n; node++) {
            bool announce = false;

            work[i].index[node] = -1;
            if (!work[i].held[node] || !nodeset_round_node_up(round, node))
                continue;
            if (!announced)
                announce = announced = true;
            {
                const char *argv[] = {work[i].lock,
                                      work[i].fence,
                                      fences,
                                      stream,
                                      self->fired_channel,
                                      work[i].value,
                                      token,
                                      work[i].slot,
                                      claims[i].advance ? "1" : "0",
                                      claims[i].job,
                                      HISTORY_MAXLEN,
                                      record != NULL ? record : "",
                                      claims[i].per_slot ? "0" : "1",
                                      work[i].new_fence[node] ? "1" : "0",
                                      announce ? "1" : "0"};

                work[i].index[node] = nodeset_round_script(
                    round, node, S_COMMIT, 5, (int)(sizeof(argv) / sizeof(argv[0])), argv);
            }
        }
        free(record);
    }
    if (any_commit) {
        /*
         * The lock is ours on a quorum already: waiting longer than the claim
         * timeout for slow acknowledgements is safe (the lease left is checked
         * after) and saves slots a busy machine would otherwise miss.
         */
        nodeset_round_exec_within(round, ccl_wait_at_least(self, COMMIT_WAIT_MS));
        for (size_t i = 0; i < n; i++) {
            size_t acked = 0;
            bool maybe_committed = false;
            int64_t valid_until = t0 + lease_validity(claims[i].lease_ms);

            if (!work[i].committing)
                continue;
            for (size_t node = 0; node < self->n; node++) {
                const redisReply *reply = nodeset_round_reply(round, node, work[i].index[node]);

                if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
                    /* Sent but unanswered: it may have committed there. */
                    if (work[i].index[node] >= 0)
                        maybe_committed = true;
                    continue;
                }
                if (reply->integer == 1) {
                    maybe_committed = true;
                    /* Our lock held on: the node is the one the claim found trusted. */
                    if (work[i].held_trusted[node])
                        acked++;
                }
            }
            /* Deliver only with a committed token and at least half the lease left. */
            if (acked >= self->quorum && valid_until - cf_boot_ms() >= claims[i].lease_ms / 2) {
                claims[i].valid_until_boot_ms = valid_until;
                claims[i].result = CF_OK;
            } else {
                log_warn("claim not committed", "job=%s slot=%lld acks=%zu token=%lld",
                         claims[i].job, (long long)claims[i].slot_ms, acked,
                         (long long)claims[i].token);
                /*
                 * Some nodes may hold fence.last = T now: the slot cannot be
                 * claimed again. Those may also hold the start record, so the
                 * token stays for the caller's record of the slot to beat it;
                 * when no node can have committed it, it goes (DESIGN §4.7).
                 */
                claims[i].result = CF_ERR_LOST;
                if (!maybe_committed)
                    claims[i].token = 0;
                work[i].release = true;
                any_release = true;
            }
        }
    }
    if (any_release) {
        for (size_t i = 0; i < n; i++)
            if (work[i].release)
                queue_release(self, round, &work[i]);
        nodeset_round_exec(round);
        for (size_t i = 0; i < n; i++)
            if (work[i].release)
                retry_unreleased(self, round, &work[i], claims[i].lease_ms);
    }
    ccl_round_generations(self, round, generations);
    nodeset_round_end(round);
    ccl_note_trust(self, answered, trusted, generations);
    for (size_t i = 0; i < n; i++)
        if (work[i].entered)
            minting_leave(self->minting, claims[i].job);
    free(work);
    return CF_OK;
}

int ccl_extend(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = ccl_from_base(coord);
    struct nodeset_round *round;
    char marker[KEY_MAX];
    struct claim_work *work = calloc(n ? n : 1, sizeof(*work));
    int64_t t0;

    if (work == NULL) {
        for (size_t i = 0; i < n; i++)
            claims[i].result = CF_ERR_LOST;
        return CF_ERR_NOMEM;
    }
    ccl_make_key(self, marker, "node", "");
    round = nodeset_round_begin(self->ns);
    t0 = cf_boot_ms();
    for (size_t i = 0; i < n; i++) {
        claim_work_init(self, &claims[i], &work[i]);
        for (size_t node = 0; node < self->n; node++)
            work[i].index[node] =
                nodeset_round_node_up(round, node)
                    ? nodeset_round_script(
                          round, node, S_EXTEND, 2, 4,
                          (const char *[]){work[i].lock, marker, work[i].value, work[i].lease})
                    : -1;
    }
    nodeset_round_exec(round);
    for (size_t i = 0; i < n; i++) {
        size_t acked = 0;

        for (size_t node = 0; node < self->n; node++) {
            const redisReply *reply = nodeset_round_reply(round, node, work[i].index[node]);

            if (ccl_reply_int(ccl_element(reply, 0), 0) == 1 &&
                ccl_reply_int(ccl_element(reply, 1), 0) == 1)
                acked++;
        }
        /* The extension counts only when a quorum made it before the old lease ran out. */
        if (acked >= self->quorum && cf_boot_ms() < claims[i].valid_until_boot_ms) {
            claims[i].valid_until_boot_ms = t0 + lease_validity(claims[i].lease_ms);
            claims[i].result = CF_OK;
        } else {
            claims[i].result = CF_ERR_LOST;
        }
    }
    nodeset_round_end(round);
    free(work);
    return CF_OK;
}

void ccl_release(struct coord *coord, const struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = ccl_from_base(coord);
    struct nodeset_round *round;
    struct claim_work *work = calloc(n ? n : 1, sizeof(*work));

    if (work == NULL)
        return; /* the leases expire on their own */
    round = nodeset_round_begin(self->ns);
    for (size_t i = 0; i < n; i++) {
        claim_work_init(self, &claims[i], &work[i]);
        for (size_t node = 0; node < self->n; node++)
            work[i].held[node] = true;
        queue_release(self, round, &work[i]);
    }
    nodeset_round_exec(round);
    for (size_t i = 0; i < n; i++)
        retry_unreleased(self, round, &work[i], claims[i].lease_ms);
    nodeset_round_end(round);
    free(work);
}

int ccl_fired_until(struct coord *coord, const char *const *jobs, size_t n, int64_t *last_ms)
{
    struct coord_cluster *self = ccl_from_base(coord);
    struct nodeset_round *round;
    char marker[KEY_MAX], key[KEY_MAX];
    int(*index)[MAX_NODES] = calloc(n ? n : 1, sizeof(*index));
    int ret = CF_OK;

    if (index == NULL)
        return CF_ERR_NOMEM;
    ccl_make_key(self, marker, "node", "");
    round = nodeset_round_begin(self->ns);
    for (size_t i = 0; i < n; i++) {
        ccl_make_key(self, key, "fence:", jobs[i]);
        for (size_t node = 0; node < self->n; node++)
            index[i][node] = nodeset_round_node_up(round, node)
                                 ? nodeset_round_script(round, node, S_FENCE_READ, 2, 2,
                                                        (const char *[]){key, marker})
                                 : -1;
    }
    nodeset_round_exec(round);
    for (size_t i = 0; i < n; i++) {
        size_t trusted = 0;

        last_ms[i] = 0;
        for (size_t node = 0; node < self->n; node++) {
            const redisReply *reply = nodeset_round_reply(round, node, index[i][node]);
            int64_t last = ccl_reply_int(ccl_element(reply, 0), -1);

            if (last < 0)
                continue;
            if (last > last_ms[i])
                last_ms[i] = last;
            trusted += ccl_reply_int(ccl_element(reply, 1), 0) == 1;
        }
        if (trusted < self->quorum)
            ret = CF_ERR_NO_QUORUM;
    }
    nodeset_round_end(round);
    free(index);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Rank-staggered claims (DESIGN §4.4)                                      */
/* ---------------------------------------------------------------------- */

/* Rendezvous weight of (job, T, member): FNV-1a, then a 64-bit finaliser to spread it. */
static uint64_t rendezvous(const char *job, int64_t slot_ms, const char *member)
{
    uint64_t hash = CF_FNV1A_START;
    char slot[24];
    const char *parts[3] = {job, slot, member};

    snprintf(slot, sizeof(slot), "%lld", (long long)slot_ms);
    for (size_t p = 0; p < 3; p++)
        hash = cf_fnv1a(cf_fnv1a(hash, parts[p]), "\xff"); /* separator */
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdull;
    hash ^= hash >> 33;
    hash *= 0xc4ceb9fe1a85ec53ull;
    hash ^= hash >> 33;
    return hash;
}

int64_t ccl_rank(struct coord *coord, const char *job, int64_t slot_ms)
{
    struct coord_cluster *self = ccl_from_base(coord);
    uint64_t mine = rendezvous(job, slot_ms, self->instance_id);
    int64_t rank = 0;

    pthread_mutex_lock(&self->state_lock);
    for (size_t i = 0; i < self->member_count; i++) {
        const char *id = self->members[i].id;
        uint64_t theirs;

        if (strcmp(id, self->instance_id) == 0)
            continue;
        theirs = rendezvous(job, slot_ms, id);
        if (theirs > mine || (theirs == mine && strcmp(id, self->instance_id) < 0))
            rank++;
    }
    pthread_mutex_unlock(&self->state_lock);
    return rank;
}

int64_t ccl_claim_delay_ms(struct coord *coord, const char *job, int64_t slot_ms)
{
    return ccl_rank(coord, job, slot_ms) * ccl_from_base(coord)->stagger_ms;
}
