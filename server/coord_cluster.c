/*
 * coord_cluster.c - the cluster coordinator: Redlock over N independent
 * Redis nodes with quorum fencing tokens (DESIGN §4).
 *
 * Claims, extensions, releases and catalog writes run on the caller's thread
 * as rounds over the nodeset. Everything periodic runs on one background
 * thread: reconnecting nodes, the membership heartbeat (which also holds this
 * instance's ordinal and reads each node's trust marker and clock), node
 * bootstrap and repair, the catalog poll (woken early by pub/sub), the run
 * history feed in both directions, and marking the runs of instances that
 * left the cluster as lost.
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
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "coord.h"
#include "db.h"
#include "departed.h"
#include "fired_slots.h"
#include "log.h"
#include "minting.h"
#include "nodeset.h"

/* The catalog lock is the claim path on this pseudo-job, which no job name can match. */
#define CATALOG_JOB "__catalog"
#define CATALOG_LEASE_MS 10000
/* How long a catalog write waits for the catalog lock. */
#define CATALOG_WAIT_MS 3000
#define CATALOG_PAGE 500
#define CATALOG_POLL_MS 1000
#define TOMBSTONE_TTL_MS (7 * 86400000LL)
#define CATALOG_GC_MS 600000
#define HEARTBEAT_MS 1000
#define MEMBER_TTL_MS 5000
#define HISTORY_POLL_MS 250
#define HISTORY_PAGE "1000"
/*
 * The run feed is trimmed to what every live member has read (see
 * script_feed_trim), so a reader that falls behind, pauses or restarts
 * loses nothing; this hard cap only bounds a node's memory when a reader
 * stays behind for long.
 */
#define HISTORY_MAXLEN "1000000"
#define FEED_TRIM_MS 5000
/* A reader of the run feed silent for longer is forgotten, and the feed trimmed past it. */
#define READER_TTL "120000"
#define PUBLISH_MS 50
/* Outbox states per publishing pass, appended in script calls of PUBLISH_CHUNK. */
#define PUBLISH_BATCH 1000
#define PUBLISH_CHUNK 100
#define LOST_CHECK_MS 5000
/* A run of a departed instance is called lost only when it started this long ago. */
#define LOST_AFTER_MS 10000
#define CLOCK_WARN_MS 1000
#define MAX_NODES 15
#define MIN_QUARANTINE_MS 60000
/* How long coord_cluster_new waits for a first view of the nodes. */
#define START_WAIT_MS 2000
#define KEY_MAX (RUN_ID_MAX + 128)
/* How long the commit round waits for each node, at least. */
#define COMMIT_WAIT_MS 250
/*
 * How long a heartbeat waits for each node, at least. Rounds run at once,
 * so a slow heartbeat holds up no claim; cut at the claim timeout, a busy
 * machine would lose its ordinal and its view of the members, and with
 * them every claim, though the nodes are fine.
 */
#define HEARTBEAT_WAIT_MS 250
/*
 * How long a stopping coordinator keeps retrying the releases nodes have
 * not confirmed: a lock left behind would keep every peer off its job
 * until the lease ran out.
 */
#define STOP_RELEASE_MS 2000

/* ---------------------------------------------------------------------- */
/* Lua scripts (DESIGN §4.2-4.8); every key is passed in, prefixed         */
/* ---------------------------------------------------------------------- */

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

/*
 * Claim: FIRED with fence.last when fence.last >= T (scheduled slots only);
 * else the lock with NX PX, and whether the job's fence exists on the node
 * (the commit then need not note the job for repair); BUSY with the
 * holder's value when taken, and whether the holder committed its claim on
 * this node: fence.held is its value (the commit script sets it), or
 * fence.last reached its T (a holder whose commit predates fence.held).
 * Every reply carries the node's committed token and whether the node holds
 * its trust marker. Four commands with the call itself (DESIGN §4.2).
 * KEYS: lock, fence, marker. ARGV: value "<nonce>:<T>", T, lease_ms, advance.
 */
static const char script_claim[] =
    "local trusted = redis.call('EXISTS', KEYS[3])\n"
    "local fence = redis.call('HMGET', KEYS[2], 'token', 'last', 'held')\n"
    "local token, last = fence[1] or '0', fence[2]\n"
    "if ARGV[4] == '1' and last and tonumber(last) >= tonumber(ARGV[2]) then\n"
    "  return {'FIRED', token, trusted, last}\n"
    "end\n"
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then\n"
    "  return {'OK', token, trusted, fence[1] and 1 or 0}\n"
    "end\n"
    "local holder = redis.call('GET', KEYS[1]) or ''\n"
    "local committed = 0\n"
    "local slot = tonumber(string.match(holder, ':(%d+)$') or '')\n"
    "if holder ~= '' and fence[3] == holder then\n"
    "  committed = 1\n"
    "elseif slot and last and tonumber(last) >= slot then\n"
    "  committed = 1\n"
    "end\n"
    "return {'BUSY', token, trusted, holder, committed}\n";

/*
 * Commit: only while we still hold the lock, raise fence.token (and
 * fence.last) to ours, never lowering them, and note our lock value as
 * fence.held, so that a claim finding the lock taken can tell a committed
 * holder (a run that may be in flight) from one that never committed. A
 * job's lock (not a slot's) is exclusive: no one else committed on this
 * node since our claim read the fence below our token and T, so the fence
 * is written without reading it again. A fence the claim found missing is
 * noted in the fence set, for repair. The run it starts, "running", goes to
 * the run feed (DESIGN §4.7), so that a committed claim leaves a record
 * even if its instance dies before it writes anything else; and on one
 * node, "<T> <job>" is announced on the fired channel, so lower ranks skip
 * their claims (DESIGN §4.4). The reply is 1 when committed here, else 0;
 * the trust marker is not read again: the lock we set in the claim is still
 * ours, so the node has kept its data, marker included, since the claim.
 * KEYS: lock, fence, fence set, run feed, fired channel.
 * ARGV: value, token, T, advance, job, feed maxlen, run JSON ('' for none),
 * exclusive, new fence, announce.
 */
