//! What model calls used, kept durably for per-user budgets: one row per call
//! ([`UsageStore::record_usage`], counted once however many times or nodes record it), and a
//! user's totals since a time ([`UsageStore::usage_since`]) or of one run
//! ([`UsageStore::run_usage`]).
//!
//! Usage outlives the conversation: deleting a run or a thread, and retention, leave it (a
//! budget counts what was spent).

use async_trait::async_trait;
use core_context::{RunId, UserId};
use serde::Serialize;

use crate::HistoryError;

/// What one model call used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    /// The caller's unique id of the call (e.g. `<run id>:<n>`): the same id is counted once.
    pub call_id: String,
    /// Whose run made the call.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// The model's name.
    pub model: String,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens the provider served from its cache (a part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// What the call cost, in millionths of a US dollar; `None` when the model has no price.
    pub cost_micro_usd: Option<u64>,
    /// When the call was made (Unix ms).
    pub at_ms: i64,
}

/// What a set of calls used, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens served from a cache.
    pub cached_tokens: u64,
    /// `prompt_tokens + completion_tokens`.
    pub tokens: u64,
    /// The cost of the priced calls, in millionths of a US dollar: it covers every call only
    /// when `unpriced_calls` is 0.
    pub cost_micro_usd: u64,
    /// Calls counted.
    pub calls: u64,
    /// Of those, the calls with a cost.
    pub priced_calls: u64,
    /// Of those, the calls of a model with no price (counted in tokens only).
    pub unpriced_calls: u64,
}

/// Model calls' usage; see the module documentation. Every read is keyed by the user.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records one call's usage. True when this recorded it; false when a call of the same
    /// `call_id` was recorded before (nothing changes). Of concurrent records of one call id,
    /// on any nodes, exactly one returns true. Counts past `i64::MAX` are refused.
    async fn record_usage(&self, usage: &ModelUsage) -> Result<bool, HistoryError>;

    /// `user`'s totals of the calls made at or after `since_ms` (Unix ms).
    async fn usage_since(&self, user: &UserId, since_ms: i64) -> Result<UsageTotals, HistoryError>;

    /// The totals of `user`'s run `run`: zeros for another user's run or one that made no call.
    async fn run_usage(&self, user: &UserId, run: &RunId) -> Result<UsageTotals, HistoryError>;

    /// Erases the calls made before `before_ms` (every user's); how many. The server keeps
    /// usage longer than any budget period (see `run_service`'s recorder). A store that keeps
    /// no usage erases nothing.
    async fn prune_usage(&self, before_ms: i64) -> Result<u64, HistoryError> {
        let _ = before_ms;
        Ok(0)
    }
}
