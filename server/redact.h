/*
 * redact.h - what a viewer token may see of a job (DESIGN §6): webhook
 * header values and URL userinfo carry credentials for the target, so a
 * viewer sees header names with "***" values and "***" for the userinfo.
 */
#ifndef CF_REDACT_H
#define CF_REDACT_H

#include <jansson.h>

/* The value shown in place of a secret. */
#define REDACT_MASK "***"

/*
 * Masks, in place, the header values and the URL userinfo of a job's API
 * form (view_job(), or a job_to_json() result): webhook.headers values
 * become "***", and "scheme://user:password@host" becomes
 * "scheme://<mask>@host" (mask "***"). doc is borrowed; anything not shaped like a job is
 * left as it is. Returns 0, or -1 when out of memory (doc may then be
 * partly masked: do not show it).
 */
int redact_job(json_t *doc);

/*
 * The URL with its userinfo replaced by "***" into a new string (free()),
 * or a copy when it has none. NULL when out of memory.
 */
char *redact_url(const char *url);

#endif
