/*
 * metrics.c - counters and histograms in atomics, written in the Prometheus
 * text format.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BUCKETS_MAX 16

/* Upper bounds of each histogram's buckets, in microseconds, ending with 0. */
static const int64_t lag_bounds_us[] = {5000,     10000,    25000,    50000,   100000,
                                        250000,   500000,   1000000,  2500000, 5000000,
                                        10000000, 30000000, 60000000, 0};
static const int64_t webhook_bounds_us[] = {5000,     10000,    25000,    50000,   100000,
                                            250000,   500000,   1000000,  2500000, 5000000,
                                            10000000, 30000000, 60000000, 0};
static const int64_t claim_bounds_us[] = {250,   500,   1000,   2500,   5000,    10000,
                                          25000, 50000, 100000, 250000, 1000000, 0};

/* Each bounds list, its 0 end marker and the +Inf bucket fit in BUCKETS_MAX. */
_Static_assert(sizeof(lag_bounds_us) / sizeof(int64_t) <= BUCKETS_MAX, "lag buckets");
_Static_assert(sizeof(webhook_bounds_us) / sizeof(int64_t) <= BUCKETS_MAX, "webhook buckets");
_Static_assert(sizeof(claim_bounds_us) / sizeof(int64_t) <= BUCKETS_MAX, "claim buckets");

static const struct histogram_spec {
    const char *name;
    const char *help;
    const int64_t *bounds_us;
} histogram_specs[METRICS_HISTOGRAM_COUNT] = {
    [METRICS_SCHEDULE_LAG] = {"cronfence_schedule_lag_seconds",
                              "From a scheduled slot's instant to its first webhook request sent "
                              "(trigger schedule only).",
                              lag_bounds_us},
    [METRICS_WEBHOOK_DURATION] = {"cronfence_webhook_duration_seconds",
                                  "One webhook attempt, from its start to the end of the answer.",
                                  webhook_bounds_us},
    [METRICS_CLAIM_DURATION] = {"cronfence_claim_duration_seconds",
                                "One claim round with the coordinator (a batch of due slots).",
                                claim_bounds_us},
};

static const char *const reason_names[METRICS_REASON_COUNT] = {
    [METRICS_REASON_OVERLAP] = "overlap",
    [METRICS_REASON_LATE] = "late",
    [METRICS_REASON_QUEUE] = "queue",
    [METRICS_REASON_NO_QUORUM] = "no_quorum",
    [METRICS_REASON_CONTENDED] = "contended",
    [METRICS_REASON_CLAIM_FAILED] = "claim_failed",
    [METRICS_REASON_UNCOMMITTED] = "uncommitted",
};

/* The firing outcomes counted, in the order they are written. */
static const enum run_status outcomes[] = {RUN_SUCCEEDED, RUN_FAILED, RUN_FENCED, RUN_LOST};
#define OUTCOME_COUNT (sizeof(outcomes) / sizeof(outcomes[0]))

static const char *const method_names[] = {"GET",   "HEAD",   "POST",    "PUT",
                                           "PATCH", "DELETE", "OPTIONS", "other"};
#define METHOD_COUNT (sizeof(method_names) / sizeof(method_names[0]))

/*
 * Request counts live in an open-addressing table keyed by (route, method,
 * status). Routes are the server's static patterns; methods are folded into the usual verbs and
 * statuses into 100..599, so the keys are few (every route times the statuses it answers) and the
 * table never fills in practice. Should it fill, further new keys are not counted.
 */
#define REQUEST_SLOTS 4096

struct request_count {
    const char *route; /* NULL: empty slot; else a static pattern or "none" */
    unsigned method;   /* index into method_names */
    int status;
    uint64_t count;
};

struct histogram {
    atomic_ullong buckets[BUCKETS_MAX]; /* observations per bucket, not cumulative */
    atomic_llong sum_us;
};

/*
 * Per-job series (DESIGN §7 --metrics-per-job): one entry per job name in a
 * chained hash table of JOB_BUCKETS lists, guarded by jobs_lock. Entries
 * are made by the first run or next slot reported for a name and freed by
 * metrics_job_forget(). Times are wall ms, 0 for "none".
 */
#define JOB_BUCKETS 16384

