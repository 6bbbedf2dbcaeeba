//! The composition root: the state every handler shares (registry, auth, bridge, engine
//! factory, sessions) and the two things a client asks of it, starting and cancelling runs.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use agent_protocol::{ErrorCode, ServerFrame, StartAgent};
use agent_registry::{AgentInput, AgentRegistry, Turn};
use core_context::{
    CancellationToken, ConnectionId, RunId, RunScope, ThreadId, UserExecutionContext, UserId,
};
use execution_engine::ExecutionEngineFactory;
use redis_broker::{Lease, RedisBroker};
use serde_json::{Value, json};
use ws_bridge::{AgentWebSocketBridge, Broker, InProcessBroker};

use crate::auth::{Auth, AuthError, Identity};
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::sessions::Sessions;
use crate::sink::ServerSink;

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
    pub(crate) config: ServerConfig,
    pub(crate) auth: Auth,
    registry: Arc<AgentRegistry>,
    pub(crate) bridge: AgentWebSocketBridge,
    pub(crate) factory: ExecutionEngineFactory,
    pub(crate) sessions: Sessions,
    /// The HTTP API's rate limits (per user, per address).
    pub(crate) http_limits: crate::http_guard::HttpLimits,
    /// Runs across nodes, when the streams live in Redis.
    pub(crate) cluster: Option<Cluster>,
    /// Threads, runs and events kept past the process, with `--store`.
    pub(crate) recorder: Option<Arc<Recorder>>,
    /// What the server counts (`/metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// The `llm` agent's model counts, when it is registered.
    pub(crate) model_stats: Option<Arc<llm_agent::ModelStats>>,
    pub(crate) draining: AtomicBool,
    pub(crate) open_connections: AtomicUsize,
    pub(crate) stop_accepting: CancellationToken,
}

/// Who asks for a run, and from where.
struct Origin<'a> {
    user: &'a UserId,
    connection: &'a ConnectionId,
    request_id: Option<&'a str>,
}

