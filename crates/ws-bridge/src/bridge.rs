//! The bridge: a node's connections, per user, fed by the [`Broker`] that keeps the streams.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use core_context::{AgentEvent, ConnectionId, EmitError, EncodedEvent, EventSink, UserId};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::broker::{
    AttachmentId, Broker, BrokerError, Epoch, FrameListener, ReplayBounds, ReplayMemory,
    ResumeOutcome, ResumeRequest,
};
use crate::in_process::InProcessBroker;
use crate::machine::replay_max_bytes_for_machine;
use crate::queue::{CloseReason, ConnectionQueue, Frame};

/// Bounds of the bridge; the defaults are those of `docs/ARCHITECTURE.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Events kept per user for replay.
    pub replay_max_events: usize,
    /// How long an event is kept for replay.
    pub replay_max_age: Duration,
    /// Bytes all users' replay logs may hold together on this node (in-process broker); by
    /// default an eighth of the memory this process may use.
    pub replay_max_bytes: usize,
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
            replay_max_bytes: replay_max_bytes_for_machine(),
            max_connections_per_user: 10,
            send_queue_events: 1_024,
            send_queue_bytes: 1 << 20,
        }
    }
}

impl BridgeConfig {
    /// The replay log's bounds.
    pub fn replay_bounds(&self) -> ReplayBounds {
        ReplayBounds {
            max_events: self.replay_max_events,
            max_age: self.replay_max_age,
            max_bytes: self.replay_max_bytes,
        }
    }
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
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The user's connections on this node: the broker's listener for the user.
struct LocalUser {
    user: UserId,
    connections: Mutex<Vec<(ConnectionId, Arc<ConnectionQueue>)>>,
    attachment: OnceCell<AttachmentId>,
}

impl FrameListener for LocalUser {
    fn deliver(&self, frame: &Arc<Frame>) {
        // A full queue closes its connection as a slow consumer and leaves the set.
        self.connections
            .lock()
            .retain(|(_, queue)| queue.push(frame));
    }

    fn close(&self, reason: CloseReason) {
        for (_, queue) in self.connections.lock().drain(..) {
            queue.close(reason);
        }
    }
}

struct Inner {
    config: BridgeConfig,
    broker: Arc<dyn Broker>,
    locals: Mutex<HashMap<UserId, Arc<LocalUser>>>,
}

impl Inner {
    /// Removes connection `id` of `local`; the last one out detaches the user from the broker.
    fn leave(&self, local: &Arc<LocalUser>, id: &ConnectionId) {
        let mut locals = self.locals.lock();
        let mut connections = local.connections.lock();
        connections.retain(|(c, _)| c != id);
        if connections.is_empty() {
            drop(connections);
            if locals
                .get(&local.user)
                .is_some_and(|l| Arc::ptr_eq(l, local))
            {
                locals.remove(&local.user);
            }
            if let Some(attachment) = local.attachment.get() {
                self.broker.detach(&local.user, *attachment);
            }
        }
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
            .field("local_users", &self.inner.locals.lock().len())
            .finish_non_exhaustive()
    }
}

impl AgentWebSocketBridge {
    /// A bridge with `config` and the embedded [`InProcessBroker`].
    pub fn new(config: BridgeConfig) -> Self {
        let broker = InProcessBroker::new(config.replay_bounds());
        Self::with_broker(config, Arc::new(broker))
    }

