//! The end of a dead node's runs: what a reaper emits for each run whose lease it took (its
//! `agent_started` if it never reached the stream, a `tool_completed` for each call left open,
//! then `agent_error` `node_lost`; nothing for a run that had already ended), from what the
//! publish script kept on the run's record.

use std::sync::Arc;

use core_context::{
    AgentEvent, EmitError, EncodedEvent, EventKind, RunId, RunScope, ThreadId, UserId,
};

use crate::publisher::PublishQueue;

/// The `agent_error` code of a run whose node stopped renewing its lease.
pub const NODE_LOST: &str = "node_lost";

/// What the reaper found: a run whose node stopped renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRun {
    /// Its user.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// Its agent.
    pub agent_name: String,
}

/// A run whose lease a script took: `(user, run, thread, agent, queued, message, started,
/// open calls, ended, open sub-runs, their open calls)` (`started`: `1` once the run's
/// `agent_started` is in its user's stream; the open calls: `tool_call_id`, tool name, ... of
/// its `tool_executing` events that have no `tool_completed` in the stream; `ended`: `1` once
/// its terminal event is there; the open sub-runs: run, parent, agent, ... in the order they
/// started; their open calls: `tool_call_id`, run, tool name, ...).
pub(crate) type TakenRun = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Vec<String>,
    String,
    Vec<String>,
    Vec<String>,
);

/// Emits the terminal `agent_error` `node_lost` of each taken run (past its run's ended
/// mark, which drops every other late event of it).
pub(crate) fn end_runs(publish: &PublishQueue, taken: Vec<TakenRun>) -> Vec<LostRun> {
    let mut lost = Vec::new();
    for (user, run, thread, agent, _queued, message, started, open, ended, subs, sub_open) in taken
    {
        if ended == "1" {
            // The run had ended (its terminal event is in the stream) and its node died
            // before giving its slot back: the slot is freed, nothing more is said.
            tracing::debug!(%run, "redis broker: a dead node's ended run gave its slot back");
            continue;
        }
        let (Ok(user), Ok(run_id), Ok(thread_id)) = (
            UserId::parse(&user),
            RunId::parse(&run),
            ThreadId::parse(&thread),
        ) else {
            tracing::error!(%run, "redis broker: an expired lease names invalid ids; skipped");
            continue;
        };
        let scope = RunScope {
            run_id: run_id.clone(),
            parent_run_id: None,
            thread_id: thread_id.clone(),
            agent_name: Arc::from(agent.as_str()),
        };
        // A run whose start never reached its user's stream (queued, or its node died before
        // publishing it) gets its start, then its end, as a queued run cancelled on its own
        // node does: every run's first event is its one agent_started.
        let mut events: Vec<AgentEvent> = Vec::with_capacity(2);
        if started != "1" {
            events.push(scope.event(EventKind::AgentStarted { message }));
        }
        // Its calls left open are closed first, as a cancelled run's are.
        for call in open.chunks_exact(2) {
            events.push(scope.event(lost_call(&call[0], &call[1])));
        }
        // Then its sub-runs still open, the last started first (a sub-run's own sub-runs
        // started after it), each with its calls closed, so each ends before its parent.
        for sub in subs.chunks_exact(3).rev() {
            let (Ok(sub_run), Ok(parent)) = (RunId::parse(&sub[0]), RunId::parse(&sub[1])) else {
                tracing::error!(%run, "redis broker: a lost run's sub-run names invalid ids; skipped");
                continue;
            };
            let sub_scope = RunScope {
                run_id: sub_run,
                parent_run_id: Some(parent),
                thread_id: thread_id.clone(),
                agent_name: Arc::from(sub[2].as_str()),
            };
            for call in sub_open.chunks_exact(3).filter(|call| call[1] == sub[0]) {
                events.push(sub_scope.event(lost_call(&call[0], &call[2])));
            }
            events.push(sub_scope.event(node_lost()));
        }
        events.push(scope.event(node_lost()));
        for event in events {
            let sent = EncodedEvent::encode(&event)
                .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))
                .and_then(|encoded| publish.enqueue(&user, encoded, true));
            if let Err(error) = sent {
                tracing::error!(%error, %run, "redis broker: cannot emit the end of a lost run");
            }
        }
        tracing::warn!(%run, user = %user.as_str(), "redis broker: ended a run whose node stopped renewing its lease");
        lost.push(LostRun {
            user,
            run_id,
            thread_id,
            agent_name: agent,
        });
    }
    lost
}

/// The `tool_completed` (an error) that closes a call its node left open.
fn lost_call(tool_call_id: &str, tool_name: &str) -> EventKind {
    EventKind::ToolCompleted {
        tool_call_id: tool_call_id.to_owned(),
        tool_name: tool_name.to_owned(),
        result: serde_json::Value::String(
            "the server running this run stopped during the call".into(),
        ),
        is_error: true,
        duration_ms: 0,
    }
}

/// The `agent_error` `node_lost` that ends a run its node left.
fn node_lost() -> EventKind {
    EventKind::AgentError {
        code: NODE_LOST.into(),
        message: "the server running this run stopped; start it again".into(),
    }
}
