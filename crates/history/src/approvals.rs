//! Tool-call approvals, kept durably: a run that reaches a call needing a person's approval
//! pauses (no task, no slot) with its continuation stored ([`ApprovalStore::pause_run`]); a
//! person's decision, on any node, is recorded once ([`ApprovalStore::decide`]); and the run
//! resumes exactly once, when none of its calls waits any more ([`ApprovalStore::claim_resume`]).
//!
//! Each race (deciders of one call, claimers of one run, a claim against a cancel, expiry
//! sweepers on several nodes) is settled by one conditional statement in the database, so it
//! holds across nodes that share Postgres as well as within one process on SQLite.

use async_trait::async_trait;
use core_context::approval::{Decision, PendingCall, WaitingFor};
use core_context::budget::Exhausted;
use core_context::{RunId, ThreadId, UserId};
use serde::Serialize;
use serde_json::Value;

use crate::HistoryError;

/// A run paused until people decide on its tool calls.
#[derive(Debug, Clone, PartialEq)]
pub struct PausedRun {
    /// Whose run.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// The agent.
    pub agent: String,
    /// The user's message that started it.
    pub message: String,
    /// The run's input, as the agent got it.
    pub input: Value,
    /// The agent's continuation: what it needs to go on once the calls are decided.
    pub state: Value,
    /// When it paused (Unix ms): its calls' request time.
    pub paused_ms: i64,
    /// The calls it waits on, in the order they were requested (none when it waits for its
    /// budget).
    pub calls: Vec<WaitingCall>,
    /// Why it waits for its budget, when it does (it waits for approvals otherwise).
    pub budget: Option<Exhausted>,
}

impl PausedRun {
    /// What it waits for.
    pub fn waiting_for(&self) -> WaitingFor {
        if self.budget.is_some() {
            WaitingFor::Budget
        } else {
            WaitingFor::Approval
        }
    }
}

/// A tool call of a paused run, with the time its approval expires.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingCall {
    /// The call.
    pub call: PendingCall,
    /// Past this time (Unix ms), nobody can decide it any more: it counts as rejected.
    pub expires_ms: i64,
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person decided.
    Decided,
    /// Nobody decided in time.
    Expired,
    /// Its run was cancelled while it waited.
    Cancelled,
}

impl ApprovalStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Decided => "decided",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Reads a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Decided,
            ApprovalStatus::Expired,
            ApprovalStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// An approval as a user lists it (`GET /v1/approvals`).
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct ApprovalRecord {
    /// The paused run.
    pub run_id: String,
    /// Its thread.
    pub thread_id: String,
    /// The agent.
    pub agent: String,
    /// The call.
    pub tool_call_id: String,
    /// The tool.
    pub tool_name: String,
    /// The arguments the agent asked for.
    pub arguments: Value,
    /// When it was requested (Unix ms).
    pub requested_ms: i64,
    /// When it expires (Unix ms).
    pub expires_ms: i64,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The decision's name, once decided (`expired` for an expired one).
    pub decision: Option<String>,
    /// When it was decided, expired or cancelled (Unix ms).
    pub decided_ms: Option<i64>,
}

/// What became of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    /// This decision is the call's: no other will be.
    Decided {
        /// How many of the run's calls still wait after this one (0: the run can resume).
        waiting: usize,
    },
    /// No such call for this user (another user's reads the same).
    NotFound,
    /// Someone decided first, or the run was cancelled (`cancelled`).
    AlreadyDecided {
        /// The decision's name, or `cancelled`.
        decision: String,
    },
    /// Nobody decided in time.
    Expired,
}

/// A call of a resuming run, with what was decided and, if it already ran, its result.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCall {
    /// The call, with the arguments the agent asked for.
    pub call: PendingCall,
    /// What was decided ([`Decision::Expired`] when nobody did in time).
    pub decision: Decision,
    /// The tool's result, when it was recorded ([`ApprovalStore::record_result`]).
    pub result: Option<Value>,
}

/// A paused run that this caller won the right to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumable {
    /// The run as it paused; `calls` holds the calls of this pause.
    pub run: PausedRun,
    /// Those calls with their decisions, in request order.
    pub resolved: Vec<ResolvedCall>,
}

