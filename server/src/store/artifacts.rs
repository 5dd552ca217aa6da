//! Artifacts and test reports: what a job's attempt leaves for users to download and read.

use super::db::{Exec, Row, int, parse, query};
use super::dialect::Dialect;
use super::{NewArtifact, Result, StoreError};
use chrono::Utc;
use gantry_model::junit::{TestCase, TestStatus};
use gantry_model::wire::{ArtifactRef, MAX_LISTED_FAILURES, TestFailure, TestSummary};
use std::sync::LazyLock;
use uuid::Uuid;

/// What an attempt has stored so far, for its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArtifactQuota {
    /// The attempt the lease holds.
    pub attempt: u32,
    /// Bytes of artifacts it stored.
    pub used_bytes: u64,
}

fn artifact_from(row: &impl Row) -> Result<ArtifactRef> {
    Ok(ArtifactRef {
        job: row.get("name")?,
        job_id: row.get("job_id")?,
        path: row.get("path")?,
        size: row.get("size_bytes")?,
        sha256: row.get("sha256")?,
        mode: row.get("mode")?,
    })
}

pub(crate) async fn artifact_quota(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
) -> Result<ArtifactQuota> {
    let row = query(
        "SELECT j.attempt, (SELECT CAST(COALESCE(SUM(a.size_bytes), 0) AS BIGINT) FROM artifacts a
                            WHERE a.job_id = j.id AND a.attempt = j.attempt) AS used
         FROM jobs j WHERE j.id = $1 AND j.lease_id = $2 AND j.status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .fetch_optional(&mut db.reader().await?)
    .await?
    .ok_or(StoreError::StaleLease(job))?;
    Ok(ArtifactQuota {
        attempt: row.get("attempt")?,
        used_bytes: row.get("used")?,
    })
}

pub(crate) async fn record_artifact(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
    artifact: &NewArtifact,
) -> Result<()> {
    // Fenced like every worker call: the row is written only while `lease` is the running job's lease.
    let written = query(
        "INSERT INTO artifacts (job_id, attempt, path, size_bytes, sha256, mode, created_at)
         SELECT id, attempt, $3, $4, $5, $6, $7 FROM jobs WHERE id = $1 AND lease_id = $2 AND status = 'running'
         ON CONFLICT (job_id, attempt, path)
         DO UPDATE SET size_bytes = excluded.size_bytes, sha256 = excluded.sha256, mode = excluded.mode,
                       created_at = excluded.created_at",
    )
    .bind(job)
    .bind(lease)
    .bind(&artifact.path)
    .bind(int(artifact.size)?)
    .bind(&artifact.sha256)
    .bind(artifact.mode)
    .bind(Utc::now())
    .execute(&mut db.writer().await?)
    .await?;
    if written == 0 {
        return Err(StoreError::StaleLease(job));
    }
    Ok(())
}

pub(crate) async fn job_artifacts(
    db: &impl Dialect,
    job: Uuid,
    attempt: u32,
) -> Result<Vec<ArtifactRef>> {
    let rows = query(
        "SELECT j.name, a.job_id, a.path, a.size_bytes, a.sha256, a.mode
         FROM artifacts a JOIN jobs j ON j.id = a.job_id
         WHERE a.job_id = $1 AND a.attempt = $2 ORDER BY a.path",
    )
    .bind(job)
    .bind(attempt)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter().map(artifact_from).collect()
}

pub(crate) async fn pipeline_artifacts(
    db: &impl Dialect,
    pipeline: Uuid,
) -> Result<Vec<ArtifactRef>> {
    let rows = query(
        "SELECT j.name, a.job_id, a.path, a.size_bytes, a.sha256, a.mode
         FROM jobs j JOIN artifacts a ON a.job_id = j.id AND a.attempt = j.attempt
         WHERE j.pipeline_id = $1 AND j.status = 'success' ORDER BY j.position, a.path",
    )
    .bind(pipeline)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter().map(artifact_from).collect()
}

