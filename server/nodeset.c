/*
 * nodeset.c - connections to the Redis nodes and pipelined rounds over them.
 *
 * Representation: struct nodeset owns one struct node per configured URL.
 * A node's command connection (ctx) is a struct redisconn (plain TCP or
 * TLS, hiredis's reader for the protocol), shared by every round: a round
 * appends its commands to the connection's output buffer and, for each, a
 * waiter to the node's queue of replies owed, in the same order. One I/O
 * thread per set reads every connection and hands each reply to the waiter
 * at the head of its node's queue; a round that stops waiting (its
 * deadline passed) bumps its epoch, so the replies still owed to it are
 * read and dropped. Any number of rounds, from any threads, are thus in
 * flight at once, and commands of rounds started together leave in one
 * write per node.
 *
 * Rounds come from a pool of at most NODESET_MAX_ROUNDS, reused, so a round
 * allocates only when it outgrows the earlier ones. ns->lock guards every
 * node's ctx, queue and counters and every round's waiting state; only the
 * I/O thread closes a connection (after an error, or when the node owes
 * replies and has answered nothing for NODESET_STUCK_MS), so the
 * descriptors it polls outside the lock stay open. The subscriber
 * connections (sub) are opened by the maintenance thread and read by the
 * I/O thread too, which hands each message to the configured callback at
 * once (a lower rank learns within a millisecond that a slot fired).
 */
#include "nodeset.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "redisconn.h"

/* Handshake budget of a new connection: connect, AUTH, SELECT, scripts, CONFIG. */
#define NODESET_HANDSHAKE_MS 250
/*
 * The same over TLS, which adds a round trip and public-key operations
 * (connect, handshake and PING took 3 ms, at most 7 ms, on a 2-core machine
 * at load 23). Twice the plain budget, not more: the maintenance thread
 * that waits on it also sends the heartbeats. A refused certificate fails
 * at once whatever the budget.
 */
#define NODESET_TLS_HANDSHAKE_MS 500
/* Reconnection backoff: doubles from the first value up to the cap. */
#define NODESET_BACKOFF_FIRST_MS 100
#define NODESET_BACKOFF_MAX_MS 2000
/* Extra time per queued command, so a pipeline of thousands is not cut short. */
#define NODESET_PER_COMMAND_US 20
/* Weight of a new latency sample in the smoothed figure. */
#define NODESET_LATENCY_WEIGHT 0.2
/* Longest poll of the I/O thread, so a node that stopped answering is noticed. */
#define NODESET_IO_TICK_MS 100

/* One queued command: its RESP text, and for a script call what EVAL needs. */
struct command {
    char *resp; /* from redisFormatCommandArgv(); redisFreeCommand() */
    size_t len;
    int script; /* script number, or -1 */
};

/* A round's share of one node. */
struct pipe {
    struct command *commands;
    size_t count, cap;
    size_t sent;          /* commands written by earlier execs of this round */
    redisReply **replies; /* cap entries, NULL when none */
    size_t awaited;       /* replies of the current exec still to come */
    int64_t done_boot_ms; /* when the current exec's last reply arrived; 0 until then */
};

/* Who gets the next reply of a connection. */
struct waiter {
    struct nodeset_round *round;
    uint64_t epoch; /* the round's exec it belongs to; another epoch: dropped */
    size_t index;   /* the command's index in the round's pipe */
};

struct node {
    struct nodeset_url url;
    char address[300];
    struct redisconn *ctx;    /* command connection; NULL while down */
    bool doomed;              /* the stream is unusable: the I/O thread closes it */
    bool unflushed;           /* output left in the buffer: the I/O thread writes it */
    struct waiter *waiters;   /* ring of the replies owed, oldest at head */
    size_t head, owed, cap;   /* ring start, entries, capacity */
    int64_t progress_boot_ms; /* when a reply last arrived (or the node began to owe one) */
    uint64_t generation;      /* connections made so far; a reconnect is a new one */
    int64_t next_connect_boot_ms;
    int64_t backoff_ms;
    double latency_ms;
    char warnings[NODESET_WARNINGS_MAX];

    struct redisconn *sub; /* subscriber connection; NULL while down */
    int64_t sub_next_connect_boot_ms;
    int64_t sub_backoff_ms;
};

struct nodeset_round {
    struct nodeset *ns;
    struct pipe *pipes;  /* one per node */
    uint64_t epoch;      /* bumped when an exec stops waiting */
    size_t awaited;      /* replies of the current exec still to come, all nodes */
    pthread_cond_t done; /* signalled when awaited reaches 0 */
    struct nodeset_round *next_free;
};

struct nodeset {
    pthread_mutex_t lock; /* guards the nodes' ctx, queues and counters, the rounds' waits */
    struct node *nodes;
    size_t count;
    int64_t timeout_ms;
    const char *const *scripts;
    size_t script_count;
    char (*shas)[41]; /* SHA1 of each script, hex */
    SSL_CTX *tls;     /* for the rediss:// nodes; NULL when there is none */
    char **channels;
    size_t channel_count;
    nodeset_message_fn on_message;
    void *message_ctx;
    uint64_t wakes, wakes_taken; /* messages that wake, counted; those nodeset_wait_message saw */
    pthread_cond_t woken;

    struct nodeset_round *free_rounds;
    size_t rounds; /* made so far, at most NODESET_MAX_ROUNDS */
    pthread_cond_t round_freed;

    pthread_t io;
    bool io_running;
    bool stopping;
    int wake[2]; /* a byte written to wake[1] wakes the I/O thread */
};

/* ---------------------------------------------------------------------- */
/* URLs                                                                     */
/* ---------------------------------------------------------------------- */

/* Writes the error with the URL's credentials, if any, masked: the message is logged. */
static int url_fail(char *err, size_t errlen, const char *text, const char *why)
{
    const char *authority = strstr(text, "://");
    const char *end, *at;

    authority = authority != NULL ? authority + 3 : text;
    end = authority + strcspn(authority, "/?#");
    at = memrchr(authority, '@', (size_t)(end - authority));
    if (at != NULL)
        snprintf(err, errlen, "invalid redis URL %.*s***%s: %s", (int)(authority - text), text, at,
                 why);
    else
        snprintf(err, errlen, "invalid redis URL %s: %s", text, why);
    return CF_ERR_INVALID;
}

