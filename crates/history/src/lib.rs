//! The history store: users' threads, their runs, and each run's events as the user saw
//! them, kept past the process.
//!
//! - [`HistoryStore`] is the trait the server reads and writes through; [`SqlStore`] is its
//!   implementation on sqlx's `Any` driver, so one set of portable SQL serves SQLite (the
//!   embedded default, a file) and Postgres (many nodes sharing one history). Migrations are
//!   versioned in `crates/history/migrations` and run at start ([`SqlStore::connect`]).
//! - [`ApprovalStore`] (a part of every [`HistoryStore`]) keeps runs paused for tool-call
//!   approvals and their approvals: a decision is recorded once and a run resumes once, across
//!   nodes sharing Postgres too.
//! - [`UsageStore`] (a part of every [`HistoryStore`]) keeps what each model call used
//!   (migration 6, the `model_usage` table: one row per call id, so a call is counted once
//!   across nodes too) and sums a user's usage since a time or of a run, for budgets. No
//!   foreign key ties a usage row to its run or thread: deleting a run or a thread and the
//!   threads' retention ([`HistoryStore::prune`]) leave it, since a budget counts what was
//!   spent; old usage has a retention of its own ([`UsageStore::prune_usage`]).
//! - [`HistoryWriter`] keeps writes off the live path: a bounded queue that a task drains in
//!   batches, one transaction each. A full queue or a failing database is logged and counted
//!   ([`WriterStats`]); the live stream never waits on it.
//! - [`typescript`]: the history API's bodies as TypeScript declarations, for the TypeScript
//!   client.
//!
//! **Architecture Invariant:** every read and every delete is keyed by the authenticated
//! user: another user's thread or run reads exactly like a missing one.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod apply;
mod approvals;
mod approvals_sql;
mod conversation;
mod model;
mod pack;
mod sql;
pub mod typescript;
mod usage;
mod usage_sql;
mod writer;

pub use approvals::{
    ApprovalRecord, ApprovalStatus, ApprovalStore, BudgetWait, CancelledRun, DecideOutcome,
    ExpiredCall, PausedRun, ResolvedCall, Resumable, WaitingCall,
};
pub use conversation::{DEFAULT_PAGE, MAX_PAGE, ThreadConversation, conversation, page_limit};
pub use model::{
    Ending, Page, RunDetail, RunStatus, RunSummary, ThreadDetail, ThreadPage, ThreadSummary, Write,
};
pub use sql::SqlStore;
pub use usage::{ModelUsage, UsageStore, UsageTotals};
pub use writer::{BACKGROUND_NICE, HistoryWriter, WriterConfig, WriterStats};

use async_trait::async_trait;
use core_context::{RunId, ThreadId, UserId};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The URL names no store this build knows.
    #[error(
        "--store {0:?} is not a store URL: use sqlite://path/to/file.db, postgres://user@host/db, or none"
    )]
    Url(String),
    /// The database refused or failed.
    #[error("history store: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("history store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A pagination cursor that this store did not hand out.
    #[error("invalid cursor {0:?}: pass back the cursor the previous page gave")]
    Cursor(String),
}

/// Users' threads, runs and events, runs paused for approvals ([`ApprovalStore`]), and model
/// calls' usage ([`UsageStore`]); see the crate documentation.
#[async_trait]
pub trait HistoryStore: ApprovalStore + UsageStore + Send + Sync + 'static {
    /// Applies `batch` in order, in one transaction.
    async fn apply(&self, batch: &[Write]) -> Result<(), HistoryError>;

    /// `user`'s threads, newest first, `limit` at most, after `cursor` (from the previous
    /// page's `next_cursor`).
    async fn threads(
        &self,
        user: &UserId,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ThreadSummary>, HistoryError>;

    /// `user`'s thread with its runs (oldest first); `None` for another user's or a missing one.
    async fn thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<ThreadDetail>, HistoryError>;

    /// `user`'s run with its events in order; `None` for another user's or a missing one.
    async fn run(&self, user: &UserId, run: &RunId) -> Result<Option<RunDetail>, HistoryError>;

    /// Who owns `thread`, if it is stored (a start naming a thread must not write into
    /// another user's).
    async fn thread_owner(&self, thread: &ThreadId) -> Result<Option<UserId>, HistoryError>;

    /// Gives `user`'s thread the title `title`; false for another user's or a missing one.
    async fn rename_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        title: &str,
    ) -> Result<bool, HistoryError>;

    /// Erases `user`'s run with its events and approvals (its thread stays; its model usage
    /// stays too); false for another user's or a missing one.
    async fn delete_run(&self, user: &UserId, run: &RunId) -> Result<bool, HistoryError>;

    /// Erases `user`'s thread with its runs, events and approvals (their model usage stays);
    /// false for another user's or a missing one.
    async fn delete_thread(&self, user: &UserId, thread: &ThreadId) -> Result<bool, HistoryError>;

    /// Erases threads (with their runs, events and approvals) not updated since
    /// `updated_before_ms`, and each user's oldest threads past their newest
    /// `max_threads_per_user`. Returns how many threads were erased. Model usage stays.
    async fn prune(
        &self,
        updated_before_ms: i64,
        max_threads_per_user: u64,
    ) -> Result<u64, HistoryError>;

    /// Records that `node` is alive at `now_ms`.
    async fn heartbeat(&self, node: &str, now_ms: i64) -> Result<(), HistoryError>;

    /// Marks `interrupted` the runs still `running` on nodes not seen since `seen_before_ms`
    /// (all nodes but `except`). Returns how many. A run waiting for approval has no task a
    /// node could lose: it stays waiting.
    async fn interrupt_orphans(
        &self,
        seen_before_ms: i64,
        except: &str,
        now_ms: i64,
    ) -> Result<u64, HistoryError>;

    /// Whether several nodes may share this store (Postgres) rather than one (SQLite).
    fn is_shared(&self) -> bool;
}
