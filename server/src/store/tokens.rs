//! Tokens: the admin's, pools', workers' and scoped API tokens, stored as hashes.

use super::db::{Row, Transaction, parse, query};
use super::dialect::Dialect;
use super::{ApiTokenRecord, Result, StoreError, TokenRecord};
use chrono::Utc;
use gantry_model::wire::Scope;
use uuid::Uuid;

pub(crate) async fn bootstrap(
    db: &impl Dialect,
    admin_hash: &str,
    pool_hash: &str,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let admins: i64 = query("SELECT COUNT(*) AS n FROM tokens WHERE kind = 'admin'")
        .fetch_one(&mut tx)
        .await?
        .get("n")?;
    if admins > 0 {
        return Ok(false);
    }
    let now = Utc::now();
    query("INSERT INTO pools (name, created_at) VALUES ('default', $1) ON CONFLICT DO NOTHING")
        .bind(now)
        .execute(&mut tx)
        .await?;
    query("INSERT INTO tokens (hash, kind, created_at) VALUES ($1, 'admin', $2)")
        .bind(admin_hash)
        .bind(now)
        .execute(&mut tx)
        .await?;
    query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, 'pool', 'default', $2)")
        .bind(pool_hash)
        .bind(now)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn find_token(db: &impl Dialect, hash: &str) -> Result<Option<TokenRecord>> {
    let Some(row) = query(
        "SELECT t.kind, t.pool, t.worker_id, t.name, t.scope, w.name AS worker_name
         FROM tokens t LEFT JOIN workers w ON w.id = t.worker_id WHERE t.hash = $1",
    )
    .bind(hash)
    .fetch_optional(&mut db.reader().await?)
    .await?
    else {
        return Ok(None);
    };
    let kind: String = row.get("kind")?;
    Ok(match kind.as_str() {
        "admin" => Some(TokenRecord::Admin),
        "api" => Some(TokenRecord::Api {
            name: row.get("name")?,
            scope: parse(row.get("scope")?)?,
        }),
        "pool" => row.get::<Option<String>>("pool")?.map(TokenRecord::Pool),
        "provider" => {
            let worker = row.get::<Option<String>>("name")?;
            row.get::<Option<String>>("pool")?
                .map(|pool| TokenRecord::Provider { pool, worker })
        }
        "worker" => {
            let id: Option<Uuid> = row.get("worker_id")?;
            let name: Option<String> = row.get("worker_name")?;
            id.zip(name)
                .map(|(id, name)| TokenRecord::Worker { id, name })
        }
        _ => None,
    })
}

pub(crate) async fn add_pool_token(db: &impl Dialect, hash: &str, pool: &str) -> Result<()> {
    add_token_of_kind(db, hash, pool, "pool").await
}

pub(crate) async fn add_provider_token(db: &impl Dialect, hash: &str, pool: &str) -> Result<()> {
    add_token_of_kind(db, hash, pool, "provider").await
}

pub(crate) async fn remove_provider_token(db: &impl Dialect, hash: &str) -> Result<()> {
    query("DELETE FROM tokens WHERE hash = $1 AND kind = 'provider'")
        .bind(hash)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(())
}

async fn add_token_of_kind(db: &impl Dialect, hash: &str, pool: &str, kind: &str) -> Result<()> {
    query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, $4, $2, $3)")
        .bind(hash)
        .bind(pool)
        .bind(Utc::now())
        .bind(kind)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(())
}

pub(crate) async fn create_api_token(
    db: &impl Dialect,
    name: &str,
    scope: Scope,
    hash: &str,
) -> Result<ApiTokenRecord> {
    let created_at = Utc::now();
    let mut writer = db.writer().await?;
    let taken = query("SELECT 1 AS taken FROM tokens WHERE kind = 'api' AND name = $1")
        .bind(name)
        .fetch_optional(&mut writer)
        .await?;
    let inserted = match taken {
        Some(_) => Ok(0),
        None => {
            query("INSERT INTO tokens (hash, kind, name, scope, created_at) VALUES ($1, 'api', $2, $3, $4)")
                .bind(hash)
                .bind(name)
                .bind(scope.as_str())
                .bind(created_at)
                .execute(&mut writer)
                .await
        }
    };
    match inserted {
        Ok(1) => Ok(ApiTokenRecord {
            name: name.to_owned(),
            scope,
            created_at,
        }),
        // Two creations racing for one name: the unique index refuses the second.
        Ok(_) | Err(StoreError::Database(sqlx::Error::Database(_))) => {
            Err(StoreError::Conflict(format!("a token named {name:?}")))
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn list_api_tokens(db: &impl Dialect) -> Result<Vec<ApiTokenRecord>> {
    let rows = query("SELECT name, scope, created_at FROM tokens WHERE kind = 'api' ORDER BY name")
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ApiTokenRecord {
                name: row.get("name")?,
                scope: parse(row.get("scope")?)?,
                created_at: row.get("created_at")?,
            })
        })
        .collect()
}

pub(crate) async fn revoke_api_token(db: &impl Dialect, name: &str) -> Result<bool> {
    let deleted = query("DELETE FROM tokens WHERE kind = 'api' AND name = $1")
        .bind(name)
        .execute(&mut db.writer().await?)
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn set_admin_token(db: &impl Dialect, hash: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    query("DELETE FROM tokens WHERE kind = 'admin' AND hash <> $1")
        .bind(hash)
        .execute(&mut tx)
        .await?;
    query("INSERT INTO tokens (hash, kind, created_at) VALUES ($1, 'admin', $2) ON CONFLICT DO NOTHING")
        .bind(hash)
        .bind(Utc::now())
        .execute(&mut tx)
        .await?;
    tx.commit().await
}