/* Parses a decimal in [min, max] spanning [p, end). */
static bool parse_number(const char *p, const char *end, long min, long max, long *value)
{
    long v = 0;

    if (p == end || end - p > 9)
        return false;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v < min || v > max)
        return false;
    *value = v;
    return true;
}

/* Copies [p, end) into out (size bytes) as a C string; false when it does not fit. */
static bool copy_span(char *out, size_t size, const char *p, const char *end)
{
    if ((size_t)(end - p) >= size)
        return false;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return true;
}

int nodeset_parse_url(const char *text, struct nodeset_url *url, char *err, size_t errlen)
{
    static const char plain[] = "redis://", tls[] = "rediss://";
    const char *p = text, *at, *host_end, *authority_end, *port_start = NULL;
    long number;

    memset(url, 0, sizeof(*url));
    url->port = 6379;
    if (strncmp(p, plain, sizeof(plain) - 1) == 0) {
        p += sizeof(plain) - 1;
    } else if (strncmp(p, tls, sizeof(tls) - 1) == 0) {
        p += sizeof(tls) - 1;
        url->tls = true;
    } else {
        return url_fail(err, errlen, text,
                        "expected redis:// or rediss://[[user]:password@]host:port[/db]");
    }
    authority_end = p + strcspn(p, "/?#");
    if (*authority_end == '?' || *authority_end == '#')
        return url_fail(err, errlen, text, "query and fragment are not supported");
    at = memrchr(p, '@', (size_t)(authority_end - p));
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (colon == NULL)
            return url_fail(err, errlen, text, "credentials must be [user]:password");
        if (!copy_span(url->user, sizeof(url->user), p, colon) ||
            !copy_span(url->password, sizeof(url->password), colon + 1, at))
            return url_fail(err, errlen, text, "credentials too long");
        p = at + 1;
    }
    if (*p == '[') {
        host_end = memchr(p, ']', (size_t)(authority_end - p));
        if (host_end == NULL)
            return url_fail(err, errlen, text, "unclosed [ in host");
        if (!copy_span(url->host, sizeof(url->host), p + 1, host_end))
            return url_fail(err, errlen, text, "host too long");
        host_end++;
        if (host_end < authority_end && *host_end != ':')
            return url_fail(err, errlen, text, "unexpected text after ]");
    } else {
        host_end = memchr(p, ':', (size_t)(authority_end - p));
        if (host_end == NULL)
            host_end = authority_end;
        if (!copy_span(url->host, sizeof(url->host), p, host_end))
            return url_fail(err, errlen, text, "host too long");
    }
    if (url->host[0] == '\0')
        return url_fail(err, errlen, text, "missing host");
    if (host_end < authority_end)
        port_start = host_end + 1;
    if (port_start != NULL) {
        if (!parse_number(port_start, authority_end, 1, 65535, &number))
            return url_fail(err, errlen, text, "port must be 1-65535");
        url->port = (int)number;
    }
    if (*authority_end == '/' && authority_end[1] != '\0') {
        if (!parse_number(authority_end + 1, authority_end + strlen(authority_end), 0, 1000000,
                          &number))
            return url_fail(err, errlen, text, "database must be a number");
        url->db = (int)number;
    }
    return CF_OK;
}

/* ---------------------------------------------------------------------- */
/* Handshakes                                                               */
/* ---------------------------------------------------------------------- */

/* A new connection's handshake: the replies to gather. */
struct handshake {
    struct redisconn *c;
    size_t want, got;
    redisReply **out;
    bool failed; /* I/O or protocol error: the connection is unusable */
};

/* Moves parsed replies from the reader into the handshake. */
static void handshake_drain(struct handshake *h)
{
    while (!h->failed && h->got < h->want) {
        void *reply = NULL;

        if (redisconn_reply(h->c, &reply) != CF_OK) {
            h->failed = true;
            break;
        }
        if (reply == NULL)
            break;
        h->out[h->got++] = reply;
    }
}

