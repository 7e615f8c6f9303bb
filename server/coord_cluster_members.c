/*
 * coord_cluster_members.c - the cluster coordinator's membership (DESIGN
 * §4.8): the heartbeat (which also holds this instance's ordinal and reads
 * each node's trust marker and clock), departures, and marking the runs of
 * instances that left the cluster as lost.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "db.h"
#include "log.h"

#define MEMBER_TTL_MS 5000
/* A run of a departed instance is called lost only when it started this long ago. */
#define LOST_AFTER_MS 10000
/*
 * How long a heartbeat waits for each node, at least. Rounds run at once,
 * so a slow heartbeat holds up no claim; cut at the claim timeout, a busy
 * machine would lose its ordinal and its view of the members, and with
 * them every claim, though the nodes are fine.
 */
#define HEARTBEAT_WAIT_MS 250
/*
 * How long a heartbeat that found the ordinal ours on a trusted quorum keeps
 * it ours: one member TTL after it was sent, half the life of the key it
 * refreshed (2 TTLs from when each node ran the script, which is later), so
 * no other instance can hold it on a quorum before this runs out. Heartbeats
 * slowed by a busy machine or a slow node do not take it away meanwhile.
 */
#define ORDINAL_VALID_MS MEMBER_TTL_MS

/* ---------------------------------------------------------------------- */
/* Membership (DESIGN §4.8)                                                 */
/* ---------------------------------------------------------------------- */

/* The live member id, or NULL when it is not live; state_lock held. */
static const struct member *find_member(struct coord_cluster *self, const char *id)
{
    for (size_t i = 0; i < self->member_count; i++)
        if (strcmp(self->members[i].id, id) == 0)
            return &self->members[i];
    return NULL;
}

/*
 * Merges the members of one node's heartbeat reply from element from up to
 * (not including) element to into list, keeping the freshest of each.
 */
static void merge_members(const redisReply *reply, size_t from, size_t to, struct member **list,
                          size_t *count, int64_t node_offset_ms)
{
    for (size_t k = from; k + 6 < to && k + 6 < reply->elements; k += 7) {
        const redisReply *id = reply->element[k];
        struct member m = {0}, *slot = NULL;

        if (id->type != REDIS_REPLY_STRING || id->len >= sizeof(m.id))
            continue;
        snprintf(m.id, sizeof(m.id), "%s", id->str);
        if (reply->element[k + 1]->type == REDIS_REPLY_STRING)
            snprintf(m.url, sizeof(m.url), "%s", reply->element[k + 1]->str);
        if (reply->element[k + 2]->type == REDIS_REPLY_STRING)
            snprintf(m.version, sizeof(m.version), "%s", reply->element[k + 2]->str);
        m.started_at_ms = ccl_reply_int(reply->element[k + 3], 0);
        m.seen_ms = ccl_reply_int(reply->element[k + 6], 0);
        m.clock_offset_ms = ccl_reply_int(reply->element[k + 4], m.seen_ms) - m.seen_ms;
        m.ordinal = (unsigned)ccl_reply_int(reply->element[k + 5], 0);
        /* Seen times compared on our clock, since nodes' clocks may differ. */
        m.seen_ms -= node_offset_ms;
        for (size_t i = 0; i < *count; i++) {
            if (strcmp((*list)[i].id, m.id) == 0) {
                slot = &(*list)[i];
                break;
            }
        }
        if (slot == NULL) {
            struct member *bigger = realloc(*list, (*count + 1) * sizeof(**list));

            if (bigger == NULL)
                return;
            *list = bigger;
            slot = &(*list)[(*count)++];
            *slot = m;
        } else if (m.seen_ms > slot->seen_ms) {
            *slot = m;
        }
    }
}

/* Whether id is among the count members of list. */
static bool listed(const struct member *list, size_t count, const char *id)
{
    for (size_t k = 0; k < count; k++)
        if (strcmp(list[k].id, id) == 0)
            return true;
    return false;
}

/* Records m in the departed list, last seen at its last heartbeat; state_lock held. */
static void add_departed(struct coord_cluster *self, const struct member *m)
{
    struct departed_member gone = {0};

    snprintf(gone.id, sizeof(gone.id), "%s", m->id);
    snprintf(gone.url, sizeof(gone.url), "%s", m->url);
    snprintf(gone.version, sizeof(gone.version), "%s", m->version);
    gone.started_at_ms = m->started_at_ms;
    gone.last_seen_ms = m->seen_ms;
    gone.ordinal = m->ordinal;
    departed_add(&self->departed, &gone);
}

/*
 * Updates the departed list for the new view list: the members of the
 * current view missing from it have left; so have the departed members the
 * nodes keep (gone, which include those that left before this instance
 * started); a member live again is no longer departed. state_lock held.
 */
