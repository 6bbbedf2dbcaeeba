//! Approvals in the run service: a person's decision from any transport, resuming a paused
//! run, cancelling one, and expiring calls nobody decided.
//!
//! The history store is the arbiter across nodes (SQLite for one node, Postgres for many):
//! a decision is a conditional update that exactly one decider wins (`409` for the others),
//! and the resume is claimed by exactly one node, the one whose decision (or expiry sweep)
//! decided the run's last waiting call; that node resumes the run on a fresh engine of the
//! user's, which claims a run slot like any run. The engine saves paused runs through
//! [`HistoryPausedRuns`](crate::paused_runs::HistoryPausedRuns).

use std::sync::Arc;
use std::time::Duration;

use agent_registry::{AgentError, DecidedCall};
use core_context::approval::{Decision, WaitingFor};
use core_context::multitask::{self, Multitask};
use core_context::{RunId, ThreadId, UserExecutionContext, UserId};
use execution_engine::{Resume, RunOutcome, UserExecutionEngine};
use history::{ApprovalRecord, DecideOutcome, RunStatus};

use crate::paused_runs::Ending;
use crate::recorder::now_ms;
use crate::service::{Refusal, RunService};

/// How many pending approvals `GET /v1/approvals` lists at most.
pub const MAX_LISTED_APPROVALS: usize = 200;

/// Expired calls handled per sweep (the next sweep takes the rest).
const EXPIRE_BATCH: usize = 100;

/// A decision that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The run's calls still waiting for a decision.
    pub waiting: usize,
    /// Whether this decision resumed the run (on this node).
    pub resumed: bool,
}

fn not_found(run: &RunId, tool_call_id: &str) -> Refusal {
    Refusal::new(
        "approval_not_found",
        format!("no approval {tool_call_id} of run {run} for this user"),
    )
}

fn store_failed(error: impl std::fmt::Display) -> Refusal {
    tracing::warn!(%error, "approvals: the history store failed");
    Refusal::new(
        "internal_error",
        "the history store cannot be reached now; try again shortly",
    )
}

impl RunService {
    /// `user`'s decision about `tool_call_id` of their paused run `run`. Another user's run
    /// reads exactly like a missing one (`approval_not_found`); a call already decided is
    /// `approval_already_decided`, one past its expiry `approval_expired`; `edit` arguments
    /// that do not fit the tool's schema are `invalid_field`. The run emits
    /// `approval_resolved`, and once none of its calls waits it resumes on this node.
    pub async fn resolve_approval(
        self: &Arc<Self>,
        user: &UserId,
        run: &RunId,
        tool_call_id: &str,
        decision: Decision,
    ) -> Result<Resolved, Refusal> {
        let Some(recorder) = self.recorder().cloned() else {
            return Err(not_found(run, tool_call_id));
        };
        let store = recorder.store();
        let calls = store.run_approvals(user, run).await.map_err(store_failed)?;
        let Some(call) = calls.iter().find(|c| c.tool_call_id == tool_call_id) else {
            return Err(not_found(run, tool_call_id));
        };
        if let Decision::Edit { arguments } = &decision {
            self.check_edited(&call.tool_name, arguments)?;
        }
        let outcome = store
            .decide(user, run, tool_call_id, &decision, now_ms())
            .await
            .map_err(store_failed)?;
        let waiting = match outcome {
            DecideOutcome::Decided { waiting } => waiting,
            DecideOutcome::NotFound => return Err(not_found(run, tool_call_id)),
            DecideOutcome::AlreadyDecided { decision } => {
                return Err(Refusal::new(
                    "approval_already_decided",
                    format!("approval {tool_call_id} was already decided ({decision})"),
                ));
            }
            DecideOutcome::Expired => {
                // Let the run go on as the expiry says, without waiting for the sweep.
                let service = Arc::clone(self);
                tokio::spawn(async move { service.expire_approvals().await });
                return Err(Refusal::new(
                    "approval_expired",
                    format!(
                        "approval {tool_call_id} expired before it was decided; the run went on without the call"
                    ),
                ));
            }
        };
        self.metrics()
            .approval_resolved(decision.name(), waited(call.requested_ms));
        let thread = ThreadId::parse(&call.thread_id).map_err(store_failed)?;
        let engine = self.paused_engine(user, &thread, run)?;
        engine.announce_decision(&call.agent, tool_call_id, decision.name());
        self.factory().release(&engine);
        let resumed = waiting == 0 && self.resume(user, run).await;
        Ok(Resolved { waiting, resumed })
    }

