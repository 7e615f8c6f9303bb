/*
 * cf_claimer.c - a test tool that drives the cluster coordinator's claim path
 * (DESIGN §4.2) directly, for the fencing-token property test (G2) and the
 * cluster benchmark.
 *
 *   cf_claimer --redis URLS --job NAME --claims N --concurrency C --out FILE
 *              [--instance-id ID]
 *
 * It creates a cluster coordinator over its own temporary SQLite database,
 * waits until the coordinator is ready (a trusted quorum, an ordinal held),
 * then makes N claims of job NAME from C threads. Every claim locks its own
 * slot (per_slot, a slot no other claim of any process uses), so claims never
 * contend on a lock but all share the job's fencing counter; a committed claim
 * is released at once. A claim that fails is followed by a pause of a random
 * 5-50 ms, the retry delay of DESIGN §4.2, so that claims do not spin through
 * an outage of the nodes.
 *
 * Output, one line per claim in --out, in claim order:
 *
 *   start_ns end_ns result token
 *
 * start_ns and end_ns are CLOCK_MONOTONIC readings taken just before claim()
 * and just after it returns; that clock is shared by every process of the
 * machine, so the lines of several claimers can be merged into one timeline.
 * result is the claim's CF_* code (0: committed), token its fencing token (0
 * unless committed).
 *
 * Once ready it prints "ready ordinal=N" on stdout. Exits 0 when every claim
 * was made (whatever their results), 1 when it cannot run (the nodes never
 * became ready, a file cannot be written), 2 on bad arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "coord.h"
#include "db.h"
#include "log.h"

#define CLAIM_LEASE_MS 10000
#define NODE_TIMEOUT_MS 50
#define READY_TIMEOUT_MS 60000
#define READY_POLL_MS 20
#define RETRY_MIN_MS 5
#define RETRY_MAX_MS 50
#define MAX_CONCURRENCY 1024
#define MAX_CLAIMS 100000000LL

/* What one claim did; written to --out at the end. */
struct claim_record {
    int64_t start_ns; /* CLOCK_MONOTONIC */
    int64_t end_ns;
    int result;
    int64_t token;
};

/*
 * The shared state of the claiming threads. Everything but next_index is
 * set before the threads start and only read by them; records[i] is written
 * by the one thread that took index i.
 */
struct claimer {
    struct coord *coord; /* borrowed */
    const char *job;
    int64_t claims;
    int64_t slot_base; /* this process's slots are slot_base + claim index */
    atomic_llong next_index;
    struct claim_record *records;
};

/* Command-line settings. */
struct options {
    const char *redis;
    const char *job;
    const char *out_path;
    const char *instance_id; /* NULL: "claimer-<pid>" */
    int64_t claims;
    int64_t concurrency;
};

static int64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A pseudo-random number from a per-thread xorshift state (never 0). */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Makes one claim; records its timing and outcome, releases it when committed. */
static void claim_one(struct claimer *claimer, int64_t index)
{
    struct coord_claim claim = {0};
    struct claim_record *record = &claimer->records[index];
    int ret;

    claim.job = claimer->job;
    claim.slot_ms = claimer->slot_base + index;
    claim.lease_ms = CLAIM_LEASE_MS;
    claim.per_slot = true;
    claim.advance = false;

    record->start_ns = monotonic_ns();
    ret = claimer->coord->ops->claim(claimer->coord, &claim, 1);
    record->end_ns = monotonic_ns();
    /* A batch that was not processed says why in its return value. */
    record->result = ret != CF_OK ? ret : claim.result;
    record->token = record->result == CF_OK ? claim.token : 0;
    if (record->result == CF_OK)
        claimer->coord->ops->release(claimer->coord, &claim, 1);
}

static void *claim_thread(void *arg)
{
    struct claimer *claimer = arg;
    /* Seeded from the clock and this thread's stack address, so threads differ. */
    uint64_t rng =
        (uint64_t)monotonic_ns() ^ ((uint64_t)(uintptr_t)&rng << 16) ^ 0x9e3779b97f4a7c15ULL;

    if (rng == 0)
        rng = 1;
    for (;;) {
        int64_t index = atomic_fetch_add(&claimer->next_index, 1);

        if (index >= claimer->claims)
            break;
        claim_one(claimer, index);
        if (claimer->records[index].result != CF_OK)
            cf_sleep_ms(RETRY_MIN_MS +
                        (int64_t)(next_random(&rng) % (RETRY_MAX_MS - RETRY_MIN_MS + 1)));
    }
    return NULL;
}