/* Writes the queued commands and reads their replies until all came, an error, or the deadline. */
static void handshake_exchange(struct handshake *h, int64_t deadline_boot_ms)
{
    while (!h->failed && (redisconn_unflushed(h->c) || h->got < h->want)) {
        struct pollfd pfd = {.fd = redisconn_fd(h->c)};
        int64_t remaining = deadline_boot_ms - cf_boot_ms();

        if (redisconn_flush(h->c) != CF_OK) {
            h->failed = true;
            break;
        }
        handshake_drain(h);
        if ((!redisconn_unflushed(h->c) && h->got == h->want) || remaining <= 0)
            break;
        pfd.events = redisconn_events(h->c);
        if (poll(&pfd, 1, (int)remaining) < 0 && errno != EINTR)
            break;
        if (pfd.revents != 0) {
            if (redisconn_read(h->c) != CF_OK)
                h->failed = true;
            handshake_drain(h);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Connections                                                              */
/* ---------------------------------------------------------------------- */

/* The slot of the i-th reply owed by node, oldest first. */
static struct waiter *owed_at(struct node *node, size_t i)
{
    return &node->waiters[(node->head + i) % node->cap];
}

/* Counts one reply of round's current exec as come (with reply, or NULL: never). */
static void settle(struct nodeset_round *round, size_t node, const struct waiter *w,
                   redisReply *reply)
{
    struct pipe *pipe = &round->pipes[node];

    if (reply != NULL) {
        if (pipe->replies[w->index] != NULL)
            freeReplyObject(pipe->replies[w->index]);
        pipe->replies[w->index] = reply;
    }
    if (--pipe->awaited == 0)
        pipe->done_boot_ms = reply != NULL ? cf_boot_ms() : 0;
    if (--round->awaited == 0)
        pthread_cond_broadcast(&round->done);
}

/*
 * Drops node's command connection, logging why unless NULL; the lock is
 * held, by the I/O thread (or by nodeset_free). Every reply it owed is
 * settled as never coming.
 */
static void drop_connection(struct nodeset *ns, struct node *node, const char *why)
{
    size_t index = (size_t)(node - ns->nodes);

    if (node->ctx == NULL)
        return;
    if (why != NULL)
        log_warn("redis node down", "node=%s error=\"%s\"", node->address, why);
    for (size_t i = 0; i < node->owed; i++) {
        struct waiter *w = owed_at(node, i);

        if (w->round->epoch == w->epoch)
            settle(w->round, index, w, NULL);
    }
    node->head = node->owed = 0;
    redisconn_free(node->ctx);
    node->ctx = NULL;
    node->doomed = false;
    node->unflushed = false;
    node->next_connect_boot_ms = cf_boot_ms() + node->backoff_ms;
}

/* Appends a C-string command to a fresh connection's output; false when out of memory. */
static bool append(struct redisconn *c, int argc, const char **argv)
{
    return redisconn_append_argv(c, argc, argv) == CF_OK;
}

static const char *config_value(const redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return NULL;
    return reply->element[1]->str;
}

/* Appends "name is value (want expected)" to warnings when the setting differs. */
static void check_setting(char *warnings, size_t size, const char *name, const redisReply *reply,
                          const char *expected)
{
    const char *value = config_value(reply);
    size_t used = strlen(warnings);

    if (value != NULL && strcmp(value, expected) == 0)
        return;
    snprintf(warnings + used, size - used, "%s%s is %s (want %s)", used ? "; " : "", name,
             value != NULL ? value : "unreadable", expected);
}

/* Wakes the I/O thread so it polls again (new connection, output to flush, a stop). */
static void wake_io(struct nodeset *ns)
{
    char byte = 1;

    if (write(ns->wake[1], &byte, 1) < 0 && errno != EAGAIN)
        log_warn("redis i/o thread not woken", "error=\"%s\"", strerror(errno));
}

/*
 * Opens and prepares a connection to node: AUTH, SELECT, then either the
 * scripts and the configuration (command connection) or SUBSCRIBE
 * (subscriber), over TLS for a rediss:// node. Returns the connection, or
 * NULL with the reason in why.
 */
static struct redisconn *open_connection(struct nodeset *ns, struct node *node, bool subscriber,
                                         char *warnings, size_t warnings_size, char *why,
                                         size_t why_len)
{
    int64_t deadline =
        cf_boot_ms() + (node->url.tls ? NODESET_TLS_HANDSHAKE_MS : NODESET_HANDSHAKE_MS);
    struct redisconn *c = redisconn_open(node->url.host, node->url.port,
                                         node->url.tls ? ns->tls : NULL, deadline, why, why_len);
    redisReply *replies[32] = {0};
    struct handshake hs = {0};
    size_t first_script = 0, first_config = 0;
    char db[16];
    bool ok = false;

    if (c == NULL)
        goto out;
    if (node->url.password[0] != '\0') {
        const char *auth[] = {"AUTH", node->url.user, node->url.password};

        if (node->url.user[0] != '\0' ? !append(c, 3, auth)
                                      : !append(c, 2, (const char *[]){"AUTH", auth[2]}))
            goto out_nomem;
        hs.want++;
    }
    if (!subscriber && node->url.db != 0) {
        snprintf(db, sizeof(db), "%d", node->url.db);
        if (!append(c, 2, (const char *[]){"SELECT", db}))
            goto out_nomem;
        hs.want++;
    }
    if (subscriber) {
        const char *argv[1 + NODESET_MAX_CHANNELS] = {"SUBSCRIBE"};

        memcpy(argv + 1, ns->channels, ns->channel_count * sizeof(*argv));
        if (!append(c, (int)(1 + ns->channel_count), argv))
            goto out_nomem;
        hs.want += ns->channel_count;
    } else {
        first_script = hs.want;
        for (size_t i = 0; i < ns->script_count; i++)
            if (!append(c, 3, (const char *[]){"SCRIPT", "LOAD", ns->scripts[i]}))
                goto out_nomem;
        hs.want += ns->script_count;
        first_config = hs.want;
        if (!append(c, 3, (const char *[]){"CONFIG", "GET", "appendonly"}) ||
            !append(c, 3, (const char *[]){"CONFIG", "GET", "appendfsync"}) ||
            !append(c, 3, (const char *[]){"CONFIG", "GET", "maxmemory-policy"}))
            goto out_nomem;
        hs.want += 3;
    }
    hs.c = c;
    hs.out = replies;
    handshake_exchange(&hs, deadline);
    if (hs.failed || hs.got < hs.want) {
        snprintf(why, why_len, "%s", hs.failed ? redisconn_error(c) : "handshake timed out");
        goto out;
    }
    for (size_t i = 0; i < first_script; i++) {
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "%s", replies[i]->str);
            goto out;
        }
    }
    if (subscriber) {
        if (replies[hs.want - 1]->type != REDIS_REPLY_ARRAY) {
            snprintf(why, why_len, "subscribe refused");
            goto out;
        }
    } else {
        for (size_t i = 0; i < ns->script_count; i++) {
            const redisReply *reply = replies[first_script + i];

            if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, ns->shas[i]) != 0) {
                snprintf(why, why_len, "script %zu not loaded: %s", i,
                         reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
                goto out;
            }
        }
        warnings[0] = '\0';
        check_setting(warnings, warnings_size, "appendonly", replies[first_config], "yes");
        check_setting(warnings, warnings_size, "appendfsync", replies[first_config + 1], "always");
        check_setting(warnings, warnings_size, "maxmemory-policy", replies[first_config + 2],
                      "noeviction");
    }
    ok = true;
    goto out;

out_nomem:
    snprintf(why, why_len, "out of memory");
out:
    for (size_t i = 0; i < hs.got; i++)
        freeReplyObject(replies[i]);
    if (!ok) {
        redisconn_free(c);
        c = NULL;
    }
    return c;
}

