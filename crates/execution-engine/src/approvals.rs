//! Runs that pause for a person's approval (or for their user's budget, `pause.rs`): the
//! store a paused run is saved in
//! ([`PausedRuns`]), what is saved ([`PausedRun`]), and what a resumed run is given
//! ([`Resume`]).
//!
//! A run pauses when its agent holds tool calls for approval and returns
//! `AgentContext::pause`: the engine saves the run's state and the held calls, emits one
//! `approval_requested` per call (after the save, so a decision can never find nothing to
//! decide), gives back the run's slot and ends the run's task without a terminal event. The
//! server resumes it, on any node, with [`UserExecutionEngine::resume_agent`](crate::UserExecutionEngine::resume_agent)
//! once every held call is decided; the engine knows no store, no decision transport and no
//! node, only this seam.

use std::time::{Duration, SystemTime};

use agent_registry::{DecidedCall, ResultLog};
use async_trait::async_trait;
use core_context::approval::PendingCall;
use core_context::budget::Exhausted;
use core_context::{RunScope, UserId};
use serde_json::{Value, json};

/// A run paused for approval, as the engine saves it.
#[derive(Debug, Clone, PartialEq)]
pub struct PausedRun {
    /// The run's user.
    pub user: UserId,
    /// The run (its id, thread and agent).
    pub scope: RunScope,
    /// The user's message that started it.
    pub message: String,
    /// The run's options (`payload.input`), `Null` when none.
    pub input: Value,
    /// What the engine needs to resume it: the agent's state and the run's own counters.
    /// Opaque to the store; hand it back in [`Resume::state`].
    pub state: Value,
    /// The calls waiting, each with when it expires (none for a run waiting for its budget).
    pub calls: Vec<(PendingCall, SystemTime)>,
    /// Why it waits for its user's budget, when it does (it waits for approvals otherwise).
    pub budget: Option<Exhausted>,
    /// When it paused.
    pub paused_at: SystemTime,
}

/// Where paused runs are kept: saved when a run pauses, and the results of approved calls
/// recorded as they complete ([`ResultLog`]). The server's history store implements it.
#[async_trait]
pub trait PausedRuns: ResultLog {
    /// Saves `run` durably; once this returns `Ok`, a decision on any node can resume it.
    /// The error says why it could not (the run then ends with `agent_error` `pause_failed`).
    async fn save(&self, run: &PausedRun) -> Result<(), String>;
}

/// What a paused run resumes with, once every call it waited on is decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The user's message that started the run.
    pub message: String,
    /// The run's options.
    pub input: Value,
    /// [`PausedRun::state`], as saved.
    pub state: Value,
    /// The held calls with their decisions.
    pub decided: Vec<DecidedCall>,
}

/// How long a held call waits for a decision by default: a day.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The saved state: the agent's own and the thinking steps taken (a resumed run counts on).
pub(crate) fn envelope(agent_state: Value, steps: u32) -> Value {
    json!({"agent": agent_state, "steps": steps})
}

/// The agent's state and the steps taken, from [`envelope`]'s value.
pub(crate) fn open_envelope(state: Value) -> (Value, u32) {
    match state {
        Value::Object(mut fields) => {
            let steps = fields
                .get("steps")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0);
            (fields.remove("agent").unwrap_or(Value::Null), steps)
        }
        other => (other, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_gives_back_the_agent_state_and_its_steps() {
        let state = json!({"messages": [1, 2], "turn": 3});
        assert_eq!(open_envelope(envelope(state.clone(), 7)), (state, 7));
        assert_eq!(open_envelope(json!("bare")), (json!("bare"), 0));
    }
}
