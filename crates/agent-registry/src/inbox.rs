//! [`Inbox`]: messages the user sends into a thread while its run is going (`multitask`
//! `steer`), waiting for the run's agent to take them at its next safe point
//! ([`AgentContext::take_messages`](crate::AgentContext::take_messages)).
//!
//! The engine makes one for each top-level run whose agent can take messages
//! ([`Agent::can_steer`](crate::Agent::can_steer)) and closes it when the agent's work ends:
//! what was not taken by then is handed back (the server starts each as a run of its own, so a
//! message is never lost), and a message that comes after is refused, for the same end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A run's waiting messages; clones share them. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    closed: bool,
    messages: VecDeque<String>,
}

impl Inbox {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the queue half-changed: every change is one call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An open, empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves `message` for the run; gives it back when the inbox is closed (the run's work
    /// ended: the caller must find the message another home).
    pub fn push(&self, message: String) -> Result<(), String> {
        let mut state = self.state();
        if state.closed {
            return Err(message);
        }
        state.messages.push_back(message);
        Ok(())
    }

    /// Takes the waiting messages, oldest first.
    pub fn take(&self) -> Vec<String> {
        self.state().messages.drain(..).collect()
    }

    /// Closes the inbox: later messages are refused. Returns those never taken.
    pub fn close(&self) -> Vec<String> {
        let mut state = self.state();
        state.closed = true;
        state.messages.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wait_in_order_until_taken_or_the_inbox_closes() {
        let inbox = Inbox::new();
        let shared = inbox.clone();
        shared.push("one".into()).unwrap();
        shared.push("two".into()).unwrap();
        assert_eq!(inbox.take(), ["one", "two"]);
        assert!(inbox.take().is_empty());
        shared.push("three".into()).unwrap();
        assert_eq!(inbox.close(), ["three"]);
        assert_eq!(shared.push("late".into()), Err("late".to_owned()));
        assert!(inbox.take().is_empty());
    }
}
