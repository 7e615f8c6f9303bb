/*
 * minting.h - the fencing tokens minted by one instance's claims in flight.
 *
 * A claim mints its token over the highest committed token it read from a
 * quorum (DESIGN §4.2 step 4). Claims of different instances cannot mint
 * the same token (the low bits are the instance's ordinal), but two claims
 * of the same instance and job in flight at once (slots of an
 * overlap=allow job, or a retry beside a new slot) read the nodes before
 * either commits and would mint the same one. This table remembers, per
 * job with claims in flight, the highest token they minted, and mints
 * above it too; an entry lives only while the job has claims in flight, as
 * afterwards the nodes hold what was committed.
 *
 * Thread-safe; entries are bounded by the claims in flight.
 */
#ifndef CF_MINTING_H
#define CF_MINTING_H

#include <stddef.h>
#include <stdint.h>

struct minting;

/* A new empty table, or NULL when out of memory. */
struct minting *minting_new(void);

/* Frees the table and any entries left; accepts NULL. */
void minting_free(struct minting *m);

/* Registers a claim of job in flight. Returns CF_OK or CF_ERR_NOMEM. */
int minting_enter(struct minting *m, const char *job);

/*
 * The token of a claim of job (entered) that read highest as the committed
 * token: coord_mint_token() over the larger of highest and every token
 * minted for the job's claims in flight. -1 when the token space is spent.
 */
int64_t minting_mint(struct minting *m, const char *job, int64_t highest, unsigned ordinal);

/* Ends a claim of job entered with minting_enter(). */
void minting_leave(struct minting *m, const char *job);

/* Jobs with claims in flight (for tests and metrics). */
size_t minting_jobs(struct minting *m);

#endif
