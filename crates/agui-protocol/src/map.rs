//! The engine's events as AG-UI 1.0 events: one [`Mapper`] per run, fed the run's events (and
//! its sub-runs') in `seq` order, gives the AG-UI events to send for each.
//!
//! | engine event | AG-UI events |
//! |---|---|
//! | (run accepted) | `RUN_STARTED`, then `CUSTOM` `agent-engine.run` (run id, thread id, epoch, seq) |
//! | `agent_started` of a sub-run | `SUBAGENT_STARTED` (name: the agent, description: its message) |
//! | `agent_thinking` | `REASONING_START`, `REASONING_MESSAGE_START`, `REASONING_MESSAGE_CONTENT`, `REASONING_MESSAGE_END`, `REASONING_END` |
//! | `tool_executing` | `TOOL_CALL_START`, `TOOL_CALL_ARGS` (the arguments as JSON text), `TOOL_CALL_END` |
//! | `tool_completed` | `TOOL_CALL_RESULT` (the result as text; `metadata.agentEngine.isError`) |
//! | `agent_response_chunk` | `TEXT_MESSAGE_START` (first chunk of a message), `TEXT_MESSAGE_CONTENT` |
//! | `agent_completed` | `TEXT_MESSAGE_END` (or a whole text message for an answer that was not streamed), then `RUN_FINISHED` / `SUBAGENT_FINISHED` |
//! | `agent_error` | `RUN_ERROR` / `SUBAGENT_ERROR` with its code |
//! | `agent_cancelled` | `RUN_ERROR` / `SUBAGENT_ERROR` with code `cancelled` |
//! | `approval_requested` (the run paused) | `RUN_FINISHED` with outcome `{"type": "interrupt", "interrupts": [...]}` (one per waiting call, `interrupted`) |
//! | `approval_resolved` | nothing (a resumed run's response shows the decided calls' `TOOL_CALL_*`) |
//! | `message_received` (the run took a message sent while it ran) | `CUSTOM` `agent-engine.message_received` (value: `{message}`) |
//!
//! A sub-run's events carry `subagentRunId` (its run id). The first AG-UI event of each
//! engine event carries the engine event's time as `timestamp` (ms; the others of the same
//! engine event happened then too), and when the client asked for it
//! ([`Mapper::with_raw_events`]) every mapped event carries the engine's frame as `rawEvent`
//! (with its `seq`). `docs/agui.md` gives the inverse.

use std::collections::{HashMap, HashSet};

use agent_protocol::{AgentEvent, EventKind};
use serde_json::{Map, Value, json};

/// The client's own ids for the run (from `RunAgentInput`), echoed in the run's events.
#[derive(Debug, Clone)]
pub struct ClientIds {
    /// The client's `threadId`.
    pub thread_id: String,
    /// The client's `runId`.
    pub run_id: String,
}

/// Turns one run's engine events into AG-UI events.
#[derive(Debug)]
pub struct Mapper {
    ids: ClientIds,
    /// The top-level run (the engine's id).
    run_id: String,
    /// The text message open in each run (its message id), until the run's next non-chunk
    /// event closes it.
    open_text: HashMap<String, String>,
    /// The runs that streamed answer text (their answer is not sent again at their end).
    streamed: HashSet<String>,
    /// Message ids end with a counter: unique within the stream.
    next_id: u64,
    /// Whether mapped events carry the engine's frame as `rawEvent`.
    raw_events: bool,
}

impl Mapper {
    /// A mapper for the run `run_id` (the engine's id), answering with the client's `ids`.
    pub fn new(ids: ClientIds, run_id: &str) -> Self {
        Self {
            ids,
            run_id: run_id.to_owned(),
            open_text: HashMap::new(),
            streamed: HashSet::new(),
            next_id: 0,
            raw_events: false,
        }
    }

    /// Mapped events carry the engine's frame as `rawEvent` (`forwardedProps.rawEvent`).
    #[must_use]
    pub fn with_raw_events(mut self, on: bool) -> Self {
        self.raw_events = on;
        self
    }