/// A call that [`ApprovalStore::expire_approvals`] expired.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredCall {
    /// Whose run.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// The agent.
    pub agent: String,
    /// The call.
    pub tool_call_id: String,
}

/// A run that waits for its user's budget ([`ApprovalStore::budget_waits`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetWait {
    /// Whose run.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// What the budget said when it paused.
    pub exhausted: Exhausted,
}

/// A paused run that [`ApprovalStore::cancel_paused`] cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledRun {
    /// Its thread.
    pub thread_id: ThreadId,
    /// The agent.
    pub agent: String,
}

/// Paused runs and their approvals; see the module documentation. Every method taking a
/// user reads another user's run exactly like a missing one.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Pauses `run` in one transaction: stores its continuation, one pending approval per
    /// call (re-arming a call of the same id from an earlier pause of the run, its result
    /// cleared), and marks the run `waiting_for_approval` (or `waiting_for_budget`, as
    /// [`PausedRun::waiting_for`] says) if it is `running`.
    async fn pause_run(&self, run: &PausedRun) -> Result<(), HistoryError>;

    /// `user`'s pending approvals across threads, oldest first, `limit` at most.
    async fn pending_approvals(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, HistoryError>;

    /// All approvals of `user`'s run `run`, in request order.
    async fn run_approvals(
        &self,
        user: &UserId,
        run: &RunId,
    ) -> Result<Vec<ApprovalRecord>, HistoryError>;

    /// Records `user`'s `decision` on a pending call, unless it expired by `now_ms`. Of any
    /// number of concurrent deciders, on any nodes, exactly one gets
    /// [`DecideOutcome::Decided`].
    async fn decide(
        &self,
        user: &UserId,
        run: &RunId,
        tool_call_id: &str,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<DecideOutcome, HistoryError>;

    /// Claims the resumption of `run` once none of its calls waits (a run waiting for its
    /// budget has none: the caller checks the budget first): marks it `running` on
    /// `node` and returns its continuation and decisions. Of any number of concurrent
    /// claimers, exactly one gets `Some`; a run still waiting, cancelled or already claimed
    /// gives `None`. `now_ms` is the claim's time (nothing stores it yet).
    async fn claim_resume(
        &self,
        run: &RunId,
        node: &str,
        now_ms: i64,
    ) -> Result<Option<Resumable>, HistoryError>;

    /// Records the result of a decided call that ran; false when one was already recorded
    /// (the call ran before: do not run it again).
    async fn record_result(
        &self,
        run: &RunId,
        tool_call_id: &str,
        result: &Value,
    ) -> Result<bool, HistoryError>;

    /// Ends `user`'s paused run: its waiting calls become `cancelled` and the run `ending`
    /// (`cancelled`, or `interrupted` by a new message in its thread) at `now_ms`. `None` when
    /// it is not `user`'s, not paused, or was resumed or ended first.
    async fn cancel_paused(
        &self,
        user: &UserId,
        run: &RunId,
        ending: crate::RunStatus,
        now_ms: i64,
    ) -> Result<Option<CancelledRun>, HistoryError>;

    /// `user`'s run paused in `thread`, if one is (a thread holds at most one live run), and
    /// what it waits for.
    async fn paused_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, WaitingFor)>, HistoryError>;

    /// Runs that wait for their user's budget, up to `limit`, in the order of their user and
    /// run ids, from the first after `after` (a user id and a run id; `("", "")` from the
    /// start, `(user, "")` from that user's first).
    async fn budget_waits(
        &self,
        after: (&str, &str),
        limit: usize,
    ) -> Result<Vec<BudgetWait>, HistoryError>;

    /// Expires up to `limit` pending calls past their expiry at `now_ms`. Returns only the
    /// calls this call expired: concurrent sweepers never both return one.
    async fn expire_approvals(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredCall>, HistoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for name in ["pending", "decided", "expired", "cancelled"] {
            let status = ApprovalStatus::parse(name).unwrap();
            assert_eq!(status.as_str(), name);
            assert_eq!(serde_json::to_value(status).unwrap(), name);
        }
        assert_eq!(ApprovalStatus::parse("waiting"), None);
    }
}
