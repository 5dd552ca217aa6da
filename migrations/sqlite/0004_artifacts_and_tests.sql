-- Keep in step with the PostgreSQL twin. What jobs hand to the jobs that need them (the bytes live in the
-- artifact store; this is the index), and the test cases of their JUnit reports. Both per attempt: a job's
-- dependents and its pipeline's totals read its latest attempt.
CREATE TABLE artifacts (
    job_id BLOB NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mode INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, path)
);

CREATE TABLE test_cases (
    job_id BLOB NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    suite TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms INTEGER,
    message TEXT,
    PRIMARY KEY (job_id, attempt, idx)
);
