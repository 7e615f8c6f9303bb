/*
 * cli_apply.c - `cronfence apply` and `cronfence export`: the job catalog
 * as code.
 *
 * apply reads a file {"jobs": [job documents]} (YAML, or JSON when the
 * name ends in .json), has the server validate every document at once
 * (POST /api/v1/jobs/validate, which also answers each job with its
 * defaults filled in), and only then writes: a job missing from the
 * catalog is created, a job whose normalized form differs from the
 * catalog's is replaced (PUT with If-Match, so a concurrent change is not
 * overwritten), an identical job is left alone (its version stays), and
 * with --prune a job of the catalog missing from the file is deleted.
 * The writes go out APPLY_IN_FLIGHT at a time; after a refused one no
 * further write starts, and the report lists those that were done.
 *
 * signing_secret is write-only, so it cannot be compared: a secret in the
 * file is sent when the job is created or changed for another reason, and
 * when the catalog's job has no secret of its own; a job whose secret is
 * set is not changed for its secret alone, and a file without a secret
 * keeps the job's secret (PUT keeps it). Rotating a secret is done through
 * the API (PATCH /api/v1/jobs/NAME).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "yaml_doc.h"

/* Job files larger than this are refused: 16 MiB. */
#define CLI_MAX_FILE_BYTES ((size_t)16 * 1024 * 1024)
/*
 * How many writes apply keeps in flight. The server commits concurrent
 * catalog writes in one batch under one hold of the catalog lock (DESIGN
 * §4.6), so a large file is written at many times the rate of one request
 * after another; 16 is what one instance serves at once (its HTTP threads).
 */
#define APPLY_IN_FLIGHT 16

/* The fields the API shows that are not part of a job's definition. */
static const char *const read_only_fields[] = {
    "version",  "created_at",         "updated_at",           "next_fire_at",
    "last_run", "signing_secret_set", "schedule_description", NULL,
};

enum apply_action { APPLY_CREATE, APPLY_CHANGE, APPLY_UNCHANGED, APPLY_DELETE };

/* One line of the plan; pointers borrowed from the file and the catalog. */
struct apply_step {
    enum apply_action action;
    const char *name;
    const json_t *file_doc; /* what is sent (create, change) */
    json_t *changed_fields; /* owned: the top-level fields that differ (change) */
    long long version;      /* the catalog's version before; after, once written */
    long long new_version;
    bool written; /* its write was answered 2xx */
};

/*
 * The writes of a plan, taken in order by APPLY_IN_FLIGHT threads. After
 * the first failure no further write starts; those in flight finish.
 */
struct apply_writers {
    const struct cli_options *opts; /* borrowed */
    struct apply_step *steps;       /* borrowed */
    size_t count;
    pthread_mutex_t lock; /* guards next, ret and failed */
    size_t next;          /* the first step not yet started */
    int ret;              /* CLI_EXIT_OK, or the first failure's exit code */
    const char *failed;   /* the job of the first failure (borrowed), NULL when none */
};

/* ---------------------------------------------------------------------- */
/* Reading the file                                                         */
/* ---------------------------------------------------------------------- */

/* Reads path ("-": standard input) whole into a new NUL-terminated buffer. Returns an exit code. */
static int read_whole_file(const char *path, char **out, size_t *len)
{
    FILE *file = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *data = NULL, *grown;
    size_t size = 0, cap = 0, got;

    *out = NULL;
    if (file == NULL) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    do {
        if (cap - size < 65536) {
            cap = cap ? 2 * cap : 65536;
            grown = realloc(data, cap + 1);
            if (grown == NULL) {
                fprintf(stderr, "error: out of memory reading %s\n", path);
                goto fail;
            }
            data = grown;
        }
        got = fread(data + size, 1, cap - size, file);
        size += got;
        if (size > CLI_MAX_FILE_BYTES) {
            fprintf(stderr, "error: %s is larger than 16 MiB\n", path);
            goto fail;
        }
    } while (got > 0);
    if (ferror(file)) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        goto fail;
    }
    if (file != stdin)
        fclose(file);
    data[size] = '\0';
    *out = data;
    *len = size;
    return CLI_EXIT_OK;
fail:
    if (file != stdin)
        fclose(file);
    free(data);
    return CLI_EXIT_USAGE;
}

