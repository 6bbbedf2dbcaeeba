//! [`LlmAgent`] and its run: the tool-calling loop of turns.
//!
//! Each turn sends the conversation and the registry's tools to the model. When the model
//! asks for tools, they run at once through the context's tool dispatcher (which emits their
//! `tool_executing` / `tool_completed` events) and their results join the conversation for
//! the next turn. The run ends with the first turn that calls no tools, or fails with
//! `max_turns`. Before each model call the run takes the messages the user sent into its
//! thread meanwhile (`multitask` `steer`, `message_received`); one that came while the model
//! gave its answer gets an answer of its own, in the same run.

use std::fmt;
use std::sync::Arc;

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, CallEstimate, CallUsage, Reservation,
    ToolError, Turn,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::RunFailure;
use crate::model_client::ModelClient;
use crate::stats::ModelStats;
use crate::stream::ToolCall;
use crate::{LlmConfig, LlmError};

/// The `llm` agent. Cheap to make per run: it shares the HTTP client and the settings.
#[derive(Clone)]
pub struct LlmAgent {
    model: ModelClient,
}

impl fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmAgent")
            .field("config", self.model.config())
            .finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// An agent for `config` (which the caller has validated).
    pub(crate) fn new(config: LlmConfig) -> Result<Self, LlmError> {
        Ok(Self {
            model: ModelClient::new(config)?,
        })
    }

    /// What the agent's model calls came to (shared by its clones).
    pub fn stats(&self) -> Arc<ModelStats> {
        Arc::clone(self.model.stats())
    }

    /// The agent's settings.
    pub(crate) fn config(&self) -> &LlmConfig {
        self.model.config()
    }

    /// The turn loop: runs the last turn's tool calls, then calls the model, until it
    /// answers without tool calls. A turn whose calls wait for approval pauses the run with
    /// the conversation so far.
    async fn converse(
        &self,
        ctx: &AgentContext,
        mut talk: Conversation,
    ) -> Result<AgentOutput, AgentError> {
        let max_turns = self.config().max_turns;
        let tools = tool_specs(ctx);
        // The run's answers: one, or more when the user added messages after one.
        let mut answered: Vec<String> = Vec::new();
        loop {
            if !talk.calls.is_empty() {
                run_tools(ctx, &mut talk.calls).await;
                if talk.calls.iter().any(|c| c.result.is_none()) {
                    return Err(ctx.pause(keep(&talk)?));
                }
                talk.messages.extend(
                    talk.calls.drain(..).map(
                        |c| json!({"role": "tool", "tool_call_id": c.id, "content": c.result}),
                    ),
                );
            }
            if talk.turns >= max_turns {
                return Err(RunFailure::MaxTurns(max_turns).into());
            }
            // The safe point: messages the user sent meanwhile join the conversation here.
            take_messages(ctx, &mut talk.messages);
            let reservation = self.reserve(ctx, &talk, &tools).await?;
            talk.turns += 1;
            let answer_cap = reservation.max_answer_tokens();
            let turn = self
                .model
                .complete(ctx, (&talk.messages, &tools), answer_cap)
                .await?;
            // Counted once per call, as soon as it answered (a later failure keeps it); a
            // call that failed let its reservation go (dropped above).
            let counted = turn
                .usage
                .as_ref()
                .and_then(|usage| CallUsage::from_openai(&self.config().model, usage));
            if let Some(usage) = counted {
                reservation.settle(usage).await;
            }
            add_usage(&mut talk.usage, turn.usage);
            if turn.tool_calls.is_empty() {
                answered.push(turn.content);
                // A message that came while the model answered gets an answer of its own in
                // this run (while turns remain; else it starts a run of its own).
                let added = if talk.turns < max_turns {
                    ctx.take_messages()
                } else {
                    Vec::new()
                };
                if !added.is_empty() {
                    let last = answered.last().cloned().unwrap_or_default();
                    talk.messages
                        .push(json!({"role": "assistant", "content": last}));
                    talk.messages.extend(
                        added
                            .into_iter()
                            .map(|message| json!({"role": "user", "content": message})),
                    );
                    ctx.respond_chunk("\n\n");
                    continue;
                }
                return Ok(AgentOutput {
                    result: Value::String(answered.join("\n\n")),
                    usage: talk.usage,
                });
            }
            talk.messages
                .push(assistant_message(turn.content, &turn.tool_calls));
            talk.calls = turn
                .tool_calls
                .into_iter()
                .map(|c| Call {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                    result: None,
                })
                .collect();
        }
    }
}

impl LlmAgent {
    /// Reserves the next call's worst case against the user's budget; a budget used up pauses
    /// the run here (the error to return), with the conversation so far.
    async fn reserve(
        &self,
        ctx: &AgentContext,
        talk: &Conversation,
        tools: &[Value],
    ) -> Result<Reservation, AgentError> {
        let estimate = CallEstimate {
            model: self.config().model.clone(),
            prompt_tokens: prompt_tokens(&talk.messages, tools),
            max_answer_tokens: u64::from(self.config().max_tokens),
        };
        match ctx.reserve_call(&estimate).await {
            Ok(reservation) => Ok(reservation),
            Err(stop) => Err(ctx.wait_for_budget(keep(talk)?, stop)),
        }
    }
}

/// A run's conversation: what the model has been sent and has answered, and the calls of
/// its last turn. It is all a paused run keeps: resuming it goes on from here, never
/// calling the model again for a turn it already answered.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversation {
    /// The Chat Completions messages so far.
    messages: Vec<Value>,
    /// Token usage of the turns so far.
    usage: Option<Value>,
    /// Model calls made.
    turns: u32,
    /// The last turn's tool calls, while their results are not all in the conversation.
    calls: Vec<Call>,
}

