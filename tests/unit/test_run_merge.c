/*
 * test_run_merge.c - the merge of a run's records (DESIGN §4.7): the order
 * run_merge_compare() defines, and the database's upsert keeping the
 * greatest record whatever order records arrive in, so that every instance
 * converges to the same one.
 *
 * The records are data: tests/data/runs/merge.txt lists them in increasing
 * merge order. Every pair is checked both ways, in C and through a real
 * SQLite database (in memory, migrated like an instance's).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "data_text.h"
#include "db.h"
#include "log.h"
#include "run.h"

#define MAX_RECORDS 64
#define RUN_ID "job@1795248000000"

static struct run records[MAX_RECORDS];
static size_t record_count;

/* A field of a data line, trimmed, "-" as NULL (new string or NULL). */
static char *field_text(const char *text)
{
    return strcmp(text, "-") == 0 ? NULL : strdup(text);
}

static void load_records(void)
{
    FILE *file = fopen(CF_TEST_DATA "/runs/merge.txt", "r");
    char line[1024];

    log_setup(LOG_WARN, false); /* no line per migration of each fresh database */
    cr_assert_not_null(file, "cannot open runs/merge.txt");
    record_count = 0;
    while (fgets(line, sizeof(line), file) != NULL) {
        char *fields[8], *rest = line;
        struct run *run;
        int status;

        if (line[0] == '#' || data_trim(line)[0] == '\0')
            continue;
        for (size_t i = 0; i < 8; i++) {
            char *bar = strchr(rest, '|');

            cr_assert(i == 7 || bar != NULL, "line %zu: 8 fields expected", record_count + 1);
            if (bar != NULL)
                *bar = '\0';
            fields[i] = data_trim(rest);
            rest = bar != NULL ? bar + 1 : rest + strlen(rest);
        }
        cr_assert_lt(record_count, MAX_RECORDS);
        run = &records[record_count++];
        memset(run, 0, sizeof(*run));
        snprintf(run->id, sizeof(run->id), RUN_ID);
        run->job = strdup("job");
        run->trigger = RUN_TRIGGER_SCHEDULE;
        run->scheduled_at_ms = 1795248000000LL;
        status = run_status_parse(fields[0]);
        cr_assert_geq(status, 0, "unknown status %s", fields[0]);
        run->status = (enum run_status)status;
        run->fencing_token = strtoll(fields[1], NULL, 10);
        run->attempts = atoi(fields[2]);
        run->finished_at_ms = strtoll(fields[3], NULL, 10);
        run->started_at_ms = strtoll(fields[4], NULL, 10);
        run->instance = field_text(fields[5]);
        run->reason = field_text(fields[6]);
        run->error = field_text(fields[7]);
    }
    fclose(file);
    cr_assert_gt(record_count, 10, "too few records in runs/merge.txt");
}

static void free_records(void)
{
    for (size_t i = 0; i < record_count; i++)
        run_clear(&records[i]);
    record_count = 0;
}

TestSuite(run_merge, .init = load_records, .fini = free_records);

static int sign(int value)
{
    return (value > 0) - (value < 0);
}

Test(run_merge, order_is_the_listed_one)
{
    for (size_t i = 0; i < record_count; i++)
        for (size_t j = 0; j < record_count; j++)
            cr_expect_eq(sign(run_merge_compare(&records[i], &records[j])), (i > j) - (i < j),
                         "records %zu and %zu: compare gives %d", i + 1, j + 1,
                         run_merge_compare(&records[i], &records[j]));
}

/* A fresh, migrated database in memory. */
static struct db *fresh_db(void)
{
    struct db *db = NULL;
    char err[256];

    cr_assert_eq(db_open(":memory:", &db, err, sizeof(err)), CF_OK, "%s", err);
    cr_assert_eq(db_migrate(db, err, sizeof(err)), CF_OK, "%s", err);
    return db;
}

/* The stored record equals records[want] in every merged field. */
static void expect_stored(struct db *db, size_t want, const char *how)
{
    struct run stored;

    cr_assert_eq(db_run_get(db, RUN_ID, &stored), CF_OK);
    cr_expect_eq(run_merge_compare(&stored, &records[want]), 0,
                 "%s: stored %s token %lld attempts %d, want record %zu (%s token %lld)", how,
                 run_status_name(stored.status), (long long)stored.fencing_token, stored.attempts,
                 want + 1, run_status_name(records[want].status),
                 (long long)records[want].fencing_token);
    run_clear(&stored);
}

