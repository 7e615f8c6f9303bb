/*
 * fuzz_yaml.c - libFuzzer target for the YAML <-> JSON conversion of the
 * command-line client's job files.
 *
 * Each input is read twice: as YAML, and as JSON (NUL bytes in strings
 * allowed, any top-level value). Whatever value either gives must come back
 * equal through yaml_doc_emit() and yaml_doc_parse(): that is the promise
 * `cronfence export` then `cronfence apply` relies on. A refused input must
 * leave no value and name its line. A broken invariant aborts, so libFuzzer
 * records the input.
 *
 * Seeds: tests/fuzz/corpus/yaml/.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "yaml_doc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with what broke; the input that did it is then saved by libFuzzer. */
static void fuzz_require(bool condition, const char *what)
{
    if (!condition) {
        fprintf(stderr, "fuzz_yaml: invariant broken: %s\n", what);
        abort();
    }
}

/* Requires value (borrowed) to survive emit and parse unchanged. */
static void check_round_trip(const json_t *value)
{
    char *yaml = NULL, err[256] = "";
    json_t *back = NULL;
    int ret = yaml_doc_emit(value, &yaml);

    /* Only nesting deeper than the reader accepts may be refused. */
    if (ret == CF_ERR_INVALID)
        return;
    fuzz_require(ret == CF_OK && yaml != NULL, "a value cannot be emitted");
    ret = yaml_doc_parse(yaml, strlen(yaml), &back, err, sizeof(err));
    if (ret != CF_OK)
        fprintf(stderr, "fuzz_yaml: %s\n%s\n", err, yaml);
    fuzz_require(ret == CF_OK, "emitted YAML does not parse");
    fuzz_require(json_equal(value, back), "a value changed through YAML");
    json_decref(back);
    free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    json_t *value = NULL;
    int ret = yaml_doc_parse((const char *)data, size, &value, err, sizeof(err));

    if (ret == CF_OK) {
        check_round_trip(value);
    } else {
        fuzz_require(value == NULL, "a refused document left a value");
        fuzz_require(ret != CF_ERR_INVALID || strncmp(err, "line ", 5) == 0,
                     "an error names no line");
    }
    json_decref(value);

    value = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (value != NULL)
        check_round_trip(value);
    json_decref(value);
    return 0;
}
