//! What the store's SQL needs of a database driver, so that each query, record reader and transaction is written
//! once for both dialects: a statement and its arguments ([`Query`]), something that runs it ([`Exec`]: a
//! PostgreSQL or SQLite connection through sqlx, or SQLite's dispatch connection through rusqlite) and the rows
//! it answers ([`Row`], read by column name into [`Column`] types).
//!
//! Why not sqlx's own generic `Database`: the bounds it needs (`for<'c> &'c mut DB::Connection: Executor<'c>`,
//! `T: Encode<DB> + Type<DB>` for each type bound) are not implied by any trait, so every function would repeat
//! them; and SQLite's claim and completion run on rusqlite (`sqlite/dispatch.rs`), which sqlx knows nothing of.

/// `impl Exec` for a sqlx connection type `$conn` (its statements made by `$prepare`) and for the `$wrapper`
/// types that dereference to it (a pooled connection, a transaction).
macro_rules! sqlx_exec {
    ($conn:ty, $row:ty, $prepare:path $(, $wrapper:ty)* $(,)?) => {
        impl $crate::store::db::Exec for $conn {
            type Row = $row;
            async fn execute(&mut self, query: $crate::store::db::Query<'_>) -> $crate::store::Result<u64> {
                Ok($prepare(query).execute(self).await?.rows_affected())
            }
            async fn fetch_all(&mut self, query: $crate::store::db::Query<'_>) -> $crate::store::Result<Vec<$row>> {
                Ok($prepare(query).fetch_all(self).await?)
            }
        }
        $(impl $crate::store::db::Exec for $wrapper {
            type Row = $row;
            async fn execute(&mut self, query: $crate::store::db::Query<'_>) -> $crate::store::Result<u64> {
                (**self).execute(query).await
            }
            async fn fetch_all(&mut self, query: $crate::store::db::Query<'_>) -> $crate::store::Result<Vec<$row>> {
                (**self).fetch_all(query).await
            }
        })*
    };
}

mod pg;
pub(super) mod sqlite;

use super::{Result, StoreError};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::future::Future;
use uuid::Uuid;

/// One argument of a statement. NULLs keep their type: PostgreSQL needs it to plan the statement.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    /// `BIGINT` / `INTEGER`.
    Int(Option<i64>),
    /// `DOUBLE PRECISION` / `REAL`.
    Real(Option<f64>),
    /// `BOOLEAN` (SQLite: 0 or 1).
    Bool(Option<bool>),
    /// `TEXT`.
    Text(Option<Cow<'a, str>>),
    /// `BYTEA` / `BLOB`.
    Bytes(Option<&'a [u8]>),
    /// `UUID` (SQLite: a 16-byte blob).
    Uuid(Option<Uuid>),
    /// `TIMESTAMPTZ` (SQLite: RFC 3339 text, see [`sqlite::timestamp`]).
    Time(Option<DateTime<Utc>>),
}

/// A Rust value that binds as one SQL type; `Option`s of it bind as that type or a typed NULL.
pub(crate) trait Typed<'a>: Sized {
    /// The value.
    fn some(self) -> Value<'a>;
    /// A NULL of this type.
    fn none() -> Value<'a>;
}

/// Anything [`Query::bind`] takes: a [`Typed`] value or an `Option` of one.
pub(crate) trait Bind<'a> {
    /// The argument.
    fn value(self) -> Value<'a>;
}

impl<'a, T: Typed<'a>> Bind<'a> for T {
    fn value(self) -> Value<'a> {
        self.some()
    }
}

impl<'a, T: Typed<'a>> Bind<'a> for Option<T> {
    fn value(self) -> Value<'a> {
        self.map_or_else(T::none, T::some)
    }
}

/// `impl Typed for $type` as variant `$variant`, converting with `$into`.
macro_rules! typed {
    ($($type:ty => $variant:ident($into:expr)),* $(,)?) => {$(
        impl<'a> Typed<'a> for $type {
            fn some(self) -> Value<'a> {
                Value::$variant(Some($into(self)))
            }
            fn none() -> Value<'a> {
                Value::$variant(None)
            }
        }
    )*};
}

typed!(
    i64 => Int(|v| v),
    i32 => Int(i64::from),
    u32 => Int(i64::from),
    f64 => Real(|v| v),
    bool => Bool(|v| v),
    &'a str => Text(Cow::Borrowed),
    &'a String => Text(|v: &'a String| Cow::Borrowed(v.as_str())),
    String => Text(Cow::Owned),
    &'a [u8] => Bytes(|v| v),
    &'a Vec<u8> => Bytes(|v: &'a Vec<u8>| v.as_slice()),
    Uuid => Uuid(|v| v),
    &'a Uuid => Uuid(|v: &Uuid| *v),
    DateTime<Utc> => Time(|v| v),
);

/// A `u64` (an offset, a size) as the `BIGINT` it is stored as; past `i64::MAX` is an error, not a wrap.
pub(crate) fn int(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} does not fit a BIGINT")))
}

/// A statement and its arguments (`$1`, `$2`… in order of [`Query::bind`]).
#[derive(Debug)]
pub(crate) struct Query<'a> {
    /// Always a constant: sqlx takes only `'static` SQL, which keeps values out of it.
    pub(crate) sql: &'static str,
    pub(crate) args: Vec<Value<'a>>,
}

