//! Tools from MCP servers (the Model Context Protocol, through the official Rust SDK `rmcp`).
//!
//! `agent-server serve --mcp-server NAME=COMMAND [ARGS...]` names a server that speaks MCP
//! over its standard input and output (most published servers do: `npx -y
//! @modelcontextprotocol/server-everything`); `--mcp-server NAME=https://host/mcp` one that
//! runs on its own, over MCP's streamable HTTP. A command starts with a minimal environment
//! ([`INHERITED_VARIABLES`]) and what its configuration gives it ([`EnvVar`]), never the
//! agent-server's whole environment and the secrets in it. At start [`McpTools::start`] runs each server, lists its
//! tools and gives them as the registry's tools ([`McpTool`]), each under a namespaced name
//! valid as an OpenAI function name (`mcp_NAME_TOOL`), with the server's JSON Schema, so the
//! `llm` agent offers them to its model and every call goes through the dispatcher (events,
//! timeouts, redaction, cancellation) like a built-in tool's.
//!
//! A server that fails to start is logged, offers no tools, and is tried again in the
//! background with a backoff between attempts (0.5 s doubling to 15 s, plus jitter of up to as
//! much again); until it starts, a call
//! of a name it would own (`mcp_NAME_…`) is answered with a tool error saying why, and once it
//! starts its tools are listed and callable (the registry asks [`McpTools`] on each lookup).
//! A server that dies or breaks its transport fails the call it was serving with a clear tool
//! error and is started again the same way; calls meanwhile are told it is restarting. A
//! server that dies while idle is noticed within a second (its session is checked), and one
//! that hangs within ten (it is pinged every 5 s and has 5 s to answer). Its tools
//! are listed again at each start and whenever it says they changed. It never takes the
//! engine down.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod causes;
mod env;
mod spec;
mod stderr;
mod supervised;
mod tls;
mod tool;

use std::sync::Arc;
use std::time::Duration;

use agent_registry::{Tool, ToolSet};

pub use env::{EnvSource, EnvVar, INHERITED_VARIABLES};
pub use spec::{MAX_NAME_LEN, McpServerSpec, SpecError, Target, Token, token_variable};
pub use supervised::{McpServer, McpServerStatus};
pub use tool::{McpTool, tool_name};

/// How long a server may take to start and list its tools.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Every MCP server of the configuration, as one set of the registry's tools.
#[derive(Debug)]
pub struct McpTools {
    servers: Vec<Arc<McpServer>>,
}

impl McpTools {
    /// Starts every server of `specs` at once, each within [`START_TIMEOUT`]. A server that
    /// fails is logged and tried again in the background.
    pub async fn start(specs: &[McpServerSpec]) -> Arc<Self> {
        let starts = specs
            .iter()
            .map(|spec| McpServer::launch(spec.clone(), START_TIMEOUT));
        Arc::new(Self {
            servers: futures::future::join_all(starts).await,
        })
    }

    /// The servers, in the configuration's order.
    pub fn servers(&self) -> &[Arc<McpServer>] {
        &self.servers
    }
}

impl ToolSet for McpTools {
    /// Every server's tools; of two with one name (rare: names are cut at 64 characters and
    /// `_` joins server and tool), the first server's.
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        for tool in self.servers.iter().flat_map(|server| server.tools()) {
            if !tools.iter().any(|t| t.name() == tool.name()) {
                tools.push(tool);
            }
        }
        tools
    }

    /// A listed tool of that name; else, when the name is one a server that has listed no
    /// tools would own (the longest such prefix), a tool whose call says why it cannot run.
    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        let listed = self.servers.iter().find_map(|server| server.tool(name));
        if let Some(tool) = listed {
            return Some(tool);
        }
        let owner = self
            .servers
            .iter()
            .filter(|server| server.tools().is_empty())
            .map(|server| (tool_name(server.name(), ""), server))
            .filter(|(prefix, _)| name.starts_with(prefix.as_str()) && name.len() > prefix.len())
            .max_by_key(|(prefix, _)| prefix.len())?
            .1;
        Some(Arc::new(tool::Unlisted {
            server: owner.host(),
            name: name.to_owned(),
            source: format!("mcp:{}", owner.name()),
        }))
    }
}