/* Waits until the coordinator can claim; CF_ERR_TIMEOUT after READY_TIMEOUT_MS. */
static int wait_ready(struct coord *coord)
{
    int64_t deadline = cf_boot_ms() + READY_TIMEOUT_MS;

    while (!coord->ops->ready(coord)) {
        if (cf_boot_ms() > deadline)
            return CF_ERR_TIMEOUT;
        cf_sleep_ms(READY_POLL_MS);
    }
    return CF_OK;
}

/* Writes the records to path, one line each. Returns CF_OK or CF_ERR_IO (message logged). */
static int write_records(const char *path, const struct claim_record *records, int64_t count)
{
    FILE *out = fopen(path, "w");
    int ret = CF_OK;

    if (out == NULL) {
        log_error("cannot open output", "path=%s error=\"%s\"", path, strerror(errno));
        return CF_ERR_IO;
    }
    for (int64_t i = 0; i < count; i++) {
        const struct claim_record *r = &records[i];

        fprintf(out, "%lld %lld %d %lld\n", (long long)r->start_ns, (long long)r->end_ns, r->result,
                (long long)r->token);
    }
    if (ferror(out))
        ret = CF_ERR_IO;
    if (fclose(out) != 0)
        ret = CF_ERR_IO;
    if (ret != CF_OK)
        log_error("cannot write output", "path=%s", path);
    return ret;
}

/*
 * Runs the claimers: C threads taking claim indexes from one counter until
 * all N are made. Returns CF_OK, or CF_ERR_NOMEM when a thread cannot start
 * (the threads already started are joined first).
 */
static int run_threads(struct claimer *claimer, int64_t concurrency)
{
    pthread_t *threads = calloc((size_t)concurrency, sizeof(*threads));
    int64_t started = 0;
    int ret = CF_OK;

    if (threads == NULL)
        return CF_ERR_NOMEM;
    for (; started < concurrency; started++) {
        if (pthread_create(&threads[started], NULL, claim_thread, claimer) != 0) {
            log_error("cannot start thread", "started=%lld", (long long)started);
            /* Make the running threads stop after their current claim. */
            atomic_store(&claimer->next_index, claimer->claims);
            ret = CF_ERR_NOMEM;
            break;
        }
    }
    for (int64_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    return ret;
}

/* Parses a decimal count in [min, max] into *value; false when it is not one. */
static bool parse_count(const char *text, int64_t min, int64_t max, int64_t *value)
{
    char *end;
    long long parsed;

    errno = 0;
    parsed = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || parsed < min || parsed > max)
        return false;
    *value = parsed;
    return true;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: cf_claimer --redis URLS --job NAME --claims N --concurrency C "
                 "--out FILE [--instance-id ID]\n");
}

/* Fills opts from argv; returns CF_OK or CF_ERR_INVALID with the reason in err. */
static int parse_options(int argc, char **argv, struct options *opts, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"redis", required_argument, NULL, 'r'},
        {"job", required_argument, NULL, 'j'},
        {"claims", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"out", required_argument, NULL, 'o'},
        {"instance-id", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0},
    };

    opts->claims = -1;
    opts->concurrency = 1;
    for (;;) {
        int opt = getopt_long(argc, argv, "", longopts, NULL);

        if (opt == -1)
            break;
        switch (opt) {
        case 'r':
            opts->redis = optarg;
            break;
        case 'j':
            opts->job = optarg;
            break;
        case 'n':
            if (!parse_count(optarg, 0, MAX_CLAIMS, &opts->claims)) {
                snprintf(err, errlen, "bad --claims: %s", optarg);
                return CF_ERR_INVALID;
            }
            break;
        case 'c':
            if (!parse_count(optarg, 1, MAX_CONCURRENCY, &opts->concurrency)) {
                snprintf(err, errlen, "bad --concurrency: %s", optarg);
                return CF_ERR_INVALID;
            }
            break;
        case 'o':
            opts->out_path = optarg;
            break;
        case 'i':
            opts->instance_id = optarg;
            break;
        default:
            snprintf(err, errlen, "unknown option");
            return CF_ERR_INVALID;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument: %s", argv[optind]);
        return CF_ERR_INVALID;
    }
    if (opts->redis == NULL || opts->job == NULL || opts->out_path == NULL || opts->claims < 0) {
        snprintf(err, errlen, "--redis, --job, --claims and --out are required");
        return CF_ERR_INVALID;
    }
    return CF_OK;
}

