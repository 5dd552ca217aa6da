-- Keep in step with the SQLite twin.
-- A pull request's pipeline: its number, the branch it comes from and the one it targets, and whether its head
-- lives in another repository (a fork: such a pipeline never receives the repository's secrets).
ALTER TABLE pipelines ADD COLUMN pr_number BIGINT;
ALTER TABLE pipelines ADD COLUMN source_branch TEXT;
ALTER TABLE pipelines ADD COLUMN target_branch TEXT;
ALTER TABLE pipelines ADD COLUMN from_fork BOOLEAN NOT NULL DEFAULT FALSE;
-- Per repository, sealed with the server's key (never stored in plain text): the token the server's mirror and
-- the workers clone with, and the token commit statuses are posted with.
ALTER TABLE repos ADD COLUMN clone_credential BYTEA;
ALTER TABLE repos ADD COLUMN status_token BYTEA;
-- A repository's secrets, given to its jobs as env; `sealed` is nonce + ciphertext under the server's key.
CREATE TABLE repo_secrets (
    repo_id BIGINT NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, name)
);
-- Deliveries are kept per repository, newest first, and the older ones deleted.
CREATE INDEX webhook_deliveries_by_repo ON webhook_deliveries (repo_id, id);
