/*
 * fence_scope.h - which earlier deliveries a target compares a fencing token
 * with (DESIGN §3 Overlap, §5), named in the Cronfence-Fence-Scope header.
 *
 * A job with overlap "forbid" or "queue" holds one lock per job, so its
 * deliveries reach the target in token order and the target keeps the
 * highest token per job. A job with overlap "allow" holds one lock per slot:
 * two legitimate slots may be in flight at once and arrive out of token
 * order, so the target keeps the highest token per idempotency key (per
 * slot) instead. Tokens still increase per job across slots (G2).
 *
 * The header is not covered by the signature, so a target must not let it
 * weaken what it already knows: fence_scope_enforced() never turns a job it
 * has seen with scope "job" into "slot". Pure logic, no I/O.
 */
#ifndef CF_FENCE_SCOPE_H
#define CF_FENCE_SCOPE_H

#include <stdbool.h>

#include "job.h"

#define FENCE_SCOPE_HEADER "Cronfence-Fence-Scope"

enum fence_scope {
    FENCE_SCOPE_JOB,  /* highest token per job */
    FENCE_SCOPE_SLOT, /* highest token per idempotency key */
};

/*
 * The scope the deliveries of a job with this overlap carry: slot for
 * "allow", job otherwise. It holds for every trigger: a manual run of an
 * allow job is a slot of its own (its key is unique), a retry reuses its
 * slot's key.
 */
enum fence_scope fence_scope_of_overlap(enum job_overlap overlap);

/* "job" or "slot", the header value; a static string. */
const char *fence_scope_name(enum fence_scope scope);

/*
 * Parses a header value into *out. A missing header (NULL) is "job", what
 * every delivery meant before the header existed. Returns false, leaving
 * *out alone, for anything but "job" or "slot" (exact, lower case).
 */
bool fence_scope_parse(const char *value, enum fence_scope *out);

/*
 * The scope a target applies: the one the delivery names, except that a job
 * the target has seen with scope job (job_scope_seen) stays job. Downgrading
 * on an unsigned header would let whoever can alter it (or replay a refused
 * delivery with it altered) slip a stale token past the per-job fence.
 */
enum fence_scope fence_scope_enforced(enum fence_scope named, bool job_scope_seen);

#endif