static const char script_commit[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "if ARGV[8] == '1' then\n"
    "  if ARGV[4] == '1' then\n"
    "    redis.call('HSET', KEYS[2], 'token', ARGV[2], 'last', ARGV[3], 'held', ARGV[1])\n"
    "  else\n"
    "    redis.call('HSET', KEYS[2], 'token', ARGV[2], 'held', ARGV[1])\n"
    "  end\n"
    "else\n"
    "  local fence = redis.call('HMGET', KEYS[2], 'token', 'last')\n"
    "  local raise = {}\n"
    "  if not fence[1] or tonumber(fence[1]) < tonumber(ARGV[2]) then\n"
    "    raise[#raise + 1] = 'token'\n"
    "    raise[#raise + 1] = ARGV[2]\n"
    "  end\n"
    "  if ARGV[4] == '1' and (not fence[2] or tonumber(fence[2]) < tonumber(ARGV[3])) then\n"
    "    raise[#raise + 1] = 'last'\n"
    "    raise[#raise + 1] = ARGV[3]\n"
    "  end\n"
    "  if #raise > 0 then redis.call('HSET', KEYS[2], unpack(raise)) end\n"
    "end\n"
    "if ARGV[9] == '1' then redis.call('SADD', KEYS[3], ARGV[5]) end\n"
    "if ARGV[7] ~= '' then\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'run', ARGV[7])\n"
    "end\n"
    "if ARGV[10] == '1' then redis.call('PUBLISH', KEYS[5], ARGV[3] .. ' ' .. ARGV[5]) end\n"
    "return 1\n";

/* Extend: PEXPIRE only while the lock is ours; never re-creates it. KEYS: lock, marker. */
static const char script_extend[] = "local trusted = redis.call('EXISTS', KEYS[2])\n"
                                    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                    "  return {1, trusted}\n"
                                    "end\n"
                                    "return {0, trusted}\n";

/* Release: DEL only while the lock is ours. KEYS: lock. */
static const char script_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* fence.last and the trust marker. KEYS: fence, marker. */
static const char script_fence_read[] =
    "return {redis.call('HGET', KEYS[1], 'last') or '0', redis.call('EXISTS', KEYS[2])}\n";

/* Repair: raise a fence to at least the given values. KEYS: fence, fence set. ARGV: token, last,
 * job. */
static const char script_fence_raise[] =
    "local token = redis.call('HGET', KEYS[1], 'token')\n"
    "if not token or tonumber(token) < tonumber(ARGV[1]) then\n"
    "  redis.call('HSET', KEYS[1], 'token', ARGV[1])\n"
    "end\n"
    "local last = redis.call('HGET', KEYS[1], 'last')\n"
    "if tonumber(ARGV[2]) > 0 and (not last or tonumber(last) < tonumber(ARGV[2])) then\n"
    "  redis.call('HSET', KEYS[1], 'last', ARGV[2])\n"
    "end\n"
    "redis.call('SADD', KEYS[2], ARGV[3])\n"
    "return 1\n";

/* Every fence, as name, token, last triples. KEYS: fence set. ARGV: fence key prefix. */
static const char script_fence_dump[] =
    "local out = {}\n"
    "for _, job in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local f = redis.call('HMGET', ARGV[1] .. job, 'token', 'last')\n"
    "  out[#out + 1] = job\n"
    "  out[#out + 1] = f[1] or '0'\n"
    "  out[#out + 1] = f[2] or '0'\n"
    "end\n"
    "return out\n";

/*
 * Catalog write, guarded by version: 1 written, 0 already there, -1 a newer
 * version is there. KEYS: job key, jobs zset. ARGV: name, version, json, ttl_ms.
 */
static const char script_catalog_write[] =
    "local current = redis.call('ZSCORE', KEYS[2], ARGV[1])\n"
    "if current and redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  if tonumber(current) > tonumber(ARGV[2]) then return -1 end\n"
    "  if tonumber(current) == tonumber(ARGV[2]) then return 0 end\n"
    "end\n"
    "if ARGV[4] ~= '0' then\n"
    "  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])\n"
    "else\n"
    "  redis.call('SET', KEYS[1], ARGV[3])\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])\n"
    "return 1\n";

/*
 * Catalog entries with a version above ARGV[1], oldest first, at most
 * ARGV[2], as name, version, json triples (json '' when expired).
 * KEYS: jobs zset. ARGV: after, limit, job key prefix.
 */
static const char script_catalog_since[] =
    "local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf',\n"
    "                           'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))\n"
    "local out = {}\n"
    "for i = 1, #entries, 2 do\n"
    "  out[#out + 1] = entries[i]\n"
    "  out[#out + 1] = entries[i + 1]\n"
    "  out[#out + 1] = redis.call('GET', ARGV[3] .. entries[i]) or ''\n"
    "end\n"
    "return out\n";

/* Drops catalog index entries whose tombstone expired. KEYS: jobs zset. ARGV: job key prefix. */
static const char script_catalog_gc[] =
    "local removed = 0\n"
    "for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  if redis.call('EXISTS', ARGV[1] .. name) == 0 then\n"
    "    redis.call('ZREM', KEYS[1], name)\n"
    "    removed = removed + 1\n"
    "  end\n"
    "end\n"
    "return removed\n";

/*
 * Heartbeat (DESIGN §4.8): refreshes this member (unless its URL is still
 * unknown, ARGV[2] empty: members are only shown with a URL) and its ordinal
 * reservation, drops members not seen for the TTL (by the node's clock), and
 * returns {node time ms, ordinal held 0/1, trusted 0/1, then per live
 * member: id, url, version, started_at, clock, ordinal, seen}.
 * KEYS: members zset, member hash, ordinal key, marker.
 * ARGV: id, url, version, started_at, clock, ordinal, member prefix, ttl_ms.
 */
static const char script_heartbeat[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[8])\n"
    "local held = 0\n"
    "local holder = redis.call('GET', KEYS[3])\n"
    "if not holder then\n"
    "  redis.call('SET', KEYS[3], ARGV[1], 'PX', ttl * 2)\n"
    "  held = 1\n"
    "elseif holder == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[3], ttl * 2)\n"
    "  held = 1\n"
    "end\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('HSET', KEYS[2], 'url', ARGV[2], 'version', ARGV[3], 'started_at', ARGV[4],\n"
    "             'clock', ARGV[5], 'ordinal', ARGV[6], 'seen', string.format('%d', now))\n"
    "  redis.call('PEXPIRE', KEYS[2], ttl)\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)\n"
    "local out = {string.format('%d', now), held, redis.call('EXISTS', KEYS[4])}\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  local m = redis.call('HMGET', ARGV[7] .. id, 'url', 'version', 'started_at', 'clock',\n"
    "                       'ordinal', 'seen')\n"
    "  if m[1] then\n"
    "    out[#out + 1] = id\n"
    "    for k = 1, 6 do out[#out + 1] = m[k] or '' end\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * Publish (DESIGN §4.7): appends run states from one instance's outbox to
 * the run feed, each once. A state is named by its outbox seq under the
 * field of the instance's database; states are sent in seq order on one
 * connection, so every seq up to the highest appended is on this node and a
 * resend after a timeout appends nothing twice. A call that follows another
 * of the same batch names the last seq of that one (ARGV[3], 0 for none):
 * unless the node took it, this one appends nothing, so a chunk the node
 * refused (out of memory, say) is never jumped over. Returns the highest
 * seq the node holds.
 * KEYS: run feed, published hash. ARGV: field, maxlen, previous seq, then
 * seq, JSON pairs.
 */
static const char script_publish[] =
    "local high = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n"
    "if tonumber(ARGV[3]) > high then return high end\n"
    "for i = 4, #ARGV - 1, 2 do\n"
    "  local seq = tonumber(ARGV[i])\n"
    "  if seq > high then\n"
    "    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'run', ARGV[i + 1])\n"
    "    high = seq\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', high))\n"
    "return high\n";

/*
 * Feed trim (DESIGN §4.7): records how far this reader has read the node's
 * run feed (and when, by the node's clock), forgets readers silent for
 * longer than ARGV[3] ms, and trims the feed below the lowest position of
 * those left: never the unread part of a reader that is alive, restarting
 * or paused for less than that. A node that lost its data (no trust
 * marker) also lost its list of readers, and a live member missing from
 * that list has not said where it is: the feed is not trimmed until the
 * node is trusted again and every live member has told its position.
 * Returns the feed's first entry id ('' when empty), for the reader to tell
 * whether entries it had not read are gone.
 * KEYS: run feed, readers hash, readers' last-seen hash, trust marker,
 * members sorted set.
 * ARGV: reader id, its position, reader ttl_ms.
 */
static const char script_feed_trim[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('HSET', KEYS[3], ARGV[1], string.format('%d', now))\n"
    "local function first_id()\n"
    "  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
    "  if first[1] then return first[1][1] end\n"
    "  return ''\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[4]) == 0 then return first_id() end\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do\n"
    "  if redis.call('HEXISTS', KEYS[2], id) == 0 then return first_id() end\n"
    "end\n"
    "local low_ms, low_seq\n"
    "local readers = redis.call('HGETALL', KEYS[2])\n"
    "for i = 1, #readers, 2 do\n"
    "  local seen = tonumber(redis.call('HGET', KEYS[3], readers[i]) or '0')\n"
    "  if now - seen <= tonumber(ARGV[3]) then\n"
    "    local ms, seq = string.match(readers[i + 1], '^(%d+)-(%d+)$')\n"
    "    ms, seq = tonumber(ms or '0'), tonumber(seq or '0')\n"
    "    if not low_ms or ms < low_ms or (ms == low_ms and seq < low_seq) then\n"
    "      low_ms, low_seq = ms, seq\n"
    "    end\n"
    "  else\n"
    "    redis.call('HDEL', KEYS[2], readers[i])\n"
    "    redis.call('HDEL', KEYS[3], readers[i])\n"
    "  end\n"
    "end\n"
    "if low_ms and low_ms > 0 then\n"
    "  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-%d', low_ms, low_seq))\n"
    "end\n"
    "return first_id()\n";

static const char *const scripts[S_COUNT] = {
    [S_CLAIM] = script_claim,
    [S_COMMIT] = script_commit,
    [S_EXTEND] = script_extend,
    [S_RELEASE] = script_release,
    [S_FENCE_READ] = script_fence_read,
    [S_FENCE_RAISE] = script_fence_raise,
    [S_FENCE_DUMP] = script_fence_dump,
    [S_CATALOG_WRITE] = script_catalog_write,
    [S_CATALOG_SINCE] = script_catalog_since,
    [S_CATALOG_GC] = script_catalog_gc,
    [S_HEARTBEAT] = script_heartbeat,
    [S_PUBLISH] = script_publish,
    [S_FEED_TRIM] = script_feed_trim,
};

/* ---------------------------------------------------------------------- */
/* State                                                                    */
/* ---------------------------------------------------------------------- */

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
#define RELEASES_MAX 100000
#define RELEASE_BACKOFF_FIRST_MS 100
#define RELEASE_BACKOFF_MAX_MS 2000

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

    atomic_uint ordinal;
    atomic_bool ordinal_held;

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
    atomic_bool stopping;
    uint64_t rng; /* background thread only */
};

static struct coord_cluster *from_base(struct coord *coord)
{
    return (struct coord_cluster *)coord;
}

/* A round's wait per node for work worth a slow fsync: at least ms, and at least the node timeout.
 */
static int64_t wait_at_least(const struct coord_cluster *self, int64_t ms)
{
    return self->node_timeout_ms > ms ? self->node_timeout_ms : ms;
}

/* prefix + kind + name into out (KEY_MAX bytes). */
static void make_key(const struct coord_cluster *self, char *out, const char *kind,
                     const char *name)
{
    snprintf(out, KEY_MAX, "%s%s%s", self->prefix, kind, name);
}

static void lock_key(const struct coord_cluster *self, const struct coord_claim *claim, char *out)
{
    if (claim->per_slot)
        snprintf(out, KEY_MAX, "%slock:%s:%lld", self->prefix, claim->job,
                 (long long)claim->slot_ms);
    else
        make_key(self, out, "lock:", claim->job);
}

/* Reply helpers: the element of an array reply, or NULL. */
static const redisReply *element(const redisReply *reply, size_t i)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || i >= reply->elements)
        return NULL;
    return reply->element[i];
}

