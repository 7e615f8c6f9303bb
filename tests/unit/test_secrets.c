/*
 * test_secrets.c - the default signing secret standalone (seeding,
 * rotation, the flag changed or not between starts), which secrets sign a
 * delivery during an overlap, a job's secret history, and what viewers read
 * of a URL. The cases of the last two are data: tests/data/secrets/.
 *
 * The register lives in a real database in a temporary folder, migrated
 * like an instance's.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "db.h"
#include "job.h"
#include "log.h"
#include "redact.h"
#include "signing_secrets.h"

#define HOUR_MS 3600000LL
#define JOB_SECRET "job-secret-now-0123456789"
#define REPLACED_SECRET "job-secret-before-0123456"

static char folder[] = "/tmp/cf-test-secrets-XXXXXX";
static char path[64];

static void setup(void)
{
    log_setup(LOG_WARN, false);
    cr_assert_not_null(mkdtemp(folder));
    snprintf(path, sizeof(path), "%s/secrets.db", folder);
}

static void teardown(void)
{
    char name[96];

    for (const char *suffix = ""; suffix != NULL; suffix = suffix[0] == '\0'             ? "-wal"
                                                           : strcmp(suffix, "-wal") == 0 ? "-shm"
                                                                                         : NULL) {
        snprintf(name, sizeof(name), "%s%s", path, suffix);
        unlink(name);
    }
    rmdir(folder);
}

static struct db *open_db(void)
{
    struct db *db = NULL;
    char err[256] = "";

    cr_assert_eq(db_open(path, &db, err, sizeof(err)), CF_OK, "%s", err);
    cr_assert_eq(db_migrate(db, err, sizeof(err)), CF_OK, "%s", err);
    return db;
}

static struct signing_secrets *start(struct db *db, const char *flag)
{
    struct signing_secrets_config cfg = {.db = db, .flag = flag, .overlap_ms = HOUR_MS};
    struct signing_secrets *ss = NULL;
    char err[256] = "";

    cr_assert_eq(signing_secrets_new(&cfg, &ss, err, sizeof(err)), CF_OK, "%s", err);
    return ss;
}

TestSuite(secrets, .init = setup, .fini = teardown);

Test(secrets, a_generated_secret_is_kept_across_starts)
{
    struct db *db = open_db();
    struct signing_secrets *ss = start(db, NULL);
    struct signing_secret_state first, again;

    signing_secrets_get(ss, &first);
    cr_assert_eq(first.version, 1);
    cr_assert_eq(strlen(first.current), 64);
    cr_assert_str_empty(first.previous);
    signing_secrets_free(ss);
    ss = start(db, NULL);
    signing_secrets_get(ss, &again);
    cr_assert_str_eq(again.current, first.current);
    cr_assert_eq(again.version, 1);
    signing_secrets_free(ss);
    db_close(db);
}

Test(secrets, the_flag_seeds_and_rotates_only_when_changed)
{
    struct db *db = open_db();
    struct signing_secrets *ss = start(db, "flag-secret-one-0123456");
    struct signing_secret_state state, rotated;

    signing_secrets_get(ss, &state);
    cr_assert_str_eq(state.current, "flag-secret-one-0123456");
    /* A rotation through the API survives a restart with the same flag. */
    cr_assert_eq(signing_secrets_rotate(ss, &rotated), CF_OK);
    cr_assert_str_eq(rotated.previous, "flag-secret-one-0123456");
    cr_assert_eq(rotated.version, 2);
    cr_assert_gt(rotated.rotated_at_ms, 0);
    signing_secrets_free(ss);
    ss = start(db, "flag-secret-one-0123456");
    signing_secrets_get(ss, &state);
    cr_assert_str_eq(state.current, rotated.current);
    cr_assert_str_eq(state.previous, "flag-secret-one-0123456");
    signing_secrets_free(ss);
    /* A changed flag is a rotation to it. */
    ss = start(db, "flag-secret-two-0123456");
    signing_secrets_get(ss, &state);
    cr_assert_str_eq(state.current, "flag-secret-two-0123456");
    cr_assert_str_eq(state.previous, rotated.current);
    cr_assert_eq(state.version, 3);
    signing_secrets_free(ss);
    db_close(db);
}

Test(secrets, a_short_flag_is_refused)
{
    struct db *db = open_db();
    struct signing_secrets_config cfg = {.db = db, .flag = "short", .overlap_ms = HOUR_MS};
    struct signing_secrets *ss = NULL;
    char err[256] = "";

    cr_assert_eq(signing_secrets_new(&cfg, &ss, err, sizeof(err)), CF_ERR_INVALID);
    cr_assert_null(ss);
    cr_assert(strstr(err, "--signing-secret") != NULL, "%s", err);
    db_close(db);
}

