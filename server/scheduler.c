/*
 * scheduler.c - the scheduler thread: slots, claims, firings, history.
 *
 * State owned by the scheduler thread alone (no lock needed): the job table,
 * the heap of next slots, the firings in flight and the queued slots. The
 * inbox, guarded by inbox_lock, is the only thing other threads touch.
 */
#include "scheduler.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cron.h"
#include "delivery.h"
#include "log.h"
#include "tz.h"

/* Longest sleep between checks, so a wall-clock jump is noticed within it. */
#define SCHED_MAX_SLEEP_MS 1000
/* How often retention pruning runs, and how much it deletes per statement. */
#define SCHED_PRUNE_FIRST_MS 5000
#define SCHED_PRUNE_INTERVAL_MS 60000
#define SCHED_PRUNE_BATCH 1000
/* Missed slots recorded one row each before the rest go into one summary row. */
#define SCHED_MISSED_ROWS 100
/* Missed slots counted one by one at most; beyond, the count is "at least". */
#define SCHED_MISSED_SCAN_MAX 1000000
/* Claims that found no quorum are retried after a random 5-50 ms (DESIGN §4.2). */
#define SCHED_CLAIM_RETRY_MIN_MS 5
#define SCHED_CLAIM_RETRY_SPREAD_MS 45
/* Each further retry of one slot waits twice as long, up to 2^this times the first. */
#define SCHED_CLAIM_RETRY_DOUBLINGS 5
/* How long scheduler_trigger waits for the scheduler thread. */
#define SCHED_TRIGGER_WAIT_MS 15000
/* Pause before another try at a lease extension that missed its quorum. */
#define SCHED_EXTEND_RETRY_MS 100
/* Pause between attempts to load the catalog when the database refuses. */
#define SCHED_LOAD_RETRY_MS 1000
#define JOB_BUCKETS 4096
/* While the database takes no writes: how often a write is tried, and how many states wait. */
#define SCHED_STORAGE_PROBE_MS 1000
#define SCHED_UNRECORDED_MAX 100000

/* Why slots of a job were given up without a record each (see struct sched_job). */
enum outage_kind {
    OUTAGE_NO_QUORUM, /* no quorum of trusted redis nodes */
    OUTAGE_STORAGE,   /* the database took no writes, so nothing was claimed */
};

/* Why a slot waits before its claim. */
enum pending_kind {
    PENDING_QUEUED,  /* overlap=queue: until the run in flight ends */
    PENDING_STAGGER, /* until its rank's turn after T (DESIGN §4.4) */
    PENDING_RETRY,   /* a claim failed (no quorum); retried after 5-50 ms */
};

/* A slot waiting to be claimed. */
struct pending_slot {
    struct pending_slot *next;
    int64_t slot_ms;
    enum run_trigger trigger;
    enum pending_kind kind;
    int64_t retry_at_boot_ms; /* not before this */
    int last_error;           /* PENDING_RETRY: what the last claim returned */
};

/* A job as the scheduler sees it. */
struct sched_job {
    struct sched_job *next_in_bucket;
    char name[JOB_NAME_MAX + 1];
    struct job *job; /* NULL once deleted (kept while firings are in flight) */
    struct cron_schedule *cron;
    const struct tz_zone *zone;
    int64_t next_ms;   /* next slot, wall ms; 0 when not scheduled */
    size_t heap_index; /* position in the heap, or NOT_IN_HEAP */
    int in_flight;     /* firings from launch to their recorded end */
    /*
     * Of those, the ones whose delivery has ended (the engine thread counts
     * them up; retire_firing() down): their end is still being released
     * and recorded, but they are no run in flight for the overlap policy.
     */
    atomic_int deliveries_ended;
    struct pending_slot *pending; /* oldest first */
    /* Links in the scheduler's list of jobs with pending slots. */
    struct sched_job *pending_prev, *pending_next;
    bool pending_listed;
    /*
     * Slots given up for want of a quorum, or of a writable database, since
     * the last claim that had both: recorded as one summary when they are
     * back, not as one row per slot (DESIGN §1 G5: "recorded as missed once
     * the quorum returns"). outage_count 0: none.
     */
    int64_t outage_first_ms, outage_last_ms, outage_count;
    enum outage_kind outage_kind;
    /* The slot whose claim failed last, and how many times in a row. */
    int64_t retried_slot_ms;
    int retries;
};

#define NOT_IN_HEAP ((size_t)-1)

/* One claimed firing, from claim to recorded outcome; the delivery's owner. */
/* A finished delivery, copied off the engine thread. */
struct completion {
    struct completion *next;
    struct firing *firing;
    enum run_status status;
    int attempts;
    int http_status;
    char *error;
    char *response_excerpt;
    char *reason; /* missed: why nothing was sent (no free connection to the target) */
    int64_t finished_at_ms;
    bool has_lag;
    int64_t lag_ms;
    struct run_attempt *attempt_log; /* owned until complete_run() takes it */
    int attempt_log_count;
};

struct firing {
    struct firing *next;
    struct firing *prev;
    struct sched_job *sj;
    struct coord_claim claim;
    struct run run;
    struct delivery_request *request; /* from prepare_firing() until launch_firing() */
    int64_t next_extend_boot_ms;
    atomic_bool lease_lost;
    atomic_llong valid_until_boot_ms; /* copy of claim's, read by the engine thread */
    atomic_bool delivery_ended;       /* set once its completion is in the inbox */
    /* Filled once, when the firing ends: reporting an end never needs memory. */
    struct completion done;
};

/* A manual trigger or a retry waiting for the scheduler thread. */
struct trigger_request {
    struct trigger_request *next;
    const char *name;
    enum run_trigger trigger; /* RUN_TRIGGER_MANUAL or RUN_TRIGGER_RETRY */
    int64_t slot_ms;          /* a retry: the slot fired again */
    const char *retry_of;     /* a retry: the run retried */
    bool done;
    int result;
    struct run *run;
    char *reason;
    size_t reason_len;
};

struct changed_name {
    struct changed_name *next;
    char name[JOB_NAME_MAX + 1];
};

struct scheduler {
    struct scheduler_config cfg;
    struct delivery_engine *engine;
    pthread_t thread;

    /* Inbox, guarded by inbox_lock; wake signals the scheduler thread. */
    pthread_mutex_t inbox_lock;
    pthread_cond_t wake;
    pthread_cond_t replied; /* trigger requests answered */
    bool stopping;
    bool loaded;      /* the catalog is loaded and scheduled */
    int64_t grace_ms; /* how long firings in flight may go on after the stop */
    struct changed_name *changed;
    struct trigger_request *triggers;
    struct completion *completions;

    /* Scheduler-thread state. */
    /*
     * Run states the database refused (storage failing), oldest first,
     * written when it takes writes again; at most SCHED_UNRECORDED_MAX.
     */
    struct run *unrecorded;
    size_t unrecorded_count, unrecorded_cap;
    int64_t unrecorded_dropped;
    int64_t next_probe_boot_ms;
    struct sched_job *buckets[JOB_BUCKETS];
    struct sched_job **heap;
    size_t heap_len, heap_cap;
    struct firing *in_flight;       /* doubly linked */
    struct sched_job *pending_jobs; /* jobs with pending slots, doubly linked */

    /* The retention thread; prune_lock and prune_wake only pace it. */
    pthread_t prune_thread;
    pthread_mutex_t prune_lock;
    pthread_cond_t prune_wake;
    atomic_bool prune_stop;
    bool prune_thread_started;
    uint64_t rng;

    /* Statistics, read by other threads. */
    atomic_llong stat_in_flight, stat_jobs;
    atomic_bool stopped; /* scheduler_stop() is done: the thread and the engine are gone */
};

/* ---------------------------------------------------------------------- */
/* Small helpers                                                            */
/* ---------------------------------------------------------------------- */

static uint64_t next_random(struct scheduler *sched)
{
    /* xorshift64*: only spreads claim retries, nothing secret. */
    sched->rng ^= sched->rng >> 12;
    sched->rng ^= sched->rng << 25;
    sched->rng ^= sched->rng >> 27;
    return sched->rng * 2685821657736338717ull;
}

static unsigned name_bucket(const char *name)
{
    return (unsigned)(cf_fnv1a(CF_FNV1A_START, name) % JOB_BUCKETS);
}

static struct sched_job *find_job(struct scheduler *sched, const char *name)
{
    struct sched_job *sj = sched->buckets[name_bucket(name)];

    while (sj != NULL && strcmp(sj->name, name) != 0)
        sj = sj->next_in_bucket;
    return sj;
}

/* ---------------------------------------------------------------------- */
/* The heap of next slots                                                   */
/* ---------------------------------------------------------------------- */

static void heap_swap(struct scheduler *sched, size_t a, size_t b)
{
    struct sched_job *tmp = sched->heap[a];

    sched->heap[a] = sched->heap[b];
    sched->heap[b] = tmp;
    sched->heap[a]->heap_index = a;
    sched->heap[b]->heap_index = b;
}

static void heap_up(struct scheduler *sched, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (sched->heap[parent]->next_ms <= sched->heap[i]->next_ms)
            break;
        heap_swap(sched, parent, i);
        i = parent;
    }
}

static void heap_down(struct scheduler *sched, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, least = i;

        if (left < sched->heap_len && sched->heap[left]->next_ms < sched->heap[least]->next_ms)
            least = left;
        if (right < sched->heap_len && sched->heap[right]->next_ms < sched->heap[least]->next_ms)
            least = right;
        if (least == i)
            return;
        heap_swap(sched, least, i);
        i = least;
    }
}

static void heap_remove(struct scheduler *sched, struct sched_job *sj)
{
    size_t i = sj->heap_index;

    if (i == NOT_IN_HEAP)
        return;
    sched->heap_len--;
    if (i != sched->heap_len) {
        sched->heap[i] = sched->heap[sched->heap_len];
        sched->heap[i]->heap_index = i;
        heap_down(sched, i);
        heap_up(sched, i);
    }
    sj->heap_index = NOT_IN_HEAP;
    atomic_fetch_sub(&sched->stat_jobs, 1);
}

/* Puts sj in the heap at sj->next_ms, or takes it out when next_ms is 0. */
static int heap_set(struct scheduler *sched, struct sched_job *sj, int64_t next_ms)
{
    if (next_ms != sj->next_ms)
        metrics_job_next_fire(sched->cfg.metrics, sj->name, next_ms);
    sj->next_ms = next_ms;
    if (next_ms == 0) {
        heap_remove(sched, sj);
        return CF_OK;
    }
    if (sj->heap_index != NOT_IN_HEAP) {
        heap_down(sched, sj->heap_index);
        heap_up(sched, sj->heap_index);
        return CF_OK;
    }
    if (sched->heap_len == sched->heap_cap) {
        size_t cap = sched->heap_cap ? sched->heap_cap * 2 : 256;
        struct sched_job **grown = realloc(sched->heap, cap * sizeof(*grown));

        if (grown == NULL)
            return CF_ERR_NOMEM;
        sched->heap = grown;
        sched->heap_cap = cap;
    }
    sj->heap_index = sched->heap_len;
    sched->heap[sched->heap_len++] = sj;
    heap_up(sched, sj->heap_index);
    atomic_fetch_add(&sched->stat_jobs, 1);
    return CF_OK;
}

/* ---------------------------------------------------------------------- */
/* Recording runs                                                           */
/* ---------------------------------------------------------------------- */

