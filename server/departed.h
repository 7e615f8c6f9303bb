/*
 * departed.h - instances that left the cluster lately, so the cluster page
 * shows them as down with when they were last seen instead of dropping
 * them (DESIGN §6, GET /cluster): those this instance saw leave, and
 * those the lock nodes keep as departed (a heartbeat moves a member that
 * stopped heartbeating to the nodes' departed set for the same 10 minutes),
 * so that an instance started after a member left shows it too.
 */
#ifndef CF_DEPARTED_H
#define CF_DEPARTED_H

#include <stddef.h>
#include <stdint.h>

/* How long a departed member is kept (10 minutes, DESIGN §6). */
#define DEPARTED_KEEP_MS (10 * 60 * 1000)

/* One member that stopped heartbeating; times are wall ms. */
struct departed_member {
    char id[128];
    char url[256];
    char version[32];
    int64_t started_at_ms;
    int64_t last_seen_ms;
    unsigned ordinal;
};

/*
 * The departed members, newest departure last. Zero-initialised is empty;
 * the owner serialises access (the cluster coordinator's state_lock).
 */
struct departed {
    struct departed_member *items;
    size_t count;
};

/*
 * Records that member left (copied; replaces an entry of the same id). On
 * allocation failure the member is not recorded and the list is unaltered.
 */
void departed_add(struct departed *list, const struct departed_member *member);

/* Forgets id (it is live again); nothing when it is not listed. */
void departed_remove(struct departed *list, const char *id);

/* Drops the members last seen before now_ms - DEPARTED_KEEP_MS. */
void departed_expire(struct departed *list, int64_t now_ms);

/* Frees the list's storage; the list is empty afterwards. Accepts an empty list. */
void departed_release(struct departed *list);

#endif
