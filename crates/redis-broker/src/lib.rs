//! [`RedisBroker`]: users' streams in Redis, so several `agent-server` nodes share them.
//!
//! Every node publishes each event once; the stream's `seq`, epoch and replay log live in
//! Redis (`scripts` holds the keys and the atomic scripts), so a user's tabs on different
//! nodes read one stream and a reconnect resumes on any node. A node receives a user's
//! frames only while it holds a connection of that user: it follows the user on attach (an
//! entry `f:<node>` in the user's stream meta) and stops on detach; each published batch reaches each
//! following node in messages of about 7,000 bytes on that node's events channel (`subscriber`).
//!
//! Faults: [`Broker::publish`] only queues (the `publisher` task sends, retrying while
//! Redis is unreachable, bounded by [`RedisBrokerConfig::publish_queue`]); the subscriber
//! reconnects with backoff, follows its users again, and fetches from the log what its users missed
//! while it was away. When that is not possible (Redis restarted without its data, or the
//! missed frames left the log) the user's connections on the node are closed with
//! [`CloseReason::StreamReset`](ws_bridge::CloseReason::StreamReset), and their resume reports `epoch_changed` or `too_old`:
//! never a stream with a silent hole. Counters in [`BrokerStats`] say what happened.
//!
//! Where things are: `shared` (what the broker and its tasks share: `Shared`,
//! the counters, the replay script's answer), `attached` (one followed user's delivery state),
//! `publisher`, `subscriber` and `runs` (the tasks and [`ClusterRuns`]), `scripts` (the keys
//! and Lua scripts of the streams), `run_scripts` (those of the runs: slots, queue, one run
//! per thread, leases), `lost` (what a reaper emits to end a dead node's runs, [`LostRun`]),
//! `budget_ledger` ([`BudgetLedger`]: users' budgets reserved across
//! the nodes) and its `budget_scripts`, `conn` (one Redis or a Redis Cluster behind one
//! connection type, and the cluster URL's seeds) with `tls` (a client's certificates),
//! `messages` (what arrives on a node's channels: batches of frames, stream starts), and
//! `runtime` (the broker's own thread, where its connections and tasks run). The sequencer
//! mode ([`PublishMode::Sequencer`]) has its own: `sequencer`, `seq_write` and `seq_lookup` (its
//! publisher), `routes`, `forwarded` (the messages between nodes) and `seq_scripts`; `modes`
//! keeps nodes of both modes off one Redis. The
//! modules import
//! downwards only: `attached` knows `scripts`; `shared` knows those two and `messages`
//! (which knows nothing of the crate), as does the subscriber; the tasks and
//! `budget_ledger` know `shared`; `runs` uses `lost`, which knows the publisher; the subscriber
//! also reads the publisher's retry policy and `node_requests` (the node channel's messages). None imports this root's private items; `conn`, `tls` and `runs`
//! name its public types.

mod attached;
mod budget_ledger;
mod budget_scripts;
mod calls;
mod conn;
mod followers;
mod forwarded;
mod lost;
mod messages;
mod modes;
mod node_requests;
mod publisher;
mod record_scripts;
mod routes;
mod run_scripts;
mod runs;
mod runtime;
mod scripts;
mod seq_lookup;
mod seq_records;
mod seq_scripts;
mod seq_write;
mod sequencer;
mod shared;
mod slot_waiters;
mod subscriber;
mod tls;

