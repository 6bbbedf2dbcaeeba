//! What the store keeps and returns: threads, runs, events, pages, and the writes.

use std::sync::Arc;

use core_context::multitask;
use core_context::{AgentEvent, EventKind, RunId, ThreadId, UserId};
use serde::Serialize;
use serde_json::Value;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not ended.
    Running,
    /// Ended with `agent_completed`.
    Completed,
    /// Ended with `agent_error`.
    Failed,
    /// Ended with `agent_cancelled`.
    Cancelled,
    /// Was running when its server stopped without ending it.
    Interrupted,
    /// Paused until a person decides on its tool calls (no task runs it meanwhile).
    WaitingForApproval,
    /// Paused until its user's budget allows its next model call (no task runs it
    /// meanwhile).
    WaitingForBudget,
}

impl RunStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::WaitingForApproval => "waiting_for_approval",
            RunStatus::WaitingForBudget => "waiting_for_budget",
        }
    }

    /// Reads a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
            RunStatus::WaitingForApproval,
            RunStatus::WaitingForBudget,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// A thread, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ThreadSummary {
    /// The thread.
    pub thread_id: String,
    /// Its first message, shortened.
    pub title: String,
    /// When its first run started (Unix ms).
    pub created_ms: i64,
    /// When its latest run started (Unix ms).
    pub updated_ms: i64,
}

/// A run, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Its thread.
    pub thread_id: String,
    /// The agent.
    pub agent: String,
    /// The user's message that started it.
    pub message: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The `agent_completed` result, when it completed.
    pub outcome: Option<Value>,
    /// The `agent_error` code, when it failed.
    pub error_code: Option<String>,
    /// Token usage, for a model-backed run that completed.
    pub usage: Option<Value>,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// When it ended (Unix ms).
    pub finished_ms: Option<i64>,
}

/// A thread with its runs, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct ThreadDetail {
    /// The thread.
    #[serde(flatten)]
    pub thread: ThreadSummary,
    /// Its runs.
    pub runs: Vec<RunSummary>,
}

/// A run with its events in order (each as its wire frame, without the stream's `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Its events, and its sub-runs' events, in the order they were emitted.
    #[ts(as = "Vec<AgentEvent>")]
    pub events: Vec<Value>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass it back for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of the user's threads (`GET /v1/threads`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ThreadPage {
    /// The threads.
    pub threads: Vec<ThreadSummary>,
    /// Pass it back as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

impl From<Page<ThreadSummary>> for ThreadPage {
    fn from(page: Page<ThreadSummary>) -> Self {
        Self {
            threads: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// One change to the history.
#[derive(Debug, Clone)]
pub enum Write {
    /// A run started (creates its thread on the thread's first run).
    RunStarted {
        /// Whose.
        user: UserId,
        /// The run.
        run_id: RunId,
        /// Its thread.
        thread_id: ThreadId,
        /// The agent.
        agent: String,
        /// The user's message.
        message: String,
        /// The node executing it.
        node: String,
        /// When (Unix ms).
        at_ms: i64,
    },
    /// A run recorded as started was refused before it ran: it is forgotten (and its thread,
    /// if it has no other run).
    RunRefused {
        /// The run.
        run_id: RunId,
        /// Its thread.
        thread_id: ThreadId,
    },
    /// An event of a run (a sub-run's events go under the top-level run, `root`).
    Event {
        /// The top-level run it belongs to.
        root: RunId,
        /// The event as its stream carries it (its JSON object, without `seq`).
        json: Arc<str>,
        /// How it ends `root`, when it is `root`'s own terminal event.
        ending: Option<Ending>,
        /// When (Unix ms).
        at_ms: i64,
    },
}

impl Write {
    /// An event of the top-level run `root`, with `json` its encoding.
    pub fn event(root: RunId, event: &AgentEvent, json: Arc<str>, at_ms: i64) -> Self {
        let ending = if event.parent_run_id.is_none() {
            Ending::of(&event.kind)
        } else {
            None
        };
        Self::Event {
            root,
            json,
            ending,
            at_ms,
        }
    }
}

/// How a terminal event ends its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The run's status from now on.
    pub status: RunStatus,
    /// The result, as JSON (completed runs).
    pub outcome: Option<String>,
    /// The error code (failed runs).
    pub error_code: Option<String>,
    /// Token usage, as JSON (completed model-backed runs).
    pub usage: Option<String>,
}

impl Ending {
    /// How `kind` ends its run, if it is terminal.
    pub fn of(kind: &EventKind) -> Option<Self> {
        let end = |status, outcome, error_code, usage| Self {
            status,
            outcome,
            error_code,
            usage,
        };
        match kind {
            EventKind::AgentCompleted { result, usage, .. } => Some(end(
                RunStatus::Completed,
                serde_json::to_string(result).ok(),
                None,
                usage.as_ref().and_then(|u| serde_json::to_string(u).ok()),
            )),
            EventKind::AgentError { code, .. } => {
                Some(end(RunStatus::Failed, None, Some(code.clone()), None))
            }
            // Ended by a new message in its thread (`multitask` `interrupt`).
            EventKind::AgentCancelled { reason } if reason == multitask::INTERRUPTED => {
                Some(end(RunStatus::Interrupted, None, None, None))
            }
            EventKind::AgentCancelled { .. } => Some(end(RunStatus::Cancelled, None, None, None)),
            _ => None,
        }
    }
}

/// A thread's title: its first message, first line, at most 80 characters.
pub(crate) fn title_of(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    if line.chars().count() <= 80 {
        return line.to_owned();
    }
    let mut title: String = line.chars().take(79).collect();
    title.push('…');
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        let long = "x".repeat(100);
        let table = [
            ("What is 12*7?", "What is 12*7?"),
            ("\n  first line  \nsecond", "first line"),
            ("", ""),
            (long.as_str(), &*format!("{}…", "x".repeat(79))),
        ];
        for (message, title) in table {
            assert_eq!(title_of(message), title, "{message:?}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for name in [
            "running",
            "completed",
            "failed",
            "cancelled",
            "interrupted",
            "waiting_for_approval",
            "waiting_for_budget",
        ] {
            let status = RunStatus::parse(name).unwrap();
            assert_eq!(status.as_str(), name);
            // The API serializes the stored name.
            assert_eq!(serde_json::to_value(status).unwrap(), name);
        }
        assert_eq!(RunStatus::parse("done"), None);
    }
}
