/*
 * coord_cluster.c - the cluster coordinator: Redlock over N independent
 * Redis nodes with quorum fencing tokens (DESIGN §4).
 *
 * Claims, extensions, releases and catalog writes run on the caller's thread
 * as rounds over the nodeset. The membership heartbeat (which also holds this
 * instance's ordinal and reads each node's trust marker and clock) has a
 * thread of its own, so nothing else delays it. Everything else periodic runs
 * on one background thread: reconnecting nodes, node bootstrap and repair
 * after each heartbeat, the catalog poll (woken early by pub/sub), the run
 * history feed in both directions, and marking the runs of instances that
 * left the cluster as lost.
 *
 * This file holds the key and reply helpers, the background thread, the
 * status, construction and destruction; the rest is in coord_cluster_*.c,
 * the state and the locking rules in coord_cluster_internal.h.
 */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_cluster_internal.h"
#include "db.h"
#include "log.h"

#define CATALOG_POLL_MS 1000
#define CATALOG_GC_MS 600000
#define HEARTBEAT_MS 1000
#define HISTORY_POLL_MS 250
#define FEED_TRIM_MS 5000
#define LOST_CHECK_MS 5000
#define CLOCK_WARN_MS 1000
/* How long coord_cluster_new waits for a first view of the nodes. */
#define START_WAIT_MS 2000

/* ---------------------------------------------------------------------- */
/* Keys and replies                                                         */
/* ---------------------------------------------------------------------- */

struct coord_cluster *ccl_from_base(struct coord *coord)
{
    return (struct coord_cluster *)coord;
}

/* A round's wait per node for work worth a slow fsync: at least ms, and at least the node timeout.
 */
int64_t ccl_wait_at_least(const struct coord_cluster *self, int64_t ms)
{
    return self->node_timeout_ms > ms ? self->node_timeout_ms : ms;
}

/* prefix + kind + name into out (KEY_MAX bytes). */
void ccl_make_key(const struct coord_cluster *self, char *out, const char *kind, const char *name)
{
    snprintf(out, KEY_MAX, "%s%s%s", self->prefix, kind, name);
}

/* Reply helpers: the element of an array reply, or NULL. */
const redisReply *ccl_element(const redisReply *reply, size_t i)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements)
        return NULL;
    return reply->element[i];
}

/* An integer from an integer or numeric string reply; fallback when neither. */
int64_t ccl_reply_int(const redisReply *reply, int64_t fallback)
{
    char *end;
    long long value;

    if (reply == NULL)
        return fallback;
    if (reply->type == REDIS_REPLY_INTEGER)
        return reply->integer;
    if (reply->type != REDIS_REPLY_STRING || reply->len == 0)
        return fallback;
    value = strtoll(reply->str, &end, 10);
    return *end == '\0' ? value : fallback;
}

bool ccl_reply_is(const redisReply *reply, const char *text)
{
    return reply != NULL &&
           (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) &&
           strcmp(reply->str, text) == 0;
}

/* ---------------------------------------------------------------------- */
/* The background thread                                                    */
/* ---------------------------------------------------------------------- */

/*
 * A pub/sub message, on the nodeset's I/O thread: a catalog announcement
 * wakes the background thread to poll the catalog; a fired one is noted.
 */
static bool on_message(void *ctx, const char *channel, const char *payload, size_t len)
{
    struct coord_cluster *self = ctx;

    if (strcmp(channel, self->fired_channel) == 0) {
        fired_slots_note_announcement(self->fired, payload, len);
        return false;
    }
    return strcmp(channel, self->catalog_channel) == 0;
}

/* The heartbeat thread: a heartbeat round every HEARTBEAT_MS, from start to stop. */
static void *heartbeat_main(void *arg)
{
    struct coord_cluster *self = arg;

    while (!atomic_load(&self->stopping)) {
        struct timespec next;

        cf_monotonic_deadline(HEARTBEAT_MS, &next);
        ccl_heartbeat(self);
        pthread_mutex_lock(&self->state_lock);
        while (!atomic_load(&self->stopping) &&
               pthread_cond_timedwait(&self->stop_cond, &self->state_lock, &next) == 0)
            ;
        pthread_mutex_unlock(&self->state_lock);
    }
    return NULL;
}

