/*
 * nodeset.c - connections to the Redis nodes and pipelined rounds over them.
 *
 * Representation: struct nodeset owns one struct node per configured URL.
 * A node's command connection (ctx) and everything a round touches are
 * guarded by ns->lock, which a round holds from begin to end; the round
 * itself is embedded in the set and reused, so a round allocates only when
 * it outgrows the previous ones. The subscriber connections (sub) belong to
 * the maintenance thread alone. Connections are hiredis contexts used in
 * non-blocking mode: commands are appended to the output buffer, then one
 * poll() loop writes and reads every node until the round's deadline.
 */
#include "nodeset.h"

#include <errno.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common.h"
#include "log.h"

/* Handshake budget of a new connection: connect, AUTH, SELECT, scripts, CONFIG. */
#define NODESET_HANDSHAKE_MS 250
/* Reconnection backoff: doubles from the first value up to the cap. */
#define NODESET_BACKOFF_FIRST_MS 100
#define NODESET_BACKOFF_MAX_MS 2000
/* Extra time per queued command, so a pipeline of thousands is not cut short. */
#define NODESET_PER_COMMAND_US 20
/* Weight of a new latency sample in the smoothed figure. */
#define NODESET_LATENCY_WEIGHT 0.2

/* One queued command: its RESP text, and for a script call what EVAL needs. */
struct command {
    char *resp; /* from redisFormatCommandArgv(); redisFreeCommand() */
    size_t len;
    int script; /* script number, or -1 */
};

/* A node's share of the current round. */
struct pipe {
    struct command *commands;
    size_t count, cap;
    size_t sent;          /* commands written by earlier execs of this round */
    redisReply **replies; /* cap entries, NULL when none */
};

struct node {
    struct nodeset_url url;
    char address[300];
    redisContext *ctx;        /* command connection; NULL while down */
    size_t stale;             /* replies owed to rounds that stopped waiting for them */
    int64_t progress_boot_ms; /* when a reply (even a late one) last arrived */
    uint64_t generation;      /* connections made so far; a reconnect is a new one */
    int64_t next_connect_boot_ms;
    int64_t backoff_ms;
    double latency_ms;
    char warnings[NODESET_WARNINGS_MAX];
    struct pipe pipe;

    /* Maintenance thread only. */
    redisContext *sub;
    int64_t sub_next_connect_boot_ms;
    int64_t sub_backoff_ms;
};

struct nodeset_round {
    struct nodeset *ns;
};

struct nodeset {
    pthread_mutex_t lock; /* guards every node's ctx, counters and pipe */
    struct node *nodes;
    size_t count;
    int64_t timeout_ms;
    const char *const *scripts;
    size_t script_count;
    char (*shas)[41]; /* SHA1 of each script, hex */
    char *channel;
    struct nodeset_round round;
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
    static const char scheme[] = "redis://";
    const char *p = text, *at, *host_end, *authority_end, *port_start = NULL;
    long number;