static int64_t next_backoff(int64_t backoff_ms)
{
    return backoff_ms * 2 > NODESET_BACKOFF_MAX_MS ? NODESET_BACKOFF_MAX_MS : backoff_ms * 2;
}

void nodeset_maintain(struct nodeset *ns)
{
    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];
        char warnings[NODESET_WARNINGS_MAX], why[160] = "";
        int64_t now = cf_boot_ms();
        bool due, first_failure = false;
        struct redisconn *c;

        pthread_mutex_lock(&ns->lock);
        due = node->ctx == NULL && now >= node->next_connect_boot_ms;
        pthread_mutex_unlock(&ns->lock);
        if (due) {
            c = open_connection(ns, node, false, warnings, sizeof(warnings), why, sizeof(why));
            pthread_mutex_lock(&ns->lock);
            if (c != NULL) {
                node->ctx = c;
                node->generation++;
                node->progress_boot_ms = cf_boot_ms();
                node->backoff_ms = NODESET_BACKOFF_FIRST_MS;
                snprintf(node->warnings, sizeof(node->warnings), "%s", warnings);
                wake_io(ns); /* its descriptor joins the poll */
            } else {
                first_failure = node->backoff_ms == NODESET_BACKOFF_FIRST_MS;
                node->next_connect_boot_ms = cf_boot_ms() + node->backoff_ms;
                node->backoff_ms = next_backoff(node->backoff_ms);
            }
            pthread_mutex_unlock(&ns->lock);
            if (c != NULL) {
                char quoted[2 * NODESET_WARNINGS_MAX];

                log_info("redis node up", "node=%s", node->address);
                if (warnings[0] != '\0')
                    log_warn("redis node not configured for lock safety", "node=%s warnings=\"%s\"",
                             node->address, log_quote(warnings, quoted, sizeof(quoted)));
            } else {
                char quoted[2 * sizeof(why)];

                /*
                 * A refused certificate is a configuration error, not an
                 * outage: said once per run of failures at warn level.
                 */
                log_quote(why, quoted, sizeof(quoted));
                if (node->url.tls && first_failure)
                    log_warn("redis node unreachable", "node=%s error=\"%s\"", node->address,
                             quoted);
                else
                    log_debug("redis node unreachable", "node=%s error=\"%s\"", node->address,
                              quoted);
            }
        }
        pthread_mutex_lock(&ns->lock);
        due = ns->channel_count > 0 && node->sub == NULL && now >= node->sub_next_connect_boot_ms;
        pthread_mutex_unlock(&ns->lock);
        if (due) {
            c = open_connection(ns, node, true, warnings, sizeof(warnings), why, sizeof(why));
            pthread_mutex_lock(&ns->lock);
            if (c == NULL) {
                node->sub_next_connect_boot_ms = cf_boot_ms() + node->sub_backoff_ms;
                node->sub_backoff_ms = next_backoff(node->sub_backoff_ms);
            } else {
                node->sub = c;
                node->sub_backoff_ms = NODESET_BACKOFF_FIRST_MS;
                wake_io(ns);
            }
            pthread_mutex_unlock(&ns->lock);
        }
    }
}

int nodeset_wait_message(struct nodeset *ns, int64_t wait_ms)
{
    struct timespec until;
    int came;

    cf_monotonic_deadline(wait_ms > 0 ? wait_ms : 0, &until);
    pthread_mutex_lock(&ns->lock);
    while (ns->wakes == ns->wakes_taken && !ns->stopping)
        if (pthread_cond_timedwait(&ns->woken, &ns->lock, &until) == ETIMEDOUT)
            break;
    came = (int)(ns->wakes - ns->wakes_taken);
    ns->wakes_taken = ns->wakes;
    pthread_mutex_unlock(&ns->lock);
    return came;
}

/* ---------------------------------------------------------------------- */
/* The I/O thread                                                           */
/* ---------------------------------------------------------------------- */

/* Hands every parsed reply of node to its waiter; false on a protocol error. */
static bool deliver_replies(struct nodeset *ns, struct node *node)
{
    size_t index = (size_t)(node - ns->nodes);

    for (;;) {
        void *reply = NULL;
        struct waiter w;

        if (redisconn_reply(node->ctx, &reply) != CF_OK)
            return false;
        if (reply == NULL)
            return true;
        node->progress_boot_ms = cf_boot_ms();
        if (node->owed == 0) { /* a reply nobody asked for: the stream is out of step */
            freeReplyObject(reply);
            return false;
        }
        w = *owed_at(node, 0);
        node->head = (node->head + 1) % node->cap;
        node->owed--;
        if (w.round->epoch == w.epoch)
            settle(w.round, index, &w, reply);
        else
            freeReplyObject(reply);
    }
}

/* Counts one message that wakes nodeset_wait_message(); the lock is held. */
static void note_wake(struct nodeset *ns)
{
    ns->wakes++;
    pthread_cond_broadcast(&ns->woken);
}

/* Drops node's subscriber connection; the lock is held, by the I/O thread. */
static void drop_subscriber(struct nodeset *ns, struct node *node)
{
    redisconn_free(node->sub);
    node->sub = NULL;
    node->sub_next_connect_boot_ms = cf_boot_ms() + node->sub_backoff_ms;
    /* A lost subscription may have lost a message: the waiter refreshes. */
    note_wake(ns);
}

/* Hands every message read on node's subscriber connection to the callback; false on error. */
static bool deliver_messages(struct nodeset *ns, struct node *node)
{
    for (;;) {
        redisReply *reply = NULL;

        if (redisconn_reply(node->sub, (void **)&reply) != CF_OK)
            return false;
        if (reply == NULL)
            return true;
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "message") == 0 &&
            reply->element[1]->type == REDIS_REPLY_STRING &&
            reply->element[2]->type == REDIS_REPLY_STRING) {
            if (ns->on_message == NULL ||
                ns->on_message(ns->message_ctx, reply->element[1]->str, reply->element[2]->str,
                               reply->element[2]->len))
                note_wake(ns);
        }
        freeReplyObject(reply);
    }
}

