-- 0006: what the jobs list sorts by (GET /jobs?sort=), one row per job, kept
-- beside the catalog so that sorting 100,000 jobs reads an index, not every
-- document and every history.
--
-- next_fire_at (wall ms) is the job's next instant as last computed: -1
-- when it must be computed again (the job was written), 253402300800000
-- (year 10000) when there is none (paused, deleted, a schedule without a
-- future instant). The list refreshes the rows whose value has passed
-- before it sorts by it, so only the jobs that fired since are computed.
--
-- last_run_at is the sort_at of the newest run this instance has recorded
-- (-1: none), last_run_id its id. consecutive_failures counts the runs that
-- ended failed, fenced, missed or lost since the last success, in the order
-- runs reach this instance's history; last_error is the error (or reason)
-- of the newest of them, NULL after a success. Triggers on runs keep them,
-- so every path that writes a run keeps them right, the cluster feed too.
CREATE TABLE job_stats (
    job                  TEXT PRIMARY KEY,
    next_fire_at         INTEGER NOT NULL DEFAULT -1,
    last_run_at          INTEGER NOT NULL DEFAULT -1,
    last_run_id          TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT
) STRICT;

CREATE INDEX job_stats_by_next ON job_stats (next_fire_at, job);
CREATE INDEX job_stats_by_last_run ON job_stats (last_run_at, job);
CREATE INDEX job_stats_by_failures ON job_stats (consecutive_failures, job);

INSERT INTO job_stats (job, next_fire_at, last_run_at, last_run_id, consecutive_failures, last_error)
    SELECT j.name,
           CASE WHEN j.deleted_at IS NULL THEN -1 ELSE 253402300800000 END,
           coalesce((SELECT max(r.sort_at) FROM runs AS r WHERE r.job = j.name), -1),
           (SELECT r.id FROM runs AS r WHERE r.job = j.name ORDER BY r.sort_at DESC, r.id DESC LIMIT 1),
           (SELECT count(*) FROM runs AS r WHERE r.job = j.name
                AND r.status IN ('failed', 'fenced', 'missed', 'lost')
                AND r.sort_at > coalesce((SELECT max(s.sort_at) FROM runs AS s
                                          WHERE s.job = j.name AND s.status = 'succeeded'), -1)),
           (SELECT coalesce(r.error, r.reason) FROM runs AS r WHERE r.job = j.name
                AND r.status IN ('failed', 'fenced', 'missed', 'lost')
                AND r.sort_at > coalesce((SELECT max(s.sort_at) FROM runs AS s
                                          WHERE s.job = j.name AND s.status = 'succeeded'), -1)
                ORDER BY r.sort_at DESC, r.id DESC LIMIT 1)
    FROM jobs AS j;

-- A written job's next instant is computed again; a deleted one has none.
CREATE TRIGGER job_stats_job_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_stats (job, next_fire_at)
        VALUES (new.name, CASE WHEN new.deleted_at IS NULL THEN -1 ELSE 253402300800000 END)
        ON CONFLICT (job) DO UPDATE SET next_fire_at = excluded.next_fire_at;
END;

CREATE TRIGGER job_stats_job_update AFTER UPDATE ON jobs
BEGIN
    INSERT INTO job_stats (job, next_fire_at)
        VALUES (new.name, CASE WHEN new.deleted_at IS NULL THEN -1 ELSE 253402300800000 END)
        ON CONFLICT (job) DO UPDATE SET next_fire_at = excluded.next_fire_at;
END;

-- A new run newer than the last one seen becomes the last run; a failure
-- adds one, a success resets the count. Older runs arriving late change
-- nothing.
CREATE TRIGGER job_stats_run_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO job_stats (job, last_run_at, last_run_id, consecutive_failures, last_error)
        VALUES (new.job, new.sort_at, new.id,
                new.status IN ('failed', 'fenced', 'missed', 'lost'),
                CASE WHEN new.status IN ('failed', 'fenced', 'missed', 'lost')
                     THEN coalesce(new.error, new.reason) END)
        ON CONFLICT (job) DO UPDATE SET
            last_run_at = excluded.last_run_at,
            last_run_id = excluded.last_run_id,
            consecutive_failures = CASE
                WHEN new.status = 'succeeded' THEN 0
                WHEN new.status IN ('failed', 'fenced', 'missed', 'lost') THEN consecutive_failures + 1
                ELSE consecutive_failures END,
            last_error = CASE
                WHEN new.status = 'succeeded' THEN NULL
                WHEN new.status IN ('failed', 'fenced', 'missed', 'lost') THEN excluded.last_error
                ELSE last_error END
        WHERE excluded.last_run_at >= job_stats.last_run_at;
END;

-- A run changing state (running to an outcome, or a peer's later record of
-- the same slot) moves the count by the difference; a success of the
-- newest run resets it.
CREATE TRIGGER job_stats_run_update AFTER UPDATE OF status ON runs
    WHEN old.status <> new.status
BEGIN
    UPDATE job_stats SET
        consecutive_failures = CASE
            WHEN new.status = 'succeeded' AND (last_run_id = new.id OR new.sort_at >= last_run_at)
                THEN 0
            ELSE max(0, consecutive_failures
                        + (new.status IN ('failed', 'fenced', 'missed', 'lost'))
                        - (old.status IN ('failed', 'fenced', 'missed', 'lost'))) END,
        last_error = CASE
            WHEN new.status = 'succeeded' AND (last_run_id = new.id OR new.sort_at >= last_run_at)
                THEN NULL
            WHEN new.status IN ('failed', 'fenced', 'missed', 'lost')
                THEN coalesce(new.error, new.reason)
            ELSE last_error END,
        last_run_id = CASE WHEN new.sort_at >= last_run_at THEN new.id ELSE last_run_id END,
        last_run_at = max(last_run_at, new.sort_at)
    WHERE job = new.job;
END;
