//! A handle to one run: its ids, its outcome, and a way to cancel it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_registry::{AgentError, AgentOutput, Inbox};
use core_context::approval::PendingCall;
use core_context::budget::Exhausted;
use core_context::event::error_code;
use core_context::{CancellationToken, RunId, ThreadId};
use tokio::sync::oneshot;

use crate::admission::QueuedAt;

/// How a run ended; mirrors its terminal event.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// `agent_completed`.
    Completed {
        /// What the agent returned.
        output: AgentOutput,
        /// How long the run took.
        duration: Duration,
    },
    /// `agent_error`: the agent failed, panicked (`panic`) or timed out (`timeout`).
    Failed(AgentError),
    /// `agent_cancelled`, with the reason.
    Cancelled(String),
    /// The run paused for a person's approval of these calls (`approval_requested`), with
    /// no terminal event yet: it resumes, maybe on another node, once they are decided.
    Paused(Vec<PendingCall>),
    /// The run's next model call would pass its user's budget (`budget_exhausted`): it
    /// waits, with no terminal event yet, and resumes (maybe on another node) once the budget
    /// allows.
    WaitingForBudget(Exhausted),
}

impl RunOutcome {
    /// Whether the run completed successfully.
    pub fn is_completed(&self) -> bool {
        matches!(self, RunOutcome::Completed { .. })
    }

    /// The error code of a failed run.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            RunOutcome::Failed(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// What a run's task and its handles share: the cancel switch and the first reason given,
/// and (for an agent that takes them) the messages sent while it runs, with those it never
/// took.
#[derive(Debug, Default)]
pub(crate) struct RunControl {
    pub(crate) token: CancellationToken,
    reason: OnceLock<String>,
    pub(crate) inbox: Option<Inbox>,
    untaken: OnceLock<Vec<String>>,
    /// Events of the run the engine itself emitted (its start) that the sink refused; the
    /// agent's own are counted by its context.
    refused: AtomicU64,
}

impl RunControl {
    pub(crate) fn new(token: CancellationToken, inbox: Option<Inbox>) -> Arc<Self> {
        Arc::new(Self {
            token,
            reason: OnceLock::new(),
            inbox,
            untaken: OnceLock::new(),
            refused: AtomicU64::new(0),
        })
    }

    /// Counts an event of the run the sink refused, and stops the run: it ends
    /// `events_lost` ([`lost_events`]).
    pub(crate) fn refused_event(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.token.cancel();
    }

    /// Events of the run the engine emitted that the sink refused.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Closes the run's inbox once its agent's work ended, keeping what it never took.
    pub(crate) fn close_inbox(&self) {
        if let Some(inbox) = &self.inbox {
            let _first = self.untaken.set(inbox.close());
        }
    }

    /// Cancels the run; the first reason given is the one reported.
    pub(crate) fn cancel(&self, reason: &str) {
        let _first = self.reason.set(reason.to_owned());
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "the request was cancelled".to_owned())
    }
}

/// A run the engine accepted. Dropping the handle does not stop the run.
#[derive(Debug)]
pub struct RunHandle {
    pub(crate) run_id: RunId,
    pub(crate) thread_id: ThreadId,
    pub(crate) control: Arc<RunControl>,
    pub(crate) queued: Option<QueuedAt>,
    pub(crate) outcome: oneshot::Receiver<RunOutcome>,
}

impl RunHandle {
    /// The run's id (what `run_accepted` reports and `cancel_run` names).
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The run's thread.
    pub fn thread_id(&self) -> &ThreadId {
        &self.thread_id
    }

    /// Where the run queued when it was accepted (`None`: it had a slot at once).
    pub fn queued(&self) -> Option<&QueuedAt> {
        self.queued.as_ref()
    }

    /// Cancels the run. It ends with `agent_cancelled` carrying `reason` (unless it ended
    /// already); the agent's work is dropped at its next await point.
    pub fn cancel(&self, reason: &str) {
        self.control.cancel(reason);
    }

    /// Waits for the run to end. Its terminal event has been emitted when this returns.
    pub async fn wait(self) -> RunOutcome {
        self.wait_with_untaken().await.0
    }

    /// [`wait`](Self::wait), with the messages sent into the run
    /// ([`UserExecutionEngine::steer_run`](crate::UserExecutionEngine::steer_run)) that its
    /// agent never took: the caller gives each a run of its own, so none is lost.
    pub async fn wait_with_untaken(self) -> (RunOutcome, Vec<String>) {
        let outcome = self.outcome.await.unwrap_or_else(|_| {
            RunOutcome::Failed(AgentError::new(
                "lost",
                "the run's task ended without an outcome (the runtime shut down)",
            ))
        });
        self.control.close_inbox();
        let untaken = self.control.untaken.get().cloned().unwrap_or_default();
        (outcome, untaken)
    }
}

/// How a run ends when `refused` of its events could not be handed to the sink: `events_lost`,
/// whatever else it came to (the engine stopped it at the first, so that it does not go on
/// with a hole its client cannot see); otherwise `outcome`.
pub(crate) fn lost_events(refused: u64, outcome: RunOutcome) -> RunOutcome {
    if refused == 0 {
        return outcome;
    }
    let what = if refused == 1 {
        "one of its events".to_owned()
    } else {
        format!("{refused} of its events")
    };
    RunOutcome::Failed(AgentError::new(
        error_code::EVENTS_LOST,
        format!(
            "the run was stopped because {what} could not be delivered (the server could not pass them on, for example while its broker was out of reach); start it again"
        ),
    ))
}

/// A time limit as people read it: `250 ms`, `25 s`.
pub(crate) fn describe_limit(limit: Duration) -> String {
    if limit.as_millis() < 1_000 {
        format!("{} ms", limit.as_millis())
    } else {
        format!("{} s", limit.as_secs_f64())
    }
}
