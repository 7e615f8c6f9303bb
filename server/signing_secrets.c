/*
 * signing_secrets.c - the default signing secret: kept in the database
 * standalone, on the lock nodes as a max-register in a cluster (see the
 * header for the rules).
 */
#include "signing_secrets.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "log.h"
#include "nodeset.h"

/* How often a cluster instance reads the nodes' secret, repairing those that lag. */
#define POLL_MS 1000
/* ... and while it knows no secret at all (nothing it delivers could be signed). */
#define POLL_UNKNOWN_MS 100
/* How long start-up waits for a quorum to read or create the cluster's secret. */
#define START_WAIT_MS 2000
/* A write is worth a slow fsync: each node gets at least this long. */
#define WRITE_WAIT_MS 250
/* Random bytes of a generated secret (64 hex digits). */
#define SECRET_RANDOM_BYTES 32
#define KEY_LEN 160

/*
 * The max-register write: a node keeps the offered value when it is greater
 * (version, then current bytewise) than what it holds. Replies 1 when the
 * node now holds the offered value, 0 when it holds a greater one.
 */
static const char script_offer[] =
    "local held = redis.call('HMGET', KEYS[1], 'version', 'current')\n"
    "local v = tonumber(held[1]) or 0\n"
    "local c = held[2] or ''\n"
    "local nv = tonumber(ARGV[1])\n"
    "if nv > v or (nv == v and ARGV[2] > c) then\n"
    "  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'current', ARGV[2], 'previous', ARGV[3],\n"
    "             'rotated_at', ARGV[4])\n"
    "  return 1\n"
    "end\n"
    "if nv == v and ARGV[2] == c then return 1 end\n"
    "return 0\n";

/*
 * lock guards state; store_lock serialises what changes the register (the
 * database handle, rounds that write), so a rotation never interleaves with
 * a poll. store_lock is taken before lock, never inside it.
 */
struct signing_secrets {
    struct db *db;
    struct nodeset *ns; /* NULL standalone */
    char key[KEY_LEN];
    char *flag;
    int64_t overlap_ms;
    pthread_mutex_t lock;
    pthread_mutex_t store_lock;
    struct signing_secret_state state;
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;
    pthread_mutex_t wait_lock;
    pthread_cond_t wake;
};

/* Whether a is greater than b in the register's order. */
static bool state_greater(const struct signing_secret_state *a,
                          const struct signing_secret_state *b)
{
    return a->version > b->version ||
           (a->version == b->version && strcmp(a->current, b->current) > 0);
}

static bool state_equal(const struct signing_secret_state *a, const struct signing_secret_state *b)
{
    return a->version == b->version && strcmp(a->current, b->current) == 0;
}

static void copy_secret(char *out, const char *text, size_t len)
{
    if (len > SIGNING_SECRET_MAX)
        len = SIGNING_SECRET_MAX;
    memcpy(out, text, len);
    out[len] = '\0';
}

/* A fresh random secret into out. CF_OK or CF_ERR_IO. */
static int random_secret(char out[SIGNING_SECRET_MAX + 1])
{
    return cf_random_hex(out, SECRET_RANDOM_BYTES);
}

/* ---------------------------------------------------------------------- */
/* The database copy                                                        */
/* ---------------------------------------------------------------------- */

static int64_t meta_int(struct db *db, const char *key)
{
    char *text = NULL;
    int64_t value = 0;

    if (db_meta_get(db, key, &text) == CF_OK)
        value = strtoll(text, NULL, 10);
    free(text);
    return value;
}

