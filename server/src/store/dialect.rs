//! What each database supplies to the store's one implementation (`backend.rs`): its connections, how a write
//! transaction starts, and the few statements it does its own way. Everything else — the SQL of each area, the
//! records read from rows, the transactions — is written once, over [`Exec`].

use super::completion::Ending;
use super::db::{Exec, Transaction};
use super::{Claim, ClaimedJob, Completed, News, Result};
use std::future::Future;
use uuid::Uuid;

/// A database the store runs on: PostgreSQL (`postgres.rs`) or SQLite (`sqlite/`).
pub(crate) trait Dialect: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    const NAME: &'static str;
    /// Locks a pipeline's row (`$1`) before settling reads its jobs, where concurrent transactions could
    /// otherwise each miss the other's end; `None` where writers take turns anyway.
    const LOCK_PIPELINE_SQL: Option<&'static str>;

    /// A connection for reads.
    type Reader: Exec;
    /// A connection for a single write (a statement is a transaction of its own).
    type Writer: Exec;
    /// A write transaction.
    type Tx: Transaction;

    /// A connection for reads.
    fn reader(&self) -> impl Future<Output = Result<Self::Reader>> + Send;
    /// A connection for a single write.
    fn writer(&self) -> impl Future<Output = Result<Self::Writer>> + Send;
    /// Begins a write transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Leases the next ready job the worker can run, in one statement.
    fn claim(&self, claim: &Claim) -> impl Future<Output = Result<Option<ClaimedJob>>> + Send;
    /// Ends an attempt if the lease is still the job's, stores its report and settles its pipeline, in one
    /// transaction (`completion::complete_attempt` on the dialect's fastest connection).
    fn complete_attempt(
        &self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> impl Future<Output = Result<Option<Completed>>> + Send;

    /// Tells the other servers on the database.
    fn announce_news(&self, news: News) -> impl Future<Output = Result<()>> + Send;
    /// Hears the other servers, for as long as the server runs.
    fn listen_for_news(
        &self,
        heard: Box<dyn Fn(News) + Send + Sync>,
    ) -> impl Future<Output = Result<()>> + Send;
}
