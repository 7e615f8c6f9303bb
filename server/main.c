/*
 * main.c - wires the modules of a cronfence instance together and waits for
 * a signal to stop them in reverse order.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "common.h"
#include "config.h"
#include "coord.h"
#include "db.h"
#include "events.h"
#include "feed.h"
#include "healthcheck.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "netallow.h"
#include "notify.h"
#include "scheduler.h"
#include "signing_secrets.h"
#include "tls.h"

#define MAX_BODY_BYTES (1024 * 1024)

/*
 * The event stream keeps the last 4096 events, up to 16 MiB, for clients
 * that reconnect: at 10 runs a second, a start and a finish event each,
 * about 3 minutes. Streams are capped well below the HTTP server's 2048
 * connections, so the API stays reachable with every stream open.
 */
static const struct events_config events_config = {
    .max_events = 4096,
    .max_bytes = (size_t)16 * 1024 * 1024,
    .max_streams = 1024,
    .keepalive_ms = 15000,
    .retry_ms = 2000,
};

/* Everything an instance runs; released by instance_release() in reverse order. */
struct instance {
    struct config cfg;
    struct db *api_db;
    struct db *sched_db;
    struct db *prune_db;
    struct db *coord_db;   /* the coordinator's own handle: claims, fences, catalog writes */
    struct db *secrets_db; /* the signing secret's own handle */
    struct signing_secrets *secrets;
    struct events *events;
    struct feed *feed;
    struct netallow *allow;
    struct coord *coord;
    struct scheduler *scheduler;
    struct api *api;
    struct http_server *http;
    struct metrics *metrics;
    struct notify *notify;
    struct db_observer feed_observer; /* the feed's, called first by the instance's own */
    char *instance_id;
    char *generated_token; /* the admin token made when none is configured */
    char *admin_token_list[2];
    struct job_limits limits;
    struct tls_server_files tls; /* --tls-cert and --tls-key; empty: plain HTTP */
};

/* The scheme of this instance's URLs: https with --tls-cert. */
static const char *url_scheme(const struct instance *inst)
{
    return inst->tls.cert_pem != NULL ? "https" : "http";
}

/* Reads a setting from the flag, else from meta, else generates and stores it. */
static int setting(struct db *db, const char *flag_value, const char *key, const char *prefix,
                   size_t random_bytes, char **out)
{
    char *stored = NULL;
    int ret;

    if (flag_value != NULL) {
        *out = strdup(flag_value);
        return *out ? CF_OK : CF_ERR_NOMEM;
    }
    ret = db_meta_get(db, key, &stored);
    if (ret == CF_OK) {
        *out = stored;
        return CF_OK;
    }
    if (ret != CF_ERR_NOT_FOUND)
        return ret;
    {
        size_t len = strlen(prefix) + 2 * random_bytes + 1;
        char *fresh = malloc(len);

        if (fresh == NULL)
            return CF_ERR_NOMEM;
        strcpy(fresh, prefix);
        ret = cf_random_hex(fresh + strlen(prefix), random_bytes);
        if (ret == CF_OK)
            ret = db_meta_set(db, key, fresh);
        if (ret != CF_OK) {
            free(fresh);
            return ret;
        }
        *out = fresh;
    }
    return CF_OK;
}

/*
 * With no token configured, the instance serves loopback only and uses an
 * admin token it generated once and kept in its database (DESIGN §6 Auth).
 */
static int setup_auth(struct instance *inst, char *err, size_t errlen)
{
    char host[128];
    uint16_t port;

    if (inst->cfg.admin_token_count > 0 || inst->cfg.viewer_token_count > 0)
        return CF_OK;
    if (setting(inst->api_db, NULL, "admin_token", "", 24, &inst->generated_token) != CF_OK) {
        snprintf(err, errlen, "cannot create the admin token");
        return CF_ERR_DB;
    }
    inst->admin_token_list[0] = inst->generated_token;
    inst->admin_token_list[1] = NULL;
    if (http_parse_listen(inst->cfg.listen, host, sizeof(host), &port) != CF_OK) {
        snprintf(err, errlen, "invalid --listen %s, expected HOST:PORT", inst->cfg.listen);
        return CF_ERR_INVALID;
    }
    if (!http_host_is_loopback(host)) {
        char *loopback = NULL;

        log_warn("no token configured, serving loopback only", "requested=%s", inst->cfg.listen);
        if (asprintf(&loopback, "127.0.0.1:%u", port) < 0)
            return CF_ERR_NOMEM;
        free(inst->cfg.listen);
        inst->cfg.listen = loopback;
    }
    return CF_OK;
}