/*
 * Keeps copies of n run states the database refused, to write once it
 * takes writes again (bounded: beyond SCHED_UNRECORDED_MAX the newest are
 * dropped and counted; their runs end "lost" after the next restart).
 */
static void keep_unrecorded(struct scheduler *sched, const struct run *const *runs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (sched->unrecorded_count == sched->unrecorded_cap) {
            size_t grown = sched->unrecorded_cap ? sched->unrecorded_cap * 2 : 64;
            struct run *bigger;

            if (grown > SCHED_UNRECORDED_MAX)
                grown = SCHED_UNRECORDED_MAX;
            bigger = grown > sched->unrecorded_cap
                         ? realloc(sched->unrecorded, grown * sizeof(*bigger))
                         : NULL;
            if (bigger == NULL) {
                sched->unrecorded_dropped++;
                continue;
            }
            sched->unrecorded = bigger;
            sched->unrecorded_cap = grown;
        }
        if (run_copy(&sched->unrecorded[sched->unrecorded_count], runs[i]) == CF_OK)
            sched->unrecorded_count++;
        else
            sched->unrecorded_dropped++;
    }
}

/* Tells the coordinator and the observer of n run states just stored (queued when share). */
static void runs_recorded(struct scheduler *sched, const struct run *const *runs, size_t n,
                          bool share)
{
    if (share)
        sched->cfg.coord->ops->history_queued(sched->cfg.coord);
    for (size_t i = 0; i < n; i++)
        if (sched->cfg.run_changed != NULL)
            sched->cfg.run_changed(sched->cfg.ctx, runs[i]);
}

/*
 * Stores n run states in one transaction (a tick often starts or finishes
 * many runs at once, and one commit each would dominate the scheduler's
 * time). In a cluster, with share, the same transaction queues them in the
 * outbox for the other instances (DESIGN §4.7), so that no state on record
 * can be lost before they have it; start states need not be, since the
 * claim's commit round recorded them on the nodes already. Returns CF_OK,
 * or the error when the database refused them (kept for later when its
 * storage is failing, see keep_unrecorded()).
 */
static int record_runs_shared(struct scheduler *sched, const struct run *const *runs, size_t n,
                              bool share)
{
    struct coord *coord = sched->cfg.coord;
    int ret;

    if (n == 0)
        return CF_OK;
    share = share && coord->ops->shares_history(coord);
    ret = db_run_record(sched->cfg.db, runs, n, share);
    if (ret != CF_OK) {
        if (!db_storage_ok(NULL, 0)) {
            keep_unrecorded(sched, runs, n); /* the database logged the condition */
            return ret;
        }
        log_error("runs not recorded", "count=%zu first=%s", n, runs[0]->id);
        return ret;
    }
    runs_recorded(sched, runs, n, share);
    return CF_OK;
}

/*
 * While the database takes no writes: tries one every
 * SCHED_STORAGE_PROBE_MS; once it does, writes the states kept meanwhile.
 */
static void tend_storage(struct scheduler *sched, int64_t now_boot)
{
    const struct run **pointers;
    bool share = sched->cfg.coord->ops->shares_history(sched->cfg.coord);

    if (!db_storage_ok(NULL, 0)) {
        if (now_boot < sched->next_probe_boot_ms)
            return;
        sched->next_probe_boot_ms = now_boot + SCHED_STORAGE_PROBE_MS;
        if (db_probe_write(sched->cfg.db) != CF_OK)
            return;
    } else if (sched->unrecorded_count > 0) {
        /* States kept after a failure that was not the storage's: retried at the same pace. */
        if (now_boot < sched->next_probe_boot_ms)
            return;
        sched->next_probe_boot_ms = now_boot + SCHED_STORAGE_PROBE_MS;
    }
    if (sched->unrecorded_dropped > 0) {
        log_warn("run states dropped while the database took no writes", "count=%lld",
                 (long long)sched->unrecorded_dropped);
        sched->unrecorded_dropped = 0;
    }
    if (sched->unrecorded_count == 0)
        return;
    pointers = calloc(sched->unrecorded_count, sizeof(*pointers));
    if (pointers == NULL)
        return;
    for (size_t i = 0; i < sched->unrecorded_count; i++)
        pointers[i] = &sched->unrecorded[i];
    if (db_run_record(sched->cfg.db, pointers, sched->unrecorded_count, share) == CF_OK) {
        log_info("run states kept while the database took no writes recorded", "count=%zu",
                 sched->unrecorded_count);
        runs_recorded(sched, pointers, sched->unrecorded_count, share);
        for (size_t i = 0; i < sched->unrecorded_count; i++)
            run_clear(&sched->unrecorded[i]);
        sched->unrecorded_count = 0;
    }
    free(pointers);
}

static void record_runs(struct scheduler *sched, const struct run *const *runs, size_t n)
{
    record_runs_shared(sched, runs, n, true);
}

static void record_run(struct scheduler *sched, const struct run *run)
{
    record_runs(sched, &run, 1);
}

/* Records a slot that never started: skipped or missed, for reason (counted by label). */
static void record_unstarted(struct scheduler *sched, const char *job, int64_t slot_ms,
                             enum run_trigger trigger, enum run_status status,
                             enum metrics_slot_reason label, const char *reason)
{
    struct run run = {0};

    run_slot_id(job, slot_ms, run.id);
    run.job = (char *)job;
    run.trigger = trigger;
    run.scheduled_at_ms = slot_ms;
    run.status = status;
    run.reason = (char *)reason;
    run.instance = (char *)sched->cfg.instance_id;
    /* Counted first: once the run can be read, the count includes it. */
    metrics_count_slots(sched->cfg.metrics, status, label, 1);
    record_run(sched, &run);
    log_info(status == RUN_SKIPPED ? "slot skipped" : "slot missed",
             "job=%s slot=%lld reason=\"%s\"", job, (long long)slot_ms, reason);
}

/*
 * Records as missed the run of a claim that minted a token but sent
 * nothing (not committed on a quorum, or given up after its commit): the
 * commit round may have left its start record on some nodes, and this
 * record, with the token, ends it everywhere (DESIGN §4.7). Without a
 * token it is an ordinary missed slot.
 */
static void record_unsent_claim(struct scheduler *sched, const struct coord_claim *claim,
                                enum metrics_slot_reason label, const char *reason)
{
    struct run run = {0};

    memcpy(run.id, claim->run_id, sizeof(run.id));
    if (run.id[0] == '\0')
        run_slot_id(claim->job, claim->slot_ms, run.id);
    run.job = (char *)claim->job;
    run.trigger = claim->trigger;
    run.scheduled_at_ms = claim->slot_ms;
    run.started_at_ms = claim->token != 0 ? claim->started_at_ms : 0;
    run.finished_at_ms = claim->token != 0 ? cf_wall_ms() : 0;
    run.status = RUN_MISSED;
    run.reason = (char *)reason;
    run.fencing_token = claim->token;
    run.instance = (char *)sched->cfg.instance_id;
    metrics_count_slots(sched->cfg.metrics, RUN_MISSED, label, 1);
    record_run(sched, &run);
    log_info("slot missed", "job=%s run=%s token=%lld reason=\"%s\"", claim->job, run.id,
             (long long)claim->token, reason);
}

/*
 * Records summarised slots of job as one missed row, id
 * "<job>@<first ms>-<last ms>", dated at its last slot (so that the next
 * start resumes after every slot it counts); count slots, or at least count
 * when not exact.
 */
static void record_missed_summary(struct scheduler *sched, const char *job, int64_t first_ms,
                                  int64_t last_ms, int64_t count, bool exact,
                                  enum metrics_slot_reason label, const char *reason)
{
    struct run run = {0};
    char from[CF_TIME_LEN], to[CF_TIME_LEN], text[256];

    snprintf(run.id, sizeof(run.id), "%s@%lld-%lld", job, (long long)first_ms, (long long)last_ms);
    snprintf(text, sizeof(text), "%s%lld slots missed from %s to %s (%s)", exact ? "" : "at least ",
             (long long)count, cf_format_time(first_ms, from), cf_format_time(last_ms, to), reason);
    run.job = (char *)job;
    run.trigger = RUN_TRIGGER_SCHEDULE;
    run.scheduled_at_ms = last_ms;
    run.status = RUN_MISSED;
    run.reason = text;
    run.instance = (char *)sched->cfg.instance_id;
    metrics_count_slots(sched->cfg.metrics, RUN_MISSED, label, count);
    record_run(sched, &run);
    log_warn("slots missed", "job=%s count=%lld from=%s to=%s reason=\"%s\"", job, (long long)count,
             from, to, reason);
}

/*
 * Records the slots of sj from first_ms up to and including last_ms as
 * missed: one row each for the first SCHED_MISSED_ROWS, then one summary row
 * with the count of the rest (DESIGN §3), so a long downtime never floods the
 * history. Returns the number of slots in the range.
 */
static int64_t record_missed_range(struct scheduler *sched, struct sched_job *sj, int64_t first_ms,
                                   int64_t last_ms, enum metrics_slot_reason label,
                                   const char *reason)
{
    int64_t period = cron_every_ms(sj->cron);
    int64_t slot = first_ms, count = 0, summary_first = 0, summary_last = 0;
    bool exact = true;
    /* The rows go in one transaction and one log line: a long downtime is thousands of slots. */
    struct run rows[SCHED_MISSED_ROWS];
    const struct run *pointers[SCHED_MISSED_ROWS];
    size_t n_rows = 0;

    while (slot != 0 && slot <= last_ms) {
        int64_t next;

        if (count < SCHED_MISSED_ROWS) {
            struct run *run = &rows[n_rows];

            memset(run, 0, sizeof(*run));
            run_slot_id(sj->name, slot, run->id);
            run->job = sj->name;
            run->trigger = RUN_TRIGGER_SCHEDULE;
            run->scheduled_at_ms = slot;
            run->status = RUN_MISSED;
            run->reason = (char *)reason;
            run->instance = (char *)sched->cfg.instance_id;
            pointers[n_rows++] = run;
        } else if (period > 0) {
            /* A fixed period: count the rest without walking it. */
            summary_first = slot;
            summary_last = slot + (last_ms - slot) / period * period;
            count += (summary_last - slot) / period + 1;
            break;
        } else {
            if (summary_first == 0)
                summary_first = slot;
            summary_last = slot;
        }
        count++;
        if (count > SCHED_MISSED_SCAN_MAX) {
            exact = false;
            summary_last = last_ms;
            break;
        }
        if (cron_next(sj->cron, sj->zone, slot, &next) != CF_OK)
            break;
        slot = next;
    }
    if (n_rows > 0) {
        /* Counted first: once the runs can be read, the count includes them. */
        metrics_count_slots(sched->cfg.metrics, RUN_MISSED, label, (int64_t)n_rows);
        record_runs(sched, pointers, n_rows);
        log_info("slots missed", "job=%s first=%lld last=%lld rows=%zu reason=\"%s\"", sj->name,
                 (long long)rows[0].scheduled_at_ms, (long long)rows[n_rows - 1].scheduled_at_ms,
                 n_rows, reason);
    }
    if (summary_first != 0)
        record_missed_summary(sched, sj->name, summary_first, summary_last,
                              count - SCHED_MISSED_ROWS, exact, label, reason);
    return count;
}

static void record_outage(struct scheduler *sched, struct sched_job *sj);

