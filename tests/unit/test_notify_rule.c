/*
 * test_notify_rule.c - which notification a run sends and its Slack text
 * (DESIGN §5 Notifications), from the cases in tests/data/notify/.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_text.h"
#include "notify_rule.h"
#include "run.h"

/* Splits line at '|' into at most max trimmed fields; returns how many. */
static size_t split(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *rest = line;

    while (n < max) {
        char *bar = n + 1 < max ? strchr(rest, '|') : NULL;

        if (bar != NULL)
            *bar = '\0';
        fields[n++] = data_trim(rest);
        if (bar == NULL)
            break;
        rest = bar + 1;
    }
    return n;
}

static unsigned parse_on(char *text)
{
    unsigned on = 0;
    char *save = NULL;

    if (strcmp(text, "default") == 0)
        return NOTIFY_ON_DEFAULT;
    for (char *name = strtok_r(text, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save)) {
        enum notify_event event = notify_event_parse(data_trim(name));

        cr_assert_neq(event, NOTIFY_NONE, "unknown event %s in the data", name);
        on |= NOTIFY_BIT(event);
    }
    return on;
}

Test(notify_rule, events_from_data)
{
    FILE *file = fopen(CF_TEST_DATA "/notify/events.txt", "r");
    char line[512];
    int cases = 0;

    cr_assert_not_null(file, "cannot open notify/events.txt");
    while (fgets(line, sizeof(line), file) != NULL) {
        char copy[512], *fields[4];
        int status;
        enum notify_event got;
        const char *want;

        if (line[0] == '#' || data_trim(line)[0] == '\0')
            continue;
        snprintf(copy, sizeof(copy), "%s", line);
        cr_assert_eq(split(line, fields, 4), 4, "bad line: %s", copy);
        status = run_status_parse(fields[1]);
        cr_assert_geq(status, 0, "bad status in: %s", copy);
        got = notify_event_for(parse_on(fields[0]), (enum run_status)status,
                               strcmp(fields[2], "yes") == 0);
        want = fields[3];
        cr_expect_str_eq(got == NOTIFY_NONE ? "none" : notify_event_name(got), want, "case: %s",
                         copy);
        cases++;
    }
    fclose(file);
    cr_assert_gt(cases, 10);
}

Test(notify_rule, slack_text_from_data)
{
    FILE *file = fopen(CF_TEST_DATA "/notify/slack.txt", "r");
    char line[1024];
    int cases = 0;

    cr_assert_not_null(file, "cannot open notify/slack.txt");
    while (fgets(line, sizeof(line), file) != NULL) {
        char *fields[9], text[1024];
        struct run run = {0};
        enum notify_event event;

        if (line[0] == '#' || data_trim(line)[0] == '\0')
            continue;
        cr_assert_eq(split(line, fields, 9), 9);
        event = notify_event_parse(fields[0]);
        cr_assert_neq(event, NOTIFY_NONE, "bad event %s", fields[0]);
        run.job = fields[1];
        snprintf(run.id, sizeof(run.id), "%s", fields[2]);
        run.attempts = atoi(fields[3]);
        run.instance = fields[4];
        run.http_status = atoi(fields[5]);
        run.error = strcmp(fields[6], "-") == 0 ? NULL : fields[6];
        run.reason = strcmp(fields[7], "-") == 0 ? NULL : fields[7];
        notify_slack_text(event, &run, text, sizeof(text));
        cr_expect_str_eq(text, fields[8]);
        cases++;
    }
    fclose(file);
    cr_assert_geq(cases, 5);
}

Test(notify_rule, names_round_trip)
{
    for (int i = 0; i < NOTIFY_EVENT_COUNT; i++)
        cr_expect_eq(notify_event_parse(notify_event_name((enum notify_event)i)), i);
    cr_expect_eq(notify_event_parse("exploded"), NOTIFY_NONE);
    cr_expect_eq(notify_event_parse(NULL), NOTIFY_NONE);
    cr_expect_eq(notify_format_parse("slack"), NOTIFY_FORMAT_SLACK);
    cr_expect_eq(notify_format_parse("json"), NOTIFY_FORMAT_JSON);
    cr_expect_eq(notify_format_parse("email"), -1);
}

Test(notify_rule, slack_text_is_cut_not_overrun)
{
    struct run run = {.job = "job", .instance = "cf0", .attempts = 1, .http_status = 500};
    char text[16];

    snprintf(run.id, sizeof(run.id), "job@1");
    notify_slack_text(NOTIFY_FAILED, &run, text, sizeof(text));
    cr_expect_str_eq(text, "cronfence: job ");
}
