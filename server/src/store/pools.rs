//! Pools (migrations 0012–0014): their settings from the configuration file or the API, their tokens, the
//! autoscaler's decisions and turn, and the workers' side of it: state read from their jobs, draining,
//! deregistration, and the registrations that stopped calling.

use super::db::{Exec, Row, Transaction, json, query};
use super::dialect::Dialect;
use super::{PoolDecision, PoolRecord, Result, Standing, StoreError, WorkerRecord};
use chrono::{DateTime, Utc};
use const_format::concatcp;
use gantry_model::wire::{Pool, Provider, WorkerCounts};
use uuid::Uuid;

/// Decisions kept per pool.
pub const DECISIONS_KEPT: i64 = 200;

const POOL_COLUMNS: &str = "p.name, p.provider, p.labels, p.min_workers, p.max_workers, p.slots, p.warm,
    p.idle_timeout_ms, p.boot_timeout_ms, p.target_wait_ms, p.trusted, p.from_config, p.desired, p.booting,
    p.booting_workers, p.error, p.provider_settings";

/// A worker's state, read from what it runs: `draining`, else `busy` while it runs a job, else `idle`.
const WORKER_STATE: &str = "CASE WHEN w.draining THEN 'draining'
    WHEN EXISTS (SELECT 1 FROM jobs k WHERE k.status = 'running' AND k.worker_id = w.id) THEN 'busy'
    ELSE 'idle' END";

fn pool_from(row: &impl Row) -> Result<PoolRecord> {
    let provider: String = row.get("provider")?;
    let settings: ProviderSettings = match row.get::<Option<String>>("provider_settings")? {
        Some(text) => json(&text)?,
        None => ProviderSettings::default(),
    };
    Ok(PoolRecord {
        pool: Pool {
            name: row.get("name")?,
            provider: Provider::parse(&provider).map_err(StoreError::Corrupt)?,
            labels: json(&row.get::<String>("labels")?)?,
            min: row.get("min_workers")?,
            max: row.get("max_workers")?,
            slots: row.get("slots")?,
            warm: row.get("warm")?,
            idle_timeout_ms: row.get("idle_timeout_ms")?,
            boot_timeout_ms: row.get("boot_timeout_ms")?,
            target_wait_ms: row.get("target_wait_ms")?,
            trusted: row.get("trusted")?,
            exec: settings.exec,
            kubernetes: settings.kubernetes,
        },
        from_config: row.get("from_config")?,
        desired: row.get("desired")?,
        error: row.get("error")?,
        booting_workers: json(&row.get::<String>("booting_workers")?)?,
        workers: WorkerCounts {
            booting: row.get("booting")?,
            ..WorkerCounts::default()
        },
    })
}

/// The `provider_settings` column: what a provider needs beyond the pool's common keys.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ProviderSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<gantry_model::wire::ExecCommands>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubernetes: Option<gantry_model::wire::KubernetesSettings>,
}

async fn write_pool(tx: &mut impl Exec, pool: &Pool, from_config: bool) -> Result<u64> {
    query(
        "INSERT INTO pools (name, created_at, provider, labels, min_workers, max_workers, slots, warm,
           idle_timeout_ms, boot_timeout_ms, target_wait_ms, trusted, from_config, provider_settings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (name) DO UPDATE SET provider = excluded.provider, labels = excluded.labels,
           min_workers = excluded.min_workers, max_workers = excluded.max_workers, slots = excluded.slots,
           warm = excluded.warm, idle_timeout_ms = excluded.idle_timeout_ms,
           boot_timeout_ms = excluded.boot_timeout_ms, target_wait_ms = excluded.target_wait_ms,
           trusted = excluded.trusted, from_config = excluded.from_config,
           provider_settings = excluded.provider_settings",
    )
    .bind(&pool.name)
    .bind(Utc::now())
    .bind(pool.provider.as_str())
    .bind(serde_json::to_string(&pool.labels).expect("labels serialise"))
    .bind(pool.min)
    .bind(pool.max)
    .bind(pool.slots)
    .bind(pool.warm)
    .bind(pool.idle_timeout_ms)
    .bind(pool.boot_timeout_ms)
    .bind(pool.target_wait_ms)
    .bind(pool.trusted)
    .bind(from_config)
    .bind(
        (pool.exec.is_some() || pool.kubernetes.is_some()).then(|| {
            serde_json::to_string(&ProviderSettings {
                exec: pool.exec.clone(),
                kubernetes: pool.kubernetes.clone(),
            })
            .expect("settings serialise")
        }),
    )
    .execute(tx)
    .await?;
    // A worker's trust and labels follow its pool's, for the workers already registered too.
    query("UPDATE workers SET labels = $2 WHERE pool = $1")
        .bind(&pool.name)
        .bind(serde_json::to_string(&pool.labels).expect("labels serialise"))
        .execute(tx)
        .await
}