/* Counts a slot of sj given up for kind into its outage (see struct sched_job). */
static void note_outage(struct scheduler *sched, struct sched_job *sj, int64_t slot_ms,
                        enum outage_kind kind)
{
    if (sj->outage_count > 0 && sj->outage_kind != kind)
        record_outage(sched, sj);
    sj->outage_kind = kind;
    if (sj->outage_count == 0 || slot_ms < sj->outage_first_ms)
        sj->outage_first_ms = slot_ms;
    if (sj->outage_count == 0 || slot_ms > sj->outage_last_ms)
        sj->outage_last_ms = slot_ms;
    sj->outage_count++;
}

/* Records the outage of sj, if any: one missed row for a single slot, else one summary. */
static void record_outage(struct scheduler *sched, struct sched_job *sj)
{
    bool storage = sj->outage_kind == OUTAGE_STORAGE;
    const char *reason =
        storage ? "not claimed: the database took no writes" : "no quorum of trusted redis nodes";
    enum metrics_slot_reason label =
        storage ? METRICS_REASON_CLAIM_FAILED : METRICS_REASON_NO_QUORUM;

    if (sj->outage_count == 1)
        record_unstarted(sched, sj->name, sj->outage_first_ms, RUN_TRIGGER_SCHEDULE, RUN_MISSED,
                         label, reason);
    else if (sj->outage_count > 1)
        record_missed_summary(sched, sj->name, sj->outage_first_ms, sj->outage_last_ms,
                              sj->outage_count, true, label, reason);
    sj->outage_count = 0;
}

/* Records the outages of every job (at stop). */
static void record_all_outages(struct scheduler *sched)
{
    for (size_t b = 0; b < JOB_BUCKETS; b++)
        for (struct sched_job *sj = sched->buckets[b]; sj != NULL; sj = sj->next_in_bucket)
            record_outage(sched, sj);
}

/* ---------------------------------------------------------------------- */
/* Jobs                                                                     */
/* ---------------------------------------------------------------------- */

/* Adds sj to the list of jobs with pending slots, unless it is there. */
static void pending_link(struct scheduler *sched, struct sched_job *sj)
{
    if (sj->pending_listed)
        return;
    sj->pending_prev = NULL;
    sj->pending_next = sched->pending_jobs;
    if (sched->pending_jobs != NULL)
        sched->pending_jobs->pending_prev = sj;
    sched->pending_jobs = sj;
    sj->pending_listed = true;
}

static void pending_unlink(struct scheduler *sched, struct sched_job *sj)
{
    if (!sj->pending_listed)
        return;
    if (sj->pending_prev != NULL)
        sj->pending_prev->pending_next = sj->pending_next;
    else
        sched->pending_jobs = sj->pending_next;
    if (sj->pending_next != NULL)
        sj->pending_next->pending_prev = sj->pending_prev;
    sj->pending_prev = sj->pending_next = NULL;
    sj->pending_listed = false;
}

static void free_pending(struct scheduler *sched, struct sched_job *sj)
{
    while (sj->pending != NULL) {
        struct pending_slot *next = sj->pending->next;

        free(sj->pending);
        sj->pending = next;
    }
    pending_unlink(sched, sj);
}

/* Drops the job's definition; the entry itself stays while firings are in flight. */
static void unload_job(struct scheduler *sched, struct sched_job *sj)
{
    record_outage(sched, sj);
    heap_set(sched, sj, 0);
    free_pending(sched, sj);
    job_free(sj->job);
    sj->job = NULL;
    cron_free(sj->cron);
    sj->cron = NULL;
}

static void free_job_entry(struct scheduler *sched, struct sched_job *sj)
{
    struct sched_job **link = &sched->buckets[name_bucket(sj->name)];

    while (*link != sj)
        link = &(*link)->next_in_bucket;
    *link = sj->next_in_bucket;
    unload_job(sched, sj);
    free(sj);
}

/* Next slot of sj strictly after after_ms, or 0 when paused or never again. */
static int64_t next_slot(const struct sched_job *sj, int64_t after_ms)
{
    int64_t next;

    if (sj->job == NULL || sj->job->paused)
        return 0;
    if (cron_next(sj->cron, sj->zone, after_ms, &next) != CF_OK)
        return 0;
    return next;
}

/*
 * Installs job (stolen) as sj's definition. resume_after_ms is the instant
 * after which slots count: slots between it and now that were never
 * recorded are handled by the normal due path (late, missed or caught up).
 */
static int install_job(struct scheduler *sched, struct sched_job *sj, struct job *job,
                       int64_t resume_after_ms)
{
    struct cron_schedule *cron = NULL;
    const struct tz_zone *zone = tz_get(job->timezone);
    struct cron_error err;

    if (zone == NULL || cron_parse(job->schedule, &cron, &err) != CF_OK) {
        log_error("stored job not schedulable", "job=%s", job->name);
        job_free(job);
        return CF_ERR_INVALID;
    }
    heap_set(sched, sj, 0);
    job_free(sj->job);
    cron_free(sj->cron);
    sj->job = job;
    sj->cron = cron;
    sj->zone = zone;
    if (job->paused)
        free_pending(sched, sj);
    return heap_set(sched, sj, next_slot(sj, resume_after_ms));
}

/* The entry of name, added unscheduled when absent; NULL when out of memory. */
static struct sched_job *job_entry(struct scheduler *sched, const char *name)
{
    struct sched_job *sj = find_job(sched, name);
    unsigned bucket;

    if (sj != NULL)
        return sj;
    sj = calloc(1, sizeof(*sj));
    if (sj == NULL)
        return NULL;
    bucket = name_bucket(name);
    snprintf(sj->name, sizeof(sj->name), "%s", name);
    sj->heap_index = NOT_IN_HEAP;
    sj->next_in_bucket = sched->buckets[bucket];
    sched->buckets[bucket] = sj;
    return sj;
}

/*
 * Schedules job (stolen), read at start. After downtime, slots count from
 * the last one recorded for the job (by any instance, last_slot_ms), the
 * last one committed through the coordinator (fired_until_ms, 0 when
 * unknown), or its last change, whichever is latest.
 */
static void start_job(struct scheduler *sched, struct job *job, int64_t last_slot_ms,
                      int64_t fired_until_ms, int64_t now)
{
    struct sched_job *sj = job_entry(sched, job->name);
    int64_t resume_after = last_slot_ms > job->updated_at_ms ? last_slot_ms : job->updated_at_ms;

    if (sj == NULL) {
        job_free(job);
        return;
    }
    if (fired_until_ms > resume_after)
        resume_after = fired_until_ms;
    if (resume_after > now)
        resume_after = now;
    install_job(sched, sj, job, resume_after);
}

/* Reads job name from the database after a change and (re)schedules or removes it. */
static void reload_job(struct scheduler *sched, const char *name)
{
    struct sched_job *sj = find_job(sched, name);
    struct job *job = NULL;
    int64_t now = cf_wall_ms(), resume_after = now;
    int ret = db_job_get(sched->cfg.db, name, &job);

    if (ret == CF_ERR_NOT_FOUND) {
        if (sj != NULL) {
            if (sj->in_flight > 0)
                unload_job(sched, sj);
            else
                free_job_entry(sched, sj);
            log_info("job unscheduled", "job=%s", name);
        }
        return;
    }
    if (ret != CF_OK)
        return;
    if (sj == NULL) {
        sj = job_entry(sched, name);
        if (sj == NULL) {
            job_free(job);
            return;
        }
    } else if (sj->job != NULL && !sj->job->paused && !job->paused && sj->next_ms != 0 &&
               sj->next_ms - 1 < now) {
        /*
         * An edit of a running job must not swallow a slot that is due but not
         * yet handled: resume just before it, so it goes through the due path.
         * A new or resumed job starts from now (a pause fires nothing).
         */
        resume_after = sj->next_ms - 1;
    }
    install_job(sched, sj, job, resume_after);
}

/* ---------------------------------------------------------------------- */
/* Firing                                                                   */
/* ---------------------------------------------------------------------- */

/* Engine thread: another attempt only while the lease is held and still valid. */
static bool firing_may_retry(void *ctx, void *owner)
{
    struct firing *firing = owner;

    return !atomic_load(&firing->lease_lost) &&
           cf_boot_ms() < atomic_load(&firing->valid_until_boot_ms);
}

/*
 * A firing's delivery is over (any thread, once per firing): from now on it
 * is no run in flight for the overlap policy, though its lease is released
 * and its end recorded only when the scheduler thread takes the completion.
 */
static void note_delivery_ended(struct firing *firing)
{
    atomic_store(&firing->delivery_ended, true);
    atomic_fetch_add(&firing->sj->deliveries_ended, 1);
}

/*
 * Runs of sj whose delivery is still going on here: firings in flight but
 * those whose delivery ended and whose end is still to be recorded.
 */
static int deliveries_running(const struct sched_job *sj)
{
    return sj->in_flight - atomic_load(&sj->deliveries_ended);
}

/* Engine thread: copy the outcome into the inbox for the scheduler thread. */
static void firing_done(void *ctx, struct delivery_request *req,
                        const struct delivery_result *result)
{
    struct scheduler *sched = ctx;
    struct firing *firing = req->owner;
    struct completion *done = &firing->done;

    done->firing = firing;
    done->status = result->status;
    done->attempts = result->attempts;
    done->http_status = result->http_status;
    done->error = cf_strdup(result->error);
    done->response_excerpt = cf_strdup(result->response_excerpt);
    done->reason = cf_strdup(result->reason); /* set for a missed firing */
    done->finished_at_ms = result->finished_at_ms ? result->finished_at_ms : cf_wall_ms();
    done->has_lag = result->has_lag;
    done->lag_ms = result->lag_ms;
    /* Out of memory, the run goes without its attempt log: forensics, not the outcome. */
    if (result->attempt_log_count > 0) {
        done->attempt_log = malloc((size_t)result->attempt_log_count * sizeof(*done->attempt_log));
        if (done->attempt_log != NULL) {
            memcpy(done->attempt_log, result->attempt_log,
                   (size_t)result->attempt_log_count * sizeof(*done->attempt_log));
            done->attempt_log_count = result->attempt_log_count;
        }
    }
    note_delivery_ended(firing);
    pthread_mutex_lock(&sched->inbox_lock);
    done->next = sched->completions;
    sched->completions = done;
    pthread_cond_signal(&sched->wake);
    pthread_mutex_unlock(&sched->inbox_lock);
}

/*
 * Sets up the claim of a slot and names the run it starts: "<job>@<T>" for
 * a slot, a random id for a manual run or a retry. Returns CF_OK, or CF_ERR_IO when no
 * random id could be had.
 */
static int claim_init(struct coord_claim *claim, const struct sched_job *sj, int64_t slot_ms,
                      enum run_trigger trigger)
{
    memset(claim, 0, sizeof(*claim));
    claim->job = sj->name;
    claim->slot_ms = slot_ms;
    claim->lease_ms = sj->job->lease_ms;
    claim->per_slot = sj->job->overlap == JOB_OVERLAP_ALLOW;
    /*
     * A manual run and a retry do not advance fence.last, and are not refused
     * when it reached their slot (DESIGN §3): a retry fires a slot again on purpose.
     */
    claim->advance = trigger != RUN_TRIGGER_MANUAL && trigger != RUN_TRIGGER_RETRY;
    claim->trigger = trigger;
    if (trigger == RUN_TRIGGER_MANUAL || trigger == RUN_TRIGGER_RETRY)
        return cf_random_hex(claim->run_id, 16);
    run_slot_id(sj->name, slot_ms, claim->run_id);
    return CF_OK;
}