    /// Decides several of one paused run's calls at once (an AG-UI `resume`): each as
    /// [`RunService::resolve_approval`]; the run resumes with the last. Refused when the
    /// decisions are not all of one waiting run of `user`'s.
    pub async fn resolve_all(
        self: &Arc<Self>,
        user: &UserId,
        decisions: Vec<(RunId, String, Decision)>,
    ) -> Result<crate::service::RunAccepted, Refusal> {
        let Some(run) = decisions.first().map(|(run, _, _)| run.clone()) else {
            return Err(Refusal::new("invalid_field", "no decision to take"));
        };
        if decisions.iter().any(|(other, _, _)| *other != run) {
            return Err(Refusal::new(
                "invalid_field",
                "resume: the entries answer interrupts of different runs; resume one run at a time",
            ));
        }
        let waiting = self.pending_approvals(user).await?;
        let Some(thread) = waiting
            .iter()
            .find(|w| w.run_id == run.as_str())
            .and_then(|w| ThreadId::parse(&w.thread_id).ok())
        else {
            return Err(Refusal::new(
                "approval_not_found",
                format!("no interrupt of run {run} waits for this user"),
            ));
        };
        for (_, tool_call_id, decision) in decisions {
            self.resolve_approval(user, &run, &tool_call_id, decision)
                .await?;
        }
        Ok(crate::service::RunAccepted {
            run_id: run,
            thread_id: thread,
            steered: false,
            queued: None,
        })
    }

    /// `user`'s calls waiting for a decision, across threads, oldest first, their arguments
    /// redacted and bounded as `approval_requested` shows them (the store keeps them whole:
    /// the tool runs with them).
    pub async fn pending_approvals(&self, user: &UserId) -> Result<Vec<ApprovalRecord>, Refusal> {
        let Some(recorder) = self.recorder() else {
            return Ok(Vec::new());
        };
        let mut waiting = recorder
            .store()
            .pending_approvals(user, MAX_LISTED_APPROVALS)
            .await
            .map_err(store_failed)?;
        let limits = &self.factory().config().dispatch.redaction;
        for call in &mut waiting {
            call.arguments = core_context::redact::redact(&call.arguments, limits);
        }
        Ok(waiting)
    }

