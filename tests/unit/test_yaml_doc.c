/*
 * test_yaml_doc.c - YAML to JSON and back.
 *
 * The cases are data in tests/data/yaml/: valid/NAME.yaml reads as the JSON
 * value in valid/NAME.json; invalid/NAME.yaml is refused with an error that
 * contains the text after "# error: " on its first line; every JSON value in
 * roundtrip/ and valid/ comes back unchanged through yaml_doc_emit() and
 * yaml_doc_parse().
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "yaml_doc.h"

#ifndef CF_TEST_DATA
#error "CF_TEST_DATA must name the tests/data directory"
#endif

#define MAX_CASES 64

/* Reads a whole file; fails the test when it cannot. The caller frees. */
static char *read_file(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    char *text;
    long size;

    cr_assert_not_null(file, "cannot open %s", path);
    fseek(file, 0, SEEK_END);
    size = ftell(file);
    fseek(file, 0, SEEK_SET);
    text = malloc((size_t)size + 1);
    cr_assert_not_null(text);
    cr_assert_eq(fread(text, 1, (size_t)size, file), (size_t)size);
    text[size] = '\0';
    fclose(file);
    *len = (size_t)size;
    return text;
}

static json_t *load_json(const char *path)
{
    json_error_t err;
    json_t *value = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    cr_assert_not_null(value, "bad test json %s: %s", path, err.text);
    return value;
}

/* Lists dir's files ending in suffix, sorted, as "dir/file" paths into names. */
static size_t list_cases(const char *dir, const char *suffix, char names[][512])
{
    struct dirent **entries = NULL;
    int n = scandir(dir, &entries, NULL, alphasort);
    size_t count = 0;

    cr_assert_geq(n, 0, "cannot read %s", dir);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(entries[i]->d_name);

        if (len > strlen(suffix) &&
            strcmp(entries[i]->d_name + len - strlen(suffix), suffix) == 0) {
            cr_assert_lt(count, MAX_CASES);
            snprintf(names[count++], 512, "%s/%s", dir, entries[i]->d_name);
        }
        free(entries[i]);
    }
    free(entries);
    return count;
}

static char *dump(const json_t *value)
{
    return json_dumps(value, JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_COMPACT);
}

/* Emits value as YAML, reads it back and requires the same value. */
static void expect_round_trip(const json_t *value, const char *what)
{
    char *yaml = NULL, err[256] = "", *want, *got;
    json_t *back = NULL;

    cr_assert_eq(yaml_doc_emit(value, &yaml), CF_OK, "%s: cannot emit", what);
    cr_assert_eq(yaml_doc_parse(yaml, strlen(yaml), &back, err, sizeof(err)), CF_OK,
                 "%s: emitted YAML does not parse: %s\n%s", what, err, yaml);
    want = dump(value);
    got = dump(back);
    cr_expect(json_equal(value, back), "%s: round trip changed\n%s\ninto\n%s\nthrough\n%s", what,
              want, got, yaml);
    free(want);
    free(got);
    free(yaml);
    json_decref(back);
}

Test(yaml_doc, valid_files_read_as_their_json)
{
    static char cases[MAX_CASES][512];
    size_t n = list_cases(CF_TEST_DATA "/yaml/valid", ".yaml", cases);

    cr_assert_geq(n, 7, "only %zu valid YAML cases", n);
    for (size_t i = 0; i < n; i++) {
        char expected_path[512], err[256] = "", *text, *want, *got;
        json_t *expected, *value = NULL;
        size_t len;

        snprintf(expected_path, sizeof(expected_path), "%.*s.json",
                 (int)(strlen(cases[i]) - strlen(".yaml")), cases[i]);
        expected = load_json(expected_path);
        text = read_file(cases[i], &len);
        cr_assert_eq(yaml_doc_parse(text, len, &value, err, sizeof(err)), CF_OK, "%s: %s", cases[i],
                     err);
        want = dump(expected);
        got = dump(value);
        cr_expect(json_equal(expected, value), "%s: expected %s, got %s", cases[i], want, got);
        /* A value and its type: 42 and 42.0 are json_equal in neither direction. */
        expect_round_trip(value, cases[i]);
        free(want);
        free(got);
        free(text);
        json_decref(expected);
        json_decref(value);
    }
}

Test(yaml_doc, invalid_files_are_refused_with_their_error)
{
    static char cases[MAX_CASES][512];
    size_t n = list_cases(CF_TEST_DATA "/yaml/invalid", ".yaml", cases);

    cr_assert_geq(n, 10, "only %zu invalid YAML cases", n);
    for (size_t i = 0; i < n; i++) {
        char err[256] = "", expected[128] = "", *text, *newline;
        json_t *value = NULL;
        size_t len;

        text = read_file(cases[i], &len);
        cr_assert(strncmp(text, "# error: ", 9) == 0, "%s: no '# error: ' line", cases[i]);
        newline = strchr(text, '\n');
        snprintf(expected, sizeof(expected), "%.*s", (int)(newline - text - 9), text + 9);
        cr_expect_eq(yaml_doc_parse(text, len, &value, err, sizeof(err)), CF_ERR_INVALID,
                     "%s: accepted", cases[i]);
        cr_expect_null(value, "%s: a value on error", cases[i]);
        cr_expect_not_null(strstr(err, expected), "%s: error \"%s\" does not contain \"%s\"",
                           cases[i], err, expected);
        cr_expect_not_null(strstr(err, "line "), "%s: error \"%s\" names no line", cases[i], err);
        free(text);
        json_decref(value);
    }
}

Test(yaml_doc, json_values_round_trip)
{
    static char cases[MAX_CASES][512];
    size_t n = list_cases(CF_TEST_DATA "/yaml/roundtrip", ".json", cases);

    cr_assert_geq(n, 3);
    for (size_t i = 0; i < n; i++) {
        json_t *value = load_json(cases[i]);

        expect_round_trip(value, cases[i]);
        json_decref(value);
    }
}

Test(yaml_doc, strings_that_look_like_other_types_are_quoted)
{
    json_t *value = json_pack("{s:s, s:s, s:s, s:i}", "a", "42", "b", "true", "c", "", "d", 42);
    char *yaml = NULL;

    cr_assert_eq(yaml_doc_emit(value, &yaml), CF_OK);
    cr_expect_not_null(strstr(yaml, "a: \"42\"\n"), "%s", yaml);
    cr_expect_not_null(strstr(yaml, "b: \"true\"\n"), "%s", yaml);
    cr_expect_not_null(strstr(yaml, "c: \"\"\n"), "%s", yaml);
    cr_expect_not_null(strstr(yaml, "d: 42\n"), "%s", yaml);
    free(yaml);
    json_decref(value);
}

Test(yaml_doc, reals_keep_their_type)
{
    char err[128] = "";
    json_t *value = NULL;

    cr_assert_eq(yaml_doc_parse("a: 3.0\nb: 3\n", 12, &value, err, sizeof(err)), CF_OK, "%s", err);
    cr_expect(json_is_real(json_object_get(value, "a")));
    cr_expect(json_is_integer(json_object_get(value, "b")));
    json_decref(value);
}