    memset(url, 0, sizeof(*url));
    url->port = 6379;
    if (strncmp(p, scheme, sizeof(scheme) - 1) != 0)
        return url_fail(err, errlen, text, "expected redis://[:password@]host:port[/db]");
    p += sizeof(scheme) - 1;
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
/* Exchanging with several connections at once                              */
/* ---------------------------------------------------------------------- */

/* One connection's part in an exchange. */
struct link {
    redisContext *c; /* NULL: not taking part */
    size_t stale;    /* replies to read and drop before ours (in/out) */
    size_t want;     /* replies to gather into out */
    size_t got;
    redisReply **out;
    bool written;         /* output buffer flushed */
    int64_t done_boot_ms; /* when the last wanted reply arrived; 0 until then */
    bool failed;          /* I/O or protocol error: the connection is unusable */
};

/* Moves parsed replies from the reader into the link. */
static void drain_replies(struct link *link)
{
    while (!link->failed && (link->stale > 0 || link->got < link->want)) {
        void *reply = NULL;

        if (redisGetReplyFromReader(link->c, &reply) != REDIS_OK) {
            link->failed = true;
            break;
        }
        if (reply == NULL)
            break;
        if (link->stale > 0) {
            link->stale--;
            freeReplyObject(reply);
        } else {
            link->out[link->got++] = reply;
        }
    }
    if (link->got == link->want && link->done_boot_ms == 0)
        link->done_boot_ms = cf_boot_ms();
}

static bool link_pending(const struct link *link)
{
    return link->c != NULL && !link->failed && (!link->written || link->got < link->want);
}

/*
 * Writes every link's output and reads its replies until each has want
 * replies, fails, or deadline_boot_ms passes. Replies beyond the wanted ones
 * stay in the reader for the next exchange.
 */
static void exchange(struct link *links, size_t n, int64_t deadline_boot_ms)
{
    struct pollfd *fds = calloc(n ? n : 1, sizeof(*fds));
    size_t *which = calloc(n ? n : 1, sizeof(*which));

    if (fds == NULL || which == NULL) {
        for (size_t i = 0; i < n; i++)
            links[i].failed = links[i].c != NULL;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int done = 0;

        if (links[i].c == NULL)
            continue;
        if (redisBufferWrite(links[i].c, &done) != REDIS_OK)
            links[i].failed = true;
        links[i].written = done != 0;
        drain_replies(&links[i]);
    }
    for (;;) {
        nfds_t k = 0;
        int64_t remaining = deadline_boot_ms - cf_boot_ms();

        for (size_t i = 0; i < n; i++) {
            if (!link_pending(&links[i]))
                continue;
            fds[k].fd = links[i].c->fd;
            fds[k].events = (short)(POLLIN | (links[i].written ? 0 : POLLOUT));
            fds[k].revents = 0;
            which[k++] = i;
        }
        if (k == 0 || remaining <= 0)
            break;
        if (poll(fds, k, (int)remaining) < 0 && errno != EINTR)
            break;
        for (nfds_t j = 0; j < k; j++) {
            struct link *link = &links[which[j]];

            if (fds[j].revents & POLLOUT) {
                int done = 0;

                if (redisBufferWrite(link->c, &done) != REDIS_OK)
                    link->failed = true;
                link->written = done != 0;
            }
            if (!link->failed && (fds[j].revents & (POLLIN | POLLHUP | POLLERR))) {
                if (redisBufferRead(link->c) != REDIS_OK)
                    link->failed = true;
                drain_replies(link);
            }
        }
    }
out:
    free(fds);
    free(which);
}

/* ---------------------------------------------------------------------- */
/* Connections                                                              */
/* ---------------------------------------------------------------------- */

/* Drops node's command connection; the lock is held. */
static void drop_connection(struct nodeset *ns, struct node *node, const char *why)
{
    if (node->ctx == NULL)
        return;
    log_warn("redis node down", "node=%s error=\"%s\"", node->address, why);
    redisFree(node->ctx);
    node->ctx = NULL;
    node->stale = 0;
    node->next_connect_boot_ms = cf_boot_ms() + node->backoff_ms;
}

/* Waits for a non-blocking connect to finish; false when it failed or timed out. */
static bool await_connect(redisContext *c, int64_t deadline_boot_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    int64_t remaining = deadline_boot_ms - cf_boot_ms();
    int so_error = 0;
    socklen_t len = sizeof(so_error);

    if (remaining <= 0 || poll(&pfd, 1, (int)remaining) != 1)
        return false;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0)
        return false;
    return true;
}

