-- API tokens (`gantry token create --name N --scope read|write|admin`): kind 'api', a unique name to list and
-- revoke them by, and a scope. The admin token stays kind 'admin' (scope admin).
ALTER TABLE tokens ADD COLUMN name TEXT;
ALTER TABLE tokens ADD COLUMN scope TEXT;
CREATE UNIQUE INDEX tokens_api_name ON tokens (name) WHERE kind = 'api';

-- A private repository is readable only with a token (`read` scope or more), whatever the farm's `private`.
ALTER TABLE repos ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
