//! The composition root: the state every handler shares (registry, auth, bridge, the run
//! service, the history, metrics). Starting and cancelling runs is the run service's
//! (the `run-service` crate).
//!
//! Handlers do not take the whole state: the router's state, [`RouterState`], hands each one
//! only the parts it reads, by type (axum's `FromRef`): `Arc<Auth>`, `Arc<AgentRegistry>`,
//! the history's `Option<Arc<Recorder>>`, and for handlers that read several parts a struct
//! named for what they do (`Live`, `Health`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_registry::AgentRegistry;
use axum::extract::FromRef;
use core_context::CancellationToken;
use execution_engine::{ExecutionEngineFactory, RunSettle};
use redis_broker::{RedisBroker, SlotLimits};
use run_service::RunService;
use run_service::cluster::Cluster;
use run_service::recorder::Recorder;
use run_service::sessions::Sessions;
use ws_bridge::{AgentWebSocketBridge, Broker, InProcessBroker};

use crate::auth::{Auth, AuthError, Identity};
use crate::config::ServerConfig;
use crate::sink::ServerSink;
use http_guard::HttpLimits;
use server_metrics::{Metrics, Snapshot};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The agents could not be registered.
    #[error("cannot register the built-in agents: {0}")]
    Registry(#[from] agent_registry::RegistryError),
    /// The `llm` agent could not be set up.
    #[error("cannot set up the llm agent: {0}")]
    Llm(#[source] llm_agent::LlmError),
    /// The auth secret could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A setting is out of range (settings built in code skip the flags' validation).
    #[error("invalid setting: {0}")]
    Config(&'static str),
    /// The Redis broker could not start.
    #[error(transparent)]
    Broker(#[from] redis_broker::RedisBrokerError),
    /// The history store could not open: unreachable, its certificate refused, or its
    /// migrations failed.
    #[error("cannot open the history store at {url}: {source}")]
    History {
        /// The store's URL, without its password.
        url: String,
        /// Why.
        source: history::HistoryError,
    },
}

/// Everything a request handler needs. Shared by all connections.
pub struct AppState {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) auth: Arc<Auth>,
    registry: Arc<AgentRegistry>,
    pub(crate) bridge: AgentWebSocketBridge,
    /// Starts and cancels runs, for every transport.
    pub(crate) runs: Arc<RunService>,
    /// The HTTP API's rate limits (per user, per address).
    pub(crate) http_limits: Arc<HttpLimits>,
    /// Threads, runs and events kept past the process, with `--store`.
    pub(crate) recorder: Option<Arc<Recorder>>,
    /// What the server counts (`/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// The `llm` agent's model counts, when it is registered.
    pub(crate) model_stats: Option<Arc<llm_agent::ModelStats>>,
    pub(crate) open_connections: Arc<AtomicUsize>,
    pub(crate) stop_accepting: CancellationToken,
}

/// The router's state: the shared state, from which each handler takes the parts it reads
/// (see the module's documentation). A type of this crate, because `FromRef` may be
/// implemented for another crate's type (`Arc<Auth>`) only from one (`Arc<AppState>` is
/// not).
#[derive(Clone)]
pub struct RouterState(pub(crate) Arc<AppState>);

impl FromRef<RouterState> for Arc<Auth> {
    fn from_ref(state: &RouterState) -> Self {
        Arc::clone(&state.0.auth)
    }
}

impl FromRef<RouterState> for Arc<AgentRegistry> {
    fn from_ref(state: &RouterState) -> Self {
        Arc::clone(&state.0.registry)
    }
}

impl FromRef<RouterState> for Arc<RunService> {
    fn from_ref(state: &RouterState) -> Self {
        Arc::clone(&state.0.runs)
    }
}

impl FromRef<RouterState> for Option<Arc<Recorder>> {
    fn from_ref(state: &RouterState) -> Self {
        state.0.recorder.clone()
    }
}

/// The users' streams, where the history's handlers announce a thread's change.
impl FromRef<RouterState> for AgentWebSocketBridge {
    fn from_ref(state: &RouterState) -> Self {
        state.0.bridge.clone()
    }
}

/// The whole state, for `/metrics` only: a scrape reads the state of every part at once.
impl FromRef<RouterState> for Arc<AppState> {
    fn from_ref(state: &RouterState) -> Self {
        Arc::clone(&state.0)
    }
}

/// What serves a user's live stream, on a WebSocket (the upgrade and the connection's loop)
/// or as an AG-UI run: the token check, the settings, the stream, the run service and the
/// counts.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) bridge: AgentWebSocketBridge,
    pub(crate) runs: Arc<RunService>,
    pub(crate) metrics: Arc<Metrics>,
    /// Open WebSocket connections (the drain waits for them to close).
    pub(crate) open_connections: Arc<AtomicUsize>,
}

impl Live {
    /// The user a request's token speaks for, whose plan (a per-user budget in the token's
    /// claims) the run service takes; the refusal says why not (an error message naming the
    /// token's problem, or the malformed claim).
    pub(crate) async fn user(
        &self,
        headers: &axum::http::HeaderMap,
        query: &std::collections::HashMap<String, String>,
    ) -> Result<core_context::UserId, String> {
        let (user, claims) = http_guard::bearer::authenticate_claims(&self.auth, headers, query)
            .await
            .map_err(|e| e.to_string())?;
        self.runs
            .note_plan(&user, &claims)
            .map_err(|refusal| refusal.message)?;
        Ok(user)
    }
}

impl FromRef<RouterState> for Live {
    fn from_ref(state: &RouterState) -> Self {
        let state = &state.0;
        Self {
            config: Arc::clone(&state.config),
            auth: Arc::clone(&state.auth),
            bridge: state.bridge.clone(),
            runs: Arc::clone(&state.runs),
            metrics: Arc::clone(&state.metrics),
            open_connections: Arc::clone(&state.open_connections),
        }
    }
}

/// What `/readyz` checks: the drain, the broker, the history store, the MCP servers.
#[derive(Clone)]
pub(crate) struct Health {
    pub(crate) runs: Arc<RunService>,
    pub(crate) bridge: AgentWebSocketBridge,
    pub(crate) recorder: Option<Arc<Recorder>>,
    pub(crate) mcp: Option<Arc<mcp_tools::McpTools>>,
}

impl FromRef<RouterState> for Health {
    fn from_ref(state: &RouterState) -> Self {
        let state = &state.0;
        Self {
            runs: Arc::clone(&state.runs),
            bridge: state.bridge.clone(),
            recorder: state.recorder.clone(),
            mcp: state.config.tools.mcp.clone(),
        }
    }
}

impl AppState {
    /// The state of a server with `config` and the in-process broker: registers the
    /// built-in agents and sets up auth.
    pub fn new(config: ServerConfig) -> Result<Arc<Self>, ServeError> {
        let broker = Arc::new(InProcessBroker::new(config.bridge.replay_bounds()));
        Self::with_broker(config, broker)
    }

    /// The state of a server with `config` whose users' streams live in `broker` (runs stay
    /// on this node: no cluster-wide limit or cancel).
    pub fn with_broker(
        config: ServerConfig,
        broker: Arc<dyn Broker>,
    ) -> Result<Arc<Self>, ServeError> {
        Self::build(config, broker, None, None)
    }

    /// The state of one node of a cluster sharing `redis`: streams in Redis, and runs
    /// coordinated with the other nodes (the per-user limit, `cancel_run`, lost nodes).
    pub fn clustered(
        config: ServerConfig,
        redis: Arc<RedisBroker>,
    ) -> Result<Arc<Self>, ServeError> {
        let cluster = Cluster::new(Arc::clone(&redis), config.run_lease_ttl);
        Self::build(config, redis, Some(cluster), None)
    }

    /// The state from its parts: where streams live, the cluster's runs (with Redis), the
    /// history (with `--store`).
    pub fn build(
        config: ServerConfig,
        broker: Arc<dyn Broker>,
        cluster: Option<Cluster>,
        recorder: Option<Recorder>,
    ) -> Result<Arc<Self>, ServeError> {
        let mut registry = AgentRegistry::new();
        agents::register_local(&mut registry)?;
        if config.synthetic_agent {
            agents::synthetic::register(&mut registry)?;
        }
        let model_stats = (config.llm.as_ref())
            .map(|llm| llm_agent::register(&mut registry, llm.clone()).map_err(ServeError::Llm))
            .transpose()?;
        for tool in &config.tools.tools {
            registry.register_shared_tool(Arc::clone(tool))?;
        }
        if let Some(mcp) = &config.tools.mcp {
            registry.register_tool_set(Arc::clone(mcp) as Arc<dyn agent_registry::ToolSet>);
        }
        let registry = Arc::new(registry);
        let identity = Identity {
            secret: config.jwt_secret.clone(),
            ..config.identity.clone()
        };
        let auth = if identity.is_configured() {
            Auth::from_identity(&identity)?
        } else {
            Auth::generated()?
        };
        let starts_per_minute = NonZeroU32::new(config.start_rate_per_minute).ok_or(
            ServeError::Config("start_rate_per_minute must be at least 1"),
        )?;
        let bridge = AgentWebSocketBridge::with_broker(config.bridge.clone(), broker);
        let recorder = recorder.map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        if let Some(llm) = &config.llm {
            metrics.know_model(&llm.model);
        }
        let sink = Arc::new(ServerSink {
            live: bridge.clone(),
            history: recorder.as_ref().map(|r| r.writer().clone()),
            metrics: Arc::clone(&metrics),
            scrubber: Arc::clone(&config.scrubber),
        });
        // The per-user run limit and queue: on this node, or across the cluster's nodes.
        let factory = match &cluster {
            None => ExecutionEngineFactory::new(Arc::clone(&registry), sink, config.engine.clone()),
            Some(cluster) => {
                let slots = cluster.slots(SlotLimits {
                    max_running: config.engine.max_concurrent_runs,
                    max_queued: config.engine.max_queued_runs,
                });
                // A run's events are in Redis (and the shared history) before its slot goes
                // to the next run of its thread, which may start on another node.
                let settle = Arc::clone(&sink) as Arc<dyn RunSettle>;
                ExecutionEngineFactory::with_slots(
                    Arc::clone(&registry),
                    sink,
                    config.engine.clone(),
                    Arc::new(slots),
                )
                .with_settle(settle)
            }
        };
        let sessions = Sessions::new(starts_per_minute, config.max_threads_per_user);
        let runs = RunService::new(
            factory,
            sessions,
            cluster,
            recorder.clone(),
            Arc::<Metrics>::clone(&metrics),
        )
        .with_multitask_default(config.multitask_default)
        .with_usage(config.prices.clone(), config.budget);
        Ok(Arc::new(Self {
            http_limits: Arc::new(HttpLimits::new(config.http_rates)),
            runs: Arc::new(runs),
            recorder,
            metrics,
            model_stats,
            config: Arc::new(config),
            auth: Arc::new(auth),
            registry,
            bridge,
            open_connections: Arc::default(),
            stop_accepting: CancellationToken::new(),
        }))
    }

    /// The registered agents' names.
    pub fn agent_names(&self) -> Vec<String> {
        self.registry
            .agent_names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The registry (the agents a client can start).
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// The bridge (for tests and metrics).
    pub fn bridge(&self) -> &AgentWebSocketBridge {
        &self.bridge
    }

    /// What the server counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// What a metrics scrape reads now: the states of this moment and the parts that keep
    /// their own counts (see [`Metrics::render`]).
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        let limit = self.config.engine.max_concurrent_runs;
        let load = self.runs.sessions().run_load(limit);
        Snapshot {
            connections_open: self.open_connections(),
            // Scraped on the server's runtime (a metrics request's task).
            runtime_workers: tokio::runtime::Handle::try_current()
                .map_or(0, |runtime| runtime.metrics().num_workers()),
            run_limit_per_user: limit,
            users_with_runs: load.users_with_runs,
            users_at_run_limit: load.users_at_limit,
            streams: self.bridge.user_count(),
            replay: self.bridge.replay_memory(),
            broker_up: self.bridge.broker_healthy(),
            draining: self.runs.is_draining(),
            history: self.recorder.as_ref().map(|r| r.writer().stats()),
            redis: self.runs.cluster().map(|c| c.broker_stats()),
            model: self.model_stats.as_deref(),
            mcp: self.config.tools.mcp.as_deref(),
            scrubber: &self.config.scrubber,
            registry: &self.registry,
        }
    }

    /// Drops idle per-user state: engines, streams, sessions with no runs, and the HTTP
    /// rate limiters' keys that are full again.
    pub fn maintain(&self) {
        self.runs.maintain(self.config.bridge.replay_max_age);
        self.bridge.evict_idle();
        self.http_limits.retain_recent();
    }
}