/* Reads the kept state (version 0 when none). CF_OK or CF_ERR_DB. */
static int load_local(struct db *db, struct signing_secret_state *out)
{
    char *text = NULL;
    int ret;

    memset(out, 0, sizeof(*out));
    ret = db_meta_get(db, "signing_secret", &text);
    if (ret == CF_ERR_NOT_FOUND)
        return CF_OK;
    if (ret != CF_OK)
        return ret;
    copy_secret(out->current, text, strlen(text));
    free(text);
    text = NULL;
    if (db_meta_get(db, "signing_secret_previous", &text) == CF_OK)
        copy_secret(out->previous, text, strlen(text));
    free(text);
    out->rotated_at_ms = meta_int(db, "signing_secret_rotated_at");
    /* A secret kept before rotation existed is version 1. */
    out->version = meta_int(db, "signing_secret_version");
    if (out->version < 1)
        out->version = 1;
    return CF_OK;
}

/* Keeps state in the database; current last, so a torn write keeps the old current. */
static int store_local(struct db *db, const struct signing_secret_state *state)
{
    char version[24], rotated_at[24];
    int ret;

    snprintf(version, sizeof(version), "%" PRId64, state->version);
    snprintf(rotated_at, sizeof(rotated_at), "%" PRId64, state->rotated_at_ms);
    ret = db_meta_set(db, "signing_secret_previous", state->previous);
    if (ret == CF_OK)
        ret = db_meta_set(db, "signing_secret_rotated_at", rotated_at);
    if (ret == CF_OK)
        ret = db_meta_set(db, "signing_secret_version", version);
    if (ret == CF_OK)
        ret = db_meta_set(db, "signing_secret", state->current);
    return ret;
}

/* Makes state the one in use and kept; the store lock is held. */
static void adopt(struct signing_secrets *ss, const struct signing_secret_state *state)
{
    pthread_mutex_lock(&ss->lock);
    ss->state = *state;
    pthread_mutex_unlock(&ss->lock);
    if (store_local(ss->db, state) != CF_OK)
        log_warn("signing secret not kept in the database", "version=%" PRId64, state->version);
}

/* ---------------------------------------------------------------------- */
/* The nodes                                                                */
/* ---------------------------------------------------------------------- */

/* Fills out from an HMGET version current previous rotated_at reply; false when malformed. */
static bool parse_node_state(const redisReply *reply, struct signing_secret_state *out)
{
    memset(out, 0, sizeof(*out));
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
        return false;
    for (size_t i = 0; i < 4; i++) {
        const redisReply *e = reply->element[i];

        if (e->type == REDIS_REPLY_NIL)
            continue;
        if (e->type != REDIS_REPLY_STRING)
            return false;
        if (i == 0)
            out->version = strtoll(e->str, NULL, 10);
        else if (i == 1)
            copy_secret(out->current, e->str, e->len);
        else if (i == 2)
            copy_secret(out->previous, e->str, e->len);
        else
            out->rotated_at_ms = strtoll(e->str, NULL, 10);
    }
    if (out->version < 0 || (out->version > 0 && out->current[0] == '\0'))
        memset(out, 0, sizeof(*out));
    return true;
}

/*
 * Reads every node into held (answered[i] says which replied) and the
 * greatest value into *best. Returns how many nodes answered.
 */
static size_t read_nodes(struct signing_secrets *ss, struct signing_secret_state *held,
                         bool *answered, struct signing_secret_state *best)
{
    size_t n = nodeset_size(ss->ns), count = 0;
    struct nodeset_round *round = nodeset_round_begin(ss->ns);
    int *index = calloc(n, sizeof(*index));

    memset(best, 0, sizeof(*best));
    if (index == NULL) {
        nodeset_round_end(round);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        index[i] = -1;
        if (nodeset_round_node_up(round, i))
            index[i] = nodeset_round_command(
                round, i, 6,
                (const char *[]){"HMGET", ss->key, "version", "current", "previous", "rotated_at"},
                NULL);
    }
    nodeset_round_exec_within(round, WRITE_WAIT_MS);
    for (size_t i = 0; i < n; i++) {
        answered[i] =
            index[i] >= 0 && parse_node_state(nodeset_round_reply(round, i, index[i]), &held[i]);
        if (!answered[i])
            continue;
        count++;
        if (state_greater(&held[i], best))
            *best = held[i];
    }
    nodeset_round_end(round);
    free(index);
    return count;
}

