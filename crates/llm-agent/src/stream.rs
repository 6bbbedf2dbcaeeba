//! Reading one streamed completion (server-sent events) into a [`Turn`].
//!
//! While the stream is read, its text reaches the user through a [`Relay`]: answer text as
//! `agent_response_chunk` events, batched by size ([`LlmConfig::chunk_max_chars`]) or by
//! time ([`LlmConfig::chunk_interval`]) so a fast model does not flood the socket, and
//! reasoning (`reasoning_content` or `reasoning` deltas) as one `agent_thinking` event before
//! the answer text or tool call that follows it. Tool calls arrive in pieces, several at once,
//! and are merged by their `index`. Only `[DONE]` ends a turn well: a stream that stops
//! without it is a failure.

use std::time::{Duration, Instant};

use agent_registry::AgentContext;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use secrets::{Scrubber, Site, StreamScrub};
use serde_json::{Map, Value};

use crate::LlmConfig;
use crate::error::RunFailure;

/// Tool call indexes above this are refused: the merge grows a list up to the index, and no
/// model sends that many calls in one turn.
const MAX_TOOL_CALL_INDEX: usize = 64;

/// One tool call a model asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// What one streamed turn produced.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    pub(crate) content: String,
    pub(crate) tool_calls: Vec<ToolCall>,
    pub(crate) usage: Option<Value>,
}

/// Reads `response`'s event stream to `[DONE]`, relaying its text to the user through `ctx`.
pub(crate) async fn read_turn(
    ctx: &AgentContext,
    config: &LlmConfig,
    response: reqwest::Response,
) -> Result<Turn, RunFailure> {
    let mut events = response.bytes_stream().eventsource();
    let mut relay = Relay::new(ctx, config);
    let mut turn = TurnBuilder::default();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep_until(relay.flush_at().into()), if relay.has_pending() => {
                relay.flush();
                continue;
            }
        };
        let event = match event {
            None => return Err(RunFailure::StreamEnded),
            Some(Err(error)) => {
                relay.flush();
                return Err(stream_failure(error, config.request_timeout));
            }
            Some(Ok(event)) => event,
        };
        if event.data.trim() == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(RunFailure::NotJson)?;
        turn.apply(&chunk, &mut relay)?;
    }
    relay.finish();
    turn.finish()
}

/// A broken stream: a timeout (the client's `request_timeout` ran out) or anything else.
fn stream_failure(error: EventStreamError<reqwest::Error>, timeout: Duration) -> RunFailure {
    match error {
        EventStreamError::Transport(e) if e.is_timeout() => RunFailure::StreamTimeout(timeout),
        error => RunFailure::StreamBroke(error),
    }
}

/// Sends a turn's text to the user while it streams.
struct Relay<'a> {
    ctx: &'a AgentContext,
    interval: Duration,
    max_chars: usize,
    /// Answer text not sent yet.
    pending: String,
    last_flush: Instant,
    /// Reasoning not sent yet.
    reasoning: String,
    /// The server's secrets, removed from the answer before it is sent.
    scrubber: &'a Scrubber,
    /// The end of the answer sent so far that could be the start of a secret, held back
    /// until the next chunk shows.
    scrub: StreamScrub,
}