/// A run the engine refused to start, as its `error` frame's code and message.
struct Refused(ErrorCode, String);

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
        let model_stats = match &config.llm {
            Some(llm) => {
                Some(llm_agent::register(&mut registry, llm.clone()).map_err(ServeError::Llm)?)
            }
            None => None,
        };
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
        let sink = Arc::new(ServerSink {
            live: bridge.clone(),
            history: recorder.as_ref().map(|r| r.writer().clone()),
            metrics: Arc::clone(&metrics),
            scrubber: Arc::clone(&config.scrubber),
        });
        let factory =
            ExecutionEngineFactory::new(Arc::clone(&registry), sink, config.engine.clone());
        Ok(Arc::new(Self {
            sessions: Sessions::new(starts_per_minute, config.max_threads_per_user),
            http_limits: crate::http_guard::HttpLimits::new(config.http_rates),
            cluster,
            recorder,
            metrics,
            model_stats,
            config,
            auth,
            registry,
            bridge,
            factory,
            draining: AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
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

    /// Handles `start_agent`: refused while draining, then the session's rules (start rate,
    /// thread ownership), then a run on a fresh engine of the user's.
    pub(crate) async fn start_run(
        self: &Arc<Self>,
        user: &UserId,
        connection: &ConnectionId,
        request_id: Option<String>,
        start: StartAgent,
    ) -> ServerFrame {
        if self.draining.load(Ordering::Relaxed) {
            return ServerFrame::error(
                request_id,
                ErrorCode::ShuttingDown,
                "the server is shutting down and starts no new runs; reconnect shortly",
            );
        }
        if let Err(Refused(code, message)) = self
            .stored_thread_is_theirs(user, start.thread_id.as_ref())
            .await
        {
            return ServerFrame::error(request_id, code, message);
        }
        let thread = match self.sessions.admit(user, start.thread_id.clone()) {
            Ok(thread) => thread,
            Err(refusal) => {
                return ServerFrame::error(request_id, refusal.code(), refusal.to_string());
            }
        };
        let lease = match self.cluster_slot(user).await {
            Ok(lease) => lease,
            Err(Refused(code, message)) => return ServerFrame::error(request_id, code, message),
        };
        let agent_name = start.agent.clone();
        let history = match (&self.recorder, &start.thread_id) {
            (Some(recorder), Some(thread)) => recorder.turns(user, thread).await,
            _ => Vec::new(),
        };
        let origin = Origin {
            user,
            connection,
            request_id: request_id.as_deref(),
        };
        match self.launch(origin, thread, start, history, lease.clone()) {
            Ok((run_id, thread_id)) => {
                if let (Some(cluster), Some(lease)) = (&self.cluster, lease) {
                    let scope = RunScope {
                        run_id: run_id.clone(),
                        parent_run_id: None,
                        thread_id: thread_id.clone(),
                        agent_name: Arc::from(agent_name.as_str()),
                    };
                    if let Err(error) = cluster.started(lease, &scope).await {
                        tracing::warn!(%error, "cluster: cannot record a run; cancel_run from other nodes will not find it");
                    }
                }
                ServerFrame::RunAccepted {
                    request_id,
                    run_id,
                    thread_id,
                }
            }
            Err(Refused(code, message)) => {
                if let (Some(cluster), Some(lease)) = (&self.cluster, &lease) {
                    cluster.release(lease, None).await;
                }
                ServerFrame::error(request_id, code, message)
            }
        }
    }

    /// With a history, a thread named by `start_agent` that is stored must be the user's
    /// (threads outlive the process, so the sessions' memory alone does not know them all).
    async fn stored_thread_is_theirs(
        &self,
        user: &UserId,
        thread: Option<&ThreadId>,
    ) -> Result<(), Refused> {
        let (Some(recorder), Some(thread)) = (&self.recorder, thread) else {
            return Ok(());
        };
        match recorder.store().thread_owner(thread).await {
            Ok(Some(owner)) if owner != *user => Err(Refused(
                ErrorCode::ThreadNotFound,
                format!("no thread {thread} for this user"),
            )),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "history: cannot check a thread's owner; starting the run anyway");
                Ok(())
            }
        }
    }

    /// In a cluster, one of the user's run slots across all nodes (runs beyond the limit
    /// are refused, not queued: no queue spans nodes).
    async fn cluster_slot(&self, user: &UserId) -> Result<Option<Lease>, Refused> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let limit = self.config.engine.max_concurrent_runs;
        match cluster.acquire(user, limit).await {
            Ok(Some(lease)) => Ok(Some(lease)),
            Ok(None) => Err(Refused(
                ErrorCode::TooManyRuns,
                format!(
                    "this user already has {limit} runs going across the servers (the limit); wait for one to end or cancel one"
                ),
            )),
            Err(error) => {
                tracing::error!(%error, "cluster: cannot claim a run slot");
                Err(Refused(
                    ErrorCode::InternalError,
                    "the server cannot reach its run registry (Redis) right now; retry shortly"
                        .into(),
                ))
            }
        }
    }

    /// Starts the run on an engine made for this request, and tracks it until it ends.
    fn launch(
        self: &Arc<Self>,
        Origin {
            user,
            connection,
            request_id,
        }: Origin<'_>,
        thread: ThreadId,
        start: StartAgent,
        history: Vec<Turn>,
        lease: Option<Lease>,
    ) -> Result<(RunId, ThreadId), Refused> {
        // The run's id is chosen here, so its start is recorded before any of its events.
        let run_id = RunId::generate();
        let mut builder = UserExecutionContext::builder(user.clone())
            .thread_id(thread.clone())
            .run_id(run_id.clone())
            .connection_id(connection.clone());
        if let Some(id) = request_id {
            builder = builder.audit("client_request_id", json!(id));
        }
        let context = builder
            .build()
            .map_err(|e| Refused(ErrorCode::InternalError, e.to_string()))?;
        let engine = self
            .factory
            .create_for_user(context)
            .map_err(|e| Refused(ErrorCode::from_wire(e.code()), e.to_string()))?;
        if let Some(recorder) = &self.recorder {
            recorder.run_started(user, &run_id, &thread, &start.agent, &start.message);
        }
        self.metrics.run_accepted(&run_id);
        let input = AgentInput {
            message: start.message,
            input: start.input.map_or(Value::Null, Value::Object),
            previous_result: None,
            history,
        };
        let handle = match engine.execute_agent(&start.agent, input) {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(recorder) = &self.recorder {
                    recorder.run_refused(&run_id, &thread);
                }
                self.metrics.run_refused(&run_id);
                self.factory.release(&engine);
                return Err(Refused(ErrorCode::from_wire(e.code()), e.to_string()));
            }
        };
        let run_id = handle.run_id().clone();
        let thread_id = handle.thread_id().clone();
        self.sessions.track(user, run_id.clone(), engine.clone());
        let state = Arc::clone(self);
        let (user, finished) = (user.clone(), run_id.clone());
        let tag = crate::auth::user_tag(&user);
        tracing::info!(user = %tag, run_id = %run_id, agent = %start.agent, "run started");
        tokio::spawn(async move {
            let outcome = handle.wait().await;
            let how = match &outcome {
                execution_engine::RunOutcome::Completed { .. } => "completed",
                execution_engine::RunOutcome::Failed(_) => "failed",
                execution_engine::RunOutcome::Cancelled(_) => "cancelled",
            };
            tracing::info!(user = %tag, run_id = %finished, how, code = outcome.error_code(), "run ended");
            state.sessions.finished(&user, &finished);
            state.factory.release(&engine);
            if let (Some(cluster), Some(lease)) = (&state.cluster, lease) {
                cluster.release(&lease, Some(&finished)).await;
            }
        });
        Ok((run_id, thread_id))
    }

    /// Handles `cancel_run`: only the user's own active runs are found. No reply on success:
    /// the run's `agent_cancelled` event is the answer.
    pub(crate) async fn cancel_run(
        &self,
        user: &UserId,
        request_id: Option<String>,
        run_id: &RunId,
    ) -> Option<ServerFrame> {
        if let Some(engine) = self.sessions.active_run(user, run_id) {
            if engine.cancel_run(run_id, "cancelled by the user") {
                return None;
            }
        }
        let elsewhere = match &self.cluster {
            Some(cluster) => cluster.cancel(user, run_id).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cluster: cannot route cancel_run");
                false
            }),
            None => false,
        };
        match elsewhere {
            true => None,
            false => Some(ServerFrame::error(
                request_id,
                ErrorCode::RunNotFound,
                format!("no active run {run_id} for this user"),
            )),
        }
    }

    /// Drops idle per-user state: engines, streams, sessions with no runs, and the HTTP
    /// rate limiters' keys that are full again.
    pub fn maintain(&self) {
        self.factory.cleanup_idle();
        self.bridge.evict_idle();
        self.sessions.evict_idle(self.config.bridge.replay_max_age);
        self.http_limits.retain_recent();
    }
}
