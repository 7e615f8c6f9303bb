-- 0003: the job search index, so GET /jobs?q= does not read every job.
--
-- jobs is rebuilt with an explicit integer key, id: the search index names
-- its rows by it, and only an INTEGER PRIMARY KEY is kept by VACUUM (an
-- implicit rowid may be renumbered, which would point the index at the
-- wrong jobs). description is the job document's description, kept as a
-- column so that searching does not parse JSON.
CREATE TABLE jobs_new (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    doc         TEXT,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    description TEXT GENERATED ALWAYS AS
        (CAST(coalesce(json_extract(doc, '$.description'), '') AS TEXT)) STORED
) STRICT;

INSERT INTO jobs_new (name, version, doc, paused, created_at, updated_at, deleted_at)
    SELECT name, version, doc, paused, created_at, updated_at, deleted_at FROM jobs ORDER BY name;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- Live jobs in name order with what a search tests, so listing and the
-- searches the index does not serve (queries of one or two characters,
-- queries most jobs match) read this index rather than every document.
CREATE INDEX jobs_live_by_name ON jobs (name, paused, description) WHERE deleted_at IS NULL;

-- The name and description of every live job (tombstones are left out),
-- rowid = jobs.id. The trigram tokenizer folds case and indexes every
-- three-character sequence, so a query of three or more characters finds
-- the jobs containing it anywhere; the caller still applies the exact test
-- (ASCII case folding, as lower() does) to what the index returns.
CREATE VIRTUAL TABLE job_search USING fts5(name, description, tokenize = 'trigram');

INSERT INTO job_search (rowid, name, description)
    SELECT id, name, description FROM jobs WHERE deleted_at IS NULL;

CREATE TRIGGER job_search_insert AFTER INSERT ON jobs WHEN new.deleted_at IS NULL
BEGIN
    INSERT INTO job_search (rowid, name, description) VALUES (new.id, new.name, new.description);
END;

CREATE TRIGGER job_search_update AFTER UPDATE ON jobs
BEGIN
    DELETE FROM job_search WHERE rowid = old.id;
    INSERT INTO job_search (rowid, name, description)
        SELECT new.id, new.name, new.description WHERE new.deleted_at IS NULL;
END;

CREATE TRIGGER job_search_delete AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_search WHERE rowid = old.id;
END;
