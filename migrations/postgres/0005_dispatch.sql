-- Keep in step with the SQLite twin. A claim is a single UPDATE of the job: its pipeline starts running and its
-- worker turns busy in the same statement, here, so a claim is one round trip and one commit instead of a
-- transaction of six round trips (bench/dispatch).
CREATE FUNCTION jobs_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pipelines SET status = 'running', started_at = COALESCE(started_at, NEW.started_at)
    WHERE id = NEW.pipeline_id AND status = 'queued';
    UPDATE workers SET last_seen = NEW.started_at, state = 'busy' WHERE id = NEW.worker_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_claimed AFTER UPDATE OF status ON jobs FOR EACH ROW
WHEN (OLD.status = 'queued' AND NEW.status = 'running') EXECUTE FUNCTION jobs_claimed();

-- Every write to a job or pipeline also writes each index whose entry it moves. Queue indexes hold only the rows
-- they are for, so that starting and ending work leaves the indexes it has nothing to do with alone: the claim's
-- order over queued, ready jobs (`jobs_queue` was a prefix of `jobs_claim`), the running jobs' lease deadlines,
-- and the pipelines not read yet.
DROP INDEX jobs_queue;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queued_at, position) WHERE status = 'queued' AND ready;
DROP INDEX jobs_leases;
CREATE INDEX jobs_leases ON jobs (lease_deadline_ms) WHERE status = 'running';
DROP INDEX pipelines_unprepared;
CREATE INDEX pipelines_unprepared ON pipelines (created_at) WHERE NOT prepared;