Test(run_merge, database_keeps_the_greater_of_every_pair_in_either_order)
{
    for (size_t i = 0; i < record_count; i++) {
        for (size_t j = 0; j < record_count; j++) {
            struct db *db = fresh_db();
            char how[64];

            cr_assert_eq(db_run_upsert(db, &records[i]), CF_OK);
            cr_assert_eq(db_run_upsert(db, &records[j]), CF_OK);
            snprintf(how, sizeof(how), "record %zu then %zu", i + 1, j + 1);
            expect_stored(db, i > j ? i : j, how);
            db_close(db);
        }
    }
}

Test(run_merge, database_converges_whatever_the_arrival_order)
{
    uint64_t state = 0x9e3779b97f4a7c15ull;

    for (int round = 0; round < 50; round++) {
        size_t order[MAX_RECORDS];
        struct db *db = fresh_db();
        char how[64];

        for (size_t i = 0; i < record_count; i++)
            order[i] = i;
        for (size_t i = record_count - 1; i > 0; i--) {
            size_t k, tmp;

            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            k = (size_t)(state % (i + 1));
            tmp = order[i];
            order[i] = order[k];
            order[k] = tmp;
        }
        /* Some records twice, as a resent feed entry would arrive. */
        for (size_t i = 0; i < record_count; i++)
            cr_assert_eq(db_run_upsert(db, &records[order[i]]), CF_OK);
        for (size_t i = 0; i < record_count; i += 3)
            cr_assert_eq(db_run_upsert(db, &records[order[i]]), CF_OK);
        snprintf(how, sizeof(how), "shuffle %d", round);
        expect_stored(db, record_count - 1, how);
        db_close(db);
    }
}

Test(run_merge, batches_take_the_same_join)
{
    struct db *db = fresh_db();
    const struct run *batch[MAX_RECORDS];

    /* Newest first, in one transaction: the first record must stay. */
    for (size_t i = 0; i < record_count; i++)
        batch[i] = &records[record_count - 1 - i];
    cr_assert_eq(db_run_upsert_many(db, batch, record_count), CF_OK);
    expect_stored(db, record_count - 1, "one batch, newest first");
    db_close(db);
}

Test(run_merge, outbox_queues_only_the_states_the_history_took)
{
    struct db *db = fresh_db();
    const struct run *newest = &records[record_count - 1], *oldest = &records[0];
    struct db_outbox_entry *entries = NULL;
    size_t count = 0;
    int64_t seqs[2];

    cr_assert_eq(db_run_record(db, &newest, 1, true), CF_OK);
    cr_assert_eq(db_run_record(db, &oldest, 1, true), CF_OK); /* loses: not queued */
    cr_assert_eq(db_outbox_peek(db, 10, &entries, &count), CF_OK);
    cr_assert_eq(count, 1);
    cr_expect_not_null(strstr(entries[0].doc, "\"status\":\"succeeded\""), "%s", entries[0].doc);
    seqs[0] = entries[0].seq;
    db_outbox_entries_free(entries, count);

    cr_assert_eq(db_outbox_delete(db, seqs, 1), CF_OK);
    cr_assert_eq(db_outbox_peek(db, 10, &entries, &count), CF_OK);
    cr_expect_eq(count, 0);
    db_outbox_entries_free(entries, count);

    /* Sequence numbers are never reused, so a node's high-water mark stays valid. */
    cr_assert_eq(db_run_record(db, &newest, 1, false), CF_OK);
    records[record_count - 1].attempts++;
    cr_assert_eq(db_run_record(db, &newest, 1, true), CF_OK);
    records[record_count - 1].attempts--;
    cr_assert_eq(db_outbox_peek(db, 10, &entries, &count), CF_OK);
    cr_assert_eq(count, 1);
    seqs[1] = entries[0].seq;
    cr_expect_gt(seqs[1], seqs[0]);
    db_outbox_entries_free(entries, count);
    db_close(db);
}
