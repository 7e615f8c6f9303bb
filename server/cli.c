/*
 * cli.c - the command-line client: argument parsing, dispatch, and the
 * jobs and runs commands with their tables (apply and export live in
 * cli_apply.c).
 */
#include "cli.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "yaml_doc.h"

#define CLI_DEFAULT_URL "http://127.0.0.1:8080"
#define CLI_TIMEOUT_MS 60000L
#define CLI_DEFAULT_RUNS 50
#define CLI_MAX_RUNS 500
/* Jobs asked for per page when the whole catalog is read (the API's maximum). */
#define CLI_JOBS_PAGE 500
#define CLI_PATH_MAX 2048

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Options a command accepts beyond --url, --token and --output. */
enum {
    OPT_FILE = 1 << 0,
    OPT_PRUNE = 1 << 1,
    OPT_DRY_RUN = 1 << 2,
    OPT_JOB = 1 << 3,
    OPT_STATUS = 1 << 4,
    OPT_LIMIT = 1 << 5,
};

struct cli_command {
    const char *name;
    const char *sub; /* NULL for a command without a subcommand */
    int args;        /* positional arguments after the (sub)command */
    unsigned options;
    int (*run)(const struct cli_options *opts, char **args);
};

/* ---------------------------------------------------------------------- */
/* Output                                                                   */
/* ---------------------------------------------------------------------- */

