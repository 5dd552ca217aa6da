//! Workers: registration (by name, with a fresh token each time); the rest of their life is in `pools.rs`.

use super::db::{Row, Transaction, query};
use super::dialect::Dialect;
use super::{NewWorker, Result, StoreError};
use chrono::Utc;
use uuid::Uuid;

pub(crate) async fn register_worker(
    db: &impl Dialect,
    w: &NewWorker,
    token_hash: &str,
) -> Result<Uuid> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let id: Uuid = query(
        "INSERT INTO workers (id, name, pool, labels, capacity, protocol_version, state, registered_at, last_seen,
           idle_since_ms, draining, managed)
         VALUES ($1, $2, $3, $4, $5, $6, 'idle', $7, $7, $8, FALSE, $9)
         ON CONFLICT (name) DO UPDATE SET labels = excluded.labels,
           capacity = excluded.capacity, protocol_version = excluded.protocol_version,
           state = 'idle', registered_at = excluded.registered_at, last_seen = excluded.last_seen,
           idle_since_ms = excluded.idle_since_ms, draining = FALSE, managed = excluded.managed
         WHERE workers.pool = excluded.pool
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(&w.name)
    .bind(&w.pool)
    .bind(serde_json::to_string(&w.labels).expect("labels serialise"))
    .bind(w.capacity)
    .bind(w.protocol_version)
    .bind(now)
    .bind(now.timestamp_millis())
    .bind(w.managed)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| StoreError::Conflict(format!("a worker named {:?} in another pool", w.name)))?
    .get("id")?;
    query("DELETE FROM tokens WHERE worker_id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    query("INSERT INTO tokens (hash, kind, worker_id, created_at) VALUES ($1, 'worker', $2, $3)")
        .bind(token_hash)
        .bind(id)
        .bind(now)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}
