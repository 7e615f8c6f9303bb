/*
 * coord_cluster_repair.c - the cluster coordinator's node trust (DESIGN
 * §4.5): the trust table, trust markers, bootstrap of a new cluster, and the
 * repair of new or wiped nodes after their quarantine.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "db.h"
#include "log.h"

#define MIN_QUARANTINE_MS 60000

/* ---------------------------------------------------------------------- */
/* Trust and repair (DESIGN §4.5)                                           */
/* ---------------------------------------------------------------------- */

/*
 * Records what replies said about the nodes' markers, with the connection
 * generation they came over (what an older connection said is void once the
 * node has reconnected: it may have come back empty). Takes the state lock.
 */
void ccl_note_trust(struct coord_cluster *self, const bool *answered, const bool *trusted,
                    const uint64_t *generations)
{
    int64_t now = cf_boot_ms();

    pthread_mutex_lock(&self->state_lock);
    for (size_t i = 0; i < self->n; i++) {
        struct node_state *node = &self->nodes[i];

        if (!answered[i])
            continue;
        if (trusted[i] && !node->trusted)
            log_info("redis node trusted", "node=%s", nodeset_address(self->ns, i));
        if (!trusted[i] && (node->trusted || node->untrusted_since_boot_ms == 0)) {
            log_warn("redis node untrusted", "node=%s reason=\"no trust marker: new or wiped\"",
                     nodeset_address(self->ns, i));
            node->untrusted_since_boot_ms = now;
        }
        node->trusted = trusted[i];
        node->generation = generations[i];
        if (trusted[i])
            node->untrusted_since_boot_ms = 0;
    }
    pthread_mutex_unlock(&self->state_lock);
}

/* Copies the connection generations of every node; inside a round. */
void ccl_round_generations(struct coord_cluster *self, const struct nodeset_round *round,
                           uint64_t *generations)
{
    for (size_t node = 0; node < self->n; node++)
        generations[node] = nodeset_round_generation(round, node);
}

/* Whether node i said it was trusted over its current connection (generation). */
bool ccl_node_trusted(struct coord_cluster *self, size_t i, uint64_t generation)
{
    bool trusted;

    pthread_mutex_lock(&self->state_lock);
    trusted = self->nodes[i].trusted && self->nodes[i].generation == generation;
    pthread_mutex_unlock(&self->state_lock);
    return trusted;
}

/* Sets the trust marker on node (SET NX: a concurrent repair's marker stands). */
static bool set_marker(struct coord_cluster *self, size_t node)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char marker[KEY_MAX], value[40];
    int index = -1;
    bool ok;

    ccl_make_key(self, marker, "node", "");
    if (cf_random_hex(value, 16) != CF_OK) {
        nodeset_round_end(round);
        return false;
    }
    if (nodeset_round_node_up(round, node))
        index = nodeset_round_command(round, node, 4, (const char *[]){"SET", marker, value, "NX"},
                                      NULL);
    nodeset_round_exec(round);
    ok = nodeset_round_reply(round, node, index) != NULL &&
         nodeset_round_reply(round, node, index)->type != REDIS_REPLY_ERROR;
    nodeset_round_end(round);
    return ok;
}

/* A fence as read for repair. */
struct fence_entry {
    char *job;
    int64_t token;
    int64_t last;
};

static int compare_fence(const void *a, const void *b)
{
    return strcmp(((const struct fence_entry *)a)->job, ((const struct fence_entry *)b)->job);
}

/*
 * Repairs an untrusted node (DESIGN §4.5): raises every fence on it to the
 * highest a quorum of trusted nodes holds, copies the newest catalog, then
 * sets its marker. Returns whether the node is trusted now.
 */