/* A fresh directory for the coordinator's database in *dir (free()); CF_ERR_IO on failure. */
static int make_workdir(char **dir)
{
    const char *tmp = getenv("TMPDIR");
    char *path = NULL;

    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    if (asprintf(&path, "%s/cf-claimer-XXXXXX", tmp) < 0)
        return CF_ERR_NOMEM;
    if (mkdtemp(path) == NULL) {
        log_error("cannot create directory", "path=%s error=\"%s\"", path, strerror(errno));
        free(path);
        return CF_ERR_IO;
    }
    *dir = path;
    return CF_OK;
}

/* Removes the database files and the directory make_workdir() created; accepts NULL. */
static void remove_workdir(char *dir)
{
    static const char *const files[] = {"claimer.db", "claimer.db-wal", "claimer.db-shm",
                                        "claimer.db-journal"};
    char path[4096];

    if (dir == NULL)
        return;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    struct options opts = {0};
    struct coord_cluster_config cfg = {0};
    struct claimer claimer = {0};
    struct coord *coord = NULL;
    struct db *db = NULL;
    char err[512] = "", instance_id[64], db_path[4096];
    char *workdir = NULL;
    int status = 1;

    if (parse_options(argc, argv, &opts, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cf_claimer: %s\n", err);
        usage(stderr);
        return 2;
    }
    log_setup(LOG_WARN, false);
    /* A node killed mid-round must not kill us through a write to its socket. */
    signal(SIGPIPE, SIG_IGN);
    if (opts.instance_id == NULL) {
        snprintf(instance_id, sizeof(instance_id), "claimer-%ld", (long)getpid());
        opts.instance_id = instance_id;
    }

    if (make_workdir(&workdir) != CF_OK)
        goto out;
    snprintf(db_path, sizeof(db_path), "%s/claimer.db", workdir);
    if (db_open(db_path, &db, err, sizeof(err)) != CF_OK ||
        db_migrate(db, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cf_claimer: database: %s\n", err);
        goto out;
    }

    cfg.redis_urls = opts.redis;
    cfg.prefix = "cf:";
    cfg.instance_id = opts.instance_id;
    cfg.advertise_url = "http://127.0.0.1:0";
    cfg.node_timeout_ms = NODE_TIMEOUT_MS;
    cfg.stagger_ms = 0;
    cfg.db = db;
    if (coord_cluster_new(&cfg, &coord, err, sizeof(err)) != CF_OK) {
        fprintf(stderr, "cf_claimer: coordinator: %s\n", err[0] ? err : "cannot start");
        goto out;
    }
    if (wait_ready(coord) != CF_OK) {
        fprintf(stderr, "cf_claimer: no trusted quorum within %d ms\n", READY_TIMEOUT_MS);
        goto out;
    }
    printf("ready ordinal=%u\n", coord->ops->ordinal(coord));
    fflush(stdout);

    claimer.coord = coord;
    claimer.job = opts.job;
    claimer.claims = opts.claims;
    /* Slots no other live claimer uses: the pid above bit 32, the claim index below. */
    claimer.slot_base = (int64_t)getpid() << 32;
    atomic_init(&claimer.next_index, 0);
    claimer.records = calloc(opts.claims > 0 ? (size_t)opts.claims : 1, sizeof(*claimer.records));
    if (claimer.records == NULL) {
        fprintf(stderr, "cf_claimer: out of memory\n");
        goto out;
    }
    if (run_threads(&claimer, opts.concurrency) != CF_OK)
        goto out;
    if (write_records(opts.out_path, claimer.records, opts.claims) != CF_OK)
        goto out;
    status = 0;
out:
    coord_free(coord);
    db_close(db);
    remove_workdir(workdir);
    free(claimer.records);
    return status;
}
