/*
 * config.c - flags and environment variables, from one table.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum option_kind {
    OPT_STRING,
    OPT_TOKENS,
    OPT_INT,
    OPT_LEVEL,
    OPT_FORMAT,
    OPT_FLAG,
    OPT_FILE,
    OPT_BOOL
};

struct option_spec {
    const char *name;
    const char *env;
    enum option_kind kind;
    const char *arg;
    const char *help;
    int64_t min, max; /* for OPT_INT */
};

static const struct option_spec specs[] = {
    {"listen", "CRONFENCE_LISTEN", OPT_STRING, "HOST:PORT",
     "API and dashboard address (default 127.0.0.1:8080; port 0 picks a free one)", 0, 0},
    {"db", "CRONFENCE_DB", OPT_STRING, "PATH", "SQLite database (default ./cronfence.db)", 0, 0},
    {"redis", "CRONFENCE_REDIS", OPT_STRING, "URL[,URL...]",
     "lock nodes redis:// or rediss:// (TLS) [[user]:password@]host:port[/db]; none runs "
     "standalone",
     0, 0},
    {"redis-ca", "CRONFENCE_REDIS_CA", OPT_STRING, "F",
     "CA bundle (PEM) rediss:// nodes are verified against (default: the system's CAs)", 0, 0},
    {"redis-prefix", "CRONFENCE_REDIS_PREFIX", OPT_STRING, "P",
     "prefix of every key cronfence writes on the Redis nodes (default cf:)", 0, 0},
    {"redis-timeout-ms", "CRONFENCE_REDIS_TIMEOUT_MS", OPT_INT, "N",
     "how long a round waits for each Redis node (default 50)", 1, 10000},
    {"claim-stagger-ms", "CRONFENCE_CLAIM_STAGGER_MS", OPT_INT, "N",
     "delay between the claims of instances ranked for a slot (default 25)", 0, 10000},
    {"instance-id", "CRONFENCE_INSTANCE_ID", OPT_STRING, "ID",
     "name shown in runs (default: generated once, kept in the database)", 0, 0},
    {"advertise", "CRONFENCE_ADVERTISE", OPT_STRING, "URL",
     "URL others show for this instance (default: from --listen)", 0, 0},
    {"admin-token", "CRONFENCE_ADMIN_TOKEN", OPT_TOKENS, "T",
     "API token that may write (repeatable or comma-separated)", 0, 0},
    {"viewer-token", "CRONFENCE_VIEWER_TOKEN", OPT_TOKENS, "T",
     "API token that may only read (repeatable or comma-separated)", 0, 0},
    {"admin-token-file", "CRONFENCE_ADMIN_TOKEN_FILE", OPT_FILE, "F",
     "read --admin-token from file F (one line; keeps it out of ps)", 0, 0},
    {"viewer-token-file", "CRONFENCE_VIEWER_TOKEN_FILE", OPT_FILE, "F",
     "read --viewer-token from file F (one line)", 0, 0},
    {"signing-secret", "CRONFENCE_SIGNING_SECRET", OPT_STRING, "S",
     "default webhook signing secret, at least 16 bytes (default: generated once; in a cluster "
     "once for the whole cluster, kept on the lock nodes, which it only seeds)",
     0, 0},
    {"signing-secret-file", "CRONFENCE_SIGNING_SECRET_FILE", OPT_FILE, "F",
     "read --signing-secret from file F (one line; keeps it out of ps)", 0, 0},
    {"secret-overlap-hours", "CRONFENCE_SECRET_OVERLAP_HOURS", OPT_INT, "N",
     "how long a rotated signing secret still signs deliveries (default 24)", 0, 8760},
    {"webhook-allow", "CRONFENCE_WEBHOOK_ALLOW", OPT_STRING, "LIST",
     "hosts or CIDRs webhooks may reach (default: everything but link-local and cloud metadata)", 0,
     0},
    {"node-quarantine-ms", "CRONFENCE_NODE_QUARANTINE_MS", OPT_INT, "N",
     "how long a wiped Redis node stays untrusted (default: twice the longest lease, at "
     "least 60000)",
     1, 86400000},
    {"history-days", "CRONFENCE_HISTORY_DAYS", OPT_INT, "N", "run history retention (default 30)",
     1, 36500},
    {"history-per-job", "CRONFENCE_HISTORY_PER_JOB", OPT_INT, "N",
     "most runs kept per job (default 10000)", 10, 10000000},
    {"shutdown-grace-ms", "CRONFENCE_SHUTDOWN_GRACE_MS", OPT_INT, "N",
     "how long deliveries in flight may finish after SIGTERM (default 30000)", 0, 3600000},
    {"tls-cert", "CRONFENCE_TLS_CERT", OPT_STRING, "F",
     "serve the API and dashboard over HTTPS with this certificate chain (PEM; needs --tls-key)", 0,
     0},
    {"tls-key", "CRONFENCE_TLS_KEY", OPT_STRING, "F", "private key (PEM) of --tls-cert", 0, 0},
    {"web-dir", "CRONFENCE_WEB_DIR", OPT_STRING, "DIR",
     "serve the dashboard from this folder instead of the copy built in (for development)", 0, 0},
    {"notify-url", "CRONFENCE_NOTIFY_URL", OPT_STRING, "URL",
     "default notification target for jobs without notify (failed, fenced, missed, lost runs)", 0,
     0},
    {"metrics-per-job", "CRONFENCE_METRICS_PER_JOB", OPT_BOOL, "[=true|false]",
     "per-job series in /metrics (default true)", 0, 0},
    {"log-level", "CRONFENCE_LOG_LEVEL", OPT_LEVEL, "L",
     "debug, info, warn or error (default info)", 0, 0},
    {"log-format", "CRONFENCE_LOG_FORMAT", OPT_FORMAT, "F",
     "text (message then key=value pairs) or json (one object per line) (default text)", 0, 0},
    {"log-file", "CRONFENCE_LOG_FILE", OPT_STRING, "PATH",
     "append the log to PATH instead of standard error; SIGHUP reopens it (for log rotation)", 0,
     0},
    {"help", NULL, OPT_FLAG, NULL, "show this help", 0, 0},
    {"version", NULL, OPT_FLAG, NULL, "print the version", 0, 0},
};

