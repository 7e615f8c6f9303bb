-- 0002: the durable outbox of run states waiting for the cluster's feed.
--
-- A run state this instance writes in cluster mode is queued here in the
-- same transaction that stores it in runs, so a kill -9 cannot lose it
-- between the two: the background publisher appends the queued states to
-- every lock node's cf:runs stream, in seq order, and deletes a row once a
-- quorum of nodes holds it (DESIGN §4.7). seq orders the states and, with
-- an epoch drawn at each start of the instance, names each one on the
-- nodes, so that a resend after a timeout appends nothing twice.
CREATE TABLE outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    doc    TEXT NOT NULL
) STRICT;
