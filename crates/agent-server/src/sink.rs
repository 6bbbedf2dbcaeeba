//! The engine's event sink in the server: each event is counted, scrubbed of the server's
//! secrets, encoded once, recorded in the history (with `--store`) and published on the
//! user's live stream, in that order; so the stream, its replay, AG-UI and the history all
//! hold the scrubbed event.

use std::sync::Arc;

use core_context::event::EventKind;
use core_context::{AgentEvent, EmitError, EncodedEvent, EventSink, RunScope, UserId};
use execution_engine::RunSettle;
use history::HistoryWriter;
use run_service::recorder::now_ms;
use secrets::{Scrubber, Site};
use ws_bridge::AgentWebSocketBridge;

use server_metrics::Metrics;

/// See the module documentation.
pub(crate) struct ServerSink {
    /// Where events go live.
    pub(crate) live: AgentWebSocketBridge,
    /// Where they are recorded, with a store.
    pub(crate) history: Option<HistoryWriter>,
    /// What counts them.
    pub(crate) metrics: Arc<Metrics>,
    /// What removes the server's secrets from them.
    pub(crate) scrubber: Arc<Scrubber>,
}

impl EventSink for ServerSink {
    fn emit(&self, user_id: &UserId, mut event: AgentEvent) -> Result<(), EmitError> {
        self.metrics.observe(&event);
        scrub(&self.scrubber, &mut event.kind);
        let encoded = EncodedEvent::encode(&event)
            .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))?;
        if let Some(history) = &self.history {
            history.record_event(&event, Arc::clone(&encoded.json), now_ms());
        }
        self.live.publish(user_id, encoded)
    }
}

#[async_trait::async_trait]
impl RunSettle for ServerSink {
    /// Across nodes: the run's events are in Redis (so the next run of its thread, on any
    /// node, is sequenced after them) and, with a shared store, in the history (so that run
    /// reads this one's answer) before the run's slot goes back.
    async fn settle(&self, _user: &UserId, scope: &RunScope) {
        if let Err(error) = self.live.stored().await {
            tracing::warn!(run_id = %scope.run_id, %error, "a run's events could not be flushed to the broker before its slot went back");
        }
        if let Some(history) = &self.history {
            history.flush().await;
        }
    }
}

/// Scrubs every text an agent or a tool put into `kind` (the ids, names and codes around
/// them are the server's own).
fn scrub(scrubber: &Scrubber, kind: &mut EventKind) {
    if !scrubber.is_active() {
        return;
    }
    let site = Site::Events;
    match kind {
        EventKind::AgentStarted { message } => scrubber.scrub_string(site, message),
        EventKind::AgentThinking { reasoning, .. } => scrubber.scrub_string(site, reasoning),
        EventKind::ToolExecuting { arguments, .. } => scrubber.scrub_json(site, arguments),
        EventKind::ToolCompleted { result, .. } => scrubber.scrub_json(site, result),
        EventKind::AgentResponseChunk { delta } => scrubber.scrub_string(site, delta),
        EventKind::AgentCompleted { result, usage, .. } => {
            let usage = usage
                .as_mut()
                .is_some_and(|usage| scrubber.scrub_json(site, usage));
            scrubber.scrub_json(site, result) | usage
        }
        EventKind::AgentError { message, .. } => scrubber.scrub_string(site, message),
        EventKind::AgentCancelled { reason } => scrubber.scrub_string(site, reason),
        EventKind::ApprovalRequested { arguments, .. } => scrubber.scrub_json(site, arguments),
        EventKind::ApprovalResolved { .. } | EventKind::BudgetExhausted { .. } => false,
        EventKind::MessageReceived { message } => scrubber.scrub_string(site, message),
    };
}
