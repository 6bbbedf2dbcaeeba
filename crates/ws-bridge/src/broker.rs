//! The [`Broker`]: where users' streams live (epoch, seq, replay log) and how their frames
//! reach the node that holds the users' connections.
//!
//! The bridge keeps a node's connections; a broker keeps the streams. On one machine the
//! [`InProcessBroker`] (the embedded default) does both jobs in memory. A networked broker
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

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
pub use core_context::Epoch;
use core_context::{EmitError, EncodedEvent, UserId};
use parking_lot::{Mutex, RwLock};

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

    /// Frames the replay logs hold on this node, all users together (`None` for a broker
    /// whose logs live elsewhere).
    fn replay_frames(&self) -> Option<u64> {
        None
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

/// Bounds of a replay log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBounds {
    /// Events kept per user.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
}

struct Stream {
    epoch: Epoch,
    next_seq: u64,
    // Each frame with when it was published, side by side: trimming reads the times of the
    // oldest frames on every publish, and these stay in the deque's own (warm) buffer.
    log: VecDeque<(Instant, Arc<Frame>)>,
    listener: Option<(AttachmentId, Arc<dyn FrameListener>)>,
    last_activity: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: Epoch::generate(),
            next_seq: 1,
            log: VecDeque::new(),
            listener: None,
            last_activity: Instant::now(),
        }
    }

    fn trim(&mut self, bounds: &ReplayBounds, now: Instant) {
        while self.log.len() > bounds.max_events {
            self.log.pop_front();
        }
        while let Some((at, _)) = self.log.front() {
            if now.duration_since(*at) <= bounds.max_age {
                break;
            }
            self.log.pop_front();
        }
    }

    fn oldest_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |(_, f)| f.seq)
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            last_seq: self.next_seq - 1,
        }
    }
}

/// The embedded broker: streams in this process's memory. Its history is lost on restart,
/// which a resuming client learns as `epoch_changed`.
pub struct InProcessBroker {
    bounds: ReplayBounds,
    // Read on every event, written when a user's first stream opens or idle ones go.
    streams: RwLock<foldhash::HashMap<UserId, Arc<Mutex<Stream>>>>,
    next_attachment: AtomicU64,
}

impl InProcessBroker {
    /// A broker keeping each user's log within `bounds`.
    pub fn new(bounds: ReplayBounds) -> Self {
        Self {
            bounds,
            streams: RwLock::new(foldhash::HashMap::default()),
            next_attachment: AtomicU64::new(1),
        }
    }

    fn stream(&self, user: &UserId) -> Arc<Mutex<Stream>> {
        // Looked up on every event: shared, and the user id is cloned only for a new stream.
        if let Some(stream) = self.streams.read().get(user) {
            return Arc::clone(stream);
        }
        Arc::clone(
            self.streams
                .write()
                .entry(user.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Stream::new()))),
        )
    }

    /// The frames `user`'s log holds now, oldest first.
    pub fn replay_log(&self, user: &UserId) -> Vec<Arc<Frame>> {
        let Some(stream) = self.streams.read().get(user).cloned() else {
            return Vec::new();
        };
        let s = stream.lock();
        s.log.iter().map(|(_, f)| Arc::clone(f)).collect()
    }
}

impl std::fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBroker")
            .field("bounds", &self.bounds)
            .field("streams", &self.stream_count())
            .finish()
    }
}

#[async_trait]
impl Broker for InProcessBroker {
    fn publish(&self, user: &UserId, event: EncodedEvent) -> Result<(), EmitError> {
        let stream = self.stream(user);
        let mut s = stream.lock();
        let seq = s.next_seq;
        // Framing and delivering under the stream's lock keeps seq order, log order and
        // delivery order one and the same; only this user's stream waits.
        let text = event.frame(seq);
        s.next_seq += 1;
        let now = Instant::now();
        let frame = Arc::new(Frame {
            seq,
            text: Arc::from(text),
            published: now,
        });
        s.log.push_back((now, Arc::clone(&frame)));
        s.trim(&self.bounds, now);
        s.last_activity = now;
        if let Some((_, listener)) = &s.listener {
            listener.deliver(&frame);
        }
        Ok(())
    }

    async fn attach(
        &self,
        user: &UserId,
        listener: Arc<dyn FrameListener>,
    ) -> Result<(AttachmentId, StreamPosition), BrokerError> {
        let id = AttachmentId(self.next_attachment.fetch_add(1, Ordering::Relaxed));
        let stream = self.stream(user);
        let mut s = stream.lock();
        s.listener = Some((id, listener));
        s.last_activity = Instant::now();
        Ok((id, s.position()))
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, BrokerError> {
        Ok(self.stream(user).lock().position())
    }

    fn detach(&self, user: &UserId, id: AttachmentId) {
        let Some(stream) = self.streams.read().get(user).cloned() else {
            return;
        };
        let mut s = stream.lock();
        if s.listener
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            s.listener = None;
            s.last_activity = Instant::now();
        }
    }

    async fn replay(
        &self,
        user: &UserId,
        epoch: &Epoch,
        after_seq: u64,
    ) -> Result<Result<Vec<Arc<Frame>>, ReplayRefused>, BrokerError> {
        let stream = self.stream(user);
        let mut s = stream.lock();
        s.trim(&self.bounds, Instant::now());
        let refused = |reason| {
            Ok(Err(ReplayRefused {
                reason,
                oldest_seq: s.oldest_seq(),
            }))
        };
        if *epoch != s.epoch {
            return refused(ResumeFailure::EpochChanged);
        }
        if after_seq > s.next_seq - 1 {
            return refused(ResumeFailure::SeqAhead);
        }
        if after_seq + 1 < s.oldest_seq() {
            return refused(ResumeFailure::TooOld);
        }
        Ok(Ok(s
            .log
            .iter()
            .filter(|(_, f)| f.seq > after_seq)
            .map(|(_, f)| Arc::clone(f))
            .collect()))
    }

    fn evict_idle(&self) -> usize {
        let max_age = self.bounds.max_age;
        let mut streams = self.streams.write();
        let before = streams.len();
        streams.retain(|_, stream| {
            let s = stream.lock();
            s.listener.is_some() || s.last_activity.elapsed() <= max_age
        });
        before - streams.len()
    }

    fn stream_count(&self) -> usize {
        self.streams.read().len()
    }

    fn replay_frames(&self) -> Option<u64> {
        let streams: Vec<_> = self.streams.read().values().cloned().collect();
        Some(streams.iter().map(|s| s.lock().log.len() as u64).sum())
    }
}
