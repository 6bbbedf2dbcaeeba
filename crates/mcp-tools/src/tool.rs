//! An MCP server's tool as one of the registry's.

use std::sync::{Arc, Weak};

use agent_registry::{Tool, ToolError};
use async_trait::async_trait;
use core_context::UserExecutionContext;
use rmcp::model::{CallToolResult, Tool as RemoteTool};
use serde_json::{Value, json};

/// What a tool needs of the server that listed it: to call it, to find a tool it listed,
/// and to say why a name it would own is not listed. The supervised server
/// (`supervised.rs`) is the host; this module knows it only through this trait, so the two
/// do not import each other.
#[async_trait]
pub(crate) trait ToolHost: Send + Sync + std::fmt::Debug {
    /// Calls the server's tool `tool` with `args`.
    async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, ToolError>;
    /// The server's tool whose registry name is `name`, if it listed one.
    fn tool(&self, name: &str) -> Option<Arc<McpTool>>;
    /// Why `name` cannot be called now (the server is down, or has no such tool).
    async fn unlisted(&self, name: &str) -> ToolError;
}

/// The registry's name of `server`'s tool `tool`: `mcp_SERVER_TOOL`, lower case, any
/// character other than `a-z 0-9 _ -` as `_`, at most 64 characters (valid as a registry
/// name and as an OpenAI function name).
pub fn tool_name(server: &str, tool: &str) -> String {
    let name: String = format!("mcp_{server}_{tool}")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.chars().take(64).collect()
}

/// A tool of an MCP server.
#[derive(Debug)]
pub struct McpTool {
    /// Its server, which holds its tools (so not kept alive by them).
    server: Weak<dyn ToolHost>,
    /// The tool's name on its server.
    remote: String,
    name: String,
    description: String,
    parameters: Value,
    source: String,
}

impl McpTool {
    /// `remote`, a tool the server `server_name` listed.
    pub(crate) fn new(server: Weak<dyn ToolHost>, server_name: &str, remote: &RemoteTool) -> Self {
        let description = remote
            .description
            .as_deref()
            .unwrap_or("(no description)")
            .to_owned();
        Self {
            name: tool_name(server_name, &remote.name),
            source: format!("mcp:{server_name}"),
            remote: remote.name.to_string(),
            description,
            parameters: Value::Object((*remote.input_schema).clone()),
            server,
        }
    }
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn source(&self) -> &str {
        &self.source
    }

    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        if !args.is_object() && !args.is_null() {
            return Err(ToolError::InvalidArguments(
                "the arguments must be a JSON object".into(),
            ));
        }
        let server = self.server.upgrade().ok_or_else(|| gone(&self.source))?;
        let result = server.call(&self.remote, args).await?;
        let value = result_value(&result);
        if result.is_error == Some(true) {
            return Err(ToolError::Failed(match &value["text"] {
                Value::String(text) => text.clone(),
                _ => value.to_string(),
            }));
        }
        Ok(value)
    }
}

/// The error of a call made after its server was shut down (the server stopping).
fn gone(source: &str) -> ToolError {
    ToolError::Failed(format!("the {source} server has shut down"))
}

/// A name an MCP server would own (`mcp_SERVER_…`) while the server has listed no tools (it
/// has not started yet): its call says why, or, once the server is up, calls the tool of
/// that name if the server listed one.
#[derive(Debug)]
pub(crate) struct Unlisted {
    pub(crate) server: Weak<dyn ToolHost>,
    pub(crate) name: String,
    pub(crate) source: String,
}

#[async_trait]
impl Tool for Unlisted {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        "a tool of an MCP server that has not listed its tools"
    }

    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }

    fn source(&self) -> &str {
        &self.source
    }

    async fn call(&self, ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let server = self.server.upgrade().ok_or_else(|| gone(&self.source))?;
        match server.tool(&self.name) {
            Some(tool) => tool.call(ctx, args).await,
            None => Err(server.unlisted(&self.name).await),
        }
    }
}

/// A call's result as the tool's value: its text content joined (`text`), and its structured
/// content (`structured`) when it has one; other content (images, resources) is counted.
fn result_value(result: &CallToolResult) -> Value {
    let texts: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let mut value = json!({ "text": texts.join("\n") });
    let other = result.content.len() - texts.len();
    if other > 0 {
        value["other_content"] = json!(other);
    }
    if let Some(structured) = &result.structured_content {
        value["structured"] = structured.clone();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced_and_valid() {
        let table = [
            ("everything", "echo", "mcp_everything_echo"),
            ("everything", "get-sum", "mcp_everything_get-sum"),
            ("fs", "Read File.v2", "mcp_fs_read_file_v2"),
            ("x", &"t".repeat(100), &format!("mcp_x_{}", "t".repeat(58))),
        ];
        for (server, tool, expected) in table {
            let name = tool_name(server, tool);
            assert_eq!(name, expected);
            assert!(name.len() <= 64);
        }
    }
}
