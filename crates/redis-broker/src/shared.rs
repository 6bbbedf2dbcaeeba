//! What the broker and its tasks share: [`Shared`] (the node's identity, its Redis
//! connection and scripts, the users it follows, its counters), the replay script's answer,
//! and the types the tasks hand each other or the server ([`BrokerStats`],
//! [`CancelRequest`]).
//!
//! Every task module (`publisher`, `subscriber`, `runs`) imports this one, and this one
//! imports none of them (only `scripts` and `attached`), so the crate's modules form no
//! circle; the crate root builds [`Shared`] and re-exports what is public.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use core_context::{RunId, ThreadId, UserId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use ws_bridge::broker::{BrokerError, Epoch, ReplayBounds, ReplayRefused, StreamPosition};
use ws_bridge::{Frame, ResumeFailure};

use crate::attached::Attached;
use crate::conn::Conn;
use crate::messages::frame_seq;
use crate::runtime::BrokerRuntime;
use crate::scripts::{Scripts, StreamKeys};

/// What a [`RedisBroker`](crate::RedisBroker) has done since it started.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Events Redis accepted.
    pub events_published: AtomicU64,
    /// Batches Redis accepted (one script call each; on a Redis Cluster one per slot, sent
    /// together, count as one).
    pub publish_batches: AtomicU64,
    /// Microseconds from sending each accepted batch to Redis's answer, summed (the attempt
    /// Redis accepted; failed attempts and the pauses between them are not counted).
    pub publish_batch_micros: AtomicU64,
    /// Microseconds each accepted event waited in the publish queue before its batch was first
    /// sent, summed over the events.
    pub publish_queue_micros: AtomicU64,
    /// Pipelines sent again after a connection error.
    pub publish_retries: AtomicU64,
    /// Events refused at `publish` because the queue was full (Redis unreachable too long).
    pub events_rejected: AtomicU64,
    /// Events Redis refused for good (its own error, not the connection's).
    pub events_lost: AtomicU64,
    /// Times the live connection was lost.
    pub subscriber_disconnects: AtomicU64,
    /// Frames fetched from the log because the live channel missed them.
    pub frames_recovered: AtomicU64,
    /// Times a user's connections on this node were closed because their stream was lost.
    pub stream_resets: AtomicU64,
    /// Sequencer mode: events sent to the node holding their user's lease (resends counted).
    pub events_forwarded: AtomicU64,
    /// Sequencer mode: users' leases this node took.
    pub leases_taken: AtomicU64,
    /// Whether the node runs the sequencer mode (set as it connects; see
    /// [`PublishMode`](crate::PublishMode)).
    pub sequencer_mode: std::sync::atomic::AtomicBool,
}

/// State shared by the broker and its tasks.
pub(crate) struct Shared {
    pub(crate) prefix: String,
    pub(crate) node_id: String,
    pub(crate) bounds: ReplayBounds,
    pub(crate) scripts: Scripts,
    pub(crate) conn: Conn,
    /// The run leases' own connection ([`Endpoint::leases`](crate::conn::Endpoint::leases)).
    pub(crate) leases_conn: Conn,
    /// The users this node follows, by user id.
    pub(crate) attached: Mutex<HashMap<String, Arc<Attached>>>,
    /// This node's own channel (`cancel_run` for its runs, from other nodes).
    pub(crate) node_channel: String,
    /// This node's events channel: the frames of the users it follows.
    pub(crate) events_channel: String,
    /// Where streams that start are announced.
    pub(crate) opened_channel: String,
    /// Sequencer mode: where every stream's frames went before they went to each user's
    /// following nodes (`<prefix>:frames`, still read for nodes of an earlier version during
    /// an upgrade) and where leases taken are announced (`<prefix>:leases`); `None` otherwise.
    pub(crate) sequencer_channels: Option<(String, String)>,
    /// Sequencer mode: where the subscriber hands the publisher what other nodes sent it.
    pub(crate) inbound: Option<mpsc::UnboundedSender<crate::forwarded::Inbound>>,
    /// Where cancel requests from other nodes go, once someone asked for them.
    pub(crate) cancels: Mutex<Option<mpsc::UnboundedSender<NodeRequest>>>,
    /// This node's run claims queued for a slot, by user and lease (woken by
    /// `slot\n<user>\n<lease>…` on the node channel and by this node's own releases).
    pub(crate) slot_waiters: Arc<crate::slot_waiters::SlotWaiters>,
    /// Events waiting for the publisher.
    pub(crate) queued: AtomicUsize,
    /// Whether the live (pub/sub) connection is up.
    pub(crate) live_up: AtomicBool,
    /// Whether the publisher's last attempt reached Redis.
    pub(crate) publish_up: AtomicBool,
    /// The publish counter of the last event the publisher is done with.
    pub(crate) sent_through: AtomicU64,
    /// Flushes waiting for the publisher, by the counter each waits for: woken only once it
    /// is through (not all of them on every batch).
    pub(crate) flushes: Mutex<std::collections::BTreeMap<u64, Vec<oneshot::Sender<()>>>>,
    pub(crate) next_attachment: AtomicU64,
    pub(crate) stats: BrokerStats,
    /// The thread the broker's tasks and connections run on; it stops with the last `Shared`.
    pub(crate) runtime: Arc<BrokerRuntime>,
}

