//! The SQL of artifacts and test reports, shared by both dialects like `shared.rs`: `artifact_sql!` expands to
//! free functions inside `impl_store!`, whose `Store` methods call them (one line each there).

macro_rules! artifact_sql {
    ($db:ty) => {
        use gantry_model::junit::{TestCase, TestStatus};
        use gantry_model::wire::{ArtifactRef, MAX_LISTED_FAILURES, TestFailure, TestSummary};

        /// Rows per INSERT of test cases: 7 parameters each stays far under SQLite's 32,766.
        const TEST_CASE_BATCH: usize = 1000;

        fn artifact_from(row: &DbRow) -> Result<ArtifactRef> {
            Ok(ArtifactRef {
                job: row.try_get("name")?,
                job_id: row.try_get("job_id")?,
                path: row.try_get("path")?,
                size: row.try_get::<i64, _>("size_bytes")? as u64,
                sha256: row.try_get("sha256")?,
                mode: row.try_get::<i64, _>("mode")? as u32,
            })
        }

        async fn artifact_quota(pool: &sqlx::Pool<$db>, job: Uuid, lease: Uuid) -> Result<(u32, u64)> {
            let row = sqlx::query(
                "SELECT j.attempt, (SELECT CAST(COALESCE(SUM(a.size_bytes), 0) AS BIGINT) FROM artifacts a
                                    WHERE a.job_id = j.id AND a.attempt = j.attempt) AS used
                 FROM jobs j WHERE j.id = $1 AND j.lease_id = $2 AND j.status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .fetch_optional(pool)
            .await?
            .ok_or(StoreError::StaleLease(job))?;
            Ok((row.try_get::<i64, _>("attempt")? as u32, row.try_get::<i64, _>("used")? as u64))
        }

        async fn record_artifact(pool: &sqlx::Pool<$db>, job: Uuid, lease: Uuid, artifact: &NewArtifact) -> Result<()> {
            // Fenced like every worker call: the row is written only while `lease` is the running job's lease.
            let written = sqlx::query(
                "INSERT INTO artifacts (job_id, attempt, path, size_bytes, sha256, mode, created_at)
                 SELECT id, attempt, $3, $4, $5, $6, $7 FROM jobs WHERE id = $1 AND lease_id = $2 AND status = 'running'
                 ON CONFLICT (job_id, attempt, path)
                 DO UPDATE SET size_bytes = excluded.size_bytes, sha256 = excluded.sha256, mode = excluded.mode,
                               created_at = excluded.created_at",
            )
            .bind(job)
            .bind(lease)
            .bind(&artifact.path)
            .bind(artifact.size as i64)
            .bind(&artifact.sha256)
            .bind(i64::from(artifact.mode))
            .bind(Utc::now())
            .execute(pool)
            .await?;
            if written.rows_affected() == 0 {
                return Err(StoreError::StaleLease(job));
            }
            Ok(())
        }

        async fn job_artifacts(pool: &sqlx::Pool<$db>, job: Uuid, attempt: u32) -> Result<Vec<ArtifactRef>> {
            let rows = sqlx::query(
                "SELECT j.name, a.job_id, a.path, a.size_bytes, a.sha256, a.mode
                 FROM artifacts a JOIN jobs j ON j.id = a.job_id
                 WHERE a.job_id = $1 AND a.attempt = $2 ORDER BY a.path",
            )
            .bind(job)
            .bind(i64::from(attempt))
            .fetch_all(pool)
            .await?;
            rows.iter().map(artifact_from).collect()
        }

        async fn pipeline_artifacts(pool: &sqlx::Pool<$db>, pipeline: Uuid) -> Result<Vec<ArtifactRef>> {
            let rows = sqlx::query(
                "SELECT j.name, a.job_id, a.path, a.size_bytes, a.sha256, a.mode
                 FROM jobs j JOIN artifacts a ON a.job_id = j.id AND a.attempt = j.attempt
                 WHERE j.pipeline_id = $1 AND j.status = 'success' ORDER BY j.position, a.path",
            )
            .bind(pipeline)
            .fetch_all(pool)
            .await?;
            rows.iter().map(artifact_from).collect()
        }

        /// Stores an attempt's test cases, in the transaction that completes it.
        async fn insert_test_cases(
            tx: &mut Tx,
            job: Uuid,
            attempt: u32,
            cases: &[TestCase],
        ) -> Result<()> {
            for (batch_no, batch) in cases.chunks(TEST_CASE_BATCH).enumerate() {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO test_cases (job_id, attempt, idx, suite, name, status, duration_ms, message) ",
                );
                insert.push_values(batch.iter().enumerate(), |mut row, (i, case)| {
                    row.push_bind(job)
                        .push_bind(i64::from(attempt))
                        .push_bind((batch_no * TEST_CASE_BATCH + i) as i64)
                        .push_bind(case.suite.clone())
                        .push_bind(case.name.clone())
                        .push_bind(case.status.as_str())
                        .push_bind(case.duration_ms.map(|ms| ms as i64))
                        .push_bind(case.message.clone());
                });
                // A repeated completion (the worker retrying a lost answer) brings the same cases again.
                insert.push(" ON CONFLICT (job_id, attempt, idx) DO NOTHING");
                insert.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        async fn pipeline_tests(pool: &sqlx::Pool<$db>, pipeline: Uuid) -> Result<Option<TestSummary>> {
            let counts = sqlx::query(
                "SELECT t.status, COUNT(*) AS n FROM jobs j
                 JOIN test_cases t ON t.job_id = j.id AND t.attempt = j.attempt
                 WHERE j.pipeline_id = $1 GROUP BY t.status",
            )
            .bind(pipeline)
            .fetch_all(pool)
            .await?;
            if counts.is_empty() {
                return Ok(None);
            }
            let mut summary = TestSummary::default();
            for row in &counts {
                let n = row.try_get::<i64, _>("n")? as u64;
                summary.total += n;
                match parse::<TestStatus>(row.try_get("status")?)? {
                    TestStatus::Passed => summary.passed += n,
                    TestStatus::Failed => summary.failed += n,
                    TestStatus::Errored => summary.errored += n,
                    TestStatus::Skipped => summary.skipped += n,
                }
            }
            let rows = sqlx::query(
                "SELECT j.name AS job, t.suite, t.name, t.status, t.message FROM jobs j
                 JOIN test_cases t ON t.job_id = j.id AND t.attempt = j.attempt
                 WHERE j.pipeline_id = $1 AND t.status IN ('failed', 'errored')
                 ORDER BY j.position, t.idx LIMIT $2",
            )
            .bind(pipeline)
            .bind(MAX_LISTED_FAILURES as i64)
            .fetch_all(pool)
            .await?;
            for row in &rows {
                summary.failures.push(TestFailure {
                    job: row.try_get("job")?,
                    suite: row.try_get("suite")?,
                    name: row.try_get("name")?,
                    status: parse(row.try_get("status")?)?,
                    message: row.try_get("message")?,
                });
            }
            Ok(Some(summary))
        }
    };
}
