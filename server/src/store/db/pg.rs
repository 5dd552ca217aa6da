//! [`Exec`] on PostgreSQL, through sqlx.

use super::{Exec, Query, Transaction, Value};
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

impl Exec for PgConnection {
    type Row = PgRow;

    async fn execute(&mut self, query: Query<'_>) -> Result<u64> {
        Ok(prepare(query).execute(self).await?.rows_affected())
    }

    async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<PgRow>> {
        Ok(prepare(query).fetch_all(self).await?)
    }
}

impl Exec for PoolConnection<Postgres> {
    type Row = PgRow;

    async fn execute(&mut self, query: Query<'_>) -> Result<u64> {
        (**self).execute(query).await
    }

    async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<PgRow>> {
        (**self).fetch_all(query).await
    }
}

impl Exec for sqlx::Transaction<'_, Postgres> {
    type Row = PgRow;

    async fn execute(&mut self, query: Query<'_>) -> Result<u64> {
        (**self).execute(query).await
    }

    async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<PgRow>> {
        (**self).fetch_all(query).await
    }
}

impl Transaction for sqlx::Transaction<'_, Postgres> {
    async fn commit(self) -> Result<()> {
        Ok(sqlx::Transaction::commit(self).await?)
    }
}
