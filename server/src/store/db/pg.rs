//! [`Exec`] on PostgreSQL, through sqlx.

use super::{Query, Transaction, Value};
use crate::store::Result;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};

/// `query` as sqlx's, its arguments bound in order.
fn prepare(query: Query<'_>) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    let mut prepared = sqlx::query(query.sql);
    for value in query.args {
        prepared = match value {
            Value::Int(v) => prepared.bind(v),
            Value::Real(v) => prepared.bind(v),
            Value::Bool(v) => prepared.bind(v),
            Value::Text(v) => prepared.bind(v),
            Value::Bytes(v) => prepared.bind(v),
            Value::Uuid(v) => prepared.bind(v),
            Value::Time(v) => prepared.bind(v),
        };
    }
    prepared
}

sqlx_exec!(
    PgConnection,
    PgRow,
    prepare,
    PoolConnection<Postgres>,
    sqlx::Transaction<'_, Postgres>,
);

impl Transaction for sqlx::Transaction<'_, Postgres> {
    async fn commit(self) -> Result<()> {
        Ok(sqlx::Transaction::commit(self).await?)
    }
}