struct job_series {
    struct job_series *next;
    int64_t last_success_ms;
    int64_t last_failure_ms;
    int64_t consecutive_failures;
    int64_t next_fire_ms;
    /* The failure counted last, so that a second record of one run is not counted again. */
    char last_failure_run[RUN_ID_MAX];
    char name[]; /* NUL-terminated */
};

struct metrics {
    struct histogram histograms[METRICS_HISTOGRAM_COUNT];
    atomic_ullong firings[OUTCOME_COUNT];
    atomic_ullong skipped[METRICS_REASON_COUNT];
    atomic_ullong missed[METRICS_REASON_COUNT];

    pthread_mutex_t requests_lock; /* guards requests */
    struct request_count requests[REQUEST_SLOTS];

    atomic_bool per_job;       /* write the per-job series */
    pthread_mutex_t jobs_lock; /* guards jobs */
    struct job_series *jobs[JOB_BUCKETS];
};

int metrics_new(struct metrics **out)
{
    struct metrics *metrics = calloc(1, sizeof(*metrics));

    *out = NULL;
    if (metrics == NULL)
        return CF_ERR_NOMEM;
    if (pthread_mutex_init(&metrics->requests_lock, NULL) != 0) {
        free(metrics);
        return CF_ERR_NOMEM;
    }
    if (pthread_mutex_init(&metrics->jobs_lock, NULL) != 0) {
        pthread_mutex_destroy(&metrics->requests_lock);
        free(metrics);
        return CF_ERR_NOMEM;
    }
    atomic_store(&metrics->per_job, true);
    *out = metrics;
    return CF_OK;
}

void metrics_free(struct metrics *metrics)
{
    if (metrics == NULL)
        return;
    pthread_mutex_destroy(&metrics->requests_lock);
    for (size_t b = 0; b < JOB_BUCKETS; b++) {
        while (metrics->jobs[b] != NULL) {
            struct job_series *next = metrics->jobs[b]->next;

            free(metrics->jobs[b]);
            metrics->jobs[b] = next;
        }
    }
    pthread_mutex_destroy(&metrics->jobs_lock);
    free(metrics);
}

/* ---- per-job series ---- */

/* FNV-1a of a job name, for its bucket. */
static size_t job_bucket(const char *name)
{
    return (size_t)(cf_fnv1a(CF_FNV1A_START, name) % JOB_BUCKETS);
}

/*
 * The entry of name, made when create is set and there is none (jobs_lock
 * held). NULL when absent (or out of memory: that job's series are left out).
 */
static struct job_series *job_series_find(struct metrics *metrics, const char *name, bool create)
{
    size_t bucket = job_bucket(name), len;
    struct job_series *entry;

    for (entry = metrics->jobs[bucket]; entry != NULL; entry = entry->next)
        if (strcmp(entry->name, name) == 0)
            return entry;
    if (!create)
        return NULL;
    len = strlen(name);
    entry = calloc(1, sizeof(*entry) + len + 1);
    if (entry == NULL)
        return NULL;
    memcpy(entry->name, name, len + 1);
    entry->next = metrics->jobs[bucket];
    metrics->jobs[bucket] = entry;
    return entry;
}

void metrics_set_per_job(struct metrics *metrics, bool on)
{
    if (metrics != NULL)
        atomic_store(&metrics->per_job, on);
}

bool metrics_run_is_failure(enum run_status status)
{
    return status == RUN_FAILED || status == RUN_FENCED || status == RUN_MISSED ||
           status == RUN_LOST;
}

void metrics_job_run(struct metrics *metrics, const struct run *run)
{
    struct job_series *entry;
    int64_t at;

    if (metrics == NULL || !atomic_load(&metrics->per_job) || run->job == NULL ||
        !run_status_final(run->status) || run->status == RUN_SKIPPED)
        return;
    at = run->finished_at_ms != 0 ? run->finished_at_ms : run->scheduled_at_ms;
    pthread_mutex_lock(&metrics->jobs_lock);
    entry = job_series_find(metrics, run->job, true);
    if (entry == NULL)
        goto out;
    if (run->status == RUN_SUCCEEDED) {
        if (at > entry->last_success_ms)
            entry->last_success_ms = at;
        /* Records arrive in any order: an older success does not reset a later failure. */
        if (at >= entry->last_failure_ms) {
            entry->consecutive_failures = 0;
            entry->last_failure_run[0] = '\0';
        }
    } else if (metrics_run_is_failure(run->status)) {
        if (at > entry->last_failure_ms)
            entry->last_failure_ms = at;
        if (at > entry->last_success_ms && strcmp(entry->last_failure_run, run->id) != 0) {
            entry->consecutive_failures++;
            snprintf(entry->last_failure_run, sizeof(entry->last_failure_run), "%s", run->id);
        }
    }
out:
    pthread_mutex_unlock(&metrics->jobs_lock);
}

