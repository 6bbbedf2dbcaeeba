//! The [`Broker`]: where users' streams live (epoch, seq, replay log) and how their frames
//! reach the node that holds the users' connections.
//!
//! The bridge keeps a node's connections; a broker keeps the streams. On one machine the
//! [`InProcessBroker`](crate::InProcessBroker) (the embedded default, `in_process.rs`) does
//! both jobs in memory. A networked broker
//! (Redis: a Stream per user as the replay log, pub/sub for live frames, seq from the stream)
//! implements the same trait, so every node publishes each event once and receives only the
//! users it holds connections of.
//!
//! The contract, which the conformance tests in `tests/it/bridge.rs` check for every broker:
//! - [`publish`](Broker::publish) gives the event the next `seq` of its user's stream (+1,
//!   no gaps within an epoch), keeps it for replay, and hands the encoded frame to the user's
//!   attached listener; a listener sees a user's frames in seq order, one at a time.
//! - [`attach`](Broker::attach) starts delivery to a node's listener for a user;
//!   [`detach`](Broker::detach) stops it. Frames published while no listener is attached
//!   are kept in the log, not dropped.
//! - [`replay`](Broker::replay) returns the frames after a seq, or says why it cannot.
//! - `publish` never waits on IO: it is called on the agent's path. A networked broker sends
//!   in the background; [`flush`](Broker::flush) waits until what was published is stored
//!   and delivered on this node.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use core_context::Epoch;
use core_context::{EmitError, EncodedEvent, UserId};

use crate::queue::{CloseReason, Frame};

/// Where a reconnecting client left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The epoch of the stream the client was reading.
    pub epoch: Epoch,
    /// The last `seq` the client received.
    pub after_seq: u64,
}

/// Why a resume could not replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// Events after `after_seq` have already left the replay log.
    TooOld,
    /// The stream's history was lost (restart or eviction); the client must refetch state.
    EpochChanged,
    /// The client claims a `seq` this stream never reached.
    SeqAhead,
}

/// The result of a resume (the server reports it in `connection_established.resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Every event after `after_seq` is queued ahead of live ones.
    Ok {
        /// How many events were replayed.
        replayed: usize,
    },
    /// Nothing was replayed; the client must refetch state.
    Failed {
        /// Why.
        reason: ResumeFailure,
        /// The oldest `seq` the log still holds (the next `seq` if the log is empty).
        oldest_seq: u64,
    },
}

/// Receives a user's frames on one node, in seq order.
pub trait FrameListener: Send + Sync {
    /// Called once per frame, in seq order, never concurrently for one user. Must not block.
    fn deliver(&self, frame: &Arc<Frame>);

    /// The broker cannot go on with the stream the listener's connections are reading (its
    /// history was lost, or frames were lost and cannot be fetched again): closes them with
    /// `reason`, so their clients reconnect and learn it from their resume. Must not block.
    fn close(&self, reason: CloseReason);
}

/// Names one attachment, so a late `detach` cannot remove a newer listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentId(u64);

impl AttachmentId {
    /// The attachment numbered `n` (a broker numbers its own attachments).
    pub fn new(n: u64) -> Self {
        Self(n)
    }

    /// Its number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Where a user's stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The stream's epoch.
    pub epoch: Epoch,
    /// The last `seq` published (0 when none).
    pub last_seq: u64,
}

/// Why frames after a seq cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRefused {
    /// Why.
    pub reason: ResumeFailure,
    /// The oldest seq the log holds (the next seq when it holds none).
    pub oldest_seq: u64,
}

/// Why the broker failed (a networked broker's IO, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// Stores users' streams and delivers their frames; see the module documentation.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends `event` to `user`'s stream and delivers it. Must not wait on IO.
    fn publish(&self, user: &UserId, event: EncodedEvent) -> Result<(), EmitError>;

    /// Starts delivering `user`'s new frames to `listener`, and says where the stream stands
    /// at that moment: every frame after `last_seq` goes to the listener.
    async fn attach(
        &self,
        user: &UserId,
        listener: Arc<dyn FrameListener>,
    ) -> Result<(AttachmentId, StreamPosition), BrokerError>;

    /// Where `user`'s stream stands now.
    async fn position(&self, user: &UserId) -> Result<StreamPosition, BrokerError>;

    /// Stops delivery to the attachment `id` (a no-op if a newer one replaced it).
    fn detach(&self, user: &UserId, id: AttachmentId);

    /// The frames of `user`'s stream after `after_seq`, if `epoch` is still the stream's and
    /// the log still holds them all.
    async fn replay(
        &self,
        user: &UserId,
        epoch: &Epoch,
        after_seq: u64,
    ) -> Result<Result<Vec<Arc<Frame>>, ReplayRefused>, BrokerError>;

    /// Forgets streams with no listener and nothing newer than the replay age; their next
    /// event starts a new epoch. Returns how many were forgotten.
    fn evict_idle(&self) -> usize;

    /// Users whose stream is held.
    fn stream_count(&self) -> usize;

    /// What the replay logs hold on this node, all users together (`None` for a broker whose
    /// logs live elsewhere).
    fn replay_memory(&self) -> Option<ReplayMemory> {
        None
    }

    /// Waits until every event published before the call is stored, so every node sequences
    /// what is published after it later (a networked broker sends in the background), without
    /// waiting for this node's listeners to have them ([`flush`](Self::flush) does). A run's
    /// end calls it before its slot goes back.
    async fn stored(&self) -> Result<(), BrokerError> {
        self.flush().await
    }

    /// Waits until every event published before the call is stored and handed to this
    /// node's listeners (a networked broker sends in the background). Graceful shutdown
    /// calls it before closing connections, so they get everything emitted first.
    async fn flush(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Whether the broker can take and deliver events now (a networked broker's connection
    /// is up). Readiness checks report it.
    fn healthy(&self) -> bool {
        true
    }
}

/// What the replay logs hold on a node, all users together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayMemory {
    /// Frames held.
    pub frames: u64,
    /// Bytes held: the frames' text and what keeping each costs.
    pub bytes: u64,
    /// Frames dropped before their user's own bounds because the logs were at
    /// [`ReplayBounds::max_bytes`], since the broker started.
    pub evicted: u64,
}

/// Bounds of the replay logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBounds {
    /// Events kept per user.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
    /// Bytes the logs of all users together may hold on this node (their frames' text and
    /// what keeping each costs); past it the oldest frames, across users, go first. Only the
    /// [`InProcessBroker`](crate::InProcessBroker) holds its logs in memory; a networked
    /// broker's live elsewhere.
    pub max_bytes: usize,
}