void cli_print_json(FILE *out, const json_t *value)
{
    json_dumpf(value, out, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    fputc('\n', out);
}

int cli_print_yaml(FILE *out, const json_t *value)
{
    char *text = NULL;
    int ret = yaml_doc_emit(value, &text);

    if (ret != CF_OK) {
        fprintf(stderr, "error: cannot write YAML: %s\n", cf_err_str(ret));
        return CLI_EXIT_REFUSED;
    }
    fputs(text, out);
    free(text);
    return CLI_EXIT_OK;
}

/* The text of a table cell: strings as they are, null as "-". Returns a new string. */
static char *cell_text(const json_t *value)
{
    if (value == NULL || json_is_null(value))
        return strdup("-");
    if (json_is_string(value))
        return strdup(json_string_value(value));
    if (json_is_true(value))
        return strdup("yes");
    if (json_is_false(value))
        return strdup("no");
    return json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
}

/* The length of text up to its first control character. */
static int printable_len(const char *text)
{
    int len = 0;

    while (text[len] != '\0' && (unsigned char)text[len] >= 0x20 && text[len] != 0x7f)
        len++;
    return len;
}

/*
 * Writes rows (an array of arrays of cells, borrowed) under headers, each
 * column as wide as its widest cell, two spaces apart; cells are cut at
 * the first control character so a value cannot break the layout.
 */
static void print_table(FILE *out, const char *const *headers, size_t columns, const json_t *rows)
{
    size_t widths[16] = {0};
    const json_t *row;
    size_t r;

    if (columns > sizeof(widths) / sizeof(widths[0]))
        columns = sizeof(widths) / sizeof(widths[0]);
    for (size_t c = 0; c < columns; c++)
        widths[c] = strlen(headers[c]);
    json_array_foreach(rows, r, row)
    {
        for (size_t c = 0; c < columns; c++) {
            size_t len = (size_t)printable_len(json_string_value(json_array_get(row, c)));

            if (len > widths[c])
                widths[c] = len;
        }
    }
    for (size_t c = 0; c < columns; c++) {
        if (c + 1 < columns)
            fprintf(out, "%-*s  ", (int)widths[c], headers[c]);
        else
            fprintf(out, "%s\n", headers[c]);
    }
    json_array_foreach(rows, r, row)
    {
        for (size_t c = 0; c < columns; c++) {
            const char *text = json_string_value(json_array_get(row, c));
            int len = printable_len(text);

            if (c + 1 < columns)
                fprintf(out, "%.*s%*s  ", len, text, (int)widths[c] - len, "");
            else
                fprintf(out, "%.*s\n", len, text);
        }
    }
}

/* Appends a row of cells taken from fields of item (borrowed) to rows. */
static void add_row(json_t *rows, const json_t *item, const char *const *fields, size_t columns)
{
    json_t *row = json_array();

    for (size_t c = 0; c < columns; c++) {
        const json_t *value = item;
        char path[64], *key, *save = NULL, *text;

        /* "last_run.status" reads a member of a member. */
        snprintf(path, sizeof(path), "%s", fields[c]);
        for (key = strtok_r(path, ".", &save); key != NULL; key = strtok_r(NULL, ".", &save))
            value = json_object_get(value, key);
        text = cell_text(value);
        json_array_append_new(row, json_string(text ? text : "?"));
        free(text);
    }
    json_array_append_new(rows, row);
}

static const char *const job_headers[] = {"NAME",      "SCHEDULE", "TIMEZONE", "PAUSED",
                                          "NEXT FIRE", "LAST RUN", "VERSION"};
static const char *const job_fields[] = {"name",         "schedule",        "timezone", "paused",
                                         "next_fire_at", "last_run.status", "version"};
static const char *const run_headers[] = {"ID",    "JOB",      "TRIGGER", "STATUS",  "SCHEDULED",
                                          "TOKEN", "ATTEMPTS", "HTTP",    "DURATION"};
static const char *const run_fields[] = {"id",       "job",          "trigger",
                                         "status",   "scheduled_at", "fencing_token",
                                         "attempts", "http_status",  "duration_ms"};

static void print_jobs(const json_t *jobs)
{
    json_t *rows = json_array();
    const json_t *job;
    size_t i;

    json_array_foreach(jobs, i, job)
    {
        add_row(rows, job, job_fields, COUNT(job_fields));
    }
    print_table(stdout, job_headers, COUNT(job_headers), rows);
    json_decref(rows);
}

static void print_runs(const json_t *runs)
{
    json_t *rows = json_array();
    const json_t *run;
    size_t i;

    json_array_foreach(runs, i, run)
    {
        add_row(rows, run, run_fields, COUNT(run_fields));
    }
    print_table(stdout, run_headers, COUNT(run_headers), rows);
    json_decref(rows);
}

/* ---------------------------------------------------------------------- */
/* Requests                                                                 */
/* ---------------------------------------------------------------------- */

int cli_call(const struct cli_options *opts, const char *method, const char *path,
             const json_t *body, const char *if_match, struct cli_response *res)
{
    char err[512] = "";
    int ret = cli_http_request(&opts->server, method, path, body, if_match, res, err, sizeof(err));

    if (ret != CF_OK) {
        fprintf(stderr, "error: %s\n", err);
        return ret == CF_ERR_IO ? CLI_EXIT_UNREACHABLE : CLI_EXIT_REFUSED;
    }
    if (res->status >= 200 && res->status < 300)
        return CLI_EXIT_OK;
    /* apply calls from several threads: one problem's lines stay together. */
    flockfile(stderr);
    cli_http_print_problem(stderr, res);
    funlockfile(stderr);
    ret = res->status == 401 || res->status == 403 ? CLI_EXIT_UNREACHABLE : CLI_EXIT_REFUSED;
    cli_response_release(res);
    return ret;
}

int cli_fetch_jobs(const struct cli_options *opts, json_t **jobs, bool *viewer)
{
    struct cli_response res;
    char path[CLI_PATH_MAX];
    const char *cursor;
    json_t *all = json_array();
    int ret;

    *jobs = NULL;
    snprintf(path, sizeof(path), "/api/v1/jobs?limit=%d", CLI_JOBS_PAGE);
    for (;;) {
        ret = cli_call(opts, "GET", path, NULL, NULL, &res);
        if (ret != CLI_EXIT_OK) {
            json_decref(all);
            return ret;
        }
        if (viewer != NULL)
            *viewer = res.viewer;
        if (!json_is_array(json_object_get(res.body, "items"))) {
            fprintf(stderr, "error: the server's job list is not a list\n");
            cli_response_release(&res);
            json_decref(all);
            return CLI_EXIT_REFUSED;
        }
        json_array_extend(all, json_object_get(res.body, "items"));
        cursor = json_string_value(json_object_get(res.body, "next_cursor"));
        if (cursor == NULL) {
            cli_response_release(&res);
            break;
        }
        snprintf(path, sizeof(path), "/api/v1/jobs?limit=%d&cursor=", CLI_JOBS_PAGE);
        if (!cli_http_escape(path, sizeof(path), cursor)) {
            cli_response_release(&res);
            json_decref(all);
            return CLI_EXIT_REFUSED;
        }
        cli_response_release(&res);
    }
    *jobs = all;
    return CLI_EXIT_OK;
}

/* Builds "/api/v1/PREFIX/ESCAPED(name)SUFFIX" into path; false when name is too long. */
static bool resource_path(char *path, size_t cap, const char *prefix, const char *name,
                          const char *suffix)
{
    snprintf(path, cap, "/api/v1/%s/", prefix);
    if (!cli_http_escape(path, cap, name) || strlen(path) + strlen(suffix) + 1 > cap) {
        fprintf(stderr, "error: %s is too long\n", name);
        return false;
    }
    strcat(path, suffix);
    return true;
}

/* ---------------------------------------------------------------------- */
/* Commands                                                                 */
/* ---------------------------------------------------------------------- */

static int jobs_list(const struct cli_options *opts, char **args)
{
    json_t *jobs = NULL;
    int ret = cli_fetch_jobs(opts, &jobs, NULL);

    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts->json)
        cli_print_json(stdout, jobs);
    else
        print_jobs(jobs);
    json_decref(jobs);
    return CLI_EXIT_OK;
}