pub use budget_ledger::{BudgetLedger, LEDGER_MAX, LedgerGrant, LedgerTicket};
pub use conn::cluster_seeds;
pub use lost::{LostRun, NODE_LOST};
pub use node_requests::USER_CANCELLED;
pub use runs::{ClaimState, ClusterRuns, Lease, SlotLimits};
pub use shared::{BrokerStats, CancelRequest, NodeRequest, SteerRequest};
pub use slot_waiters::SlotWaiting;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use core_context::{EmitError, EncodedEvent, UserId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use ws_bridge::Frame;
use ws_bridge::broker::{
    AttachmentId, Broker, BrokerError, Epoch, FrameListener, ReplayBounds, ReplayRefused,
    StreamPosition,
};

use crate::attached::Attached;
use crate::publisher::PublishQueue;
use crate::scripts::Scripts;
use crate::shared::{Shared, broker_error};
use crate::subscriber::Command;

/// Settings of a [`RedisBroker`].
#[derive(Debug, Clone)]
pub struct RedisBrokerConfig {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://`), or a Redis Cluster's
    /// `redis-cluster://host:port,host:port,...` (or `rediss-cluster://`).
    pub url: String,
    /// Bounds of each user's replay log.
    pub bounds: ReplayBounds,
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Events a node may hold while Redis is unreachable; past it `publish` fails, except for
    /// the events that open, pause or end a run ([`EncodedEvent::bookend`]), which may pass
    /// it by a quarter (at least 16), so that a run stopped because one of its events was
    /// refused still shows its client its end.
    pub publish_queue: usize,
    /// With `rediss://`: a PEM file of the CA certificates that Redis's certificate must chain
    /// to, instead of the machine's roots (`SSL_CERT_FILE`); `None` trusts the machine's.
    pub ca_file: Option<PathBuf>,
    /// With `rediss://`: the certificate and key this node shows Redis, for a Redis that asks
    /// its clients for one (`tls-auth-clients yes`).
    pub client_identity: Option<ClientIdentity>,
    /// How the node publishes ([`PublishMode`]): by default the mode the nodes already on
    /// this Redis run, the publish script's on a Redis where none runs.
    pub mode: PublishMode,
}

/// How a node publishes its events. Every node on one Redis (or Redis Cluster) runs the same
/// mode: they would write the streams two ways (`modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishMode {
    /// The mode of the nodes already on this Redis, so that a node joins a running
    /// deployment whichever mode it runs; the publish script's where no node runs.
    #[default]
    Auto,
    /// Each batch goes in one call of the publish script, which gives the seqs in Redis.
    Script,
    /// `docs/sequencer.md`: for each user one node at a time holds a lease and gives their
    /// seqs, writing the log with plain pipelined commands; the others forward their events
    /// to it.
    Sequencer,
}

impl PublishMode {
    /// `auto`, `script` or `sequencer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Script => "script",
            Self::Sequencer => "sequencer",
        }
    }
}

impl std::str::FromStr for PublishMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "auto" => Ok(Self::Auto),
            "script" => Ok(Self::Script),
            "sequencer" => Ok(Self::Sequencer),
            other => Err(format!(
                "{other:?} is not a publish mode: use auto (the mode the nodes on this Redis run, the publish script where none runs), script or sequencer"
            )),
        }
    }
}

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate (chain), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl RedisBrokerConfig {
    /// Settings for `url` with the given replay bounds and the default prefix and queue.
    pub fn new(url: impl Into<String>, bounds: ReplayBounds) -> Self {
        Self {
            url: url.into(),
            bounds,
            key_prefix: "agentws".into(),
            publish_queue: 100_000,
            ca_file: None,
            client_identity: None,
            mode: PublishMode::Auto,
        }
    }
}

/// Why a [`RedisBroker`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        /// The URL, without its password.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// A `redis-cluster://` URL that names no usable node.
    #[error("invalid Redis Cluster URL {url}: {why}; use redis-cluster://host:port,host:port,...")]
    Cluster {
        /// The URL, without its password.
        url: String,
        /// Why.
        why: String,
    },
    /// A CA file or a client certificate for a URL without TLS.
    #[error(
        "{what} is for TLS, but {url} is not a rediss:// URL: use rediss://host:port, or no {what}"
    )]
    CaWithoutTls {
        /// What was given: the CA file or the client certificate, with its flag.
        what: &'static str,
        /// The URL, without its password.
        url: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot use the Redis CA file {path} (--broker-ca-file): {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The client certificate or its key cannot be read or used.
    #[error("cannot use the Redis client {what} {path} ({flag}): {reason}")]
    Identity {
        /// `certificate` or `key`.
        what: &'static str,
        /// Its flag.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nodes of the other mode run on this Redis.
    #[error(
        "nodes in the {other} mode run on this Redis ({url}), and every node on one Redis must run in the same mode: stop them all before switching (--broker-mode), or use that mode (or auto, which joins it)"
    )]
    ModeConflict {
        /// The URL, without its password.
        url: String,
        /// The other mode: `script` (the publish script's) or `sequencer`.
        other: &'static str,
    },
    /// The broker's thread could not be started (or stopped while connecting).
    #[error("cannot start the Redis broker's thread: {0}")]
    Thread(String),
    /// Redis did not answer, or its certificate was refused.
    #[error("cannot reach Redis at {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
}

/// Users' streams in Redis; see the crate documentation. Its tasks stop when it is dropped.
pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Where `publish` puts events for the publisher task.
    publish: Arc<PublishQueue>,
    subscriber: mpsc::UnboundedSender<Command>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    url: String,
}