    /// A bridge with `config` whose streams live in `broker`.
    pub fn with_broker(config: BridgeConfig, broker: Arc<dyn Broker>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                broker,
                locals: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bridge's bounds.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// Opens a connection to `user`'s stream. With `resume`, every event after
    /// `resume.after_seq` comes first (or the outcome says why not); live events follow
    /// with no gap and no repeat.
    ///
    /// The connection's queue is registered before the stream's position is read and before
    /// the replay is fetched, so every frame published from then on reaches it; frames the
    /// replay (or the position) already covers are then dropped by `seq`. This join needs no
    /// lock shared with the broker, so it works the same for a networked broker.
    pub async fn subscribe(
        &self,
        user: &UserId,
        resume: Option<&ResumeRequest>,
    ) -> Result<Subscription, BridgeError> {
        let config = &self.inner.config;
        let queue = Arc::new(ConnectionQueue::new(
            config.send_queue_events,
            config.send_queue_bytes,
        ));
        let connection_id = ConnectionId::generate();
        let local = {
            let mut locals = self.inner.locals.lock();
            let local = Arc::clone(locals.entry(user.clone()).or_insert_with(|| {
                Arc::new(LocalUser {
                    user: user.clone(),
                    connections: Mutex::new(Vec::new()),
                    attachment: OnceCell::new(),
                })
            }));
            let mut connections = local.connections.lock();
            if connections.len() >= config.max_connections_per_user {
                return Err(BridgeError::TooManyConnections {
                    max: config.max_connections_per_user,
                });
            }
            connections.push((connection_id.clone(), Arc::clone(&queue)));
            drop(connections);
            local
        };
        // From here on, dropping the subscription (on any error below) leaves cleanly.
        let mut subscription = Subscription {
            bridge: Arc::downgrade(&self.inner),
            local: Arc::clone(&local),
            connection_id,
            epoch: Epoch::new(""),
            last_seq: 0,
            resume: None,
            queue: Arc::clone(&queue),
        };
        let broker = &self.inner.broker;
        let mut first_position = None;
        local
            .attachment
            .get_or_try_init(|| async {
                let listener: Arc<dyn FrameListener> = Arc::clone(&local) as Arc<dyn FrameListener>;
                let (id, position) = broker.attach(user, listener).await?;
                first_position = Some(position);
                Ok::<_, BrokerError>(id)
            })
            .await?;
        let position = match first_position {
            Some(position) => position,
            None => broker.position(user).await?,
        };
        let mut floor = position.last_seq;
        if let Some(request) = resume {
            subscription.resume = Some(
                match broker
                    .replay(user, &request.epoch, request.after_seq)
                    .await?
                {
                    Ok(frames) => {
                        floor = frames
                            .last()
                            .map_or(request.after_seq, |f| f.seq)
                            .max(request.after_seq);
                        ResumeOutcome::Ok {
                            replayed: queue.splice(&frames, request.after_seq),
                        }
                    }
                    Err(refused) => ResumeOutcome::Failed {
                        reason: refused.reason,
                        oldest_seq: refused.oldest_seq,
                    },
                },
            );
        }
        if !matches!(subscription.resume, Some(ResumeOutcome::Ok { .. })) {
            queue.splice(&[], floor);
        }
        subscription.epoch = position.epoch;
        subscription.last_seq = position.last_seq;
        Ok(subscription)
    }

    /// Forgets idle streams (see [`Broker::evict_idle`]). Returns how many were forgotten.
    pub fn evict_idle(&self) -> usize {
        self.inner.broker.evict_idle()
    }

    /// Waits until every event emitted before the call is stored and queued to this node's
    /// connections (see [`Broker::flush`]).
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.inner.broker.flush().await
    }

    /// Waits until every event emitted before the call is stored by the broker (see
    /// [`Broker::stored`]), not necessarily delivered on this node.
    pub async fn stored(&self) -> Result<(), BrokerError> {
        self.inner.broker.stored().await
    }

    /// Whether the broker can take and deliver events now (see [`Broker::healthy`]).
    pub fn broker_healthy(&self) -> bool {
        self.inner.broker.healthy()
    }

    /// What the replay logs hold on this node (`None` when they live in a networked
    /// broker).
    pub fn replay_memory(&self) -> Option<ReplayMemory> {
        self.inner.broker.replay_memory()
    }

    /// Closes every connection with [`CloseReason::Shutdown`]; queued frames are still
    /// delivered first.
    pub fn close_all(&self) {
        let locals: Vec<_> = self.inner.locals.lock().values().cloned().collect();
        for local in locals {
            for (_, queue) in local.connections.lock().iter() {
                queue.close(CloseReason::Shutdown);
            }
        }
    }

    /// Users whose stream the broker holds.
    pub fn user_count(&self) -> usize {
        self.inner.broker.stream_count()
    }

    /// Open connections of `user` on this node.
    pub fn connection_count(&self, user: &UserId) -> usize {
        self.inner
            .locals
            .lock()
            .get(user)
            .map_or(0, |l| l.connections.lock().len())
    }
}

impl AgentWebSocketBridge {
    /// Publishes an event encoded already (by a caller that also keeps the encoding, such
    /// as the server's history): the same as [`EventSink::emit`] without encoding again.
    pub fn publish(&self, user_id: &UserId, event: EncodedEvent) -> Result<(), EmitError> {
        self.inner.broker.publish(user_id, event)
    }
}

impl EventSink for AgentWebSocketBridge {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        let encoded = EncodedEvent::encode(&event)
            .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))?;
        self.inner.broker.publish(user_id, encoded)
    }
}

/// One connection's view of its user's stream. Dropping it closes the connection's place in
/// the stream.
pub struct Subscription {
    bridge: Weak<Inner>,
    local: Arc<LocalUser>,
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
        &self.local.user
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

    /// Waits for the next frame, then takes up to `max` queued frames at once (in order) into
    /// `out`, so a writer can send them with one flush. Fails with why the connection was
    /// closed once nothing is left to send.
    pub async fn recv_batch(
        &self,
        out: &mut Vec<Arc<Frame>>,
        max: usize,
    ) -> Result<(), CloseReason> {
        self.queue.recv_batch(out, max).await
    }

    /// Frames and bytes waiting in this connection's queue.
    pub fn queued(&self) -> (usize, usize) {
        self.queue.len()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user_id", &self.local.user)
            .field("connection_id", &self.connection_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.bridge.upgrade() {
            inner.leave(&self.local, &self.connection_id);
        }
    }
}
