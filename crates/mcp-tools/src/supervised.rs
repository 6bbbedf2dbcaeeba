//! One supervised MCP server: its child process and client session, its tools as last listed,
//! the watch that pings it to find it dead or hung, and the task that starts it again after it
//! fails (or when it failed to start at all).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agent_registry::{Tool, ToolError};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use parking_lot::RwLock;
use rmcp::model::{CallToolRequestParams, CallToolResult, PingRequest, Tool as RemoteTool};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::causes::with_causes;
use crate::spec::Target;
use crate::stderr::StderrTail;
use crate::tool::ToolHost;
use crate::{McpServerSpec, McpTool};

/// How often a server's session is checked between calls (a server that dies while idle is
/// started again without waiting for a call to find it dead).
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often a live server is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);

/// How long a server has to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server that failed to start is given to finish writing to its standard error.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(1);

/// How long a failing server waits before each new start (the workspace's one retry policy:
/// exponential, with jitter, capped): 0.5 to 1 s after the first failure, doubling, up to
/// 15 to 30 s; it retries until the server starts or is dropped.
const RESTART: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(500))
    .with_max_delay(Duration::from_secs(15))
    .without_max_times()
    .with_jitter();

/// An MCP server's state, as [`McpServer::status`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpServerStatus {
    /// Whether it has a session.
    pub up: bool,
    /// How many tools it listed last.
    pub tools: usize,
    /// Failed starts and lost sessions since the engine started.
    pub failures: u64,
}

/// A running (or restarting) MCP server.
pub struct McpServer {
    spec: McpServerSpec,
    start_timeout: Duration,
    live: Mutex<Live>,
    /// Its tools as last listed (none before it first started).
    tools: RwLock<Vec<Arc<McpTool>>>,
    /// Calls waiting for its answer.
    in_flight: AtomicUsize,
    /// Whether it has a session (as of its last start or failure), for [`McpServer::status`].
    up: AtomicBool,
    /// Failed starts and lost sessions, ever.
    failures: AtomicU64,
    /// Itself, for the task that starts it again.
    me: Weak<McpServer>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// The session, when there is one, and how the last starts went.
#[derive(Default)]
struct Live {
    session: Option<RunningService<RoleClient, Listener>>,
    /// Counts sessions (0: it never started), so a failure reported by a call of an older
    /// session does not end a newer one.
    generation: u64,
    /// Why the last start failed.
    last_error: Option<String>,
    /// The pauses before the next starts, since the first failure after the last good start.
    backoff: Option<ExponentialBackoff>,
    /// No start before this.
    retry_at: Option<Instant>,
    /// Whether a task is starting the server again.
    restarting: bool,
}

impl McpServer {
    /// Starts the server and lists its tools, waiting at most `start_timeout` for each. A
    /// server that does not start is logged and tried again in the background with the
    /// backoff; until it starts, it has no tools and its calls are refused with the reason.
    pub async fn launch(spec: McpServerSpec, start_timeout: Duration) -> Arc<Self> {
        let server = Arc::new_cyclic(|me| Self {
            spec,
            start_timeout,
            live: Mutex::new(Live::default()),
            tools: RwLock::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            up: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            me: me.clone(),
        });
        let opened = server.open().await;
        let mut live = server.live.lock().await;
        match opened {
            Ok(session) => server.up(&mut live, session),
            Err(error) => {
                tracing::error!(server = %server.spec.name, %error, "mcp: the server did not start; it is tried again in the background");
                live.last_error = Some(error);
                server.note_failure(&mut live);
                server.restart(&mut live);
            }
        }
        drop(live);
        server.watch();
        server
    }

    /// Opens a session and lists the server's tools, which become its tools.
    async fn open(&self) -> Result<RunningService<RoleClient, Listener>, String> {
        let listener = Listener {
            server: self.me.clone(),
        };
        let session = connect(&self.spec, self.start_timeout, listener).await?;
        if let Some(info) = session.peer_info() {
            // The instructions are for a model, often long: kept out of the info lines.
            tracing::debug!(
                server = %self.spec.name,
                implementation = info.server_info.as_ref().map_or("", |i| i.name.as_str()),
                version = info.server_info.as_ref().map_or("", |i| i.version.as_str()),
                instructions = info.instructions.as_deref().unwrap_or(""),
                "mcp: the server's session started"
            );
        }
        let listed = list_tools(session.peer(), self.start_timeout).await?;
        self.set_tools(&listed);
        Ok(session)
    }