/* Whether node owes replies and has answered nothing for NODESET_STUCK_MS. */
static bool is_stuck(const struct node *node, int64_t now)
{
    return node->owed > 0 && now - node->progress_boot_ms >= NODESET_STUCK_MS;
}

/*
 * Polls every command connection and the wake pipe; writes pending output,
 * reads replies and hands them to their rounds; closes the connections
 * that failed, were doomed by a round, or are stuck.
 */
static void *io_main(void *arg)
{
    struct nodeset *ns = arg;
    struct pollfd fds[1 + 2 * ns->count];
    struct redisconn *polled[ns->count], *subs[ns->count];

    pthread_mutex_lock(&ns->lock);
    while (!ns->stopping) {
        int64_t polled_at;

        fds[0] = (struct pollfd){.fd = ns->wake[0], .events = POLLIN};
        for (size_t i = 0; i < ns->count; i++) {
            struct node *node = &ns->nodes[i];

            polled[i] = node->ctx;
            fds[i + 1] = (struct pollfd){.fd = -1};
            if (node->ctx == NULL)
                continue;
            if (node->doomed) {
                drop_connection(ns, node, "out of memory");
                polled[i] = NULL;
                continue;
            }
            fds[i + 1].fd = redisconn_fd(node->ctx);
            fds[i + 1].events = redisconn_events(node->ctx);
        }
        for (size_t i = 0; i < ns->count; i++) {
            subs[i] = ns->nodes[i].sub;
            fds[1 + ns->count + i] =
                (struct pollfd){.fd = subs[i] ? redisconn_fd(subs[i]) : -1,
                                .events = subs[i] ? redisconn_events(subs[i]) : 0};
        }
        pthread_mutex_unlock(&ns->lock);
        if (poll(fds, 1 + 2 * ns->count, NODESET_IO_TICK_MS) < 0 && errno != EINTR)
            cf_sleep_ms(1);
        polled_at = cf_boot_ms();
        if (fds[0].revents & POLLIN) {
            char drain[64];

            while (read(ns->wake[0], drain, sizeof(drain)) > 0)
                ;
        }
        pthread_mutex_lock(&ns->lock);
        for (size_t i = 0; i < ns->count; i++) {
            struct node *node = &ns->nodes[i];
            short revents = fds[i + 1].revents;

            /* Only this thread closes connections: a polled one is still node->ctx. */
            if (polled[i] == NULL || node->ctx != polled[i])
                continue;
            /*
             * Stuck only if the poll just made found nothing to read: after
             * this thread was starved on a loaded machine, replies waiting in
             * the socket are read, not mistaken for a silent node.
             */
            if (!(revents & (POLLIN | POLLHUP | POLLERR)) && is_stuck(node, polled_at)) {
                drop_connection(ns, node, "no reply for a second");
                continue;
            }
            if (revents == 0)
                continue;
            /*
             * Any event may let either direction go on: a TLS session can
             * need input to finish a write, or output to finish a read.
             */
            if (node->unflushed) {
                if (redisconn_flush(node->ctx) != CF_OK) {
                    drop_connection(ns, node, redisconn_error(node->ctx));
                    continue;
                }
                node->unflushed = redisconn_unflushed(node->ctx);
            }
            if (redisconn_read(node->ctx) != CF_OK || !deliver_replies(ns, node)) {
                drop_connection(ns, node,
                                redisconn_error(node->ctx)[0] ? redisconn_error(node->ctx)
                                                              : "protocol error");
                continue;
            }
            node->unflushed = redisconn_unflushed(node->ctx);
        }
        for (size_t i = 0; i < ns->count; i++) {
            struct node *node = &ns->nodes[i];

            if (subs[i] == NULL || node->sub != subs[i] || fds[1 + ns->count + i].revents == 0)
                continue;
            if (redisconn_read(node->sub) != CF_OK || !deliver_messages(ns, node))
                drop_subscriber(ns, node);
        }
    }
    pthread_mutex_unlock(&ns->lock);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* The set                                                                  */
/* ---------------------------------------------------------------------- */

static void sha1_hex(const char *text, char out[41])
{
    unsigned char digest[SHA_DIGEST_LENGTH];

    SHA1((const unsigned char *)text, strlen(text), digest);
    cf_hex(digest, sizeof(digest), out);
}

/* Opens the wake pipe (both ends non-blocking) and starts the I/O thread. */
static bool start_io(struct nodeset *ns)
{
    if (pipe(ns->wake) != 0) {
        ns->wake[0] = ns->wake[1] = -1;
        return false;
    }
    for (int i = 0; i < 2; i++)
        if (fcntl(ns->wake[i], F_SETFL, fcntl(ns->wake[i], F_GETFL) | O_NONBLOCK) != 0 ||
            fcntl(ns->wake[i], F_SETFD, FD_CLOEXEC) != 0)
            return false;
    ns->io_running = pthread_create(&ns->io, NULL, io_main, ns) == 0;
    return ns->io_running;
}

/* The TLS context when a node is rediss://; CF_ERR_INVALID when a CA is given for none. */
static int tls_setup(struct nodeset *ns, const char *ca_file, char *err, size_t errlen)
{
    bool any = false;

    for (size_t i = 0; i < ns->count; i++)
        any |= ns->nodes[i].url.tls;
    if (!any && ca_file != NULL) {
        snprintf(err, errlen, "--redis-ca is given but no lock node is rediss://");
        return CF_ERR_INVALID;
    }
    return any ? redisconn_tls_context(ca_file, &ns->tls, err, errlen) : CF_OK;
}

int nodeset_new(const struct nodeset_config *cfg, struct nodeset **out, char *err, size_t errlen)
{
    struct nodeset *ns = calloc(1, sizeof(*ns));
    char *list = NULL, *save = NULL, *item;
    size_t count = 1;
    int ret = CF_ERR_NOMEM;

    *out = NULL;
    if (ns == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_init(&ns->lock, NULL);
    cf_monotonic_cond_init(&ns->round_freed);
    cf_monotonic_cond_init(&ns->woken);
    ns->wake[0] = ns->wake[1] = -1;
    ns->timeout_ms = cfg->timeout_ms;
    ns->scripts = cfg->scripts;
    ns->script_count = cfg->script_count;
    for (const char *p = cfg->urls; *p != '\0'; p++)
        count += *p == ',';
    ns->nodes = calloc(count, sizeof(*ns->nodes));
    ns->shas = calloc(cfg->script_count ? cfg->script_count : 1, sizeof(*ns->shas));
    list = strdup(cfg->urls);
    if (ns->nodes == NULL || ns->shas == NULL || list == NULL)
        goto out;
    if (cfg->channel_count > NODESET_MAX_CHANNELS) {
        snprintf(err, errlen, "too many pub/sub channels");
        ret = CF_ERR_INVALID;
        goto out;
    }
    if (cfg->channel_count > 0 &&
        (ns->channels = calloc(cfg->channel_count, sizeof(*ns->channels))) == NULL)
        goto out;
    for (; ns->channel_count < cfg->channel_count; ns->channel_count++)
        if ((ns->channels[ns->channel_count] = strdup(cfg->channels[ns->channel_count])) == NULL)
            goto out;
    ns->on_message = cfg->on_message;
    ns->message_ctx = cfg->message_ctx;
    for (size_t i = 0; i < cfg->script_count; i++)
        sha1_hex(cfg->scripts[i], ns->shas[i]);
    for (item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        struct node *node = &ns->nodes[ns->count];

        while (*item == ' ')
            item++;
        ret = nodeset_parse_url(item, &node->url, err, errlen);
        if (ret != CF_OK)
            goto out;
        snprintf(node->address, sizeof(node->address),
                 strchr(node->url.host, ':') ? "[%s]:%d" : "%s:%d", node->url.host, node->url.port);
        /*
         * Two databases of one server are one node: Redlock's quorum needs
         * servers that fail independently, so the same host:port twice is
         * refused whatever the database number.
         */
        for (size_t j = 0; j < ns->count; j++) {
            if (strcmp(ns->nodes[j].address, node->address) == 0) {
                snprintf(err, errlen,
                         "redis node %s is listed twice (lock nodes must be separate servers)",
                         node->address);
                ret = CF_ERR_INVALID;
                goto out;
            }
        }
        node->backoff_ms = NODESET_BACKOFF_FIRST_MS;
        node->sub_backoff_ms = NODESET_BACKOFF_FIRST_MS;
        ns->count++;
    }
    if (ns->count == 0) {
        snprintf(err, errlen, "no redis node given");
        ret = CF_ERR_INVALID;
        goto out;
    }
    ret = tls_setup(ns, cfg->tls_ca, err, errlen);
    if (ret != CF_OK)
        goto out;
    if (!start_io(ns)) {
        snprintf(err, errlen, "cannot start the redis i/o thread: %s", strerror(errno));
        ret = CF_ERR_IO;
        goto out;
    }
    *out = ns;
    ret = CF_OK;
out:
    free(list);
    if (ret != CF_OK)
        nodeset_free(ns);
    return ret;
}

/* Frees a round's queued commands and replies, keeping its arrays for reuse. */
static void pipes_reset(struct nodeset_round *round)
{
    for (size_t i = 0; i < round->ns->count; i++) {
        struct pipe *pipe = &round->pipes[i];

        for (size_t k = 0; k < pipe->count; k++) {
            redisFreeCommand(pipe->commands[k].resp);
            if (pipe->replies[k] != NULL)
                freeReplyObject(pipe->replies[k]);
            pipe->replies[k] = NULL;
        }
        pipe->count = 0;
        pipe->sent = 0;
    }
}

static void round_free(struct nodeset_round *round)
{
    pipes_reset(round);
    for (size_t i = 0; i < round->ns->count; i++) {
        free(round->pipes[i].commands);
        free(round->pipes[i].replies);
    }
    free(round->pipes);
    pthread_cond_destroy(&round->done);
    free(round);
}

void nodeset_free(struct nodeset *ns)
{
    if (ns == NULL)
        return;
    if (ns->io_running) {
        pthread_mutex_lock(&ns->lock);
        ns->stopping = true;
        pthread_mutex_unlock(&ns->lock);
        wake_io(ns);
        pthread_join(ns->io, NULL);
    }
    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];

        drop_connection(ns, node, NULL);
        free(node->waiters);
        redisconn_free(node->sub);
    }
    while (ns->free_rounds != NULL) {
        struct nodeset_round *round = ns->free_rounds;

        ns->free_rounds = round->next_free;
        round_free(round);
    }
    for (int i = 0; i < 2; i++)
        if (ns->wake[i] >= 0)
            close(ns->wake[i]);
    pthread_cond_destroy(&ns->round_freed);
    pthread_mutex_destroy(&ns->lock);
    free(ns->nodes);
    free(ns->shas);
    SSL_CTX_free(ns->tls);
    for (size_t i = 0; i < ns->channel_count; i++)
        free(ns->channels[i]);
    free(ns->channels);
    pthread_cond_destroy(&ns->woken);
    free(ns);
}