/// One tool call of a turn and, once it is in, its result as the model reads it.
#[derive(Debug, Serialize, Deserialize)]
struct Call {
    id: String,
    name: String,
    arguments: String,
    /// `None` while it waits for approval.
    result: Option<String>,
}

#[async_trait]
impl Agent for LlmAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let messages = opening_messages(
            self.config().system_prompt.as_deref(),
            &input.history,
            input.message,
        );
        let talk = Conversation {
            messages,
            ..Conversation::default()
        };
        self.converse(ctx, talk).await
    }

    fn can_pause(&self) -> bool {
        true
    }

    fn can_steer(&self) -> bool {
        true
    }

    async fn resume(
        &self,
        ctx: &AgentContext,
        _input: AgentInput,
        state: Value,
    ) -> Result<AgentOutput, AgentError> {
        let talk: Conversation = serde_json::from_value(state).map_err(|e| {
            AgentError::new(
                "bad_state",
                format!("the paused conversation cannot be read: {e}"),
            )
        })?;
        self.converse(ctx, talk).await
    }
}

/// The conversation as a paused run keeps it.
fn keep(talk: &Conversation) -> Result<Value, AgentError> {
    serde_json::to_value(talk)
        .map_err(|e| AgentError::new("pause_failed", format!("cannot keep the conversation: {e}")))
}

/// The tokens of a request's messages and tools, estimated on the high side from their
/// JSON text (what the reservation before a call counts).
fn prompt_tokens(messages: &[Value], tools: &[Value]) -> u64 {
    let bytes = |values: &[Value]| serde_json::to_string(values).map_or(0, |text| text.len());
    agent_registry::estimate_tokens(bytes(messages) + bytes(tools))
}

/// The registry's tools as Chat Completions `function` tools.
fn tool_specs(ctx: &AgentContext) -> Vec<Value> {
    ctx.tools()
        .into_iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect()
}

/// The conversation before the first turn: the system prompt, if any, the thread's earlier
/// turns (each the user's message and the final answer), and the user's message.
fn opening_messages(system_prompt: Option<&str>, history: &[Turn], message: String) -> Vec<Value> {
    let mut messages = Vec::new();
    if let Some(system) = system_prompt {
        messages.push(json!({"role": "system", "content": system}));
    }
    for turn in history {
        messages.push(json!({"role": "user", "content": turn.user}));
        messages.push(json!({"role": "assistant", "content": turn.assistant}));
    }
    messages.push(json!({"role": "user", "content": message}));
    messages
}

/// The model's own turn as the next request repeats it: its text (null when it sent none)
/// and the tool calls it made.
fn assistant_message(content: String, calls: &[ToolCall]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    let content = if content.is_empty() {
        Value::Null
    } else {
        Value::String(content)
    };
    json!({"role": "assistant", "content": content, "tool_calls": calls})
}

/// Runs a turn's calls that have no result yet, at once, and fills in their results as the
/// model reads them. A failed call gets an `{"error": ...}` result for the model to read,
/// not a failed run; a call held for approval stays without one.
async fn run_tools(ctx: &AgentContext, calls: &mut [Call]) {
    let open: Vec<&mut Call> = calls.iter_mut().filter(|c| c.result.is_none()).collect();
    let results = futures::future::join_all(open.iter().map(|call| {
        // Arguments that are not JSON still reach the tool, as a string, so its argument
        // check fails with an `invalid arguments` result the model can read and correct.
        let args = serde_json::from_str(&call.arguments)
            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
        ctx.call_tool_with_id(&call.id, &call.name, args)
    }))
    .await;
    for (call, result) in open.into_iter().zip(results) {
        call.result = match result {
            Ok(value) => Some(value.to_string()),
            Err(ToolError::AwaitingApproval) => None,
            Err(error) => Some(json!({"error": error.to_string()}).to_string()),
        };
    }
}

/// Adds the messages the user sent into the thread while the run went (`multitask` `steer`)
/// to the conversation as user turns.
fn take_messages(ctx: &AgentContext, messages: &mut Vec<Value>) {
    messages.extend(
        ctx.take_messages()
            .into_iter()
            .map(|message| json!({"role": "user", "content": message})),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_turns_come_before_the_message() {
        let history = [Turn {
            user: "What is 12*7?".into(),
            assistant: "84".into(),
        }];
        let roles = |messages: Vec<Value>| -> Vec<(String, String)> {
            messages
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().to_owned(),
                        m["content"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
                .collect()
        };
        assert_eq!(
            roles(opening_messages(
                Some("be brief"),
                &history,
                "and 12*8?".into()
            )),
            pairs(&[
                ("system", "be brief"),
                ("user", "What is 12*7?"),
                ("assistant", "84"),
                ("user", "and 12*8?"),
            ])
        );
        assert_eq!(
            roles(opening_messages(None, &[], "hi".into())),
            pairs(&[("user", "hi")])
        );
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

    #[test]
    fn assistant_turns_repeat_text_and_calls() {
        let calls = [ToolCall {
            id: "c1".into(),
            name: "calc".into(),
            arguments: "{}".into(),
        }];
        let expected_calls = json!([{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]);
        let check = |content: &str, expected: Value| {
            assert_eq!(
                assistant_message(content.to_owned(), &calls),
                json!({"role": "assistant", "content": expected, "tool_calls": expected_calls})
            );
        };
        check("", Value::Null);
        check("Let me compute.", json!("Let me compute."));
    }
}