    /// Makes `listed` the server's tools.
    fn set_tools(&self, listed: &[RemoteTool]) {
        let tools: Vec<Arc<McpTool>> = listed
            .iter()
            .map(|remote| Arc::new(McpTool::new(self.host(), self.name(), remote)))
            .collect();
        let names = |tools: &[Arc<McpTool>]| -> Vec<String> {
            tools.iter().map(|t| t.name().to_owned()).collect()
        };
        let now = names(&tools);
        let before = names(&std::mem::replace(&mut *self.tools.write(), tools));
        // "Listed" is said once: a change (a server that adds tools once it is initialized
        // announces it at once) says what changed, and a listing that changed nothing (a
        // restart) is not news.
        let added = now.iter().filter(|n| !before.contains(n)).count();
        let removed = before.iter().filter(|n| !now.contains(n)).count();
        match (before.is_empty(), added + removed) {
            (true, _) => {
                tracing::info!(server = %self.spec.name, tools = now.len(), "mcp: the server's tools are listed")
            }
            (false, 0) => {
                tracing::debug!(server = %self.spec.name, tools = now.len(), "mcp: the server's tools are listed again, unchanged")
            }
            (false, _) => {
                tracing::info!(server = %self.spec.name, tools = now.len(), added, removed, "mcp: the server's tools changed")
            }
        }
    }