static void note_departures(struct coord_cluster *self, const struct member *list, size_t count,
                            const struct member *gone, size_t gone_count)
{
    for (size_t i = 0; i < self->member_count; i++) {
        const struct member *old = &self->members[i];

        if (listed(list, count, old->id) || strcmp(old->id, self->instance_id) == 0)
            continue;
        add_departed(self, old);
        log_info("member gone", "member=%s last_seen_ms=%lld", old->id, (long long)old->seen_ms);
    }
    for (size_t i = 0; i < gone_count; i++)
        if (!listed(list, count, gone[i].id) && strcmp(gone[i].id, self->instance_id) != 0)
            add_departed(self, &gone[i]);
    for (size_t k = 0; k < count; k++)
        departed_remove(&self->departed, list[k].id);
    departed_expire(&self->departed, cf_wall_ms());
}

/*
 * The heartbeat round: refreshes this member and its ordinal on every node,
 * reads back the live members, each node's trust marker and clock. Moves to
 * another ordinal when this one is taken on too many nodes to win a quorum.
 */
void ccl_heartbeat(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char members[KEY_MAX], member[KEY_MAX], ordinal_key[KEY_MAX], marker[KEY_MAX],
        member_prefix[KEY_MAX], departed[KEY_MAX];
    char url[512], started[24], clock[24], ordinal[16], ttl[16], keep[16];
    unsigned current = atomic_load(&self->ordinal);
    int index[MAX_NODES];
    bool answered[MAX_NODES] = {false}, trusted[MAX_NODES] = {false};
    int64_t offsets[MAX_NODES] = {0};
    uint64_t generations[MAX_NODES] = {0};
    struct member *list = NULL, *gone = NULL;
    size_t list_count = 0, gone_count = 0, held = 0, taken = 0, trusted_answers = 0;
    int64_t sent_wall, sent_boot = cf_boot_ms(), midpoint;

    ccl_make_key(self, members, "members", "");
    ccl_make_key(self, member, "member:", self->instance_id);
    snprintf(ordinal, sizeof(ordinal), "%u", current);
    ccl_make_key(self, ordinal_key, "ordinal:", ordinal);
    ccl_make_key(self, marker, "node", "");
    ccl_make_key(self, member_prefix, "member:", "");
    ccl_make_key(self, departed, "departed", "");
    pthread_mutex_lock(&self->state_lock);
    snprintf(url, sizeof(url), "%s", self->advertise_url);
    pthread_mutex_unlock(&self->state_lock);
    snprintf(started, sizeof(started), "%lld", (long long)self->started_at_ms);
    snprintf(ttl, sizeof(ttl), "%d", MEMBER_TTL_MS);
    snprintf(keep, sizeof(keep), "%d", DEPARTED_KEEP_MS);

    round = nodeset_round_begin(self->ns);
    sent_wall = cf_wall_ms();
    snprintf(clock, sizeof(clock), "%lld", (long long)sent_wall);
    for (size_t node = 0; node < self->n; node++)
        index[node] = nodeset_round_node_up(round, node)
                          ? nodeset_round_script(
                                round, node, S_HEARTBEAT, 5, 14,
                                (const char *[]){members, member, ordinal_key, marker, departed,
                                                 self->instance_id, url, CF_VERSION, started, clock,
                                                 ordinal, member_prefix, ttl, keep})
                          : -1;
    nodeset_round_exec_within(round, ccl_wait_at_least(self, HEARTBEAT_WAIT_MS));
    midpoint = sent_wall + (cf_wall_ms() - sent_wall) / 2;
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, index[node]);
        int64_t node_now = ccl_reply_int(ccl_element(reply, 0), -1);
        size_t live_end;

        if (node_now < 0 || ccl_element(reply, 2) == NULL)
            continue;
        answered[node] = true;
        trusted[node] = ccl_reply_int(ccl_element(reply, 2), 0) == 1;
        trusted_answers += trusted[node];
        offsets[node] = node_now - midpoint;
        /* Only trusted nodes count: an emptied node grants any ordinal. */
        if (ccl_reply_int(ccl_element(reply, 1), 0) == 1 && trusted[node])
            held++;
        else if (ccl_reply_int(ccl_element(reply, 1), 0) != 1)
            taken++;
        live_end = 4 + 7 * (size_t)ccl_reply_int(ccl_element(reply, 3), 0);
        merge_members(reply, 4, live_end, &list, &list_count, offsets[node]);
        merge_members(reply, live_end, reply->elements, &gone, &gone_count, offsets[node]);
    }
    ccl_round_generations(self, round, generations);
    nodeset_round_end(round);
    ccl_note_trust(self, answered, trusted, generations);

    pthread_mutex_lock(&self->state_lock);
    for (size_t node = 0; node < self->n; node++) {
        self->nodes[node].answered = answered[node];
        if (answered[node]) {
            self->nodes[node].clock_offset_ms = offsets[node];
            self->nodes[node].clock_known = true;
        }
    }
    if (list_count > 0 || trusted_answers >= self->quorum) {
        note_departures(self, list, list_count, gone, gone_count);
        free(self->members);
        self->members = list;
        self->member_count = list_count;
        list = NULL;
    }
    self->view_fresh = trusted_answers >= self->quorum;
    self->view_boot_ms = cf_boot_ms();
    if (!self->first_view) {
        self->first_view = true;
        pthread_cond_broadcast(&self->first_view_cond);
    }
    pthread_mutex_unlock(&self->state_lock);
    free(list);
    free(gone);

    if (held >= self->quorum) {
        /* The key lives 2 TTLs from when a node ran the script, after sent_boot. */
        atomic_store(&self->ordinal_until, sent_boot + ORDINAL_VALID_MS);
        if (!self->ordinal_noted)
            log_info("ordinal held", "ordinal=%u", current);
        self->ordinal_noted = true;
    } else if (taken > self->n - self->quorum) {
        /* Another live instance has it on enough nodes: let it go, then try the next one. */
        atomic_store(&self->ordinal_until, 0);
        atomic_store(&self->ordinal, (current + 1) % (1u << COORD_ORDINAL_BITS));
        if (self->ordinal_noted)
            log_warn("ordinal lost", "ordinal=%u held=%zu", current, held);
        self->ordinal_noted = false;
        log_info("ordinal taken, trying the next", "taken=%u next=%u", current,
                 (current + 1) % (1u << COORD_ORDINAL_BITS));
    } else if (self->ordinal_noted && cf_boot_ms() >= atomic_load(&self->ordinal_until)) {
        self->ordinal_noted = false;
        log_warn("ordinal lost", "ordinal=%u held=%zu", current, held);
    } else if (self->ordinal_noted) {
        log_warn("heartbeat not confirmed by a quorum, ordinal still held",
                 "ordinal=%u held=%zu answered=%zu", current, held, trusted_answers);
    }
}