/* GETs <collection>/<id> and prints it as YAML (JSON with --output json). */
static int get_one(const struct cli_options *opts, const char *collection, const char *id)
{
    struct cli_response res;
    char path[CLI_PATH_MAX];
    int ret;

    if (!resource_path(path, sizeof(path), collection, id, ""))
        return CLI_EXIT_USAGE;
    ret = cli_call(opts, "GET", path, NULL, NULL, &res);
    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts->json)
        cli_print_json(stdout, res.body);
    else
        ret = cli_print_yaml(stdout, res.body);
    cli_response_release(&res);
    return ret;
}

static int jobs_get(const struct cli_options *opts, char **args)
{
    return get_one(opts, "jobs", args[0]);
}

/* POST /jobs/NAME/ACTION (pause, resume) and reports the job's new state. */
static int jobs_action(const struct cli_options *opts, const char *name, const char *action,
                       const char *done)
{
    struct cli_response res;
    char path[CLI_PATH_MAX], suffix[32];
    int ret;

    snprintf(suffix, sizeof(suffix), "/%s", action);
    if (!resource_path(path, sizeof(path), "jobs", name, suffix))
        return CLI_EXIT_USAGE;
    ret = cli_call(opts, "POST", path, NULL, NULL, &res);
    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts->json)
        cli_print_json(stdout, res.body);
    else
        printf("%s %s (version %lld)\n", done, name,
               (long long)json_integer_value(json_object_get(res.body, "version")));
    cli_response_release(&res);
    return CLI_EXIT_OK;
}

static int jobs_pause(const struct cli_options *opts, char **args)
{
    return jobs_action(opts, args[0], "pause", "paused");
}

static int jobs_resume(const struct cli_options *opts, char **args)
{
    return jobs_action(opts, args[0], "resume", "resumed");
}

/* Prints the run (borrowed) that a trigger or retry started. */
static void print_started_run(const struct cli_options *opts, const json_t *run)
{
    json_t *runs;

    if (opts->json) {
        cli_print_json(stdout, run);
        return;
    }
    runs = json_pack("[O]", run);
    print_runs(runs);
    json_decref(runs);
}

/* POSTs to <collection>/<id><action>, which starts a run (202), and prints that run. */
static int start_run(const struct cli_options *opts, const char *collection, const char *id,
                     const char *action)
{
    struct cli_response res;
    char path[CLI_PATH_MAX];
    int ret;

    if (!resource_path(path, sizeof(path), collection, id, action))
        return CLI_EXIT_USAGE;
    ret = cli_call(opts, "POST", path, NULL, NULL, &res);
    if (ret != CLI_EXIT_OK)
        return ret;
    print_started_run(opts, res.body);
    cli_response_release(&res);
    return CLI_EXIT_OK;
}

static int jobs_trigger(const struct cli_options *opts, char **args)
{
    return start_run(opts, "jobs", args[0], "/trigger");
}

static int jobs_delete(const struct cli_options *opts, char **args)
{
    struct cli_response res;
    char path[CLI_PATH_MAX];
    json_t *doc;
    int ret;

    if (!resource_path(path, sizeof(path), "jobs", args[0], ""))
        return CLI_EXIT_USAGE;
    ret = cli_call(opts, "DELETE", path, NULL, NULL, &res);
    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts->json) {
        doc = json_pack("{s:s}", "deleted", args[0]);
        cli_print_json(stdout, doc);
        json_decref(doc);
    } else {
        printf("deleted %s\n", args[0]);
    }
    cli_response_release(&res);
    return CLI_EXIT_OK;
}

