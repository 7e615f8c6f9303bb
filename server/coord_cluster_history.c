/*
 * coord_cluster_history.c - the cluster coordinator's run history (DESIGN
 * §4.7): publishing the database's outbox to every node's run feed, reading
 * the feeds into the local history, and trimming them.
 */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "db.h"
#include "log.h"

#define HISTORY_PAGE "1000"
/* A reader of the run feed silent for longer is forgotten, and the feed trimmed past it. */
#define READER_TTL "120000"
/* Outbox states per publishing pass, appended in script calls of PUBLISH_CHUNK. */
#define PUBLISH_BATCH 1000
#define PUBLISH_CHUNK 100

/* ---------------------------------------------------------------------- */
/* History (DESIGN §4.7)                                                    */
/* ---------------------------------------------------------------------- */

bool ccl_shares_history(struct coord *coord)
{
    return true;
}

void ccl_history_queued(struct coord *coord)
{
    atomic_store(&ccl_from_base(coord)->outbox_queued, true);
}

/*
 * Queues one publish script call for node with the n outbox entries given,
 * previous being the seq sent just before them in the batch ("0" for
 * none). Returns the command index, -1 when not queued.
 */
static int queue_publish(struct coord_cluster *self, struct nodeset_round *round, size_t node,
                         const char *stream, const char *published, const char *previous,
                         const struct db_outbox_entry *entries, char (*seqs)[24], size_t n)
{
    const char *argv[5 + 2 * PUBLISH_CHUNK];
    size_t argc = 0;

    argv[argc++] = stream;
    argv[argc++] = published;
    argv[argc++] = self->outbox_field;
    argv[argc++] = HISTORY_MAXLEN;
    argv[argc++] = previous;
    for (size_t i = 0; i < n; i++) {
        argv[argc++] = seqs[i];
        argv[argc++] = entries[i].doc;
    }
    return nodeset_round_script(round, node, S_PUBLISH, 2, (int)argc, argv);
}

/*
 * Background thread: appends the oldest queued run states to every node's
 * feed that lacks them, in one round, and deletes from the outbox those a
 * quorum of nodes holds. The others stay queued and go again on the next
 * pass, or after a restart; the publish script makes a resend append
 * nothing twice. One batch per pass, so a long backlog never holds the
 * nodes (and the claims queued behind them) for long.
 */
void ccl_history_flush(struct coord_cluster *self)
{
    struct db_outbox_entry *entries = NULL;
    struct nodeset_round *round;
    char stream[KEY_MAX], published[KEY_MAX], (*seqs)[24] = NULL;
    int(*index)[MAX_NODES] = NULL;
    int64_t high[MAX_NODES], *done = NULL;
    size_t count = 0, chunks, n_done = 0;

    if (!atomic_exchange(&self->outbox_queued, false))
        return;
    if (db_outbox_peek(self->db, PUBLISH_BATCH, &entries, &count) != CF_OK) {
        atomic_store(&self->outbox_queued, true); /* unreadable now: the next pass tries again */
        return;
    }
    if (count == 0) {
        db_outbox_entries_free(entries, count);
        return;
    }
    chunks = (count + PUBLISH_CHUNK - 1) / PUBLISH_CHUNK;
    seqs = calloc(count, sizeof(*seqs));
    index = calloc(chunks, sizeof(*index));
    done = calloc(count, sizeof(*done));
    if (seqs == NULL || index == NULL || done == NULL)
        goto out;
    for (size_t i = 0; i < count; i++)
        snprintf(seqs[i], sizeof(seqs[i]), "%lld", (long long)entries[i].seq);
    ccl_make_key(self, stream, "runs", "");
    ccl_make_key(self, published, "published", "");

    round = nodeset_round_begin(self->ns);
    for (size_t c = 0; c < chunks; c++) {
        size_t first = c * PUBLISH_CHUNK,
               n = count - first < PUBLISH_CHUNK ? count - first : PUBLISH_CHUNK;

        for (size_t node = 0; node < self->n; node++)
            index[c][node] = nodeset_round_node_up(round, node)
                                 ? queue_publish(self, round, node, stream, published,
                                                 first > 0 ? seqs[first - 1] : "0", &entries[first],
                                                 &seqs[first], n)
                                 : -1;
    }
    nodeset_round_exec(round);
    for (size_t node = 0; node < self->n; node++) {
        high[node] = 0;
        for (size_t c = 0; c < chunks; c++) {
            const redisReply *reply = nodeset_round_reply(round, node, index[c][node]);

            if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer > high[node])
                high[node] = reply->integer;
        }
    }
    nodeset_round_end(round);

    for (size_t i = 0; i < count; i++) {
        size_t holders = 0;

        for (size_t node = 0; node < self->n; node++)
            if (entries[i].seq <= high[node])
                holders++;
        if (holders >= self->quorum)
            done[n_done++] = entries[i].seq;
    }
    if (db_outbox_delete(self->db, done, n_done) != CF_OK)
        n_done = 0;
out:
    /* Anything left, or a full batch (more may follow), needs another pass. */
    if (n_done < count || count == PUBLISH_BATCH)
        atomic_store(&self->outbox_queued, true);
    db_outbox_entries_free(entries, count);
    free(seqs);
    free(index);
    free(done);
}

/* Copies how far this instance has read each node's run feed into positions. */
static void read_positions(struct coord_cluster *self, char positions[MAX_NODES][48])
{
    pthread_mutex_lock(&self->state_lock);
    memcpy(positions, self->history_pos, sizeof(self->history_pos));
    pthread_mutex_unlock(&self->state_lock);
}

