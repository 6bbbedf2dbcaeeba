//! [`pause`]: how the engine pauses a run whose agent holds tool calls for approval: it
//! saves the run through the [`PausedRuns`](crate::PausedRuns) seam, gives its slot back,
//! then announces each held call.

use std::time::SystemTime;

use agent_registry::AgentError;
use core_context::approval::PendingCall;
use core_context::event::{EventKind, error_code};
use core_context::{RunScope, Timestamp, redact};
use serde_json::Value;

use crate::approvals::PausedRun;
use crate::inner::EngineInner;
use crate::run::RunOutcome;
use crate::slots::SlotPermit;

/// Saves a run that paused for approval of `calls`, then emits their `approval_requested`
/// (never before the save: a decision must find the run). A run that cannot be saved fails
/// with `pause_failed` instead.
pub(crate) async fn pause(
    engine: &EngineInner,
    scope: &RunScope,
    (message, input, state): (String, Value, Value),
    calls: Vec<PendingCall>,
    permit: Option<SlotPermit>,
) -> RunOutcome {
    let Some(store) = &engine.paused else {
        return RunOutcome::Failed(AgentError::new(
            error_code::PAUSE_FAILED,
            "the run waits for approval but this server keeps no paused runs",
        ));
    };
    let now = SystemTime::now();
    let expires = now + engine.config.approval_timeout;
    let run = PausedRun {
        user: engine.context.user_id().clone(),
        scope: scope.clone(),
        message,
        input,
        state,
        calls: calls.iter().map(|c| (c.clone(), expires)).collect(),
        paused_at: now,
    };
    if let Err(error) = store.save(&run).await {
        tracing::warn!(run_id = %scope.run_id, %error, "a paused run could not be saved");
        return RunOutcome::Failed(AgentError::new(
            error_code::PAUSE_FAILED,
            format!(
                "the run waits for a person's approval, but its state could not be saved ({error}); start it again"
            ),
        ));
    }
    // The slot is given back before the pause is announced: across nodes, no node may take
    // the run for one whose node died while it waits.
    if let Some(permit) = permit {
        // Its thread waits for it: messages queued there run after the resumed run.
        let user = engine.context.user_id();
        if let Err(error) = engine
            .slots
            .hold_thread(user, &scope.thread_id, &scope.run_id)
            .await
        {
            tracing::warn!(run_id = %scope.run_id, %error, "a paused run could not keep its thread; queued messages there may run before it resumes");
        }
        permit.give_back().await;
    }
    let limits = &engine.config.dispatch.redaction;
    for call in &calls {
        engine.emit(
            scope,
            EventKind::ApprovalRequested {
                tool_call_id: call.tool_call_id.clone(),
                tool_name: call.tool_name.clone(),
                arguments: redact::redact(&call.arguments, limits),
                expires_at: Timestamp::from(expires),
            },
        );
    }
    RunOutcome::Paused(calls)
}
