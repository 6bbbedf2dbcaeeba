//! One MCP server: its child process and client session, started again after it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_registry::ToolError;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool as RemoteTool};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::McpServerSpec;

/// The longest wait between two starts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A running (or restarting) MCP server.
pub struct McpServer {
    spec: McpServerSpec,
    start_timeout: Duration,
    live: Mutex<Live>,
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
        let server = Arc::new(Self {
            spec,
            start_timeout,
            live: Mutex::new(Live {
                session: Some(session),
                generation: 1,
                ..Live::default()
            }),
        });
        Ok((server, tools))
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
                    "the MCP server {} stopped during the call ({error}); it is started again on the next call",
                    self.spec.name
                )))
            }
        }
    }

    /// The live session's peer, starting the server again if it is gone and its backoff has
    /// passed.
    async fn session(&self) -> Result<(Peer<RoleClient>, u64), ToolError> {
        let mut live = self.live.lock().await;
        if let Some(session) = &live.session {
            if !session.is_closed() && !session.peer().is_transport_closed() {
                return Ok((session.peer().clone(), live.generation));
            }
            live.session = None;
            note_failure(&mut live);
            tracing::warn!(server = %self.spec.name, "mcp: the server stopped");
        }
        if let Some(at) = live.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(ToolError::Failed(format!(
                    "the MCP server {} is being restarted after a failure; try again in {} s",
                    self.spec.name,
                    (at - now).as_secs() + 1
                )));
            }
        }
        match connect(&self.spec, self.start_timeout).await {
            Ok(session) => {
                tracing::info!(server = %self.spec.name, "mcp: the server started again");
                let peer = session.peer().clone();
                live.session = Some(session);
                live.generation += 1;
                live.failures = 0;
                live.retry_at = None;
                Ok((peer, live.generation))
            }
            Err(error) => {
                note_failure(&mut live);
                tracing::error!(server = %self.spec.name, %error, "mcp: the server did not start again");
                Err(ToolError::Failed(format!(
                    "the MCP server {} is down and did not start again: {error}",
                    self.spec.name
                )))
            }
        }
    }

    /// The session of `generation` failed: it is ended (the child is stopped) and the next
    /// call starts the server again, after the backoff.
    async fn lost(&self, generation: u64, why: &str) {
        let mut live = self.live.lock().await;
        if live.generation == generation && live.session.is_some() {
            tracing::warn!(server = %self.spec.name, why, "mcp: the server failed during a call");
            live.session = None;
            note_failure(&mut live);
        }
    }
}

/// One more failure: the next start waits 1 s, then 2, 4, … up to [`MAX_BACKOFF`].
fn note_failure(live: &mut Live) {
    live.failures += 1;
    let wait = Duration::from_secs(1 << live.failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    live.retry_at = Some(Instant::now() + wait);
}

/// Runs the server's command and opens an MCP session over its stdio.
async fn connect(
    spec: &McpServerSpec,
    timeout: Duration,
) -> Result<RunningService<RoleClient, ()>, String> {
    let mut command = tokio::process::Command::new(&spec.program);
    command.args(&spec.args);
    let transport = TokioChildProcess::new(command)
        .map_err(|e| format!("cannot run {:?}: {e}", spec.program))?;
    tokio::time::timeout(timeout, ().serve(transport))
        .await
        .map_err(|_| format!("it did not answer MCP's initialize within {timeout:?}"))?
        .map_err(|e| format!("its MCP session did not start: {e}"))
}
