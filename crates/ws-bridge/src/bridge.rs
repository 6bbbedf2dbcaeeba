//! The bridge: per-user streams, subscriptions and resume.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use core_context::{AgentEvent, ConnectionId, EmitError, EventSink, SequencedEvent, UserId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::queue::{CloseReason, ConnectionQueue, Frame};

/// Bounds of the bridge; the defaults are those of `docs/ARCHITECTURE.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Events kept per user for replay.
    pub replay_max_events: usize,
    /// How long an event is kept for replay.
    pub replay_max_age: Duration,
    /// Open connections per user.
    pub max_connections_per_user: usize,
    /// Frames a connection may have queued before it counts as a slow consumer.
    pub send_queue_events: usize,
    /// Bytes a connection may have queued before it counts as a slow consumer.
    pub send_queue_bytes: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            replay_max_events: 1_000,
            replay_max_age: Duration::from_secs(600),
            max_connections_per_user: 10,
            send_queue_events: 1_024,
            send_queue_bytes: 1 << 20,
        }
    }
}

/// Names one life of a user's stream; `seq` restarts only under a new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    fn generate() -> Self {
        Self(Arc::from(
            format!("ep_{}", ulid::Ulid::new()).to_ascii_lowercase(),
        ))
    }

    /// An epoch as a client sent it back.
    pub fn from_client(value: &str) -> Self {
        Self(Arc::from(value))
    }

    /// The epoch as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a reconnecting client left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The epoch of the stream the client was reading.
    pub epoch: Epoch,
    /// The last `seq` the client received.
    pub after_seq: u64,
}

/// Why a resume could not replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFailure {
    /// Events after `after_seq` have already left the replay log.
    TooOld,
    /// The stream's history was lost (restart or eviction); the client must refetch state.
    EpochChanged,
    /// The client claims a `seq` this stream never reached.
    SeqAhead,
}

/// The result of a resume, as `connection_established.resume` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
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

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The user has the maximum number of open connections.
    #[error("too many connections: this user already has {max} open; close one first")]
    TooManyConnections {
        /// The limit.
        max: usize,
    },
}

struct Stream {
    epoch: Epoch,
    next_seq: u64,
    log: VecDeque<(Instant, Arc<Frame>)>,
    connections: Vec<(ConnectionId, Arc<ConnectionQueue>)>,
    last_activity: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: Epoch::generate(),
            next_seq: 1,
            log: VecDeque::new(),
            connections: Vec::new(),
            last_activity: Instant::now(),
        }
    }

    fn trim(&mut self, config: &BridgeConfig, now: Instant) {
        while self.log.len() > config.replay_max_events {
            self.log.pop_front();
        }
        while let Some((at, _)) = self.log.front() {
            if now.duration_since(*at) <= config.replay_max_age {
                break;
            }
            self.log.pop_front();
        }
    }

    fn oldest_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |(_, f)| f.seq)
    }
}

struct Inner {
    config: BridgeConfig,
    streams: Mutex<HashMap<UserId, Arc<Mutex<Stream>>>>,
}

impl Inner {
    fn stream(&self, user: &UserId) -> Arc<Mutex<Stream>> {
        Arc::clone(
            self.streams
                .lock()
                .entry(user.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Stream::new()))),
        )
    }
}

/// Routes events to users' connections. See the crate documentation. Cloning gives another
/// handle to the same bridge.
#[derive(Clone)]
pub struct AgentWebSocketBridge {
    inner: Arc<Inner>,
}

impl Default for AgentWebSocketBridge {
    fn default() -> Self {
        Self::new(BridgeConfig::default())
    }
}

impl fmt::Debug for AgentWebSocketBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentWebSocketBridge")
            .field("users", &self.inner.streams.lock().len())
            .finish_non_exhaustive()
    }
}