/// Rows per INSERT of test cases, largest first: a report is stored in statements of these sizes, each
/// prepared once (8 parameters a row stays far under SQLite's 32,766 and PostgreSQL's 65,535).
const TEST_CASE_BATCHES: [usize; 4] = [1000, 100, 10, 1];

/// The INSERT of `rows` test cases (a size of [`TEST_CASE_BATCHES`]); a repeated completion (the worker
/// retrying a lost answer) brings the same cases again, which change nothing.
fn insert_test_cases_sql(rows: usize) -> &'static str {
    static SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
        TEST_CASE_BATCHES
            .iter()
            .map(|&rows| {
                let values: Vec<String> = (0..rows)
                    .map(|r| {
                        let params: Vec<String> = (1..=8).map(|c| format!("${}", r * 8 + c)).collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO test_cases (job_id, attempt, idx, suite, name, status, duration_ms, message) \
                     VALUES {} ON CONFLICT (job_id, attempt, idx) DO NOTHING",
                    values.join(", ")
                )
            })
            .collect()
    });
    let at = TEST_CASE_BATCHES
        .iter()
        .position(|&size| size == rows)
        .expect("a batch size of TEST_CASE_BATCHES");
    &SQL[at]
}

/// Stores an attempt's test cases, in the transaction that completes it.
pub(crate) async fn insert_test_cases(
    tx: &mut impl Exec,
    job: Uuid,
    attempt: u32,
    cases: &[TestCase],
) -> Result<()> {
    let mut done = 0;
    for size in TEST_CASE_BATCHES {
        while cases.len() - done >= size {
            let mut insert = query(insert_test_cases_sql(size));
            for (idx, case) in cases.iter().enumerate().skip(done).take(size) {
                insert = insert
                    .bind(job)
                    .bind(attempt)
                    .bind(int(idx as u64)?)
                    .bind(&case.suite)
                    .bind(&case.name)
                    .bind(case.status.as_str())
                    .bind(case.duration_ms.map(int).transpose()?)
                    .bind(case.message.as_deref());
            }
            insert.execute(tx).await?;
            done += size;
        }
    }
    Ok(())
}

pub(crate) async fn pipeline_tests(
    db: &impl Dialect,
    pipeline: Uuid,
) -> Result<Option<TestSummary>> {
    let mut reader = db.reader().await?;
    let counts = query(
        "SELECT t.status, COUNT(*) AS n FROM jobs j
         JOIN test_cases t ON t.job_id = j.id AND t.attempt = j.attempt
         WHERE j.pipeline_id = $1 GROUP BY t.status",
    )
    .bind(pipeline)
    .fetch_all(&mut reader)
    .await?;
    if counts.is_empty() {
        return Ok(None);
    }
    let mut summary = TestSummary::default();
    for row in &counts {
        let n: u64 = row.get("n")?;
        summary.total += n;
        match parse::<TestStatus>(row.get("status")?)? {
            TestStatus::Passed => summary.passed += n,
            TestStatus::Failed => summary.failed += n,
            TestStatus::Errored => summary.errored += n,
            TestStatus::Skipped => summary.skipped += n,
        }
    }
    let rows = query(
        "SELECT j.name AS job, t.suite, t.name, t.status, t.message FROM jobs j
         JOIN test_cases t ON t.job_id = j.id AND t.attempt = j.attempt
         WHERE j.pipeline_id = $1 AND t.status IN ('failed', 'errored')
         ORDER BY j.position, t.idx LIMIT $2",
    )
    .bind(pipeline)
    .bind(int(MAX_LISTED_FAILURES as u64)?)
    .fetch_all(&mut reader)
    .await?;
    for row in &rows {
        summary.failures.push(TestFailure {
            job: row.get("job")?,
            suite: row.get("suite")?,
            name: row.get("name")?,
            status: parse(row.get("status")?)?,
            message: row.get("message")?,
        });
    }
    Ok(Some(summary))
}