size_t nodeset_size(const struct nodeset *ns)
{
    return ns->count;
}

size_t nodeset_quorum(const struct nodeset *ns)
{
    return ns->count / 2 + 1;
}

const char *nodeset_address(const struct nodeset *ns, size_t node)
{
    return ns->nodes[node].address;
}

void nodeset_node_info(struct nodeset *ns, size_t i, struct nodeset_node_info *info)
{
    struct node *node = &ns->nodes[i];

    pthread_mutex_lock(&ns->lock);
    info->up = node->ctx != NULL;
    info->generation = node->generation;
    info->latency_ms = node->latency_ms;
    snprintf(info->warnings, sizeof(info->warnings), "%s", node->warnings);
    pthread_mutex_unlock(&ns->lock);
}

/* ---------------------------------------------------------------------- */
/* Rounds                                                                   */
/* ---------------------------------------------------------------------- */

/* A new round for the pool, or NULL when out of memory. */
static struct nodeset_round *round_new(struct nodeset *ns)
{
    struct nodeset_round *round = calloc(1, sizeof(*round));

    if (round == NULL)
        return NULL;
    round->pipes = calloc(ns->count, sizeof(*round->pipes));
    if (round->pipes == NULL) {
        free(round);
        return NULL;
    }
    round->ns = ns;
    cf_monotonic_cond_init(&round->done);
    return round;
}