impl AgentWebSocketBridge {
    /// A bridge with `config`.
    pub fn new(config: BridgeConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bridge's bounds.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// Opens a connection to `user`'s stream. With `resume`, every event after
    /// `resume.after_seq` is queued first (or the outcome says why not); live events follow
    /// with no gap and no repeat, because both happen under the stream's lock.
    pub fn subscribe(
        &self,
        user: &UserId,
        resume: Option<&ResumeRequest>,
    ) -> Result<Subscription, BridgeError> {
        let config = &self.inner.config;
        let stream = self.inner.stream(user);
        let mut s = stream.lock();
        if s.connections.len() >= config.max_connections_per_user {
            return Err(BridgeError::TooManyConnections {
                max: config.max_connections_per_user,
            });
        }
        let now = Instant::now();
        s.trim(config, now);
        s.last_activity = now;
        let queue = Arc::new(ConnectionQueue::new(
            config.send_queue_events,
            config.send_queue_bytes,
        ));
        let resume = resume.map(|r| {
            let failed = |reason| ResumeOutcome::Failed {
                reason,
                oldest_seq: s.oldest_seq(),
            };
            let last_seq = s.next_seq - 1;
            if r.epoch != s.epoch {
                failed(ResumeFailure::EpochChanged)
            } else if r.after_seq > last_seq {
                failed(ResumeFailure::SeqAhead)
            } else if r.after_seq + 1 < s.oldest_seq() {
                failed(ResumeFailure::TooOld)
            } else {
                let replay = s.log.iter().map(|(_, f)| f).filter(|f| f.seq > r.after_seq);
                ResumeOutcome::Ok {
                    replayed: queue.preload(replay),
                }
            }
        });
        let connection_id = ConnectionId::generate();
        s.connections
            .push((connection_id.clone(), Arc::clone(&queue)));
        Ok(Subscription {
            bridge: Arc::downgrade(&self.inner),
            user_id: user.clone(),
            connection_id,
            epoch: s.epoch.clone(),
            last_seq: s.next_seq - 1,
            resume,
            queue,
        })
    }

    /// Drops streams with no connection whose newest event is older than the replay age (or
    /// that hold none). Their next event starts a new epoch. Returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let max_age = self.inner.config.replay_max_age;
        let mut streams = self.inner.streams.lock();
        let before = streams.len();
        streams.retain(|_, stream| {
            let s = stream.lock();
            !s.connections.is_empty() || s.last_activity.elapsed() <= max_age
        });
        before - streams.len()
    }

    /// Closes every connection with [`CloseReason::Shutdown`]; queued frames are still
    /// delivered first.
    pub fn close_all(&self) {
        let streams: Vec<_> = self.inner.streams.lock().values().cloned().collect();
        for stream in streams {
            for (_, queue) in &stream.lock().connections {
                queue.close(CloseReason::Shutdown);
            }
        }
    }

    /// Users with a stream.
    pub fn user_count(&self) -> usize {
        self.inner.streams.lock().len()
    }

    /// Open connections of `user`.
    pub fn connection_count(&self, user: &UserId) -> usize {
        self.inner
            .streams
            .lock()
            .get(user)
            .map_or(0, |s| s.lock().connections.len())
    }

    /// The frames `user`'s replay log holds now, oldest first.
    pub fn replay_log(&self, user: &UserId) -> Vec<Arc<Frame>> {
        let Some(stream) = self.inner.streams.lock().get(user).cloned() else {
            return Vec::new();
        };
        let s = stream.lock();
        s.log.iter().map(|(_, f)| Arc::clone(f)).collect()
    }
}

impl EventSink for AgentWebSocketBridge {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        let config = &self.inner.config;
        let stream = self.inner.stream(user_id);
        let mut s = stream.lock();
        let seq = s.next_seq;
        // Encoding under the stream's lock keeps log order, delivery order and seq order one
        // and the same; it costs a few microseconds and only this user's stream waits.
        let text = serde_json::to_string(&SequencedEvent { seq, event })
            .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))?;
        s.next_seq += 1;
        let frame = Arc::new(Frame {
            seq,
            text: Arc::from(text),
        });
        let now = Instant::now();
        s.log.push_back((now, Arc::clone(&frame)));
        s.trim(config, now);
        s.last_activity = now;
        s.connections.retain(|(_, queue)| queue.push(&frame));
        Ok(())
    }
}

/// One connection's view of its user's stream. Dropping it closes the connection's place in
/// the stream.
pub struct Subscription {
    bridge: Weak<Inner>,
    user_id: UserId,
    connection_id: ConnectionId,
    epoch: Epoch,
    last_seq: u64,
    resume: Option<ResumeOutcome>,
    queue: Arc<ConnectionQueue>,
}

impl Subscription {
    /// The connection's id.
    pub fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }
    /// The authenticated user whose stream this is.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }
    /// The stream's epoch when the connection opened.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }
    /// The last `seq` emitted when the connection opened.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    /// The resume outcome, when a resume was asked for.
    pub fn resume(&self) -> Option<&ResumeOutcome> {
        self.resume.as_ref()
    }
    /// The next frame for this connection, or why it was closed.
    pub async fn recv(&self) -> Result<Arc<Frame>, CloseReason> {
        self.queue.recv().await
    }
    /// Frames and bytes waiting in this connection's queue.
    pub fn queued(&self) -> (usize, usize) {
        self.queue.len()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user_id", &self.user_id)
            .field("connection_id", &self.connection_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.bridge.upgrade() else {
            return;
        };
        let stream = inner.streams.lock().get(&self.user_id).cloned();
        if let Some(stream) = stream {
            let mut s = stream.lock();
            s.connections.retain(|(id, _)| id != &self.connection_id);
            s.last_activity = Instant::now();
        }
    }
}
