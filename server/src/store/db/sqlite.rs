//! [`Exec`] on SQLite: through sqlx for reads and most writes, through rusqlite for the dispatch path (see
//! `store/sqlite/dispatch.rs`). Both encode values alike — UUIDs as 16-byte blobs, times as the RFC 3339 text of
//! [`timestamp`] — and read times with one parser, [`parse_time`]: what either connection writes, the other reads.

use super::{Exec, Query, Row, Transaction, Value};
use crate::store::{Result, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{FromSql, Null};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqliteRow};
use std::future::Future;
use std::sync::Arc;

/// A time as SQLite stores it here: RFC 3339 in UTC with as many fraction digits as it has (so text order is
/// time order only within one format: every write goes through this function).
pub(crate) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A stored time: [`timestamp`]'s RFC 3339, or SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]` (its `CURRENT_TIMESTAMP`
/// defaults), taken as UTC.
pub(crate) fn parse_time(text: String) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(&text) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| StoreError::Corrupt(format!("time {text:?}: {e}")))
}

/// `query` as sqlx's, its arguments bound in order.
fn prepare(query: Query<'_>) -> sqlx::query::Query<'_, Sqlite, SqliteArguments> {
    let mut prepared = sqlx::query(query.sql);
    for value in query.args {
        prepared = match value {
            Value::Int(v) => prepared.bind(v),
            Value::Real(v) => prepared.bind(v),
            Value::Bool(v) => prepared.bind(v),
            Value::Text(v) => prepared.bind(v),
            Value::Bytes(v) => prepared.bind(v),
            Value::Uuid(v) => prepared.bind(v),
            Value::Time(v) => prepared.bind(v.map(timestamp)),
        };
    }
    prepared
}

sqlx_exec!(SqliteConnection, SqliteRow, prepare, PoolConnection<Sqlite>);

/// A row rusqlite answered, copied out of its statement.
#[derive(Debug)]
pub(crate) struct OwnedRow {
    columns: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

impl OwnedRow {
    /// Column `name` through rusqlite's own conversion.
    pub(crate) fn native<T: FromSql>(&self, name: &str) -> Result<T> {
        let index = self
            .columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {name} in the answer")))?;
        T::column_result((&self.values[index]).into())
            .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
    }
}

impl Row for OwnedRow {
    fn get<T: super::Column>(&self, name: &str) -> Result<T> {
        T::from_rusqlite(self, name)
    }
}

/// The index of parameter `$n`. SQLite numbers named parameters (`$N` is one) in order of first use, which is
/// `n` itself when the statement uses them in order; otherwise it is looked up by name (a scan of them all).
fn parameter_index(statement: &rusqlite::Statement<'_>, n: usize) -> Result<usize> {
    let in_order = statement
        .parameter_name(n)
        .and_then(|name| name.strip_prefix('$'))
        .is_some_and(|digits| digits.parse() == Ok(n));
    if in_order {
        return Ok(n);
    }
    let name = format!("${n}");
    statement
        .parameter_index(&name)?
        .ok_or_else(|| StoreError::Corrupt(format!("{name} is bound but not in the statement")))
}

/// Runs `query` on `conn`, stepped to the end (a statement's write is done, and its implicit transaction
/// committed, only then); the rows changed and the rows answered.
fn run(conn: &rusqlite::Connection, query: Query<'_>) -> Result<(u64, Vec<OwnedRow>)> {
    let mut statement = conn.prepare_cached(query.sql)?;
    for (i, value) in query.args.into_iter().enumerate() {
        let index = parameter_index(&statement, i + 1)?;
        match value {
            Value::Int(Some(v)) => statement.raw_bind_parameter(index, v)?,
            Value::Real(Some(v)) => statement.raw_bind_parameter(index, v)?,
            Value::Bool(Some(v)) => statement.raw_bind_parameter(index, v)?,
            Value::Text(Some(v)) => statement.raw_bind_parameter(index, v.as_ref())?,
            Value::Bytes(Some(v)) => statement.raw_bind_parameter(index, v)?,
            Value::Uuid(Some(v)) => statement.raw_bind_parameter(index, v)?,
            Value::Time(Some(v)) => statement.raw_bind_parameter(index, timestamp(v))?,
            _ => statement.raw_bind_parameter(index, Null)?,
        }
    }
    let columns: Arc<[String]> = statement
        .column_names()
        .into_iter()
        .map(String::from)
        .collect();
    let mut rows = statement.raw_query();
    let mut answered = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns.len())
            .map(|i| row.get::<_, rusqlite::types::Value>(i))
            .collect::<rusqlite::Result<_>>()?;
        answered.push(OwnedRow {
            columns: columns.clone(),
            values,
        });
    }
    Ok((conn.changes(), answered))
}

