//! Local agents and tools: real work with no model and no network (the embedded default).
//!
//! - [`TextStatsTool`] (`text_stats`): counts characters, words, sentences and lines.
//! - [`AssistantAgent`] (`assistant`): a local rule-based agent. It says what it is doing,
//!   calls `text_stats` on the message, and streams a plain answer. It labels itself as
//!   rule-based in every answer; it never pretends to be a model.

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
    RegistryError, Tool, ToolError, parse_args,
};
use async_trait::async_trait;
use core_context::UserExecutionContext;
use serde::Deserialize;
use serde_json::{Value, json};

/// Counts characters, words, sentences and lines of a text.
#[derive(Debug, Default)]
pub struct TextStatsTool;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextStatsArgs {
    text: String,
}

/// The statistics `text_stats` returns.
pub fn text_stats(text: &str) -> Value {
    let words = text.split_whitespace().count();
    let sentences = text
        .split(['.', '!', '?'])
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count();
    json!({
        "characters": text.chars().count(),
        "words": words,
        "sentences": sentences,
        "lines": if text.is_empty() { 0 } else { text.lines().count() },
    })
}

#[async_trait]
impl Tool for TextStatsTool {
    fn name(&self) -> &str {
        "text_stats"
    }
    fn description(&self) -> &str {
        "Counts the characters, words, sentences and lines of a text."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": { "text": { "type": "string", "description": "The text to measure." } },
            "required": ["text"],
            "additionalProperties": false
        })
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let TextStatsArgs { text } = parse_args(args)?;
        Ok(text_stats(&text))
    }
}

/// The local rule-based assistant.
#[derive(Debug, Default)]
pub struct AssistantAgent;

#[async_trait]
impl Agent for AssistantAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        ctx.think("I am a local rule-based agent (no language model). Reading your message.");
        let stats = ctx
            .call_tool("text_stats", json!({ "text": input.message }))
            .await
            .map_err(|e| AgentError::new("tool_failed", e.to_string()))?;
        ctx.think("Measured the message; writing the answer.");
        let answer = format!(
            "[local rule-based agent] Your message has {} words in {} sentence(s) and {} characters.",
            stats["words"], stats["sentences"], stats["characters"]
        );
        for piece in answer.split_inclusive(' ') {
            ctx.respond_chunk(piece);
        }
        Ok(Value::String(answer).into())
    }
}

/// Registers the local agents and tools.
pub fn register(registry: &mut AgentRegistry) -> Result<(), RegistryError> {
    registry.register_tool(TextStatsTool)?;
    registry.register_agent(
        AgentSpec::new("assistant", || AssistantAgent).description(
            "Local rule-based assistant (no model): measures your message with tools.",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Value) {
        assert_eq!(text_stats(text), expected, "{text:?}");
    }

    #[test]
    fn text_stats_table() {
        check(
            "",
            json!({"characters": 0, "words": 0, "sentences": 0, "lines": 0}),
        );
        check(
            "Hello world.",
            json!({"characters": 12, "words": 2, "sentences": 1, "lines": 1}),
        );
        check(
            "One. Two! Three?\nFour",
            json!({"characters": 21, "words": 4, "sentences": 4, "lines": 2}),
        );
        check(
            "héllo",
            json!({"characters": 5, "words": 1, "sentences": 1, "lines": 1}),
        );
        check(
            "...",
            json!({"characters": 3, "words": 1, "sentences": 0, "lines": 1}),
        );
    }
}
