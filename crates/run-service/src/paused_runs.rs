//! [`HistoryPausedRuns`]: the engine's paused runs (`execution_engine::PausedRuns`), kept in
//! the server's history store, and the results of approved calls recorded there; and how a
//! paused run ends when it is not resumed (`Ending`), which the service's cancel and the
//! approvals share.

use std::sync::Arc;

use agent_registry::ResultLog;
use async_trait::async_trait;
use core_context::RunId;
use execution_engine::{PausedRun, PausedRuns};
use history::WaitingCall;

use crate::recorder::{Recorder, unix_ms};

/// The engine's paused runs, kept in the server's history store.
pub struct HistoryPausedRuns {
    recorder: Arc<Recorder>,
}

impl HistoryPausedRuns {
    /// Paused runs kept by `recorder`'s store.
    pub fn new(recorder: Arc<Recorder>) -> Self {
        Self { recorder }
    }
}

#[async_trait]
impl ResultLog for HistoryPausedRuns {
    async fn record(&self, run: &RunId, tool_call_id: &str, result: &serde_json::Value) {
        match self
            .recorder
            .store()
            .record_result(run, tool_call_id, result)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%run, tool_call_id, "approvals: a call's result was already recorded")
            }
            Err(error) => {
                tracing::warn!(%run, tool_call_id, %error, "approvals: cannot record a call's result")
            }
        }
    }
}

#[async_trait]
impl PausedRuns for HistoryPausedRuns {
    async fn save(&self, run: &PausedRun) -> Result<(), String> {
        // The run's start (and its events so far) are written first.
        self.recorder.writer().flush().await;
        let stored = history::PausedRun {
            user: run.user.clone(),
            run_id: run.scope.run_id.clone(),
            thread_id: run.scope.thread_id.clone(),
            agent: run.scope.agent_name.to_string(),
            message: run.message.clone(),
            input: run.input.clone(),
            state: run.state.clone(),
            paused_ms: unix_ms(run.paused_at),
            calls: run
                .calls
                .iter()
                .map(|(call, expires)| WaitingCall {
                    call: call.clone(),
                    expires_ms: unix_ms(*expires),
                })
                .collect(),
            budget: run.budget.clone(),
        };
        self.recorder
            .store()
            .pause_run(&stored)
            .await
            .map_err(|e| e.to_string())
    }
}

/// How a paused run ends when it is not resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Cancelled (by its user), with the reason its `agent_cancelled` gives.
    Cancelled(&'static str),
    /// Ended by a new message in its thread (`multitask` `interrupt`): status `interrupted`.
    Interrupted,
    /// Ended and erased by a new message in its thread (`multitask` `rollback`).
    RolledBack,
}
