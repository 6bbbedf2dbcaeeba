//! The `llm` agent: any OpenAI-compatible Chat Completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp server), streamed, with tool calling.
//!
//! A run is a loop of turns. Each turn posts the conversation and the registry's tools (with
//! their JSON Schemas) to `{base_url}/chat/completions` with `"stream": true`, and reads the
//! server-sent events:
//! - answer text becomes `agent_response_chunk` events, batched (by size, or after
//!   [`LlmConfig::chunk_interval`]) so a fast model does not flood the socket;
//! - reasoning text (`reasoning_content` or `reasoning` deltas, where a model sends them)
//!   becomes one `agent_thinking` event per turn;
//! - tool calls (streamed in pieces, possibly several at once) run through the tool
//!   dispatcher, so their `tool_executing` / `tool_completed` events are emitted, and their
//!   results go back to the model in the next turn.
//!
//! The run completes when the model answers without tool calls, with the answer as result and
//! the token usage summed over turns; it fails with `max_turns` when the model keeps calling
//! tools. Failures end the run with a code a user understands: `bad_api_key`, `rate_limited`
//! (after bounded retries with backoff), `server_error` (after retries), `model_unreachable`,
//! `model_request_rejected`, `malformed_stream`, `stream_interrupted`. Retries happen only
//! before any output reached the user. Cancelling the run drops the request at once: the
//! connection closes and the server sees it.
//!
//! The API key lives in a [`Secret`], whose `Debug` and `Display` print `[redacted]`; it is
//! only ever written into the `Authorization` header.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
    RegistryError,
};
use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Map, Value, json};

/// The agent's registered name.
pub const AGENT_NAME: &str = "llm";

/// A value that must never be printed (an API key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Settings of the `llm` agent.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// The API root, such as `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// The API key, if the server needs one.
    pub api_key: Option<Secret>,
    /// The model name.
    pub model: String,
    /// A system prompt, if any.
    pub system_prompt: Option<String>,
    /// Turns (model calls) per run before the run fails with `max_turns`.
    pub max_turns: u32,
    /// Retries after a 429, a 5xx or a connection failure.
    pub max_retries: u32,
    /// The first retry's wait; each retry doubles it (a `Retry-After` header wins, up to
    /// [`max_backoff`](Self::max_backoff)).
    pub initial_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// The longest a single model call may take (the run's own timeout still applies).
    pub request_timeout: Duration,
    /// Answer text is sent to the user at least this often while it streams.
    pub chunk_interval: Duration,
    /// Answer text is sent to the user once this many characters are waiting.
    pub chunk_max_chars: usize,
}

impl LlmConfig {
    /// Settings for `model` at `base_url`, with the defaults for everything else.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            system_prompt: None,
            max_turns: 10,
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            chunk_interval: Duration::from_millis(50),
            chunk_max_chars: 200,
        }
    }

    /// Checks the settings a user gave.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.base_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "LLM base URL {url:?} must start with http:// or https://"
            ));
        }
        if self.model.trim().is_empty() {
            return Err("the LLM model name is empty".into());
        }
        if self.max_turns == 0 {
            return Err("max_turns must be at least 1".into());
        }
        Ok(())
    }
}

/// The `llm` agent. Cheap to make per run: it shares the HTTP client and the settings.
#[derive(Clone)]
pub struct LlmAgent {
    config: Arc<LlmConfig>,
    client: reqwest::Client,
}

impl fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmAgent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Registers the `llm` agent with `config`.
pub fn register(registry: &mut AgentRegistry, config: LlmConfig) -> Result<(), String> {
    config.validate()?;
    let agent = LlmAgent {
        client: reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?,
        config: Arc::new(config),
    };
    let description = format!(
        "Model `{}` behind an OpenAI-compatible API.",
        agent.config.model
    );
    registry
        .register_agent(AgentSpec::new(AGENT_NAME, move || agent.clone()).description(description))
        .map_err(|e: RegistryError| e.to_string())
}

/// One tool call a model asked for.
#[derive(Debug, Clone, Default, PartialEq)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// What one streamed turn produced.
#[derive(Debug, Default)]
struct Turn {
    content: String,
    tool_calls: Vec<ToolCall>,
    usage: Option<Value>,
}

fn failed(code: &str, message: impl Into<String>) -> AgentError {
    AgentError::new(code, message)
}

/// Adds the token counts of `turn` to `total`.
fn add_usage(total: &mut Option<Value>, turn: Option<Value>) {
    let Some(turn) = turn else { return };
    let sum = total.get_or_insert_with(|| json!({}));
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        let n = turn[key].as_u64().unwrap_or(0) + sum[key].as_u64().unwrap_or(0);
        sum[key] = json!(n);
    }
}