static int runs_list(const struct cli_options *opts, char **args)
{
    struct cli_response res;
    char path[CLI_PATH_MAX];
    int ret;

    snprintf(path, sizeof(path), "/api/v1/runs?limit=%ld", opts->limit);
    if (opts->job != NULL) {
        strcat(path, "&job=");
        if (!cli_http_escape(path, sizeof(path), opts->job))
            return CLI_EXIT_USAGE;
    }
    if (opts->status != NULL) {
        if (strlen(path) + 8 >= sizeof(path))
            return CLI_EXIT_USAGE;
        strcat(path, "&status=");
        if (!cli_http_escape(path, sizeof(path), opts->status))
            return CLI_EXIT_USAGE;
    }
    ret = cli_call(opts, "GET", path, NULL, NULL, &res);
    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts->json)
        cli_print_json(stdout, json_object_get(res.body, "items"));
    else
        print_runs(json_object_get(res.body, "items"));
    cli_response_release(&res);
    return CLI_EXIT_OK;
}

static int runs_get(const struct cli_options *opts, char **args)
{
    return get_one(opts, "runs", args[0]);
}

static int runs_retry(const struct cli_options *opts, char **args)
{
    return start_run(opts, "runs", args[0], "/retry");
}

static int apply_command(const struct cli_options *opts, char **args)
{
    if (opts->file == NULL) {
        fprintf(stderr, "error: apply needs -f FILE\n");
        return CLI_EXIT_USAGE;
    }
    return cli_apply(opts);
}

static int export_command(const struct cli_options *opts, char **args)
{
    return cli_export(opts);
}

static const struct cli_command commands[] = {
    {"apply", NULL, 0, OPT_FILE | OPT_PRUNE | OPT_DRY_RUN, apply_command},
    {"export", NULL, 0, 0, export_command},
    {"jobs", "list", 0, 0, jobs_list},
    {"jobs", "get", 1, 0, jobs_get},
    {"jobs", "trigger", 1, 0, jobs_trigger},
    {"jobs", "pause", 1, 0, jobs_pause},
    {"jobs", "resume", 1, 0, jobs_resume},
    {"jobs", "delete", 1, 0, jobs_delete},
    {"runs", "list", 0, OPT_JOB | OPT_STATUS | OPT_LIMIT, runs_list},
    {"runs", "get", 1, 0, runs_get},
    {"runs", "retry", 1, 0, runs_retry},
};

/* ---------------------------------------------------------------------- */
/* Command line                                                             */
/* ---------------------------------------------------------------------- */

void cli_usage(FILE *out)
{
    fputs("\nclient commands (against --url, default " CLI_DEFAULT_URL ", or CRONFENCE_URL,\n"
          "with --token T or CRONFENCE_TOKEN; --output table|json on every command):\n"
          "  cronfence apply -f FILE [--prune] [--dry-run]\n"
          "                          make the catalog match a YAML or JSON file with a\n"
          "                          top-level jobs: list; every job is validated first\n"
          "  cronfence export        print the catalog as such a file (no secrets)\n"
          "  cronfence jobs list|get NAME|trigger NAME|pause NAME|resume NAME|delete NAME\n"
          "  cronfence runs list [--job J] [--status S] [--limit N]\n"
          "  cronfence runs get ID | runs retry ID\n"
          "exit codes: 0 done, 1 refused by the server or invalid file, 2 usage error,\n"
          "  3 server unreachable or token refused\n",
          out);
}

bool cli_is_command(const char *arg)
{
    for (size_t i = 0; i < COUNT(commands); i++)
        if (strcmp(commands[i].name, arg) == 0)
            return true;
    return strcmp(arg, "help") == 0;
}

/* The command argv names: argv[1] and, for jobs and runs, argv[2]. */
static const struct cli_command *find_command(int argc, char **argv)
{
    for (size_t i = 0; i < COUNT(commands); i++) {
        if (strcmp(commands[i].name, argv[1]) != 0)
            continue;
        if (commands[i].sub == NULL)
            return &commands[i];
        if (argc > 2 && strcmp(commands[i].sub, argv[2]) == 0)
            return &commands[i];
    }
    return NULL;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nrun cronfence --help for the commands\n", stderr);
    return CLI_EXIT_USAGE;
}

/* Parses --limit's value into opts; false when it is not 1..CLI_MAX_RUNS. */
static bool parse_limit(const char *text, long *limit)
{
    char *end;
    long value = strtol(text, &end, 10);

    if (*text == '\0' || *end != '\0' || value < 1 || value > CLI_MAX_RUNS)
        return false;
    *limit = value;
    return true;
}

