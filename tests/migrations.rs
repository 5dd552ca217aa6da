//! The two dialects' migrations make the same schema: an empty database of each, migrated from 0001 to the
//! newest by the store itself, has the same tables with the same columns (types differ by dialect, names do not).

mod support;

use sqlx::Row;
use std::collections::BTreeSet;
use std::time::Duration;

/// `table.column` of every table Gantry made (sqlx's own bookkeeping aside).
type Schema = BTreeSet<String>;

async fn sqlite_schema() -> Schema {
    let file = support::scratch_dir("migrations").join("gantry.db");
    let url = format!("sqlite://{}", file.display());
    gantry_server::store::connect(&url).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
           AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for table in tables {
        let table: String = table.get("name");
        let columns = sqlx::query("SELECT name FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(&pool)
            .await
            .unwrap();
        for column in columns {
            schema.insert(format!("{table}.{}", column.get::<String, _>("name")));
        }
    }
    schema
}

async fn postgres_schema() -> Schema {
    let url = support::postgres::fresh_database().await;
    gantry_server::store::connect(&url).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let columns = sqlx::query(
        "SELECT table_name::TEXT AS t, column_name::TEXT AS c FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    columns
        .iter()
        .map(|row| {
            format!(
                "{}.{}",
                row.get::<String, _>("t"),
                row.get::<String, _>("c")
            )
        })
        .collect()
}

#[test]
fn both_dialects_migrate_an_empty_database_to_the_same_tables_and_columns() {
    support::run(Duration::from_secs(120), async {
        let (sqlite, postgres) = (sqlite_schema().await, postgres_schema().await);
        assert!(sqlite.contains("jobs.lease_id"), "{sqlite:?}");
        let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
        let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
        assert!(
            only_sqlite.is_empty() && only_postgres.is_empty(),
            "only on SQLite: {only_sqlite:?}\nonly on PostgreSQL: {only_postgres:?}"
        );
    });
}