static void job_changed(void *ctx, const char *name)
{
    scheduler_job_changed(ctx, name);
}

/* A stored run: the event stream, the per-job metrics and the notifications see it. */
static void run_observed(void *ctx, const struct run *run)
{
    struct instance *inst = ctx;

    inst->feed_observer.run_changed(inst->feed_observer.ctx, run);
    metrics_job_run(inst->metrics, run);
    notify_run_changed(inst->notify, run);
}

static void job_observed(void *ctx, const char *name, const struct job *job, bool created)
{
    struct instance *inst = ctx;

    inst->feed_observer.job_changed(inst->feed_observer.ctx, name, job, created);
    if (job == NULL)
        metrics_job_forget(inst->metrics, name);
}

/* Catalog and history changes written through db go on the event stream, metrics and notices. */
static void watch_database(struct instance *inst, struct db *db)
{
    struct db_observer observer = {run_observed, job_observed, inst};

    feed_observer(inst->feed, &inst->feed_observer);
    db_set_observer(db, &observer);
}

static void seed_job_metrics(void *ctx, const char *job, int64_t last_success_ms,
                             int64_t last_failure_ms, int64_t consecutive_failures)
{
    metrics_job_seed(ctx, job, last_success_ms, last_failure_ms, consecutive_failures);
}

/*
 * The standalone coordinator, or with --redis the cluster one, on a database
 * handle of its own: claims never queue behind API reads (WAL lets those run
 * beside its writes), and the standalone catalog writes and claims, which
 * must not interleave, share it.
 */
static int start_coordinator(struct instance *inst, char *err, size_t errlen)
{
    struct coord_cluster_config ccfg = {0};
    char url[300] = "", host[128];
    uint16_t port = 0;
    int ret;

    /*
     * The URL others show: --advertise, or http(s)://HOST:PORT from --listen.
     * With port 0 it is only known once bound; main sets it then, and until
     * that the cluster does not list this instance.
     */
    if (inst->cfg.advertise != NULL) {
        snprintf(url, sizeof(url), "%s", inst->cfg.advertise);
    } else if (http_parse_listen(inst->cfg.listen, host, sizeof(host), &port) == CF_OK &&
               port != 0) {
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        snprintf(url, sizeof(url), "%s://%s%s%s:%u", url_scheme(inst), strchr(host, ':') ? "[" : "",
                 host, strchr(host, ':') ? "]" : "", port);
    }

    if (inst->cfg.redis == NULL && inst->cfg.redis_ca != NULL) {
        snprintf(err, errlen, "--redis-ca is given without --redis");
        return CF_ERR_INVALID;
    }
    ret = db_open(inst->cfg.db_path, &inst->coord_db, err, errlen);
    if (ret != CF_OK)
        return ret;
    watch_database(inst, inst->coord_db);
    if (inst->cfg.redis == NULL)
        return coord_standalone_new(inst->coord_db, inst->instance_id, url, &inst->coord);
    ccfg.redis_urls = inst->cfg.redis;
    ccfg.redis_ca = inst->cfg.redis_ca;
    ccfg.prefix = inst->cfg.redis_prefix;
    ccfg.instance_id = inst->instance_id;
    ccfg.advertise_url = url;
    ccfg.node_timeout_ms = inst->cfg.redis_timeout_ms;
    ccfg.stagger_ms = inst->cfg.claim_stagger_ms;
    ccfg.quarantine_ms = inst->cfg.node_quarantine_ms;
    ccfg.db = inst->coord_db;
    return coord_cluster_new(&ccfg, &inst->coord, err, errlen);
}

