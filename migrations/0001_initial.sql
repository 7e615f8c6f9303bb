-- 0001: the catalog mirror, fencing counters, run history and instance metadata.

-- Instance-wide settings kept across restarts: instance_id, signing_secret,
-- admin_token (generated when none is configured), catalog_version.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The job catalog (standalone) or its mirror (cluster). doc is the storage
-- JSON of the job, signing secret included. A deleted job keeps a tombstone
-- (deleted_at, wall ms) so that a lagging peer cannot resurrect it.
CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    doc        TEXT,
    paused     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER
) STRICT;

-- Standalone fencing counters (DESIGN §4.1 cf:fence:{job}): the highest
-- committed token and the last committed slot (wall ms). Never deleted, not
-- even with the job, so a job re-created under the same name keeps
-- increasing tokens.
CREATE TABLE fences (
    job   TEXT PRIMARY KEY,
    token INTEGER NOT NULL,
    last  INTEGER NOT NULL
) STRICT;

-- Run history. sort_at orders runs newest first: the slot for scheduled
-- runs, the start for manual ones.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job              TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    scheduled_at     INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    status           TEXT NOT NULL,
    reason           TEXT,
    fencing_token    INTEGER,
    instance         TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    http_status      INTEGER,
    duration_ms      INTEGER,
    error            TEXT,
    response_excerpt TEXT,
    lease_lost       INTEGER NOT NULL DEFAULT 0,
    sort_at          INTEGER NOT NULL
) STRICT;

CREATE INDEX runs_by_time ON runs (sort_at DESC, id DESC);
CREATE INDEX runs_by_job ON runs (job, sort_at DESC, id DESC);
CREATE INDEX runs_by_status ON runs (status, sort_at DESC, id DESC);

-- The standalone instance that owns this database (one row), so a second
-- instance started on it is refused with a message naming the first.
CREATE TABLE owner (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    started_at INTEGER NOT NULL
) STRICT;
