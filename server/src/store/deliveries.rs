//! Webhook deliveries kept for users to see (docs/data-model.md, "Webhook deliveries"): the newest of each repository,
//! refused ones apart from the others.

use super::db::{Exec, Row, Transaction, query};
use super::dialect::Dialect;
use super::{DeliveryRecord, NewDelivery, Result};
use chrono::Utc;
use const_format::concatcp;
use uuid::Uuid;

const DELIVERY_COLUMNS: &str =
    "SELECT d.id, d.delivery_id, d.forge, d.event, d.outcome, d.reason, d.received_at,
        (SELECT p.number FROM pipelines p WHERE p.id = d.pipeline_id) AS pipeline_number";

fn delivery_from(row: &impl Row, with_body: bool) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.get("id")?,
        delivery_id: row.get("delivery_id")?,
        forge: row.get("forge")?,
        event: row.get("event")?,
        outcome: row.get("outcome")?,
        reason: row.get("reason")?,
        pipeline: row.get("pipeline_number")?,
        received_at: row.get("received_at")?,
        body: if with_body {
            Some(row.get("body")?)
        } else {
            None
        },
    })
}

/// Records a delivery with its outcome; `None` when its id was seen already.
pub(crate) async fn insert_delivery(
    tx: &mut impl Exec,
    d: &NewDelivery,
    outcome: &str,
    reason: Option<&str>,
) -> Result<Option<i64>> {
    let row = query(
        "INSERT INTO webhook_deliveries (repo_id, delivery_id, forge, event, body, outcome, reason, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repo_id, delivery_id) DO NOTHING RETURNING id",
    )
    .bind(d.repo_id)
    .bind(&d.delivery_id)
    .bind(&d.forge)
    .bind(&d.event)
    .bind(&d.body)
    .bind(outcome)
    .bind(reason)
    .bind(Utc::now())
    .fetch_optional(tx)
    .await?;
    row.map(|r| r.get("id")).transpose()
}

pub(crate) async fn record_ignored_delivery(
    db: &impl Dialect,
    d: &NewDelivery,
    reason: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    insert_delivery(&mut tx, d, "ignored", Some(reason)).await?;
    tx.commit().await
}

/// Records a delivery refused before it was parsed (bad signature, malformed body). Its id is made unique, so
/// the forge's redelivery of the same id, once the secret is fixed, is not a duplicate.
pub(crate) async fn record_refused_delivery(
    db: &impl Dialect,
    d: &NewDelivery,
    reason: &str,
) -> Result<()> {
    query(
        "INSERT INTO webhook_deliveries (repo_id, delivery_id, forge, event, body, outcome, reason, received_at)
         VALUES ($1, $2, $3, $4, $5, 'refused', $6, $7)",
    )
    .bind(d.repo_id)
    .bind(format!("refused/{}/{}", Uuid::now_v7(), d.delivery_id))
    .bind(&d.forge)
    .bind(&d.event)
    .bind(&d.body)
    .bind(reason)
    .bind(Utc::now())
    .execute(&mut db.writer().await?)
    .await?;
    Ok(())
}

/// Deletes all but the newest `keep` refused deliveries of a repository, and all but the newest `keep` others:
/// anyone can send unsigned requests, and they must not push the real deliveries out.
pub(crate) async fn prune_deliveries(db: &impl Dialect, repo_id: i64, keep: u32) -> Result<u64> {
    let mut tx = db.begin().await?;
    let mut deleted = 0;
    for refused in [true, false] {
        deleted += query(
            "DELETE FROM webhook_deliveries WHERE repo_id = $1 AND (outcome = 'refused') = $3 AND id <
               (SELECT MIN(kept.id) FROM (SELECT id FROM webhook_deliveries
                                          WHERE repo_id = $1 AND (outcome = 'refused') = $3
                                          ORDER BY id DESC LIMIT $2) AS kept)",
        )
        .bind(repo_id)
        .bind(keep.max(1))
        .bind(refused)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

pub(crate) async fn recent_deliveries(
    db: &impl Dialect,
    repo_id: i64,
    limit: u32,
) -> Result<Vec<DeliveryRecord>> {
    const SQL: &str = concatcp!(
        DELIVERY_COLUMNS,
        " FROM webhook_deliveries d WHERE d.repo_id = $1 ORDER BY d.id DESC LIMIT $2"
    );
    let rows = query(SQL)
        .bind(repo_id)
        .bind(limit)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter().map(|r| delivery_from(r, false)).collect()
}

pub(crate) async fn get_delivery(
    db: &impl Dialect,
    repo_id: i64,
    id: i64,
) -> Result<Option<DeliveryRecord>> {
    const SQL: &str = concatcp!(
        DELIVERY_COLUMNS,
        ", d.body FROM webhook_deliveries d WHERE d.repo_id = $1 AND d.id = $2"
    );
    let row = query(SQL)
        .bind(repo_id)
        .bind(id)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    row.map(|r| delivery_from(&r, true)).transpose()
}