/*
 * Offers state to the nodes marked in to (all when to is NULL). Returns how
 * many nodes now hold it.
 */
static size_t offer_nodes(struct signing_secrets *ss, const struct signing_secret_state *state,
                          const bool *to)
{
    size_t n = nodeset_size(ss->ns), acks = 0;
    struct nodeset_round *round = nodeset_round_begin(ss->ns);
    int *index = calloc(n, sizeof(*index));
    char version[24], rotated_at[24];

    if (index == NULL) {
        nodeset_round_end(round);
        return 0;
    }
    snprintf(version, sizeof(version), "%" PRId64, state->version);
    snprintf(rotated_at, sizeof(rotated_at), "%" PRId64, state->rotated_at_ms);
    for (size_t i = 0; i < n; i++) {
        index[i] = -1;
        if ((to == NULL || to[i]) && nodeset_round_node_up(round, i))
            index[i] =
                nodeset_round_command(round, i, 8,
                                      (const char *[]){"EVAL", script_offer, "1", ss->key, version,
                                                       state->current, state->previous, rotated_at},
                                      NULL);
    }
    nodeset_round_exec_within(round, WRITE_WAIT_MS);
    for (size_t i = 0; i < n; i++) {
        const redisReply *reply = index[i] >= 0 ? nodeset_round_reply(round, i, index[i]) : NULL;

        if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
            acks++;
    }
    nodeset_round_end(round);
    free(index);
    return acks;
}

/*
 * One poll: reads the nodes, takes the greatest value among theirs and the
 * one in use (creating the first secret when a quorum holds none), writes
 * it onto the nodes that hold less, and adopts it. The store lock is held.
 * CF_OK, or CF_ERR_NO_QUORUM when fewer than Q nodes answered (what was
 * learnt is adopted all the same), CF_ERR_IO, CF_ERR_NOMEM.
 */
static int sync_nodes(struct signing_secrets *ss)
{
    size_t n = nodeset_size(ss->ns), answered_count, lagging = 0;
    struct signing_secret_state *held = calloc(n, sizeof(*held));
    bool *answered = calloc(n, sizeof(*answered)), *behind = calloc(n, sizeof(*behind));
    struct signing_secret_state best, local;
    int ret = CF_OK;

    if (held == NULL || answered == NULL || behind == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }
    answered_count = read_nodes(ss, held, answered, &best);
    signing_secrets_get(ss, &local);
    if (state_greater(&local, &best))
        best = local;
    if (best.version == 0) {
        if (answered_count < nodeset_quorum(ss->ns)) {
            ret = CF_ERR_NO_QUORUM;
            goto out;
        }
        /* No node and no instance knows a secret: this one creates the cluster's. */
        best.version = 1;
        if (ss->flag != NULL)
            copy_secret(best.current, ss->flag, strlen(ss->flag));
        else if (random_secret(best.current) != CF_OK) {
            ret = CF_ERR_IO;
            goto out;
        }
        log_info("cluster signing secret created", "source=%s",
                 ss->flag != NULL ? "--signing-secret" : "random");
    }
    for (size_t i = 0; i < n; i++) {
        behind[i] = answered[i] && !state_equal(&held[i], &best);
        if (behind[i])
            lagging++;
    }
    if (lagging > 0) {
        size_t acks = offer_nodes(ss, &best, behind);

        if (acks < lagging)
            log_debug("signing secret not written on every node", "nodes=%zu written=%zu", lagging,
                      acks);
    }
    if (!state_equal(&local, &best))
        adopt(ss, &best);
    if (answered_count < nodeset_quorum(ss->ns))
        ret = CF_ERR_NO_QUORUM;
out:
    free(held);
    free(answered);
    free(behind);
    return ret;
}

