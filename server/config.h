/*
 * config.h - command-line flags and their CRONFENCE_* environment variables
 * (DESIGN §7). Every flag reads its environment variable first; a flag on
 * the command line wins.
 */
#ifndef CF_CONFIG_H
#define CF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

struct config {
    char *listen; /* HOST:PORT */
    char *db_path;
    char *redis;              /* comma-separated URLs; NULL for standalone */
    char *redis_ca;           /* CA bundle for rediss:// nodes; NULL: the system's */
    char *redis_prefix;       /* key prefix on the nodes */
    int64_t redis_timeout_ms; /* per node per round */
    int64_t claim_stagger_ms; /* rank-staggered claims (DESIGN §4.4) */
    char *instance_id;        /* NULL: generated once, kept in the database */
    char *advertise;          /* NULL: from listen */
    char **admin_tokens;      /* NULL-terminated; empty when none */
    size_t admin_token_count;
    char **viewer_tokens;
    size_t viewer_token_count;
    char *signing_secret;       /* NULL: generated once, kept in the database or on the nodes */
    int64_t secret_overlap_ms;  /* how long a rotated signing secret still signs */
    char *webhook_allow;        /* NULL: everything but link-local */
    int64_t node_quarantine_ms; /* 0: twice the longest lease, at least 60000 */
    int history_days;
    int history_per_job;
    int64_t shutdown_grace_ms;
    char *web_dir;  /* NULL: the dashboard built into the binary */
    char *tls_cert; /* PEM files to serve HTTPS; both or neither */
    char *tls_key;
    enum log_level log_level;
    bool log_json;
    char *log_file;       /* NULL: standard error */
    char *notify_url;     /* default notification target (DESIGN §5); NULL for none */
    bool metrics_per_job; /* per-job series in /metrics (DESIGN §7) */
};

enum config_action { CONFIG_RUN, CONFIG_HELP, CONFIG_VERSION };

/*
 * Fills cfg from the environment, then argv. Returns CF_OK with *action, or
 * CF_ERR_INVALID with a message (naming the flag) in err.
 */
int config_parse(int argc, char **argv, struct config *cfg, enum config_action *action, char *err,
                 size_t errlen);

/* Writes the --help text. */
void config_usage(FILE *out);

/* Frees what cfg owns; accepts a zeroed cfg. */
void config_release(struct config *cfg);

#endif