impl RedisBroker {
    /// Connects to Redis and starts the node's publisher, subscriber and key renewal tasks.
    pub async fn connect(config: RedisBrokerConfig) -> Result<Self, RedisBrokerError> {
        let url = secrets::url::redacted(&config.url);
        let runtime =
            runtime::BrokerRuntime::start().map_err(|e| RedisBrokerError::Thread(e.to_string()))?;
        // Connected from the broker's thread, so that the connections' own tasks run there.
        let (connecting, home) = (config.clone(), runtime.home());
        let conn::Endpoint { conn, leases, live } = runtime
            .handle()
            .spawn(async move { conn::connect(&connecting, home).await })
            .await
            .map_err(|e| RedisBrokerError::Thread(e.to_string()))??;
        let mode = claim_mode(&runtime, &conn, &config, &url).await?;
        let sequencer = mode == PublishMode::Sequencer;
        let node_id = ulid::Ulid::new().to_string();
        let (inbound, inbound_queue) = mpsc::unbounded_channel();
        let sequencer_channels = sequencer.then(|| {
            (
                format!("{}:frames", config.key_prefix),
                format!("{}:leases", config.key_prefix),
            )
        });
        let shared = Arc::new(Shared {
            node_channel: format!("{}:node:{node_id}", config.key_prefix),
            events_channel: scripts::events_channel(&config.key_prefix, &node_id),
            opened_channel: scripts::opened_channel(&config.key_prefix),
            sequencer_channels,
            inbound: sequencer.then_some(inbound),
            cancels: Mutex::new(None),
            slot_waiters: Arc::default(),
            prefix: config.key_prefix,
            node_id,
            bounds: config.bounds,
            scripts: Scripts::new(conn.is_cluster(), sequencer),
            conn: conn.clone(),
            leases_conn: leases,
            attached: Mutex::new(HashMap::new()),
            queued: AtomicUsize::new(0),
            live_up: AtomicBool::new(false),
            publish_up: AtomicBool::new(true),
            sent_through: AtomicU64::new(0),
            flushes: Mutex::default(),
            next_attachment: AtomicU64::new(1),
            stats: BrokerStats::default(),
            runtime: Arc::clone(&runtime),
        });
        shared
            .stats
            .sequencer_mode
            .store(sequencer, Ordering::Relaxed);
        let (publish, queue) = PublishQueue::new(Arc::clone(&shared), config.publish_queue);
        let publish = Arc::new(publish);
        let (subscriber, commands) = mpsc::unbounded_channel();
        let on = runtime.handle();
        let publishing = if sequencer {
            on.spawn(sequencer::run(
                Arc::clone(&shared),
                conn,
                queue,
                inbound_queue,
                config.publish_queue.max(1),
                subscriber.clone(),
            ))
        } else {
            on.spawn(publisher::run(Arc::clone(&shared), conn, queue))
        };
        let tasks = vec![
            publishing,
            on.spawn(subscriber::run(Arc::clone(&shared), live, commands)),
            on.spawn(subscriber::renew_keys(Arc::downgrade(&shared))),
            on.spawn(modes::keep(Arc::downgrade(&shared), sequencer)),
        ];
        tracing::info!(%url, node = %shared.node_id, mode = mode.as_str(), "redis broker connected");
        Ok(Self {
            shared,
            publish,
            subscriber,
            tasks,
            url,
        })
    }

    /// The mode this node runs: [`PublishMode::Script`] or [`PublishMode::Sequencer`], never
    /// `Auto` (which it resolved as it connected).
    pub fn mode(&self) -> PublishMode {
        modes::running(self.shared.sequencer_channels.is_some())
    }

    /// What the broker has done since it started.
    pub fn stats(&self) -> &BrokerStats {
        &self.shared.stats
    }

    /// Events waiting to be sent to Redis.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Publishes the terminal event of a run whose lease was taken (its node stopped): the
    /// one event of that run that passes its ended mark.
    /// This node's id in Redis (a new one per process).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Users' runs across the nodes, with leases that expire after `lease_ttl` unrenewed.
    pub fn runs(&self, lease_ttl: Duration) -> ClusterRuns {
        ClusterRuns::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.publish),
            lease_ttl,
        )
    }

    /// Users' budgets counted in Redis: model calls reserved against them atomically across
    /// the nodes.
    pub fn budget_ledger(&self) -> BudgetLedger {
        BudgetLedger::new(Arc::clone(&self.shared))
    }

    /// The requests other nodes route to this node's runs (`cancel_run`, messages for them);
    /// a later call replaces the earlier receiver.
    pub fn node_requests(&self) -> mpsc::UnboundedReceiver<NodeRequest> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.shared.cancels.lock() = Some(sender);
        receiver
    }
}