static void *poll_main(void *arg)
{
    struct signing_secrets *ss = arg;

    while (!atomic_load(&ss->stopping)) {
        struct signing_secret_state state;
        struct timespec until;

        pthread_mutex_lock(&ss->store_lock);
        sync_nodes(ss);
        pthread_mutex_unlock(&ss->store_lock);
        signing_secrets_get(ss, &state);

        pthread_mutex_lock(&ss->wait_lock);
        cf_monotonic_deadline(state.version > 0 ? POLL_MS : POLL_UNKNOWN_MS, &until);
        if (!atomic_load(&ss->stopping))
            pthread_cond_timedwait(&ss->wake, &ss->wait_lock, &until);
        pthread_mutex_unlock(&ss->wait_lock);
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Start-up                                                                 */
/* ---------------------------------------------------------------------- */

/*
 * Whether --signing-secret changed since the last start: its SHA-256 is kept
 * (never the value twice), so a restart with the same flag keeps a rotation
 * made through the API. *changed is false without a flag. CF_OK or CF_ERR_DB.
 */
static int flag_changed(struct signing_secrets *ss, bool *changed)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1], *kept = NULL;
    int ret;

    *changed = false;
    if (ss->flag == NULL)
        return CF_OK;
    SHA256((const unsigned char *)ss->flag, strlen(ss->flag), digest);
    cf_hex(digest, sizeof(digest), hex);
    ret = db_meta_get(ss->db, "signing_secret_flag_sha256", &kept);
    if (ret != CF_OK && ret != CF_ERR_NOT_FOUND)
        return ret;
    *changed = kept == NULL || strcmp(kept, hex) != 0;
    free(kept);
    return *changed ? db_meta_set(ss->db, "signing_secret_flag_sha256", hex) : CF_OK;
}

/*
 * Standalone: the kept secret; the flag seeds it, and a flag changed since
 * the last start rotates to it; else a fresh one.
 */
static int start_standalone(struct signing_secrets *ss)
{
    struct signing_secret_state state = ss->state;
    bool changed;
    int ret = flag_changed(ss, &changed);

    if (ret != CF_OK)
        return ret;
    if (state.version == 0) {
        state.version = 1;
        if (ss->flag != NULL)
            copy_secret(state.current, ss->flag, strlen(ss->flag));
        else if (random_secret(state.current) != CF_OK)
            return CF_ERR_IO;
    } else if (changed && strcmp(ss->flag, state.current) != 0) {
        /* The operator changed the flag: a rotation, the old secret valid for the overlap. */
        state.version++;
        memcpy(state.previous, state.current, sizeof(state.previous));
        copy_secret(state.current, ss->flag, strlen(ss->flag));
        state.rotated_at_ms = cf_wall_ms();
        log_info("signing secret rotated", "source=--signing-secret version=%" PRId64,
                 state.version);
    } else {
        return CF_OK;
    }
    ss->state = state;
    return store_local(ss->db, &state);
}

/* Cluster: a first poll within START_WAIT_MS, then the polling thread. */
static int start_cluster(struct signing_secrets *ss)
{
    int64_t until = cf_boot_ms() + START_WAIT_MS;
    struct signing_secret_state state;
    int ret;

    for (;;) {
        pthread_mutex_lock(&ss->store_lock);
        ret = sync_nodes(ss);
        pthread_mutex_unlock(&ss->store_lock);
        if (ret == CF_OK || cf_boot_ms() >= until)
            break;
        cf_sleep_ms(100);
    }
    signing_secrets_get(ss, &state);
    if (ret != CF_OK)
        log_warn("cluster signing secret not read yet", "error=\"%s\" known=%s", cf_err_str(ret),
                 state.version > 0 ? "true" : "false");
    else if (ss->flag != NULL && strcmp(ss->flag, state.current) != 0)
        log_warn("--signing-secret differs from the cluster's secret, signing with the cluster's",
                 "version=%" PRId64, state.version);
    if (pthread_create(&ss->thread, NULL, poll_main, ss) != 0)
        return CF_ERR_IO;
    ss->thread_started = true;
    return CF_OK;
}