    /// Rejects the calls nobody decided in time (each announced `expired`, once across
    /// nodes) and resumes the runs that no longer wait. Called every few seconds.
    pub async fn expire_approvals(self: &Arc<Self>) {
        let Some(recorder) = self.recorder().cloned() else {
            return;
        };
        let expired = match recorder
            .store()
            .expire_approvals(now_ms(), EXPIRE_BATCH)
            .await
        {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "approvals: cannot look for expired calls now");
                return;
            }
        };
        for call in expired {
            let timeout = self.factory().config().approval_timeout;
            self.metrics().approval_resolved("expired", timeout);
            match self.paused_engine(&call.user, &call.thread_id, &call.run_id) {
                Ok(engine) => {
                    engine.announce_decision(&call.agent, &call.tool_call_id, "expired");
                    self.factory().release(&engine);
                }
                Err(refusal) => {
                    tracing::warn!(%refusal, "approvals: cannot announce an expired call")
                }
            }
            self.resume(&call.user, &call.run_id).await;
        }
    }

    /// Ends `user`'s paused run `run` as `ending` says: its waiting calls are dropped and it
    /// ends with `agent_cancelled`. False when it is not a paused run of theirs.
    pub(crate) async fn cancel_paused(
        &self,
        user: &UserId,
        run: &RunId,
        ending: Ending,
    ) -> Result<bool, Refusal> {
        let Some(recorder) = self.recorder() else {
            return Ok(false);
        };
        let (status, reason) = match ending {
            Ending::Cancelled(reason) => (RunStatus::Cancelled, reason),
            Ending::Interrupted => (RunStatus::Interrupted, multitask::INTERRUPTED),
            Ending::RolledBack => (RunStatus::Interrupted, multitask::ROLLED_BACK),
        };
        let Some(cancelled) = recorder
            .store()
            .cancel_paused(user, run, status, now_ms())
            .await
            .map_err(store_failed)?
        else {
            return Ok(false);
        };
        let engine = self.paused_engine(user, &cancelled.thread_id, run)?;
        let outcome = RunOutcome::Cancelled(reason.to_owned());
        engine.end_paused_run(&cancelled.agent, &outcome);
        self.factory().release(&engine);
        self.free_thread(user, &cancelled.thread_id, run).await;
        if ending == Ending::RolledBack {
            // Its end is stored first, so nothing of it comes back after the erasure.
            recorder.writer().flush().await;
            recorder
                .store()
                .delete_run(user, run)
                .await
                .map_err(store_failed)?;
        }
        Ok(true)
    }

    /// A new message into `thread`: when the thread's run waits for approvals, `interrupt`
    /// and `rollback` end it first; any other strategy is refused with
    /// `thread_waiting_for_approval`, naming the run (the waiting run is never dropped
    /// silently). A run waiting for its budget is ended the same way by `interrupt` and
    /// `rollback`; other messages wait behind it, like behind a running run.
    pub(crate) async fn settle_waiting_run(
        &self,
        user: &UserId,
        thread: &ThreadId,
        multitask: Option<Multitask>,
    ) -> Result<(), Refusal> {
        let Some(recorder) = self.recorder() else {
            return Ok(());
        };
        let Some((run, waiting_for)) = recorder
            .store()
            .paused_in_thread(user, thread)
            .await
            .map_err(store_failed)?
        else {
            return Ok(());
        };
        let strategy = multitask.unwrap_or(Multitask::Enqueue);
        let ending = match strategy {
            Multitask::Interrupt => Ending::Interrupted,
            Multitask::Rollback => Ending::RolledBack,
            // A run waiting for its budget keeps its thread like a running one: the message
            // is queued behind it (or refused, or steered) as its strategy says.
            _ if waiting_for == WaitingFor::Budget => return Ok(()),
            _ => {
                self.metrics().busy_thread(strategy, false);
                return Err(Refusal::new(
                    "thread_waiting_for_approval",
                    format!(
                        "run {run} of this thread waits for your approval of a tool call: decide it (GET /v1/approvals), or send this message with multitask \"interrupt\" (the run ends as interrupted) or \"rollback\" (the run is erased)"
                    ),
                ));
            }
        };
        // Decided or resumed meanwhile: the thread no longer waits, the message goes on.
        if self.cancel_paused(user, &run, ending).await? {
            self.metrics().busy_thread(strategy, true);
        }
        Ok(())
    }

    /// Claims `run`'s resume (exactly one node does, once its calls are all decided) and
    /// resumes it on this node. Whether this node resumed it.
    pub(crate) async fn resume(self: &Arc<Self>, user: &UserId, run: &RunId) -> bool {
        let Some(recorder) = self.recorder().cloned() else {
            return false;
        };
        let claimed = match recorder
            .store()
            .claim_resume(run, recorder.node(), now_ms())
            .await
        {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%run, %error, "approvals: cannot claim a paused run's resume; the next decision or sweep tries again");
                return false;
            }
        };
        let paused = claimed.run;
        let agent = paused.agent.clone();
        let engine = match self.paused_engine(user, &paused.thread_id, run) {
            Ok(engine) => engine,
            Err(refusal) => {
                tracing::warn!(%run, %refusal, "approvals: cannot make an engine to resume a run");
                return false;
            }
        };
        let resume = Resume {
            message: paused.message,
            input: paused.input,
            state: paused.state,
            decided: claimed
                .resolved
                .into_iter()
                .map(|r| DecidedCall {
                    call: r.call,
                    decision: r.decision,
                    result: r.result,
                })
                .collect(),
        };
        match engine.resume_agent(&agent, resume).await {
            Ok(handle) => {
                self.follow(user, engine, handle, &agent);
                true
            }
            Err(error) => {
                // Resumed nowhere: the run ends for its user rather than wait forever.
                let outcome = RunOutcome::Failed(AgentError::new(
                    error.code(),
                    format!("the run could not resume: {error}"),
                ));
                engine.end_paused_run(&agent, &outcome);
                self.factory().release(&engine);
                self.free_thread(user, &paused.thread_id, run).await;
                false
            }
        }
    }

    /// Frees `thread` from `user`'s paused run `run`, which ended without resuming: the
    /// messages queued there go on.
    async fn free_thread(&self, user: &UserId, thread: &ThreadId, run: &RunId) {
        if let Err(error) = self
            .factory()
            .slots()
            .release_thread(user, thread, run)
            .await
        {
            tracing::warn!(%run, %error, "a paused run that ended could not free its thread; messages queued in that thread stay queued (across nodes, up to a day) unless cancelled");
        }
    }

    /// An engine whose context names `user`'s paused run `run` in `thread`.
    fn paused_engine(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<UserExecutionEngine, Refusal> {
        let context = UserExecutionContext::builder(user.clone())
            .thread_id(thread.clone())
            .run_id(run.clone())
            .build()
            .map_err(|e| Refusal::new("internal_error", e.to_string()))?;
        self.factory()
            .create_for_user(context)
            .map_err(|e| Refusal::new(e.code(), e.to_string()))
    }

    /// Edited arguments must fit the tool's schema (the person hears it now, not the model).
    fn check_edited(&self, tool: &str, arguments: &serde_json::Value) -> Result<(), Refusal> {
        let registry = self.factory().registry();
        let Some(info) = registry.list_tools().into_iter().find(|t| t.name == tool) else {
            return Err(Refusal::new(
                "invalid_field",
                format!(
                    "arguments: the tool {tool} is gone, so edited arguments cannot be checked; approve, reject or respond"
                ),
            ));
        };
        agent_registry::check_args(&info.parameters, arguments).map_err(|e| {
            Refusal::new(
                "invalid_field",
                format!("arguments do not fit {tool}'s schema: {e}"),
            )
        })
    }
}

/// How long a call waited since `requested_ms`.
fn waited(requested_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms() - requested_ms).unwrap_or(0))
}
