/*
 * coord_cluster_scripts.c - the cluster coordinator's Lua scripts (DESIGN
 * §4.2-4.8), loaded on every node at construction and called by index
 * (enum script) from the other coord_cluster_*.c files.
 */

#include "coord_cluster_internal.h"

/* ---------------------------------------------------------------------- */
/* Lua scripts (DESIGN §4.2-4.8); every key is passed in, prefixed         */
/* ---------------------------------------------------------------------- */

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
 * reservation, moves members not seen for the TTL (by the node's clock) from
 * the members to the departed set, where they stay for keep_ms with their
 * member hash (so an instance started later still shows them as down, DESIGN
 * §6), and returns {node time ms, ordinal held 0/1, trusted 0/1, the number
 * of live members L, then per member, the L live ones first and the departed
 * ones after: id, url, version, started_at, clock, ordinal, seen}.
 * KEYS: members zset, member hash, ordinal key, marker, departed zset.
 * ARGV: id, url, version, started_at, clock, ordinal, member prefix, ttl_ms,
 * keep_ms.
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
    "local keep = tonumber(ARGV[9])\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('HSET', KEYS[2], 'url', ARGV[2], 'version', ARGV[3], 'started_at', ARGV[4],\n"
    "             'clock', ARGV[5], 'ordinal', ARGV[6], 'seen', string.format('%d', now))\n"
    "  redis.call('PEXPIRE', KEYS[2], keep)\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "end\n"
    "local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl, 'WITHSCORES')\n"
    "for i = 1, #gone, 2 do redis.call('ZADD', KEYS[5], gone[i + 1], gone[i]) end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - keep)\n"
    "local out = {string.format('%d', now), held, redis.call('EXISTS', KEYS[4]), 0}\n"
    "local function add(set)\n"
    "  local added = 0\n"
    "  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do\n"
    "    local m = redis.call('HMGET', ARGV[7] .. id, 'url', 'version', 'started_at', 'clock',\n"
    "                         'ordinal', 'seen')\n"
    "    if m[1] then\n"
    "      out[#out + 1] = id\n"
    "      for k = 1, 6 do out[#out + 1] = m[k] or '' end\n"
    "      added = added + 1\n"
    "    end\n"
    "  end\n"
    "  return added\n"
    "end\n"
    "out[4] = add(KEYS[1])\n"
    "add(KEYS[5])\n"
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

const char *const ccl_scripts[S_COUNT] = {
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
