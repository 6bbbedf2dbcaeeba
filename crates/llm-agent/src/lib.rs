//! The `llm` agent: any OpenAI-compatible Chat Completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp server), streamed, with tool calling.
//!
//! A run is a loop of turns. Each turn posts the conversation and the registry's tools (with
//! their JSON Schemas) to `{base_url}/chat/completions` with `"stream": true`, and reads the
//! server-sent events:
//! - answer text becomes `agent_response_chunk` events, batched (by size, or after
//!   [`LlmConfig::chunk_interval`]) so a fast model does not flood the socket;
//! - reasoning text (`reasoning_content` or `reasoning` deltas, where a model sends them)
//!   becomes one `agent_thinking` event before the answer text or tool calls that follow it;
//! - tool calls (streamed in pieces, possibly several at once) run through the tool
//!   dispatcher, so their `tool_executing` / `tool_completed` events are emitted, and their
//!   results go back to the model in the next turn.
//!
//! The run completes when the model answers without tool calls, with the answer as result and
//! the token usage summed over turns; it fails with `max_turns` when the model keeps calling
//! tools. Failures end the run with a code a user understands: `bad_api_key`, `rate_limited`
//! (after bounded retries with backoff), `server_error` (after retries), `model_unreachable`,
//! `model_timeout`, `model_request_rejected`, `model_not_found` (a 404 naming the model),
//! `malformed_stream`, `stream_interrupted`.
//! Retries happen only before any output reached the user. Cancelling the run drops the
//! request at once: the connection closes and the server sees it.
//!
//! The API key lives in a [`Secret`], whose `Debug` and `Display` print `[redacted]`; it is
//! only ever written into the `Authorization` header.
//!
//! Setting the agent up ([`LlmConfig::validate`], [`register`]) fails with an [`LlmError`].
//!
//! Where things are: `config.rs` (settings and [`Secret`]), `agent.rs` ([`LlmAgent`] and the
//! turn loop), `model_client.rs` (one model call: request, status codes, retries), `stream.rs`
//! (reading the events into a turn, batching), `error.rs` ([`LlmError`] and the run failure
//! codes).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod agent;
mod config;
mod error;
mod model_client;
mod stats;
mod stream;

use std::sync::Arc;

use agent_registry::{AgentRegistry, AgentSpec};

pub use crate::agent::LlmAgent;
pub use crate::config::{LlmConfig, Secret, read_system_prompt};
pub use crate::error::LlmError;
pub use crate::stats::{ModelStats, ModelStatsSnapshot};

/// The agent's registered name.
pub const AGENT_NAME: &str = "llm";

/// What `GET /agents` offers to ask the model: its own words, and its tools.
pub const EXAMPLES: &[&str] = &[
    "Explain what a WebSocket is in two sentences.",
    "What is 17.5% of 2,340? Use the calculator.",
    "What time is it in Tokyo, and how many hours is that ahead of London?",
];

/// Registers the `llm` agent with `config`; returns its model calls' counts.
pub fn register(
    registry: &mut AgentRegistry,
    config: LlmConfig,
) -> Result<Arc<ModelStats>, LlmError> {
    config.validate()?;
    let agent = LlmAgent::new(config)?;
    let stats = agent.stats();
    let description = format!(
        "Model `{}` behind an OpenAI-compatible API.",
        agent.config().model
    );
    registry.register_agent(
        AgentSpec::new(AGENT_NAME, move || agent.clone())
            .description(description)
            .examples(EXAMPLES.iter().copied()),
    )?;
    Ok(stats)
}
