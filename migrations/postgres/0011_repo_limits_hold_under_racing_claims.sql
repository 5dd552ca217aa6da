-- A repository's `max_running_jobs` held only while claims did not race: a claim counts the repository's
-- running jobs in its statement's snapshot, so claims committing at the same instant (several claim
-- connections, several servers) each saw the others' jobs as queued, and the limit was passed. The claim keeps
-- that count (it skips full repositories cheaply) and, for a limited repository only, calls this function on
-- the job it took: claims of one repository take a transaction-level advisory lock in turn, held to their
-- commit, and count again in a fresh snapshot (a PL/pgSQL statement in a volatile function takes its own under
-- READ COMMITTED), which sees every claim committed before the lock was granted. A claim that would pass the
-- limit fails with SQLSTATE GA001 and changes nothing; the claimer tries again, and its next snapshot skips the
-- full repository. Repositories without a limit never call it: their claims cost what they did.
-- SQLite needs nothing of this: its one writer makes the claim's own count exact.
CREATE FUNCTION claim_within_repo_limit(claimed UUID, repo BIGINT, max_running BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Key space 0x6761 ('ga') keeps these locks apart from any other advisory lock on the database.
    PERFORM pg_advisory_xact_lock(26465, (repo % 2147483647)::INTEGER);
    -- The claim's own form (it walks the running jobs, `jobs_leases`), without the job being claimed, whether or
    -- not this snapshot shows it running yet.
    IF (SELECT COUNT(*) FROM jobs k WHERE k.status = 'running' AND k.id <> claimed
          AND (SELECT q.repo_id FROM pipelines q WHERE q.id = k.pipeline_id) = repo) >= max_running THEN
        RAISE EXCEPTION 'repository % already runs its max_running_jobs (%)', repo, max_running
            USING ERRCODE = 'GA001';
    END IF;
    RETURN TRUE;
END
$$;
