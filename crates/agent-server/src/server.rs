//! Startup and shutdown: binding the listener, the maintenance task, `agent-server serve`,
//! and the graceful drain on SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use crate::app::{AppState, ServeError};
use crate::config::{BrokerChoice, LogFormat, ServeArgs, ServerConfig};
use crate::routes::router;
use redis_broker::{RedisBroker, RedisBrokerConfig};
use run_service::cluster::Cluster;
use run_service::recorder::{HEARTBEAT, Recorder};
use ws_bridge::InProcessBroker;

/// A server that is listening.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    maintenance: tokio::task::JoinHandle<()>,
    /// Lease renewal and reaping, and cancels routed from other nodes (with Redis); the
    /// history's heartbeat (with a store).
    cluster_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a shutdown waits for the runs it cancelled to end.
const CANCELLED_RUNS_END: Duration = Duration::from_secs(10);

impl RunningServer {
    /// Binds `config.addr` and starts serving.
    pub async fn start(mut config: ServerConfig) -> Result<Self, ServeError> {
        let addr = config.addr;
        if !config.mcp_servers.is_empty() {
            config.tools.mcp = Some(mcp_tools::McpTools::start(&config.mcp_servers).await);
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bounds = config.bridge.replay_bounds();
        let recorder = match &config.store {
            Some(url) => Some(
                Recorder::open(url)
                    .await
                    .map_err(|source| ServeError::History {
                        url: secrets::url::redacted(url),
                        source,
                    })?,
            ),
            None => None,
        };
        let state = match &config.broker {
            BrokerChoice::InProcess => {
                let broker = Arc::new(InProcessBroker::new(bounds));
                AppState::build(config, broker, None, recorder)?
            }
            BrokerChoice::Redis(url) => {
                let redis_config = RedisBrokerConfig {
                    ca_file: config.broker_ca_file.clone(),
                    client_identity: config.broker_client_identity.clone(),
                    mode: config.broker_mode,
                    ..RedisBrokerConfig::new(url.clone(), bounds)
                };
                let redis = Arc::new(RedisBroker::connect(redis_config).await?);
                let cluster = Cluster::new(Arc::clone(&redis), config.run_lease_ttl);
                AppState::build(config, redis, Some(cluster), recorder)?
            }
        };
        let mut cluster_tasks = state.runs.spawn_cluster_tasks();
        cluster_tasks.extend(spawn_history_tick(&state));
        let stop = state.stop_accepting.clone();
        let app = router(Arc::clone(&state));
        // Events are small frames that must go out at once: disable Nagle's algorithm, which
        // would hold them back for up to 40 ms waiting for more data.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
        });
        let serve = tokio::spawn(async move {
            // Each request knows its peer's address: the HTTP API's per-address limits key on it.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        });
        let maintained = Arc::downgrade(&state);
        let maintenance = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(30));
            loop {
                ticks.tick().await;
                match maintained.upgrade() {
                    Some(state) => state.maintain(),
                    None => return,
                }
            }
        });
        Ok(Self {
            addr,
            state,
            serve,
            maintenance,
            cluster_tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Graceful shutdown: refuse new sockets and runs (HTTP stays up, so `/readyz` answers
    /// 503 `draining` and load balancers move traffic away), let runs finish for up to the
    /// grace period, cancel the rest (their terminal events are emitted), deliver everything
    /// queued, close every connection with 1001 and a reason that says to resume, then stop
    /// listening.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.runs.drain();
        let deadline = Instant::now() + state.config.shutdown_grace;
        while Instant::now() < deadline {
            let stats = state.runs.factory().stats();
            if stats.running + stats.queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Cancelled runs end at once; one held up (say, by a Redis that went away) does not
        // hold the process: it is said, and the shutdown goes on.
        if tokio::time::timeout(CANCELLED_RUNS_END, state.runs.factory().shutdown())
            .await
            .is_err()
        {
            let stats = state.runs.factory().stats();
            tracing::warn!(
                running = stats.running,
                "shutdown: runs had not ended {} s after they were cancelled; going on without them",
                CANCELLED_RUNS_END.as_secs()
            );
        }
        // A networked broker may still be sending the last events: they go out first.
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), state.bridge.flush())
            .await
            .unwrap_or_else(|_| {
                Err(ws_bridge::broker::BrokerError(
                    "flush timed out after 5 s".into(),
                ))
            })
        {
            tracing::warn!(%error, "shutdown: some events may not reach their connections before the close");
        }
        state.bridge.close_all();
        if let Some(recorder) = &state.recorder
            && tokio::time::timeout(Duration::from_secs(5), recorder.writer().flush())
                .await
                .is_err()
        {
            tracing::warn!("shutdown: the history store did not take the last writes within 5 s");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        state.stop_accepting.cancel();
        self.maintenance.abort();
        for task in &self.cluster_tasks {
            task.abort();
        }
        let _finished = tokio::time::timeout(Duration::from_secs(5), self.serve).await;
    }
}

/// How often the history's retention limits are applied (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// The history's heartbeat, interrupted-run sweep and expired approvals, every
/// [`HEARTBEAT`], and its retention, every [`PRUNE_EVERY`].
fn spawn_history_tick(state: &Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    state.recorder.as_ref()?;
    let weak = Arc::downgrade(state);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        let mut last_prune: Option<Instant> = None;
        loop {
            ticks.tick().await;
            let Some(state) = weak.upgrade() else {
                return;
            };
            let Some(recorder) = &state.recorder else {
                return;
            };
            if last_prune.is_some() {
                recorder.tick().await;
            }
            // Calls nobody decided in time are rejected as expired; their runs go on.
            state.runs.expire_approvals().await;
            // Runs that waited for their budget go on once a period begins or it is raised.
            state.runs.resume_budget_waits().await;
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                let config = &state.config;
                recorder
                    .prune(config.history_max_age, config.history_max_threads_per_user)
                    .await;
                last_prune = Some(Instant::now());
            }
        }
    }))
}

