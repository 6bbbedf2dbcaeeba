//! Tools from MCP servers (the Model Context Protocol, through the official Rust SDK `rmcp`).
//!
//! `agent-server serve --mcp-server NAME=COMMAND [ARGS...]` names a server that speaks MCP
//! over its standard input and output (most published servers do: `npx -y
//! @modelcontextprotocol/server-everything`); `--mcp-server NAME=https://host/mcp` one that
//! runs on its own, over MCP's streamable HTTP. At start [`start`] runs each server, lists its
//! tools and gives them as the registry's tools ([`McpTool`]), each under a namespaced name
//! valid as an OpenAI function name (`mcp_NAME_TOOL`), with the server's JSON Schema, so the
//! `llm` agent offers them to its model and every call goes through the dispatcher (events,
//! timeouts, redaction, cancellation) like a built-in tool's.
//!
//! A server that fails to start is logged and its tools are not offered (the registry is fixed
//! when the server starts). A server that dies or breaks its transport fails the call it was
//! serving with a clear tool error and is started again in the background, with a backoff
//! between attempts (1 s doubling to 30 s); calls meanwhile are told it is restarting. A server
//! that dies while idle is noticed within a second (its session is checked) and restarted the
//! same way. It never takes the engine down.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod server;
mod spec;
mod tls;
mod tool;

use std::sync::Arc;
use std::time::Duration;

use agent_registry::Tool;

pub use server::McpServer;
pub use spec::{MAX_NAME_LEN, McpServerSpec, SpecError, Target};
pub use tool::{McpTool, tool_name};

/// How long a server may take to start and list its tools.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts every server of `specs` and returns their tools, in order. A server that fails is
/// logged and left out; two tools whose namespaced names collide keep the first.
pub async fn start(specs: &[McpServerSpec]) -> Vec<Arc<dyn Tool>> {
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    for spec in specs {
        match McpServer::start(spec.clone(), START_TIMEOUT).await {
            Ok((server, listed)) => {
                tracing::info!(server = %spec.name, tools = listed.len(), "mcp: server started");
                for remote in listed {
                    let tool = McpTool::new(Arc::clone(&server), &remote);
                    if tools.iter().any(|t| t.name() == tool.name()) {
                        tracing::warn!(server = %spec.name, tool = %tool.name(), "mcp: two tools share a name; the second is left out");
                        continue;
                    }
                    tools.push(Arc::new(tool));
                }
            }
            Err(error) => {
                tracing::error!(server = %spec.name, %error, "mcp: the server did not start; its tools are not offered");
            }
        }
    }
    tools
}
