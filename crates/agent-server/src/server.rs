//! The composition root: state, routes, the connection loop, and graceful shutdown.
//!
//! One task per WebSocket connection both reads client frames and writes the user's stream,
//! so a reply (`run_accepted`) is always written before any event of the run it accepted
//! reaches that connection. Events come from the connection's bounded bridge queue; a client
//! that does not read is closed as a slow consumer by the bridge, and a socket write that
//! stalls longer than [`WRITE_TIMEOUT`] closes the connection too.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_registry::{AgentInput, AgentRegistry};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use core_context::{
    CancellationToken, ConnectionId, RunId, ThreadId, UserExecutionContext, UserId,
};
use execution_engine::{ExecutionEngineFactory, UserExecutionEngine};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use ws_bridge::{AgentWebSocketBridge, Epoch, ResumeRequest};

use crate::auth::{Auth, AuthError, DEV_TOKEN_TTL};
use crate::config::{ServeArgs, ServerConfig};
use crate::protocol::{self, ClientRequest, ServerFrame, StartAgent, code};

/// A socket write that takes longer than this closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client's close reply.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Threads remembered per user (oldest forgotten first).
pub const MAX_THREADS_PER_USER: usize = 1_000;
/// Frames one connection may send per [`FLOOD_WINDOW`] before it is closed (1008).
pub const FLOOD_LIMIT: u32 = 100;
/// The window of [`FLOOD_LIMIT`].
pub const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// Frames over this many times the frame limit close the connection (1009).
pub const ABUSIVE_FRAME_FACTOR: usize = 4;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The agents could not be registered.
    #[error("cannot register the built-in agents: {0}")]
    Registry(#[from] agent_registry::RegistryError),
    /// The `llm` agent could not be set up.
    #[error("cannot set up the llm agent: {0}")]
    Llm(String),
    /// The auth secret could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A user's server-side state: their active runs, their threads and their start rate.
struct Session {
    runs: HashMap<RunId, UserExecutionEngine>,
    threads: VecDeque<ThreadId>,
    tokens: f64,
    refilled: Instant,
    last_active: Instant,
}

#[derive(Default)]
struct Sessions {
    users: HashMap<UserId, Session>,
    thread_owner: HashMap<ThreadId, UserId>,
}

/// Everything a request handler needs. Shared by all connections.
pub struct AppState {
    config: ServerConfig,
    auth: Auth,
    registry: Arc<AgentRegistry>,
    bridge: AgentWebSocketBridge,
    factory: ExecutionEngineFactory,
    sessions: Mutex<Sessions>,
    draining: AtomicBool,
    open_connections: AtomicUsize,
    stop_accepting: CancellationToken,
}

impl AppState {
    /// The state of a server with `config`: registers the built-in agents and sets up auth.
    pub fn new(config: ServerConfig) -> Result<Arc<Self>, ServeError> {
        let mut registry = AgentRegistry::new();
        agents::register_local(&mut registry)?;
        if config.synthetic_agent {
            agents::synthetic::register(&mut registry)?;
        }
        if let Some(llm) = &config.llm {
            llm_agent::register(&mut registry, llm.clone()).map_err(ServeError::Llm)?;
        }
        let registry = Arc::new(registry);
        let auth = match &config.jwt_secret {
            Some(secret) => Auth::from_secret(secret, false),
            None => Auth::generated()?,
        };
        let bridge = AgentWebSocketBridge::new(config.bridge.clone());
        let factory = ExecutionEngineFactory::new(
            Arc::clone(&registry),
            Arc::new(bridge.clone()),
            config.engine.clone(),
        );
        Ok(Arc::new(Self {
            config,
            auth,
            registry,
            bridge,
            factory,
            sessions: Mutex::new(Sessions::default()),
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

    /// The bridge (for tests and metrics).
    pub fn bridge(&self) -> &AgentWebSocketBridge {
        &self.bridge
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Handles `start_agent`: rate limit, thread ownership, engine, run.
    fn start_run(
        self: &Arc<Self>,
        user: &UserId,
        connection: &ConnectionId,
        start: StartAgent,
    ) -> ServerFrame {
        let StartAgent {
            request_id,
            agent,
            message,
            thread_id,
            input,
        } = start;
        let refuse = |code: &str, message: String| ServerFrame::Error {
            request_id: request_id.clone(),
            code: code.to_owned(),
            message,
        };
        if self.draining.load(Ordering::Relaxed) {
            return refuse(
                code::SHUTTING_DOWN,
                "the server is shutting down and starts no new runs; reconnect shortly".into(),
            );
        }
        let thread = {
            let mut guard = self.sessions.lock();
            let sessions = &mut *guard;
            let now = Instant::now();
            let rate = f64::from(self.config.start_rate_per_minute);
            let session = sessions
                .users
                .entry(user.clone())
                .or_insert_with(|| Session {
                    runs: HashMap::new(),
                    threads: VecDeque::new(),
                    tokens: rate,
                    refilled: now,
                    last_active: now,
                });
            session.last_active = now;
            session.tokens = (session.tokens
                + now.duration_since(session.refilled).as_secs_f64() * rate / 60.0)
                .min(rate);
            session.refilled = now;
            if session.tokens < 1.0 {
                let wait = ((1.0 - session.tokens) * 60.0 / rate).ceil();
                return refuse(
                    code::RATE_LIMITED,
                    format!(
                        "start_agent is limited to {} per minute per user; retry in {wait} s",
                        self.config.start_rate_per_minute
                    ),
                );
            }
            session.tokens -= 1.0;
            let thread = thread_id.unwrap_or_else(ThreadId::generate);
            match sessions.thread_owner.get(&thread) {
                Some(owner) if owner != user => {
                    return refuse(
                        code::THREAD_NOT_FOUND,
                        format!("no thread {thread} for this user"),
                    );
                }
                Some(_) => {}
                None => {
                    sessions.thread_owner.insert(thread.clone(), user.clone());
                    session.threads.push_back(thread.clone());
                    if session.threads.len() > MAX_THREADS_PER_USER {
                        if let Some(old) = session.threads.pop_front() {
                            sessions.thread_owner.remove(&old);
                        }
                    }
                }
            }
            thread
        };
        let mut builder = UserExecutionContext::builder(user.clone())
            .thread_id(thread)
            .connection_id(connection.clone());
        if let Some(id) = &request_id {
            builder = builder.audit("client_request_id", json!(id));
        }
        let context = match builder.build() {
            Ok(c) => c,
            Err(e) => return refuse("internal_error", e.to_string()),
        };
        let engine = match self.factory.create_for_user(context) {
            Ok(engine) => engine,
            Err(e) => return refuse(e.code(), e.to_string()),
        };
        let input = AgentInput {
            message,
            input,
            previous_result: None,
        };
        let handle = match engine.execute_agent(&agent, input) {
            Ok(handle) => handle,
            Err(e) => {
                self.factory.release(&engine);
                return refuse(e.code(), e.to_string());
            }
        };
        let run_id = handle.run_id().clone();
        let thread_id = handle.thread_id().clone();
        if let Some(session) = self.sessions.lock().users.get_mut(user) {
            session.runs.insert(run_id.clone(), engine.clone());
        }
        let state = Arc::clone(self);
        let user = user.clone();
        let finished = run_id.clone();
        tokio::spawn(async move {
            handle.wait().await;
            if let Some(session) = state.sessions.lock().users.get_mut(&user) {
                session.runs.remove(&finished);
                session.last_active = Instant::now();
            }
            state.factory.release(&engine);
        });
        ServerFrame::RunAccepted {
            request_id,
            run_id,
            thread_id,
        }
    }

    /// Handles `cancel_run`: only the user's own active runs are found.
    fn cancel_run(
        &self,
        user: &UserId,
        request_id: Option<String>,
        run_id: &RunId,
    ) -> Option<ServerFrame> {
        let engine = self
            .sessions
            .lock()
            .users
            .get(user)
            .and_then(|s| s.runs.get(run_id).cloned());
        match engine {
            Some(engine) if engine.cancel_run(run_id, "cancelled by the user") => None,
            _ => Some(ServerFrame::Error {
                request_id,
                code: code::RUN_NOT_FOUND.to_owned(),
                message: format!("no active run {run_id} for this user"),
            }),
        }
    }

    /// Drops idle per-user state: engines, streams, and sessions with no runs.
    pub fn maintain(&self) {
        self.factory.cleanup_idle();
        self.bridge.evict_idle();
        let idle = self.config.bridge.replay_max_age;
        let mut guard = self.sessions.lock();
        let sessions = &mut *guard;
        let owners = &mut sessions.thread_owner;
        sessions.users.retain(|_, s| {
            let keep = !s.runs.is_empty() || s.last_active.elapsed() < idle;
            if !keep {
                for thread in &s.threads {
                    owners.remove(thread);
                }
            }
            keep
        });
    }
}

/// The routes: the chat page at `/`, `/agents`, `/ws`, `/health`, and `/dev/token` when the
/// secret was generated.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(|| async { Html(CHAT_PAGE) }))
        .route("/agents", get(list_agents))
        .route("/ws", get(ws_handler))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    if state.auth.dev_tokens() {
        router = router.route("/dev/token", post(dev_token));
    }
    router.with_state(state)
}

/// The chat page: one self-contained file, embedded so the binary needs no build step.
pub const CHAT_PAGE: &str = include_str!("../static/index.html");

/// The agents a client can start, with their descriptions (public: names are not secrets).
async fn list_agents(State(state): State<Arc<AppState>>) -> Json<Vec<agent_registry::AgentInfo>> {
    Json(state.registry.list_agents())
}

fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

#[derive(Deserialize)]
struct DevTokenRequest {
    user: String,
}

async fn dev_token(
    State(state): State<Arc<AppState>>,
    body: Result<Json<DevTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected a JSON body {{\"user\":\"<name>\"}}: {e}"),
            );
        }
    };
    let user = match UserId::parse(&request.user) {
        Ok(user) => user,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    match state.auth.issue(&user, DEV_TOKEN_TTL) {
        Ok(token) => Json(json!({
            "token": token,
            "user_id": user,
            "expires_in_secs": DEV_TOKEN_TTL.as_secs(),
        }))
        .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        ),
    }
}

fn bearer(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<String, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::BadScheme)?;
        return match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(token.trim().to_owned())
            }
            _ => Err(AuthError::BadScheme),
        };
    }
    query.get("token").cloned().ok_or(AuthError::Missing)
}