/* Reads new entries of every node's run feed into the local history. */
void ccl_history_read(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char stream[KEY_MAX], positions[MAX_NODES][48];
    int index[MAX_NODES];
    struct run *runs = NULL;
    const struct run **pointers = NULL;
    size_t count = 0, cap = 0;
    bool moved[MAX_NODES] = {false};

    ccl_make_key(self, stream, "runs", "");
    read_positions(self, positions);

    round = nodeset_round_begin(self->ns);
    for (size_t node = 0; node < self->n; node++)
        index[node] =
            nodeset_round_node_up(round, node)
                ? nodeset_round_command(round, node, 6,
                                        (const char *[]){"XREAD", "COUNT", HISTORY_PAGE, "STREAMS",
                                                         stream, positions[node]},
                                        NULL)
                : -1;
    nodeset_round_exec(round);
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *entries =
            ccl_element(ccl_element(nodeset_round_reply(round, node, index[node]), 0), 1);

        for (size_t k = 0; entries != NULL && k < entries->elements; k++) {
            const redisReply *id = ccl_element(entries->element[k], 0);
            const redisReply *fields = ccl_element(entries->element[k], 1);
            json_t *doc;

            if (id == NULL || id->type != REDIS_REPLY_STRING || id->len >= 48)
                continue;
            memcpy(positions[node], id->str, id->len + 1);
            moved[node] = true;
            for (size_t f = 0; fields != NULL && f + 1 < fields->elements; f += 2) {
                const redisReply *value = fields->element[f + 1];

                if (!ccl_reply_is(fields->element[f], "run") || value->type != REDIS_REPLY_STRING)
                    continue;
                if (count == cap) {
                    size_t grown = cap ? cap * 2 : 256;
                    struct run *bigger = realloc(runs, grown * sizeof(*runs));

                    if (bigger == NULL)
                        break;
                    runs = bigger;
                    cap = grown;
                }
                doc = json_loadb(value->str, value->len, 0, NULL);
                /*
                 * This instance's own states are taken too: the commit round
                 * wrote some that its database may have lost with a crash;
                 * the others merge as no change.
                 */
                if (doc != NULL && run_from_json(doc, &runs[count]) == CF_OK)
                    count++;
                json_decref(doc);
            }
        }
    }
    nodeset_round_end(round);

    pointers = calloc(count ? count : 1, sizeof(*pointers));
    if (pointers != NULL) {
        for (size_t i = 0; i < count; i++)
            pointers[i] = &runs[i];
        if (count == 0 || db_run_upsert_many(self->db, pointers, count) == CF_OK) {
            pthread_mutex_lock(&self->state_lock);
            for (size_t node = 0; node < self->n; node++)
                if (moved[node])
                    memcpy(self->history_pos[node], positions[node], sizeof(positions[node]));
            pthread_mutex_unlock(&self->state_lock);
            for (size_t node = 0; node < self->n; node++) {
                char key[KEY_MAX];

                if (!moved[node])
                    continue;
                ccl_make_key(self, key, "history_pos:", nodeset_address(self->ns, node));
                db_meta_set(self->db, key, positions[node]);
            }
        }
    }
    for (size_t i = 0; i < count; i++)
        run_clear(&runs[i]);
    free(runs);
    free(pointers);
}

/* Whether stream entry id a is after b ("<ms>-<seq>" each). */
static bool stream_id_after(const char *a, const char *b)
{
    unsigned long long a_ms = 0, a_seq = 0, b_ms = 0, b_seq = 0;

    sscanf(a, "%llu-%llu", &a_ms, &a_seq);
    sscanf(b, "%llu-%llu", &b_ms, &b_seq);
    return a_ms > b_ms || (a_ms == b_ms && a_seq > b_seq);
}

/*
 * Background thread: tells every node how far this instance has read its
 * run feed, so that the feed is trimmed only below what every reader heard
 * from within READER_TTL_MS has read, and warns when entries after this
 * instance's position are gone anyway (it was silent for longer, or the
 * hard cap trimmed them): those states are not read again.
 */
void ccl_feed_trim(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char stream[KEY_MAX], readers[KEY_MAX], seen[KEY_MAX], marker[KEY_MAX], members[KEY_MAX];
    char positions[MAX_NODES][48];
    int index[MAX_NODES];

    ccl_make_key(self, stream, "runs", "");
    ccl_make_key(self, readers, "readers", "");
    ccl_make_key(self, seen, "readers_seen", "");
    ccl_make_key(self, marker, "node", "");
    ccl_make_key(self, members, "members", "");
    read_positions(self, positions);
    round = nodeset_round_begin(self->ns);
    for (size_t node = 0; node < self->n; node++)
        index[node] = nodeset_round_node_up(round, node)
                          ? nodeset_round_script(round, node, S_FEED_TRIM, 5, 8,
                                                 (const char *[]){stream, readers, seen, marker,
                                                                  members, self->instance_id,
                                                                  positions[node], READER_TTL})
                          : -1;
    nodeset_round_exec(round);
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *first = nodeset_round_reply(round, node, index[node]);

        /* The entry at our position stays while we are a reader: past it, some are gone. */
        if (first == NULL || first->type != REDIS_REPLY_STRING || first->len == 0 ||
            strcmp(positions[node], "0-0") == 0 || !stream_id_after(first->str, positions[node]))
            continue;
        if (strcmp(self->trim_warned[node], first->str) == 0)
            continue; /* said once for this trim */
        snprintf(self->trim_warned[node], sizeof(self->trim_warned[node]), "%s", first->str);
        log_warn("run feed trimmed past this instance's position: some run states were not read",
                 "node=%s position=%s first=%s", nodeset_address(self->ns, node), positions[node],
                 first->str);
    }
    nodeset_round_end(round);
}