Test(secrets, a_job_secret_change_is_carried)
{
    struct job before = {.signing_secret = REPLACED_SECRET};
    struct job after = {.signing_secret = JOB_SECRET};
    struct job later = {.signing_secret = JOB_SECRET};

    cr_assert_eq(signing_secrets_carry(NULL, &after, 1000), CF_OK);
    cr_assert_null(after.previous_signing_secret);
    cr_assert_eq(after.signing_secret_changed_at_ms, 0);
    cr_assert_eq(signing_secrets_carry(&before, &after, 5000), CF_OK);
    cr_assert_str_eq(after.previous_signing_secret, REPLACED_SECRET);
    cr_assert_eq(after.signing_secret_changed_at_ms, 5000);
    /* An edit that keeps the secret keeps its history. */
    cr_assert_eq(signing_secrets_carry(&after, &later, 9000), CF_OK);
    cr_assert_str_eq(later.previous_signing_secret, REPLACED_SECRET);
    cr_assert_eq(later.signing_secret_changed_at_ms, 5000);
    /* From the default: no replaced secret, but a change. */
    free(later.previous_signing_secret);
    later.previous_signing_secret = NULL;
    before.signing_secret = NULL;
    cr_assert_eq(signing_secrets_carry(&before, &later, 7000), CF_OK);
    cr_assert_null(later.previous_signing_secret);
    cr_assert_eq(later.signing_secret_changed_at_ms, 7000);
    free(after.previous_signing_secret);
}

/* Splits line at " | " into at most max trimmed fields; returns how many. */
static size_t split(char *line, char **fields, size_t max)
{
    size_t count = 0;
    char *rest = line;

    line[strcspn(line, "\n")] = '\0';
    while (count < max) {
        char *bar = strstr(rest, " | ");
        char *end;

        while (*rest == ' ')
            rest++;
        fields[count++] = rest;
        if (bar == NULL)
            break;
        *bar = '\0';
        end = bar;
        while (end > rest && end[-1] == ' ')
            *--end = '\0';
        rest = bar + 3;
    }
    return count;
}

Test(secrets, the_secrets_that_sign_a_delivery)
{
    struct db *db = open_db();
    struct signing_secrets *ss = start(db, NULL);
    struct signing_secret_state plain, rotated;
    FILE *file = fopen(CF_TEST_DATA "/secrets/for_job.txt", "r");
    char line[512];
    int cases = 0;

    cr_assert_not_null(file, "cannot open secrets/for_job.txt");
    signing_secrets_get(ss, &plain);
    while (fgets(line, sizeof(line), file) != NULL) {
        char *fields[6], want[64] = "", got[64] = "", copy[512];
        char out[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1];
        struct job job = {0};
        struct signing_secret_state state;
        int64_t now;
        size_t count;

        if (line[0] == '#' || line[strspn(line, " \n")] == '\0')
            continue;
        snprintf(copy, sizeof(copy), "%s", line);
        cr_assert_eq(split(line, fields, 6), 6, "bad line: %s", copy);
        if (strcmp(fields[3], "yes") == 0 && plain.previous[0] == '\0') {
            cr_assert_eq(signing_secrets_rotate(ss, &rotated), CF_OK);
            plain = rotated;
        }
        signing_secrets_get(ss, &state);
        job.signing_secret = strcmp(fields[0], "J") == 0 ? JOB_SECRET : NULL;
        job.previous_signing_secret = strcmp(fields[1], "P") == 0 ? REPLACED_SECRET : NULL;
        /* A case without rotation runs before the first rotation, or far past it. */
        now = strcmp(fields[3], "yes") == 0
                  ? state.rotated_at_ms + atoll(fields[4])
                  : cf_wall_ms() + (state.rotated_at_ms ? 100 * HOUR_MS : 0);
        job.signing_secret_changed_at_ms = atoll(fields[2]) > 0 ? now - atoll(fields[2]) : 0;
        count = signing_secrets_for_job(ss, &job, now, out);
        for (size_t i = 0; i < count; i++) {
            const char *name = strcmp(out[i], JOB_SECRET) == 0        ? "J"
                               : strcmp(out[i], REPLACED_SECRET) == 0 ? "P"
                               : strcmp(out[i], state.current) == 0   ? "D"
                               : strcmp(out[i], state.previous) == 0  ? "d"
                                                                      : "?";

            strcat(got, i > 0 ? " " : "");
            strcat(got, name);
        }
        snprintf(want, sizeof(want), "%s", fields[5]);
        cr_expect_str_eq(got, want, "%s", copy);
        cases++;
    }
    fclose(file);
    cr_assert_gt(cases, 10);
    signing_secrets_free(ss);
    db_close(db);
}

Test(secrets, what_a_viewer_reads_of_a_url)
{
    FILE *file = fopen(CF_TEST_DATA "/secrets/redact_urls.txt", "r");
    char line[512];
    int cases = 0;

    cr_assert_not_null(file, "cannot open secrets/redact_urls.txt");
    while (fgets(line, sizeof(line), file) != NULL) {
        char *fields[2], *masked;

        if (line[0] == '#' || line[strspn(line, " \n")] == '\0')
            continue;
        cr_assert_eq(split(line, fields, 2), 2, "bad line: %s", line);
        masked = redact_url(fields[0]);
        cr_expect_str_eq(masked, fields[1], "redact_url(\"%s\")", fields[0]);
        free(masked);
        cases++;
    }
    fclose(file);
    cr_assert_gt(cases, 5);
}

Test(secrets, a_viewer_reads_header_names_only)
{
    json_t *doc =
        json_pack("{s:{s:s, s:{s:s, s:s}}}", "webhook", "url", "https://u:p@example.com/h",
                  "headers", "Authorization", "Bearer x", "X-Team", "");

    cr_assert_eq(redact_job(doc), 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "webhook"), "url")),
                     "https://***@example.com/h");
    cr_assert_str_eq(
        json_string_value(json_object_get(
            json_object_get(json_object_get(doc, "webhook"), "headers"), "Authorization")),
        "***");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(doc, "webhook"), "headers"), "X-Team")),
                     "***");
    json_decref(doc);
}
