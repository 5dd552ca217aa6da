-- Keep in step with the PostgreSQL twin.
-- A pipeline retried by hand runs its unfinished jobs again; the automatic retries of each count from there.
ALTER TABLE jobs ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
-- `priority:` of the job (higher first).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- Per repository: a new push to a branch cancels that branch's unfinished pipelines; at most this many of its
-- jobs run at once (NULL: no limit).
ALTER TABLE repos ADD COLUMN cancel_previous BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE repos ADD COLUMN max_running_jobs INTEGER;
-- The claim takes the highest priority first, then the oldest: its index leads with the priority.
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority DESC, queued_at, position) WHERE status = 'queued' AND ready = TRUE;