pub(crate) async fn apply_config_pools(db: &impl Dialect, pools: &[Pool]) -> Result<()> {
    let mut tx = db.begin().await?;
    // Pools the file no longer has stay (workers and tokens name them), but nobody scales them any more.
    query(
        "UPDATE pools SET from_config = FALSE, provider = 'manual', min_workers = 0, max_workers = 0,
           booting = 0, booting_workers = '[]', provider_settings = NULL
         WHERE from_config",
    )
    .execute(&mut tx)
    .await?;
    for pool in pools {
        write_pool(&mut tx, pool, true).await?;
    }
    tx.commit().await
}

pub(crate) async fn create_pool(db: &impl Dialect, pool: &Pool, token_hash: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let exists = query("SELECT name FROM pools WHERE name = $1")
        .bind(&pool.name)
        .fetch_optional(&mut tx)
        .await?;
    if exists.is_some() {
        return Err(StoreError::Conflict(format!(
            "a pool named {:?} exists",
            pool.name
        )));
    }
    write_pool(&mut tx, pool, false).await?;
    query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, 'pool', $2, $3)")
        .bind(token_hash)
        .bind(&pool.name)
        .bind(Utc::now())
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

pub(crate) async fn update_pool(db: &impl Dialect, pool: &Pool) -> Result<()> {
    let mut tx = db.begin().await?;
    let row = query("SELECT from_config FROM pools WHERE name = $1")
        .bind(&pool.name)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pool {}", pool.name)))?;
    if row.get::<bool>("from_config")? {
        return Err(StoreError::Conflict(format!(
            "pool {:?} comes from the configuration file (or is `gantry up`'s built-in one), which is applied at \
             every start: edit it there (a [[pool]] named default replaces the built-in one)",
            pool.name
        )));
    }
    write_pool(&mut tx, pool, false).await?;
    tx.commit().await
}

pub(crate) async fn rotate_pool_token(db: &impl Dialect, pool: &str, hash: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    if query("SELECT name FROM pools WHERE name = $1")
        .bind(pool)
        .fetch_optional(&mut tx)
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(format!("pool {pool}")));
    }
    query("DELETE FROM tokens WHERE kind = 'pool' AND pool = $1")
        .bind(pool)
        .execute(&mut tx)
        .await?;
    // Who registered with the old token goes with it (a leaked token's workers too); the server's own
    // provider's workers registered with its token, which stays.
    query(
        "DELETE FROM tokens WHERE kind = 'worker'
           AND worker_id IN (SELECT id FROM workers WHERE pool = $1 AND NOT managed)",
    )
    .bind(pool)
    .execute(&mut tx)
    .await?;
    query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, 'pool', $2, $3)")
        .bind(hash)
        .bind(pool)
        .bind(Utc::now())
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

pub(crate) async fn list_pool_records(db: &impl Dialect) -> Result<Vec<PoolRecord>> {
    let mut conn = db.reader().await?;
    let rows = query(concatcp!(
        "SELECT ",
        POOL_COLUMNS,
        " FROM pools p ORDER BY p.name"
    ))
    .fetch_all(&mut conn)
    .await?;
    let mut pools = rows.iter().map(pool_from).collect::<Result<Vec<_>>>()?;
    let counts = query(concatcp!(
        "SELECT w.pool, ",
        WORKER_STATE,
        " AS state, COUNT(*) AS n FROM workers w GROUP BY w.pool, 2"
    ))
    .fetch_all(&mut conn)
    .await?;
    for row in &counts {
        let (pool, state, n): (String, String, u32) =
            (row.get("pool")?, row.get("state")?, row.get("n")?);
        if let Some(p) = pools.iter_mut().find(|p| p.pool.name == pool) {
            match state.as_str() {
                "draining" => p.workers.draining = n,
                "busy" => p.workers.busy = n,
                _ => p.workers.idle = n,
            }
        }
    }
    Ok(pools)
}