    /// The events that open the stream once the run is accepted.
    pub fn started(&self, thread_id: &str, epoch: &str, seq: u64) -> Vec<Value> {
        vec![
            json!({"type": "RUN_STARTED", "threadId": self.ids.thread_id, "runId": self.ids.run_id,
                   "protocolVersion": "1.0"}),
            json!({"type": "CUSTOM", "name": "agent-engine.run", "value": {
                "run_id": self.run_id, "thread_id": thread_id, "epoch": epoch, "after_seq": seq}}),
        ]
    }

    /// The AG-UI events for `event` (of the run or one of its sub-runs); `raw` is the
    /// engine's frame, carried as `rawEvent`.
    pub fn map(&mut self, event: &AgentEvent, raw: &Value) -> Vec<Value> {
        let run = event.run_id.as_str();
        let sub = (run != self.run_id).then(|| run.to_owned());
        let mut out = Vec::new();
        if !matches!(event.kind, EventKind::AgentResponseChunk { .. }) {
            self.close_text(run, &mut out);
        }
        match &event.kind {
            EventKind::AgentStarted { message } => {
                if let Some(sub) = &sub {
                    out.push(json!({"type": "SUBAGENT_STARTED", "subagentRunId": sub,
                                    "name": &*event.agent_name, "description": message}));
                }
            }
            EventKind::AgentThinking { reasoning, .. } => {
                let id = self.message_id(run);
                out.push(json!({"type": "REASONING_START", "messageId": id}));
                out.push(json!({"type": "REASONING_MESSAGE_START", "messageId": id, "role": "reasoning"}));
                if !reasoning.is_empty() {
                    out.push(json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": id, "delta": reasoning}));
                }
                for kind in ["REASONING_MESSAGE_END", "REASONING_END"] {
                    out.push(json!({"type": kind, "messageId": id}));
                }
            }
            EventKind::ToolExecuting {
                tool_call_id,
                tool_name,
                arguments,
            } => {
                out.push(json!({"type": "TOOL_CALL_START", "toolCallId": tool_call_id, "toolCallName": tool_name}));
                out.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": tool_call_id, "delta": arguments.to_string()}));
                out.push(json!({"type": "TOOL_CALL_END", "toolCallId": tool_call_id}));
            }
            EventKind::ToolCompleted {
                tool_call_id,
                result,
                is_error,
                duration_ms,
                ..
            } => out.push(
                json!({"type": "TOOL_CALL_RESULT", "messageId": self.message_id(run),
                "toolCallId": tool_call_id, "content": text_of(result), "role": "tool",
                "metadata": {"agentEngine": {"isError": is_error, "durationMs": duration_ms}}}),
            ),
            EventKind::AgentResponseChunk { delta } => self.chunk(run, delta, &mut out),
            EventKind::AgentCompleted { result, usage, .. } => {
                self.completed(run, sub.as_deref(), result, usage.as_ref(), &mut out);
            }
            EventKind::AgentError { code, message } => {
                out.push(failed(sub.as_deref(), code, message))
            }
            EventKind::AgentCancelled { reason } => {
                out.push(failed(sub.as_deref(), "cancelled", reason))
            }
            // Mapped when the run's response ends (the interrupt outcome of `RUN_FINISHED`).
            EventKind::ApprovalRequested { .. } | EventKind::ApprovalResolved { .. } => {}
            // The run took a message (`steer`), or waits for its budget (the response stays
            // open: the run's events go on in it once the budget allows).
            EventKind::MessageReceived { .. } | EventKind::BudgetExhausted { .. } => {
                out.extend(custom(&event.kind));
            }
        }
        let at = unix_ms(event);
        for (index, mapped) in out.iter_mut().enumerate() {
            if let Some(sub) = &sub
                && !mapped["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SUBAGENT_"))
            {
                mapped["subagentRunId"] = json!(sub);
            }
            // The AG-UI events of one engine event happened at its time: the first says when.
            if index == 0 {
                mapped["timestamp"] = json!(at);
            }
            if self.raw_events {
                mapped["rawEvent"] = raw.clone();
            }
        }
        out
    }