/* When the heartbeat last refreshed the view (CLOCK_BOOTTIME ms). */
static int64_t view_time(struct coord_cluster *self)
{
    int64_t at;

    pthread_mutex_lock(&self->state_lock);
    at = self->view_boot_ms;
    pthread_mutex_unlock(&self->state_lock);
    return at;
}

static void *cluster_main(void *arg)
{
    struct coord_cluster *self = arg;
    int64_t tended = 0, next_catalog = 0, next_history = 0, next_lost = 0, next_trim = 0,
            next_gc = cf_boot_ms() + CATALOG_GC_MS;

    while (!atomic_load(&self->stopping)) {
        int64_t now = cf_boot_ms(), viewed = view_time(self);

        nodeset_maintain(self->ns);
        if (viewed != tended) {
            ccl_tend_trust(self);
            tended = viewed;
        }
        if (now >= next_catalog) {
            ccl_catalog_poll(self);
            next_catalog = now + CATALOG_POLL_MS;
        }
        ccl_history_flush(self);
        ccl_retry_releases(self, 0);
        if (now >= next_history) {
            ccl_history_read(self);
            next_history = now + HISTORY_POLL_MS;
        }
        if (now >= next_lost) {
            ccl_mark_departed_runs(self);
            next_lost = now + LOST_CHECK_MS;
        }
        if (now >= next_trim) {
            ccl_feed_trim(self);
            next_trim = now + FEED_TRIM_MS;
        }
        if (now >= next_gc) {
            ccl_catalog_gc(self);
            next_gc = now + CATALOG_GC_MS;
        }
        /* A catalog announcement makes the next pass poll the catalog at once. */
        if (nodeset_wait_message(self->ns, PUBLISH_MS) > 0)
            next_catalog = 0;
    }
    /* Last chance for releases and states queued during shutdown. */
    ccl_flush_releases(self);
    ccl_history_flush(self);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Status and the rest of the interface                                     */
/* ---------------------------------------------------------------------- */

static json_t *member_json(const struct member *m, bool is_self)
{
    char started[CF_TIME_LEN], seen[CF_TIME_LEN];
    json_t *warnings = json_array();

    if (m->clock_offset_ms > CLOCK_WARN_MS || m->clock_offset_ms < -CLOCK_WARN_MS) {
        char text[96];

        snprintf(text, sizeof(text), "clock offset %lld ms against the Redis nodes",
                 (long long)m->clock_offset_ms);
        json_array_append_new(warnings, json_string(text));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:b, s:s, s:I, s:o}", "id", m->id, "url",
                     m->url, "version", m->version, "started_at",
                     cf_format_time(m->started_at_ms, started), "ordinal", (int)m->ordinal, "self",
                     is_self, "up", 1, "last_seen", cf_format_time(m->seen_ms, seen),
                     "clock_offset_ms", (json_int_t)m->clock_offset_ms, "warnings", warnings);
}

/* A member that left lately, as GET /cluster shows it: up false, with its last_seen. */
static json_t *departed_json(const struct departed_member *m)
{
    char started[CF_TIME_LEN], seen[CF_TIME_LEN];

    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:b, s:s, s:n, s:[]}", "id", m->id, "url",
                     m->url, "version", m->version, "started_at",
                     cf_format_time(m->started_at_ms, started), "ordinal", (int)m->ordinal, "self",
                     0, "up", 0, "last_seen", cf_format_time(m->last_seen_ms, seen),
                     "clock_offset_ms", "warnings");
}

/*
 * The quorum's state (DESIGN §6): healthy when every node counts, degraded
 * when a node is down or untrusted but a quorum is kept, else no_quorum.
 */
static const char *quorum_state(size_t trusted, size_t quorum, size_t n)
{
    if (trusted >= n)
        return "healthy";
    return trusted >= quorum ? "degraded" : "no_quorum";
}

