//! Repositories: registration, settings and sealed credentials.

use super::db::{Row, Transaction, json, query};
use super::dialect::Dialect;
use super::{NewRepoRecord, RepoCredential, RepoRecord, Result, StoreError};
use chrono::Utc;
use const_format::concatcp;
use gantry_model::wire::RepoSettings;

/// The columns [`repo_from`] reads.
const REPO_COLUMNS: &str = "id, name, url, forge, forge_full_name, secret, created_at, cancel_previous, \
     fork_host_image, private, max_running_jobs, pools, forge_api_url, status_context, \
     clone_credential IS NOT NULL AS has_clone_token, status_token IS NOT NULL AS has_status_token";

const SELECT_REPOS: &str = concatcp!("SELECT ", REPO_COLUMNS, " FROM repos ");
const SELECT_REPO_NAMED: &str = concatcp!(SELECT_REPOS, "WHERE name = $1");

fn repo_from(row: &impl Row) -> Result<RepoRecord> {
    Ok(RepoRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        url: row.get("url")?,
        forge: row.get("forge")?,
        forge_full_name: row.get("forge_full_name")?,
        secret: row.get("secret")?,
        created_at: row.get("created_at")?,
        cancel_previous: row.get("cancel_previous")?,
        fork_host_image: row.get("fork_host_image")?,
        private: row.get("private")?,
        max_running_jobs: row.get("max_running_jobs")?,
        pools: row
            .get::<Option<String>>("pools")?
            .map(|p| json(&p))
            .transpose()?,
        forge_api_url: row.get("forge_api_url")?,
        status_context: row.get("status_context")?,
        has_clone_token: row.get("has_clone_token")?,
        has_status_token: row.get("has_status_token")?,
    })
}

pub(crate) async fn create_repo(db: &impl Dialect, repo: &NewRepoRecord) -> Result<RepoRecord> {
    const SQL: &str = concatcp!(
        "INSERT INTO repos (name, url, forge, forge_full_name, secret, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING ",
        REPO_COLUMNS
    );
    let row = query(SQL)
        .bind(&repo.name)
        .bind(&repo.url)
        .bind(&repo.forge)
        .bind(repo.forge_full_name.as_deref())
        .bind(&repo.secret)
        .bind(Utc::now())
        .fetch_optional(&mut db.writer().await?)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("repository {:?}", repo.name)))?;
    repo_from(&row)
}

pub(crate) async fn list_repos(db: &impl Dialect) -> Result<Vec<RepoRecord>> {
    const SQL: &str = concatcp!(SELECT_REPOS, "ORDER BY name");
    let rows = query(SQL).fetch_all(&mut db.reader().await?).await?;
    rows.iter().map(repo_from).collect()
}

pub(crate) async fn get_repo(db: &impl Dialect, name: &str) -> Result<Option<RepoRecord>> {
    let row = query(SELECT_REPO_NAMED)
        .bind(name)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    row.as_ref().map(repo_from).transpose()
}

pub(crate) async fn running_jobs(db: &impl Dialect, repo_id: i64) -> Result<u64> {
    query(
        "SELECT COUNT(*) AS n FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
         WHERE p.repo_id = $1 AND j.status = 'running'",
    )
    .bind(repo_id)
    .fetch_one(&mut db.reader().await?)
    .await?
    .get("n")
}

pub(crate) async fn update_repo_settings(
    db: &impl Dialect,
    name: &str,
    settings: &RepoSettings,
) -> Result<RepoRecord> {
    let mut tx = db.begin().await?;
    let flags = [
        (
            "UPDATE repos SET cancel_previous = $2 WHERE name = $1",
            settings.cancel_previous,
        ),
        (
            "UPDATE repos SET fork_host_image = $2 WHERE name = $1",
            settings.fork_host_image,
        ),
        (
            "UPDATE repos SET private = $2 WHERE name = $1",
            settings.private,
        ),
    ];
    for (sql, value) in flags {
        if let Some(value) = value {
            query(sql).bind(name).bind(value).execute(&mut tx).await?;
        }
    }
    // An empty text clears the setting (back to the derived API URL, the server's context).
    let texts = [
        (
            "UPDATE repos SET forge_api_url = $2 WHERE name = $1",
            &settings.forge_api_url,
        ),
        (
            "UPDATE repos SET status_context = $2 WHERE name = $1",
            &settings.status_context,
        ),
    ];
    for (sql, value) in texts {
        if let Some(value) = value {
            let value = (!value.is_empty()).then_some(value.as_str());
            query(sql).bind(name).bind(value).execute(&mut tx).await?;
        }
    }
    if let Some(max) = settings.max_running_jobs {
        query("UPDATE repos SET max_running_jobs = $2 WHERE name = $1")
            .bind(name)
            .bind((max > 0).then_some(max))
            .execute(&mut tx)
            .await?;
    }
    if let Some(pools) = &settings.pools {
        let pools =
            (!pools.is_empty()).then(|| serde_json::to_string(pools).expect("names serialise"));
        query("UPDATE repos SET pools = $2 WHERE name = $1")
            .bind(name)
            .bind(pools)
            .execute(&mut tx)
            .await?;
    }
    let row = query(SELECT_REPO_NAMED)
        .bind(name)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("repository {name:?}")))?;
    tx.commit().await?;
    repo_from(&row)
}

pub(crate) async fn set_repo_credential(
    db: &impl Dialect,
    repo_id: i64,
    which: RepoCredential,
    sealed: Option<&[u8]>,
) -> Result<()> {
    let sql = match which {
        RepoCredential::Clone => "UPDATE repos SET clone_credential = $2 WHERE id = $1",
        RepoCredential::Status => "UPDATE repos SET status_token = $2 WHERE id = $1",
    };
    let changed = query(sql)
        .bind(repo_id)
        .bind(sealed)
        .execute(&mut db.writer().await?)
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("repository {repo_id}")));
    }
    Ok(())
}

pub(crate) async fn repo_credential(
    db: &impl Dialect,
    repo_id: i64,
    which: RepoCredential,
) -> Result<Option<Vec<u8>>> {
    let sql = match which {
        RepoCredential::Clone => "SELECT clone_credential AS sealed FROM repos WHERE id = $1",
        RepoCredential::Status => "SELECT status_token AS sealed FROM repos WHERE id = $1",
    };
    let row = query(sql)
        .bind(repo_id)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    match row {
        Some(row) => row.get("sealed"),
        None => Err(StoreError::NotFound(format!("repository {repo_id}"))),
    }
}