/* One claim round with the coordinator for n slots, timed for the metrics. */
static void claim_round(struct scheduler *sched, struct coord_claim *claims, size_t n)
{
    int64_t started_us = cf_boot_us();

    sched->cfg.coord->ops->claim(sched->cfg.coord, claims, n);
    metrics_observe(sched->cfg.metrics, METRICS_CLAIM_DURATION, cf_boot_us() - started_us);
}

/*
 * Builds the firing of a claimed slot with its delivery request (kept in
 * firing->request until launch). Returns NULL when out of memory; the lease
 * is then released.
 */
static struct firing *prepare_firing(struct scheduler *sched, struct sched_job *sj,
                                     const struct coord_claim *claim, enum run_trigger trigger)
{
    struct firing *firing = calloc(1, sizeof(*firing));
    struct delivery_request *req = calloc(1, sizeof(*req));
    char when[CF_TIME_LEN];

    if (firing == NULL || req == NULL)
        goto out_fail;
    firing->sj = sj;
    firing->claim = *claim;
    firing->claim.job = sj->name;
    firing->run.job = strdup(sj->name);
    firing->run.instance = strdup(sched->cfg.instance_id);
    if (firing->run.job == NULL || firing->run.instance == NULL)
        goto out_fail;
    memcpy(firing->run.id, claim->run_id, sizeof(firing->run.id));
    if (trigger == RUN_TRIGGER_MANUAL)
        snprintf(req->idempotency_key, sizeof(req->idempotency_key), "%s@manual-%s", sj->name,
                 firing->run.id);
    else
        snprintf(req->idempotency_key, sizeof(req->idempotency_key), "%s@%s", sj->name,
                 cf_format_time(claim->slot_ms, when));
    firing->run.trigger = trigger;
    firing->run.scheduled_at_ms = claim->slot_ms;
    /* The start the commit round recorded, so that both records of it are one. */
    firing->run.started_at_ms = claim->started_at_ms != 0 ? claim->started_at_ms : cf_wall_ms();
    firing->run.status = RUN_RUNNING;
    firing->run.fencing_token = claim->token;
    firing->next_extend_boot_ms = cf_boot_ms() + claim->lease_ms / 3;
    atomic_store(&firing->valid_until_boot_ms, claim->valid_until_boot_ms);

    req->job = job_copy(sj->job);
    if (req->job == NULL)
        goto out_fail;
    snprintf(req->run_id, sizeof(req->run_id), "%s", firing->run.id);
    req->fencing_token = claim->token;
    req->scheduled_at_ms = claim->slot_ms;
    req->trigger = trigger;
    req->owner = firing;
    firing->request = req;
    return firing;

out_fail:
    log_error("firing not started", "job=%s error=\"out of memory\"", sj->name);
    sched->cfg.coord->ops->release(sched->cfg.coord, claim, 1);
    record_unsent_claim(sched, claim, METRICS_REASON_CLAIM_FAILED, "not sent: out of memory");
    delivery_request_free(req);
    if (firing != NULL)
        run_clear(&firing->run);
    free(firing);
    return NULL;
}

/* Puts a recorded firing in flight and hands its request to the engine. */
static void launch_firing(struct scheduler *sched, struct firing *firing)
{
    struct sched_job *sj = firing->sj;
    struct delivery_request *req = firing->request;
    int submitted;

    firing->request = NULL;
    if (cf_boot_ms() >= atomic_load(&firing->valid_until_boot_ms)) {
        /* Recording the start took the lease's remaining time: send nothing. */
        atomic_store(&firing->lease_lost, true);
        delivery_request_free(req);
        req = NULL;
    }
    sj->in_flight++;
    firing->next = sched->in_flight;
    if (sched->in_flight != NULL)
        sched->in_flight->prev = firing;
    sched->in_flight = firing;
    atomic_fetch_add(&sched->stat_in_flight, 1);
    log_debug("firing started", "job=%s run=%s token=%lld", sj->name, firing->run.id,
              (long long)firing->run.fencing_token);
    submitted = req != NULL ? delivery_submit(sched->engine, req) : CF_ERR_LOST;
    if (submitted != CF_OK) {
        /* The engine freed the request: finish the run here as not delivered. */
        struct completion *done = &firing->done;

        done->firing = firing;
        done->status = RUN_FAILED;
        done->error =
            strdup(submitted == CF_ERR_SHUTDOWN ? "instance stopping"
                   : submitted == CF_ERR_LOST   ? "lease expired before the first attempt: not sent"
                                                : cf_err_str(submitted));
        done->finished_at_ms = cf_wall_ms();
        note_delivery_ended(firing);
        pthread_mutex_lock(&sched->inbox_lock);
        done->next = sched->completions;
        sched->completions = done;
        pthread_mutex_unlock(&sched->inbox_lock);
    }
}

/*
 * Gives up a claimed firing whose start could not be recorded (consumed):
 * nothing is sent, the lease is released, and the run is kept for the
 * database as missed, with its token, which outranks the start record the
 * commit round left on the nodes (DESIGN §4.7).
 */
static void abandon_firing(struct scheduler *sched, struct firing *firing)
{
    const struct run *run = &firing->run;

    sched->cfg.coord->ops->release(sched->cfg.coord, &firing->claim, 1);
    firing->run.status = RUN_MISSED;
    firing->run.reason = strdup("not sent: the database could not record its start");
    firing->run.finished_at_ms = cf_wall_ms();
    metrics_count_slots(sched->cfg.metrics, RUN_MISSED, METRICS_REASON_CLAIM_FAILED, 1);
    keep_unrecorded(sched, &run, 1);
    log_warn("firing not sent", "job=%s run=%s reason=\"database not writable\"", firing->sj->name,
             firing->run.id);
    delivery_request_free(firing->request);
    run_clear(&firing->run);
    free(firing);
}

/*
 * Starts n prepared firings (consumed): records them all as running in one
 * transaction and only then sends them, so that no webhook goes out without
 * its run on record (a crash after the commit leaves them "running", later
 * "lost"). A firing whose record the database refused is not sent
 * (abandon_firing() frees it) and CF_ERR_DB is returned.
 */
static int start_firings(struct scheduler *sched, struct firing **firings, size_t n)
{
    const struct run **runs = calloc(n ? n : 1, sizeof(*runs));
    bool abandoned = false;
    int ret = CF_OK;

    if (runs == NULL)
        ret = CF_ERR_NOMEM;
    for (size_t i = 0; runs != NULL && i < n; i++)
        runs[i] = &firings[i]->run;
    /* The claims' commit round put these on the nodes already. */
    if (ret == CF_OK)
        ret = record_runs_shared(sched, runs, n, false);
    free(runs);
    for (size_t i = 0; i < n; i++) {
        const struct run *run = &firings[i]->run;
        bool recorded = ret == CF_OK ||
                        (ret == CF_ERR_NOMEM && record_runs_shared(sched, &run, 1, false) == CF_OK);

        if (recorded) {
            launch_firing(sched, firings[i]);
        } else {
            abandon_firing(sched, firings[i]);
            abandoned = true;
        }
    }
    return abandoned ? CF_ERR_DB : CF_OK;
}

/* Queues a slot of sj to claim later, oldest first. */
static void push_pending(struct scheduler *sched, struct sched_job *sj, int64_t slot_ms,
                         enum run_trigger trigger, enum pending_kind kind, int64_t retry_at_boot_ms,
                         int last_error)
{
    struct pending_slot *slot = calloc(1, sizeof(*slot)), **tail = &sj->pending;

    if (slot == NULL) {
        log_error("slot dropped", "job=%s slot=%lld error=\"out of memory\"", sj->name,
                  (long long)slot_ms);
        return;
    }
    slot->slot_ms = slot_ms;
    slot->trigger = trigger;
    slot->kind = kind;
    slot->retry_at_boot_ms = retry_at_boot_ms;
    slot->last_error = last_error;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = slot;
    pending_link(sched, sj);
}

/* A slot that could be claimed now, in a batch. */
struct due_slot {
    struct sched_job *sj;
    int64_t slot_ms;
    enum run_trigger trigger;
};

/*
 * Whether a firing of sj for slot_ms is in flight here with its delivery
 * over: its lease is released as soon as the scheduler thread takes its
 * completion, so it is no reason to skip a slot.
 */
static bool delivery_ended_here(struct scheduler *sched, const struct sched_job *sj,
                                int64_t slot_ms)
{
    if (atomic_load(&sj->deliveries_ended) == 0)
        return false;
    for (struct firing *firing = sched->in_flight; firing != NULL; firing = firing->next)
        if (firing->sj == sj && firing->claim.slot_ms == slot_ms)
            return atomic_load(&firing->delivery_ended);
    return false;
}

/*
 * How long to wait before claiming slot_ms of sj again after a failed claim:
 * 5-50 ms, doubling with each failure of the same slot in a row. A live
 * holder, or nodes that cannot answer, are not polled: the announcement
 * that the slot fired (DESIGN §4.4) or the holder's release ends the wait
 * long before the lease would.
 */
static int64_t retry_delay(struct scheduler *sched, struct sched_job *sj, int64_t slot_ms)
{
    int64_t delay =
        SCHED_CLAIM_RETRY_MIN_MS + (int64_t)(next_random(sched) % SCHED_CLAIM_RETRY_SPREAD_MS);

    if (sj->retried_slot_ms != slot_ms) {
        sj->retried_slot_ms = slot_ms;
        sj->retries = 0;
    }
    delay <<= sj->retries < SCHED_CLAIM_RETRY_DOUBLINGS ? sj->retries : SCHED_CLAIM_RETRY_DOUBLINGS;
    sj->retries++;
    return delay;
}