    /// Checks the session every [`WATCH_EVERY`] while the server exists: a session whose
    /// process has ended is dropped and the server started again; every [`PING_EVERY`] the
    /// server is pinged, and one that does not answer within [`PING_TIMEOUT`] (hung, or its
    /// connection silently gone) is treated the same way.
    fn watch(&self) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut since_ping = Duration::ZERO;
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(server) = me.upgrade() else { return };
                let open = {
                    let mut live = server.live.lock().await;
                    if live.session.is_some() && live.peer().is_none() {
                        server.end_session(&mut live, "it stopped while idle");
                    }
                    live.peer().map(|peer| (peer, live.generation))
                };
                since_ping += WATCH_EVERY;
                if let Some((peer, generation)) = open.filter(|_| since_ping >= PING_EVERY) {
                    since_ping = Duration::ZERO;
                    server.ping(&peer, generation).await;
                }
            }
        });
    }

    /// Pings the session of `generation`; when it does not answer, it is ended and the server
    /// started again. An answer that is an error still shows the server alive. A server busy
    /// with calls may be slow to answer (one that runs its tools on its only thread cannot):
    /// it is left alone while a call of ours waits for it, each within its own time limit.
    async fn ping(&self, peer: &Peer<RoleClient>, generation: u64) {
        let ping = peer.send_request(PingRequest::default().into());
        let why = match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_) | Err(rmcp::ServiceError::McpError(_))) => return,
            Ok(Err(error)) => format!("its ping failed: {error}"),
            Err(_) => {
                let calls = self.in_flight.load(Ordering::Relaxed);
                if calls > 0 {
                    tracing::debug!(server = %self.spec.name, calls, "mcp: no answer to a ping while calls run; left alone");
                    return;
                }
                format!("it did not answer a ping within {PING_TIMEOUT:?}")
            }
        };
        self.lost(generation, &why).await;
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its tools as last listed.
    pub fn tools(&self) -> Vec<Arc<McpTool>> {
        self.tools.read().clone()
    }

    /// Itself, as its tools' host (not kept alive by them).
    pub(crate) fn host(&self) -> Weak<dyn ToolHost> {
        self.me.clone()
    }

    /// Its tool `name` (the registry's name, `mcp_SERVER_TOOL`), if it listed one.
    pub fn tool(&self, name: &str) -> Option<Arc<McpTool>> {
        self.tools.read().iter().find(|t| t.name() == name).cloned()
    }

    /// Calls the server's tool `tool` with `args` (a JSON object).
    pub async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, ToolError> {
        let (peer, generation) = self.session().await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Value::Object(args) = args {
            params = params.with_arguments(args);
        }
        let answer = {
            let _waiting = InFlight::enter(&self.in_flight);
            peer.call_tool(params).await
        };
        match answer {
            Ok(result) => Ok(result),
            Err(rmcp::ServiceError::McpError(error)) => Err(ToolError::Failed(format!(
                "the MCP server {} refused the call: {}",
                self.spec.name, error.message
            ))),
            Err(error) => {
                let why = with_causes(&error);
                self.lost(generation, &why).await;
                Err(ToolError::Failed(format!(
                    "the MCP server {} stopped during the call ({why}); it is being started again",
                    self.spec.name
                )))
            }
        }
    }

    /// The live session's peer; when the server is gone, a task starts it again (after the
    /// backoff) and the call is told so.
    async fn session(&self) -> Result<(Peer<RoleClient>, u64), ToolError> {
        let mut live = self.live.lock().await;
        if let Some(peer) = live.peer() {
            return Ok((peer, live.generation));
        }
        if live.session.is_some() {
            self.end_session(&mut live, "it stopped");
        }
        self.restart(&mut live);
        Err(self.down(&live))
    }

    /// Why a call cannot reach the server now: it has not started yet, or it is being
    /// started again, and when the next try is.
    fn down(&self, live: &Live) -> ToolError {
        let wait = live.retry_at.map_or(0, |at| {
            at.saturating_duration_since(Instant::now()).as_secs() + 1
        });
        let name = &self.spec.name;
        ToolError::Failed(match (&live.last_error, live.generation) {
            (Some(error), 0) => format!(
                "the MCP server {name} has not started ({error}); it is tried again in about {wait} s"
            ),
            _ => format!(
                "the MCP server {name} is being restarted after a failure; try again in about {wait} s"
            ),
        })
    }

    /// The error a call of an unlisted tool `name` gets: the server is down (and why), or it
    /// is up and has no such tool.
    pub(crate) async fn unlisted(&self, name: &str) -> ToolError {
        let live = self.live.lock().await;
        if live.peer().is_none() {
            return self.down(&live);
        }
        let names: Vec<String> = self.tools().iter().map(|t| t.name().to_owned()).collect();
        ToolError::UnknownTool {
            name: name.to_owned(),
            available: names.join(", "),
        }
    }

    /// Its state, without waiting for a call in progress: up as of its last start or failure
    /// (a server that died while idle is seen within a second, one that hangs within ten),
    /// its tools, its failures.
    pub fn status(&self) -> McpServerStatus {
        McpServerStatus {
            up: self.up.load(Ordering::Relaxed),
            tools: self.tools.read().len(),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// A session started: the server is up, its failures since forgotten.
    fn up(&self, live: &mut Live, session: RunningService<RoleClient, Listener>) {
        live.up(session);
        self.up.store(true, Ordering::Relaxed);
    }

    /// One more failure: counted, and the next start waits the next pause of [`RESTART`].
    fn note_failure(&self, live: &mut Live) {
        self.up.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let wait = live
            .backoff
            .get_or_insert_with(|| RESTART.build())
            .next()
            .unwrap_or(Duration::from_secs(30));
        live.retry_at = Some(Instant::now() + wait);
    }

    /// Starts a task that starts the server again, waiting out the backoff before each try,
    /// unless one runs already. It ends when the server is up, or when the server is dropped.
    fn restart(&self, live: &mut Live) {
        if live.restarting {
            return;
        }
        live.restarting = true;
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                let Some(server) = me.upgrade() else { return };
                let at = server.live.lock().await.retry_at;
                if let Some(at) = at {
                    tokio::time::sleep_until(at.into()).await;
                }
                let opened = server.open().await;
                let mut live = server.live.lock().await;
                match opened {
                    Ok(session) => {
                        tracing::info!(server = %server.spec.name, "mcp: the server started");
                        server.up(&mut live, session);
                        return;
                    }
                    Err(error) => {
                        tracing::error!(server = %server.spec.name, %error, "mcp: the server did not start; retrying");
                        live.last_error = Some(error);
                        server.note_failure(&mut live);
                    }
                }
            }
        });
    }

    /// The session of `generation` failed: it is ended (the child is stopped) and the server
    /// is started again in the background, after the backoff.
    async fn lost(&self, generation: u64, why: &str) {
        let mut live = self.live.lock().await;
        if live.generation == generation && live.session.is_some() {
            self.end_session(&mut live, why);
        }
    }

    /// Ends the session (which stops the child), counts the failure and starts the server
    /// again in the background.
    fn end_session(&self, live: &mut Live, why: &str) {
        tracing::warn!(server = %self.spec.name, why, "mcp: the server failed");
        live.session = None;
        self.note_failure(live);
        self.restart(live);
    }
}