static bool repair_node(struct coord_cluster *self, size_t target)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char fences[KEY_MAX], prefix[KEY_MAX], key[KEY_MAX], token[24], last[24];
    int index[MAX_NODES];
    struct fence_entry *list = NULL;
    size_t count = 0, answered = 0, merged = 0, raises = 0, failed = 0;
    struct seen_entry *entries = NULL;
    size_t entry_count = 0, catalog_answered = 0;
    int64_t newest[MAX_NODES];
    bool full, ok = false;

    ccl_make_key(self, fences, "fences", "");
    ccl_make_key(self, prefix, "fence:", "");
    for (size_t node = 0; node < self->n; node++)
        index[node] = node != target && nodeset_round_node_up(round, node) &&
                              ccl_node_trusted(self, node, nodeset_round_generation(round, node))
                          ? nodeset_round_script(round, node, S_FENCE_DUMP, 1, 2,
                                                 (const char *[]){fences, prefix})
                          : -1;
    nodeset_round_exec(round);
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, index[node]);

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
            continue;
        answered++;
        for (size_t k = 0; k + 2 < reply->elements; k += 3) {
            struct fence_entry *bigger;

            if (reply->element[k]->type != REDIS_REPLY_STRING)
                continue;
            bigger = realloc(list, (count + 1) * sizeof(*list));
            if (bigger == NULL)
                continue;
            list = bigger;
            list[count].job = strdup(reply->element[k]->str);
            list[count].token = ccl_reply_int(reply->element[k + 1], 0);
            list[count].last = ccl_reply_int(reply->element[k + 2], 0);
            if (list[count].job != NULL)
                count++;
        }
    }
    if (answered < self->quorum) {
        nodeset_round_end(round);
        goto out;
    }
    /* Highest token and last slot per job. */
    if (count > 1)
        qsort(list, count, sizeof(*list), compare_fence);
    for (size_t i = 0; i < count; i++) {
        if (merged > 0 && strcmp(list[merged - 1].job, list[i].job) == 0) {
            if (list[i].token > list[merged - 1].token)
                list[merged - 1].token = list[i].token;
            if (list[i].last > list[merged - 1].last)
                list[merged - 1].last = list[i].last;
            free(list[i].job);
            continue;
        }
        list[merged++] = list[i];
    }
    count = merged;
    if (!nodeset_round_node_up(round, target)) {
        nodeset_round_end(round);
        goto out;
    }
    {
        int first = -1;

        for (size_t i = 0; i < count; i++) {
            int at;

            ccl_make_key(self, key, "fence:", list[i].job);
            snprintf(token, sizeof(token), "%lld", (long long)list[i].token);
            snprintf(last, sizeof(last), "%lld", (long long)list[i].last);
            at = nodeset_round_script(round, target, S_FENCE_RAISE, 2, 5,
                                      (const char *[]){key, fences, token, last, list[i].job});
            if (first < 0)
                first = at;
            raises++;
        }
        nodeset_round_exec(round);
        for (size_t i = 0; i < raises; i++) {
            const redisReply *reply = nodeset_round_reply(round, target, first + (int)i);

            if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
                failed++;
        }
    }
    nodeset_round_end(round);
    if (failed > 0)
        goto out;

    /* The catalog, newest entry per job from the trusted nodes. */
    if (ccl_catalog_gather(self, NULL, true, &entries, &entry_count, newest, &full,
                           &catalog_answered) != CF_OK ||
        catalog_answered < self->quorum)
        goto out;
    ccl_catalog_repair(self, entries, entry_count, 1u << target);
    ok = set_marker(self, target);
    if (ok)
        log_warn("redis node repaired", "node=%s fences=%zu jobs=%zu",
                 nodeset_address(self->ns, target), count, entry_count);
out:
    ccl_free_seen(entries, entry_count);
    for (size_t i = 0; i < count; i++)
        free(list[i].job);
    free(list);
    return ok;
}

/* How long a new or wiped node stays untrusted before repair. */
static int64_t quarantine_ms(struct coord_cluster *self)
{
    int64_t longest = CATALOG_LEASE_MS, jobs = 0;

    if (self->quarantine_ms > 0)
        return self->quarantine_ms;
    if (db_job_max_lease(self->db, &jobs) == CF_OK && jobs > longest)
        longest = jobs;
    return 2 * longest > MIN_QUARANTINE_MS ? 2 * longest : MIN_QUARANTINE_MS;
}

/*
 * Trust upkeep after a heartbeat: a brand-new cluster (every node answering,
 * none trusted) is bootstrapped; an untrusted node is repaired once its
 * quarantine has passed and a trusted quorum can supply the fences.
 */
void ccl_tend_trust(struct coord_cluster *self)
{
    size_t answered = 0, trusted = 0;
    int64_t now = cf_boot_ms(), quarantine = quarantine_ms(self);
    int64_t since[MAX_NODES];
    bool up[MAX_NODES];

    pthread_mutex_lock(&self->state_lock);
    for (size_t node = 0; node < self->n; node++) {
        up[node] = self->nodes[node].answered;
        answered += up[node];
        trusted += up[node] && self->nodes[node].trusted;
        since[node] = self->nodes[node].trusted ? 0 : self->nodes[node].untrusted_since_boot_ms;
    }
    pthread_mutex_unlock(&self->state_lock);

    if (answered == self->n && trusted == 0) {
        log_warn("bootstrapping a new cluster", "nodes=%zu", self->n);
        for (size_t node = 0; node < self->n; node++)
            set_marker(self, node);
        return;
    }
    if (trusted < self->quorum)
        return;
    for (size_t node = 0; node < self->n; node++) {
        if (!up[node] || since[node] == 0 || now - since[node] < quarantine)
            continue;
        log_info("repairing redis node", "node=%s quarantine_ms=%lld",
                 nodeset_address(self->ns, node), (long long)quarantine);
        repair_node(self, node);
    }
}