/* An integer from an integer or numeric string reply; fallback when neither. */
static int64_t reply_int(const redisReply *reply, int64_t fallback)
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

static bool reply_is(const redisReply *reply, const char *text)
{
    return reply != NULL &&
           (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) &&
           strcmp(reply->str, text) == 0;
}

/*
 * Records what replies said about the nodes' markers, with the connection
 * generation they came over (what an older connection said is void once the
 * node has reconnected: it may have come back empty). Takes the state lock.
 */
static void note_trust(struct coord_cluster *self, const bool *answered, const bool *trusted,
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
static void round_generations(struct coord_cluster *self, const struct nodeset_round *round,
                              uint64_t *generations)
{
    for (size_t node = 0; node < self->n; node++)
        generations[node] = nodeset_round_generation(round, node);
}

/* Whether node i said it was trusted over its current connection (generation). */
static bool node_trusted(struct coord_cluster *self, size_t i, uint64_t generation)
{
    bool trusted;

    pthread_mutex_lock(&self->state_lock);
    trusted = self->nodes[i].trusted && self->nodes[i].generation == generation;
    pthread_mutex_unlock(&self->state_lock);
    return trusted;
}

/* ---------------------------------------------------------------------- */
/* Claims (DESIGN §4.2)                                                     */
/* ---------------------------------------------------------------------- */

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
    make_key(self, work->fence, "fence:", claim->job);
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
static bool retry_releases(struct coord_cluster *self, int64_t wait_ms)
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
static void flush_releases(struct coord_cluster *self)
{
    int64_t until = cf_boot_ms() + STOP_RELEASE_MS;
    size_t left;

    while (retry_releases(self, COMMIT_WAIT_MS) && cf_boot_ms() < until) {
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
        const redisReply *status = element(reply, 0);
        int64_t token = reply_int(element(reply, 1), -1);
        bool node_trusted_now = reply_int(element(reply, 2), 0) == 1;

        if (status == NULL || token < 0) {
            unseen++;
            continue;
        }
        answered[node] = true;
        trusted[node] = node_trusted_now;
        /* A node that answered did or did not set our lock: nothing to guess there. */
        work->sent[node] = false;
        if (reply_is(status, "FIRED")) {
            int64_t last = reply_int(element(reply, 3), claim->slot_ms);

            if (!fired || last > claim->fired_ms)
                claim->fired_ms = last;
            fired = true;
        } else if (reply_is(status, "OK")) {
            work->held[node] = true;
            work->held_trusted[node] = node_trusted_now;
            work->new_fence[node] = reply_int(element(reply, 3), 1) == 0;
            if (node_trusted_now)
                ok_trusted++;
            if (token > highest)
                highest = token;
        } else if (reply_is(status, "BUSY")) {
            int64_t slot = holder_slot(element(reply, 3));
            bool committed = reply_int(element(reply, 4), 0) == 1;

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
               t0 + lease_validity(claim->lease_ms) - cf_boot_ms() > 0) {
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

static int cluster_claim(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = from_base(coord);
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
    /* Ordinal first: the heartbeat clears ordinal_held before it moves to another ordinal. */
    ordinal = atomic_load(&self->ordinal);
    if (n == 0 || !atomic_load(&self->ordinal_held))
        return CF_OK;
    work = calloc(n, sizeof(*work));
    if (work == NULL) {
        for (size_t i = 0; i < n; i++)
            claims[i].result = CF_ERR_NOMEM;
        return CF_ERR_NOMEM;
    }
    make_key(self, marker, "node", "");
    make_key(self, fences, "fences", "");
    make_key(self, stream, "runs", "");
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
        nodeset_round_exec_within(round, wait_at_least(self, COMMIT_WAIT_MS));
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
    round_generations(self, round, generations);
    nodeset_round_end(round);
    note_trust(self, answered, trusted, generations);
    for (size_t i = 0; i < n; i++)
        if (work[i].entered)
            minting_leave(self->minting, claims[i].job);
    free(work);
    return CF_OK;
}

static int cluster_extend(struct coord *coord, struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = from_base(coord);
    struct nodeset_round *round;
    char marker[KEY_MAX];
    struct claim_work *work = calloc(n ? n : 1, sizeof(*work));
    int64_t t0;

    if (work == NULL) {
        for (size_t i = 0; i < n; i++)
            claims[i].result = CF_ERR_LOST;
        return CF_ERR_NOMEM;
    }
    make_key(self, marker, "node", "");
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

            if (reply_int(element(reply, 0), 0) == 1 && reply_int(element(reply, 1), 0) == 1)
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

static void cluster_release(struct coord *coord, const struct coord_claim *claims, size_t n)
{
    struct coord_cluster *self = from_base(coord);
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

static int cluster_fired_until(struct coord *coord, const char *const *jobs, size_t n,
                               int64_t *last_ms)
{
    struct coord_cluster *self = from_base(coord);
    struct nodeset_round *round;
    char marker[KEY_MAX], key[KEY_MAX];
    int(*index)[MAX_NODES] = calloc(n ? n : 1, sizeof(*index));
    int ret = CF_OK;

    if (index == NULL)
        return CF_ERR_NOMEM;
    make_key(self, marker, "node", "");
    round = nodeset_round_begin(self->ns);
    for (size_t i = 0; i < n; i++) {
        make_key(self, key, "fence:", jobs[i]);
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
            int64_t last = reply_int(element(reply, 0), -1);

            if (last < 0)
                continue;
            if (last > last_ms[i])
                last_ms[i] = last;
            trusted += reply_int(element(reply, 1), 0) == 1;
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

static int64_t cluster_rank(struct coord *coord, const char *job, int64_t slot_ms)
{
    struct coord_cluster *self = from_base(coord);
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

static int64_t cluster_claim_delay_ms(struct coord *coord, const char *job, int64_t slot_ms)
{
    return cluster_rank(coord, job, slot_ms) * from_base(coord)->stagger_ms;
}

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
        cluster_claim(&self->base, claim, 1);
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

    make_key(self, fence, "fence:", CATALOG_JOB);
    make_key(self, fences, "fences", "");
    snprintf(top_text, sizeof(top_text), "%lld", (long long)top);
    for (size_t node = 0; node < self->n; node++) {
        bool up = nodeset_round_node_up(round, node);

        raise[node] =
            up ? nodeset_round_script(round, node, S_FENCE_RAISE, 2, 5,
                                      (const char *[]){fence, fences, top_text, "0", CATALOG_JOB})
               : -1;
        for (size_t i = 0; i < count; i++) {
            make_key(self, key, "job:", batch[i]->name);
            batch[i]->index[node] =
                up ? nodeset_round_command(round, node, 2, (const char *[]){"GET", key}, NULL) : -1;
        }
    }
    /* A catalog write is worth a slow fsync on a node: wait as a commit does. */
    nodeset_round_exec_within(round, wait_at_least(self, COMMIT_WAIT_MS));
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
        if (complete && node_trusted(self, node, nodeset_round_generation(round, node)))
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

    make_key(self, jobs, "jobs", "");
    for (size_t node = 0; node < self->n; node++) {
        bool up = nodeset_round_node_up(round, node);

        for (size_t i = 0; i < count; i++) {
            struct catalog_request *request = batch[i];

            request->index[node] = -1;
            if (!up || request->version == 0)
                continue;
            make_key(self, key, "job:", request->name);
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
    nodeset_round_exec_within(round, wait_at_least(self, COMMIT_WAIT_MS));
    for (size_t i = 0; i < count; i++) {
        size_t acked = 0;

        if (batch[i]->version == 0)
            continue;
        for (size_t node = 0; node < self->n; node++) {
            const redisReply *reply = nodeset_round_reply(round, node, batch[i]->index[node]);

            if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer >= 0 &&
                node_trusted(self, node, nodeset_round_generation(round, node)))
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
        cluster_release(&self->base, &self->catalog_claim, 1);
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

static int cluster_catalog_put(struct coord *coord, struct job *job, bool create_only,
                               int64_t if_match, bool *created)
{
    struct catalog_request request = {
        .name = job->name, .job = job, .create_only = create_only, .if_match = if_match};
    int ret = catalog_submit(from_base(coord), &request);

    *created = request.created;
    return ret;
}

static int cluster_catalog_delete(struct coord *coord, const char *name, int64_t if_match)
{
    struct catalog_request request = {.name = name, .if_match = if_match};

    return catalog_submit(from_base(coord), &request);
}

/* One catalog entry seen in a poll: the newest document and which nodes hold it. */
struct seen_entry {
    char name[JOB_NAME_MAX + 16];
    int64_t version;
    char *json;
    uint32_t holders; /* nodes that returned this version */
};

static int compare_seen(const void *a, const void *b)
{
    return strcmp(((const struct seen_entry *)a)->name, ((const struct seen_entry *)b)->name);
}

/*
 * Reads catalog entries from every node (those above after[node], or all with
 * after NULL), keeps the newest per job (sorted by name) in *entries.
 * *full says whether some node returned a whole page (more may follow).
 */
static int catalog_gather(struct coord_cluster *self, const int64_t *after, bool trusted_only,
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
    make_key(self, jobs, "jobs", "");
    make_key(self, prefix, "job:", "");
    for (size_t node = 0; node < self->n; node++) {
        newest[node] = after != NULL ? after[node] : 0;
        index[node] = -1;
        if (!nodeset_round_node_up(round, node) ||
            (trusted_only && !node_trusted(self, node, nodeset_round_generation(round, node))))
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
            int64_t version = reply_int(reply->element[k + 1], 0);
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

static void free_seen(struct seen_entry *entries, size_t count)
{
    for (size_t e = 0; e < count; e++)
        free(entries[e].json);
    free(entries);
}

/* Writes entries onto the nodes in mask that do not hold them (read repair). */
static void catalog_repair(struct coord_cluster *self, const struct seen_entry *entries,
                           size_t count, uint32_t mask)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char key[KEY_MAX], jobs[KEY_MAX], version[24], ttl[24];
    size_t repaired = 0;

    make_key(self, jobs, "jobs", "");
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
        make_key(self, key, "job:", entries[e].name);
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
static void catalog_poll(struct coord_cluster *self)
{
    bool full = true;

    for (int pages = 0; full && pages < 1000 && !atomic_load(&self->stopping); pages++) {
        struct seen_entry *entries = NULL;
        int64_t newest[MAX_NODES];
        size_t count = 0, answered = 0;
        uint32_t all = 0;
        bool failed = false;

        if (catalog_gather(self, self->catalog_cursor, false, &entries, &count, newest, &full,
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
        catalog_repair(self, entries, count, all);
        free_seen(entries, count);
        /* After a database error the same entries are read again next time. */
        if (failed)
            return;
        memcpy(self->catalog_cursor, newest, sizeof(newest));
    }
}

/* Drops index entries of expired tombstones on every node. */
static void catalog_gc(struct coord_cluster *self)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char jobs[KEY_MAX], prefix[KEY_MAX];

    make_key(self, jobs, "jobs", "");
    make_key(self, prefix, "job:", "");
    for (size_t node = 0; node < self->n; node++)
        if (nodeset_round_node_up(round, node))
            nodeset_round_script(round, node, S_CATALOG_GC, 1, 2, (const char *[]){jobs, prefix});
    nodeset_round_exec(round);
    nodeset_round_end(round);
}

/* ---------------------------------------------------------------------- */
/* History (DESIGN §4.7)                                                    */
/* ---------------------------------------------------------------------- */

static bool cluster_shares_history(struct coord *coord)
{
    return true;
}

static void cluster_history_queued(struct coord *coord)
{
    atomic_store(&from_base(coord)->outbox_queued, true);
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
static void history_flush(struct coord_cluster *self)
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
    make_key(self, stream, "runs", "");
    make_key(self, published, "published", "");

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
static void history_read(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char stream[KEY_MAX], positions[MAX_NODES][48];
    int index[MAX_NODES];
    struct run *runs = NULL;
    const struct run **pointers = NULL;
    size_t count = 0, cap = 0;
    bool moved[MAX_NODES] = {false};

    make_key(self, stream, "runs", "");
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
            element(element(nodeset_round_reply(round, node, index[node]), 0), 1);

        for (size_t k = 0; entries != NULL && k < entries->elements; k++) {
            const redisReply *id = element(entries->element[k], 0);
            const redisReply *fields = element(entries->element[k], 1);
            json_t *doc;

            if (id == NULL || id->type != REDIS_REPLY_STRING || id->len >= 48)
                continue;
            memcpy(positions[node], id->str, id->len + 1);
            moved[node] = true;
            for (size_t f = 0; fields != NULL && f + 1 < fields->elements; f += 2) {
                const redisReply *value = fields->element[f + 1];

                if (!reply_is(fields->element[f], "run") || value->type != REDIS_REPLY_STRING)
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
                make_key(self, key, "history_pos:", nodeset_address(self->ns, node));
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
static void feed_trim(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char stream[KEY_MAX], readers[KEY_MAX], seen[KEY_MAX], marker[KEY_MAX], members[KEY_MAX];
    char positions[MAX_NODES][48];
    int index[MAX_NODES];

    make_key(self, stream, "runs", "");
    make_key(self, readers, "readers", "");
    make_key(self, seen, "readers_seen", "");
    make_key(self, marker, "node", "");
    make_key(self, members, "members", "");
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

/* ---------------------------------------------------------------------- */
/* Membership (DESIGN §4.8), trust and repair (§4.5)                       */
/* ---------------------------------------------------------------------- */

/* The live member id, or NULL when it is not live; state_lock held. */
static const struct member *find_member(struct coord_cluster *self, const char *id)
{
    for (size_t i = 0; i < self->member_count; i++)
        if (strcmp(self->members[i].id, id) == 0)
            return &self->members[i];
    return NULL;
}

/* Merges one node's member list (from heartbeat element 3 on) into list, keeping the freshest. */
static void merge_members(const redisReply *reply, struct member **list, size_t *count,
                          int64_t node_offset_ms)
{
    for (size_t k = 3; k + 6 < reply->elements; k += 7) {
        const redisReply *id = reply->element[k];
        struct member m = {0}, *slot = NULL;

        if (id->type != REDIS_REPLY_STRING || id->len >= sizeof(m.id))
            continue;
        snprintf(m.id, sizeof(m.id), "%s", id->str);
        if (reply->element[k + 1]->type == REDIS_REPLY_STRING)
            snprintf(m.url, sizeof(m.url), "%s", reply->element[k + 1]->str);
        if (reply->element[k + 2]->type == REDIS_REPLY_STRING)
            snprintf(m.version, sizeof(m.version), "%s", reply->element[k + 2]->str);
        m.started_at_ms = reply_int(reply->element[k + 3], 0);
        m.seen_ms = reply_int(reply->element[k + 6], 0);
        m.clock_offset_ms = reply_int(reply->element[k + 4], m.seen_ms) - m.seen_ms;
        m.ordinal = (unsigned)reply_int(reply->element[k + 5], 0);
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

/*
 * Moves the members of the current view missing from list (the new view)
 * to the departed list, and forgets departures of members live again;
 * state_lock held.
 */
static void note_departures(struct coord_cluster *self, const struct member *list, size_t count)
{
    for (size_t i = 0; i < self->member_count; i++) {
        const struct member *old = &self->members[i];
        struct departed_member gone = {0};
        bool live = false;

        for (size_t k = 0; k < count && !live; k++)
            live = strcmp(list[k].id, old->id) == 0;
        if (live || strcmp(old->id, self->instance_id) == 0)
            continue;
        snprintf(gone.id, sizeof(gone.id), "%s", old->id);
        snprintf(gone.url, sizeof(gone.url), "%s", old->url);
        snprintf(gone.version, sizeof(gone.version), "%s", old->version);
        gone.started_at_ms = old->started_at_ms;
        gone.last_seen_ms = old->seen_ms;
        gone.ordinal = old->ordinal;
        departed_add(&self->departed, &gone);
        log_info("member gone", "member=%s last_seen_ms=%lld", gone.id,
                 (long long)gone.last_seen_ms);
    }
    for (size_t k = 0; k < count; k++)
        departed_remove(&self->departed, list[k].id);
    departed_expire(&self->departed, cf_wall_ms());
}

/*
 * The heartbeat round: refreshes this member and its ordinal on every node,
 * reads back the live members, each node's trust marker and clock. Moves to
 * another ordinal when this one is taken on too many nodes to win a quorum.
 */
static void heartbeat(struct coord_cluster *self)
{
    struct nodeset_round *round;
    char members[KEY_MAX], member[KEY_MAX], ordinal_key[KEY_MAX], marker[KEY_MAX],
        member_prefix[KEY_MAX];
    char url[512], started[24], clock[24], ordinal[16], ttl[16];
    unsigned current = atomic_load(&self->ordinal);
    int index[MAX_NODES];
    bool answered[MAX_NODES] = {false}, trusted[MAX_NODES] = {false};
    int64_t offsets[MAX_NODES] = {0};
    uint64_t generations[MAX_NODES] = {0};
    struct member *list = NULL;
    size_t list_count = 0, held = 0, taken = 0, trusted_answers = 0;
    int64_t sent_wall, midpoint;

    make_key(self, members, "members", "");
    make_key(self, member, "member:", self->instance_id);
    snprintf(ordinal, sizeof(ordinal), "%u", current);
    make_key(self, ordinal_key, "ordinal:", ordinal);
    make_key(self, marker, "node", "");
    make_key(self, member_prefix, "member:", "");
    pthread_mutex_lock(&self->state_lock);
    snprintf(url, sizeof(url), "%s", self->advertise_url);
    pthread_mutex_unlock(&self->state_lock);
    snprintf(started, sizeof(started), "%lld", (long long)self->started_at_ms);
    snprintf(ttl, sizeof(ttl), "%d", MEMBER_TTL_MS);

    round = nodeset_round_begin(self->ns);
    sent_wall = cf_wall_ms();
    snprintf(clock, sizeof(clock), "%lld", (long long)sent_wall);
    for (size_t node = 0; node < self->n; node++)
        index[node] =
            nodeset_round_node_up(round, node)
                ? nodeset_round_script(round, node, S_HEARTBEAT, 4, 12,
                                       (const char *[]){members, member, ordinal_key, marker,
                                                        self->instance_id, url, CF_VERSION, started,
                                                        clock, ordinal, member_prefix, ttl})
                : -1;
    nodeset_round_exec_within(round, wait_at_least(self, HEARTBEAT_WAIT_MS));
    midpoint = sent_wall + (cf_wall_ms() - sent_wall) / 2;
    for (size_t node = 0; node < self->n; node++) {
        const redisReply *reply = nodeset_round_reply(round, node, index[node]);
        int64_t node_now = reply_int(element(reply, 0), -1);

        if (node_now < 0 || element(reply, 2) == NULL)
            continue;
        answered[node] = true;
        trusted[node] = reply_int(element(reply, 2), 0) == 1;
        trusted_answers += trusted[node];
        offsets[node] = node_now - midpoint;
        /* Only trusted nodes count: an emptied node grants any ordinal. */
        if (reply_int(element(reply, 1), 0) == 1 && trusted[node])
            held++;
        else if (reply_int(element(reply, 1), 0) != 1)
            taken++;
        merge_members(reply, &list, &list_count, offsets[node]);
    }
    round_generations(self, round, generations);
    nodeset_round_end(round);
    note_trust(self, answered, trusted, generations);

    pthread_mutex_lock(&self->state_lock);
    for (size_t node = 0; node < self->n; node++) {
        self->nodes[node].answered = answered[node];
        if (answered[node]) {
            self->nodes[node].clock_offset_ms = offsets[node];
            self->nodes[node].clock_known = true;
        }
    }
    if (list_count > 0 || trusted_answers >= self->quorum) {
        note_departures(self, list, list_count);
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

    if (held >= self->quorum) {
        if (!atomic_exchange(&self->ordinal_held, true))
            log_info("ordinal held", "ordinal=%u", current);
    } else {
        if (atomic_exchange(&self->ordinal_held, false))
            log_warn("ordinal lost", "ordinal=%u held=%zu", current, held);
        if (taken > self->n - self->quorum) {
            /* Another live instance has it on enough nodes: try the next one. */
            atomic_store(&self->ordinal, (current + 1) % (1u << COORD_ORDINAL_BITS));
            log_info("ordinal taken, trying the next", "taken=%u next=%u", current,
                     (current + 1) % (1u << COORD_ORDINAL_BITS));
        }
    }
}

/* Sets the trust marker on node (SET NX: a concurrent repair's marker stands). */
static bool set_marker(struct coord_cluster *self, size_t node)
{
    struct nodeset_round *round = nodeset_round_begin(self->ns);
    char marker[KEY_MAX], value[40];
    int index = -1;
    bool ok;

    make_key(self, marker, "node", "");
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

    make_key(self, fences, "fences", "");
    make_key(self, prefix, "fence:", "");
    for (size_t node = 0; node < self->n; node++)
        index[node] = node != target && nodeset_round_node_up(round, node) &&
                              node_trusted(self, node, nodeset_round_generation(round, node))
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
            list[count].token = reply_int(reply->element[k + 1], 0);
            list[count].last = reply_int(reply->element[k + 2], 0);
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

            make_key(self, key, "fence:", list[i].job);
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
    if (catalog_gather(self, NULL, true, &entries, &entry_count, newest, &full,
                       &catalog_answered) != CF_OK ||
        catalog_answered < self->quorum)
        goto out;
    catalog_repair(self, entries, entry_count, 1u << target);
    ok = set_marker(self, target);
    if (ok)
        log_warn("redis node repaired", "node=%s fences=%zu jobs=%zu",
                 nodeset_address(self->ns, target), count, entry_count);
out:
    free_seen(entries, entry_count);
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
static void tend_trust(struct coord_cluster *self)
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
static void mark_departed_runs(struct coord_cluster *self)
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

static void *cluster_main(void *arg)
{
    struct coord_cluster *self = arg;
    int64_t next_heartbeat = 0, next_catalog = 0, next_history = 0, next_lost = 0, next_trim = 0,
            next_gc = cf_boot_ms() + CATALOG_GC_MS;

    while (!atomic_load(&self->stopping)) {
        int64_t now = cf_boot_ms();

        nodeset_maintain(self->ns);
        if (now >= next_heartbeat) {
            heartbeat(self);
            tend_trust(self);
            next_heartbeat = now + HEARTBEAT_MS;
        }
        if (now >= next_catalog) {
            catalog_poll(self);
            next_catalog = now + CATALOG_POLL_MS;
        }
        history_flush(self);
        retry_releases(self, 0);
        if (now >= next_history) {
            history_read(self);
            next_history = now + HISTORY_POLL_MS;
        }
        if (now >= next_lost) {
            mark_departed_runs(self);
            next_lost = now + LOST_CHECK_MS;
        }
        if (now >= next_trim) {
            feed_trim(self);
            next_trim = now + FEED_TRIM_MS;
        }
        if (now >= next_gc) {
            catalog_gc(self);
            next_gc = now + CATALOG_GC_MS;
        }
        /* A catalog announcement makes the next pass poll the catalog at once. */
        if (nodeset_wait_message(self->ns, PUBLISH_MS) > 0)
            next_catalog = 0;
    }
    /* Last chance for releases and states queued during shutdown. */
    flush_releases(self);
    history_flush(self);
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
    struct coord_cluster *self = from_base(coord);
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
                     "ordinal_held", atomic_load(&self->ordinal_held));
}

static bool cluster_ready(struct coord *coord)
{
    struct coord_cluster *self = from_base(coord);
    struct node_state states[MAX_NODES];
    size_t trusted = 0;

    if (!atomic_load(&self->ordinal_held))
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
    struct coord_cluster *self = from_base(coord);
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
    return atomic_load(&from_base(coord)->ordinal);
}

static void cluster_set_listener(struct coord *coord, coord_job_changed_fn fn, void *ctx)
{
    struct coord_cluster *self = from_base(coord);
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
    struct coord_cluster *self = from_base(coord);

    atomic_store(&self->stopping, true);
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
    .claim = cluster_claim,
    .extend = cluster_extend,
    .release = cluster_release,
    .catalog_put = cluster_catalog_put,
    .catalog_delete = cluster_catalog_delete,
    .shares_history = cluster_shares_history,
    .history_queued = cluster_history_queued,
    .fired_until = cluster_fired_until,
    .claim_delay_ms = cluster_claim_delay_ms,
    .rank = cluster_rank,
    .set_listener = cluster_set_listener,
    .set_url = cluster_set_url,
    .ordinal = cluster_ordinal,
    .ready = cluster_ready,
    .status = cluster_status,
    .destroy = cluster_destroy,
};

struct nodeset *coord_cluster_nodeset(struct coord *coord)
{
    return from_base(coord)->ns;
}

const char *coord_cluster_prefix(struct coord *coord)
{
    return from_base(coord)->prefix;
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
    pthread_mutex_init(&self->catalog_mutex, NULL);
    pthread_cond_init(&self->catalog_cond, NULL);
    self->catalog_tail = &self->catalog_queue;
    if (self->instance_id == NULL || self->advertise_url == NULL || self->prefix == NULL ||
        self->minting == NULL || self->fired == NULL) {
        cluster_destroy(&self->base);
        return CF_ERR_NOMEM;
    }
    make_key(self, self->catalog_channel, "catalog", "");
    make_key(self, self->fired_channel, "fired", "");
    ncfg.urls = cfg->redis_urls;
    ncfg.tls_ca = cfg->redis_ca;
    ncfg.timeout_ms = cfg->node_timeout_ms;
    ncfg.scripts = scripts;
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

        make_key(self, key, "history_pos:", nodeset_address(self->ns, node));
        snprintf(self->history_pos[node], sizeof(self->history_pos[node]), "0-0");
        if (db_meta_get(self->db, key, &pos) == CF_OK &&
            strlen(pos) < sizeof(self->history_pos[node]))
            snprintf(self->history_pos[node], sizeof(self->history_pos[node]), "%s", pos);
        free(pos);
    }

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
