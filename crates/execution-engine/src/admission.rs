//! How a top-level run enters its thread ([`Admission`]: its [`ThreadRule`], and a prelude
//! that gives its agent the thread's earlier turns once the run holds its slot), and what
//! happens between a run's terminal event and its slot going back ([`RunSettle`]).
//!
//! A run queued behind the runs of its thread must read the thread's turns when it starts,
//! not when it was accepted: the answers of the runs ahead of it are written meanwhile. And a
//! run that ends must be settled (its events stored, across nodes) before its slot goes to
//! the next run of its thread, so that run's `agent_started` follows this run's terminal
//! event in the user's stream and its earlier turns hold this run's answer.

use agent_registry::Turn;
use async_trait::async_trait;
use core_context::{RunId, RunScope, UserId};
use futures::future::BoxFuture;

use crate::slots::ThreadRule;

/// What a run does once it holds its slot, before its `agent_started`: given the run of its
/// thread it queued behind (if any: that run has ended now), it answers the thread's earlier
/// turns, which replace the run's input's `history`.
pub type Prelude = Box<dyn FnOnce(Option<RunId>) -> BoxFuture<'static, Vec<Turn>> + Send>;

/// How a top-level run enters its thread (see
/// [`execute_agent_with`](crate::UserExecutionEngine::execute_agent_with)).
#[derive(Default)]
pub struct Admission {
    /// How it shares its thread with the thread's other runs.
    pub thread: ThreadRule,
    /// Run once the run holds its slot, before its `agent_started`.
    pub prelude: Option<Prelude>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("thread", &self.thread)
            .field("prelude", &self.prelude.is_some())
            .finish()
    }
}

/// A run's place in the queue when it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAt {
    /// Claims ahead of it (of its thread, for a run kept one per thread; 0: it is next).
    pub position: usize,
    /// The run of its thread holding a slot when it queued.
    pub behind: Option<RunId>,
}

/// Settles a top-level run after its terminal event, before its slot is given back: across
/// nodes, the server waits here until the run's events are stored where every node reads
/// them (the broker, the shared history).
#[async_trait]
pub trait RunSettle: Send + Sync {
    /// `user`'s run `scope` emitted its terminal event (or paused).
    async fn settle(&self, user: &UserId, scope: &RunScope);
}