static bool ends_with(const char *text, const char *suffix)
{
    size_t len = strlen(text), suffix_len = strlen(suffix);

    return len >= suffix_len && strcmp(text + len - suffix_len, suffix) == 0;
}

/* Parses the job file into a new reference *doc. Returns an exit code. */
static int load_job_file(const char *path, json_t **doc)
{
    char *text = NULL, err[256] = "";
    json_error_t jerr;
    size_t len = 0;
    int ret = read_whole_file(path, &text, &len);

    *doc = NULL;
    if (ret != CLI_EXIT_OK)
        return ret;
    if (ends_with(path, ".json")) {
        *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (*doc == NULL)
            snprintf(err, sizeof(err), "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    } else if (yaml_doc_parse(text, len, doc, err, sizeof(err)) != CF_OK) {
        *doc = NULL;
    }
    free(text);
    if (*doc == NULL) {
        fprintf(stderr, "error: %s: %s\n", path, err[0] ? err : "cannot parse");
        return CLI_EXIT_REFUSED;
    }
    if (!json_is_object(*doc) || !json_is_array(json_object_get(*doc, "jobs"))) {
        fprintf(stderr, "error: %s: expected a top-level \"jobs:\" list of job documents\n", path);
        json_decref(*doc);
        *doc = NULL;
        return CLI_EXIT_REFUSED;
    }
    return CLI_EXIT_OK;
}

/* ---------------------------------------------------------------------- */
/* Planning                                                                 */
/* ---------------------------------------------------------------------- */

static long long version_of(const json_t *job)
{
    return (long long)json_integer_value(json_object_get(job, "version"));
}

/*
 * The top-level fields in which wanted (the server's normalized form of
 * the file's job) differs from current (the catalog's job), as a new
 * array; "signing_secret" when the file has a secret and the job has none.
 */
static json_t *changed_fields(const json_t *wanted, const json_t *file_doc, const json_t *current)
{
    json_t *fields = json_array();
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)wanted, key, value)
    {
        if (strcmp(key, "signing_secret_set") == 0)
            continue;
        if (!json_equal(value, json_object_get(current, key)))
            json_array_append_new(fields, json_string(key));
    }
    if (json_is_string(json_object_get(file_doc, "signing_secret")) &&
        !json_is_true(json_object_get(current, "signing_secret_set")))
        json_array_append_new(fields, json_string("signing_secret"));
    return fields;
}

/* The step of the file's job i: create, change or unchanged. */
static void plan_file_job(struct apply_step *step, const json_t *file_doc, const json_t *wanted,
                          const json_t *catalog)
{
    const json_t *current = json_object_get(catalog, step->name);

    step->file_doc = file_doc;
    if (current == NULL) {
        step->action = APPLY_CREATE;
        return;
    }
    step->version = version_of(current);
    step->new_version = step->version;
    step->changed_fields = changed_fields(wanted, file_doc, current);
    step->action = json_array_size(step->changed_fields) > 0 ? APPLY_CHANGE : APPLY_UNCHANGED;
}

/* ---------------------------------------------------------------------- */
/* Writing and reporting                                                    */
/* ---------------------------------------------------------------------- */

static int run_step(const struct cli_options *opts, struct apply_step *step)
{
    struct cli_response res;
    char path[1024] = "/api/v1/jobs/", if_match[48];
    int ret;

    if (!cli_http_escape(path, sizeof(path), step->name))
        return CLI_EXIT_REFUSED;
    switch (step->action) {
    case APPLY_CREATE:
        ret = cli_call(opts, "POST", "/api/v1/jobs", step->file_doc, NULL, &res);
        break;
    case APPLY_CHANGE:
        snprintf(if_match, sizeof(if_match), "\"%lld\"", step->version);
        ret = cli_call(opts, "PUT", path, step->file_doc, if_match, &res);
        break;
    case APPLY_DELETE:
        ret = cli_call(opts, "DELETE", path, NULL, NULL, &res);
        break;
    default:
        return CLI_EXIT_OK;
    }
    if (ret != CLI_EXIT_OK)
        return ret;
    if (step->action != APPLY_DELETE)
        step->new_version = version_of(res.body);
    step->written = true;
    cli_response_release(&res);
    return CLI_EXIT_OK;
}