#[async_trait]
impl Agent for LlmAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let tools: Vec<Value> = ctx
            .tools()
            .into_iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        let mut messages = Vec::new();
        if let Some(system) = &self.config.system_prompt {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": input.message}));
        let mut usage = None;
        for _turn in 0..self.config.max_turns {
            let turn = self.turn(ctx, &messages, &tools).await?;
            add_usage(&mut usage, turn.usage);
            if turn.tool_calls.is_empty() {
                return Ok(AgentOutput {
                    result: Value::String(turn.content),
                    usage,
                });
            }
            let calls: Vec<Value> = turn
                .tool_calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
            let content = if turn.content.is_empty() {
                Value::Null
            } else {
                Value::String(turn.content)
            };
            messages.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
            // Parallel tool calls run at once; their events are emitted by the dispatcher.
            let results = futures::future::join_all(turn.tool_calls.iter().map(|call| {
                let args = serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                ctx.call_tool_with_id(&call.id, &call.name, args)
            }))
            .await;
            for (call, result) in turn.tool_calls.iter().zip(results) {
                let content = match result {
                    Ok(value) => value.to_string(),
                    Err(error) => json!({"error": error.to_string()}).to_string(),
                };
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": content}));
            }
        }
        Err(failed(
            "max_turns",
            format!(
                "the model kept calling tools for {} turns without answering",
                self.config.max_turns
            ),
        ))
    }
}

impl LlmAgent {
    /// One model call, retried while nothing has reached the user yet.
    async fn turn(
        &self,
        ctx: &AgentContext,
        messages: &[Value],
        tools: &[Value],
    ) -> Result<Turn, AgentError> {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools.to_vec());
        }
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut attempt = 0;
        loop {
            let mut request = self.client.post(&url).json(&body);
            if let Some(key) = &self.config.api_key {
                request = request.bearer_auth(key.expose());
            }
            let retry_after = match request.send().await {
                Err(error) => {
                    let code = if error.is_timeout() {
                        "model_timeout"
                    } else {
                        "model_unreachable"
                    };
                    Retry::Wait(
                        None,
                        failed(
                            code,
                            format!("cannot reach the model server: {}", error.without_url()),
                        ),
                    )
                }
                Ok(response) => match response.status().as_u16() {
                    200..=299 => return self.read_stream(ctx, response).await,
                    401 | 403 => {
                        return Err(failed(
                            "bad_api_key",
                            format!(
                                "the model server refused the API key (HTTP {})",
                                response.status().as_u16()
                            ),
                        ));
                    }
                    429 => {
                        let wait = retry_after(&response);
                        Retry::Wait(
                            wait,
                            failed(
                                "rate_limited",
                                "the model server is rate limiting this key (HTTP 429)",
                            ),
                        )
                    }
                    code @ 500..=599 => Retry::Wait(
                        None,
                        failed(
                            "server_error",
                            format!("the model server failed (HTTP {code})"),
                        ),
                    ),
                    code => {
                        let text = response.text().await.unwrap_or_default();
                        let text: String = text.chars().take(300).collect();
                        return Err(failed(
                            "model_request_rejected",
                            format!("the model server rejected the request (HTTP {code}): {text}"),
                        ));
                    }
                },
            };
            let Retry::Wait(wait, error) = retry_after;
            if attempt >= self.config.max_retries {
                return Err(AgentError::new(
                    error.code,
                    format!(
                        "{} (gave up after {} retries)",
                        error.message, self.config.max_retries
                    ),
                ));
            }
            let backoff =
                wait.unwrap_or_else(|| self.config.initial_backoff * 2u32.saturating_pow(attempt));
            tracing::info!(code = %error.code, attempt, ?backoff, "retrying the model call");
            tokio::time::sleep(backoff.min(self.config.max_backoff)).await;
            attempt += 1;
        }
    }

    /// Reads one streamed completion, emitting batched answer chunks and reasoning.
    async fn read_stream(
        &self,
        ctx: &AgentContext,
        response: reqwest::Response,
    ) -> Result<Turn, AgentError> {
        let mut events = response.bytes_stream().eventsource();
        let mut turn = Turn::default();
        let mut pending = String::new();
        let mut reasoning = String::new();
        let mut last_flush = Instant::now();
        let mut calls: Vec<ToolCall> = Vec::new();
        let flush = |pending: &mut String, last_flush: &mut Instant| {
            if !pending.is_empty() {
                ctx.respond_chunk(std::mem::take(pending));
            }
            *last_flush = Instant::now();
        };
        let think = |reasoning: &mut String| {
            if !reasoning.trim().is_empty() {
                ctx.think(std::mem::take(reasoning).trim().to_owned());
            }
            reasoning.clear();
        };
        loop {
            let flush_at = last_flush + self.config.chunk_interval;
            let event = tokio::select! {
                event = events.next() => event,
                () = tokio::time::sleep_until(flush_at.into()), if !pending.is_empty() => {
                    flush(&mut pending, &mut last_flush);
                    continue;
                }
            };
            let event = match event {
                None => {
                    return Err(failed(
                        "stream_interrupted",
                        "the model's stream ended before it finished ([DONE] never came)",
                    ));
                }
                Some(Err(error)) => {
                    flush(&mut pending, &mut last_flush);
                    let timed_out = matches!(
                        &error,
                        eventsource_stream::EventStreamError::Transport(e) if e.is_timeout()
                    );
                    return Err(if timed_out {
                        failed(
                            "model_timeout",
                            format!(
                                "the model took longer than {} s to answer",
                                self.config.request_timeout.as_secs_f64()
                            ),
                        )
                    } else {
                        failed(
                            "stream_interrupted",
                            format!("the model's stream broke off: {error}"),
                        )
                    });
                }
                Some(Ok(event)) => event,
            };
            if event.data.trim() == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(&event.data).map_err(|e| {
                failed(
                    "malformed_stream",
                    format!("the model sent a chunk that is not JSON ({e})"),
                )
            })?;
            if let Some(error) = chunk.get("error") {
                return Err(failed(
                    "server_error",
                    format!("the model server reported an error: {error}"),
                ));
            }
            if chunk.get("usage").is_some_and(|u| !u.is_null()) {
                turn.usage = chunk.get("usage").cloned();
            }
            let Some(choice) = chunk["choices"].get(0) else {
                continue;
            };
            let delta = &choice["delta"];
            if !delta.is_object() && !delta.is_null() {
                return Err(failed(
                    "malformed_stream",
                    "the model sent a delta that is not an object",
                ));
            }
            for key in ["reasoning_content", "reasoning"] {
                if let Some(text) = delta[key].as_str() {
                    reasoning.push_str(text);
                }
            }
            if let Some(text) = delta["content"].as_str() {
                think(&mut reasoning);
                turn.content.push_str(text);
                pending.push_str(text);
                if pending.chars().count() >= self.config.chunk_max_chars
                    || last_flush.elapsed() >= self.config.chunk_interval
                {
                    flush(&mut pending, &mut last_flush);
                }
            }
            if let Some(pieces) = delta["tool_calls"].as_array() {
                think(&mut reasoning);
                for piece in pieces {
                    merge_tool_call(&mut calls, piece)?;
                }
            }
        }
        think(&mut reasoning);
        flush(&mut pending, &mut last_flush);
        for (i, call) in calls.iter_mut().enumerate() {
            if call.name.is_empty() {
                return Err(failed(
                    "malformed_stream",
                    format!("tool call {i} has no function name"),
                ));
            }
            if call.id.is_empty() {
                call.id = format!("call_{i}");
            }
        }
        turn.tool_calls = calls;
        Ok(turn)
    }
}