fn resume_request(query: &HashMap<String, String>) -> Result<Option<ResumeRequest>, String> {
    match (query.get("epoch"), query.get("after_seq")) {
        (None, None) => Ok(None),
        (Some(epoch), Some(seq)) => {
            let after_seq = seq
                .parse::<u64>()
                .map_err(|_| format!("after_seq must be a non-negative integer, got {seq:?}"))?;
            if epoch.is_empty() || epoch.len() > 64 {
                return Err("epoch must be 1 to 64 characters".into());
            }
            Ok(Some(ResumeRequest {
                epoch: Epoch::from_client(epoch),
                after_seq,
            }))
        }
        _ => Err("to resume, send both epoch and after_seq".into()),
    }
}

async fn ws_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let user = match bearer(&headers, &query).and_then(|token| state.auth.verify(&token)) {
        Ok(user) => user,
        Err(e) => {
            tracing::info!(reason = %e, "refused a connection");
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        }
    };
    let resume = match resume_request(&query) {
        Ok(resume) => resume,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.config.bridge.max_connections_per_user;
    if state.bridge.connection_count(&user) >= max {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!("this user already has {max} open connections; close one first"),
        );
    }
    let frame_limit = state.config.max_frame_bytes;
    upgrade
        // tungstenite's defaults allocate 128 KiB per buffer per socket; keep them small.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(state.config.bridge.send_queue_bytes + 64 * 1024)
        .max_message_size(frame_limit * ABUSIVE_FRAME_FACTOR)
        .max_frame_size(frame_limit * ABUSIVE_FRAME_FACTOR)
        .on_upgrade(move |socket| connection(state, user, resume, socket))
}