static void *apply_writer_main(void *arg)
{
    struct apply_writers *writers = arg;

    for (;;) {
        struct apply_step *step;
        int ret;

        pthread_mutex_lock(&writers->lock);
        if (writers->ret != CLI_EXIT_OK || writers->next == writers->count) {
            pthread_mutex_unlock(&writers->lock);
            return NULL;
        }
        step = &writers->steps[writers->next++];
        pthread_mutex_unlock(&writers->lock);
        ret = run_step(writers->opts, step);
        if (ret != CLI_EXIT_OK) {
            pthread_mutex_lock(&writers->lock);
            if (writers->ret == CLI_EXIT_OK) {
                writers->ret = ret;
                writers->failed = step->name;
            }
            pthread_mutex_unlock(&writers->lock);
        }
    }
}

/*
 * Writes the steps of the plan, up to APPLY_IN_FLIGHT at once. Returns
 * CLI_EXIT_OK when every write was answered 2xx, else the first failure's
 * exit code (its message is on stderr) with its job in *failed; each
 * step's written says whether it took effect.
 */
static int write_steps(const struct cli_options *opts, struct apply_step *steps, size_t count,
                       const char **failed)
{
    struct apply_writers writers = {.opts = opts, .steps = steps, .count = count};
    pthread_t threads[APPLY_IN_FLIGHT];
    size_t started = 0;

    pthread_mutex_init(&writers.lock, NULL);
    while (started < APPLY_IN_FLIGHT && started < count &&
           pthread_create(&threads[started], NULL, apply_writer_main, &writers) == 0)
        started++;
    /* With no thread at all, this one writes them. */
    if (started == 0)
        apply_writer_main(&writers);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&writers.lock);
    *failed = writers.failed;
    return writers.ret;
}

static const char *action_name(enum apply_action action, bool dry_run)
{
    static const char *const done[] = {"created", "changed", "unchanged", "deleted"};
    static const char *const planned[] = {"would create", "would change", "unchanged",
                                          "would delete"};

    return dry_run ? planned[action] : done[action];
}

static void print_step_text(const struct apply_step *step, bool dry_run)
{
    const json_t *field;
    size_t i;

    printf("%-13s %s", action_name(step->action, dry_run), step->name);
    switch (step->action) {
    case APPLY_CREATE:
        if (!dry_run)
            printf(" (version %lld)", step->new_version);
        break;
    case APPLY_CHANGE:
        if (dry_run)
            printf(" (version %lld:", step->version);
        else
            printf(" (version %lld -> %lld:", step->version, step->new_version);
        json_array_foreach(step->changed_fields, i, field)
            printf("%s %s", i ? "," : "", json_string_value(field));
        printf(")");
        break;
    case APPLY_UNCHANGED:
        printf(" (version %lld)", step->version);
        break;
    case APPLY_DELETE:
        printf(" (was version %lld)", step->version);
        break;
    }
    printf("\n");
}

/* The report of --output json: {"dry_run", "jobs": [{name, action, version, changed}], "summary"}.
 */
static json_t *report_json(const struct apply_step *steps, size_t count, bool dry_run,
                           const size_t *totals)
{
    static const char *const names[] = {"created", "changed", "unchanged", "deleted"};
    json_t *jobs = json_array(), *summary = json_object();

    for (size_t i = 0; i < count; i++) {
        const struct apply_step *step = &steps[i];
        json_t *entry = json_pack("{s:s, s:s}", "name", step->name, "action", names[step->action]);

        if (step->action == APPLY_DELETE || (dry_run && step->action == APPLY_CREATE))
            json_object_set_new(entry, "version", json_null());
        else
            json_object_set_new(entry, "version", json_integer(step->new_version));
        if (step->action == APPLY_CHANGE)
            json_object_set(entry, "changed", step->changed_fields);
        json_array_append_new(jobs, entry);
    }
    for (size_t a = 0; a < 4; a++)
        json_object_set_new(summary, names[a], json_integer((json_int_t)totals[a]));
    return json_pack("{s:b, s:o, s:o}", "dry_run", dry_run, "jobs", jobs, "summary", summary);
}

