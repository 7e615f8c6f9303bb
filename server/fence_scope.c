/*
 * fence_scope.c - the Cronfence-Fence-Scope rule; see fence_scope.h.
 */
#include "fence_scope.h"

#include <string.h>

enum fence_scope fence_scope_of_overlap(enum job_overlap overlap)
{
    return overlap == JOB_OVERLAP_ALLOW ? FENCE_SCOPE_SLOT : FENCE_SCOPE_JOB;
}

const char *fence_scope_name(enum fence_scope scope)
{
    return scope == FENCE_SCOPE_SLOT ? "slot" : "job";
}

bool fence_scope_parse(const char *value, enum fence_scope *out)
{
    if (value == NULL || strcmp(value, "job") == 0) {
        *out = FENCE_SCOPE_JOB;
        return true;
    }
    if (strcmp(value, "slot") == 0) {
        *out = FENCE_SCOPE_SLOT;
        return true;
    }
    return false;
}

enum fence_scope fence_scope_enforced(enum fence_scope named, bool job_scope_seen)
{
    return job_scope_seen ? FENCE_SCOPE_JOB : named;
}
