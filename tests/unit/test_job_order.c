/*
 * test_job_order.c - GET /jobs?sort=: the sort names and cursors, the
 * failure count and last error the history's triggers keep (cases in
 * tests/data/runs/job_stats.txt), and the sorted listing walking its pages
 * through a real SQLite database migrated like an instance's.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "data_text.h"
#include "db.h"
#include "job.h"
#include "job_order.h"
#include "log.h"
#include "run.h"

Test(job_order, sort_names)
{
    static const struct {
        const char *text;
        int ret;
        bool by_name;
        enum db_job_sort key;
        bool descending;
    } cases[] = {
        {NULL, CF_OK, true, 0, false},
        {"name", CF_OK, true, 0, false},
        {"next", CF_OK, false, DB_JOB_SORT_NEXT, false},
        {"-next", CF_OK, false, DB_JOB_SORT_NEXT, true},
        {"last_run", CF_OK, false, DB_JOB_SORT_LAST_RUN, false},
        {"-failures", CF_OK, false, DB_JOB_SORT_FAILURES, true},
        {"-name", CF_ERR_INVALID, true, 0, false},
        {"", CF_ERR_INVALID, true, 0, false},
        {"-", CF_ERR_INVALID, true, 0, false},
        {"Next", CF_ERR_INVALID, true, 0, false},
        {"next ", CF_ERR_INVALID, true, 0, false},
        {"--next", CF_ERR_INVALID, true, 0, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct job_order order;
        int ret = job_order_parse(cases[i].text, &order);

        cr_expect_eq(ret, cases[i].ret, "%s", cases[i].text ? cases[i].text : "(null)");
        if (ret != CF_OK)
            continue;
        cr_expect_eq(order.by_name, cases[i].by_name, "%s", cases[i].text);
        if (!order.by_name) {
            cr_expect_eq(order.key, cases[i].key, "%s", cases[i].text);
            cr_expect_eq(order.descending, cases[i].descending, "%s", cases[i].text);
        }
    }
}

Test(job_order, cursors)
{
    static const struct {
        const char *text;
        bool ok;
        long long key;
        const char *name;
    } cases[] = {
        {"1795248000000:nightly", true, 1795248000000LL, "nightly"},
        {"-1:a", true, -1, "a"},
        {"0:x.y-z_1", true, 0, "x.y-z_1"},
        {"253402300800000:last", true, 253402300800000LL, "last"},
        {"nightly", false, 0, NULL},
        {":nightly", false, 0, NULL},
        {"12:", false, 0, NULL},
        {"12x:a", false, 0, NULL},
        {"99999999999999999999:a", false, 0, NULL},
    };
    char out[64];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t key = 0;
        const char *name = NULL;

        cr_expect_eq(job_order_cursor_parse(cases[i].text, &key, &name) == CF_OK, cases[i].ok, "%s",
                     cases[i].text);
        if (!cases[i].ok)
            continue;
        cr_expect_eq(key, cases[i].key, "%s", cases[i].text);
        cr_expect_str_eq(name, cases[i].name, "%s", cases[i].text);
        cr_expect_str_eq(job_order_cursor_format(key, name, out, sizeof(out)), cases[i].text);
    }
    cr_expect_null(job_order_cursor_format(1, "a-name-too-long-for-four", out, 8));
}

static struct db *fresh_db(void)
{
    struct db *db = NULL;
    char err[256];

    log_setup(LOG_WARN, false);
    cr_assert_eq(db_open(":memory:", &db, err, sizeof(err)), CF_OK, "%s", err);
    cr_assert_eq(db_migrate(db, err, sizeof(err)), CF_OK, "%s", err);
    return db;
}

static void store_job(struct db *db, const char *name, const char *schedule, bool paused)
{
    json_t *doc = json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", name, "schedule", schedule,
                            "paused", paused, "webhook", "url", "http://127.0.0.1:9/hook");
    json_t *errors = json_array();
    struct job *job = NULL;

    cr_assert_eq(job_from_json(doc, &(struct job_limits){0}, false, &job, errors), CF_OK, "%s",
                 name);
    cr_assert_eq(db_job_store(db, name, job, 1, 0), CF_OK);
    job_free(job);
    json_decref(doc);
    json_decref(errors);
}

static void write_run(struct db *db, const char *job, const char *id, long long slot_ms,
                      const char *status, const char *error, const char *reason)
{
    struct run run = {0};
    int parsed = run_status_parse(status);

    cr_assert_geq(parsed, 0, "unknown status %s", status);
    snprintf(run.id, sizeof(run.id), "%s", id);
    run.job = (char *)job;
    run.trigger = RUN_TRIGGER_SCHEDULE;
    run.scheduled_at_ms = slot_ms;
    run.started_at_ms = slot_ms;
    run.status = (enum run_status)parsed;
    run.error = (char *)error;
    run.reason = (char *)reason;
    cr_assert_eq(db_run_upsert(db, &run), CF_OK);
}

Test(job_order, failures_and_last_error_follow_the_history)
{
    FILE *file = fopen(CF_TEST_DATA "/runs/job_stats.txt", "r");
    struct db *db = fresh_db();
    char line[512];
    int number = 0, checked = 0;

    cr_assert_not_null(file, "cannot open runs/job_stats.txt");
    store_job(db, "j", "0 0 1 1 *", false);
    while (fgets(line, sizeof(line), file) != NULL) {
        char *fields[7], *rest = line;
        struct db_job_stats stats;

        number++;
        if (line[0] == '#' || data_trim(line)[0] == '\0')
            continue;
        for (size_t i = 0; i < 7; i++) {
            char *bar = strchr(rest, '|');

            cr_assert(i == 6 || bar != NULL, "line %d: 7 fields expected", number);
            if (bar != NULL)
                *bar = '\0';
            fields[i] = data_trim(rest);
            rest = bar != NULL ? bar + 1 : rest + strlen(rest);
        }
        write_run(db, "j", fields[0], atoll(fields[1]), fields[2],
                  strcmp(fields[3], "-") ? fields[3] : NULL,
                  strcmp(fields[4], "-") ? fields[4] : NULL);
        cr_assert_eq(db_job_stats_get(db, "j", &stats), CF_OK);
        cr_expect_eq(stats.consecutive_failures, atoll(fields[5]), "line %d", number);
        if (strcmp(fields[6], "-") == 0)
            cr_expect_null(stats.last_error, "line %d: %s", number, stats.last_error);
        else
            cr_expect_str_eq(stats.last_error ? stats.last_error : "(null)", fields[6], "line %d",
                             number);
        free(stats.last_error);
        checked++;
    }
    fclose(file);
    cr_expect_gt(checked, 5);
    db_close(db);
}

/* Every page of a sorted listing, limit jobs at a time, names joined by spaces. */
static void walk(struct db *db, enum db_job_sort sort, bool descending, int limit, char *out,
                 size_t out_len)
{
    struct db_job_query query = {.paused = -1, .limit = limit};
    char after[128] = "";
    int64_t after_key = 0;
    bool more = true;

    out[0] = '\0';
    while (more) {
        struct job **jobs = NULL;
        size_t count = 0;
        int64_t last_key = 0;

        query.after = after[0] ? after : NULL;
        cr_assert_eq(db_job_list_sorted(db, &query, sort, descending, after_key, &jobs, &count,
                                        &more, &last_key),
                     CF_OK);
        cr_assert_leq(count, (size_t)limit);
        for (size_t i = 0; i < count; i++) {
            snprintf(out + strlen(out), out_len - strlen(out), "%s%s", out[0] ? " " : "",
                     jobs[i]->name);
            if (i == count - 1)
                snprintf(after, sizeof(after), "%s", jobs[i]->name);
            job_free(jobs[i]);
        }
        free(jobs);
        after_key = last_key;
        cr_assert(count > 0 || !more);
    }
}