/// Counts a connection as open while it lives.
struct OpenConnection<'a>(&'a AtomicUsize);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn send_frame(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    send(socket, Message::Text(frame.to_text().into())).await
}

/// Sends a close frame and waits (up to [`CLOSE_LINGER`]) for the client's close reply, as
/// RFC 6455 asks: dropping the socket at once would reset the connection under a client that
/// is still answering pings, and it would never see the close code.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if !send(socket, Message::Close(Some(frame))).await {
        return;
    }
    let _lingered = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn connection(
    state: Arc<AppState>,
    user: UserId,
    resume: Option<ResumeRequest>,
    mut socket: WebSocket,
) {
    state.open_connections.fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(&state.open_connections);
    let subscription = match state.bridge.subscribe(&user, resume.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            close(&mut socket, 1008, &e.to_string()).await;
            return;
        }
    };
    let connection_id = subscription.connection_id().clone();
    let established = ServerFrame::ConnectionEstablished {
        connection_id: connection_id.clone(),
        user_id: user.clone(),
        epoch: subscription.epoch().clone(),
        last_seq: subscription.last_seq(),
        server_time: protocol::now(),
        resume: subscription.resume().cloned(),
    };
    if !send_frame(&mut socket, &established).await {
        return;
    }
    tracing::debug!(%user, %connection_id, "connection open");

    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut window = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            frame = subscription.recv() => match frame {
                Ok(frame) => {
                    if !send(&mut socket, Message::Text(shared_text(&frame.text))).await {
                        break;
                    }
                }
                Err(reason) => {
                    close(&mut socket, reason.code(), reason.message()).await;
                    break;
                }
            },
            message = socket.recv() => {
                let message = match message {
                    None => break,
                    Some(Err(error)) => {
                        if is_too_big(error) {
                            let limit = state.config.max_frame_bytes * ABUSIVE_FRAME_FACTOR;
                            close(&mut socket, 1009, &format!("message over {limit} bytes")).await;
                        }
                        break;
                    }
                    Some(Ok(message)) => message,
                };
                last_heard = Instant::now();
                if window.0.elapsed() > FLOOD_WINDOW {
                    window = (Instant::now(), 0);
                }
                window.1 += 1;
                if window.1 > FLOOD_LIMIT {
                    close(&mut socket, 1008, "too many messages: slow down and reconnect").await;
                    break;
                }
                let reply = match message {
                    Message::Text(text) => handle_text(&state, &user, &connection_id, text.as_str()),
                    Message::Binary(_) => Some(ServerFrame::Error {
                        request_id: None,
                        code: code::BINARY_NOT_SUPPORTED.into(),
                        message: "binary frames are not part of the protocol; send JSON text frames".into(),
                    }),
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => break,
                };
                if let Some(reply) = reply {
                    if !send_frame(&mut socket, &reply).await {
                        break;
                    }
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > state.config.idle_timeout {
                    close(&mut socket, 4000, "idle timeout: no message from the client").await;
                    break;
                }
                if !send(&mut socket, Message::Ping(Vec::new().into())).await {
                    break;
                }
            }
        }
    }
    tracing::debug!(%user, %connection_id, "connection closed");
}