/*
 * Whether this instance holds its ordinal now, and which it is. Read twice
 * around the deadline: the heartbeat clears the deadline before it moves to
 * another ordinal, so a claim never mints with an ordinal it let go.
 */
bool ccl_ordinal_held(struct coord_cluster *self, unsigned *ordinal)
{
    unsigned before = atomic_load(&self->ordinal);
    int64_t until = atomic_load(&self->ordinal_until);

    if (cf_boot_ms() >= until || atomic_load(&self->ordinal) != before)
        return false;
    if (ordinal != NULL)
        *ordinal = before;
    return true;
}

/*
 * Why a run still "running" cannot be in flight any more, or NULL while it
 * may be (state_lock held): its instance left the cluster, or restarted
 * since the run began (this instance included: the commit round may have
 * recorded a run its previous life never wrote down). Start times of one
 * instance come from one clock, so they compare.
 */
static const char *run_gone_reason(struct coord_cluster *self, const struct run *run, int64_t now)
{
    const struct member *member;

    if (strcmp(run->instance, self->instance_id) == 0)
        return run->started_at_ms < self->started_at_ms ? "instance restarted during the run"
                                                        : NULL;
    member = find_member(self, run->instance);
    if (member == NULL)
        return now - run->started_at_ms >= LOST_AFTER_MS
                   ? "instance left the cluster during the run"
                   : NULL;
    if (member->started_at_ms > run->started_at_ms)
        return "instance restarted during the run";
    return NULL;
}

/* Marks as lost the runs still "running" under instances that left the cluster or restarted. */
void ccl_mark_departed_runs(struct coord_cluster *self)
{
    struct run *runs = NULL;
    const struct run **changed = NULL;
    size_t count = 0, n = 0;
    int64_t now = cf_wall_ms();

    pthread_mutex_lock(&self->state_lock);
    if (!self->view_fresh) {
        pthread_mutex_unlock(&self->state_lock);
        return;
    }
    pthread_mutex_unlock(&self->state_lock);
    if (db_run_running(self->db, NULL, 10000, &runs, &count) != CF_OK)
        return;
    changed = calloc(count ? count : 1, sizeof(*changed));
    pthread_mutex_lock(&self->state_lock);
    for (size_t i = 0; changed != NULL && i < count; i++) {
        struct run *run = &runs[i];
        const char *gone = run_gone_reason(self, run, now);

        if (gone == NULL)
            continue;
        free(run->reason);
        run->reason = strdup(gone);
        run->status = RUN_LOST;
        run->finished_at_ms = now;
        changed[n++] = run;
    }
    pthread_mutex_unlock(&self->state_lock);
    if (n > 0 && db_run_upsert_many(self->db, changed, n) == CF_OK)
        log_warn("runs of departed instances marked lost", "count=%zu", n);
    for (size_t i = 0; i < count; i++)
        run_clear(&runs[i]);
    free(runs);
    free(changed);
}
