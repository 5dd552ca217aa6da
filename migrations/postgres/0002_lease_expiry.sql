-- Keep in step with the SQLite twin. Lease expiry (DESIGN §3): how often a job went back in the queue because
-- its worker stopped heartbeating (capped apart from the job's own `retry:`), and an index to find expired leases.
ALTER TABLE jobs ADD COLUMN infra_retries BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_leases ON jobs (status, lease_deadline_ms);