    /// The end of the response of a run that paused: open text closed, then `RUN_FINISHED`
    /// with the interrupt outcome.
    pub fn interrupted(&mut self, interrupts: Vec<Value>, at_ms: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let run = self.run_id.clone();
        self.close_text(&run, &mut out);
        out.push(
            json!({"type": "RUN_FINISHED", "threadId": self.ids.thread_id,
                        "runId": self.ids.run_id, "timestamp": at_ms,
                        "outcome": {"type": "interrupt", "interrupts": interrupts}}),
        );
        out
    }

    /// A message id unique in the thread: the random part of the run id's ULID (80 bits; the
    /// whole id for an id of another form) and a counter. Short, as it is in most events.
    fn message_id(&mut self, run: &str) -> String {
        self.next_id += 1;
        let ulid = run
            .strip_prefix("run_")
            .filter(|u| u.len() == 26 && u.is_ascii());
        let unique = ulid.map_or(run, |u| &u[10..]);
        format!("{unique}.{}", self.next_id)
    }

    fn chunk(&mut self, run: &str, delta: &str, out: &mut Vec<Value>) {
        if delta.is_empty() {
            return;
        }
        self.streamed.insert(run.to_owned());
        let id = match self.open_text.get(run) {
            Some(id) => id.clone(),
            None => {
                let id = self.message_id(run);
                out.push(
                    json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}),
                );
                self.open_text.insert(run.to_owned(), id.clone());
                id
            }
        };
        out.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": delta}));
    }

    fn close_text(&mut self, run: &str, out: &mut Vec<Value>) {
        if let Some(id) = self.open_text.remove(run) {
            out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
        }
    }

    /// A run's end; an answer that was not streamed becomes one whole text message first.
    fn completed(
        &mut self,
        run: &str,
        sub: Option<&str>,
        result: &Value,
        usage: Option<&Value>,
        out: &mut Vec<Value>,
    ) {
        if let (false, Some(answer)) = (self.streamed.contains(run), result.as_str()) {
            self.chunk(run, answer, out);
            self.close_text(run, out);
        }
        let mut end = match sub {
            Some(sub) => json!({"type": "SUBAGENT_FINISHED", "subagentRunId": sub,
                               "outcome": {"type": "success"}}),
            None => json!({"type": "RUN_FINISHED", "threadId": self.ids.thread_id,
                           "runId": self.ids.run_id, "outcome": {"type": "success"}}),
        };
        end["result"] = result.clone();
        if let (None, Some(usage)) = (sub, usage) {
            end["usage"] = json!([token_usage(usage)]);
        }
        out.push(end);
    }
}

/// `RUN_ERROR` for the run, `SUBAGENT_ERROR` for a sub-run.
fn failed(sub: Option<&str>, code: &str, message: &str) -> Value {
    match sub {
        Some(sub) => {
            json!({"type": "SUBAGENT_ERROR", "subagentRunId": sub, "code": code, "message": message})
        }
        None => json!({"type": "RUN_ERROR", "code": code, "message": message}),
    }
}

/// A tool's result as the text AG-UI carries: a string as it is, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The `llm` agent's usage (OpenAI's names) as AG-UI's `TokenUsage`.
fn token_usage(usage: &Value) -> Value {
    let mut out = Map::new();
    for (ours, theirs) in [
        ("prompt_tokens", "inputTokens"),
        ("completion_tokens", "outputTokens"),
        ("total_tokens", "totalTokens"),
    ] {
        if let Some(n) = usage.get(ours).and_then(Value::as_u64) {
            out.insert(theirs.to_owned(), json!(n));
        }
    }
    Value::Object(out)
}

/// The event's time in milliseconds since the Unix epoch.
fn unix_ms(event: &AgentEvent) -> u64 {
    event
        .timestamp
        .as_system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An engine event AG-UI has no type for, as a `CUSTOM` event named `agent-engine.<type>`
/// whose value is the event's data.
fn custom(kind: &EventKind) -> Option<Value> {
    let mut event = serde_json::to_value(kind).ok()?;
    Some(
        json!({"type": "CUSTOM", "name": format!("agent-engine.{}", kind.type_name()),
                "value": event["data"].take()}),
    )
}

#[cfg(test)]
mod tests;