/* Node i as the cluster page shows it; *trusted_out says whether it counts for Q. */
static json_t *node_json(struct coord_cluster *self, size_t i, const struct node_state *node,
                         bool *trusted_out)
{
    struct nodeset_node_info info;
    json_t *warnings = json_array();
    char text[96];

    nodeset_node_info(self->ns, i, &info);
    *trusted_out =
        info.up && node->answered && node->trusted && node->generation == info.generation;
    if (info.warnings[0] != '\0') {
        char *copy = strdup(info.warnings), *save = NULL;

        for (char *w = copy ? strtok_r(copy, ";", &save) : NULL; w != NULL;
             w = strtok_r(NULL, ";", &save))
            json_array_append_new(warnings, json_string(w + (*w == ' ')));
        free(copy);
    }
    if (node->clock_known &&
        (node->clock_offset_ms > CLOCK_WARN_MS || node->clock_offset_ms < -CLOCK_WARN_MS)) {
        snprintf(text, sizeof(text), "clock offset %lld ms", (long long)node->clock_offset_ms);
        json_array_append_new(warnings, json_string(text));
    }
    if (info.up && node->answered && node->generation == info.generation && !node->trusted)
        json_array_append_new(
            warnings, json_string("no trust marker (new or wiped): untrusted until repaired"));
    return json_pack("{s:s, s:b, s:o, s:b, s:o, s:o}", "url", nodeset_address(self->ns, i), "up",
                     info.up, "latency_ms",
                     info.up && info.latency_ms > 0 ? json_real(info.latency_ms) : json_null(),
                     "trusted", *trusted_out, "clock_offset_ms",
                     node->clock_known ? json_integer(node->clock_offset_ms) : json_null(),
                     "warnings", warnings);
}

/* Copies the node table, so the nodeset can be asked without holding state_lock. */
static void snapshot_nodes(struct coord_cluster *self, struct node_state *out)
{
    pthread_mutex_lock(&self->state_lock);
    memcpy(out, self->nodes, self->n * sizeof(*out));
    pthread_mutex_unlock(&self->state_lock);
}

static json_t *cluster_status(struct coord *coord)
{
    struct coord_cluster *self = ccl_from_base(coord);
    json_t *members = json_array(), *nodes = json_array(), *instance;
    struct node_state states[MAX_NODES];
    size_t trusted = 0;
    struct member me = {0};
    bool found = false;

    snprintf(me.id, sizeof(me.id), "%s", self->instance_id);
    snprintf(me.version, sizeof(me.version), "%s", CF_VERSION);
    me.started_at_ms = self->started_at_ms;
    me.seen_ms = cf_wall_ms();
    pthread_mutex_lock(&self->state_lock);
    snprintf(me.url, sizeof(me.url), "%s", self->advertise_url);
    for (size_t i = 0; i < self->member_count; i++) {
        bool is_self = strcmp(self->members[i].id, self->instance_id) == 0;

        json_array_append_new(members, member_json(&self->members[i], is_self));
        if (is_self) {
            me = self->members[i];
            found = true;
        }
    }
    departed_expire(&self->departed, cf_wall_ms());
    for (size_t i = 0; i < self->departed.count; i++)
        json_array_append_new(members, departed_json(&self->departed.items[i]));
    pthread_mutex_unlock(&self->state_lock);
    me.ordinal = atomic_load(&self->ordinal);
    if (!found)
        json_array_append_new(members, member_json(&me, true));
    instance = member_json(&me, true);

    snapshot_nodes(self, states);
    for (size_t i = 0; i < self->n; i++) {
        bool node_trusted_now;

        json_array_append_new(nodes, node_json(self, i, &states[i], &node_trusted_now));
        trusted += node_trusted_now;
    }
    return json_pack("{s:s, s:o, s:o, s:o, s:{s:i, s:i, s:i, s:b, s:s}, s:b}", "mode", "cluster",
                     "instance", instance, "members", members, "nodes", nodes, "quorum", "size",
                     (int)self->n, "needed", (int)self->quorum, "trusted", (int)trusted, "healthy",
                     trusted >= self->quorum, "state", quorum_state(trusted, self->quorum, self->n),
                     "ordinal_held", ccl_ordinal_held(self, NULL));
}

static bool cluster_ready(struct coord *coord)
{
    struct coord_cluster *self = ccl_from_base(coord);
    struct node_state states[MAX_NODES];
    size_t trusted = 0;

    if (!ccl_ordinal_held(self, NULL))
        return false;
    snapshot_nodes(self, states);
    for (size_t i = 0; i < self->n; i++) {
        struct nodeset_node_info info;

        nodeset_node_info(self->ns, i, &info);
        trusted += info.up && states[i].answered && states[i].trusted &&
                   states[i].generation == info.generation;
    }
    return trusted >= self->quorum;
}