static int instance_start(struct instance *inst, char *err, size_t errlen)
{
    struct scheduler_config scfg = {0};
    struct api_config acfg = {0};
    struct http_config hcfg = {0};
    struct notify_config ncfg = {0};
    char host[128], bound[160], advertise[256], announce[512];
    uint16_t port;
    int ret;

    ret = tls_server_files_load(inst->cfg.tls_cert, inst->cfg.tls_key, &inst->tls, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = netallow_parse(inst->cfg.webhook_allow, &inst->allow, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = db_open(inst->cfg.db_path, &inst->api_db, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = db_claim_owner(inst->api_db, inst->cfg.db_path, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = db_migrate(inst->api_db, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = db_record_owner(inst->api_db);
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot record the owner of the database");
        return ret;
    }
    ret = setting(inst->api_db, inst->cfg.instance_id, "instance_id", "cf-", 4, &inst->instance_id);
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot read or create instance settings: %s", cf_err_str(ret));
        return ret;
    }
    ret = setup_auth(inst, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = db_open(inst->cfg.db_path, &inst->sched_db, err, errlen);
    if (ret == CF_OK)
        ret = db_open(inst->cfg.db_path, &inst->prune_db, err, errlen);
    if (ret != CF_OK)
        return ret;
    ret = metrics_new(&inst->metrics);
    if (ret == CF_OK)
        ret = events_new(&events_config, &inst->events);
    if (ret == CF_OK)
        ret = feed_new(inst->events, inst->api_db, &inst->feed);
    if (ret != CF_OK)
        return ret;
    metrics_set_per_job(inst->metrics, inst->cfg.metrics_per_job);
    if (inst->cfg.metrics_per_job)
        db_run_job_health(inst->api_db, seed_job_metrics, inst->metrics);
    if (inst->cfg.notify_url != NULL &&
        notify_check_url(inst->cfg.notify_url, inst->allow, err, errlen) != CF_OK)
        return CF_ERR_INVALID;
    ncfg.db = inst->api_db;
    ncfg.instance_id = inst->instance_id;
    ncfg.default_url = inst->cfg.notify_url;
    ncfg.allow = inst->allow;
    ret = notify_start(&ncfg, &inst->notify);
    if (ret != CF_OK)
        return ret;
    watch_database(inst, inst->api_db);
    watch_database(inst, inst->sched_db);

    http_parse_listen(inst->cfg.listen, host, sizeof(host), &port);
    ret = start_coordinator(inst, err, errlen);
    if (ret != CF_OK)
        return ret;
    notify_set_coord(inst->notify, inst->coord);

    {
        struct signing_secrets_config sscfg = {0};

        ret = db_open(inst->cfg.db_path, &inst->secrets_db, err, errlen);
        if (ret != CF_OK)
            return ret;
        sscfg.db = inst->secrets_db;
        sscfg.cluster = inst->cfg.redis != NULL ? inst->coord : NULL;
        sscfg.flag = inst->cfg.signing_secret;
        sscfg.overlap_ms = inst->cfg.secret_overlap_ms;
        ret = signing_secrets_new(&sscfg, &inst->secrets, err, errlen);
        if (ret != CF_OK)
            return ret;
        notify_set_secrets(inst->notify, inst->secrets);
    }

    inst->limits.webhook_allow = inst->allow;
    scfg.db = inst->sched_db;
    scfg.prune_db = inst->prune_db;
    scfg.coord = inst->coord;
    scfg.instance_id = inst->instance_id;
    scfg.secrets = inst->secrets;
    scfg.allow = inst->allow;
    scfg.history_days = inst->cfg.history_days;
    scfg.history_per_job = inst->cfg.history_per_job;
    scfg.metrics = inst->metrics;
    ret = scheduler_start(&scfg, &inst->scheduler);
    if (ret != CF_OK) {
        snprintf(err, errlen, "cannot start the scheduler: %s", cf_err_str(ret));
        return ret;
    }
    /* Catalog changes made by peers reach the scheduler from here on. */
    inst->coord->ops->set_listener(inst->coord, job_changed, inst->scheduler);
    ret = feed_watch(inst->feed, inst->coord);
    if (ret != CF_OK)
        return ret;

    acfg.db = inst->api_db;
    acfg.coord = inst->coord;
    acfg.scheduler = inst->scheduler;
    acfg.limits = &inst->limits;
    if (inst->generated_token != NULL) {
        acfg.admin_tokens = inst->admin_token_list;
        acfg.admin_token_count = 1;
    } else {
        acfg.admin_tokens = inst->cfg.admin_tokens;
        acfg.admin_token_count = inst->cfg.admin_token_count;
        acfg.viewer_tokens = inst->cfg.viewer_tokens;
        acfg.viewer_token_count = inst->cfg.viewer_token_count;
    }
    acfg.max_body_bytes = MAX_BODY_BYTES;
    acfg.web_dir = inst->cfg.web_dir;
    acfg.events = inst->events;
    acfg.metrics = inst->metrics;
    acfg.secrets = inst->secrets;
    acfg.loopback_hosts_only = inst->generated_token != NULL;
    ret = api_new(&acfg, &inst->api, err, errlen);
    if (ret != CF_OK)
        return ret;

    hcfg.listen = inst->cfg.listen;
    hcfg.routes = api_routes();
    hcfg.not_found = api_not_found;
    hcfg.observe = api_observe;
    hcfg.admit = api_admit;
    hcfg.ctx = inst->api;
    hcfg.max_body_bytes = MAX_BODY_BYTES;
    hcfg.threads = 16;
    hcfg.tls_cert_pem = inst->tls.cert_pem;
    hcfg.tls_key_pem = inst->tls.key_pem;
    ret = http_start(&hcfg, &inst->http, err, errlen);
    if (ret != CF_OK)
        return ret;

    snprintf(bound, sizeof(bound), "%s%s%s:%u", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", http_port(inst->http));
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inst->cfg.advertise == NULL) {
        /* Only now is the port known when --listen asked for port 0. */
        snprintf(advertise, sizeof(advertise), "%s://%s%s%s:%u", url_scheme(inst),
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                 http_port(inst->http));
        inst->coord->ops->set_url(inst->coord, advertise);
    } else {
        snprintf(advertise, sizeof(advertise), "%s", inst->cfg.advertise);
    }
    log_info("cronfence started",
             "cronfence_version=%s mode=%s instance=%s listen=%s advertise=%s db=%s", CF_VERSION,
             inst->cfg.redis != NULL ? "cluster" : "standalone", inst->instance_id, bound,
             advertise, inst->cfg.db_path);
    /*
     * Scripts and tests read these lines from standard output, after the
     * start is logged: the address as bound, then the dashboard URL.
     */
    fflush(stdout);
    snprintf(announce, sizeof(announce), "listening on %s", bound);
    log_announce(STDOUT_FILENO, LOG_INFO, announce, "listening on", "listen=%s", bound);
    if (inst->generated_token != NULL) {
        char url[256 + 64];

        snprintf(url, sizeof(url), "%s://%s%s%s:%u/#token=%s", url_scheme(inst),
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                 http_port(inst->http), inst->generated_token);
        snprintf(announce, sizeof(announce), "dashboard: %s", url);
        log_announce(STDOUT_FILENO, LOG_INFO, announce, "dashboard", "url=%s", url);
    }
    return CF_OK;
}

/*
 * The stop, in an order that loses nothing: the scheduler stops claiming
 * and its deliveries in flight finish while the API still answers (GET
 * /readyz says 503); then the event streams end and the HTTP server stops;
 * the coordinator leaves the cluster; last, the databases are closed, which
 * checkpoints their write-ahead log into the database file.
 */
static void instance_release(struct instance *inst)
{
    scheduler_stop(inst->scheduler, inst->cfg.shutdown_grace_ms);
    /* Streams end first: libmicrohttpd must not stop with parked connections. */
    if (inst->events != NULL)
        events_close(inst->events);
    http_stop(inst->http);
    api_free(inst->api);
    /* The feed watches the coordinator, and its observers see the coordinator's writes. */
    feed_unwatch(inst->feed);
    /* The coordinator tells the scheduler of catalog changes until it is freed. */
    notify_set_coord(inst->notify, NULL);
    notify_set_secrets(inst->notify, NULL);
    signing_secrets_free(inst->secrets);
    coord_free(inst->coord);
    scheduler_free(inst->scheduler);
    /* Every writer that reports runs to the notifier is gone. */
    notify_stop(inst->notify);
    feed_free(inst->feed);
    events_free(inst->events);
    metrics_free(inst->metrics);
    db_close(inst->secrets_db);
    db_close(inst->coord_db);
    db_close(inst->prune_db);
    db_close(inst->sched_db);
    db_close(inst->api_db);
    netallow_free(inst->allow);
    free(inst->instance_id);
    free(inst->generated_token);
    tls_server_files_release(&inst->tls);
    config_release(&inst->cfg);
}

/* SIGHUP: reopens --log-file after rotation moved it; nothing else is reloaded. */
static void reopen_log(const char *path)
{
    char quoted[512];
    int ret;

    if (path == NULL) {
        log_info("sighup ignored", "reason=\"no log file to reopen\"");
        return;
    }
    ret = log_reopen();
    log_quote(path, quoted, sizeof(quoted));
    if (ret == CF_OK)
        log_info("log reopened", "file=\"%s\"", quoted);
    else
        log_error("log not reopened", "file=\"%s\" error=\"%s\"", quoted, cf_err_str(ret));
}

int main(int argc, char **argv)
{
    struct instance inst = {0};
    enum config_action action;
    char err[512] = "";
    sigset_t signals;
    int sig = 0, status = EXIT_FAILURE, ret;

    /*
     * Two malloc arenas, not eight per core: the HTTP pool, the delivery
     * engine and the background threads would otherwise each grow a heap of
     * their own, megabytes of resident memory kept for little contention.
     */
    mallopt(M_ARENA_MAX, 2);
    /* A command name first (`cronfence jobs list`) runs the client, not an instance. */
    if (argc > 1 && cli_is_command(argv[1]))
        return cli_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--healthcheck") == 0)
        return healthcheck_main(argc - 1, argv + 1);
    /*
     * The database (with its -wal and -shm) holds the signing secret and,
     * tokenless, the admin token; the log may name jobs and targets: every
     * file this process creates is for its owner only.
     */
    umask(077);
    if (config_parse(argc, argv, &inst.cfg, &action, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cronfence: %s\n", err);
        config_release(&inst.cfg);
        return 2;
    }
    if (action == CONFIG_HELP) {
        config_usage(stdout);
        cli_usage(stdout);
        config_release(&inst.cfg);
        return EXIT_SUCCESS;
    }
    if (action == CONFIG_VERSION) {
        printf("cronfence %s\n", CF_VERSION);
        config_release(&inst.cfg);
        return EXIT_SUCCESS;
    }
    log_setup(inst.cfg.log_level, inst.cfg.log_json);
    if (inst.cfg.log_file != NULL && log_open_file(inst.cfg.log_file, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cronfence: %s\n", err);
        config_release(&inst.cfg);
        return EXIT_FAILURE;
    }

    /* Threads inherit this mask, so only sigwait() below sees these signals. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    ret = instance_start(&inst, err, sizeof(err));
    if (ret != CF_OK) {
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "%s", cf_err_str(ret));
        log_error("cannot start", "error=\"%s\"", err);
        /* In JSON mode without --log-file the line above is already on standard error. */
        if (!log_is_json() || inst.cfg.log_file != NULL) {
            char text[600], quoted[512];

            snprintf(text, sizeof(text), "cronfence: %s", err);
            log_announce(STDERR_FILENO, LOG_ERROR, text, "cannot start", "error=\"%s\"",
                         log_quote(err, quoted, sizeof(quoted)));
        }
        goto out;
    }
    while (sig != SIGINT && sig != SIGTERM) {
        if (sigwait(&signals, &sig) != 0)
            break;
        if (sig == SIGHUP)
            reopen_log(inst.cfg.log_file);
    }
    log_info("stopping", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = EXIT_SUCCESS;
out:
    instance_release(&inst);
    if (status == EXIT_SUCCESS)
        log_info("stopped", "%s", "");
    log_close();
    return status;
}
