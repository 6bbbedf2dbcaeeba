//! One MCP server: its child process and client session, started again after it fails.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agent_registry::ToolError;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool as RemoteTool};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::McpServerSpec;
use crate::spec::Target;

/// How often a server's session is checked between calls (a server that dies while idle is
/// started again without waiting for a call to find it dead).
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between two starts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A running (or restarting) MCP server.
pub struct McpServer {
    spec: McpServerSpec,
    start_timeout: Duration,
    live: Mutex<Live>,
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
    session: Option<RunningService<RoleClient, ()>>,
    /// Counts sessions, so a failure reported by a call of an older session does not end a
    /// newer one.
    generation: u64,
    /// Failures since the last good start.
    failures: u32,
    /// No start before this.
    retry_at: Option<Instant>,
    /// Whether a task is starting the server again.
    restarting: bool,
}

impl McpServer {
    /// Starts the server and lists its tools.
    pub async fn start(
        spec: McpServerSpec,
        start_timeout: Duration,
    ) -> Result<(Arc<Self>, Vec<RemoteTool>), String> {
        let session = connect(&spec, start_timeout).await?;
        let tools = tokio::time::timeout(start_timeout, session.list_all_tools())
            .await
            .map_err(|_| format!("it did not list its tools within {start_timeout:?}"))?
            .map_err(|e| format!("listing its tools failed: {e}"))?;
        let server = Arc::new_cyclic(|me| Self {
            spec,
            start_timeout,
            live: Mutex::new(Live {
                session: Some(session),
                generation: 1,
                ..Live::default()
            }),
            me: me.clone(),
        });
        server.watch();
        Ok((server, tools))
    }

    /// Checks the session every [`WATCH_EVERY`] while the server exists: a session whose
    /// process has ended is dropped and the server started again.
    fn watch(&self) {
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(server) = me.upgrade() else { return };
                let mut live = server.live.lock().await;
                if live.session.is_some() && live.peer().is_none() {
                    server.end_session(&mut live, "it stopped while idle");
                }
            }
        });
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Calls the server's tool `tool` with `args` (a JSON object).
    pub async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, ToolError> {
        let (peer, generation) = self.session().await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Value::Object(args) = args {
            params = params.with_arguments(args);
        }
        match peer.call_tool(params).await {
            Ok(result) => Ok(result),
            Err(rmcp::ServiceError::McpError(error)) => Err(ToolError::Failed(format!(
                "the MCP server {} refused the call: {}",
                self.spec.name, error.message
            ))),
            Err(error) => {
                self.lost(generation, &error.to_string()).await;
                Err(ToolError::Failed(format!(
                    "the MCP server {} stopped during the call ({error}); it is being started again",
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
        let wait = live.retry_at.map_or(0, |at| {
            at.saturating_duration_since(Instant::now()).as_secs() + 1
        });
        Err(ToolError::Failed(format!(
            "the MCP server {} is being restarted after a failure; try again in about {wait} s",
            self.spec.name
        )))
    }

    /// Whether the server has a live session (it is up, or started again).
    pub async fn is_up(&self) -> bool {
        self.live.lock().await.peer().is_some()
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
                let started = connect(&server.spec, server.start_timeout).await;
                let mut live = server.live.lock().await;
                match started {
                    Ok(session) => {
                        tracing::info!(server = %server.spec.name, "mcp: the server started again");
                        live.session = Some(session);
                        live.generation += 1;
                        live.failures = 0;
                        live.retry_at = None;
                        live.restarting = false;
                        return;
                    }
                    Err(error) => {
                        tracing::error!(server = %server.spec.name, %error, "mcp: the server did not start again; retrying");
                        note_failure(&mut live);
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
        note_failure(live);
        self.restart(live);
    }
}

impl Live {
    /// The session's peer, when it has a session that is still open.
    fn peer(&self) -> Option<Peer<RoleClient>> {
        let session = self.session.as_ref()?;
        let open = !session.is_closed() && !session.peer().is_transport_closed();
        open.then(|| session.peer().clone())
    }
}

/// One more failure: the next start waits 1 s, then 2, 4, … up to [`MAX_BACKOFF`].
fn note_failure(live: &mut Live) {
    live.failures += 1;
    let wait = Duration::from_secs(1 << live.failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    live.retry_at = Some(Instant::now() + wait);
}

/// Opens an MCP session: over the stdio of the server's command, run now, or over
/// streamable HTTP to its URL.
async fn connect(
    spec: &McpServerSpec,
    timeout: Duration,
) -> Result<RunningService<RoleClient, ()>, String> {
    let started = match &spec.target {
        Target::Stdio { program, args } => {
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            let transport = TokioChildProcess::new(command)
                .map_err(|e| format!("cannot run {program:?}: {e}"))?;
            tokio::time::timeout(timeout, ().serve(transport)).await
        }
        Target::Http { url } => {
            crate::tls::install_provider();
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            tokio::time::timeout(timeout, ().serve(transport)).await
        }
    };
    started
        .map_err(|_| format!("it did not answer MCP's initialize within {timeout:?}"))?
        .map_err(|e| format!("its MCP session did not start: {e}"))
}