#define SPEC_COUNT (sizeof(specs) / sizeof(specs[0]))

void config_usage(FILE *out)
{
    fprintf(out, "usage: cronfence [flags]\n"
                 "       cronfence --healthcheck [flags]   GET /healthz where the flags listen\n\n"
                 "Distributed cron: runs scheduled webhooks once per slot across a cluster,\n"
                 "with fencing tokens. Without --redis, one instance runs standalone.\n\n"
                 "flags (each also read from its environment variable; flags win):\n");
    for (size_t i = 0; i < SPEC_COUNT; i++) {
        char left[64];

        snprintf(left, sizeof(left), "--%s%s%s", specs[i].name,
                 specs[i].arg && specs[i].kind != OPT_BOOL ? " " : "",
                 specs[i].arg ? specs[i].arg : "");
        fprintf(out, "  %-28s %s%s%s%s\n", left, specs[i].help, specs[i].env ? " [" : "",
                specs[i].env ? specs[i].env : "", specs[i].env ? "]" : "");
    }
}

/* Adds the comma-separated tokens of value to a NULL-terminated list. */
static int add_tokens(char ***list, size_t *count, const char *value)
{
    char *copy = strdup(value), *save = NULL;

    if (copy == NULL)
        return CF_ERR_NOMEM;
    for (char *token = strtok_r(copy, ",", &save); token != NULL;
         token = strtok_r(NULL, ",", &save)) {
        char **grown;

        while (*token == ' ')
            token++;
        if (*token == '\0')
            continue;
        grown = realloc(*list, (*count + 2) * sizeof(**list));
        if (grown == NULL) {
            free(copy);
            return CF_ERR_NOMEM;
        }
        *list = grown;
        (*list)[*count] = strdup(token);
        if ((*list)[*count] == NULL) {
            free(copy);
            return CF_ERR_NOMEM;
        }
        (*list)[++*count] = NULL;
    }
    free(copy);
    return CF_OK;
}

