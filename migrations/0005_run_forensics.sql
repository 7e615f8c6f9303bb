-- 0005: run forensics (DESIGN §6 Run fields) and the /runs filters.
--
-- lag_ms: the slot (for a retry, its start) to the first request sent, NULL
-- when no request went out. retry_of: the run a retry retries. attempt_log:
-- the run's last attempts as the JSON array of the API (at most ten
-- entries, errors cut short), NULL when no attempt was made.
ALTER TABLE runs ADD COLUMN lag_ms INTEGER;
ALTER TABLE runs ADD COLUMN retry_of TEXT;
ALTER TABLE runs ADD COLUMN attempt_log TEXT;

-- GET /runs?instance= and ?trigger=, newest first like the other filters.
CREATE INDEX runs_by_instance ON runs (instance, sort_at DESC, id DESC);
CREATE INDEX runs_by_trigger ON runs (trigger, sort_at DESC, id DESC);