int signing_secrets_new(const struct signing_secrets_config *cfg, struct signing_secrets **out,
                        char *err, size_t errlen)
{
    struct signing_secrets *ss;
    int ret;

    *out = NULL;
    if (cfg->flag != NULL && (strlen(cfg->flag) < 16 || strlen(cfg->flag) > SIGNING_SECRET_MAX)) {
        snprintf(err, errlen, "--signing-secret must be 16 to %d bytes long", SIGNING_SECRET_MAX);
        return CF_ERR_INVALID;
    }
    ss = calloc(1, sizeof(*ss));
    if (ss == NULL)
        return CF_ERR_NOMEM;
    ss->db = cfg->db;
    ss->overlap_ms = cfg->overlap_ms;
    pthread_mutex_init(&ss->lock, NULL);
    pthread_mutex_init(&ss->store_lock, NULL);
    pthread_mutex_init(&ss->wait_lock, NULL);
    cf_monotonic_cond_init(&ss->wake);
    if (cfg->flag != NULL) {
        ss->flag = strdup(cfg->flag);
        if (ss->flag == NULL) {
            ret = CF_ERR_NOMEM;
            goto fail;
        }
    }
    ret = load_local(ss->db, &ss->state);
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot read the signing secret: %s", cf_err_str(ret));
        goto fail;
    }
    if (cfg->cluster != NULL) {
        ss->ns = coord_cluster_nodeset(cfg->cluster);
        snprintf(ss->key, sizeof(ss->key), "%ssecret", coord_cluster_prefix(cfg->cluster));
        ret = start_cluster(ss);
    } else {
        ret = start_standalone(ss);
    }
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot set up the signing secret: %s", cf_err_str(ret));
        goto fail;
    }
    *out = ss;
    return CF_OK;
fail:
    signing_secrets_free(ss);
    return ret;
}

void signing_secrets_free(struct signing_secrets *ss)
{
    if (ss == NULL)
        return;
    if (ss->thread_started) {
        pthread_mutex_lock(&ss->wait_lock);
        atomic_store(&ss->stopping, true);
        pthread_cond_signal(&ss->wake);
        pthread_mutex_unlock(&ss->wait_lock);
        pthread_join(ss->thread, NULL);
    }
    pthread_mutex_destroy(&ss->lock);
    pthread_mutex_destroy(&ss->store_lock);
    pthread_mutex_destroy(&ss->wait_lock);
    pthread_cond_destroy(&ss->wake);
    /* The secrets do not outlive the holder in freed memory. */
    OPENSSL_cleanse(&ss->state, sizeof(ss->state));
    if (ss->flag != NULL)
        OPENSSL_cleanse(ss->flag, strlen(ss->flag));
    free(ss->flag);
    free(ss);
}

/* ---------------------------------------------------------------------- */
/* Use                                                                      */
/* ---------------------------------------------------------------------- */

void signing_secrets_get(struct signing_secrets *ss, struct signing_secret_state *out)
{
    pthread_mutex_lock(&ss->lock);
    *out = ss->state;
    pthread_mutex_unlock(&ss->lock);
}

int signing_secrets_rotate(struct signing_secrets *ss, struct signing_secret_state *out)
{
    struct signing_secret_state base, next;
    int ret;

    pthread_mutex_lock(&ss->store_lock);
    if (ss->ns != NULL) {
        /* Rotate from the newest value the cluster holds, not a stale copy. */
        ret = sync_nodes(ss);
        if (ret != CF_OK)
            goto out;
    }
    signing_secrets_get(ss, &base);
    memset(&next, 0, sizeof(next));
    next.version = base.version + 1;
    memcpy(next.previous, base.current, sizeof(next.previous));
    next.rotated_at_ms = cf_wall_ms();
    ret = random_secret(next.current);
    if (ret != CF_OK)
        goto out;
    if (ss->ns != NULL && offer_nodes(ss, &next, NULL) < nodeset_quorum(ss->ns)) {
        ret = CF_ERR_NO_QUORUM;
        goto out;
    }
    if (ss->ns == NULL) {
        ret = store_local(ss->db, &next);
        if (ret != CF_OK)
            goto out;
        pthread_mutex_lock(&ss->lock);
        ss->state = next;
        pthread_mutex_unlock(&ss->lock);
    } else {
        adopt(ss, &next);
    }
    *out = next;
    log_info("signing secret rotated", "source=api version=%" PRId64, next.version);
out:
    pthread_mutex_unlock(&ss->store_lock);
    return ret;
}

