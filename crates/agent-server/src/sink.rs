//! The engine's event sink in the server: each event is counted, encoded once, recorded in
//! the history (with `--store`) and published on the user's live stream, in that order.

use std::sync::Arc;

use core_context::{AgentEvent, EmitError, EncodedEvent, EventSink, UserId};
use history::HistoryWriter;
use ws_bridge::AgentWebSocketBridge;

use crate::metrics::Metrics;
use crate::recorder::now_ms;

/// See the module documentation.
pub(crate) struct ServerSink {
    /// Where events go live.
    pub(crate) live: AgentWebSocketBridge,
    /// Where they are recorded, with a store.
    pub(crate) history: Option<HistoryWriter>,
    /// What counts them.
    pub(crate) metrics: Arc<Metrics>,
}

impl EventSink for ServerSink {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        self.metrics.observe(&event);
        let encoded = EncodedEvent::encode(&event)
            .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))?;
        if let Some(history) = &self.history {
            history.record_event(&event, Arc::clone(&encoded.json), now_ms());
        }
        self.live.publish(user_id, encoded)
    }
}
