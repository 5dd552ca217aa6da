-- Keep in step with the SQLite twin.
-- The names of the workers a pool's provider is starting and that have not registered yet (a JSON array), so
-- that GET /api/v1/workers shows them as `booting` from the moment they are asked for. `booting` stays their
-- count.
ALTER TABLE pools ADD COLUMN booting_workers TEXT NOT NULL DEFAULT '[]';