static int cluster_set_url(struct coord *coord, const char *url)
{
    struct coord_cluster *self = ccl_from_base(coord);
    char *copy = strdup(url);

    if (copy == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_lock(&self->state_lock);
    free(self->advertise_url);
    self->advertise_url = copy;
    pthread_mutex_unlock(&self->state_lock);
    return CF_OK;
}

static unsigned cluster_ordinal(struct coord *coord)
{
    return atomic_load(&ccl_from_base(coord)->ordinal);
}

static void cluster_set_listener(struct coord *coord, coord_job_changed_fn fn, void *ctx)
{
    struct coord_cluster *self = ccl_from_base(coord);
    char **unheard;
    size_t count;

    pthread_mutex_lock(&self->state_lock);
    self->listener = fn;
    self->listener_ctx = ctx;
    unheard = self->unheard;
    count = self->unheard_count;
    self->unheard = NULL;
    self->unheard_count = self->unheard_cap = 0;
    pthread_mutex_unlock(&self->state_lock);
    for (size_t i = 0; i < count; i++) {
        if (fn != NULL)
            fn(ctx, unheard[i]);
        free(unheard[i]);
    }
    free(unheard);
}

static void cluster_destroy(struct coord *coord)
{
    struct coord_cluster *self = ccl_from_base(coord);

    pthread_mutex_lock(&self->state_lock);
    atomic_store(&self->stopping, true);
    pthread_cond_broadcast(&self->stop_cond);
    pthread_mutex_unlock(&self->state_lock);
    if (self->heartbeat_started)
        pthread_join(self->heartbeat_thread, NULL);
    if (self->thread_started)
        pthread_join(self->thread, NULL);
    if (self->thread_started) {
        int64_t waiting = 0;

        if (db_outbox_count(self->db, &waiting) == CF_OK && waiting > 0)
            log_warn("run states not published yet, kept for the next start", "count=%lld",
                     (long long)waiting);
    }
    while (self->releases != NULL) {
        struct pending_release *next = self->releases->next;

        free(self->releases);
        self->releases = next;
    }
    nodeset_free(self->ns);
    minting_free(self->minting);
    fired_slots_free(self->fired);
    pthread_mutex_destroy(&self->release_lock);
    pthread_mutex_destroy(&self->state_lock);
    pthread_mutex_destroy(&self->catalog_mutex);
    pthread_cond_destroy(&self->catalog_cond);
    pthread_cond_destroy(&self->first_view_cond);
    pthread_cond_destroy(&self->stop_cond);
    free(self->members);
    departed_release(&self->departed);
    for (size_t i = 0; i < self->unheard_count; i++)
        free(self->unheard[i]);
    free(self->unheard);
    free(self->instance_id);
    free(self->advertise_url);
    free(self->prefix);
    free(self);
}

static const struct coord_ops cluster_ops = {
    .claim = ccl_claim,
    .extend = ccl_extend,
    .release = ccl_release,
    .catalog_put = ccl_catalog_put,
    .catalog_delete = ccl_catalog_delete,
    .shares_history = ccl_shares_history,
    .history_queued = ccl_history_queued,
    .fired_until = ccl_fired_until,
    .claim_delay_ms = ccl_claim_delay_ms,
    .rank = ccl_rank,
    .set_listener = cluster_set_listener,
    .set_url = cluster_set_url,
    .ordinal = cluster_ordinal,
    .ready = cluster_ready,
    .status = cluster_status,
    .destroy = cluster_destroy,
};

struct nodeset *coord_cluster_nodeset(struct coord *coord)
{
    return ccl_from_base(coord)->ns;
}

const char *coord_cluster_prefix(struct coord *coord)
{
    return ccl_from_base(coord)->prefix;
}

int coord_cluster_new(const struct coord_cluster_config *cfg, struct coord **out, char *err,
                      size_t errlen)
{
    struct coord_cluster *self = calloc(1, sizeof(*self));
    struct nodeset_config ncfg = {0};
    struct timespec until;
    int ret;

    *out = NULL;
    if (self == NULL)
        return CF_ERR_NOMEM;
    self->base.ops = &cluster_ops;
    self->db = cfg->db;
    self->stagger_ms = cfg->stagger_ms;
    self->node_timeout_ms = cfg->node_timeout_ms;
    self->quarantine_ms = cfg->quarantine_ms;
    self->started_at_ms = cf_wall_ms();
    self->instance_id = strdup(cfg->instance_id);
    self->advertise_url = strdup(cfg->advertise_url);
    self->prefix = strdup(cfg->prefix);
    self->minting = minting_new();
    self->fired = fired_slots_new();
    pthread_mutex_init(&self->state_lock, NULL);
    pthread_mutex_init(&self->release_lock, NULL);
    pthread_cond_init(&self->first_view_cond, NULL);
    cf_monotonic_cond_init(&self->stop_cond);
    pthread_mutex_init(&self->catalog_mutex, NULL);
    pthread_cond_init(&self->catalog_cond, NULL);
    self->catalog_tail = &self->catalog_queue;
    if (self->instance_id == NULL || self->advertise_url == NULL || self->prefix == NULL ||
        self->minting == NULL || self->fired == NULL) {
        cluster_destroy(&self->base);
        return CF_ERR_NOMEM;
    }
    ccl_make_key(self, self->catalog_channel, "catalog", "");
    ccl_make_key(self, self->fired_channel, "fired", "");
    ncfg.urls = cfg->redis_urls;
    ncfg.tls_ca = cfg->redis_ca;
    ncfg.timeout_ms = cfg->node_timeout_ms;
    ncfg.scripts = ccl_scripts;
    ncfg.script_count = S_COUNT;
    ncfg.channels = (const char *const[]){self->catalog_channel, self->fired_channel};
    ncfg.channel_count = 2;
    ncfg.on_message = on_message;
    ncfg.message_ctx = self;
    ret = nodeset_new(&ncfg, &self->ns, err, errlen);
    if (ret == CF_OK && nodeset_size(self->ns) > MAX_NODES) {
        snprintf(err, errlen, "at most %d redis nodes are supported", MAX_NODES);
        ret = CF_ERR_INVALID;
    }
    if (ret != CF_OK) {
        cluster_destroy(&self->base);
        return ret;
    }
    self->n = nodeset_size(self->ns);
    self->quorum = nodeset_quorum(self->ns);
    if (self->n % 2 == 0)
        log_warn("an even number of redis nodes tolerates no more failures than one fewer",
                 "nodes=%zu", self->n);

    /* The first ordinal to try is spread by the id, so instances rarely collide. */
    atomic_store(&self->ordinal, (unsigned)(cf_fnv1a(CF_FNV1A_START, self->instance_id) %
                                            (1u << COORD_ORDINAL_BITS)));

    {
        char epoch[17];

        /*
         * A new name per start: the outbox's seqs are only known to grow
         * within one life of one database file (a restored backup or a copy
         * under the same instance id would reuse them), and the cost is
         * that states left queued by a crash are appended once more.
         */
        if (cf_random_hex(epoch, 8) != CF_OK) {
            snprintf(err, errlen, "cannot draw the outbox epoch");
            cluster_destroy(&self->base);
            return CF_ERR_IO;
        }
        snprintf(self->outbox_field, sizeof(self->outbox_field), "%s/%s", self->instance_id, epoch);
        /* States a previous run of this database left queued go first. */
        atomic_store(&self->outbox_queued, true);
    }
    for (size_t node = 0; node < self->n; node++) {
        char key[KEY_MAX], *pos = NULL;

        ccl_make_key(self, key, "history_pos:", nodeset_address(self->ns, node));
        snprintf(self->history_pos[node], sizeof(self->history_pos[node]), "0-0");
        if (db_meta_get(self->db, key, &pos) == CF_OK &&
            strlen(pos) < sizeof(self->history_pos[node]))
            snprintf(self->history_pos[node], sizeof(self->history_pos[node]), "%s", pos);
        free(pos);
    }

    if (pthread_create(&self->heartbeat_thread, NULL, heartbeat_main, self) != 0) {
        cluster_destroy(&self->base);
        return CF_ERR_NOMEM;
    }
    self->heartbeat_started = true;
    if (pthread_create(&self->thread, NULL, cluster_main, self) != 0) {
        cluster_destroy(&self->base);
        return CF_ERR_NOMEM;
    }
    self->thread_started = true;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += START_WAIT_MS / 1000;
    pthread_mutex_lock(&self->state_lock);
    while (!self->first_view &&
           pthread_cond_timedwait(&self->first_view_cond, &self->state_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&self->state_lock);
    *out = &self->base;
    return CF_OK;
}
