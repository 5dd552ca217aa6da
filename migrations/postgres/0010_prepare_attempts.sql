-- How many times a server started preparing the pipeline (reading its file, storing its jobs). A server killed
-- while preparing one resumes it at its next start; a pipeline whose preparation kills the server each time is
-- ended in `error` after a few such starts instead of being prepared again forever.
ALTER TABLE pipelines ADD COLUMN prepare_attempts BIGINT NOT NULL DEFAULT 0;