/// The statement `sql`, to bind and run.
pub(crate) fn query<'a>(sql: &'static str) -> Query<'a> {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl<'a> Query<'a> {
    /// Binds the next argument.
    pub(crate) fn bind(mut self, value: impl Bind<'a>) -> Self {
        self.args.push(value.value());
        self
    }

    /// Runs it; the number of rows it changed.
    pub(crate) async fn execute(self, on: &mut impl Exec) -> Result<u64> {
        on.execute(self).await
    }

    /// Runs it; every row it answered.
    pub(crate) async fn fetch_all<E: Exec>(self, on: &mut E) -> Result<Vec<E::Row>> {
        on.fetch_all(self).await
    }

    /// Runs it; its first row, if any.
    pub(crate) async fn fetch_optional<E: Exec>(self, on: &mut E) -> Result<Option<E::Row>> {
        Ok(on.fetch_all(self).await?.into_iter().next())
    }

    /// Runs it; its first row, which must be there.
    pub(crate) async fn fetch_one<E: Exec>(self, on: &mut E) -> Result<E::Row> {
        let sql = self.sql;
        self.fetch_optional(on)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from {}", first_line(sql))))
    }
}

fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or_default().trim()
}

/// Something statements run on: a connection or a transaction.
pub(crate) trait Exec: Send {
    /// The rows it answers.
    type Row: Row + Send + Sync;
    /// Runs `query`; the number of rows it changed.
    fn execute(&mut self, query: Query<'_>) -> impl Future<Output = Result<u64>> + Send;
    /// Runs `query`; every row it answered (stepped to the end, so a write in it is done).
    fn fetch_all(
        &mut self,
        query: Query<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;
}

/// A write transaction: [`Exec`] until it commits; rolled back if dropped before.
pub(crate) trait Transaction: Exec {
    /// Commits it.
    fn commit(self) -> impl Future<Output = Result<()>> + Send;
}

/// A row of an answer, read by column name.
pub(crate) trait Row {
    /// Column `name` as a `T`.
    fn get<T: Column>(&self, name: &str) -> Result<T>;
}

/// A Rust type a column is read as, from each kind of row.
pub(crate) trait Column: Sized {
    /// From a PostgreSQL row.
    fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self>;
    /// From a SQLite row read through sqlx.
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self>;
    /// From a SQLite row read through rusqlite.
    fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self>;
}

/// `impl Column` for types each driver reads natively.
macro_rules! native_columns {
    ($($type:ty),* $(,)?) => {$(
        impl Column for $type {
            fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self> {
                Ok(sqlx::Row::try_get(row, name)?)
            }
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self> {
                Ok(sqlx::Row::try_get(row, name)?)
            }
            fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self> {
                row.native(name)
            }
        }
    )*};
}

native_columns!(
    i64,
    Option<i64>,
    f64,
    Option<f64>,
    bool,
    Option<bool>,
    String,
    Option<String>,
    Vec<u8>,
    Option<Vec<u8>>,
    Uuid,
    Option<Uuid>,
);

impl Column for DateTime<Utc> {
    fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self> {
        Ok(sqlx::Row::try_get(row, name)?)
    }
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self> {
        sqlite::parse_time(sqlx::Row::try_get(row, name)?)
    }
    fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self> {
        sqlite::parse_time(row.native(name)?)
    }
}

impl Column for Option<DateTime<Utc>> {
    fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self> {
        Ok(sqlx::Row::try_get(row, name)?)
    }
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self> {
        let text: Option<String> = sqlx::Row::try_get(row, name)?;
        text.map(sqlite::parse_time).transpose()
    }
    fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self> {
        let text: Option<String> = row.native(name)?;
        text.map(sqlite::parse_time).transpose()
    }
}

/// `impl Column` for narrower integers stored as `BIGINT` (counts, sizes, exit codes): read as `i64`, and a value
/// out of range is corrupt data rather than a silent wrap.
macro_rules! narrow_columns {
    ($($type:ty),* $(,)?) => {$(
        impl Column for $type {
            fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self> {
                narrow(name, i64::from_pg(row, name)?)
            }
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self> {
                narrow(name, i64::from_sqlite(row, name)?)
            }
            fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self> {
                narrow(name, i64::from_rusqlite(row, name)?)
            }
        }
        impl Column for Option<$type> {
            fn from_pg(row: &sqlx::postgres::PgRow, name: &str) -> Result<Self> {
                Option::<i64>::from_pg(row, name)?.map(|n| narrow(name, n)).transpose()
            }
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Self> {
                Option::<i64>::from_sqlite(row, name)?.map(|n| narrow(name, n)).transpose()
            }
            fn from_rusqlite(row: &sqlite::OwnedRow, name: &str) -> Result<Self> {
                Option::<i64>::from_rusqlite(row, name)?.map(|n| narrow(name, n)).transpose()
            }
        }
    )*};
}

narrow_columns!(u32, u64, i32);

fn narrow<T: TryFrom<i64>>(name: &str, value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| {
        StoreError::Corrupt(format!(
            "column {name} holds {value}, out of range for {}",
            std::any::type_name::<T>()
        ))
    })
}

/// A text column parsed into one of the model's enums (a status, a scope).
pub(crate) fn parse<T: std::str::FromStr<Err = String>>(text: String) -> Result<T> {
    text.parse().map_err(StoreError::Corrupt)
}

/// A JSON text column (a job's spec, its `needs`, a worker's labels).
pub(crate) fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Row for sqlx::postgres::PgRow {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        T::from_pg(self, name)
    }
}

impl Row for sqlx::sqlite::SqliteRow {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        T::from_sqlite(self, name)
    }
}