void metrics_job_seed(struct metrics *metrics, const char *job, int64_t last_success_ms,
                      int64_t last_failure_ms, int64_t consecutive_failures)
{
    struct job_series *entry;

    if (metrics == NULL)
        return;
    pthread_mutex_lock(&metrics->jobs_lock);
    entry = job_series_find(metrics, job, true);
    if (entry != NULL) {
        entry->last_success_ms = last_success_ms;
        entry->last_failure_ms = last_failure_ms;
        entry->consecutive_failures = consecutive_failures;
    }
    pthread_mutex_unlock(&metrics->jobs_lock);
}

void metrics_job_next_fire(struct metrics *metrics, const char *job, int64_t next_ms)
{
    struct job_series *entry;

    if (metrics == NULL || !atomic_load(&metrics->per_job))
        return;
    pthread_mutex_lock(&metrics->jobs_lock);
    entry = job_series_find(metrics, job, next_ms != 0);
    if (entry != NULL)
        entry->next_fire_ms = next_ms;
    pthread_mutex_unlock(&metrics->jobs_lock);
}

void metrics_job_forget(struct metrics *metrics, const char *job)
{
    struct job_series **link;

    if (metrics == NULL)
        return;
    pthread_mutex_lock(&metrics->jobs_lock);
    for (link = &metrics->jobs[job_bucket(job)]; *link != NULL; link = &(*link)->next) {
        if (strcmp((*link)->name, job) == 0) {
            struct job_series *gone = *link;

            *link = gone->next;
            free(gone);
            break;
        }
    }
    pthread_mutex_unlock(&metrics->jobs_lock);
}

enum job_family { FAMILY_LAST_SUCCESS, FAMILY_LAST_FAILURE, FAMILY_CONSECUTIVE, FAMILY_NEXT_FIRE };

/* Writes one per-job family (jobs_lock held); timestamps of 0 ("none") are left out. */
static void write_job_family(struct metrics *metrics, FILE *out, enum job_family family,
                             const char *name, const char *help, const char *type)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t b = 0; b < JOB_BUCKETS; b++) {
        for (const struct job_series *e = metrics->jobs[b]; e != NULL; e = e->next) {
            int64_t ms = family == FAMILY_LAST_SUCCESS   ? e->last_success_ms
                         : family == FAMILY_LAST_FAILURE ? e->last_failure_ms
                         : family == FAMILY_NEXT_FIRE    ? e->next_fire_ms
                                                         : -1;

            if (ms == 0)
                continue;
            fprintf(out, "%s{job=\"", name);
            metrics_write_label_value(out, e->name);
            if (family == FAMILY_CONSECUTIVE)
                fprintf(out, "\"} %lld\n", (long long)e->consecutive_failures);
            else
                fprintf(out, "\"} %lld.%03d\n", (long long)(ms / 1000), (int)(ms % 1000));
        }
    }
}

/* The per-job families of DESIGN §7, when switched on. */
static void write_jobs(struct metrics *metrics, FILE *out)
{
    if (!atomic_load(&metrics->per_job))
        return;
    pthread_mutex_lock(&metrics->jobs_lock);
    write_job_family(
        metrics, out, FAMILY_LAST_SUCCESS, "cronfence_job_last_success_timestamp_seconds",
        "When the job's latest succeeded run finished (Unix seconds), cluster-wide.", "gauge");
    write_job_family(metrics, out, FAMILY_LAST_FAILURE,
                     "cronfence_job_last_failure_timestamp_seconds",
                     "When the job's latest failed, fenced, missed or lost run ended (Unix "
                     "seconds), cluster-wide.",
                     "gauge");
    write_job_family(metrics, out, FAMILY_CONSECUTIVE, "cronfence_job_consecutive_failures",
                     "Failed, fenced, missed or lost runs of the job since its latest success.",
                     "gauge");
    write_job_family(metrics, out, FAMILY_NEXT_FIRE, "cronfence_job_next_fire_timestamp_seconds",
                     "The job's next scheduled slot (Unix seconds); absent while paused.", "gauge");
    pthread_mutex_unlock(&metrics->jobs_lock);
}