static void free_tokens(char ***list, size_t *count)
{
    for (size_t i = 0; *list != NULL && i < *count; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
    *count = 0;
}

static char **string_slot(struct config *cfg, const char *name)
{
    if (strcmp(name, "listen") == 0)
        return &cfg->listen;
    if (strcmp(name, "db") == 0)
        return &cfg->db_path;
    if (strcmp(name, "redis") == 0)
        return &cfg->redis;
    if (strcmp(name, "redis-ca") == 0)
        return &cfg->redis_ca;
    if (strcmp(name, "tls-cert") == 0)
        return &cfg->tls_cert;
    if (strcmp(name, "tls-key") == 0)
        return &cfg->tls_key;
    if (strcmp(name, "redis-prefix") == 0)
        return &cfg->redis_prefix;
    if (strcmp(name, "instance-id") == 0)
        return &cfg->instance_id;
    if (strcmp(name, "advertise") == 0)
        return &cfg->advertise;
    if (strcmp(name, "signing-secret") == 0)
        return &cfg->signing_secret;
    if (strcmp(name, "webhook-allow") == 0)
        return &cfg->webhook_allow;
    if (strcmp(name, "web-dir") == 0)
        return &cfg->web_dir;
    if (strcmp(name, "log-file") == 0)
        return &cfg->log_file;
    if (strcmp(name, "notify-url") == 0)
        return &cfg->notify_url;
    return NULL;
}

static int apply(struct config *cfg, const struct option_spec *spec, const char *value,
                 bool from_flag, bool *tokens_from_flag, char *err, size_t errlen);

/*
 * --X-file F: applies the contents of F, less its trailing line ends and
 * spaces, as the value of --X. The value is wiped from memory after use.
 */
static int apply_file(struct config *cfg, const struct option_spec *spec, const char *path,
                      bool from_flag, bool *tokens_from_flag, char *err, size_t errlen)
{
    char target[64], value[4097];
    const struct option_spec *target_spec = NULL;
    size_t len, name_len = strlen(spec->name) - strlen("-file");
    FILE *file;
    int ret;

    snprintf(target, sizeof(target), "%.*s", (int)name_len, spec->name);
    for (size_t i = 0; i < SPEC_COUNT; i++)
        if (strcmp(specs[i].name, target) == 0)
            target_spec = &specs[i];
    if (target_spec == NULL)
        return CF_ERR_INVALID;
    file = fopen(path, "r");
    if (file == NULL) {
        snprintf(err, errlen, "--%s: cannot read %s: %s", spec->name, path, strerror(errno));
        return CF_ERR_INVALID;
    }
    len = fread(value, 1, sizeof(value) - 1, file);
    ret = ferror(file) ? CF_ERR_IO : fgetc(file) != EOF ? CF_ERR_TOO_LARGE : CF_OK;
    fclose(file);
    if (ret != CF_OK) {
        OPENSSL_cleanse(value, sizeof(value));
        if (ret == CF_ERR_IO)
            snprintf(err, errlen, "--%s: cannot read %s", spec->name, path);
        else
            snprintf(err, errlen, "--%s: %s is over %zu bytes", spec->name, path,
                     sizeof(value) - 1);
        return CF_ERR_INVALID;
    }
    while (len > 0 && (value[len - 1] == '\n' || value[len - 1] == '\r' || value[len - 1] == ' ' ||
                       value[len - 1] == '\t'))
        len--;
    value[len] = '\0';
    if (len == 0 || memchr(value, '\n', len) != NULL) {
        snprintf(err, errlen, "--%s: %s must hold one non-empty line", spec->name, path);
        ret = CF_ERR_INVALID;
    } else {
        ret = apply(cfg, target_spec, value, from_flag, tokens_from_flag, err, errlen);
    }
    OPENSSL_cleanse(value, sizeof(value));
    return ret;
}

/* Applies one option value; from_flag says whether it came from argv (tokens: flags replace env).
 */
static int apply(struct config *cfg, const struct option_spec *spec, const char *value,
                 bool from_flag, bool *tokens_from_flag, char *err, size_t errlen)
{
    char **slot;

    switch (spec->kind) {
    case OPT_STRING:
        slot = string_slot(cfg, spec->name);
        free(*slot);
        *slot = strdup(value);
        return *slot != NULL ? CF_OK : CF_ERR_NOMEM;
    case OPT_TOKENS: {
        bool admin = strcmp(spec->name, "admin-token") == 0;
        char ***list = admin ? &cfg->admin_tokens : &cfg->viewer_tokens;
        size_t *count = admin ? &cfg->admin_token_count : &cfg->viewer_token_count;

        if (from_flag && !tokens_from_flag[admin]) {
            free_tokens(list, count);
            tokens_from_flag[admin] = true;
        }
        return add_tokens(list, count, value);
    }
    case OPT_INT: {
        char *end;
        long long parsed;

        errno = 0;
        parsed = strtoll(value, &end, 10);
        if (*value == '\0' || *end != '\0' || errno != 0 || parsed < spec->min ||
            parsed > spec->max) {
            snprintf(err, errlen, "--%s must be an integer from %lld to %lld, got %s", spec->name,
                     (long long)spec->min, (long long)spec->max, value);
            return CF_ERR_INVALID;
        }
        if (strcmp(spec->name, "secret-overlap-hours") == 0)
            cfg->secret_overlap_ms = parsed * 3600000;
        else if (strcmp(spec->name, "node-quarantine-ms") == 0)
            cfg->node_quarantine_ms = parsed;
        else if (strcmp(spec->name, "redis-timeout-ms") == 0)
            cfg->redis_timeout_ms = parsed;
        else if (strcmp(spec->name, "claim-stagger-ms") == 0)
            cfg->claim_stagger_ms = parsed;
        else if (strcmp(spec->name, "history-days") == 0)
            cfg->history_days = (int)parsed;
        else if (strcmp(spec->name, "history-per-job") == 0)
            cfg->history_per_job = (int)parsed;
        else
            cfg->shutdown_grace_ms = parsed;
        return CF_OK;
    }
    case OPT_LEVEL:
        if (log_parse_level(value, &cfg->log_level) != CF_OK) {
            snprintf(err, errlen, "--log-level must be debug, info, warn or error, got %s", value);
            return CF_ERR_INVALID;
        }
        return CF_OK;
    case OPT_FORMAT:
        if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
            snprintf(err, errlen, "--log-format must be text or json, got %s", value);
            return CF_ERR_INVALID;
        }
        cfg->log_json = strcmp(value, "json") == 0;
        return CF_OK;
    case OPT_FLAG:
        return CF_OK;
    case OPT_FILE:
        return apply_file(cfg, spec, value, from_flag, tokens_from_flag, err, errlen);
    case OPT_BOOL: {
        /* A bare --flag is true; the value spellings of systemd and most CLIs are accepted. */
        static const char *const truthy[] = {"true", "1", "yes", "on"};
        static const char *const falsy[] = {"false", "0", "no", "off"};

        for (size_t i = 0; i < 4; i++) {
            if (value == NULL || strcmp(value, truthy[i]) == 0) {
                cfg->metrics_per_job = true;
                return CF_OK;
            }
            if (strcmp(value, falsy[i]) == 0) {
                cfg->metrics_per_job = false;
                return CF_OK;
            }
        }
        snprintf(err, errlen, "--%s must be true or false, got %s", spec->name, value);
        return CF_ERR_INVALID;
    }
    }
    return CF_ERR_INVALID;
}

