//! The instances a provider made outside this server (migration 0014): the worker name each was given, the id its
//! provider knows it by, and its own registration token. Kept in the database so that the server taking a pool
//! over, or this one after a restart, destroys what it did not make itself.

use super::db::{Exec, Row, Transaction, query};
use super::dialect::Dialect;
use super::{PoolInstance, Result};
use chrono::Utc;

pub(crate) async fn add_instance_token(
    db: &impl Dialect,
    pool: &str,
    name: &str,
    hash: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    // A name is reused once its instance is gone: the gone one's token goes with it.
    delete_token(&mut tx, pool, name).await?;
    query("INSERT INTO tokens (hash, kind, pool, name, created_at) VALUES ($1, 'provider', $2, $3, $4)")
        .bind(hash)
        .bind(pool)
        .bind(name)
        .bind(Utc::now())
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

pub(crate) async fn record_instance(
    db: &impl Dialect,
    pool: &str,
    it: &PoolInstance,
) -> Result<()> {
    query(
        "INSERT INTO pool_instances (pool, name, instance, created_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (pool, name) DO UPDATE SET instance = excluded.instance, created_ms = excluded.created_ms",
    )
    .bind(pool)
    .bind(&it.name)
    .bind(&it.instance)
    .bind(it.created_ms)
    .execute(&mut db.writer().await?)
    .await?;
    Ok(())
}

pub(crate) async fn pool_instances(db: &impl Dialect, pool: &str) -> Result<Vec<PoolInstance>> {
    let rows = query(
        "SELECT name, instance, created_ms FROM pool_instances WHERE pool = $1 ORDER BY name",
    )
    .bind(pool)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PoolInstance {
                name: row.get("name")?,
                instance: row.get("instance")?,
                created_ms: row.get("created_ms")?,
            })
        })
        .collect()
}

pub(crate) async fn forget_instance(db: &impl Dialect, pool: &str, name: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    query("DELETE FROM pool_instances WHERE pool = $1 AND name = $2")
        .bind(pool)
        .bind(name)
        .execute(&mut tx)
        .await?;
    delete_token(&mut tx, pool, name).await?;
    tx.commit().await
}

pub(crate) async fn remove_instance_token(db: &impl Dialect, pool: &str, name: &str) -> Result<()> {
    delete_token(&mut db.writer().await?, pool, name).await
}

/// Removes the registration token of `pool`'s instance `name`.
async fn delete_token(exec: &mut impl Exec, pool: &str, name: &str) -> Result<()> {
    query("DELETE FROM tokens WHERE kind = 'provider' AND pool = $1 AND name = $2")
        .bind(pool)
        .bind(name)
        .execute(exec)
        .await?;
    Ok(())
}
