//! Job logs: chunks appended by the worker under its lease, read back a window at a time.

use super::db::{Row, Transaction, int, query};
use super::dialect::Dialect;
use super::jobs::{Lease, leased};
use super::{Appended, Result, StoreError};
use chrono::Utc;
use uuid::Uuid;

pub(crate) async fn append_log(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
    offset: u64,
    data: &[u8],
    cap: u64,
) -> Result<Appended> {
    let mut tx = db.begin().await?;
    let Lease {
        attempt,
        log_length: length,
    } = leased(&mut tx, job, lease).await?;
    let unchanged = Appended {
        attempt,
        offset: length,
        data: Vec::new(),
        length,
    };
    // The marker always takes the log past the cap, so a log longer than the cap is marked already.
    if length > cap || (length == cap && offset + data.len() as u64 <= length) {
        return Ok(unchanged);
    }
    if offset > length {
        return Err(StoreError::LogGap { offset, length });
    }
    let already = usize::try_from(length - offset).unwrap_or(usize::MAX);
    if already >= data.len() {
        return Ok(unchanged);
    }
    let mut new = data[already..].to_vec();
    if length + new.len() as u64 > cap {
        new.truncate(usize::try_from(cap - length).unwrap_or(usize::MAX));
        new.extend_from_slice(
            format!(
                "\n[gantry: the log reached its cap of {cap} bytes; the rest of the output was dropped]\n"
            )
            .as_bytes(),
        );
    }
    let end = length + new.len() as u64;
    query(
        "INSERT INTO log_chunks (job_id, attempt, start_offset, end_offset, data, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job)
    .bind(attempt)
    .bind(int(length)?)
    .bind(int(end)?)
    .bind(&new)
    .bind(Utc::now())
    .execute(&mut tx)
    .await?;
    // Re-checked in the UPDATE itself: without a row lock on the SELECT (PostgreSQL), a lease could have
    // changed hands in between.
    let updated = query(
        "UPDATE jobs SET log_length = $2 WHERE id = $1 AND lease_id = $3 AND log_length = $4",
    )
    .bind(job)
    .bind(int(end)?)
    .bind(lease)
    .bind(int(length)?)
    .execute(&mut tx)
    .await?;
    if updated != 1 {
        return Err(StoreError::StaleLease(job));
    }
    tx.commit().await?;
    Ok(Appended {
        attempt,
        offset: length,
        data: new,
        length: end,
    })
}

pub(crate) async fn read_log(
    db: &impl Dialect,
    job: Uuid,
    attempt: u32,
    from: u64,
    max: usize,
) -> Result<Vec<u8>> {
    // Only the chunks that overlap [from, from + max): a reader of a big log holds one window.
    let until = from.saturating_add(max as u64).min(i64::MAX as u64);
    let rows = query(
        "SELECT start_offset, data FROM log_chunks
         WHERE job_id = $1 AND attempt = $2 AND end_offset > $3 AND start_offset < $4
         ORDER BY start_offset",
    )
    .bind(job)
    .bind(attempt)
    .bind(int(from.min(i64::MAX as u64))?)
    .bind(int(until)?)
    .fetch_all(&mut db.reader().await?)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let start: u64 = row.get("start_offset")?;
        let data: Vec<u8> = row.get("data")?;
        let skip = usize::try_from(from.saturating_sub(start)).unwrap_or(usize::MAX);
        let room = max - out.len();
        let piece = &data[skip.min(data.len())..];
        out.extend_from_slice(&piece[..piece.len().min(room)]);
    }
    Ok(out)
}

pub(crate) async fn log_length(db: &impl Dialect, job: Uuid, attempt: u32) -> Result<u64> {
    // The last chunk by the primary key's order ends the log: one index lookup, whatever its size.
    let row = query(
        "SELECT end_offset FROM log_chunks WHERE job_id = $1 AND attempt = $2
         ORDER BY start_offset DESC LIMIT 1",
    )
    .bind(job)
    .bind(attempt)
    .fetch_optional(&mut db.reader().await?)
    .await?;
    row.map_or(Ok(0), |row| row.get("end_offset"))
}