/// The frame's text as a WebSocket payload without copying it: every connection of the user
/// sends the one encoding the broker made.
fn shared_text(text: &Arc<str>) -> Utf8Bytes {
    let bytes = bytes::Bytes::from_owner(ArcText(Arc::clone(text)));
    // The bytes come from a `str`, so they are UTF-8; the fallback copy is unreachable.
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from(&**text))
}

/// An `Arc<str>` seen as bytes, to own a shared frame inside `Bytes`.
struct ArcText(Arc<str>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether a read failed because the client sent a message over the size limit.
fn is_too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = error.into_inner();
    matches!(inner.downcast_ref::<WsError>(), Some(WsError::Capacity(_)))
}

fn handle_text(
    state: &Arc<AppState>,
    user: &UserId,
    connection: &ConnectionId,
    text: &str,
) -> Option<ServerFrame> {
    let limit = state.config.max_frame_bytes;
    if text.len() > limit {
        return Some(ServerFrame::Error {
            request_id: None,
            code: code::FRAME_TOO_LARGE.into(),
            message: format!("the frame is {} bytes; the limit is {limit}", text.len()),
        });
    }
    match protocol::parse_client_frame(text, &state.config.default_agent) {
        Err(error) => Some(ServerFrame::from_error(error)),
        Ok(ClientRequest::Ping) => Some(ServerFrame::Pong {
            server_time: protocol::now(),
        }),
        Ok(ClientRequest::CancelRun { request_id, run_id }) => {
            state.cancel_run(user, request_id, &run_id)
        }
        Ok(ClientRequest::StartAgent(start)) => Some(state.start_run(user, connection, start)),
    }
}