/* Parses the options after the command into opts and its positional arguments into args. */
static int parse_options(const struct cli_command *command, int argc, char **argv,
                         struct cli_options *opts, char **args)
{
    static const struct option long_options[] = {
        {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'},
        {"file", required_argument, NULL, 'f'},
        {"prune", no_argument, NULL, 'P'},
        {"dry-run", no_argument, NULL, 'n'},
        {"job", required_argument, NULL, 'j'},
        {"status", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const struct {
        int opt;
        unsigned flag;
    } needs[] = {{'f', OPT_FILE}, {'P', OPT_PRUNE},  {'n', OPT_DRY_RUN},
                 {'j', OPT_JOB},  {'s', OPT_STATUS}, {'l', OPT_LIMIT}};
    int positional = 0, opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":f:o:h", long_options, NULL)) != -1) {
        for (size_t i = 0; i < COUNT(needs); i++)
            if (needs[i].opt == opt && !(command->options & needs[i].flag))
                return usage_error("option %s does not apply to this command", argv[optind - 1]);
        switch (opt) {
        case 'u':
            opts->server.url = optarg;
            break;
        case 't':
            opts->server.token = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "json") == 0)
                opts->json = true;
            else if (strcmp(optarg, "table") == 0 || strcmp(optarg, "yaml") == 0)
                opts->json = false;
            else
                return usage_error("--output must be table or json, not %s", optarg);
            break;
        case 'f':
            opts->file = optarg;
            break;
        case 'P':
            opts->prune = true;
            break;
        case 'n':
            opts->dry_run = true;
            break;
        case 'j':
            opts->job = optarg;
            break;
        case 's':
            opts->status = optarg;
            break;
        case 'l':
            if (!parse_limit(optarg, &opts->limit))
                return usage_error("--limit must be an integer from 1 to 500, not %s", optarg);
            break;
        case 'h':
            return -1;
        case ':':
            return usage_error("option %s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (positional == command->args)
            return usage_error("unexpected argument %s", argv[i]);
        args[positional++] = argv[i];
    }
    if (positional < command->args)
        return usage_error("%s needs an argument", command->sub ? command->sub : command->name);
    return CLI_EXIT_OK;
}

/* Whether text holds a control character (a token or URL that would break a header). */
static bool has_control(const char *text)
{
    for (; *text != '\0'; text++)
        if ((unsigned char)*text < 0x20 || *text == 0x7f)
            return true;
    return false;
}

int cli_main(int argc, char **argv)
{
    struct cli_options opts = {
        .server = {.url = getenv("CRONFENCE_URL"),
                   .token = getenv("CRONFENCE_TOKEN"),
                   .timeout_ms = CLI_TIMEOUT_MS},
        .limit = CLI_DEFAULT_RUNS,
    };
    const struct cli_command *command;
    char *args[2] = {NULL, NULL};
    int skip, ret;
    size_t url_len;

    if (strcmp(argv[1], "help") == 0) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    command = find_command(argc, argv);
    if (command == NULL)
        return argc > 2 ? usage_error("unknown subcommand %s %s", argv[1], argv[2])
                        : usage_error("%s needs a subcommand", argv[1]);
    /* getopt sees the arguments after the (sub)command, with argv[0] in front. */
    skip = command->sub != NULL ? 2 : 1;
    argv[skip] = argv[0];
    ret = parse_options(command, argc - skip, argv + skip, &opts, args);
    if (ret == -1) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (ret != CLI_EXIT_OK)
        return ret;
    if (opts.server.url == NULL || opts.server.url[0] == '\0')
        opts.server.url = CLI_DEFAULT_URL;
    if (opts.server.token != NULL && opts.server.token[0] == '\0')
        opts.server.token = NULL;
    if (has_control(opts.server.url) || (opts.server.token && has_control(opts.server.token)))
        return usage_error("%s", "--url and --token must not hold control characters");
    url_len = strlen(opts.server.url);
    if (strncmp(opts.server.url, "http://", 7) != 0 && strncmp(opts.server.url, "https://", 8) != 0)
        return usage_error("--url must start with http:// or https://, not %s", opts.server.url);
    if (url_len > 0 && opts.server.url[url_len - 1] == '/') {
        /* "http://host:8080/" and "http://host:8080" name the same API. */
        static char trimmed[1024];

        snprintf(trimmed, sizeof(trimmed), "%.*s", (int)(url_len - 1), opts.server.url);
        opts.server.url = trimmed;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "error: cannot initialise libcurl\n");
        return CLI_EXIT_UNREACHABLE;
    }
    ret = command->run(&opts, args);
    curl_global_cleanup();
    return ret;
}
