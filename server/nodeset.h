/*
 * nodeset.h - the N independent Redis nodes of a cluster, and the round: one
 * pipeline of commands per node, written to every node at once and gathered
 * until each node has answered or its timeout has passed (DESIGN §4.2).
 *
 * Each node has one command connection, non-blocking, shared by every round:
 * rounds from any number of threads run at once, their commands pipelined
 * on the same connections, and one I/O thread hands each reply to its
 * round. Each node also has one subscriber connection for pub/sub. A node
 * whose connection fails is marked down and reconnected by
 * nodeset_maintain() with exponential backoff. A slow node keeps its
 * connection (each round gives up on it at the round's deadline) as long as
 * some reply, late or not, arrives at least every NODESET_STUCK_MS; a node
 * that answers nothing for that long (SIGSTOP, a hung disk) is disconnected,
 * so it stops costing every round its timeout. Dropping a connection only
 * because the machine was busy would lose releases and leave locks behind.
 * Replies that arrive after their round's deadline are read and dropped.
 *
 * Lua scripts are given once at creation, loaded on every (re)connection and
 * called by SHA1; a NOSCRIPT reply (after SCRIPT FLUSH) makes the round send
 * that call again as EVAL, which also reloads the script.
 *
 * All deadlines use CLOCK_BOOTTIME (cf_boot_ms()).
 */
#ifndef CF_NODESET_H
#define CF_NODESET_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A node that has answered nothing for this long loses its connection. */
#define NODESET_STUCK_MS 1000
/* Pub/sub channels a set subscribes to, at most. */
#define NODESET_MAX_CHANNELS 4
/* Longest text of a node's configuration warnings. */
#define NODESET_WARNINGS_MAX 256

/* A parsed redis:// or rediss:// (TLS) [[user]:password@]host[:port][/db] URL. */
struct nodeset_url {
    bool tls; /* rediss:// */
    char host[256];
    int port;           /* default 6379 */
    char user[128];     /* empty: AUTH with the password only */
    char password[256]; /* empty: no AUTH */
    int db;             /* SELECT db when not 0 */
};

/*
 * Parses one URL. Returns CF_OK, or CF_ERR_INVALID with the reason in err.
 * Pure: no I/O.
 */
int nodeset_parse_url(const char *text, struct nodeset_url *url, char *err, size_t errlen);

/*
 * A pub/sub message (payload of len bytes, not terminated), called on the
 * I/O thread: it must be quick and must not call into the set. Returns
 * whether the message wakes nodeset_wait_message().
 */
typedef bool (*nodeset_message_fn)(void *ctx, const char *channel, const char *payload, size_t len);

struct nodeset_config {
    const char *urls;           /* comma-separated node URLs (borrowed) */
    int64_t timeout_ms;         /* per node per round */
    const char *const *scripts; /* Lua sources, borrowed for the nodeset's life */
    size_t script_count;
    const char *const *channels;   /* pub/sub channels to subscribe to (copied) */
    size_t channel_count;          /* 0: no subscriber connections */
    nodeset_message_fn on_message; /* NULL: every message wakes */
    void *message_ctx;
    const char *tls_ca; /* CA bundle (PEM file) for rediss:// nodes; NULL: the system's CAs */
};

struct nodeset;

/*
 * Parses the URLs, prepares one node each and starts the I/O thread;
 * connects nothing yet (call nodeset_maintain()). Returns CF_OK with *out,
 * CF_ERR_INVALID with the bad URL named in err (or the CA bundle that cannot
 * be read, or tls_ca given with no rediss:// node), CF_ERR_IO when the thread
 * cannot start, or CF_ERR_NOMEM.
 */
int nodeset_new(const struct nodeset_config *cfg, struct nodeset **out, char *err, size_t errlen);

/* Closes every connection and frees the set; accepts NULL. */
void nodeset_free(struct nodeset *ns);

/* Number of configured nodes, N. */
size_t nodeset_size(const struct nodeset *ns);

/* Q = N/2 + 1, from the configured N (DESIGN §2). */
size_t nodeset_quorum(const struct nodeset *ns);

/* "host:port" of node i (borrowed, constant). */
const char *nodeset_address(const struct nodeset *ns, size_t node);

/*
 * (Re)connects the nodes that are down and whose backoff has passed, each
 * with its handshake (AUTH, SELECT, script loading, configuration read,
 * SUBSCRIBE), blocking for at most about a quarter second per node (half
 * a second for a rediss:// node). Meant for a background thread; rounds go
 * on meanwhile.
 */
void nodeset_maintain(struct nodeset *ns);

/*
 * Waits up to wait_ms for a pub/sub message that wakes (see
 * nodeset_message_fn) or a lost subscription (which may have lost one).
 * Returns how many of those came since the previous call.
 */
int nodeset_wait_message(struct nodeset *ns, int64_t wait_ms);

/* What the cluster page shows of a node. */
struct nodeset_node_info {
    bool up;
    double latency_ms;                   /* smoothed round trip; 0 when never measured */
    char warnings[NODESET_WARNINGS_MAX]; /* "; "-separated, empty when none */
    uint64_t generation; /* counts (re)connections: what was learnt of an older one is void */
};

void nodeset_node_info(struct nodeset *ns, size_t node, struct nodeset_node_info *info);

/* ---- rounds ---- */

struct nodeset_round;

/* Rounds in use at once, at most; nodeset_round_begin() waits for one beyond. */
#define NODESET_MAX_ROUNDS 128

/*
 * Starts a round, taken from the set's pool (waiting while all
 * NODESET_MAX_ROUNDS are in use). Rounds are reused: this cannot fail. A
 * round belongs to the calling thread until nodeset_round_end(); other
 * rounds go on meanwhile.
 */
struct nodeset_round *nodeset_round_begin(struct nodeset *ns);

/* Whether node is connected right now (a round sends nothing to a node that is not). */
bool nodeset_round_node_up(const struct nodeset_round *round, size_t node);

/* The node's connection generation (see nodeset_node_info), read inside a round. */
uint64_t nodeset_round_generation(const struct nodeset_round *round, size_t node);

/*
 * Queues a command for node (argv copied; argvlen NULL means C strings).
 * Returns the command's index among that node's commands, or -1 when out of
 * memory.
 */
int nodeset_round_command(struct nodeset_round *round, size_t node, int argc, const char **argv,
                          const size_t *argvlen);

/* Queues a call of script number script with numkeys keys first in argv. Same return. */
int nodeset_round_script(struct nodeset_round *round, size_t node, size_t script, int numkeys,
                         int argc, const char **argv);

/*
 * Sends every queued command and gathers the replies, until each node has
 * answered everything or the timeout (the configured one, plus 20 µs per
 * queued command for large pipelines) has passed. Commands may be queued and
 * executed again in the same round.
 */
void nodeset_round_exec(struct nodeset_round *round);

/* nodeset_round_exec() with its own per-node timeout instead of the configured one. */
void nodeset_round_exec_within(struct nodeset_round *round, int64_t timeout_ms);

/*
 * The reply to command index of node in the last exec (borrowed until the
 * next exec or the end of the round), or NULL when none arrived in time.
 */
const redisReply *nodeset_round_reply(const struct nodeset_round *round, size_t node, int index);

/* Frees the replies and gives the round back to the pool; accepts NULL. */
void nodeset_round_end(struct nodeset_round *round);

#endif