impl<'a> Relay<'a> {
    fn new(ctx: &'a AgentContext, config: &'a LlmConfig) -> Self {
        Self {
            ctx,
            interval: config.chunk_interval,
            max_chars: config.chunk_max_chars,
            pending: String::new(),
            last_flush: Instant::now(),
            reasoning: String::new(),
            scrubber: &config.scrubber,
            scrub: StreamScrub::new(),
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When pending answer text is due, however little of it there is.
    fn flush_at(&self) -> Instant {
        self.last_flush + self.interval
    }

    fn reason(&mut self, text: &str) {
        self.reasoning.push_str(text);
    }

    /// Queues answer text, sending the batch once it is big enough or due.
    fn answer(&mut self, text: &str) {
        self.think();
        self.pending.push_str(text);
        if self.pending.chars().count() >= self.max_chars
            || self.last_flush.elapsed() >= self.interval
        {
            self.flush();
        }
    }

    /// Sends the reasoning gathered so far as one `agent_thinking` event, unless it is blank.
    fn think(&mut self) {
        if !self.reasoning.trim().is_empty() {
            self.ctx
                .think(std::mem::take(&mut self.reasoning).trim().to_owned());
        }
        self.reasoning.clear();
    }

    /// Sends the pending answer text as one `agent_response_chunk` event.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let clean = self.scrub.push(self.scrubber, Site::Events, &pending);
            self.send(clean);
        }
        self.last_flush = Instant::now();
    }

    /// Sends whatever is left at the end of the turn, held-back text included.
    fn finish(&mut self) {
        self.think();
        self.flush();
        let rest = self.scrub.finish(self.scrubber, Site::Events);
        self.send(rest);
    }

    fn send(&self, text: String) {
        if !text.is_empty() {
            self.ctx.respond_chunk(text);
        }
    }
}

/// A [`Turn`] being read.
#[derive(Debug, Default)]
struct TurnBuilder {
    content: String,
    calls: Vec<ToolCall>,
    usage: Option<Value>,
}

impl TurnBuilder {
    /// Folds one event's JSON into the turn, relaying its text.
    fn apply(&mut self, chunk: &Value, relay: &mut Relay<'_>) -> Result<(), RunFailure> {
        if let Some(error) = chunk.get("error") {
            return Err(RunFailure::ServerReported(error.clone()));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if !delta.is_object() && !delta.is_null() {
            return Err(RunFailure::DeltaNotObject);
        }
        for key in ["reasoning_content", "reasoning"] {
            if let Some(text) = delta[key].as_str() {
                relay.reason(text);
            }
        }
        if let Some(text) = delta["content"].as_str() {
            relay.answer(text);
            self.content.push_str(text);
        }
        if let Some(pieces) = delta["tool_calls"].as_array() {
            relay.think();
            for piece in pieces {
                merge_tool_call(&mut self.calls, piece)?;
            }
        }
        Ok(())
    }

    /// The finished turn: every tool call has a name, and an id (`call_<i>` if the model
    /// sent none, so each result can be paired with its call).
    fn finish(mut self) -> Result<Turn, RunFailure> {
        for (i, call) in self.calls.iter_mut().enumerate() {
            if call.name.is_empty() {
                return Err(RunFailure::ToolWithoutName(i));
            }
            if call.id.is_empty() {
                call.id = format!("call_{i}");
            }
        }
        Ok(Turn {
            content: self.content,
            tool_calls: self.calls,
            usage: self.usage,
        })
    }
}

/// Folds one streamed piece of a tool call into `calls` (pieces of a call share its `index`).
fn merge_tool_call(calls: &mut Vec<ToolCall>, piece: &Value) -> Result<(), RunFailure> {
    let index = piece["index"]
        .as_u64()
        .unwrap_or(calls.len().saturating_sub(1) as u64) as usize;
    if index > MAX_TOOL_CALL_INDEX {
        return Err(RunFailure::ToolIndexOutOfRange(index));
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
    use serde_json::json;

    use super::*;

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
    fn finished_tool_calls_have_names_and_ids() {
        let finish = |calls: Vec<ToolCall>| {
            TurnBuilder {
                calls,
                ..TurnBuilder::default()
            }
            .finish()
        };
        let named = |id: &str| ToolCall {
            id: id.into(),
            name: "calc".into(),
            arguments: String::new(),
        };
        let ids: Vec<String> = finish(vec![named("a"), named("")])
            .unwrap()
            .tool_calls
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["a", "call_1"]);
        let unnamed = finish(vec![named("a"), ToolCall::default()]).unwrap_err();
        assert_eq!(unnamed.to_string(), "tool call 1 has no function name");
    }
}
