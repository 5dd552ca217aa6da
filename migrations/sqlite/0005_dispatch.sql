-- Keep in step with the PostgreSQL twin. A claim is a single UPDATE of the job: its pipeline starts running and
-- its worker turns busy in the same statement, here. SQLite has one writer at a time, and a claim that was a
-- transaction of four statements held the write lock across four round trips to the connection's thread; one
-- statement holds it for one (bench/dispatch).
CREATE TRIGGER jobs_claimed AFTER UPDATE OF status ON jobs
WHEN OLD.status = 'queued' AND NEW.status = 'running'
BEGIN
    UPDATE pipelines SET status = 'running', started_at = COALESCE(started_at, NEW.started_at)
    WHERE id = NEW.pipeline_id AND status = 'queued';
    UPDATE workers SET last_seen = NEW.started_at, state = 'busy' WHERE id = NEW.worker_id;
END;

-- Every write to a job or pipeline also writes each index whose entry it moves, and a SQLite commit writes each
-- page it changed. Queue indexes hold only the rows they are for, so that starting and ending work leaves the
-- indexes it has nothing to do with alone: the claim's order over queued, ready jobs (`jobs_queue` was a prefix
-- of `jobs_claim`), the running jobs' lease deadlines, and the pipelines not read yet.
DROP INDEX jobs_queue;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queued_at, position) WHERE status = 'queued' AND ready = TRUE;
DROP INDEX jobs_leases;
CREATE INDEX jobs_leases ON jobs (lease_deadline_ms) WHERE status = 'running';
DROP INDEX pipelines_unprepared;
CREATE INDEX pipelines_unprepared ON pipelines (created_at) WHERE NOT prepared;
