//! A repository's secrets, sealed by `crate::secrets`: the store never sees a plain value.

use super::db::{Row, query};
use super::dialect::Dialect;
use super::{Result, SecretRecord};
use chrono::Utc;

/// A secret's sealed value, for the job that needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    /// Its name.
    pub name: String,
    /// Its value, sealed.
    pub sealed: Vec<u8>,
}

pub(crate) async fn set_repo_secret(
    db: &impl Dialect,
    repo_id: i64,
    name: &str,
    sealed: &[u8],
) -> Result<()> {
    query(
        "INSERT INTO repo_secrets (repo_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(repo_id)
    .bind(name)
    .bind(sealed)
    .bind(Utc::now())
    .execute(&mut db.writer().await?)
    .await?;
    Ok(())
}

pub(crate) async fn delete_repo_secret(
    db: &impl Dialect,
    repo_id: i64,
    name: &str,
) -> Result<bool> {
    let deleted = query("DELETE FROM repo_secrets WHERE repo_id = $1 AND name = $2")
        .bind(repo_id)
        .bind(name)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn list_repo_secrets(
    db: &impl Dialect,
    repo_id: i64,
) -> Result<Vec<SecretRecord>> {
    let rows = query("SELECT name, updated_at FROM repo_secrets WHERE repo_id = $1 ORDER BY name")
        .bind(repo_id)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SecretRecord {
                name: row.get("name")?,
                updated_at: row.get("updated_at")?,
            })
        })
        .collect()
}

pub(crate) async fn sealed_repo_secrets(
    db: &impl Dialect,
    repo_id: i64,
) -> Result<Vec<SealedSecret>> {
    let rows = query("SELECT name, sealed FROM repo_secrets WHERE repo_id = $1 ORDER BY name")
        .bind(repo_id)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SealedSecret {
                name: row.get("name")?,
                sealed: row.get("sealed")?,
            })
        })
        .collect()
}