void metrics_observe(struct metrics *metrics, enum metrics_histogram histogram, int64_t duration_us)
{
    const int64_t *bounds;
    struct histogram *h;
    size_t i = 0;

    if (metrics == NULL || histogram < 0 || histogram >= METRICS_HISTOGRAM_COUNT)
        return;
    if (duration_us < 0)
        duration_us = 0;
    bounds = histogram_specs[histogram].bounds_us;
    h = &metrics->histograms[histogram];
    while (bounds[i] != 0 && duration_us > bounds[i])
        i++;
    /* i is the first bucket whose bound holds the value, or the +Inf bucket after the last. */
    atomic_fetch_add(&h->buckets[i], 1);
    atomic_fetch_add(&h->sum_us, duration_us);
}

void metrics_count_firing(struct metrics *metrics, enum run_status status)
{
    if (metrics == NULL)
        return;
    for (size_t i = 0; i < OUTCOME_COUNT; i++)
        if (outcomes[i] == status)
            atomic_fetch_add(&metrics->firings[i], 1);
}

void metrics_count_slots(struct metrics *metrics, enum run_status status,
                         enum metrics_slot_reason reason, int64_t n)
{
    if (metrics == NULL || n <= 0 || reason < 0 || reason >= METRICS_REASON_COUNT)
        return;
    if (status == RUN_SKIPPED)
        atomic_fetch_add(&metrics->skipped[reason], (unsigned long long)n);
    else if (status == RUN_MISSED)
        atomic_fetch_add(&metrics->missed[reason], (unsigned long long)n);
}

static unsigned method_index(const char *method)
{
    for (unsigned i = 0; i + 1 < METHOD_COUNT; i++)
        if (method != NULL && strcmp(method, method_names[i]) == 0)
            return i;
    return METHOD_COUNT - 1;
}

void metrics_count_request(struct metrics *metrics, const char *route, const char *method,
                           int status)
{
    unsigned method_i = method_index(method);
    size_t slot;

    if (metrics == NULL)
        return;
    if (route == NULL)
        route = "none";
    if (status < 100 || status > 599)
        status = 599;
    slot = (size_t)((cf_fnv1a(CF_FNV1A_START, route) + method_i * 1021 + (uint64_t)status) %
                    REQUEST_SLOTS);
    pthread_mutex_lock(&metrics->requests_lock);
    for (size_t probes = 0; probes < REQUEST_SLOTS; probes++) {
        struct request_count *entry = &metrics->requests[slot];

        if (entry->route == NULL) {
            entry->route = route;
            entry->method = method_i;
            entry->status = status;
        }
        if (entry->method == method_i && entry->status == status &&
            strcmp(entry->route, route) == 0) {
            entry->count++;
            break;
        }
        slot = (slot + 1) % REQUEST_SLOTS;
    }
    pthread_mutex_unlock(&metrics->requests_lock);
}

void metrics_write_label_value(FILE *out, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '\\')
            fputs("\\\\", out);
        else if (*s == '"')
            fputs("\\\"", out);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

/* Writes microseconds as seconds, exactly (no binary rounding), without trailing zeros. */
static void write_seconds(FILE *out, int64_t us)
{
    char text[48];
    size_t len;

    len = (size_t)snprintf(text, sizeof(text), "%lld.%06lld", (long long)(us / 1000000),
                           (long long)(us % 1000000));
    while (text[len - 1] == '0')
        len--;
    if (text[len - 1] == '.')
        len--;
    fwrite(text, 1, len, out);
}

