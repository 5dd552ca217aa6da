-- Keeps the numbering in step with the PostgreSQL twin, whose claim now makes `max_running_jobs` hold
-- when claims race. SQLite has one writer, so the claim's own count is already exact: nothing to change.
SELECT 1;
