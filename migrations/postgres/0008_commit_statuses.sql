-- Keep in step with the SQLite twin.
-- Where a repository's forge API lives (NULL: derived from the clone URL) and the context its commit statuses
-- carry (NULL: the server's `status_context`).
ALTER TABLE repos ADD COLUMN forge_api_url TEXT;
ALTER TABLE repos ADD COLUMN status_context TEXT;

-- The outbox of commit statuses: one row per change of a pipeline's status, written by the triggers below in the
-- transaction that changes it (so a kill loses none, and the claim's own trigger from 0005 is covered too), and
-- only for repositories that have a status token on a forge with a status API: the others pay one lookup of
-- their repository per change of a pipeline's status. The server's sender posts them in order per pipeline.
CREATE TABLE commit_statuses (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id UUID NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    -- The pipeline status to report.
    status TEXT NOT NULL,
    -- NULL while it is to be sent; then `sent`, `superseded` (a later pending said more) or `failed`.
    outcome TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Not to be tried before (Unix ms), for backoff.
    next_try_ms BIGINT NOT NULL DEFAULT 0,
    -- A sender holds it until then (Unix ms): servers sharing a database never post the same row at once.
    claimed_until_ms BIGINT,
    last_error TEXT,
    finished_at TIMESTAMPTZ
);
CREATE INDEX commit_statuses_pipeline ON commit_statuses (pipeline_id, id);
CREATE INDEX commit_statuses_unsent ON commit_statuses (id) WHERE outcome IS NULL;

CREATE FUNCTION pipeline_status_to_report() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO commit_statuses (pipeline_id, status)
    SELECT NEW.id, NEW.status FROM repos
    WHERE id = NEW.repo_id AND status_token IS NOT NULL AND forge IN ('github', 'gitlab', 'gitea');
    RETURN NULL;
END
$$;

CREATE TRIGGER pipelines_created_status AFTER INSERT ON pipelines FOR EACH ROW
EXECUTE FUNCTION pipeline_status_to_report();

CREATE TRIGGER pipelines_status_changed AFTER UPDATE OF status ON pipelines FOR EACH ROW
WHEN (OLD.status <> NEW.status) EXECUTE FUNCTION pipeline_status_to_report();