int cli_apply(const struct cli_options *opts)
{
    struct cli_response validated = {0};
    struct apply_step *steps = NULL;
    json_t *file = NULL, *jobs = NULL, *catalog = NULL, *wanted, *job, *report;
    size_t count = 0, totals[4] = {0}, i, done = 0;
    const char *failed = "";
    bool viewer = false;
    int ret;

    ret = load_job_file(opts->file, &file);
    if (ret != CLI_EXIT_OK)
        return ret;
    /* Every document passes the server's validation, or nothing is written. */
    ret = cli_call(opts, "POST", "/api/v1/jobs/validate", file, NULL, &validated);
    if (ret != CLI_EXIT_OK) {
        fprintf(stderr, "nothing was changed\n");
        goto out;
    }
    wanted = json_object_get(validated.body, "jobs");
    if (json_array_size(wanted) != json_array_size(json_object_get(file, "jobs"))) {
        fprintf(stderr, "error: the server's validation answer does not match the file\n");
        ret = CLI_EXIT_REFUSED;
        goto out;
    }
    ret = cli_fetch_jobs(opts, &jobs, &viewer);
    if (ret != CLI_EXIT_OK)
        goto out;
    if (viewer)
        fprintf(stderr, "warning: this token may only read; it sees header values as ***\n");
    catalog = json_object();
    json_array_foreach(jobs, i, job)
        json_object_set(catalog, json_string_value(json_object_get(job, "name")), job);

    steps = calloc(json_array_size(wanted) + json_array_size(jobs) + 1, sizeof(*steps));
    if (steps == NULL || catalog == NULL) {
        fprintf(stderr, "error: out of memory\n");
        ret = CLI_EXIT_REFUSED;
        goto out;
    }
    json_array_foreach(wanted, i, job)
    {
        steps[count].name = json_string_value(json_object_get(job, "name"));
        plan_file_job(&steps[count], json_array_get(json_object_get(file, "jobs"), i), job,
                      catalog);
        count++;
    }
    if (opts->prune) {
        json_array_foreach(jobs, i, job)
        {
            const char *name = json_string_value(json_object_get(job, "name"));
            bool in_file = false;

            for (size_t s = 0; s < json_array_size(wanted) && !in_file; s++)
                in_file = strcmp(steps[s].name, name) == 0;
            if (in_file)
                continue;
            steps[count].action = APPLY_DELETE;
            steps[count].name = name;
            steps[count].version = version_of(job);
            count++;
        }
    }

    if (!opts->dry_run)
        ret = write_steps(opts, steps, count, &failed);
    for (i = 0; i < count; i++) {
        bool done_step = opts->dry_run || steps[i].action == APPLY_UNCHANGED || steps[i].written;

        if (!done_step)
            continue;
        done++;
        totals[steps[i].action]++;
        if (!opts->json)
            print_step_text(&steps[i], opts->dry_run);
    }
    if (ret != CLI_EXIT_OK) {
        fprintf(stderr, "stopped at job %s: %zu of %zu steps were done (listed above)\n", failed,
                done, count);
        goto out;
    }
    if (opts->json) {
        report = report_json(steps, count, opts->dry_run, totals);
        cli_print_json(stdout, report);
        json_decref(report);
    } else {
        printf("%s%zu created, %zu changed, %zu unchanged, %zu deleted\n",
               opts->dry_run ? "dry run, nothing changed: " : "", totals[APPLY_CREATE],
               totals[APPLY_CHANGE], totals[APPLY_UNCHANGED], totals[APPLY_DELETE]);
    }
out:
    for (i = 0; i < count; i++)
        json_decref(steps[i].changed_fields);
    free(steps);
    json_decref(catalog);
    json_decref(jobs);
    cli_response_release(&validated);
    json_decref(file);
    return ret;
}

int cli_export(const struct cli_options *opts)
{
    json_t *jobs = NULL, *job, *doc;
    bool viewer = false;
    size_t i;
    int ret = cli_fetch_jobs(opts, &jobs, &viewer);

    if (ret != CLI_EXIT_OK)
        return ret;
    if (viewer)
        fprintf(stderr, "warning: this token may only read; header values are exported as ***\n");
    json_array_foreach(jobs, i, job)
    {
        for (size_t f = 0; read_only_fields[f] != NULL; f++)
            json_object_del(job, read_only_fields[f]);
    }
    doc = json_pack("{s:O}", "jobs", jobs);
    if (opts->json) {
        cli_print_json(stdout, doc);
    } else {
        printf("# cronfence export: apply with `cronfence apply -f FILE`; signing secrets are not "
               "exported\n");
        ret = cli_print_yaml(stdout, doc);
    }
    json_decref(doc);
    json_decref(jobs);
    return ret;
}
