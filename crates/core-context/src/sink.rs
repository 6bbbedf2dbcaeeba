//! The one way anything emits an event.
//!
//! The engine, the agent context and the tool dispatcher all emit through [`EventSink`];
//! `ws-bridge` implements it for live delivery, and [`RecordingSink`] keeps events in memory
//! (for tests, and for embedders that want the events of a run as a list).
//!
//! `emit` is synchronous on purpose: a sink must never make an agent wait for a slow client.
//! It assigns order at the call, so the order of `emit` calls of one run is the order the
//! user sees.

use parking_lot::Mutex;

use crate::event::AgentEvent;
use crate::id::UserId;

/// Why an event could not be accepted. The engine logs and counts these; it never ignores them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The sink is shut down.
    #[error("the event sink is closed")]
    Closed,
    /// The sink refused the event.
    #[error("the event sink refused the event: {0}")]
    Rejected(String),
}

/// Receives every event, keyed by the user it belongs to.
pub trait EventSink: Send + Sync + 'static {
    /// Accepts `event` for `user_id`'s stream. Must not block on IO.
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError>;
}

/// An [`EventSink`] that records every event in order.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<(UserId, AgentEvent)>>,
}

impl RecordingSink {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every event recorded so far, in emission order.
    pub fn events(&self) -> Vec<(UserId, AgentEvent)> {
        self.events.lock().clone()
    }
    /// The events of one user, in emission order.
    pub fn events_for(&self, user_id: &UserId) -> Vec<AgentEvent> {
        self.events
            .lock()
            .iter()
            .filter(|(u, _)| u == user_id)
            .map(|(_, e)| e.clone())
            .collect()
    }
    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.events.lock().len()
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.lock().is_empty()
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        self.events.lock().push((user_id.clone(), event));
        Ok(())
    }
}
