/*
 * notify_rule.c - the events of DESIGN §5 Notifications and their Slack text.
 */
#include "notify_rule.h"

#include <stdio.h>
#include <string.h>

static const char *const notify_event_names[NOTIFY_EVENT_COUNT] = {
    [NOTIFY_FAILED] = "failed", [NOTIFY_FENCED] = "fenced",       [NOTIFY_MISSED] = "missed",
    [NOTIFY_LOST] = "lost",     [NOTIFY_SUCCEEDED] = "succeeded", [NOTIFY_RECOVERED] = "recovered",
};

const char *notify_event_name(enum notify_event event)
{
    if (event < 0 || event >= NOTIFY_EVENT_COUNT)
        return "unknown";
    return notify_event_names[event];
}

enum notify_event notify_event_parse(const char *name)
{
    if (name == NULL)
        return NOTIFY_NONE;
    for (int i = 0; i < NOTIFY_EVENT_COUNT; i++)
        if (strcmp(notify_event_names[i], name) == 0)
            return (enum notify_event)i;
    return NOTIFY_NONE;
}

const char *notify_format_name(enum notify_format format)
{
    return format == NOTIFY_FORMAT_SLACK ? "slack" : "json";
}

int notify_format_parse(const char *name)
{
    if (name != NULL && strcmp(name, "json") == 0)
        return NOTIFY_FORMAT_JSON;
    if (name != NULL && strcmp(name, "slack") == 0)
        return NOTIFY_FORMAT_SLACK;
    return -1;
}

enum notify_event notify_event_for(unsigned on, enum run_status status, bool previous_failed)
{
    enum notify_event event;

    switch (status) {
    case RUN_FAILED:
        event = NOTIFY_FAILED;
        break;
    case RUN_FENCED:
        event = NOTIFY_FENCED;
        break;
    case RUN_MISSED:
        event = NOTIFY_MISSED;
        break;
    case RUN_LOST:
        event = NOTIFY_LOST;
        break;
    case RUN_SUCCEEDED:
        if (previous_failed && (on & NOTIFY_BIT(NOTIFY_RECOVERED)) != 0)
            return NOTIFY_RECOVERED;
        event = NOTIFY_SUCCEEDED;
        break;
    default:
        return NOTIFY_NONE;
    }
    return (on & NOTIFY_BIT(event)) != 0 ? event : NOTIFY_NONE;
}

void notify_slack_text(enum notify_event event, const struct run *run, char *buf, size_t len)
{
    char detail[320] = "";

    if (len == 0)
        return;
    if (run->error != NULL)
        snprintf(detail, sizeof(detail), ": %.300s", run->error);
    else if (run->reason != NULL)
        snprintf(detail, sizeof(detail), ": %.300s", run->reason);
    else if (run->http_status != 0)
        snprintf(detail, sizeof(detail), ": http status %d", run->http_status);
    snprintf(buf, len, "cronfence: job %s %s (run %s, %d attempt%s, instance %s)%s",
             run->job != NULL ? run->job : "?", notify_event_name(event), run->id, run->attempts,
             run->attempts == 1 ? "" : "s", run->instance != NULL ? run->instance : "?", detail);
}