struct nodeset_round *nodeset_round_begin(struct nodeset *ns)
{
    struct nodeset_round *round;

    pthread_mutex_lock(&ns->lock);
    while (ns->free_rounds == NULL) {
        struct timespec until;

        if (ns->rounds < NODESET_MAX_ROUNDS && (round = round_new(ns)) != NULL) {
            ns->rounds++;
            pthread_mutex_unlock(&ns->lock);
            return round;
        }
        /* Every round is in use, or memory is short: wait for one to end. */
        cf_monotonic_deadline(10, &until);
        pthread_cond_timedwait(&ns->round_freed, &ns->lock, &until);
    }
    round = ns->free_rounds;
    ns->free_rounds = round->next_free;
    pthread_mutex_unlock(&ns->lock);
    return round;
}

bool nodeset_round_node_up(const struct nodeset_round *round, size_t node)
{
    struct nodeset *ns = round->ns;
    bool up;

    pthread_mutex_lock(&ns->lock);
    up = ns->nodes[node].ctx != NULL && !ns->nodes[node].doomed;
    pthread_mutex_unlock(&ns->lock);
    return up;
}

uint64_t nodeset_round_generation(const struct nodeset_round *round, size_t node)
{
    struct nodeset *ns = round->ns;
    uint64_t generation;

    pthread_mutex_lock(&ns->lock);
    generation = ns->nodes[node].generation;
    pthread_mutex_unlock(&ns->lock);
    return generation;
}

/* Adds a formatted command (stolen) to node's pipe; returns its index or -1. */
static int pipe_add(struct pipe *pipe, char *resp, int len, int script)
{
    if (len < 0 || resp == NULL) {
        redisFreeCommand(resp);
        return -1;
    }
    if (pipe->count == pipe->cap) {
        size_t cap = pipe->cap ? pipe->cap * 2 : 16;
        struct command *commands = realloc(pipe->commands, cap * sizeof(*commands));
        redisReply **replies;

        if (commands == NULL) {
            redisFreeCommand(resp);
            return -1;
        }
        pipe->commands = commands;
        replies = realloc(pipe->replies, cap * sizeof(*replies));
        if (replies == NULL) {
            redisFreeCommand(resp);
            return -1;
        }
        memset(replies + pipe->cap, 0, (cap - pipe->cap) * sizeof(*replies));
        pipe->replies = replies;
        pipe->cap = cap;
    }
    pipe->commands[pipe->count].resp = resp;
    pipe->commands[pipe->count].len = (size_t)len;
    pipe->commands[pipe->count].script = script;
    pipe->replies[pipe->count] = NULL;
    return (int)pipe->count++;
}

int nodeset_round_command(struct nodeset_round *round, size_t node, int argc, const char **argv,
                          const size_t *argvlen)
{
    char *resp = NULL;
    int len = redisFormatCommandArgv(&resp, argc, argv, argvlen);

    return pipe_add(&round->pipes[node], resp, len, -1);
}

int nodeset_round_script(struct nodeset_round *round, size_t node, size_t script, int numkeys,
                         int argc, const char **argv)
{
    struct nodeset *ns = round->ns;
    const char *stack[32], **full = stack;
    char keys[16];
    char *resp = NULL;
    int len;

    if (script >= ns->script_count || argc < 0)
        return -1;
    /* Most calls fit on the stack; a long one (a batch of run states) gets the heap. */
    if ((size_t)argc + 3 > sizeof(stack) / sizeof(stack[0])) {
        full = malloc(((size_t)argc + 3) * sizeof(*full));
        if (full == NULL)
            return -1;
    }
    snprintf(keys, sizeof(keys), "%d", numkeys);
    full[0] = "EVALSHA";
    full[1] = ns->shas[script];
    full[2] = keys;
    memcpy(full + 3, argv, (size_t)argc * sizeof(*argv));
    len = redisFormatCommandArgv(&resp, argc + 3, full, NULL);
    if (full != stack)
        free(full);
    return pipe_add(&round->pipes[node], resp, len, (int)script);
}

/*
 * The EVAL form of a queued EVALSHA call: the same arguments with the
 * script's source in place of its SHA1. Returns the length, or -1.
 */
static int eval_form(struct nodeset *ns, const struct command *command, char **out)
{
    const char *resp = command->resp, *rest;
    const char *source = ns->scripts[command->script];
    size_t source_len = strlen(source), rest_len;
    long argc = strtol(resp + 1, NULL, 10);
    char head[64];
    int head_len;

    /* "*<argc>\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n" then the remaining arguments. */
    rest = strstr(resp, "\r\n$40\r\n");
    if (rest == NULL)
        return -1;
    rest += 7 + 40 + 2;
    rest_len = command->len - (size_t)(rest - resp);
    head_len = snprintf(head, sizeof(head), "*%ld\r\n$4\r\nEVAL\r\n$%zu\r\n", argc, source_len);
    *out = malloc((size_t)head_len + source_len + 2 + rest_len);
    if (*out == NULL)
        return -1;
    memcpy(*out, head, (size_t)head_len);
    memcpy(*out + head_len, source, source_len);
    memcpy(*out + head_len + source_len, "\r\n", 2);
    memcpy(*out + head_len + source_len + 2, rest, rest_len);
    return (int)((size_t)head_len + source_len + 2 + rest_len);
}

