//! The SQL of a repository's secrets (sealed by `crate::secrets`; the store never sees a plain value), shared by
//! both dialects like `shared.rs`: `secret_sql!` expands to free functions inside `impl_store!`, whose `Store`
//! methods call them.

macro_rules! secret_sql {
    ($db:ty) => {
        async fn set_repo_secret(pool: &sqlx::Pool<$db>, repo_id: i64, name: &str, sealed: &[u8]) -> Result<()> {
            sqlx::query(
                "INSERT INTO repo_secrets (repo_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(name)
            .bind(sealed)
            .bind(Utc::now())
            .execute(pool)
            .await?;
            Ok(())
        }

        async fn delete_repo_secret(pool: &sqlx::Pool<$db>, repo_id: i64, name: &str) -> Result<bool> {
            let done = sqlx::query("DELETE FROM repo_secrets WHERE repo_id = $1 AND name = $2")
                .bind(repo_id)
                .bind(name)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn list_repo_secrets(pool: &sqlx::Pool<$db>, repo_id: i64) -> Result<Vec<SecretRecord>> {
            let rows = sqlx::query("SELECT name, updated_at FROM repo_secrets WHERE repo_id = $1 ORDER BY name")
                .bind(repo_id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| Ok(SecretRecord { name: row.try_get("name")?, updated_at: row.try_get("updated_at")? }))
                .collect()
        }

        async fn sealed_repo_secrets(pool: &sqlx::Pool<$db>, repo_id: i64) -> Result<Vec<(String, Vec<u8>)>> {
            let rows = sqlx::query("SELECT name, sealed FROM repo_secrets WHERE repo_id = $1 ORDER BY name")
                .bind(repo_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| Ok((row.try_get("name")?, row.try_get("sealed")?))).collect()
        }
    };
}
