/*
 * fired_slots.h - per job, the latest scheduled slot this instance heard was
 * committed on some lock node.
 *
 * The instance that commits a scheduled slot announces "<T> <job>" on the
 * nodes' fired channel (DESIGN §4.4); the others note it here, and a lower
 * rank whose turn comes for a slot already noted skips its claim: the claim
 * would have read fence.last >= T on that node and answered FIRED anyway,
 * so nothing changes but the Redis commands saved. An announcement missed
 * or forgotten only costs the claim it would have saved.
 *
 * A fixed direct-mapped table: bounded memory whatever the catalog's size;
 * two jobs sharing an entry evict each other. Thread-safe.
 */
#ifndef CF_FIRED_SLOTS_H
#define CF_FIRED_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fired_slots;

/* A new empty table, or NULL when out of memory. */
struct fired_slots *fired_slots_new(void);

/* Frees the table; accepts NULL. */
void fired_slots_free(struct fired_slots *f);

/* Notes that slot_ms of job was committed (an older slot than noted is ignored). */
void fired_slots_note(struct fired_slots *f, const char *job, int64_t slot_ms);

/* The latest slot of job noted as committed, or 0 when none is known. */
int64_t fired_slots_latest(struct fired_slots *f, const char *job);

/*
 * Parses an announcement "<T> <job>" (len bytes, not terminated) and notes
 * it. Returns whether it was well formed.
 */
bool fired_slots_note_announcement(struct fired_slots *f, const char *text, size_t len);

#endif