static void write_histogram(const struct metrics *metrics, enum metrics_histogram histogram,
                            FILE *out)
{
    const struct histogram_spec *spec = &histogram_specs[histogram];
    const struct histogram *h = &metrics->histograms[histogram];
    unsigned long long cumulative = 0;
    size_t i;

    fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", spec->name, spec->help, spec->name);
    for (i = 0; spec->bounds_us[i] != 0; i++) {
        cumulative += atomic_load(&h->buckets[i]);
        fprintf(out, "%s_bucket{le=\"", spec->name);
        write_seconds(out, spec->bounds_us[i]);
        fprintf(out, "\"} %llu\n", cumulative);
    }
    cumulative += atomic_load(&h->buckets[i]);
    /* The count is the buckets' total, so that it always equals the +Inf bucket. */
    fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum ", spec->name, cumulative, spec->name);
    write_seconds(out, atomic_load(&h->sum_us));
    fprintf(out, "\n%s_count %llu\n", spec->name, cumulative);
}

static int compare_requests(const void *a, const void *b)
{
    const struct request_count *x = a, *y = b;
    int order = strcmp(x->route, y->route);

    if (order == 0)
        order = (int)x->method - (int)y->method;
    return order != 0 ? order : x->status - y->status;
}

static void write_requests(struct metrics *metrics, FILE *out)
{
    struct request_count *copy = malloc(sizeof(metrics->requests));
    size_t n = 0;

    fputs("# HELP cronfence_http_requests_total HTTP requests answered, by route (the API's path "
          "template, or \"none\" for the dashboard's files and unknown paths), method and "
          "status code.\n"
          "# TYPE cronfence_http_requests_total counter\n",
          out);
    if (copy == NULL)
        return;
    pthread_mutex_lock(&metrics->requests_lock);
    for (size_t i = 0; i < REQUEST_SLOTS; i++)
        if (metrics->requests[i].route != NULL)
            copy[n++] = metrics->requests[i];
    pthread_mutex_unlock(&metrics->requests_lock);
    qsort(copy, n, sizeof(*copy), compare_requests);
    for (size_t i = 0; i < n; i++) {
        fputs("cronfence_http_requests_total{route=\"", out);
        metrics_write_label_value(out, copy[i].route);
        fprintf(out, "\",method=\"%s\",code=\"%d\"} %llu\n", method_names[copy[i].method],
                copy[i].status, (unsigned long long)copy[i].count);
    }
    free(copy);
}

/* Writes a slot counter family with the series of the reasons allowed[0..n). */
static void write_slots(FILE *out, const char *name, const char *help, const atomic_ullong *counts,
                        const enum metrics_slot_reason *allowed, size_t n)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s{reason=\"%s\"} %llu\n", name, reason_names[allowed[i]],
                (unsigned long long)atomic_load(&counts[allowed[i]]));
}

int metrics_write(struct metrics *metrics, FILE *out)
{
    fputs("# HELP cronfence_firings_total Firings this instance claimed and finished, by "
          "outcome (lost: left running by a crash of this instance).\n"
          "# TYPE cronfence_firings_total counter\n",
          out);
    for (size_t i = 0; i < OUTCOME_COUNT; i++)
        fprintf(out, "cronfence_firings_total{outcome=\"%s\"} %llu\n", run_status_name(outcomes[i]),
                (unsigned long long)atomic_load(&metrics->firings[i]));
    /* Overlap is the one reason to skip a slot, and never a reason to miss one. */
    static const enum metrics_slot_reason skip_reasons[] = {METRICS_REASON_OVERLAP};
    static const enum metrics_slot_reason miss_reasons[] = {
        METRICS_REASON_LATE,      METRICS_REASON_QUEUE,        METRICS_REASON_NO_QUORUM,
        METRICS_REASON_CONTENDED, METRICS_REASON_CLAIM_FAILED, METRICS_REASON_UNCOMMITTED};

    write_slots(out, "cronfence_slots_skipped_total",
                "Slots this instance recorded skipped, by reason.", metrics->skipped, skip_reasons,
                sizeof(skip_reasons) / sizeof(skip_reasons[0]));
    write_slots(out, "cronfence_slots_missed_total",
                "Slots this instance recorded missed, by reason.", metrics->missed, miss_reasons,
                sizeof(miss_reasons) / sizeof(miss_reasons[0]));
    for (int h = 0; h < METRICS_HISTOGRAM_COUNT; h++)
        write_histogram(metrics, (enum metrics_histogram)h, out);
    write_requests(metrics, out);
    write_jobs(metrics, out);
    return ferror(out) ? CF_ERR_IO : CF_OK;
}