impl Shared {
    /// The publisher is done with every event up to `counter`: the flushes waiting for those
    /// go on.
    pub(crate) fn sent_through(&self, counter: u64) {
        self.sent_through.store(counter, Ordering::Release);
        let done = {
            let mut flushes = self.flushes.lock();
            let later = flushes.split_off(&(counter + 1));
            std::mem::replace(&mut *flushes, later)
        };
        for waiter in done.into_values().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Waits until the publisher is done with every event up to `counter`; `Err` when it
    /// stopped first.
    pub(crate) async fn sent(&self, counter: u64) -> Result<(), oneshot::error::RecvError> {
        let waiting = {
            let mut flushes = self.flushes.lock();
            // Read under the lock: a publisher that moves on after this wakes the waiter.
            if self.sent_through.load(Ordering::Acquire) >= counter {
                return Ok(());
            }
            let (done, waiting) = oneshot::channel();
            flushes.entry(counter).or_default().push(done);
            waiting
        };
        waiting.await
    }

    /// How long a stream's keys live without a publish.
    pub(crate) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.bounds.max_age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub(crate) fn keys(&self, user: &UserId) -> StreamKeys {
        StreamKeys::new(&self.prefix, user)
    }

    pub(crate) async fn position(&self, keys: &StreamKeys) -> redis::RedisResult<StreamPosition> {
        let (position, _lease) = self
            .open_stream(&self.scripts.position, keys, |_| {})
            .await?;
        Ok(position)
    }

    /// Follows `attached`'s user from this node (see the follow script) and reads where
    /// their stream stands, with its lease number (sequencer mode; 0 otherwise).
    pub(crate) async fn follow(
        &self,
        attached: &Attached,
    ) -> redis::RedisResult<(StreamPosition, u64)> {
        self.open_stream(&self.scripts.follow, &attached.keys, |invocation| {
            invocation.arg(&self.node_id).arg(attached.id.get());
        })
        .await
    }

    /// Runs `script`, one that opens the stream of `keys` if needed (its first arguments: the
    /// epoch of a stream that starts, the TTL; `more` adds its own) and answers `{epoch, last
    /// seq, lease}`.
    async fn open_stream(
        &self,
        script: &redis::Script,
        keys: &StreamKeys,
        more: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> redis::RedisResult<(StreamPosition, u64)> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.log)
            .arg(Epoch::generate().as_str())
            .arg(self.ttl_ms());
        more(&mut invocation);
        let (epoch, last_seq, lease): (String, u64, u64) =
            invocation.invoke_async(&mut self.conn.clone()).await?;
        let position = StreamPosition {
            epoch: Epoch::new(&epoch),
            last_seq,
        };
        Ok((position, lease))
    }

