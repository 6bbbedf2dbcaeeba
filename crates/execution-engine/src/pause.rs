//! [`pause_if_waiting`]: how the engine pauses a run: one whose agent holds tool calls for approval, or
//! one whose next model call would pass its user's budget. It saves the run through the
//! [`PausedRuns`](crate::PausedRuns) seam, gives its slot back (its thread stays held),
//! then announces why it waits: each held call's `approval_requested`, or `budget_exhausted`.

use std::time::SystemTime;

use agent_registry::AgentError;
use core_context::approval::PendingCall;
use core_context::budget::Exhausted;
use core_context::event::{EventKind, error_code};
use core_context::{RunScope, Timestamp, redact};
use serde_json::Value;

use crate::approvals::PausedRun;
use crate::inner::EngineInner;
use crate::run::RunOutcome;
use crate::slots::SlotPermit;

/// What a pausing run waits for.
enum Waiting {
    /// People's decisions on these calls.
    Approval(Vec<PendingCall>),
    /// Its user's budget.
    Budget(Exhausted),
}

impl Waiting {
    fn what(&self) -> &'static str {
        match self {
            Waiting::Approval(_) => "a person's approval",
            Waiting::Budget(_) => "its user's budget",
        }
    }
}

/// Pauses the run when its `outcome` says it waits and its agent gave the state to resume
/// from (the slot of `permit` goes back); any other outcome is the run's, as it is.
pub(crate) async fn pause_if_waiting(
    engine: &EngineInner,
    scope: &RunScope,
    (message, input): (String, Value),
    (outcome, state): (RunOutcome, Option<Value>),
    permit: &mut Option<SlotPermit>,
) -> RunOutcome {
    let (waiting, state) = match (outcome, state) {
        (RunOutcome::Paused(calls), Some(state)) => (Waiting::Approval(calls), state),
        (RunOutcome::WaitingForBudget(exhausted), Some(state)) => {
            (Waiting::Budget(exhausted), state)
        }
        (outcome, _) => return outcome,
    };
    pause(
        engine,
        scope,
        (message, input, state),
        waiting,
        permit.take(),
    )
    .await
}

/// Saves a run that paused, then announces why it waits (never before the save: a
/// decision, or a budget that allows it again, must find the run). A run that cannot be
/// saved fails with `pause_failed` instead.
async fn pause(
    engine: &EngineInner,
    scope: &RunScope,
    (message, input, state): (String, Value, Value),
    waiting: Waiting,
    permit: Option<SlotPermit>,
) -> RunOutcome {
    let what = waiting.what();
    let Some(store) = &engine.paused else {
        return RunOutcome::Failed(AgentError::new(
            error_code::PAUSE_FAILED,
            format!("the run waits for {what} but this server keeps no paused runs"),
        ));
    };
    let now = SystemTime::now();
    let expires = now + engine.config.approval_timeout;
    let (calls, budget) = match &waiting {
        Waiting::Approval(calls) => (calls.iter().map(|c| (c.clone(), expires)).collect(), None),
        Waiting::Budget(exhausted) => (Vec::new(), Some(exhausted.clone())),
    };
    let run = PausedRun {
        user: engine.context.user_id().clone(),
        scope: scope.clone(),
        message,
        input,
        state,
        calls,
        budget,
        paused_at: now,
    };
    if let Err(error) = store.save(&run).await {
        tracing::warn!(run_id = %scope.run_id, %error, "a paused run could not be saved");
        return RunOutcome::Failed(AgentError::new(
            error_code::PAUSE_FAILED,
            format!(
                "the run waits for {what}, but its state could not be saved ({error}); start it again"
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
    match waiting {
        Waiting::Approval(calls) => {
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
        Waiting::Budget(exhausted) => {
            engine.emit(
                scope,
                EventKind::BudgetExhausted {
                    budget: exhausted.budget,
                    used: exhausted.used,
                    limit: exhausted.limit,
                    resets_at: exhausted.resets_at,
                },
            );
            RunOutcome::WaitingForBudget(exhausted)
        }
    }
}
