/*
 * notify_rule.h - what a run's notification says (DESIGN §5 Notifications):
 * the events a job may ask for, whether a run ends in one of them, and the
 * text of a Slack message. Pure logic: no I/O.
 */
#ifndef CF_NOTIFY_RULE_H
#define CF_NOTIFY_RULE_H

#include <stdbool.h>
#include <stddef.h>

#include "run.h"

enum notify_event {
    NOTIFY_NONE = -1,
    NOTIFY_FAILED,
    NOTIFY_FENCED,
    NOTIFY_MISSED,
    NOTIFY_LOST,
    NOTIFY_SUCCEEDED,
    NOTIFY_RECOVERED, /* the first success after a failed, fenced, missed or lost run */
    NOTIFY_EVENT_COUNT,
};

enum notify_format { NOTIFY_FORMAT_JSON, NOTIFY_FORMAT_SLACK };

/* A set of events, bit (1u << event) for each. */
#define NOTIFY_BIT(event) (1u << (event))
/* What `on` holds when a job leaves it out, and what --notify-url uses. */
#define NOTIFY_ON_DEFAULT                                                                          \
    (NOTIFY_BIT(NOTIFY_FAILED) | NOTIFY_BIT(NOTIFY_FENCED) | NOTIFY_BIT(NOTIFY_MISSED) |           \
     NOTIFY_BIT(NOTIFY_LOST) | NOTIFY_BIT(NOTIFY_RECOVERED))

/* "failed", "fenced", ...; "unknown" out of range. */
const char *notify_event_name(enum notify_event event);

/* The event named name, or NOTIFY_NONE when unknown (or NULL). */
enum notify_event notify_event_parse(const char *name);

const char *notify_format_name(enum notify_format format);

/* The format named name ("json", "slack"), or -1 when unknown. */
int notify_format_parse(const char *name);

/*
 * The one event a run that ended with status sends for a job asking for the
 * events in on (a set of NOTIFY_BIT), or NOTIFY_NONE. previous_failed says
 * whether the job's run before this one ended failed, fenced, missed or
 * lost: a success after it is "recovered" when on holds it, else
 * "succeeded" when on holds that. Running and skipped runs send nothing.
 */
enum notify_event notify_event_for(unsigned on, enum run_status status, bool previous_failed);

/*
 * Writes the Slack text for event of run into buf (len bytes, always
 * terminated, cut when too small): one line naming the job, the event,
 * the run id, and what explains it (the error, the reason or the http status).
 */
void notify_slack_text(enum notify_event event, const struct run *run, char *buf, size_t len);

#endif
