-- Keep in step with the PostgreSQL twin.
-- Elastic pools (issue 16). A pool says how many workers it keeps and how they are made; the autoscaler keeps it
-- there. `max_workers` 0 is a pool nobody scales (workers started by hand join it with its token). Pools of the
-- configuration file are rewritten from it at every start (`from_config`) and refuse changes through the API.
ALTER TABLE pools ADD COLUMN provider TEXT NOT NULL DEFAULT 'manual';
-- Every worker so far had the label `linux` unless told otherwise; the pools keep it for them.
ALTER TABLE pools ADD COLUMN labels TEXT NOT NULL DEFAULT '["linux"]';
-- A pool whose workers registered with labels of their own keeps them all, so that they are not refused after
-- the upgrade (the pool's labels are now the only ones a worker may have).
UPDATE pools SET labels = (
    SELECT json_group_array(label) FROM (
        SELECT DISTINCT l.value AS label FROM workers w, json_each(w.labels) AS l
        WHERE w.pool = pools.name ORDER BY 1))
WHERE EXISTS (SELECT 1 FROM workers w WHERE w.pool = pools.name AND w.labels <> '[]');
ALTER TABLE pools ADD COLUMN min_workers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN max_workers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
ALTER TABLE pools ADD COLUMN warm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN idle_timeout_ms INTEGER NOT NULL DEFAULT 300000;
ALTER TABLE pools ADD COLUMN boot_timeout_ms INTEGER NOT NULL DEFAULT 120000;
ALTER TABLE pools ADD COLUMN target_wait_ms INTEGER NOT NULL DEFAULT 30000;
ALTER TABLE pools ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pools ADD COLUMN from_config BOOLEAN NOT NULL DEFAULT FALSE;
-- What the autoscaler last wanted, the instances its provider is starting, and why it last failed (NULL: it
-- did not).
ALTER TABLE pools ADD COLUMN desired INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN booting INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN error TEXT;
-- The server whose autoscaler acts for the pool, until when (Unix ms): servers sharing a database take turns.
ALTER TABLE pools ADD COLUMN scaler TEXT;
ALTER TABLE pools ADD COLUMN scaler_until_ms INTEGER;

-- Every decision of the autoscaler, in words; the newest 200 of each pool are kept.
CREATE TABLE pool_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
    at TEXT NOT NULL,
    from_workers INTEGER NOT NULL,
    to_workers INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX pool_decisions_pool ON pool_decisions (pool, id);

-- A worker's state is read, not kept: `draining` once the autoscaler (or the worker itself) drains it, else busy
-- while it runs a job, else idle. `idle_since_ms` is when it last stopped running one (or registered), for
-- `idle_timeout`; the trigger below keeps it, in the statement that ends the job.
ALTER TABLE workers ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
-- Registered with the token of a server's own provider (kind 'provider' in tokens), which a rotation of the pool's
-- token leaves; the others lose their tokens with it.
ALTER TABLE workers ADD COLUMN managed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE workers ADD COLUMN idle_since_ms INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER jobs_released AFTER UPDATE OF status ON jobs
WHEN OLD.status = 'running' AND NEW.status <> 'running' AND OLD.worker_id IS NOT NULL
BEGIN
    UPDATE workers SET idle_since_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE id = OLD.worker_id;
END;

-- The pools a repository's jobs may run on (a JSON array; NULL: any).
ALTER TABLE repos ADD COLUMN pools TEXT;

-- The autoscaler's look at recent durations (same repository, same job name): the newest successes first.
CREATE INDEX jobs_durations ON jobs (finished_at) WHERE status = 'success';
