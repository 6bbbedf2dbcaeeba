//! The [`Tool`] trait and its errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use core_context::UserExecutionContext;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A function an agent can call. Tools are shared by every run of every user, so a tool keeps
/// no per-user state in itself; per-user data goes through the context it is given (for
/// example [`UserExecutionContext::scoped_key`]).
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name agents call it by: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`.
    fn name(&self) -> &str;
    /// What it does, for humans and models.
    fn description(&self) -> &str;
    /// A JSON Schema of its arguments.
    fn parameters(&self) -> Value;
    /// Where it comes from, as `GET /tools` lists it: `built-in` (the default) for a tool
    /// compiled into the server; another source names itself (an MCP server, say).
    fn source(&self) -> &str {
        "built-in"
    }
    /// Its time limit, when it differs from the dispatcher's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Whether this call needs a person's approval before it runs, whatever the server's
    /// `--approve-tools` patterns say: for every call, or depending on `args` (a file tool
    /// that deletes, say). No by default.
    fn needs_approval(&self, _args: &Value) -> bool {
        false
    }
    /// Runs the tool. Validate `args` (see [`parse_args`]) and say what was wrong.
    async fn call(&self, ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError>;
}

/// Tools that come and go while the server runs: an MCP server's, listed each time the server
/// starts and whenever it says its list changed. The registry asks the set on every lookup, so
/// a tool that appears later is callable and listed from then on.
pub trait ToolSet: Send + Sync {
    /// The set's tools now.
    fn tools(&self) -> Vec<Arc<dyn Tool>>;
    /// The tool `name`, when the set answers it. It may answer a name [`tools`](Self::tools)
    /// does not list: a set whose source has not started yet answers the names it would own
    /// with a tool whose call says so, rather than leaving the caller with "no such tool".
    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>>;
}

/// Why a tool call failed. Shown to the user in `tool_completed` with `is_error: true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// No tool has that name.
    #[error("no tool named {name:?}; available: {available}")]
    UnknownTool {
        /// The requested name.
        name: String,
        /// The registered tools, comma-separated.
        available: String,
    },
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The tool took longer than its limit.
    #[error("the tool took longer than its {} ms limit", .0.as_millis())]
    Timeout(Duration),
    /// The run was cancelled while the tool ran.
    #[error("the tool call was cancelled")]
    Cancelled,
    /// The tool panicked.
    #[error("the tool panicked: {0}")]
    Panicked(String),
    /// The call needs a person's approval and is held: the agent pauses its run
    /// (`AgentContext::pause`) and gets the decision when the run resumes.
    #[error("the call waits for a person's approval")]
    AwaitingApproval,
    /// The call needs a person's approval and this run cannot wait for one; the tool was
    /// not called.
    #[error(
        "this call needs a person's approval and this run cannot wait for one ({0}); the tool was not called"
    )]
    ApprovalUnavailable(String),
    /// A person rejected the call (with their reason, if they gave one); the tool was not
    /// called.
    #[error("a person rejected this call{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Rejected(Option<String>),
    /// Nobody decided in time; the tool was not called.
    #[error("nobody approved this call in time; the tool was not called")]
    ApprovalExpired,
}

impl ToolError {
    /// A short machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ToolError::UnknownTool { .. } => "unknown_tool",
            ToolError::InvalidArguments(_) => "invalid_arguments",
            ToolError::Failed(_) => "tool_failed",
            ToolError::Timeout(_) => "timeout",
            ToolError::Cancelled => "cancelled",
            ToolError::Panicked(_) => "panic",
            ToolError::AwaitingApproval => "awaiting_approval",
            ToolError::ApprovalUnavailable(_) => "approval_unavailable",
            ToolError::Rejected(_) => "rejected",
            ToolError::ApprovalExpired => "approval_expired",
        }
    }

    /// The `result` object of a failed `tool_completed`.
    pub fn to_result(&self) -> Value {
        json!({ "code": self.code(), "error": self.to_string() })
    }
}

/// Decodes `args` into the tool's argument type, turning serde's message (which names the
/// missing or mistyped field) into [`ToolError::InvalidArguments`].
pub fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        expression: String,
    }

    fn check(args: Value, expected: Result<(), &str>) {
        let got = parse_args::<Args>(args.clone())
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(m), Err(f)) => assert!(m.contains(f), "{args}: {m:?} lacks {f:?}"),
            _ => panic!("{args}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn argument_errors_name_the_problem() {
        check(json!({"expression": "1+1"}), Ok(()));
        check(
            json!({}),
            Err("invalid arguments: missing field `expression`"),
        );
        check(
            json!({"expression": 3}),
            Err("invalid type: integer `3`, expected a string"),
        );
        check(json!({"expression": "1", "x": 1}), Err("unknown field `x`"));
        check(json!("1+1"), Err("invalid arguments"));
    }
}