/// Announces `config`'s mode in Redis (see `modes`), from the broker's thread: refused while
/// nodes of the other mode run, unless the mode is `Auto`, which joins them. Answers the
/// mode the node runs (never `Auto`).
async fn claim_mode(
    runtime: &runtime::BrokerRuntime,
    conn: &conn::Conn,
    config: &RedisBrokerConfig,
    url: &str,
) -> Result<PublishMode, RedisBrokerError> {
    let mut claiming = conn.clone();
    let (prefix, mode) = (config.key_prefix.clone(), config.mode);
    let claimed = runtime
        .handle()
        .spawn(async move { modes::claim(&mut claiming, &prefix, mode).await })
        .await
        .map_err(|e| RedisBrokerError::Thread(e.to_string()))?
        .map_err(|source| RedisBrokerError::Connect {
            url: url.to_owned(),
            source,
        })?;
    claimed.map_err(|other| RedisBrokerError::ModeConflict {
        url: url.to_owned(),
        other,
    })
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.url)
            .field("node_id", &self.shared.node_id)
            .field("attached", &self.shared.attached.lock().len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn publish(&self, user: &UserId, event: EncodedEvent) -> Result<(), EmitError> {
        self.publish.enqueue(user, event, false)
    }

    async fn attach(
        &self,
        user: &UserId,
        listener: Arc<dyn FrameListener>,
    ) -> Result<(AttachmentId, StreamPosition), BrokerError> {
        // A connection that cannot be followed is refused, not left without events.
        let (reply, live) = oneshot::channel();
        self.subscriber
            .send(Command::Live { reply })
            .map_err(|_| BrokerError("the broker stopped".into()))?;
        live.await
            .map_err(|_| BrokerError("the broker stopped".into()))?
            .map_err(|e| broker_error(&e))?;
        let keys = self.shared.keys(user);
        let id = AttachmentId::new(self.shared.next_attachment.fetch_add(1, Ordering::Relaxed));
        let attached = Arc::new(Attached::new(user.clone(), keys, id, listener));
        self.shared
            .attached
            .lock()
            .insert(user.as_str().to_owned(), Arc::clone(&attached));
        match self.shared.follow(&attached).await {
            Ok((position, lease)) => {
                if attached.go_live(&position, lease) {
                    let _ = self.subscriber.send(Command::CatchUp {
                        user: user.as_str().to_owned(),
                    });
                }
                Ok((id, position))
            }
            Err(error) => {
                self.detach(user, id);
                Err(broker_error(&error))
            }
        }
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, BrokerError> {
        self.shared
            .position(&self.shared.keys(user))
            .await
            .map_err(|e| broker_error(&e))
    }

    fn detach(&self, user: &UserId, id: AttachmentId) {
        let removed = {
            let mut attached = self.shared.attached.lock();
            match attached.get(user.as_str()) {
                Some(current) if current.id == id => attached.remove(user.as_str()),
                _ => None,
            }
        };
        let Some(removed) = removed else {
            return;
        };
        // Not awaited (detach must not wait on IO); an entry left behind only expires.
        let shared = Arc::clone(&self.shared);
        self.shared.runtime.handle().spawn(async move {
            if let Err(error) = shared.unfollow(&removed.keys, id.get()).await {
                tracing::debug!(%error, "redis broker: cannot stop following a user yet; their entry expires");
            }
        });
    }

    async fn replay(
        &self,
        user: &UserId,
        epoch: &Epoch,
        after_seq: u64,
    ) -> Result<Result<Vec<Arc<Frame>>, ReplayRefused>, BrokerError> {
        self.shared
            .replay(&self.shared.keys(user), epoch, after_seq)
            .await
            .map(|replay| replay.outcome)
            .map_err(|e| broker_error(&e))
    }

    /// Redis forgets idle streams itself (their keys expire after the replay age), so there
    /// is nothing to evict here.
    fn evict_idle(&self) -> usize {
        0
    }

    /// Users this node follows (holds connections of).
    fn stream_count(&self) -> usize {
        self.shared.attached.lock().len()
    }

    fn healthy(&self) -> bool {
        self.shared.live_up.load(Ordering::Relaxed)
            && self.shared.publish_up.load(Ordering::Relaxed)
    }

    async fn stored(&self) -> Result<(), BrokerError> {
        let target = self.publish.last_counter();
        self.shared
            .sent(target)
            .await
            .map_err(|_| BrokerError("the broker stopped".into()))
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        let target = self.publish.last_counter();
        self.shared
            .sent(target)
            .await
            .map_err(|_| BrokerError("the broker stopped".into()))?;
        let (reply, synced) = oneshot::channel();
        self.subscriber
            .send(Command::Sync { reply })
            .map_err(|_| BrokerError("the broker stopped".into()))?;
        synced
            .await
            .map_err(|_| BrokerError("the broker stopped".into()))?
            .map_err(|e| broker_error(&e))
    }
}