enum Retry {
    Wait(Option<Duration>, AgentError),
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Folds one streamed piece of a tool call into `calls` (pieces of a call share its `index`).
fn merge_tool_call(calls: &mut Vec<ToolCall>, piece: &Value) -> Result<(), AgentError> {
    let index = piece["index"]
        .as_u64()
        .unwrap_or(calls.len().saturating_sub(1) as u64) as usize;
    if index > 64 {
        return Err(failed(
            "malformed_stream",
            format!("tool call index {index} is out of range"),
        ));
    }
    while calls.len() <= index {
        calls.push(ToolCall::default());
    }
    let call = &mut calls[index];
    if let Some(id) = piece["id"].as_str() {
        call.id = id.to_owned();
    }
    let function = piece
        .get("function")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    if let Some(name) = function.get("name").and_then(Value::as_str) {
        call.name.push_str(name);
    }
    if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
        call.arguments.push_str(arguments);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = LlmConfig {
            api_key: Some(Secret::new("sk-live-123")),
            ..LlmConfig::new("http://x/v1", "m")
        };
        let shown = format!("{config:?} {}", Secret::new("sk-live-123"));
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn config_validation_table() {
        let check = |url: &str, model: &str, expected: Result<(), &str>| {
            let got = LlmConfig::new(url, model).validate();
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
                _ => panic!("{url} {model}: expected {expected:?}, got {got:?}"),
            }
        };
        check("https://api.openai.com/v1", "gpt-4o-mini", Ok(()));
        check("http://localhost:11434/v1/", "llama3", Ok(()));
        check(
            "localhost:11434",
            "llama3",
            Err("must start with http:// or https://"),
        );
        check("http://x/v1", " ", Err("model name is empty"));
    }

    #[test]
    fn tool_call_pieces_merge_by_index() {
        let mut calls = Vec::new();
        for piece in [
            json!({"index": 0, "id": "call_a", "function": {"name": "calc", "arguments": "{\"expr"}}),
            json!({"index": 1, "id": "call_b", "function": {"name": "time", "arguments": "{}"}}),
            json!({"index": 0, "function": {"arguments": "ession\":\"1+1\"}"}}),
        ] {
            merge_tool_call(&mut calls, &piece).unwrap();
        }
        assert_eq!(
            calls[0],
            ToolCall {
                id: "call_a".into(),
                name: "calc".into(),
                arguments: "{\"expression\":\"1+1\"}".into()
            }
        );
        assert_eq!(calls[1].name, "time");
        assert!(merge_tool_call(&mut calls, &json!({"index": 1000})).is_err());
    }

    #[test]
    fn usage_sums_over_turns() {
        let mut total = None;
        add_usage(
            &mut total,
            Some(json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})),
        );
        add_usage(&mut total, None);
        add_usage(
            &mut total,
            Some(json!({"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25})),
        );
        assert_eq!(
            total,
            Some(json!({"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}))
        );
    }
}
