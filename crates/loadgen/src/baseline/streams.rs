//! The baseline's per-user fan-out: each user's `seq` and the send queues of its open
//! connections. An event is numbered and encoded once under the user's lock and the same
//! bytes are queued on every connection, the way the bridge shares one encoding.
//!
//! A connection whose queue is full is dropped from the user (its socket loop then closes it
//! as a slow consumer), like the bridge's bounded queues.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use core_context::{AgentEvent, SequencedEvent, UserId};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Events a connection may have queued (the server's default `--send-queue-events`).
pub const QUEUE_EVENTS: usize = 1_024;

/// Where a synthetic run's events go: a user's stream, which numbers each event, encodes it
/// once and sends it to every connection of the user.
pub trait Emit: Send + Sync + 'static {
    /// Numbers, encodes and sends `event`.
    fn emit(&self, event: AgentEvent);
}

/// One user's stream.
#[derive(Debug, Default)]
pub struct UserStream {
    inner: Mutex<StreamState>,
}

#[derive(Debug, Default)]
struct StreamState {
    seq: u64,
    next_connection: u64,
    connections: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
}

impl UserStream {
    /// Adds a connection; returns its key, its queue and the stream's last `seq`.
    pub fn join(&self) -> (u64, mpsc::Receiver<Utf8Bytes>, u64) {
        let (sender, receiver) = mpsc::channel(QUEUE_EVENTS);
        let mut state = self.inner.lock();
        state.next_connection += 1;
        let key = state.next_connection;
        state.connections.push((key, sender));
        (key, receiver, state.seq)
    }
}

impl Emit for UserStream {
    /// Numbers `event`, encodes it once, and queues it on every connection of the user.
    fn emit(&self, event: AgentEvent) {
        let mut state = self.inner.lock();
        state.seq += 1;
        let frame = SequencedEvent {
            seq: state.seq,
            event,
        };
        let text = Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default());
        // A full queue is a slow consumer: forget it; its loop sees the queue closed.
        state
            .connections
            .retain(|(_, queue)| queue.try_send(text.clone()).is_ok());
    }
}

/// A user's stream that connections join and leave, each under a key.
pub trait Joined: Default {
    /// Removes connection `key`; says whether the stream has no connection left.
    fn leave(&self, key: u64) -> bool;
}

impl Joined for UserStream {
    fn leave(&self, key: u64) -> bool {
        let mut state = self.inner.lock();
        state.connections.retain(|(k, _)| *k != key);
        state.connections.is_empty()
    }
}

/// Every user's stream, created on the user's first connection (the baseline's, and the
/// floor's with its own stream type).
#[derive(Debug)]
pub struct Streams<S = UserStream> {
    users: Mutex<HashMap<UserId, Arc<S>>>,
}

impl<S> Default for Streams<S> {
    fn default() -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Joined> Streams<S> {
    /// The stream of `user`, created if needed.
    pub fn of(&self, user: &UserId) -> Arc<S> {
        Arc::clone(self.users.lock().entry(user.clone()).or_default())
    }

    /// Removes connection `key` of `user`, and the user's stream once it has no connection
    /// (runs still going keep their own handle to it).
    pub fn leave(&self, user: &UserId, key: u64) {
        let mut users = self.users.lock();
        if users.get(user).is_some_and(|stream| stream.leave(key)) {
            users.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use core_context::{EventKind, RunId, RunScope, ThreadId};

    use super::*;

    fn event() -> AgentEvent {
        RunScope {
            run_id: RunId::parse("run_a").expect("valid"),
            parent_run_id: None,
            thread_id: ThreadId::parse("thr_a").expect("valid"),
            agent_name: Arc::from("synthetic"),
        }
        .event(EventKind::AgentResponseChunk { delta: "x".into() })
    }

    #[test]
    fn every_connection_gets_the_same_bytes_in_seq_order_and_users_are_apart() {
        let streams = Streams::<UserStream>::default();
        let alice = UserId::parse("alice").expect("valid");
        let bob = UserId::parse("bob").expect("valid");
        let (_, mut a1, _) = streams.of(&alice).join();
        let (_, mut a2, _) = streams.of(&alice).join();
        let (_, mut b1, _) = streams.of(&bob).join();
        streams.of(&alice).emit(event());
        streams.of(&alice).emit(event());
        let first = a1.try_recv().expect("queued");
        assert_eq!(
            a2.try_recv().expect("queued").as_str().as_ptr(),
            first.as_str().as_ptr()
        );
        assert!(first.as_str().contains(r#""seq":1"#), "{}", first.as_str());
        assert!(
            a1.try_recv()
                .expect("queued")
                .as_str()
                .contains(r#""seq":2"#)
        );
        assert!(b1.try_recv().is_err(), "bob got alice's event");
    }

    #[test]
    fn a_full_queue_drops_that_connection_only() {
        let streams = Streams::<UserStream>::default();
        let user = UserId::parse("alice").expect("valid");
        let (_, mut reader, _) = streams.of(&user).join();
        let (_, stalled, _) = streams.of(&user).join();
        for _ in 0..=QUEUE_EVENTS {
            streams.of(&user).emit(event());
            let _ = reader.try_recv();
        }
        let mut stalled = stalled;
        let mut queued = 0;
        while stalled.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, QUEUE_EVENTS, "the stalled queue kept its bound");
        streams.of(&user).emit(event());
        assert!(reader.try_recv().is_ok(), "the reader still gets events");
        assert!(
            stalled.try_recv().is_err(),
            "the stalled connection was dropped"
        );
    }
}
