//! What goes into an agent's run and what comes out: [`AgentInput`] (with the thread's
//! earlier [`Turn`]s), [`AgentOutput`], [`AgentError`], and [`panic_message`] for a run or a
//! tool that panicked.
//!
//! Plain data, importing nothing else of this crate: the `Agent` trait, the context's tool
//! dispatcher and the engine's sub-runs all speak it, so it sits below them.

use core_context::event::error_code;
use serde_json::Value;

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentInput {
    /// The user's message.
    pub message: String,
    /// Agent-specific options (`payload.input` of `start_agent`), `Value::Null` when absent.
    pub input: Value,
    /// In a pipeline, the result of the previous step that completed.
    pub previous_result: Option<Value>,
    /// The thread's earlier turns, oldest first (bounded by the server); empty for a new
    /// thread. A conversational agent shows them to its model before `message`.
    pub history: Vec<Turn>,
}

/// One earlier turn of a thread: what the user said and the agent's final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The user's message.
    pub user: String,
    /// The agent's answer.
    pub assistant: String,
}

impl AgentInput {
    /// An input with just a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            input: Value::Null,
            previous_result: None,
            history: Vec::new(),
        }
    }

    /// Adds agent-specific options.
    #[must_use]
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }
}

/// What an agent returns when it succeeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOutput {
    /// The result shown in `agent_completed`.
    pub result: Value,
    /// Token usage, for agents backed by a model.
    pub usage: Option<Value>,
}

impl From<Value> for AgentOutput {
    fn from(result: Value) -> Self {
        Self {
            result,
            usage: None,
        }
    }
}

impl From<String> for AgentOutput {
    fn from(result: String) -> Self {
        Value::String(result).into()
    }
}

impl From<&str> for AgentOutput {
    fn from(result: &str) -> Self {
        Value::String(result.to_owned()).into()
    }
}

/// Why an agent failed: a code for machines and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AgentError {
    /// A machine-readable code, `agent_failed` unless the agent says otherwise.
    pub code: String,
    /// A message the user can act on.
    pub message: String,
}

impl AgentError {
    /// An error with a specific code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// An error with the generic `agent_failed` code.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(error_code::AGENT_FAILED, message)
    }
}

/// The text of a panic payload, for error messages.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