int config_parse(int argc, char **argv, struct config *cfg, enum config_action *action, char *err,
                 size_t errlen)
{
    struct option longopts[SPEC_COUNT + 1];
    bool tokens_from_flag[2] = {false, false};
    int ret, index;

    memset(cfg, 0, sizeof(*cfg));
    *action = CONFIG_RUN;
    cfg->listen = strdup("127.0.0.1:8080");
    cfg->db_path = strdup("./cronfence.db");
    cfg->redis_prefix = strdup("cf:");
    cfg->redis_timeout_ms = 50;
    cfg->claim_stagger_ms = 25;
    cfg->history_days = 30;
    cfg->history_per_job = 10000;
    cfg->shutdown_grace_ms = 30000;
    cfg->secret_overlap_ms = 24 * 3600000LL;
    cfg->log_level = LOG_INFO;
    cfg->metrics_per_job = true;
    if (cfg->listen == NULL || cfg->db_path == NULL || cfg->redis_prefix == NULL)
        return CF_ERR_NOMEM;

    for (size_t i = 0; i < SPEC_COUNT; i++) {
        const char *value = specs[i].env ? getenv(specs[i].env) : NULL;

        if (value == NULL || *value == '\0')
            continue;
        ret = apply(cfg, &specs[i], value, false, tokens_from_flag, err, errlen);
        if (ret != CF_OK)
            return ret;
    }
    for (size_t i = 0; i < SPEC_COUNT; i++) {
        longopts[i].name = specs[i].name;
        longopts[i].has_arg = specs[i].kind == OPT_FLAG   ? no_argument
                              : specs[i].kind == OPT_BOOL ? optional_argument
                                                          : required_argument;
        longopts[i].flag = NULL;
        longopts[i].val = 0;
    }
    memset(&longopts[SPEC_COUNT], 0, sizeof(longopts[0]));
    opterr = 0;
    optind = 1;
    for (;;) {
        int c;

        index = -1;
        c = getopt_long(argc, argv, "hV", longopts, &index);
        if (c == -1)
            break;
        if (c == 'h') {
            *action = CONFIG_HELP;
            return CF_OK;
        }
        if (c == 'V') {
            *action = CONFIG_VERSION;
            return CF_OK;
        }
        if (c != 0 || index < 0) {
            snprintf(err, errlen, "unknown or incomplete flag %s (see --help)", argv[optind - 1]);
            return CF_ERR_INVALID;
        }
        if (strcmp(specs[index].name, "help") == 0) {
            *action = CONFIG_HELP;
            return CF_OK;
        }
        if (strcmp(specs[index].name, "version") == 0) {
            *action = CONFIG_VERSION;
            return CF_OK;
        }
        ret = apply(cfg, &specs[index], optarg, true, tokens_from_flag, err, errlen);
        if (ret != CF_OK)
            return ret;
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument %s (see --help)", argv[optind]);
        return CF_ERR_INVALID;
    }
    return CF_OK;
}

void config_release(struct config *cfg)
{
    free(cfg->listen);
    free(cfg->db_path);
    free(cfg->redis);
    free(cfg->redis_ca);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->redis_prefix);
    free(cfg->instance_id);
    free(cfg->advertise);
    free(cfg->signing_secret);
    free(cfg->webhook_allow);
    free(cfg->web_dir);
    free(cfg->log_file);
    free(cfg->notify_url);
    free_tokens(&cfg->admin_tokens, &cfg->admin_token_count);
    free_tokens(&cfg->viewer_tokens, &cfg->viewer_token_count);
}
