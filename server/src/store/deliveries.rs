//! The SQL of webhook deliveries kept for users to see (DESIGN §3 `webhook_deliveries`), shared by both
//! dialects like `shared.rs`: `delivery_sql!` expands to free functions inside `impl_store!`.

macro_rules! delivery_columns {
    () => {
        "SELECT d.id, d.delivery_id, d.forge, d.event, d.outcome, d.reason, d.received_at,
                (SELECT p.number FROM pipelines p WHERE p.id = d.pipeline_id) AS pipeline_number"
    };
}

macro_rules! delivery_sql {
    ($db:ty) => {
        fn delivery_from(row: &DbRow, with_body: bool) -> Result<DeliveryRecord> {
            Ok(DeliveryRecord {
                id: row.try_get("id")?,
                delivery_id: row.try_get("delivery_id")?,
                forge: row.try_get("forge")?,
                event: row.try_get("event")?,
                outcome: row.try_get("outcome")?,
                reason: row.try_get("reason")?,
                pipeline: row.try_get("pipeline_number")?,
                received_at: row.try_get("received_at")?,
                body: if with_body { Some(row.try_get("body")?) } else { None },
            })
        }

        /// Records a delivery refused before it was parsed (bad signature, malformed body). Its id is made
        /// unique, so the forge's redelivery of the same id, once the secret is fixed, is not a duplicate.
        async fn insert_refused_delivery(tx: &mut Tx, d: &NewDelivery, reason: &str) -> Result<()> {
            sqlx::query(
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
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Deletes all but the newest `keep` refused deliveries of a repository, and all but the newest `keep`
        /// others: anyone can send unsigned requests, and they must not push the real deliveries out.
        async fn delete_old_deliveries(tx: &mut Tx, repo_id: i64, keep: u32) -> Result<u64> {
            let mut deleted = 0;
            for refused in [true, false] {
                let done = sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE repo_id = $1 AND (outcome = 'refused') = $3 AND id <
                       (SELECT MIN(kept.id) FROM (SELECT id FROM webhook_deliveries
                                                  WHERE repo_id = $1 AND (outcome = 'refused') = $3
                                                  ORDER BY id DESC LIMIT $2) AS kept)",
                )
                .bind(repo_id)
                .bind(i64::from(keep.max(1)))
                .bind(refused)
                .execute(&mut **tx)
                .await?;
                deleted += done.rows_affected();
            }
            Ok(deleted)
        }

        async fn select_recent_deliveries(pool: &sqlx::Pool<$db>, repo_id: i64, limit: u32) -> Result<Vec<DeliveryRecord>> {
            let sql = concat!(
                delivery_columns!(),
                " FROM webhook_deliveries d WHERE d.repo_id = $1 ORDER BY d.id DESC LIMIT $2"
            );
            let rows = sqlx::query(sql).bind(repo_id).bind(i64::from(limit)).fetch_all(pool).await?;
            rows.iter().map(|r| delivery_from(r, false)).collect()
        }

        async fn select_delivery(pool: &sqlx::Pool<$db>, repo_id: i64, id: i64) -> Result<Option<DeliveryRecord>> {
            let sql = concat!(delivery_columns!(), ", d.body FROM webhook_deliveries d WHERE d.repo_id = $1 AND d.id = $2");
            let row = sqlx::query(sql).bind(repo_id).bind(id).fetch_optional(pool).await?;
            row.map(|r| delivery_from(&r, true)).transpose()
        }
    };
}