/* Whether the previous secret of state still signs at now_ms. */
static bool previous_valid(const struct signing_secrets *ss,
                           const struct signing_secret_state *state, int64_t now_ms)
{
    return state->previous[0] != '\0' && now_ms - state->rotated_at_ms < ss->overlap_ms;
}

/* Appends secret to out unless it is empty, there already, or out is full. */
static void add_secret(char out[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1], size_t *count,
                       const char *secret)
{
    if (secret == NULL || secret[0] == '\0' || *count == SIGNATURE_SECRETS_MAX)
        return;
    for (size_t i = 0; i < *count; i++)
        if (strcmp(out[i], secret) == 0)
            return;
    copy_secret(out[(*count)++], secret, strlen(secret));
}

size_t signing_secrets_for_job(struct signing_secrets *ss, const struct job *job, int64_t now_ms,
                               char out[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1])
{
    bool own = job != NULL && job->signing_secret != NULL;
    bool changed = job != NULL && job->signing_secret_changed_at_ms > 0 &&
                   now_ms - job->signing_secret_changed_at_ms < ss->overlap_ms;
    bool default_signs = !own || (changed && job->previous_signing_secret == NULL);
    size_t count = 0;

    pthread_mutex_lock(&ss->lock);
    if (own)
        add_secret(out, &count, job->signing_secret);
    if (default_signs && ss->state.version > 0)
        add_secret(out, &count, ss->state.current);
    if (changed && job->previous_signing_secret != NULL)
        add_secret(out, &count, job->previous_signing_secret);
    if (default_signs && previous_valid(ss, &ss->state, now_ms))
        add_secret(out, &count, ss->state.previous);
    pthread_mutex_unlock(&ss->lock);
    return count;
}

int signing_secrets_carry(const struct job *before, struct job *after, int64_t now_ms)
{
    const char *previous;
    char *copy = NULL;
    int64_t changed_at;

    if (before == NULL)
        return CF_OK;
    if ((before->signing_secret == NULL) != (after->signing_secret == NULL) ||
        (before->signing_secret != NULL &&
         strcmp(before->signing_secret, after->signing_secret) != 0)) {
        previous = before->signing_secret;
        changed_at = now_ms;
    } else {
        previous = before->previous_signing_secret;
        changed_at = before->signing_secret_changed_at_ms;
    }
    if (previous != NULL) {
        copy = strdup(previous);
        if (copy == NULL)
            return CF_ERR_NOMEM;
    }
    free(after->previous_signing_secret);
    after->previous_signing_secret = copy;
    after->signing_secret_changed_at_ms = changed_at;
    return CF_OK;
}

json_t *signing_secrets_json(struct signing_secrets *ss)
{
    struct signing_secret_state state;
    char when[CF_TIME_LEN];
    json_t *doc;

    signing_secrets_get(ss, &state);
    doc = json_pack(
        "{s:s?, s:o, s:o}", "current", state.version > 0 ? state.current : NULL, "previous",
        previous_valid(ss, &state, cf_wall_ms()) ? json_string(state.previous) : json_null(),
        "rotated_at",
        state.rotated_at_ms > 0 ? json_string(cf_format_time(state.rotated_at_ms, when))
                                : json_null());
    OPENSSL_cleanse(&state, sizeof(state));
    return doc;
}