/// The work is done when this is called; the future only hands the answer over (no thread is woken).
impl Exec for rusqlite::Connection {
    type Row = OwnedRow;

    fn execute(&mut self, query: Query<'_>) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(run(self, query).map(|(changed, _)| changed))
    }

    fn fetch_all(
        &mut self,
        query: Query<'_>,
    ) -> impl Future<Output = Result<Vec<OwnedRow>>> + Send {
        std::future::ready(run(self, query).map(|(_, rows)| rows))
    }
}

/// A write transaction on a rusqlite connection (`BEGIN IMMEDIATE`: it takes the write lock up front), rolled
/// back if dropped before [`Transaction::commit`].
pub(crate) struct RusqliteTx<'c> {
    conn: &'c mut rusqlite::Connection,
    open: bool,
}

impl<'c> RusqliteTx<'c> {
    /// Begins one on `conn`.
    pub(crate) fn begin(conn: &'c mut rusqlite::Connection) -> Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Self { conn, open: true })
    }
}

impl Exec for RusqliteTx<'_> {
    type Row = OwnedRow;

    fn execute(&mut self, query: Query<'_>) -> impl Future<Output = Result<u64>> + Send {
        self.conn.execute(query)
    }

    fn fetch_all(
        &mut self,
        query: Query<'_>,
    ) -> impl Future<Output = Result<Vec<OwnedRow>>> + Send {
        self.conn.fetch_all(query)
    }
}

impl Transaction for RusqliteTx<'_> {
    fn commit(mut self) -> impl Future<Output = Result<()>> + Send {
        let committed = self.conn.execute_batch("COMMIT");
        self.open = committed.is_err();
        std::future::ready(committed.map_err(StoreError::from))
    }
}

impl Drop for RusqliteTx<'_> {
    fn drop(&mut self) {
        if self.open
            && let Err(error) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(%error, "cannot roll back a dispatch transaction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::query;
    use uuid::Uuid;

    fn table() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id BLOB, name TEXT, n INTEGER, at TEXT, flag INTEGER)")
            .unwrap();
        conn
    }

    #[tokio::test]
    async fn parameters_used_out_of_order_bind_by_their_number() {
        let mut conn = table();
        let id = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-12-07T05:00:00.25Z")
            .unwrap()
            .with_timezone(&Utc);
        // `$3` first: SQLite numbers it 1.
        let changed = query("INSERT INTO t (n, name, id, at, flag) VALUES ($3, $2, $1, $4, $5)")
            .bind(id)
            .bind("first")
            .bind(7i64)
            .bind(at)
            .bind(None::<bool>)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(changed, 1);
        let row = query("SELECT id, name, n, at, flag FROM t WHERE name = $1")
            .bind("first")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<Uuid>("id").unwrap(), id);
        assert_eq!(row.get::<u32>("n").unwrap(), 7);
        assert_eq!(row.get::<DateTime<Utc>>("at").unwrap(), at);
        assert_eq!(row.get::<Option<bool>>("flag").unwrap(), None);
    }

    #[tokio::test]
    async fn a_number_out_of_range_is_corrupt_data_not_a_wrap() {
        let mut conn = table();
        query("INSERT INTO t (name, n) VALUES ('big', $1)")
            .bind(i64::from(u32::MAX) + 1)
            .execute(&mut conn)
            .await
            .unwrap();
        let row = query("SELECT n FROM t").fetch_one(&mut conn).await.unwrap();
        let error = row.get::<u32>("n").unwrap_err().to_string();
        assert!(error.contains("column n holds 4294967296"), "{error}");
        assert!(crate::store::db::int(u64::MAX).is_err());
    }

    #[test]
    fn times_read_back_in_both_formats_sqlite_stores() {
        let time = Utc::now();
        assert_eq!(parse_time(timestamp(time)).unwrap(), time);
        let default = parse_time("2026-12-07 05:00:00".into()).unwrap();
        assert_eq!(timestamp(default), "2026-12-07T05:00:00+00:00");
        assert!(parse_time("yesterday".into()).is_err());
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
        let mut conn = table();
        {
            let mut tx = RusqliteTx::begin(&mut conn).unwrap();
            query("INSERT INTO t (name) VALUES ('dropped')")
                .execute(&mut tx)
                .await
                .unwrap();
        }
        let mut tx = RusqliteTx::begin(&mut conn).unwrap();
        query("INSERT INTO t (name) VALUES ('kept')")
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = query("SELECT name FROM t")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get("name").unwrap()).collect();
        assert_eq!(names, ["kept"]);
    }
}
