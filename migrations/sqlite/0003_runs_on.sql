-- Keep in step with the PostgreSQL twin. The labels a worker must have to lease a job (`runs-on`), as a JSON
-- array, for the claim to filter on.
ALTER TABLE jobs ADD COLUMN runs_on TEXT NOT NULL DEFAULT '[]';
-- The claim's order: the oldest ready job first, then file order.
CREATE INDEX jobs_claim ON jobs (status, ready, queued_at, position);
