-- Gantry's schema, PostgreSQL dialect. Keep in step with migrations/sqlite/0001_initial.sql.
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,            -- sha256 of the token; the token itself is never stored
    kind TEXT NOT NULL,               -- admin | pool | worker
    pool TEXT REFERENCES pools(name),
    worker_id UUID,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE repos (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    forge TEXT NOT NULL,
    forge_full_name TEXT,
    secret TEXT NOT NULL,
    default_branch TEXT,
    next_number BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE pipelines (
    id UUID PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES repos(id),
    number BIGINT NOT NULL,
    delivery_id TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    event TEXT NOT NULL,
    author TEXT,
    message TEXT,
    status TEXT NOT NULL,
    error TEXT,
    prepared BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    UNIQUE (repo_id, number),
    UNIQUE (repo_id, delivery_id)
);

CREATE INDEX pipelines_unprepared ON pipelines (prepared, status);

CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES repos(id),
    delivery_id TEXT NOT NULL,
    forge TEXT NOT NULL,
    event TEXT NOT NULL,
    body BYTEA NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    pipeline_id UUID REFERENCES pipelines(id),
    received_at TIMESTAMPTZ NOT NULL,
    UNIQUE (repo_id, delivery_id)
);

CREATE TABLE jobs (
    id UUID PRIMARY KEY,
    pipeline_id UUID NOT NULL REFERENCES pipelines(id),
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    needs TEXT NOT NULL,              -- JSON array of job names
    spec TEXT NOT NULL,               -- JSON of the expanded JobSpec
    status TEXT NOT NULL,
    ready BOOLEAN NOT NULL,           -- every job it needs has succeeded
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_id UUID,
    worker_id UUID,
    worker_name TEXT,
    lease_deadline_ms BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    exit_code BIGINT,
    failure_kind TEXT,
    message TEXT,
    log_length BIGINT NOT NULL DEFAULT 0,
    queued_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    cpu_seconds DOUBLE PRECISION,
    peak_memory_bytes BIGINT,
    UNIQUE (pipeline_id, name)
);

CREATE INDEX jobs_queue ON jobs (status, ready, queued_at);

CREATE TABLE steps (
    job_id UUID NOT NULL REFERENCES jobs(id),
    attempt BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    command TEXT NOT NULL,
    log_offset BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    exit_code BIGINT,
    PRIMARY KEY (job_id, attempt, idx)
);

CREATE TABLE log_chunks (
    job_id UUID NOT NULL REFERENCES jobs(id),
    attempt BIGINT NOT NULL,
    start_offset BIGINT NOT NULL,
    end_offset BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, attempt, start_offset)
);

CREATE TABLE workers (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pool TEXT NOT NULL REFERENCES pools(name),
    labels TEXT NOT NULL,             -- JSON array
    capacity BIGINT NOT NULL,
    protocol_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL
);