pub(crate) async fn find_pool(db: &impl Dialect, name: &str) -> Result<Option<PoolRecord>> {
    let row = query(concatcp!(
        "SELECT ",
        POOL_COLUMNS,
        " FROM pools p WHERE p.name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut db.reader().await?)
    .await?;
    row.as_ref().map(pool_from).transpose()
}

pub(crate) async fn record_pool_decision(
    db: &impl Dialect,
    pool: &str,
    from: u32,
    to: u32,
    reason: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    query(
        "INSERT INTO pool_decisions (pool, at, from_workers, to_workers, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(pool)
    .bind(Utc::now())
    .bind(from)
    .bind(to)
    .bind(reason)
    .execute(&mut tx)
    .await?;
    query("UPDATE pools SET desired = $2 WHERE name = $1")
        .bind(pool)
        .bind(to)
        .execute(&mut tx)
        .await?;
    query(
        "DELETE FROM pool_decisions WHERE pool = $1 AND id <= (SELECT id FROM pool_decisions
           WHERE pool = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(pool)
    .bind(DECISIONS_KEPT)
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

pub(crate) async fn pool_decisions(db: &impl Dialect, pool: &str) -> Result<Vec<PoolDecision>> {
    let rows = query(
        "SELECT at, from_workers, to_workers, reason FROM pool_decisions WHERE pool = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(pool)
    .bind(DECISIONS_KEPT)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PoolDecision {
                at: row.get("at")?,
                from: row.get("from_workers")?,
                to: row.get("to_workers")?,
                reason: row.get("reason")?,
            })
        })
        .collect()
}

pub(crate) async fn set_pool_progress(
    db: &impl Dialect,
    pool: &str,
    booting: &[String],
    error: Option<&str>,
) -> Result<()> {
    query("UPDATE pools SET booting = $2, booting_workers = $3, error = $4 WHERE name = $1")
        .bind(pool)
        .bind(booting.len() as u32)
        .bind(serde_json::to_string(booting).expect("names serialise"))
        .bind(error)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(())
}

pub(crate) async fn take_pool_turn(
    db: &impl Dialect,
    pool: &str,
    server: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool> {
    let taken = query(
        "UPDATE pools SET scaler = $2, scaler_until_ms = $4
         WHERE name = $1 AND (scaler IS NULL OR scaler = $2 OR scaler_until_ms IS NULL OR scaler_until_ms < $3)",
    )
    .bind(pool)
    .bind(server)
    .bind(now_ms)
    .bind(until_ms)
    .execute(&mut db.writer().await?)
    .await?;
    Ok(taken == 1)
}

pub(crate) fn worker_from(row: &impl Row) -> Result<WorkerRecord> {
    Ok(WorkerRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        pool: row.get("pool")?,
        labels: json(&row.get::<String>("labels")?)?,
        capacity: row.get("capacity")?,
        state: row.get("state")?,
        last_seen: row.get("last_seen")?,
        idle_since_ms: row.get("idle_since_ms")?,
        managed: row.get("managed")?,
        running: row.get("running")?,
    })
}

pub(crate) async fn list_workers(db: &impl Dialect) -> Result<Vec<WorkerRecord>> {
    let rows = query(concatcp!(
        "SELECT w.id, w.name, w.pool, w.labels, w.capacity, ",
        WORKER_STATE,
        " AS state, w.last_seen,
           w.idle_since_ms, w.managed,
           (SELECT COUNT(*) FROM jobs k WHERE k.status = 'running' AND k.worker_id = w.id) AS running
         FROM workers w ORDER BY w.name"
    ))
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter().map(worker_from).collect()
}

pub(crate) async fn drain_worker(db: &impl Dialect, id: Uuid) -> Result<bool> {
    let drained = query("UPDATE workers SET draining = TRUE WHERE id = $1 AND NOT draining")
        .bind(id)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(drained == 1)
}

pub(crate) async fn touch_worker(db: &impl Dialect, id: Uuid) -> Result<Standing> {
    let row = query(
        "UPDATE workers SET last_seen = $2 WHERE id = $1
         RETURNING draining, EXISTS (SELECT 1 FROM tokens t WHERE t.worker_id = workers.id) AS has_token",
    )
    .bind(id)
    .bind(Utc::now())
    .fetch_optional(&mut db.writer().await?)
    .await?;
    Ok(match row {
        None => Standing::Gone,
        Some(row) if !row.get::<bool>("has_token")? => Standing::Gone,
        Some(row) if row.get::<bool>("draining")? => Standing::Draining,
        Some(_) => Standing::Serving,
    })
}

async fn delete_worker(tx: &mut impl Exec, id: Uuid) -> Result<()> {
    query("DELETE FROM tokens WHERE worker_id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    query("DELETE FROM workers WHERE id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

pub(crate) async fn deregister_worker(db: &impl Dialect, id: Uuid) -> Result<()> {
    let mut tx = db.begin().await?;
    delete_worker(&mut tx, id).await?;
    tx.commit().await
}

pub(crate) async fn remove_stale_workers(
    db: &impl Dialect,
    seen_before: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut tx = db.begin().await?;
    // A worker running a job is the lease expiry's to judge; one that runs nothing and stopped calling is gone.
    let rows = query(
        "SELECT w.id, w.name FROM workers w WHERE w.last_seen < $1 AND w.idle_since_ms < $2
           AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.status = 'running' AND k.worker_id = w.id)",
    )
    .bind(seen_before)
    // A worker that just finished a long job has not called since it took it, but its job's end counts.
    .bind(seen_before.timestamp_millis())
    .fetch_all(&mut tx)
    .await?;
    let mut names = Vec::with_capacity(rows.len());
    for row in &rows {
        delete_worker(&mut tx, row.get("id")?).await?;
        names.push(row.get("name")?);
    }
    tx.commit().await?;
    Ok(names)
}
