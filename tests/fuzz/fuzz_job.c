/*
 * fuzz_job.c - libFuzzer target for job validation and serialisation.
 *
 * Each input is parsed as JSON (NUL bytes in strings allowed, any top-level
 * value) and validated twice: without an allow list and API semantics, and
 * with one and storage semantics (keep_meta). Every valid job must survive
 * the round trips the catalog performs: storage form and API form validate
 * again, storage form reads back to the same job, a copy serialises the
 * same, and the storage form merge-patched with itself validates again.
 * A broken invariant aborts, so libFuzzer records the input.
 *
 * Seeds: tests/fuzz/corpus/job/.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "job.h"
#include "netallow.h"

/* Covers names, IPv4 and IPv6 CIDRs and an explicitly allowed link-local block. */
#define FUZZ_ALLOW_LIST "hooks.example.com,10.0.0.0/8,::1/128,169.254.169.254/32"

static struct netallow *fuzz_allow;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with what broke; the input that did it is then saved by libFuzzer. */
static void fuzz_require(bool condition, const char *what)
{
    if (!condition) {
        fprintf(stderr, "fuzz_job: invariant broken: %s\n", what);
        abort();
    }
}

/*
 * Validates doc; returns the job or NULL when invalid. A valid result must
 * come with no errors and an invalid one with at least one.
 */
static struct job *fuzz_validate(const json_t *doc, const struct netallow *allow, bool keep_meta)
{
    struct job_limits limits = {.webhook_allow = allow};
    struct job *job = NULL;
    json_t *errors = json_array();
    int ret;

    fuzz_require(errors != NULL, "allocation");
    ret = job_from_json(doc, &limits, keep_meta, &job, errors);
    fuzz_require(ret == CF_OK || ret == CF_ERR_INVALID, "job_from_json result code");
    if (ret == CF_OK)
        fuzz_require(job != NULL && json_array_size(errors) == 0, "valid job without errors");
    else
        fuzz_require(job == NULL && json_array_size(errors) > 0, "invalid job with errors");
    json_decref(errors);
    return job;
}

static void fuzz_round_trips(const json_t *doc, const struct netallow *allow, bool keep_meta)
{
    struct job *job = NULL;
    struct job *again = NULL;
    struct job *from_api = NULL;
    struct job *copy = NULL;
    struct job *patched = NULL;
    json_t *api = NULL;
    json_t *storage = NULL;
    json_t *storage_again = NULL;
    json_t *storage_copy = NULL;
    json_t *merged = NULL;

    job = fuzz_validate(doc, allow, keep_meta);
    if (job == NULL)
        goto out;
    api = job_to_json(job, false);
    storage = job_to_json(job, true);
    fuzz_require(api != NULL && storage != NULL, "job_to_json");

    again = fuzz_validate(storage, allow, true);
    fuzz_require(again != NULL, "storage form validates again");
    storage_again = job_to_json(again, true);
    fuzz_require(json_equal(storage, storage_again), "storage form reads back the same");

    from_api = fuzz_validate(api, allow, false);
    fuzz_require(from_api != NULL, "api form validates again");

    copy = job_copy(job);
    fuzz_require(copy != NULL, "job_copy");
    storage_copy = job_to_json(copy, true);
    fuzz_require(json_equal(storage, storage_copy), "copy serialises the same");

    merged = job_merge_patch(storage, storage);
    fuzz_require(merged != NULL, "job_merge_patch");
    patched = fuzz_validate(merged, allow, true);
    fuzz_require(patched != NULL, "storage form patched with itself validates again");

out:
    job_free(patched);
    json_decref(merged);
    json_decref(storage_copy);
    job_free(copy);
    job_free(from_api);
    json_decref(storage_again);
    job_free(again);
    json_decref(storage);
    json_decref(api);
    job_free(job);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char errbuf[256];

    if (netallow_parse(FUZZ_ALLOW_LIST, &fuzz_allow, errbuf, sizeof(errbuf)) != CF_OK) {
        fprintf(stderr, "fuzz_job: %s\n", errbuf);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    json_t *merged;

    if (doc == NULL)
        return 0;
    fuzz_round_trips(doc, NULL, false);
    fuzz_round_trips(doc, fuzz_allow, true);
    /* Merge patch must take any pair of values, not only jobs. */
    merged = job_merge_patch(doc, doc);
    fuzz_require(merged != NULL, "job_merge_patch of any value");
    json_decref(merged);
    json_decref(doc);
    return 0;
}