impl Live {
    /// A session started: the server is up, its failures forgotten.
    fn up(&mut self, session: RunningService<RoleClient, Listener>) {
        self.session = Some(session);
        self.generation += 1;
        self.backoff = None;
        self.retry_at = None;
        self.restarting = false;
        self.last_error = None;
    }

    /// The session's peer, when it has a session that is still open.
    fn peer(&self) -> Option<Peer<RoleClient>> {
        let session = self.session.as_ref()?;
        let open = !session.is_closed() && !session.peer().is_transport_closed();
        open.then(|| session.peer().clone())
    }
}

/// A call waiting for the server's answer, counted until it ends (or is dropped: cancelled, or
/// timed out by the dispatcher).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's side of a session: it lists the server's tools again when the server says
/// they changed (`notifications/tools/list_changed`).
pub(crate) struct Listener {
    server: Weak<McpServer>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        // Listed in a task of its own: the session's loop, which runs this, carries the answer.
        tokio::spawn(async move {
            match list_tools(&context.peer, server.start_timeout).await {
                Ok(listed) => server.set_tools(&listed),
                Err(error) => {
                    tracing::warn!(server = %server.spec.name, %error, "mcp: the server's changed tools could not be listed; the last list is kept");
                }
            }
        });
    }
}

/// Every tool `peer` lists, waiting at most `timeout`.
async fn list_tools(peer: &Peer<RoleClient>, timeout: Duration) -> Result<Vec<RemoteTool>, String> {
    tokio::time::timeout(timeout, peer.list_all_tools())
        .await
        .map_err(|_| format!("it did not list its tools within {timeout:?}"))?
        .map_err(|e| format!("listing its tools failed: {e}"))
}

/// Opens an MCP session: over the stdio of the server's command, run now, or over
/// streamable HTTP to its URL.
async fn connect(
    spec: &McpServerSpec,
    timeout: Duration,
    listener: Listener,
) -> Result<RunningService<RoleClient, Listener>, String> {
    let (started, stderr) = match &spec.target {
        Target::Stdio {
            program,
            args,
            env,
            cwd,
        } => {
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            crate::env::prepare(&mut command, env, cwd.as_deref());
            let (transport, stderr) = TokioChildProcess::builder(command)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {program:?}: {e}"))?;
            let stderr = stderr.map(|stderr| StderrTail::follow(&spec.name, stderr));
            let started = tokio::time::timeout(timeout, listener.serve(transport)).await;
            (started, stderr)
        }
        Target::Http { url } => {
            crate::tls::install_provider();
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = &spec.token {
                config = config.auth_header(token.expose());
            }
            let transport = StreamableHttpClientTransport::from_config(config);
            let started = tokio::time::timeout(timeout, listener.serve(transport)).await;
            (started, None)
        }
    };
    let why = match started {
        Ok(Ok(session)) => return Ok(session),
        Ok(Err(error)) => format!("its MCP session did not start: {}", with_causes(&error)),
        Err(_) => format!("it did not answer MCP's initialize within {timeout:?}"),
    };
    // Its own words say best why it failed (a missing file, a bad key, ...).
    let said = match stderr {
        Some(stderr) => stderr.last_words(LAST_WORDS_WAIT).await,
        None => None,
    };
    Err(match said {
        Some(said) => format!("{why}; it said: {said}"),
        None => why,
    })
}

// The tools it lists call it back through this trait (tool.rs does not know this type).
#[async_trait::async_trait]
impl ToolHost for McpServer {
    async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, ToolError> {
        McpServer::call(self, tool, args).await
    }

    fn tool(&self, name: &str) -> Option<Arc<McpTool>> {
        McpServer::tool(self, name)
    }

    async fn unlisted(&self, name: &str) -> ToolError {
        McpServer::unlisted(self, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error saying `0`, caused by `1`.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |cause, text| Some(Layer(text, cause.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn an_error_is_told_with_its_causes_each_once() {
        let table: [(&[&str], &str); 3] = [
            (&["refused"], "refused"),
            (
                &[
                    "error sending request",
                    "client error (Connect)",
                    "invalid peer certificate: UnknownIssuer",
                ],
                "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer",
            ),
            (
                &["io failed: broken pipe", "broken pipe"],
                "io failed: broken pipe",
            ),
        ];
        for (texts, told) in table {
            assert_eq!(with_causes(&chain(texts)), told);
        }
    }
}