static bool is_noscript(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR &&
           strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* Adds w at the tail of node's queue of replies owed; false when out of memory. */
static bool owe(struct node *node, const struct waiter *w)
{
    if (node->owed == node->cap) {
        size_t cap = node->cap ? node->cap * 2 : 64;
        struct waiter *grown = malloc(cap * sizeof(*grown));

        if (grown == NULL)
            return false;
        for (size_t i = 0; i < node->owed; i++)
            grown[i] = *owed_at(node, i);
        free(node->waiters);
        node->waiters = grown;
        node->head = 0;
        node->cap = cap;
    }
    node->waiters[(node->head + node->owed) % node->cap] = *w;
    node->owed++;
    return true;
}

/*
 * Appends the round's commands [sent, count) for node i (with only_noscript,
 * the EVAL form of those answered NOSCRIPT) to its connection, each with its
 * waiter, and counts them as awaited; the lock is held. A failure midway
 * dooms the connection (part of the pipeline is in its buffer): the I/O
 * thread closes it and settles what it owed. Returns the count sent.
 */
static size_t send_pipe(struct nodeset *ns, struct nodeset_round *round, size_t i,
                        bool only_noscript)
{
    struct node *node = &ns->nodes[i];
    struct pipe *pipe = &round->pipes[i];
    size_t queued = 0;

    pipe->done_boot_ms = 0;
    if (node->ctx == NULL || node->doomed)
        return 0;
    for (size_t k = pipe->sent; k < pipe->count; k++) {
        struct command *command = &pipe->commands[k];
        struct waiter w = {.round = round, .epoch = round->epoch, .index = k};
        bool ok;

        if (only_noscript) {
            char *eval = NULL;
            int len;

            if (!is_noscript(pipe->replies[k]))
                continue;
            freeReplyObject(pipe->replies[k]);
            pipe->replies[k] = NULL;
            len = eval_form(ns, command, &eval);
            ok = len >= 0 && redisconn_append(node->ctx, eval, (size_t)len) == CF_OK;
            free(eval);
        } else {
            ok = redisconn_append(node->ctx, command->resp, command->len) == CF_OK;
        }
        if (!ok || !owe(node, &w)) {
            node->doomed = true;
            break;
        }
        /* Owing nothing before, the node is as good as just heard from: the stuck clock starts. */
        if (node->owed == 1)
            node->progress_boot_ms = cf_boot_ms();
        queued++;
    }
    pipe->awaited += queued;
    round->awaited += queued;
    return queued;
}

/*
 * One pass of an exec: sends (see send_pipe), writes what the socket takes
 * at once (the I/O thread writes the rest), then waits until every reply
 * came or the deadline passed. Replies still owed after it are dropped.
 */
static void exec_pass(struct nodeset_round *round, bool only_noscript, int64_t timeout_ms)
{
    struct nodeset *ns = round->ns;
    int64_t start = cf_boot_ms(), deadline;
    size_t longest = 0;
    bool wake = false;

    pthread_mutex_lock(&ns->lock);
    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];
        size_t queued = send_pipe(ns, round, i, only_noscript);

        if (queued > longest)
            longest = queued;
        if (queued > 0 && !node->doomed && !node->unflushed) {
            if (redisconn_flush(node->ctx) != CF_OK)
                node->doomed = true;
            else
                node->unflushed = redisconn_unflushed(node->ctx);
            wake |= node->unflushed;
        }
        wake |= node->doomed;
    }
    if (wake)
        wake_io(ns);
    deadline = start + timeout_ms + (int64_t)(longest * NODESET_PER_COMMAND_US / 1000);
    while (round->awaited > 0) {
        int64_t remaining = deadline - cf_boot_ms();
        struct timespec until;

        if (remaining <= 0)
            break;
        cf_monotonic_deadline(remaining, &until);
        pthread_cond_timedwait(&round->done, &ns->lock, &until);
    }
    round->epoch++;
    round->awaited = 0;
    for (size_t i = 0; i < ns->count; i++) {
        struct pipe *pipe = &round->pipes[i];
        struct node *node = &ns->nodes[i];

        if (pipe->awaited == 0 && pipe->done_boot_ms != 0) {
            double sample = (double)(pipe->done_boot_ms - start);

            node->latency_ms = node->latency_ms == 0
                                   ? sample
                                   : node->latency_ms * (1 - NODESET_LATENCY_WEIGHT) +
                                         sample * NODESET_LATENCY_WEIGHT;
        }
        pipe->awaited = 0;
    }
    pthread_mutex_unlock(&ns->lock);
}

void nodeset_round_exec(struct nodeset_round *round)
{
    nodeset_round_exec_within(round, round->ns->timeout_ms);
}

void nodeset_round_exec_within(struct nodeset_round *round, int64_t timeout_ms)
{
    struct nodeset *ns = round->ns;
    bool noscript = false;

    exec_pass(round, false, timeout_ms);
    for (size_t i = 0; i < ns->count && !noscript; i++) {
        struct pipe *pipe = &round->pipes[i];

        for (size_t k = pipe->sent; k < pipe->count; k++) {
            if (is_noscript(pipe->replies[k])) {
                noscript = true;
                break;
            }
        }
    }
    if (noscript) {
        log_info("redis scripts reloaded", "reason=%s", "NOSCRIPT");
        exec_pass(round, true, timeout_ms);
    }
    for (size_t i = 0; i < ns->count; i++)
        round->pipes[i].sent = round->pipes[i].count;
}

const redisReply *nodeset_round_reply(const struct nodeset_round *round, size_t node, int index)
{
    const struct pipe *pipe = &round->pipes[node];

    if (index < 0 || (size_t)index >= pipe->count)
        return NULL;
    return pipe->replies[index];
}

void nodeset_round_end(struct nodeset_round *round)
{
    struct nodeset *ns;

    if (round == NULL)
        return;
    ns = round->ns;
    pipes_reset(round);
    pthread_mutex_lock(&ns->lock);
    round->next_free = ns->free_rounds;
    ns->free_rounds = round;
    pthread_cond_signal(&ns->round_freed);
    pthread_mutex_unlock(&ns->lock);
}