Test(job_order, sorted_pages)
{
    struct db *db = fresh_db();
    char names[256];

    store_job(db, "a", "0 0 1 1 *", false);
    store_job(db, "b", "0 0 * * *", false);
    store_job(db, "c", "0 * * * *", true);
    store_job(db, "d", "0 0 1 1 *", false);
    write_run(db, "a", "a@1", 1000, "failed", "x", NULL);
    write_run(db, "a", "a@2", 2000, "failed", "y", NULL);
    write_run(db, "b", "b@1", 3000, "failed", "z", NULL);
    write_run(db, "d", "d@1", 500, "succeeded", NULL, NULL);

    walk(db, DB_JOB_SORT_FAILURES, true, 1, names, sizeof(names));
    cr_expect_str_eq(names, "a b d c");
    walk(db, DB_JOB_SORT_FAILURES, false, 3, names, sizeof(names));
    cr_expect_str_eq(names, "c d b a");
    walk(db, DB_JOB_SORT_LAST_RUN, true, 2, names, sizeof(names));
    cr_expect_str_eq(names, "b a d c");

    /* Next instants are computed for the stale rows (all, once written); paused goes last. */
    cr_assert_eq(job_order_refresh_next(db, 1795248000000LL), CF_OK);
    walk(db, DB_JOB_SORT_NEXT, false, 1, names, sizeof(names));
    cr_expect_str_eq(names, "b a d c");
    walk(db, DB_JOB_SORT_NEXT, true, 4, names, sizeof(names));
    cr_expect_str_eq(names, "c d a b");
    db_close(db);
}
