-- Keep in step with the SQLite twin.
-- Providers whose instances outlive the server that made them (exec): their settings, and the instances they
-- made, so that another server taking a pool over (or this one after a restart) knows them.
-- The provider's settings as JSON (`{"exec": {...}}`); NULL for the others.
ALTER TABLE pools ADD COLUMN provider_settings TEXT;
-- An instance a provider made: the worker name it was given and the id its provider knows it by. Its
-- registration token is kind 'provider' with `name` the worker's name, which is the only name it registers.
CREATE TABLE pool_instances (
    pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    instance TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (pool, name)
);