    /// Stops following a user from this node, unless a later attachment follows them again.
    pub(crate) async fn unfollow(&self, keys: &StreamKeys, id: u64) -> redis::RedisResult<()> {
        self.scripts
            .unfollow
            .key(&keys.meta)
            .arg(&self.node_id)
            .arg(id)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Renews the keys of `followed` and this node's entries in their nodes (in calls of at
    /// most [`RENEWED_PER_CALL`](crate::calls::RENEWED_PER_CALL) users, each of one slot on a
    /// Redis Cluster, up to 32 at once). Returns the users whose
    /// entry was missing: their keys were lost, so they may have missed frames.
    pub(crate) async fn renew(
        &self,
        followed: &[Arc<Attached>],
    ) -> redis::RedisResult<Vec<Arc<Attached>>> {
        use futures::{StreamExt, TryStreamExt};
        let groups = crate::calls::in_calls(
            self.conn.is_cluster(),
            followed,
            |a| a.user.as_str(),
            crate::calls::RENEWED_PER_CALL,
        );
        let calls: Vec<_> = groups
            .into_iter()
            .filter(|group| !group.is_empty())
            .map(|group| {
                let mut invocation = self.scripts.renew.prepare_invoke();
                invocation.arg(self.ttl_ms()).arg(&self.node_id);
                for attached in &group {
                    invocation
                        .key(&attached.keys.meta)
                        .key(&attached.keys.log)
                        .arg(attached.id.get());
                }
                let mut conn = self.conn.clone();
                async move {
                    let missing: Vec<usize> = invocation.invoke_async(&mut conn).await?;
                    Ok::<_, redis::RedisError>(
                        missing
                            .into_iter()
                            .filter_map(|i| group.get(i).map(|a| Arc::clone(a)))
                            .collect::<Vec<_>>(),
                    )
                }
            })
            .collect();
        let missing: Vec<Vec<Arc<Attached>>> = futures::stream::iter(calls)
            .buffer_unordered(crate::calls::CALLS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(missing.into_iter().flatten().collect())
    }

    /// Runs the replay script; `Err` in the inner result says why not, with where the
    /// stream stands now.
    pub(crate) async fn replay(
        &self,
        keys: &StreamKeys,
        epoch: &Epoch,
        after_seq: u64,
    ) -> redis::RedisResult<Replay> {
        let reply: Vec<redis::Value> = self
            .scripts
            .replay
            .key(&keys.meta)
            .key(&keys.log)
            .arg(Epoch::generate().as_str())
            .arg(self.ttl_ms())
            .arg(epoch.as_str())
            .arg(after_seq)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Replay::decode(reply).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the replay script answered something else",
            ))
        })
    }
}

/// What the replay script answered.
pub(crate) struct Replay {
    /// The frames, or why not.
    pub(crate) outcome: Result<Vec<Arc<Frame>>, ReplayRefused>,
    /// Where the stream stands.
    pub(crate) position: StreamPosition,
}

impl Replay {
    fn decode(reply: Vec<redis::Value>) -> Option<Self> {
        use redis::FromRedisValue;
        let mut items = reply.into_iter();
        let status = String::from_redis_value(items.next()?).ok()?;
        let oldest_seq = u64::from_redis_value(items.next()?).ok()?;
        let epoch = String::from_redis_value(items.next()?).ok()?;
        let last_seq = u64::from_redis_value(items.next()?).ok()?;
        let refused = |reason| Err(ReplayRefused { reason, oldest_seq });
        let outcome = match status.as_str() {
            "ok" => Ok(items
                .map(|value| {
                    let text = String::from_redis_value(value).ok()?;
                    let seq = frame_seq(&text)?;
                    Some(Arc::new(Frame {
                        seq,
                        text: Arc::from(text),
                        published: std::time::Instant::now(),
                    }))
                })
                .collect::<Option<Vec<_>>>()?),
            "epoch_changed" => refused(ResumeFailure::EpochChanged),
            "seq_ahead" => refused(ResumeFailure::SeqAhead),
            "too_old" => refused(ResumeFailure::TooOld),
            _ => return None,
        };
        Some(Self {
            outcome,
            position: StreamPosition {
                epoch: Epoch::new(&epoch),
                last_seq,
            },
        })
    }
}

/// A request another node routed to this one, about a run this node executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRequest {
    /// `cancel_run`, with its reason.
    Cancel(CancelRequest),
    /// A message the user sent into the run's thread (`multitask` `steer`).
    Steer(SteerRequest),
}

/// A message for a run another node executes (`multitask` `steer`): that node hands it to the
/// run, or (the run cannot take it, or has ended) starts it as a run of its own in the thread.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SteerRequest {
    /// Whose run.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// The agent the message was sent to (for a run of its own).
    pub agent: String,
    /// The user's message.
    pub message: String,
}

/// A `cancel_run` another node routed to this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// Whose run.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Why (what its `agent_cancelled` says).
    pub reason: String,
}

/// A Redis error as the bridge's [`BrokerError`].
pub(crate) fn broker_error(error: &redis::RedisError) -> BrokerError {
    BrokerError(format!("Redis: {error}"))
}
