/*
 * log: the text and JSON line formats (fields typed, malformed pairs kept,
 * core keys protected), a log file, and reopening it after a rename.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "log.h"

static char dir[] = "/tmp/cf-test-log-XXXXXX";
static char path[256];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cf.log", dir);
}

static void teardown(void)
{
    char rotated[300];

    log_close();
    log_setup(LOG_INFO, false);
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    unlink(rotated);
    unlink(path);
    rmdir(dir);
}

/* The whole content of a file, as a new string. */
static char *slurp(const char *name)
{
    FILE *in = fopen(name, "r");
    char *text = calloc(1, 65536);
    size_t n;

    cr_assert_not_null(in);
    cr_assert_not_null(text);
    n = fread(text, 1, 65535, in);
    text[n] = '\0';
    fclose(in);
    return text;
}

TestSuite(log, .init = setup, .fini = teardown);

Test(log, json_fields_are_typed)
{
    char quoted[64], *text;
    json_t *event;
    json_error_t error;

    cr_assert_eq(log_open_file(path, quoted, sizeof(quoted)), CF_OK);
    log_setup(LOG_INFO, true);
    log_info("run finished",
             "job=123 token=8589934593 count=-12 slot=0 attempts=007 grace_ms=5 run=%s "
             "error=\"%s\" empty= msg=spoofed stray",
             "42", log_quote("say \"hi\"\n", quoted, sizeof(quoted)));
    text = slurp(path);
    cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1, "one line: %s", text);
    event = json_loads(text, 0, &error);
    cr_assert_not_null(event, "not JSON: %s (%s)", text, error.text);
    cr_expect_str_eq(json_string_value(json_object_get(event, "level")), "info");
    cr_expect_str_eq(json_string_value(json_object_get(event, "msg")), "run finished");
    /* The type follows the key: a job or run named by digits stays a string. */
    cr_expect_str_eq(json_string_value(json_object_get(event, "job")), "123");
    cr_expect_str_eq(json_string_value(json_object_get(event, "run")), "42");
    cr_expect_eq(json_integer_value(json_object_get(event, "token")), 8589934593);
    cr_expect_eq(json_integer_value(json_object_get(event, "count")), -12);
    cr_expect(json_is_integer(json_object_get(event, "slot")));
    cr_expect_eq(json_integer_value(json_object_get(event, "attempts")), 7);
    cr_expect_eq(json_integer_value(json_object_get(event, "grace_ms")), 5);
    cr_expect_str_eq(json_string_value(json_object_get(event, "error")), "say \"hi\" ");
    cr_expect_str_eq(json_string_value(json_object_get(event, "empty")), "");
    cr_expect_str_eq(json_string_value(json_object_get(event, "detail")), "stray");
    json_decref(event);
    free(text);
}

Test(log, text_lines_and_levels)
{
    char err[128], *text;

    cr_assert_eq(log_open_file(path, err, sizeof(err)), CF_OK);
    log_setup(LOG_WARN, false);
    log_info("not written", "a=%d", 1);
    log_warn("written", "a=%d b=\"%s\"", 1, "x y");
    text = slurp(path);
    cr_expect_null(strstr(text, "not written"));
    cr_expect(strlen(text) > 25 && strcmp(text + 24, " warn written a=1 b=\"x y\"\n") == 0,
              "got %s", text);
    free(text);
}

Test(log, reopen_follows_a_rename)
{
    char err[128], rotated[300], *old_text, *new_text;

    cr_assert_eq(log_open_file(path, err, sizeof(err)), CF_OK);
    log_setup(LOG_INFO, false);
    log_info("before", "%s", "");
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    cr_assert_eq(rename(path, rotated), 0);
    log_info("between", "%s", "");
    cr_assert_eq(log_reopen(), CF_OK);
    log_info("after", "%s", "");
    old_text = slurp(rotated);
    new_text = slurp(path);
    cr_expect(strstr(old_text, " before") && strstr(old_text, " between"), "%s", old_text);
    cr_expect(!strstr(old_text, " after"), "%s", old_text);
    cr_expect(strstr(new_text, " after") && !strstr(new_text, " before"), "%s", new_text);
    free(old_text);
    free(new_text);
}

Test(log, unopenable_file_is_refused)
{
    char err[256];

    cr_expect_eq(log_open_file("/nonexistent-dir/cf.log", err, sizeof(err)), CF_ERR_IO);
    cr_expect(strstr(err, "cannot open the log file") != NULL, "%s", err);
    cr_expect_eq(log_reopen(), CF_OK, "no file: nothing to reopen");
}
