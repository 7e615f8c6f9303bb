/*
 * cli.h - the command-line client in the cronfence binary (DESIGN §7):
 * `cronfence apply|export|jobs|runs ...` against a running instance's API,
 * at --url (CRONFENCE_URL, default http://127.0.0.1:8080) with --token
 * (CRONFENCE_TOKEN).
 *
 * Exit codes, for scripts:
 *   0  done (for apply --dry-run: the plan was printed)
 *   1  the server refused or failed the request (4xx other than 401/403,
 *      5xx), or the job file is invalid; nothing was changed by a refused
 *      apply
 *   2  usage error: unknown command or option, missing argument, a file
 *      that cannot be read
 *   3  the server cannot be reached, or refused the token (401, 403)
 */
#ifndef CF_CLI_H
#define CF_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli_http.h"

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_REFUSED = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_UNREACHABLE = 3,
};

/* Whether arg (argv[1]) names a client command rather than a daemon flag. */
bool cli_is_command(const char *arg);

/* Runs the client command in argv[1] with its arguments; returns an exit code above. */
int cli_main(int argc, char **argv);

/* Writes the client commands' usage to out. */
void cli_usage(FILE *out);

/* ---------------------------------------------------------------------- */
/* Shared by the commands (cli.c, cli_apply.c)                              */
/* ---------------------------------------------------------------------- */

/* The parsed command line; strings borrowed from argv or the environment. */
struct cli_options {
    struct cli_server server;
    bool json;          /* --output json */
    const char *file;   /* apply -f FILE ("-": standard input) */
    bool prune;         /* apply --prune */
    bool dry_run;       /* apply --dry-run */
    const char *job;    /* runs list --job */
    const char *status; /* runs list --status */
    long limit;         /* runs list --limit */
};

/*
 * Sends a request (see cli_http_request()). A 2xx answer returns
 * CLI_EXIT_OK with it in *res (release it); otherwise the error is written
 * to standard error, *res is released, and the exit code is returned.
 */
int cli_call(const struct cli_options *opts, const char *method, const char *path,
             const json_t *body, const char *if_match, struct cli_response *res);

/*
 * Reads every job of the catalog (all pages) into a new array *jobs, as
 * the API shows them. Returns an exit code; on error *jobs is NULL. With
 * viewer not NULL, tells whether the token may only read.
 */
int cli_fetch_jobs(const struct cli_options *opts, json_t **jobs, bool *viewer);

/* Writes value (borrowed) as indented JSON, or as YAML, with a final newline. */
void cli_print_json(FILE *out, const json_t *value);
int cli_print_yaml(FILE *out, const json_t *value);

/* apply -f FILE [--prune] [--dry-run]: see README "Jobs as code". */
int cli_apply(const struct cli_options *opts);

/* export: the catalog as an apply file, secrets and read-only fields left out. */
int cli_export(const struct cli_options *opts);

#endif