/// Logs to stderr in `format` from now on (once per process; later calls do nothing). The
/// OTLP export, when configured, is set up by `serve` itself.
pub fn init_logging(format: LogFormat) {
    let _inert = server_telemetry::init(format, None, Arc::default());
}

/// The multi-threaded runtime `serve` runs on, with `workers` worker threads (`None`: one per
/// CPU the process may use, tokio's default).
pub fn runtime(workers: Option<u16>) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(usize::from(workers));
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// `agent-server serve`: starts, prints where it listens, runs until SIGTERM or Ctrl-C.
pub async fn serve_from_args(args: ServeArgs) -> Result<(), String> {
    let format = args.log_format;
    // Validated before logging starts (its errors are printed by `main`), since the
    // configuration says where spans go.
    let config = ServerConfig::from_args(args).map_err(|e| e.to_string())?;
    let telemetry =
        server_telemetry::init(format, config.otlp.as_ref(), Arc::clone(&config.scrubber))?;
    for short in &config.unscrubbed {
        tracing::warn!("{short}: it is not removed from what the server sends out");
    }
    log_panics();
    let generated = config.jwt_secret.is_none() && !config.identity.is_configured();
    let model = (config.llm.as_ref()).map(|l| (l.model.clone(), l.display_url()));
    let server = RunningServer::start(config)
        .await
        .map_err(|e| e.to_string())?;
    // A collector reads stderr as one JSON object per line: there, notices are log events.
    match (generated, format) {
        (false, _) => {}
        (true, LogFormat::Text) => eprintln!(
            "WARNING: no JWT secret configured (--jwt-secret / AGENT_SERVER_JWT_SECRET).\n\
             WARNING: generated a random one for this run and enabled POST /dev/token, which\n\
             WARNING: hands a token to ANYONE who asks. For local use only."
        ),
        (true, LogFormat::Json) => tracing::warn!(
            "no JWT secret configured (--jwt-secret / AGENT_SERVER_JWT_SECRET): generated a random \
             one for this run and enabled POST /dev/token, which hands a token to ANYONE who asks; \
             for local use only"
        ),
    }
    // `println!` panics when stdout is closed (say, a supervisor that read only the first
    // line); a server must not die of that, so write and ignore the error.
    let mut out = std::io::stdout();
    let addr = server.addr();
    let _ = writeln!(
        out,
        "agent-server listening on http://{addr} (WebSocket at ws://{addr}/ws)"
    );
    let _ = writeln!(out, "agents: {}", server.state().agent_names().join(", "));
    if let Some((model, url)) = model {
        let _ = writeln!(out, "model: {model} at {url} (the llm agent)");
    }
    let _ = out.flush();
    shutdown_signal().await;
    match format {
        LogFormat::Text => {
            eprintln!("agent-server: shutting down (runs get up to the grace period to finish)");
        }
        LogFormat::Json => {
            tracing::info!("shutting down (runs get up to the grace period to finish)");
        }
    }
    server.shutdown().await;
    // The spans of the drain go out before the process ends.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    Ok(())
}

/// Panics are logged through the log subscriber (whose lines are scrubbed of the server's
/// secrets) instead of the default hook's raw write to stderr: a panicking agent or tool is
/// caught and its run ends in `agent_error`, but its message, which may quote anything it
/// held, would otherwise reach the logs unscrubbed.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                tracing::error!(%backtrace, "panic: {info}");
            }
            _ => tracing::error!("panic: {info}"),
        }
    }));
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
