/*
 * signing_secrets.h - the default webhook signing secret of an instance or a
 * cluster, its rotation, and which secrets sign a delivery (DESIGN §5, §6, §7).
 *
 * The state is a register {version, current, previous, rotated_at}. A
 * rotation makes a new random current, keeps the old one as previous and
 * bumps the version; previous signs deliveries, next to current, until
 * overlap_ms after rotated_at.
 *
 * Standalone, the register lives in the database's meta table. In a cluster
 * it lives on every lock node, in the hash <prefix>secret, and is a
 * max-register: a node keeps a written value only when it is greater, by
 * version and then by current (bytewise), than the one it holds. Every
 * instance reads all nodes each second, takes the greatest value any node
 * holds and writes it back onto the nodes that hold less or nothing (a wiped
 * node gets the secret back as soon as it answers). So instances that race
 * to create the first secret, or to rotate, converge on one value within a
 * poll (of two rotations at once, the one with the greater new secret wins;
 * the other's answer names a secret replaced within a poll, and deliveries
 * an instance signed with it meanwhile do not verify). The first instance
 * that reads a quorum of nodes and finds no secret creates it, from
 * --signing-secret when given, else at random. The last
 * value seen is also kept in the database, so a restart while the nodes are
 * away still signs with the cluster's secret.
 *
 * --signing-secret: standalone, it seeds the stored secret, and a value
 * changed since the last start is a rotation to it (the stored one stays
 * valid for the overlap); the same value as last time keeps what is stored,
 * rotations through the API included. In a cluster it only seeds a
 * cluster that has no secret; an instance whose flag differs from the
 * cluster's logs a warning and signs with the cluster's (rotate with POST
 * /api/v1/signing-secret/rotate).
 *
 * Every function may be called from any thread.
 */
#ifndef CF_SIGNING_SECRETS_H
#define CF_SIGNING_SECRETS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "coord.h"
#include "db.h"
#include "job.h"
#include "signature.h"

/* Longest secret, in bytes (the job's signing_secret has the same cap). */
#define SIGNING_SECRET_MAX 256

struct signing_secret_state {
    int64_t version;                       /* 0: no secret yet */
    char current[SIGNING_SECRET_MAX + 1];  /* "" when version is 0 */
    char previous[SIGNING_SECRET_MAX + 1]; /* "" when never rotated */
    int64_t rotated_at_ms;                 /* wall ms of the last rotation; 0 when never */
};

struct signing_secrets_config {
    struct db *db;         /* a handle of its own; borrowed, outlives the holder */
    struct coord *cluster; /* the cluster coordinator, or NULL standalone; borrowed */
    const char *flag;      /* --signing-secret, or NULL; copied */
    int64_t overlap_ms;    /* how long a previous secret still signs */
};

struct signing_secrets;

/*
 * Loads (or creates) the secret and, in a cluster, starts the thread that
 * keeps it in step with the nodes. In a cluster, waits up to about two
 * seconds for a quorum to read or create the cluster's secret; without one
 * it starts with the secret last kept in the database (or none: deliveries
 * need a quorum anyway) and the thread goes on trying. Returns CF_OK with
 * *out, CF_ERR_INVALID with a message in err (flag out of bounds), or
 * CF_ERR_DB / CF_ERR_NOMEM / CF_ERR_IO.
 */
int signing_secrets_new(const struct signing_secrets_config *cfg, struct signing_secrets **out,
                        char *err, size_t errlen);

/* Stops the thread and frees the holder; accepts NULL. */
void signing_secrets_free(struct signing_secrets *ss);

/* Copies the current state into *out. */
void signing_secrets_get(struct signing_secrets *ss, struct signing_secret_state *out);

/*
 * Rotates: a new random current, the old current becomes previous,
 * rotated_at now. Standalone stored in the database; in a cluster written
 * to every node and acknowledged by a quorum. Returns CF_OK with the new
 * state in *out, CF_ERR_NO_QUORUM (nothing changed, or the change reached
 * fewer than Q nodes and may still win), CF_ERR_DB, CF_ERR_IO.
 */
int signing_secrets_rotate(struct signing_secrets *ss, struct signing_secret_state *out);

/*
 * The secrets a delivery of job signs with at now_ms, newest first, copied
 * into out without repeats: the job's own secret, or the default's current;
 * within the overlap after the job's secret changed, the one it replaced
 * (the default's current when that was in use); the default's previous
 * within the overlap of its rotation, when the default signs. Returns how
 * many (0 when there is no secret at all).
 */
size_t signing_secrets_for_job(struct signing_secrets *ss, const struct job *job, int64_t now_ms,
                               char out[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1]);

/*
 * Carries a job's secret history into its new version: when after's
 * signing_secret differs from before's (NULL for the default secret), the
 * old one becomes after's previous_signing_secret, changed at now_ms; else
 * after keeps before's. before may be NULL (a new job: no history).
 * Returns CF_OK or CF_ERR_NOMEM (after unaltered).
 */
int signing_secrets_carry(const struct job *before, struct job *after, int64_t now_ms);

/*
 * GET /api/v1/signing-secret: {"current", "previous" (null when none or
 * past the overlap), "rotated_at" (null when never)}. New reference; NULL
 * when out of memory.
 */
json_t *signing_secrets_json(struct signing_secrets *ss);

#endif
