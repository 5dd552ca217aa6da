-- Gantry's schema, SQLite dialect. Keep in step with migrations/postgres/0001_initial.sql.
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,            -- sha256 of the token; the token itself is never stored
    kind TEXT NOT NULL,               -- admin | pool | worker
    pool TEXT REFERENCES pools(name),
    worker_id BLOB,
    created_at TEXT NOT NULL
);

CREATE TABLE repos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    forge TEXT NOT NULL,
    forge_full_name TEXT,
    secret TEXT NOT NULL,
    default_branch TEXT,
    next_number INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE pipelines (
    id BLOB PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    number INTEGER NOT NULL,
    delivery_id TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    event TEXT NOT NULL,
    author TEXT,
    message TEXT,
    status TEXT NOT NULL,
    error TEXT,
    prepared BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    UNIQUE (repo_id, number),
    UNIQUE (repo_id, delivery_id)
);

CREATE INDEX pipelines_unprepared ON pipelines (prepared, status);

CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    delivery_id TEXT NOT NULL,
    forge TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    pipeline_id BLOB REFERENCES pipelines(id),
    received_at TEXT NOT NULL,
    UNIQUE (repo_id, delivery_id)
);

CREATE TABLE jobs (
    id BLOB PRIMARY KEY,
    pipeline_id BLOB NOT NULL REFERENCES pipelines(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    needs TEXT NOT NULL,              -- JSON array of job names
    spec TEXT NOT NULL,               -- JSON of the expanded JobSpec
    status TEXT NOT NULL,
    ready BOOLEAN NOT NULL,           -- every job it needs has succeeded
    attempt INTEGER NOT NULL DEFAULT 0,
    lease_id BLOB,
    worker_id BLOB,
    worker_name TEXT,
    lease_deadline_ms INTEGER,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    exit_code INTEGER,
    failure_kind TEXT,
    message TEXT,
    log_length INTEGER NOT NULL DEFAULT 0,
    queued_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    cpu_seconds REAL,
    peak_memory_bytes INTEGER,
    UNIQUE (pipeline_id, name)
);

CREATE INDEX jobs_queue ON jobs (status, ready, queued_at);

CREATE TABLE steps (
    job_id BLOB NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    command TEXT NOT NULL,
    log_offset INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_code INTEGER,
    PRIMARY KEY (job_id, attempt, idx)
);

CREATE TABLE log_chunks (
    job_id BLOB NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, start_offset)
);

CREATE TABLE workers (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pool TEXT NOT NULL REFERENCES pools(name),
    labels TEXT NOT NULL,             -- JSON array
    capacity INTEGER NOT NULL,
    protocol_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