/// A server that is listening.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    maintenance: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds `config.addr` and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Self, ServeError> {
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = AppState::new(config)?;
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
            axum::serve(listener, app)
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

    /// Graceful shutdown: stop accepting connections and runs, let runs finish for up to the
    /// grace period, cancel the rest (their terminal events are emitted), deliver everything
    /// queued, then close every connection with 1001 and a reason that says to resume.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.draining.store(true, Ordering::Relaxed);
        state.stop_accepting.cancel();
        let deadline = Instant::now() + state.config.shutdown_grace;
        while Instant::now() < deadline {
            let stats = state.factory.stats();
            if stats.running + stats.queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state.factory.shutdown().await;
        state.bridge.close_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.maintenance.abort();
        let _finished = tokio::time::timeout(Duration::from_secs(5), self.serve).await;
    }
}

/// `agent-server serve`: starts, prints where it listens, runs until SIGTERM or Ctrl-C.
pub async fn serve_from_args(args: ServeArgs) -> Result<(), String> {
    let _logging = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config = ServerConfig::from_args(args).map_err(|e| e.to_string())?;
    let generated = config.jwt_secret.is_none();
    let server = RunningServer::start(config)
        .await
        .map_err(|e| e.to_string())?;
    if generated {
        eprintln!(
            "WARNING: no JWT secret configured (--jwt-secret / AGENT_SERVER_JWT_SECRET).\n\
             WARNING: generated a random one for this run and enabled POST /dev/token, which\n\
             WARNING: hands a token to ANYONE who asks. For local use only."
        );
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
    let _ = out.flush();
    shutdown_signal().await;
    eprintln!("agent-server: shutting down (runs get up to the grace period to finish)");
    server.shutdown().await;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sent_without_copying_the_shared_encoding() {
        let text: Arc<str> = Arc::from(r#"{"type":"agent_thinking","seq":1}"#);
        let payload = shared_text(&text);
        assert_eq!(payload.as_str(), &*text);
        assert_eq!(
            payload.as_str().as_ptr(),
            text.as_ptr(),
            "the frame was copied"
        );
    }

    #[test]
    fn resume_parameters_table() {
        let check = |pairs: &[(&str, &str)], expected: Result<Option<u64>, &str>| {
            let query: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let got = resume_request(&query).map(|r| r.map(|r| r.after_seq));
            match (&got, expected) {
                (Ok(a), Ok(b)) => assert_eq!(*a, b),
                (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
                _ => panic!("{pairs:?}: expected {expected:?}, got {got:?}"),
            }
        };
        check(&[], Ok(None));
        check(&[("epoch", "ep_1"), ("after_seq", "41")], Ok(Some(41)));
        check(&[("epoch", "ep_1")], Err("both epoch and after_seq"));
        check(&[("after_seq", "4")], Err("both epoch and after_seq"));
        check(
            &[("epoch", "ep_1"), ("after_seq", "-1")],
            Err("non-negative integer"),
        );
        check(
            &[("epoch", "ep_1"), ("after_seq", "x")],
            Err("non-negative integer"),
        );
        check(
            &[("epoch", ""), ("after_seq", "1")],
            Err("1 to 64 characters"),
        );
    }
}
