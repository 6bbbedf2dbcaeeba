//! The `synthetic` agent: its shape comes from `payload.input` of `start_agent`.
//!
//! `{"thinking":2,"tools":3,"chunks":5,"sleep_ms":10}` makes 2 thinking steps, 3 calls of the
//! `synthetic_echo` tool and 5 answer chunks, pausing 10 ms between steps. For tests of the
//! failure paths it can also `"fail": "message"`, `"panic": true` or `"hang": true` (wait
//! until cancelled or timed out) after its steps. Bad input (a negative count, a string where
//! a number belongs, an unknown key, a count beyond the bounds) fails the run with
//! `invalid_input` and a message naming the field.

use std::time::Duration;

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
    RegistryError, Tool, ToolError,
};
use async_trait::async_trait;
use core_context::UserExecutionContext;
use serde::Deserialize;
use serde_json::{Value, json};

/// The agent's registered name.
pub const AGENT_NAME: &str = "synthetic";
/// The tool it calls.
pub const TOOL_NAME: &str = "synthetic_echo";

/// Upper bounds on the shape, so one request cannot hold a slot for hours.
const MAX_STEPS: u32 = 1_000;
const MAX_SLEEP_MS: u64 = 60_000;

/// The shape of one synthetic run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shape {
    /// Thinking steps.
    pub thinking: u32,
    /// Tool calls.
    pub tools: u32,
    /// Answer chunks.
    pub chunks: u32,
    /// Pause after each step, in milliseconds.
    pub sleep_ms: u64,
    /// Fail with this message after the steps.
    pub fail: Option<String>,
    /// Panic after the steps.
    pub panic: bool,
    /// Wait forever after the steps (until cancelled or timed out).
    pub hang: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            thinking: 1,
            tools: 1,
            chunks: 1,
            sleep_ms: 0,
            fail: None,
            panic: false,
            hang: false,
        }
    }
}

impl Shape {
    /// Reads a shape from `input` (`null` means the default shape).
    pub fn from_input(input: &Value) -> Result<Self, AgentError> {
        let shape: Shape = if input.is_null() {
            Shape::default()
        } else if !input.is_object() {
            return Err(AgentError::new(
                "invalid_input",
                format!("synthetic input must be a JSON object, got {input}"),
            ));
        } else {
            Shape::deserialize(input)
                .map_err(|e| AgentError::new("invalid_input", format!("synthetic input: {e}")))?
        };
        for (field, value) in [
            ("thinking", shape.thinking),
            ("tools", shape.tools),
            ("chunks", shape.chunks),
        ] {
            if value > MAX_STEPS {
                return Err(AgentError::new(
                    "invalid_input",
                    format!("synthetic input: {field} is {value}; the limit is {MAX_STEPS}"),
                ));
            }
        }
        if shape.sleep_ms > MAX_SLEEP_MS {
            return Err(AgentError::new(
                "invalid_input",
                format!(
                    "synthetic input: sleep_ms is {}; the limit is {MAX_SLEEP_MS}",
                    shape.sleep_ms
                ),
            ));
        }
        Ok(shape)
    }
}

/// The synthetic agent. Stateless; one per run like every agent.
#[derive(Debug, Default)]
pub struct SyntheticAgent;

#[async_trait]
impl Agent for SyntheticAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let shape = Shape::from_input(&input.input)?;
        let pause = Duration::from_millis(shape.sleep_ms);
        let nap = || async {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        };
        for step in 1..=shape.thinking {
            ctx.think(format!(
                "synthetic thinking step {step} of {}",
                shape.thinking
            ));
            nap().await;
        }
        for call in 1..=shape.tools {
            ctx.call_tool(TOOL_NAME, json!({ "call": call, "message": input.message }))
                .await
                .map_err(|e| AgentError::new("tool_failed", e.to_string()))?;
            nap().await;
        }
        for chunk in 1..=shape.chunks {
            ctx.respond_chunk(format!("chunk {chunk} "));
            nap().await;
        }
        if shape.panic {
            panic!("synthetic panic requested by the input");
        }
        if let Some(message) = shape.fail {
            return Err(AgentError::new("synthetic_failure", message));
        }
        if shape.hang {
            std::future::pending::<()>().await;
        }
        Ok(
            json!({ "thinking": shape.thinking, "tools": shape.tools, "chunks": shape.chunks })
                .into(),
        )
    }
}

/// The tool the synthetic agent calls: returns its arguments.
#[derive(Debug, Default)]
pub struct SyntheticEchoTool;

#[async_trait]
impl Tool for SyntheticEchoTool {
    fn name(&self) -> &str {
        TOOL_NAME
    }
    fn description(&self) -> &str {
        "Returns its arguments unchanged (used by the synthetic agent)."
    }
    fn parameters(&self) -> Value {
        json!({ "type": "object", "additionalProperties": true })
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        Ok(args)
    }
}

/// Registers the synthetic agent and its tool.
pub fn register(registry: &mut AgentRegistry) -> Result<(), RegistryError> {
    registry.register_tool(SyntheticEchoTool)?;
    registry.register_agent(
        AgentSpec::new(AGENT_NAME, || SyntheticAgent)
            .description("Test and load agent: its steps come from payload.input."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: Value, expected: Result<Shape, &str>) {
        let got = Shape::from_input(&input).map_err(|e| e.to_string());
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(m), Err(f)) => assert!(m.contains(f), "{input}: {m:?} lacks {f:?}"),
            _ => panic!("{input}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn shape_table() {
        check(Value::Null, Ok(Shape::default()));
        check(
            json!({"thinking": 2, "tools": 3, "chunks": 5, "sleep_ms": 10}),
            Ok(Shape {
                thinking: 2,
                tools: 3,
                chunks: 5,
                sleep_ms: 10,
                ..Shape::default()
            }),
        );
        check(
            json!({"tools": 0}),
            Ok(Shape {
                tools: 0,
                ..Shape::default()
            }),
        );
        check(
            json!({"tools": -1}),
            Err("invalid_input: synthetic input: invalid value: integer `-1`"),
        );
        check(
            json!({"tools": "3"}),
            Err("invalid type: string \"3\", expected u32"),
        );
        check(json!({"tool": 3}), Err("unknown field `tool`"));
        check(
            json!({"chunks": 5000}),
            Err("chunks is 5000; the limit is 1000"),
        );
        check(
            json!({"sleep_ms": 600000}),
            Err("sleep_ms is 600000; the limit is 60000"),
        );
        check(
            json!([1]),
            Err("synthetic input must be a JSON object, got [1]"),
        );
    }
}