/* Claims a batch of due slots and starts, skips, queues or retries each. */
static void claim_batch(struct scheduler *sched, struct due_slot *due, size_t n)
{
    struct coord_claim *claims;
    struct firing **started;
    size_t n_started = 0;

    if (n == 0)
        return;
    if (!db_storage_ok(NULL, 0)) {
        /* What cannot be recorded is not fired: these wait for one summary per job. */
        for (size_t i = 0; i < n; i++)
            note_outage(sched, due[i].sj, due[i].slot_ms, OUTAGE_STORAGE);
        return;
    }
    claims = calloc(n, sizeof(*claims));
    if (claims == NULL) {
        log_error("claims not made", "count=%zu error=\"out of memory\"", n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (claim_init(&claims[i], due[i].sj, due[i].slot_ms, due[i].trigger) != CF_OK)
            claims[i].run_id[0] = '\0'; /* scheduled slots always have their id */
    claim_round(sched, claims, n);

    started = calloc(n, sizeof(*started));
    for (size_t i = 0; i < n; i++) {
        struct sched_job *sj = due[i].sj;
        int64_t slot = due[i].slot_ms;

        /* A claim that reached a quorum ends the job's outage. */
        if (claims[i].result != CF_ERR_NO_QUORUM)
            record_outage(sched, sj);
        switch (claims[i].result) {
        case CF_OK: {
            struct firing *firing =
                started ? prepare_firing(sched, sj, &claims[i], due[i].trigger) : NULL;

            if (firing != NULL) {
                started[n_started++] = firing;
            } else if (started == NULL) {
                sched->cfg.coord->ops->release(sched->cfg.coord, &claims[i], 1);
                record_unsent_claim(sched, &claims[i], METRICS_REASON_CLAIM_FAILED,
                                    "not sent: out of memory");
            }
            break;
        }
        case CF_ERR_FIRED:
            log_debug("slot already fired", "job=%s slot=%lld fired=%lld", sj->name,
                      (long long)slot, (long long)claims[i].fired_ms);
            /*
             * A later slot was committed first (a queued slot overtaken, or a
             * slot this instance reached too late): this one may never have
             * been delivered. Say so; if a peer did deliver it, its record
             * carries a token and wins the merge (DESIGN §4.7).
             */
            if (claims[i].fired_ms > slot)
                record_unstarted(sched, sj->name, slot, due[i].trigger, RUN_MISSED,
                                 METRICS_REASON_LATE,
                                 "a later slot was delivered before this one could start");
            break;
        case CF_ERR_LOST:
            /* Claimed but not committed in time: fence.last may say it fired; it did not. */
            record_unsent_claim(sched, &claims[i], METRICS_REASON_UNCOMMITTED,
                                "the claim could not be committed on a quorum in time");
            break;
        case CF_ERR_BUSY:
            if (!claims[i].busy_in_flight ||
                delivery_ended_here(sched, sj, claims[i].busy_slot_ms)) {
                int64_t delay = retry_delay(sched, sj, slot);

                /*
                 * Another instance holds this very slot, claims split the nodes
                 * and all gave up, or the holder of an earlier slot has not
                 * committed (or is a run whose delivery ended here and whose
                 * release is still to come): no run is in flight, so look again
                 * shortly. Once a holder of this slot has committed, the next
                 * claim answers FIRED and the slot is done; once an earlier one
                 * has, its run is in flight and the overlap policy applies.
                 */
                push_pending(sched, sj, slot, due[i].trigger, PENDING_RETRY, cf_boot_ms() + delay,
                             CF_ERR_BUSY);
                break;
            }
            /* The run in flight may be another instance's: look again in 100 ms. */
            if (sj->job->overlap == JOB_OVERLAP_QUEUE)
                push_pending(sched, sj, slot, due[i].trigger, PENDING_QUEUED, cf_boot_ms() + 100,
                             0);
            else
                record_unstarted(sched, sj->name, slot, due[i].trigger, RUN_SKIPPED,
                                 METRICS_REASON_OVERLAP, "previous run still in flight");
            break;
        default: {
            int64_t delay = retry_delay(sched, sj, slot);

            log_at(claims[i].result == CF_ERR_NO_QUORUM ? LOG_DEBUG : LOG_WARN, "claim failed",
                   "job=%s slot=%lld error=\"%s\"", sj->name, (long long)slot,
                   cf_err_str(claims[i].result));
            push_pending(sched, sj, slot, due[i].trigger, PENDING_RETRY, cf_boot_ms() + delay,
                         claims[i].result);
            break;
        }
        }
    }
    if (started != NULL)
        start_firings(sched, started, n_started);
    free(started);
    free(claims);
}

/* Appends to a growing array of due slots. */
static int push_due(struct due_slot **due, size_t *n, size_t *cap, struct sched_job *sj,
                    int64_t slot_ms, enum run_trigger trigger)
{
    if (*n == *cap) {
        size_t grown = *cap ? *cap * 2 : 64;
        struct due_slot *bigger = realloc(*due, grown * sizeof(**due));

        if (bigger == NULL)
            return CF_ERR_NOMEM;
        *due = bigger;
        *cap = grown;
    }
    (*due)[*n].sj = sj;
    (*due)[*n].slot_ms = slot_ms;
    (*due)[*n].trigger = trigger;
    (*n)++;
    return CF_OK;
}

/*
 * The newest slot of sj not after now, starting from its due slot first_ms.
 * The walk is bounded; when it stops early the rest is found on the next
 * pass, since the job is then still due.
 */
static int64_t latest_due_slot(const struct sched_job *sj, int64_t first_ms, int64_t now)
{
    int64_t period = cron_every_ms(sj->cron), slot = first_ms, next;

    if (period > 0)
        return first_ms + (now - first_ms) / period * period;
    for (int64_t walked = 0; walked < SCHED_MISSED_SCAN_MAX; walked++) {
        if (cron_next(sj->cron, sj->zone, slot, &next) != CF_OK || next > now)
            break;
        slot = next;
    }
    return slot;
}

/* Why a waiting slot was given up, for its "missed" record. */
static const char *pending_reason(const struct pending_slot *slot, bool superseded)
{
    if (slot->kind == PENDING_QUEUED)
        return "starting deadline passed while waiting for the previous run";
    if (slot->kind == PENDING_STAGGER)
        return "starting deadline passed while waiting for this instance's turn to claim";
    if (slot->last_error == CF_ERR_BUSY)
        return superseded ? "another claim held the slot and none delivered it before the next slot"
                          : "another claim held the slot and none delivered it in time";
    if (slot->last_error == CF_ERR_NO_QUORUM)
        return superseded ? "no quorum of trusted redis nodes before the next slot"
                          : "no quorum of trusted redis nodes before the starting deadline";
    return superseded ? "claim failed until the next slot"
                      : "claim failed until the starting deadline";
}

/* The metrics label of pending_reason(). */
static enum metrics_slot_reason pending_label(const struct pending_slot *slot)
{
    if (slot->kind == PENDING_STAGGER)
        return METRICS_REASON_LATE;
    if (slot->kind == PENDING_QUEUED)
        return METRICS_REASON_QUEUE;
    if (slot->last_error == CF_ERR_BUSY)
        return METRICS_REASON_CONTENDED;
    if (slot->last_error == CF_ERR_NO_QUORUM)
        return METRICS_REASON_NO_QUORUM;
    return METRICS_REASON_CLAIM_FAILED;
}

/*
 * A newer slot of sj is due: slots still waiting for a retry or their turn
 * are superseded (only the newest may start). Retries are recorded missed;
 * staggered slots were left to a better-ranked instance and are dropped.
 */
static void supersede_pending(struct scheduler *sched, struct sched_job *sj)
{
    struct pending_slot **link = &sj->pending;

    while (*link != NULL) {
        struct pending_slot *slot = *link;

        if (slot->kind == PENDING_QUEUED) {
            link = &slot->next;
            continue;
        }
        *link = slot->next;
        if (slot->kind == PENDING_RETRY && slot->last_error == CF_ERR_NO_QUORUM)
            note_outage(sched, sj, slot->slot_ms, OUTAGE_NO_QUORUM);
        else if (slot->kind == PENDING_RETRY)
            record_unstarted(sched, sj->name, slot->slot_ms, slot->trigger, RUN_MISSED,
                             pending_label(slot), pending_reason(slot, true));
        free(slot);
    }
    if (sj->pending == NULL)
        pending_unlink(sched, sj);
}

/* The first slot of sj at or after first_ms that is after fired_until_ms. */
static int64_t first_unfired(const struct sched_job *sj, int64_t first_ms, int64_t fired_until_ms)
{
    int64_t next;

    if (fired_until_ms < first_ms)
        return first_ms;
    if (cron_next(sj->cron, sj->zone, fired_until_ms, &next) != CF_OK)
        return INT64_MAX;
    return next;
}

/* A job found due, with the range of its due slots. */
struct due_job {
    struct sched_job *sj;
    int64_t first_ms;  /* its oldest due slot */
    int64_t latest_ms; /* its newest slot not after now */
};

/*
 * Handles the due slots of sj from first_ms to latest_ms. Several slots due
 * at once (after downtime, a pause of the process or a clock jump) are
 * coalesced: only the newest may start, as a late scheduled run while it is
 * within its starting deadline; the older ones are recorded missed, except
 * those up to fired_until_ms, which the coordinator says were claimed
 * (by a peer). When even the newest is past its deadline it is missed too,
 * unless catchup=latest fires it once (trigger "catchup"). The slot to
 * start goes through the overlap policy, then waits for its rank's turn.
 */
static void take_due_slots(struct scheduler *sched, const struct due_job *d, int64_t fired_until_ms,
                           int64_t now, int64_t now_boot, struct due_slot **due, size_t *n,
                           size_t *cap)
{
    static const char reason[] = "not started in time: the instance was down or late";
    struct sched_job *sj = d->sj;
    const struct job *job = sj->job;
    int64_t latest = d->latest_ms, first = first_unfired(sj, d->first_ms, fired_until_ms), delay;
    enum run_trigger trigger = RUN_TRIGGER_SCHEDULE;

    supersede_pending(sched, sj);
    if (now - latest > job->starting_deadline_ms) {
        if (job->catchup != JOB_CATCHUP_LATEST) {
            if (first <= latest)
                record_missed_range(sched, sj, first, latest, METRICS_REASON_LATE, reason);
            return;
        }
        trigger = RUN_TRIGGER_CATCHUP;
    }
    if (first < latest)
        record_missed_range(sched, sj, first, latest - 1, METRICS_REASON_LATE, reason);
    /*
     * Only a delivery really going on counts as the previous run in flight:
     * not one that ended and is being recorded, nor this scheduler's own
     * retry or stagger of an earlier slot (superseded above). A queued slot
     * keeps its place behind earlier queued ones.
     */
    if (deliveries_running(sj) > 0 || (job->overlap == JOB_OVERLAP_QUEUE && sj->pending != NULL)) {
        if (job->overlap == JOB_OVERLAP_FORBID) {
            record_unstarted(sched, sj->name, latest, trigger, RUN_SKIPPED, METRICS_REASON_OVERLAP,
                             "previous run still in flight");
            return;
        }
        if (job->overlap == JOB_OVERLAP_QUEUE) {
            push_pending(sched, sj, latest, trigger, PENDING_QUEUED, 0, 0);
            return;
        }
    }
    delay = sched->cfg.coord->ops->claim_delay_ms(sched->cfg.coord, sj->name, latest);
    if (latest + delay > now) {
        push_pending(sched, sj, latest, trigger, PENDING_STAGGER, now_boot + (latest + delay - now),
                     0);
        return;
    }
    push_due(due, n, cap, sj, latest, trigger);
}

/*
 * Claims every slot due at or before now, and advances each job to its next
 * slot. Jobs with several due slots ask the coordinator, in one batch, which
 * of them were claimed already.
 */
static void fire_due(struct scheduler *sched, int64_t now, int64_t now_boot)
{
    struct due_job *jobs = NULL;
    struct due_slot *due = NULL;
    const char **names = NULL;
    int64_t *marks = NULL;
    size_t n_jobs = 0, cap_jobs = 0, n_names = 0, n = 0, cap = 0;

    while (sched->heap_len > 0 && sched->heap[0]->next_ms <= now) {
        struct sched_job *sj = sched->heap[0];
        struct due_job d = {sj, sj->next_ms, latest_due_slot(sj, sj->next_ms, now)};

        heap_set(sched, sj, next_slot(sj, d.latest_ms));
        if (n_jobs == cap_jobs) {
            size_t grown = cap_jobs ? cap_jobs * 2 : 64;
            struct due_job *bigger = realloc(jobs, grown * sizeof(*jobs));

            if (bigger == NULL) {
                /* Handle this one alone rather than lose it. */
                take_due_slots(sched, &d, 0, now, now_boot, &due, &n, &cap);
                continue;
            }
            jobs = bigger;
            cap_jobs = grown;
        }
        jobs[n_jobs++] = d;
        if (d.latest_ms > d.first_ms)
            n_names++;
    }
    if (n_names > 0) {
        names = calloc(n_names, sizeof(*names));
        marks = calloc(n_names, sizeof(*marks));
        if (names != NULL && marks != NULL) {
            n_names = 0;
            for (size_t i = 0; i < n_jobs; i++)
                if (jobs[i].latest_ms > jobs[i].first_ms)
                    names[n_names++] = jobs[i].sj->name;
            sched->cfg.coord->ops->fired_until(sched->cfg.coord, names, n_names, marks);
        }
    }
    for (size_t i = 0, k = 0; i < n_jobs; i++) {
        int64_t mark = 0;

        if (jobs[i].latest_ms > jobs[i].first_ms && marks != NULL && names != NULL)
            mark = marks[k++];
        take_due_slots(sched, &jobs[i], mark, now, now_boot, &due, &n, &cap);
    }
    claim_batch(sched, due, n);
    free(due);
    free(jobs);
    free(names);
    free(marks);
}

/* Whether the head slot of sj may be claimed now. */
static bool pending_ready(const struct sched_job *sj, const struct pending_slot *slot,
                          int64_t now_boot)
{
    if (slot->retry_at_boot_ms > now_boot)
        return false;
    return slot->kind != PENDING_QUEUED || sj->in_flight == 0 ||
           sj->job->overlap == JOB_OVERLAP_ALLOW;
}

/*
 * Starts waiting slots whose turn has come: queued ones once the job has no
 * run in flight, staggered and retrying ones once their time has passed.
 * Slots past their starting deadline are recorded as missed.
 */
static void start_pending(struct scheduler *sched, int64_t now, int64_t now_boot)
{
    struct due_slot *due = NULL;
    size_t n = 0, cap = 0;
    struct sched_job *sj = sched->pending_jobs, *next;

    for (; sj != NULL; sj = next) {
        struct pending_slot *slot = sj->pending;

        next = sj->pending_next;
        if (slot != NULL && sj->job != NULL) {
            if (now - slot->slot_ms > sj->job->starting_deadline_ms) {
                sj->pending = slot->next;
                if (slot->kind == PENDING_RETRY && slot->last_error == CF_ERR_NO_QUORUM)
                    note_outage(sched, sj, slot->slot_ms, OUTAGE_NO_QUORUM);
                else
                    record_unstarted(sched, sj->name, slot->slot_ms, slot->trigger, RUN_MISSED,
                                     pending_label(slot), pending_reason(slot, false));
                free(slot);
            } else if (pending_ready(sj, slot, now_boot)) {
                sj->pending = slot->next;
                push_due(&due, &n, &cap, sj, slot->slot_ms, slot->trigger);
                free(slot);
            }
        }
        if (sj->pending == NULL || sj->job == NULL)
            pending_unlink(sched, sj);
    }
    claim_batch(sched, due, n);
    free(due);
}

/*
 * Milliseconds until some waiting slot needs a look: its retry or turn, or
 * its starting deadline. INT64_MAX when none waits.
 */
static int64_t pending_wait_ms(struct scheduler *sched, int64_t now, int64_t now_boot)
{
    int64_t wait = INT64_MAX;

    for (struct sched_job *sj = sched->pending_jobs; sj != NULL; sj = sj->pending_next) {
        const struct pending_slot *slot = sj->pending;
        int64_t until;

        if (slot == NULL || sj->job == NULL)
            return 0; /* to be unlinked */
        until = slot->slot_ms + sj->job->starting_deadline_ms + 1 - now;
        if (slot->kind != PENDING_QUEUED || sj->in_flight == 0 ||
            sj->job->overlap == JOB_OVERLAP_ALLOW) {
            int64_t turn = slot->retry_at_boot_ms - now_boot;

            if (turn < until)
                until = turn;
        }
        if (until < wait)
            wait = until;
    }
    return wait;
}

/* ---------------------------------------------------------------------- */
/* Completions, leases, triggers                                           */
/* ---------------------------------------------------------------------- */

/* Fills a finished firing's run with the outcome. */
static void complete_run(struct completion *done)
{
    struct firing *firing = done->firing;
    struct run *run = &firing->run;

    run->status = done->status;
    run->attempts = done->attempts;
    run->http_status = done->http_status;
    run->error = done->error;
    run->response_excerpt = done->response_excerpt;
    done->error = NULL;
    done->response_excerpt = NULL;
    /* A firing the engine could not start by its deadline is missed: say why. */
    if (done->reason != NULL) {
        free(run->reason);
        run->reason = done->reason;
        done->reason = NULL;
    }
    run->finished_at_ms = done->finished_at_ms;
    run->duration_ms = run->finished_at_ms - run->started_at_ms;
    run->has_lag = done->has_lag;
    run->lag_ms = done->lag_ms;
    free(run->attempt_log);
    run->attempt_log = done->attempt_log;
    run->attempt_log_count = done->attempt_log_count;
    done->attempt_log = NULL;
    done->attempt_log_count = 0;
    run->lease_lost = atomic_load(&firing->lease_lost);
}

/* Takes a recorded firing out of flight and frees it. */
static void retire_firing(struct scheduler *sched, struct firing *firing)
{
    struct sched_job *sj = firing->sj;
    struct run *run = &firing->run;

    /* Successes are the common case: at info level only what needs a look. */
    if (log_enabled(run->status == RUN_SUCCEEDED ? LOG_DEBUG : LOG_INFO)) {
        char error[512];

        /* The error names the failure (status, timeout, refused address), never the body. */
        log_write(run->status == RUN_SUCCEEDED ? LOG_DEBUG : LOG_INFO, "run finished",
                  "job=%s run=%s status=%s token=%lld attempts=%d http_status=%d error=\"%s\"",
                  sj->name, run->id, run_status_name(run->status), (long long)run->fencing_token,
                  run->attempts, run->http_status, log_quote(run->error, error, sizeof(error)));
    }
    if (firing->prev != NULL)
        firing->prev->next = firing->next;
    else
        sched->in_flight = firing->next;
    if (firing->next != NULL)
        firing->next->prev = firing->prev;
    atomic_fetch_sub(&sched->stat_in_flight, 1);
    sj->in_flight--;
    if (atomic_load(&firing->delivery_ended))
        atomic_fetch_sub(&sj->deliveries_ended, 1);
    if (sj->job == NULL && sj->in_flight == 0)
        free_job_entry(sched, sj);
    run_clear(run);
    free(firing);
}

/*
 * Ends a list of finished deliveries (consumed): releases their leases,
 * records the outcomes in one transaction and retires the firings.
 */
static void finish_firings(struct scheduler *sched, struct completion *list)
{
    const struct run **runs;
    struct coord_claim *claims;
    size_t n = 0;

    for (struct completion *done = list; done != NULL; done = done->next)
        n++;
    if (n == 0)
        return;
    /* One release round for the whole batch. */
    claims = calloc(n, sizeof(*claims));
    n = 0;
    for (struct completion *done = list; done != NULL; done = done->next) {
        if (claims != NULL)
            claims[n++] = done->firing->claim;
        else
            sched->cfg.coord->ops->release(sched->cfg.coord, &done->firing->claim, 1);
    }
    if (claims != NULL)
        sched->cfg.coord->ops->release(sched->cfg.coord, claims, n);
    free(claims);

    runs = calloc(n ? n : 1, sizeof(*runs));
    n = 0;
    for (struct completion *done = list; done != NULL; done = done->next) {
        complete_run(done);
        /* A missed firing counts as a missed slot, not as a firing. */
        if (done->firing->run.status == RUN_MISSED)
            metrics_count_slots(sched->cfg.metrics, RUN_MISSED, METRICS_REASON_LATE, 1);
        else
            metrics_count_firing(sched->cfg.metrics, done->firing->run.status);
        if (runs != NULL)
            runs[n++] = &done->firing->run;
        else
            record_run(sched, &done->firing->run);
    }
    if (runs != NULL)
        record_runs(sched, runs, n);
    free(runs);
    while (list != NULL) {
        struct completion *next = list->next;

        /* complete_run() took error and response_excerpt into the run. */
        retire_firing(sched, list->firing);
        list = next;
    }
}

/* Marks a firing's lease lost: no further attempt starts, the run records it. */
static void lose_lease(struct firing *firing)
{
    atomic_store(&firing->lease_lost, true);
    log_warn("lease lost", "job=%s run=%s token=%lld", firing->sj->name, firing->run.id,
             (long long)firing->run.fencing_token);
}

/* Extends, in one batch, the leases of the firings whose watchdog time has come (lease/3). */
static void extend_leases(struct scheduler *sched, int64_t now_boot)
{
    struct firing **due = NULL;
    struct coord_claim *claims = NULL;
    size_t n = 0, cap = 0;

    for (struct firing *firing = sched->in_flight; firing != NULL; firing = firing->next) {
        if (atomic_load(&firing->lease_lost))
            continue;
        if (now_boot >= firing->claim.valid_until_boot_ms) {
            lose_lease(firing);
            continue;
        }
        if (firing->next_extend_boot_ms > now_boot)
            continue;
        if (n == cap) {
            size_t grown = cap ? cap * 2 : 16;
            struct firing **bigger = realloc(due, grown * sizeof(*bigger));

            if (bigger == NULL)
                break; /* the rest are extended on the next pass */
            due = bigger;
            cap = grown;
        }
        due[n++] = firing;
    }
    if (n > 0)
        claims = calloc(n, sizeof(*claims));
    if (claims != NULL) {
        for (size_t i = 0; i < n; i++)
            claims[i] = due[i]->claim;
        sched->cfg.coord->ops->extend(sched->cfg.coord, claims, n);
        for (size_t i = 0; i < n; i++) {
            struct firing *firing = due[i];

            if (claims[i].result != CF_OK) {
                /*
                 * A round that missed its quorum in time (slow nodes, a loaded
                 * machine) is tried again while the lease lasts: the lease is
                 * lost when it runs out unextended, not at the first miss.
                 */
                firing->next_extend_boot_ms = now_boot + SCHED_EXTEND_RETRY_MS;
                continue;
            }
            firing->claim.valid_until_boot_ms = claims[i].valid_until_boot_ms;
            atomic_store(&firing->valid_until_boot_ms, claims[i].valid_until_boot_ms);
            firing->next_extend_boot_ms = now_boot + firing->claim.lease_ms / 3;
        }
    }
    free(claims);
    free(due);
}

static int64_t next_extend_due(struct scheduler *sched)
{
    int64_t soonest = INT64_MAX;

    for (struct firing *firing = sched->in_flight; firing != NULL; firing = firing->next)
        if (!atomic_load(&firing->lease_lost) && firing->next_extend_boot_ms < soonest)
            soonest = firing->next_extend_boot_ms;
    return soonest;
}

static void answer_trigger(struct scheduler *sched, struct trigger_request *request)
{
    struct sched_job *sj = find_job(sched, request->name);
    struct coord_claim claim;

    request->result = CF_ERR_NOT_FOUND;
    if (sj == NULL || sj->job == NULL)
        return;
    if (sj->job->paused) {
        snprintf(request->reason, request->reason_len, "job is paused");
        request->result = CF_ERR_CONFLICT;
        return;
    }
    if (!db_storage_ok(request->reason, request->reason_len)) {
        request->result = CF_ERR_DB;
        return;
    }
    if (sj->in_flight > 0 && sj->job->overlap != JOB_OVERLAP_ALLOW) {
        snprintf(request->reason, request->reason_len,
                 "a run of this job is in flight and its overlap policy is %s",
                 job_overlap_name(sj->job->overlap));
        request->result = CF_ERR_CONFLICT;
        return;
    }
    if (claim_init(&claim, sj,
                   request->trigger == RUN_TRIGGER_RETRY ? request->slot_ms : cf_wall_ms(),
                   request->trigger) != CF_OK) {
        request->result = CF_ERR_IO;
        return;
    }
    claim.retry_of = request->retry_of;
    claim_round(sched, &claim, 1);
    if (claim.result == CF_ERR_BUSY) {
        snprintf(request->reason, request->reason_len, "another run holds the job's lock");
        request->result = CF_ERR_CONFLICT;
        return;
    }
    request->result = claim.result;
    if (claim.result == CF_ERR_LOST && claim.token != 0)
        record_unsent_claim(sched, &claim, METRICS_REASON_UNCOMMITTED,
                            "the claim could not be committed on a quorum in time");
    if (claim.result != CF_OK)
        return;
    struct firing *firing = prepare_firing(sched, sj, &claim, request->trigger);
    if (firing == NULL) {
        request->result = CF_ERR_NOMEM;
        return;
    }
    if (request->retry_of != NULL) {
        firing->run.retry_of = strdup(request->retry_of);
        if (firing->run.retry_of == NULL) {
            sched->cfg.coord->ops->release(sched->cfg.coord, &firing->claim, 1);
            record_unsent_claim(sched, &firing->claim, METRICS_REASON_CLAIM_FAILED,
                                "not sent: out of memory");
            delivery_request_free(firing->request);
            run_clear(&firing->run);
            free(firing);
            request->result = CF_ERR_NOMEM;
            return;
        }
    }
    if (start_firings(sched, &firing, 1) != CF_OK) {
        snprintf(request->reason, request->reason_len, "the database could not record the run");
        request->result = CF_ERR_DB;
        return;
    }
    /* Copy the run as started for the caller; the run is under way even if that fails. */
    if (run_copy(request->run, &firing->run) != CF_OK)
        request->result = CF_ERR_NOMEM;
}

/* ---------------------------------------------------------------------- */
/* Retention                                                                */
/* ---------------------------------------------------------------------- */

/* Whether the retention thread should stop. */
static bool prune_stopping(struct scheduler *sched)
{
    return atomic_load(&sched->prune_stop);
}

/*
 * One retention pass: runs older than --history-days, then each job's runs
 * beyond --history-per-job, deleted in batches of SCHED_PRUNE_BATCH so that
 * no single statement holds the write lock for long. Runs on the retention
 * thread with its own database handle, so the scheduler never waits for it
 * beyond one batch.
 */
static void prune_history(struct scheduler *sched)
{
    int64_t before = cf_wall_ms() - (int64_t)sched->cfg.history_days * 86400000;
    char **jobs = NULL;
    size_t count = 0;
    int deleted, total = 0;

    do {
        if (db_run_prune(sched->cfg.prune_db, before, SCHED_PRUNE_BATCH, &deleted) != CF_OK)
            return;
        total += deleted;
    } while (deleted == SCHED_PRUNE_BATCH && !prune_stopping(sched));
    /* Only the jobs over their cap: not a pass over the whole catalog each minute. */
    if (db_run_jobs_over(sched->cfg.prune_db, sched->cfg.history_per_job, &jobs, &count) != CF_OK)
        return;
    for (size_t i = 0; i < count; i++) {
        do {
            deleted = 0;
            if (prune_stopping(sched) ||
                db_run_prune_job(sched->cfg.prune_db, jobs[i], sched->cfg.history_per_job,
                                 SCHED_PRUNE_BATCH, &deleted) != CF_OK)
                break;
            total += deleted;
        } while (deleted == SCHED_PRUNE_BATCH);
        free(jobs[i]);
    }
    free(jobs);
    if (total > 0)
        log_info("history pruned", "runs=%d", total);
}

/* The retention thread: a first pass soon after start, then one a minute. */
static void *prune_main(void *arg)
{
    struct scheduler *sched = arg;
    int64_t wait_ms = SCHED_PRUNE_FIRST_MS;

    pthread_mutex_lock(&sched->prune_lock);
    while (!prune_stopping(sched)) {
        struct timespec ts;

        cf_monotonic_deadline(wait_ms, &ts);
        if (pthread_cond_timedwait(&sched->prune_wake, &sched->prune_lock, &ts) == 0)
            continue; /* woken: stopping is checked by the loop */
        pthread_mutex_unlock(&sched->prune_lock);
        prune_history(sched);
        pthread_mutex_lock(&sched->prune_lock);
        wait_ms = SCHED_PRUNE_INTERVAL_MS;
    }
    pthread_mutex_unlock(&sched->prune_lock);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* The thread                                                               */
/* ---------------------------------------------------------------------- */

/* Waits on the inbox until deadline_boot_ms or a message; the inbox lock is held. */
static void wait_inbox(struct scheduler *sched, int64_t wait_ms)
{
    struct timespec ts;

    if (wait_ms <= 0)
        return;
    cf_monotonic_deadline(wait_ms, &ts);
    pthread_cond_timedwait(&sched->wake, &sched->inbox_lock, &ts);
}

/* Milliseconds until the scheduler next has something to do, at most SCHED_MAX_SLEEP_MS. */
static int64_t sleep_budget(struct scheduler *sched, int64_t now, int64_t now_boot)
{
    int64_t wait = SCHED_MAX_SLEEP_MS, extend = next_extend_due(sched);

    if (sched->heap_len > 0 && sched->heap[0]->next_ms - now < wait)
        wait = sched->heap[0]->next_ms - now;
    if (extend != INT64_MAX && extend - now_boot < wait)
        wait = extend - now_boot;
    if (sched->pending_jobs != NULL) {
        int64_t pending = pending_wait_ms(sched, now, now_boot);

        if (pending < wait)
            wait = pending;
    }
    return wait;
}

/* Answers trigger requests that arrived after the stop. */
static void refuse_triggers(struct scheduler *sched, struct trigger_request *triggers)
{
    pthread_mutex_lock(&sched->inbox_lock);
    for (struct trigger_request *t = triggers; t != NULL; t = t->next) {
        t->result = CF_ERR_SHUTDOWN;
        t->done = true;
    }
    pthread_cond_broadcast(&sched->replied);
    pthread_mutex_unlock(&sched->inbox_lock);
}

/*
 * The scheduler thread's last task, after the stop: nothing new is claimed,
 * and the firings in flight run to their end. The engine starts no further
 * attempt and cuts the transfers still going at the grace deadline; each
 * firing that ends is recorded and its lease released, and the leases of
 * the others are extended meanwhile, so that no peer takes over a job that
 * is still being delivered.
 */
static void drain_firings(struct scheduler *sched)
{
    int64_t started_boot = cf_boot_ms();
    size_t waiting = 0;

    for (struct firing *firing = sched->in_flight; firing != NULL; firing = firing->next)
        waiting++;
    if (waiting > 0)
        log_info("waiting for deliveries in flight", "count=%zu grace_ms=%lld", waiting,
                 (long long)sched->grace_ms);
    delivery_engine_drain(sched->engine, sched->grace_ms);
    for (;;) {
        struct completion *completions;
        struct trigger_request *triggers;
        int64_t wait;

        pthread_mutex_lock(&sched->inbox_lock);
        completions = sched->completions;
        triggers = sched->triggers;
        sched->completions = NULL;
        sched->triggers = NULL;
        pthread_mutex_unlock(&sched->inbox_lock);

        refuse_triggers(sched, triggers);
        finish_firings(sched, completions);
        if (sched->in_flight == NULL)
            break;
        extend_leases(sched, cf_boot_ms());

        wait = next_extend_due(sched) - cf_boot_ms();
        pthread_mutex_lock(&sched->inbox_lock);
        if (sched->completions == NULL && sched->triggers == NULL)
            wait_inbox(sched, wait < SCHED_MAX_SLEEP_MS ? wait : SCHED_MAX_SLEEP_MS);
        pthread_mutex_unlock(&sched->inbox_lock);
    }
    if (waiting > 0)
        log_info("deliveries in flight finished", "count=%zu elapsed_ms=%lld", waiting,
                 (long long)(cf_boot_ms() - started_boot));
}

/*
 * Records this instance's runs left "running" by a crash as lost, through
 * the normal path so that peers learn of it too.
 */
static int mark_own_runs_lost(struct scheduler *sched)
{
    struct run *runs = NULL;
    const struct run **pointers;
    size_t count = 0;
    int64_t now = cf_wall_ms();
    int ret = db_run_running(sched->cfg.db, sched->cfg.instance_id, 100000, &runs, &count);

    if (ret != CF_OK || count == 0) {
        free(runs);
        return ret;
    }
    pointers = calloc(count, sizeof(*pointers));
    for (size_t i = 0; i < count; i++) {
        free(runs[i].reason);
        runs[i].reason = strdup("instance stopped during the run");
        runs[i].status = RUN_LOST;
        runs[i].finished_at_ms = now;
        metrics_count_firing(sched->cfg.metrics, RUN_LOST);
        if (pointers != NULL)
            pointers[i] = &runs[i];
    }
    if (pointers != NULL)
        record_runs(sched, pointers, count);
    else
        ret = CF_ERR_NOMEM;
    log_warn("runs lost in a previous crash", "count=%zu", count);
    for (size_t i = 0; i < count; i++)
        run_clear(&runs[i]);
    free(runs);
    free(pointers);
    return ret;
}

/*
 * Schedules every live job. The catalog, the last recorded slots and the
 * committed slots are each read in one batch (three passes over the
 * database however many jobs there are), so a large catalog starts in
 * about a second.
 */
static int load_all(struct scheduler *sched)
{
    struct job **jobs = NULL;
    const char **names = NULL;
    int64_t *fired = NULL, *recorded = NULL, now;
    size_t count = 0;
    int ret;

    ret = mark_own_runs_lost(sched);
    if (ret != CF_OK)
        return ret;
    ret = db_job_all(sched->cfg.db, &jobs, &count);
    if (ret != CF_OK)
        return ret;
    names = calloc(count ? count : 1, sizeof(*names));
    fired = calloc(count ? count : 1, sizeof(*fired));
    recorded = calloc(count ? count : 1, sizeof(*recorded));
    if (names == NULL || fired == NULL || recorded == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < count; i++)
        names[i] = jobs[i]->name;
    if (count > 0 &&
        sched->cfg.coord->ops->fired_until(sched->cfg.coord, names, count, fired) != CF_OK)
        log_warn("committed slots not readable at start, resuming from local history", "jobs=%zu",
                 count);
    if (count > 0 && db_run_last_slots(sched->cfg.db, names, count, recorded) != CF_OK)
        log_warn("recorded slots not readable at start, resuming from committed slots", "jobs=%zu",
                 count);
    now = cf_wall_ms();
    for (size_t i = 0; i < count; i++) {
        start_job(sched, jobs[i], recorded[i], fired[i], now);
        jobs[i] = NULL;
    }
    log_info("jobs loaded", "count=%zu", count);
out:
    for (size_t i = 0; i < count; i++)
        job_free(jobs[i]);
    free(jobs);
    free(names);
    free(fired);
    free(recorded);
    return ret;
}

/*
 * Loads the catalog on the scheduler thread, before its first pass. A
 * database that refuses (unreadable, out of memory) is tried again each
 * second: load_all() fails only before it schedules anything. Gives up
 * when the scheduler stops first.
 */
static void load_catalog(struct scheduler *sched)
{
    bool told = false;
    int ret;

    while ((ret = load_all(sched)) != CF_OK) {
        if (!told)
            log_error("catalog not loaded, trying again each second", "error=\"%s\"",
                      cf_err_str(ret));
        told = true;
        pthread_mutex_lock(&sched->inbox_lock);
        if (!sched->stopping)
            wait_inbox(sched, SCHED_LOAD_RETRY_MS);
        if (sched->stopping) {
            pthread_mutex_unlock(&sched->inbox_lock);
            return;
        }
        pthread_mutex_unlock(&sched->inbox_lock);
    }
    pthread_mutex_lock(&sched->inbox_lock);
    sched->loaded = true;
    pthread_mutex_unlock(&sched->inbox_lock);
}

static void *scheduler_main(void *arg)
{
    struct scheduler *sched = arg;

    load_catalog(sched);
    pthread_mutex_lock(&sched->inbox_lock);
    for (;;) {
        struct changed_name *changed;
        struct trigger_request *triggers;
        struct completion *completions;
        int64_t now = cf_wall_ms(), now_boot = cf_boot_ms();
        bool stopping = sched->stopping;

        if (!stopping && sched->changed == NULL && sched->triggers == NULL &&
            sched->completions == NULL) {
            wait_inbox(sched, sleep_budget(sched, now, now_boot));
            now = cf_wall_ms();
            now_boot = cf_boot_ms();
        }
        stopping = sched->stopping;
        changed = sched->changed;
        triggers = sched->triggers;
        completions = sched->completions;
        sched->changed = NULL;
        sched->triggers = NULL;
        sched->completions = NULL;
        pthread_mutex_unlock(&sched->inbox_lock);

        finish_firings(sched, completions);
        while (changed != NULL) {
            struct changed_name *next = changed->next;

            reload_job(sched, changed->name);
            free(changed);
            changed = next;
        }
        if (stopping) {
            refuse_triggers(sched, triggers);
            drain_firings(sched);
            record_all_outages(sched);
            tend_storage(sched, cf_boot_ms());
            if (sched->unrecorded_count > 0)
                log_warn("run states not recorded at stop: the database takes no writes",
                         "count=%zu", sched->unrecorded_count);
            return NULL;
        }
        if (triggers != NULL) {
            struct trigger_request *t;

            for (t = triggers; t != NULL; t = t->next)
                answer_trigger(sched, t);
            pthread_mutex_lock(&sched->inbox_lock);
            for (t = triggers; t != NULL; t = t->next)
                t->done = true;
            pthread_cond_broadcast(&sched->replied);
            pthread_mutex_unlock(&sched->inbox_lock);
        }
        tend_storage(sched, now_boot);
        fire_due(sched, now, now_boot);
        start_pending(sched, now, now_boot);
        extend_leases(sched, now_boot);
        pthread_mutex_lock(&sched->inbox_lock);
    }
    pthread_mutex_unlock(&sched->inbox_lock);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Public API                                                               */
/* ---------------------------------------------------------------------- */

int scheduler_start(const struct scheduler_config *cfg, struct scheduler **out)
{
    struct scheduler *sched = calloc(1, sizeof(*sched));
    struct delivery_config dcfg = {0};
    int ret;

    *out = NULL;
    if (sched == NULL)
        return CF_ERR_NOMEM;
    sched->cfg = *cfg;
    sched->rng = (uint64_t)cf_boot_ms() * 0x9e3779b97f4a7c15ull | 1;
    pthread_mutex_init(&sched->inbox_lock, NULL);
    cf_monotonic_cond_init(&sched->wake);
    cf_monotonic_cond_init(&sched->prune_wake);
    pthread_cond_init(&sched->replied, NULL);
    pthread_mutex_init(&sched->prune_lock, NULL);

    dcfg.instance_id = cfg->instance_id;
    dcfg.default_secret = cfg->default_secret;
    dcfg.secrets = cfg->secrets;
    dcfg.allow = cfg->allow;
    dcfg.may_retry = firing_may_retry;
    dcfg.done = firing_done;
    dcfg.ctx = sched;
    dcfg.metrics = cfg->metrics;
    ret = delivery_engine_start(&dcfg, &sched->engine);
    if (ret != CF_OK)
        goto out_free;
    if (pthread_create(&sched->thread, NULL, scheduler_main, sched) != 0) {
        delivery_engine_stop(sched->engine, 0);
        ret = CF_ERR_NOMEM;
        goto out_free;
    }
    if (pthread_create(&sched->prune_thread, NULL, prune_main, sched) != 0) {
        /* Retention is not worth failing the start for; say so loudly. */
        log_error("history retention not running", "error=\"%s\"", "cannot start thread");
        sched->prune_thread_started = false;
    } else {
        sched->prune_thread_started = true;
    }
    *out = sched;
    return CF_OK;

out_free:
    for (size_t b = 0; b < JOB_BUCKETS; b++)
        while (sched->buckets[b] != NULL)
            free_job_entry(sched, sched->buckets[b]);
    for (size_t i = 0; i < sched->unrecorded_count; i++)
        run_clear(&sched->unrecorded[i]);
    free(sched->unrecorded);
    free(sched->heap);
    pthread_mutex_destroy(&sched->inbox_lock);
    pthread_mutex_destroy(&sched->prune_lock);
    pthread_cond_destroy(&sched->wake);
    pthread_cond_destroy(&sched->prune_wake);
    pthread_cond_destroy(&sched->replied);
    free(sched);
    return ret;
}

void scheduler_stop(struct scheduler *sched, int64_t grace_ms)
{
    struct completion *completions;

    if (sched == NULL || atomic_load(&sched->stopped))
        return;
    pthread_mutex_lock(&sched->inbox_lock);
    sched->stopping = true;
    sched->grace_ms = grace_ms > 0 ? grace_ms : 0;
    pthread_cond_signal(&sched->wake);
    pthread_mutex_unlock(&sched->inbox_lock);
    pthread_join(sched->thread, NULL);
    pthread_mutex_lock(&sched->prune_lock);
    atomic_store(&sched->prune_stop, true);
    pthread_cond_signal(&sched->prune_wake);
    pthread_mutex_unlock(&sched->prune_lock);
    if (sched->prune_thread_started)
        pthread_join(sched->prune_thread, NULL);

    /* The thread drained the engine; whatever it still reports is recorded here. */
    delivery_engine_stop(sched->engine, 0);
    sched->engine = NULL;
    pthread_mutex_lock(&sched->inbox_lock);
    completions = sched->completions;
    sched->completions = NULL;
    pthread_mutex_unlock(&sched->inbox_lock);
    finish_firings(sched, completions);
    atomic_store(&sched->stopped, true);
}

bool scheduler_stopping(struct scheduler *sched)
{
    bool stopping;

    pthread_mutex_lock(&sched->inbox_lock);
    stopping = sched->stopping;
    pthread_mutex_unlock(&sched->inbox_lock);
    return stopping;
}

const char *scheduler_not_ready(struct scheduler *sched)
{
    const char *why = NULL;

    pthread_mutex_lock(&sched->inbox_lock);
    if (sched->stopping)
        why = "stopping";
    else if (!sched->loaded)
        why = "loading the catalog";
    pthread_mutex_unlock(&sched->inbox_lock);
    return why;
}

void scheduler_free(struct scheduler *sched)
{
    if (sched == NULL)
        return;
    scheduler_stop(sched, 0);
    while (sched->changed != NULL) {
        struct changed_name *next = sched->changed->next;

        free(sched->changed);
        sched->changed = next;
    }
    for (size_t b = 0; b < JOB_BUCKETS; b++)
        while (sched->buckets[b] != NULL)
            free_job_entry(sched, sched->buckets[b]);
    for (size_t i = 0; i < sched->unrecorded_count; i++)
        run_clear(&sched->unrecorded[i]);
    free(sched->unrecorded);
    free(sched->heap);
    pthread_mutex_destroy(&sched->inbox_lock);
    pthread_mutex_destroy(&sched->prune_lock);
    pthread_cond_destroy(&sched->wake);
    pthread_cond_destroy(&sched->prune_wake);
    pthread_cond_destroy(&sched->replied);
    free(sched);
}

void scheduler_job_changed(struct scheduler *sched, const char *name)
{
    struct changed_name *changed = calloc(1, sizeof(*changed));

    if (changed == NULL) {
        log_error("job change not applied", "job=%s error=\"out of memory\"", name);
        return;
    }
    snprintf(changed->name, sizeof(changed->name), "%s", name);
    pthread_mutex_lock(&sched->inbox_lock);
    changed->next = sched->changed;
    sched->changed = changed;
    pthread_cond_signal(&sched->wake);
    pthread_mutex_unlock(&sched->inbox_lock);
}

/* Hands request to the scheduler thread and waits for its answer (scheduler_trigger). */
static int trigger_wait(struct scheduler *sched, struct trigger_request *req)
{
    struct trigger_request request = *req;
    int64_t deadline = cf_boot_ms() + SCHED_TRIGGER_WAIT_MS;

    memset(request.run, 0, sizeof(*request.run));
    request.result = CF_ERR_TIMEOUT;
    pthread_mutex_lock(&sched->inbox_lock);
    if (sched->stopping) {
        pthread_mutex_unlock(&sched->inbox_lock);
        return CF_ERR_SHUTDOWN;
    }
    request.next = sched->triggers;
    sched->triggers = &request;
    pthread_cond_signal(&sched->wake);
    while (!request.done && cf_boot_ms() < deadline) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&sched->replied, &sched->inbox_lock, &ts);
    }
    if (!request.done) {
        /* Still queued: take it back out so the scheduler never touches it. */
        struct trigger_request **link = &sched->triggers;

        while (*link != NULL && *link != &request)
            link = &(*link)->next;
        if (*link == &request) {
            *link = request.next;
        } else {
            /* Being answered right now: wait for the answer, it cannot take long. */
            while (!request.done)
                pthread_cond_wait(&sched->replied, &sched->inbox_lock);
        }
    }
    pthread_mutex_unlock(&sched->inbox_lock);
    return request.result;
}

int scheduler_trigger(struct scheduler *sched, const char *name, struct run *run, char *reason,
                      size_t reason_len)
{
    struct trigger_request request = {0};

    request.name = name;
    request.trigger = RUN_TRIGGER_MANUAL;
    request.run = run;
    request.reason = reason;
    request.reason_len = reason_len;
    return trigger_wait(sched, &request);
}

int scheduler_retry(struct scheduler *sched, const struct run *old, struct run *run, char *reason,
                    size_t reason_len)
{
    struct trigger_request request = {0};

    memset(run, 0, sizeof(*run));
    if ((old->trigger != RUN_TRIGGER_SCHEDULE && old->trigger != RUN_TRIGGER_CATCHUP) ||
        old->scheduled_at_ms == 0 ||
        (old->status != RUN_FAILED && old->status != RUN_FENCED && old->status != RUN_MISSED &&
         old->status != RUN_LOST)) {
        snprintf(reason, reason_len,
                 "only a scheduled run that ended failed, fenced, missed or lost can be retried;"
                 " this one is a %s run, %s",
                 run_trigger_name(old->trigger), run_status_name(old->status));
        return CF_ERR_CONFLICT;
    }
    request.name = old->job;
    request.trigger = RUN_TRIGGER_RETRY;
    request.slot_ms = old->scheduled_at_ms;
    request.retry_of = old->id;
    request.run = run;
    request.reason = reason;
    request.reason_len = reason_len;
    return trigger_wait(sched, &request);
}

void scheduler_get_stats(struct scheduler *sched, struct scheduler_stats *stats)
{
    stats->in_flight = atomic_load(&sched->stat_in_flight);
    stats->jobs = atomic_load(&sched->stat_jobs);
}