/* Appends a C-string command to a fresh context's output; false when out of memory. */
static bool append(redisContext *c, int argc, const char **argv)
{
    return redisAppendCommandArgv(c, argc, argv, NULL) == REDIS_OK;
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

/*
 * Opens and prepares a connection to node: AUTH, SELECT, then either the
 * scripts and the configuration (command connection) or SUBSCRIBE
 * (subscriber). Returns the context, or NULL with the reason in why.
 */
static redisContext *open_connection(struct nodeset *ns, struct node *node, bool subscriber,
                                     char *warnings, size_t warnings_size, char *why,
                                     size_t why_len)
{
    int64_t deadline = cf_boot_ms() + NODESET_HANDSHAKE_MS;
    redisContext *c = redisConnectNonBlock(node->url.host, node->url.port);
    redisReply *replies[32] = {0};
    struct link link = {0};
    size_t first_script = 0, first_config = 0;
    char db[16];
    bool ok = false;

    if (c == NULL || c->err) {
        snprintf(why, why_len, "%s", c ? c->errstr : "out of memory");
        goto out;
    }
    if (!await_connect(c, deadline)) {
        snprintf(why, why_len, "connection refused or timed out");
        goto out;
    }
    if (node->url.password[0] != '\0') {
        const char *auth[] = {"AUTH", node->url.user, node->url.password};

        if (node->url.user[0] != '\0' ? !append(c, 3, auth)
                                      : !append(c, 2, (const char *[]){"AUTH", auth[2]}))
            goto out_nomem;
        link.want++;
    }
    if (!subscriber && node->url.db != 0) {
        snprintf(db, sizeof(db), "%d", node->url.db);
        if (!append(c, 2, (const char *[]){"SELECT", db}))
            goto out_nomem;
        link.want++;
    }
    if (subscriber) {
        if (!append(c, 2, (const char *[]){"SUBSCRIBE", ns->channel}))
            goto out_nomem;
        link.want++;
    } else {
        first_script = link.want;
        for (size_t i = 0; i < ns->script_count; i++)
            if (!append(c, 3, (const char *[]){"SCRIPT", "LOAD", ns->scripts[i]}))
                goto out_nomem;
        link.want += ns->script_count;
        first_config = link.want;
        if (!append(c, 3, (const char *[]){"CONFIG", "GET", "appendonly"}) ||
            !append(c, 3, (const char *[]){"CONFIG", "GET", "appendfsync"}) ||
            !append(c, 3, (const char *[]){"CONFIG", "GET", "maxmemory-policy"}))
            goto out_nomem;
        link.want += 3;
    }
    link.c = c;
    link.out = replies;
    exchange(&link, 1, deadline);
    if (link.failed || link.got < link.want) {
        snprintf(why, why_len, "%s", link.failed ? c->errstr : "handshake timed out");
        goto out;
    }
    for (size_t i = 0; i < first_script; i++) {
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "%s", replies[i]->str);
            goto out;
        }
    }
    if (subscriber) {
        if (replies[link.want - 1]->type != REDIS_REPLY_ARRAY) {
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
    for (size_t i = 0; i < link.got; i++)
        freeReplyObject(replies[i]);
    if (!ok && c != NULL) {
        redisFree(c);
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
        bool due;
        redisContext *c;

        pthread_mutex_lock(&ns->lock);
        due = node->ctx == NULL && now >= node->next_connect_boot_ms;
        pthread_mutex_unlock(&ns->lock);
        if (due) {
            c = open_connection(ns, node, false, warnings, sizeof(warnings), why, sizeof(why));
            pthread_mutex_lock(&ns->lock);
            if (c != NULL) {
                node->ctx = c;
                node->generation++;
                node->stale = 0;
                node->progress_boot_ms = cf_boot_ms();
                node->backoff_ms = NODESET_BACKOFF_FIRST_MS;
                snprintf(node->warnings, sizeof(node->warnings), "%s", warnings);
            } else {
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

                log_debug("redis node unreachable", "node=%s error=\"%s\"", node->address,
                          log_quote(why, quoted, sizeof(quoted)));
            }
        }
        if (ns->channel != NULL && node->sub == NULL && now >= node->sub_next_connect_boot_ms) {
            node->sub =
                open_connection(ns, node, true, warnings, sizeof(warnings), why, sizeof(why));
            if (node->sub == NULL) {
                node->sub_next_connect_boot_ms = cf_boot_ms() + node->sub_backoff_ms;
                node->sub_backoff_ms = next_backoff(node->sub_backoff_ms);
            } else {
                node->sub_backoff_ms = NODESET_BACKOFF_FIRST_MS;
            }
        }
    }
}

int nodeset_wait_message(struct nodeset *ns, int64_t wait_ms)
{
    struct pollfd fds[64];
    size_t which[64];
    nfds_t k = 0;
    int messages = 0;

    for (size_t i = 0; i < ns->count && k < 64; i++) {
        if (ns->nodes[i].sub == NULL)
            continue;
        fds[k].fd = ns->nodes[i].sub->fd;
        fds[k].events = POLLIN;
        fds[k].revents = 0;
        which[k++] = i;
    }
    if (k == 0) {
        cf_sleep_ms(wait_ms);
        return 0;
    }
    if (poll(fds, k, (int)(wait_ms > 0 ? wait_ms : 0)) <= 0)
        return 0;
    for (nfds_t j = 0; j < k; j++) {
        struct node *node = &ns->nodes[which[j]];
        void *reply;

        if (!(fds[j].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (redisBufferRead(node->sub) != REDIS_OK)
            goto out_drop;
        for (;;) {
            reply = NULL;
            if (redisGetReplyFromReader(node->sub, &reply) != REDIS_OK)
                goto out_drop;
            if (reply == NULL)
                break;
            messages++;
            freeReplyObject(reply);
        }
        continue;
    out_drop:
        redisFree(node->sub);
        node->sub = NULL;
        node->sub_next_connect_boot_ms = cf_boot_ms() + node->sub_backoff_ms;
        /* A lost subscription may have lost a message: report one so the caller refreshes. */
        messages++;
    }
    return messages;
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
    ns->timeout_ms = cfg->timeout_ms;
    ns->scripts = cfg->scripts;
    ns->script_count = cfg->script_count;
    ns->round.ns = ns;
    for (const char *p = cfg->urls; *p != '\0'; p++)
        count += *p == ',';
    ns->nodes = calloc(count, sizeof(*ns->nodes));
    ns->shas = calloc(cfg->script_count ? cfg->script_count : 1, sizeof(*ns->shas));
    list = strdup(cfg->urls);
    if (ns->nodes == NULL || ns->shas == NULL || list == NULL)
        goto out;
    if (cfg->channel != NULL && (ns->channel = strdup(cfg->channel)) == NULL)
        goto out;
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
    *out = ns;
    ret = CF_OK;
out:
    free(list);
    if (ret != CF_OK)
        nodeset_free(ns);
    return ret;
}

static void pipe_reset(struct pipe *pipe)
{
    for (size_t i = 0; i < pipe->count; i++) {
        redisFreeCommand(pipe->commands[i].resp);
        if (pipe->replies[i] != NULL)
            freeReplyObject(pipe->replies[i]);
        pipe->replies[i] = NULL;
    }
    pipe->count = 0;
    pipe->sent = 0;
}

void nodeset_free(struct nodeset *ns)
{
    if (ns == NULL)
        return;
    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];

        pipe_reset(&node->pipe);
        free(node->pipe.commands);
        free(node->pipe.replies);
        if (node->ctx != NULL)
            redisFree(node->ctx);
        if (node->sub != NULL)
            redisFree(node->sub);
    }
    pthread_mutex_destroy(&ns->lock);
    free(ns->nodes);
    free(ns->shas);
    free(ns->channel);
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

struct nodeset_round *nodeset_round_begin(struct nodeset *ns)
{
    pthread_mutex_lock(&ns->lock);
    return &ns->round;
}

bool nodeset_round_node_up(const struct nodeset_round *round, size_t node)
{
    return round->ns->nodes[node].ctx != NULL;
}

uint64_t nodeset_round_generation(const struct nodeset_round *round, size_t node)
{
    return round->ns->nodes[node].generation;
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

    return pipe_add(&round->ns->nodes[node].pipe, resp, len, -1);
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
    return pipe_add(&ns->nodes[node].pipe, resp, len, (int)script);
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

/*
 * Writes commands [from, to) of every node's pipe (or, with only_noscript,
 * the EVAL form of those that got NOSCRIPT) and gathers their replies.
 */
static void exec_range(struct nodeset *ns, bool only_noscript, int64_t timeout_ms)
{
    struct link links[ns->count];
    size_t longest = 0;
    int64_t start = cf_boot_ms();

    memset(links, 0, sizeof(links));
    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];
        struct pipe *pipe = &node->pipe;
        size_t queued = 0;
        bool broken = false;

        if (node->ctx == NULL || pipe->sent == pipe->count)
            continue;
        for (size_t k = pipe->sent; k < pipe->count; k++) {
            struct command *command = &pipe->commands[k];

            if (only_noscript) {
                char *eval = NULL;
                int len;

                if (!is_noscript(pipe->replies[k]))
                    continue;
                len = eval_form(ns, command, &eval);
                if (len < 0 ||
                    redisAppendFormattedCommand(node->ctx, eval, (size_t)len) != REDIS_OK) {
                    free(eval);
                    broken = true;
                    break;
                }
                free(eval);
            } else if (redisAppendFormattedCommand(node->ctx, command->resp, command->len) !=
                       REDIS_OK) {
                broken = true;
                break;
            }
            queued++;
        }
        if (broken) {
            /* Part of the pipeline is in the buffer: the stream cannot be trusted. */
            drop_connection(ns, node, "out of memory");
            continue;
        }
        if (queued == 0)
            continue;
        links[i].c = node->ctx;
        links[i].stale = node->stale;
        /* Owing nothing, the node is as good as just heard from: the stuck clock starts now. */
        if (node->stale == 0)
            node->progress_boot_ms = start;
        links[i].want = queued;
        links[i].out = calloc(queued, sizeof(*links[i].out));
        if (links[i].out == NULL) {
            /* Nothing can receive the replies: the connection's stream is now unusable. */
            links[i].c = NULL;
            drop_connection(ns, node, "out of memory");
            continue;
        }
        if (queued > longest)
            longest = queued;
    }
    exchange(links, ns->count,
             start + timeout_ms + (int64_t)(longest * NODESET_PER_COMMAND_US / 1000));

    for (size_t i = 0; i < ns->count; i++) {
        struct node *node = &ns->nodes[i];
        struct pipe *pipe = &node->pipe;
        size_t got = 0;

        if (links[i].c == NULL)
            continue;
        /* Any reply read, late ones included, shows the node is alive. */
        if (links[i].got > 0 || links[i].stale < node->stale)
            node->progress_boot_ms = cf_boot_ms();
        node->stale = links[i].stale;
        for (size_t k = pipe->sent; k < pipe->count; k++) {
            if (only_noscript && !is_noscript(pipe->replies[k]))
                continue;
            if (pipe->replies[k] != NULL)
                freeReplyObject(pipe->replies[k]);
            pipe->replies[k] = got < links[i].got ? links[i].out[got] : NULL;
            got++;
        }
        free(links[i].out);
        if (links[i].failed) {
            drop_connection(ns, node, node->ctx->errstr[0] ? node->ctx->errstr : "i/o error");
            continue;
        }
        if (links[i].got < links[i].want) {
            node->stale += links[i].want - links[i].got;
            if (cf_boot_ms() - node->progress_boot_ms >= NODESET_STUCK_MS)
                drop_connection(ns, node, "no reply for a second");
            continue;
        }
        {
            double sample = (double)(links[i].done_boot_ms - start);

            node->latency_ms = node->latency_ms == 0
                                   ? sample
                                   : node->latency_ms * (1 - NODESET_LATENCY_WEIGHT) +
                                         sample * NODESET_LATENCY_WEIGHT;
        }
    }
}

void nodeset_round_exec(struct nodeset_round *round)
{
    nodeset_round_exec_within(round, round->ns->timeout_ms);
}

void nodeset_round_exec_within(struct nodeset_round *round, int64_t timeout_ms)
{
    struct nodeset *ns = round->ns;
    bool noscript = false;

    exec_range(ns, false, timeout_ms);
    for (size_t i = 0; i < ns->count && !noscript; i++) {
        struct pipe *pipe = &ns->nodes[i].pipe;

        for (size_t k = pipe->sent; k < pipe->count; k++) {
            if (is_noscript(pipe->replies[k])) {
                noscript = true;
                break;
            }
        }
    }
    if (noscript) {
        log_info("redis scripts reloaded", "reason=%s", "NOSCRIPT");
        exec_range(ns, true, timeout_ms);
    }
    for (size_t i = 0; i < ns->count; i++)
        ns->nodes[i].pipe.sent = ns->nodes[i].pipe.count;
}

const redisReply *nodeset_round_reply(const struct nodeset_round *round, size_t node, int index)
{
    const struct pipe *pipe = &round->ns->nodes[node].pipe;

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
    for (size_t i = 0; i < ns->count; i++)
        pipe_reset(&ns->nodes[i].pipe);
    pthread_mutex_unlock(&ns->lock);
}
