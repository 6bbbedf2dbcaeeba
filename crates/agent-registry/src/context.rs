//! [`AgentContext`]: what an agent sees of its run, and the tool dispatcher.
//!
//! The engine builds one context per run from an `AgentContextParts` (`context_parts.rs`).
//! Everything an agent emits goes through it, stamped with the run's [`RunScope`], to the
//! user of the run's [`UserExecutionContext`]; an agent has no way to emit for another user
//! or another run.
//!
//! Every tool call goes through [`AgentContext::call_tool_with_id`]: built-in tools, a
//! model's calls, MCP tools. It checks the arguments against the tool's schema first
//! ([`crate::schema`]), and bounds the size of what comes back ([`crate::bound`]).
//!
//! A context holds the registry's tools (a share of its [`ToolTable`]), not the registry: the
//! registry stores agents and an agent is lent a context, so this module names neither the
//! registry nor the `Agent` trait, and both of them may name it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use core_context::approval::{Decision, PendingCall};
use core_context::budget::Exhausted;
use core_context::event::EventKind;
use core_context::redact::{self, Limits};
use core_context::{CancellationToken, EventSink, RunScope, UserExecutionContext};
use futures::FutureExt;
use serde_json::Value;
use tracing::Instrument;

use crate::approval::{ApprovalGate, DecidedCall};
use crate::bound;
use crate::inbox::Inbox;
use crate::meter::{Pause, UsageMeter};
use crate::run_types::{AgentError, AgentInput, AgentOutput, panic_message};
use crate::tool::ToolError;
use crate::tool_table::{Resolved, ToolInfo, ToolTable};

/// Settings of the tool dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchConfig {
    /// Time limit of a tool call whose tool does not set its own.
    pub default_tool_timeout: Duration,
    /// Bounds for arguments and results in events.
    pub redaction: Limits,
    /// The largest tool result, in bytes of its JSON text, that the agent (and so the model)
    /// and the events get whole; a larger one is replaced by a marked preview of this size.
    pub max_result_bytes: usize,
}

/// [`DispatchConfig::max_result_bytes`] by default: 256 KiB.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 * 1024;

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            default_tool_timeout: Duration::from_secs(20),
            redaction: Limits::default(),
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

/// What a run's context is made of: the engine's `AgentContextParts` with the registry
/// narrowed to its tools (`context_parts.rs` does the narrowing), so this module never names
/// the registry.
pub(crate) struct RunParts {
    pub(crate) user_context: UserExecutionContext,
    pub(crate) scope: RunScope,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) tools: Arc<ToolTable>,
    pub(crate) cancellation: CancellationToken,
    pub(crate) dispatch: DispatchConfig,
    pub(crate) sub_runner: Option<Arc<dyn SubRunner>>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) approvals: ApprovalGate,
    pub(crate) steps_taken: u32,
    pub(crate) inbox: Option<Inbox>,
    pub(crate) meter: Option<Arc<dyn UsageMeter>>,
}

/// Runs another agent as a sub-run of a run: a run of its own, with its own lifecycle and a
/// `parent_run_id`, under a child context of the parent. Implemented by the engine.
#[async_trait::async_trait]
pub trait SubRunner: Send + Sync {
    /// Runs `agent` on `input` as a sub-run of `parent`'s run and returns its result.
    async fn run_sub_agent(
        &self,
        parent: &AgentContext,
        agent: &str,
        input: AgentInput,
    ) -> Result<AgentOutput, AgentError>;
}

/// An agent's view of its run. Lent to `Agent::run`; not `Clone`, so it cannot escape the
/// run.
pub struct AgentContext {
    parts: RunParts,
    steps: AtomicU32,
    emit_failures: AtomicU64,
    /// Calls held for approval since the run (or its resumption) began.
    held: Mutex<Vec<PendingCall>>,
    /// The state the agent paused with ([`pause`](Self::pause)), and, for a pause for the
    /// user's budget, what the budget says (`meter.rs`).
    paused: Mutex<Option<(Value, Option<Exhausted>)>>,
}

impl AgentContext {
    /// Builds a run's context from its parts; `AgentContext::new` (the engine's way in) calls
    /// it.
    pub(crate) fn from_parts(parts: RunParts) -> Self {
        Self {
            steps: AtomicU32::new(parts.steps_taken),
            parts,
            emit_failures: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
            paused: Mutex::new(None),
        }
    }

    /// Takes the messages the user sent into the thread since the run began (or since the
    /// last call), oldest first, each announced with `message_received` here: call it where
    /// the agent can take new input (the `llm` agent: before each model call). Empty for a
    /// run without an inbox (a sub-run, or an agent that does not take messages).
    pub fn take_messages(&self) -> Vec<String> {
        let Some(inbox) = &self.parts.inbox else {
            return Vec::new();
        };
        let messages = inbox.take();
        for message in &messages {
            self.emit(EventKind::MessageReceived {
                message: message.clone(),
            });
        }
        messages
    }

    /// The run's meter, if the server counts usage; `meter.rs` builds on it.
    pub(crate) fn meter(&self) -> Option<&Arc<dyn UsageMeter>> {
        self.parts.meter.as_ref()
    }

    /// The run's user context.
    pub fn user_context(&self) -> &UserExecutionContext {
        &self.parts.user_context
    }

    /// The run's identity.
    pub fn scope(&self) -> &RunScope {
        &self.parts.scope
    }

    /// The run's cancellation token. Long agent work should select on
    /// [`cancelled`](CancellationToken::cancelled) so a cancel takes effect at once.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.parts.cancellation
    }

    /// When the run times out, if it has a limit. Sub-runs never outlive it; agents can use
    /// it to bound their own waits (an HTTP request, say).
    pub fn deadline(&self) -> Option<Instant> {
        self.parts.deadline
    }

    /// Whether the run was cancelled (or timed out, or the engine is shutting down).
    pub fn is_cancelled(&self) -> bool {
        self.parts.cancellation.is_cancelled()
    }

    /// Events this context failed to hand to its sink (each one was also logged, and the
    /// first stopped the run).
    pub fn emit_failures(&self) -> u64 {
        self.emit_failures.load(Ordering::Relaxed)
    }

    /// The tools an agent can call, with their schemas (what a model is offered).
    pub fn tools(&self) -> Vec<ToolInfo> {
        self.parts.tools.list_tools()
    }

    /// Hands part of the work to `agent` as a sub-run: its events carry this run as
    /// `parent_run_id`, it ends (with its own terminal event) before this run does, and
    /// cancelling this run cancels it. A cancelled sub-run returns an error with code
    /// `cancelled`.
    pub async fn run_sub_agent(
        &self,
        agent: &str,
        input: AgentInput,
    ) -> Result<AgentOutput, AgentError> {
        match &self.parts.sub_runner {
            Some(runner) => runner.run_sub_agent(self, agent, input).await,
            None => Err(AgentError::new(
                "sub_runs_unavailable",
                "this run's context cannot start sub-runs",
            )),
        }
    }

    /// Emits `agent_thinking` with the next step number.
    pub fn think(&self, reasoning: impl Into<String>) {
        let step = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
        self.emit(EventKind::AgentThinking {
            reasoning: reasoning.into(),
            step,
        });
    }

    /// Emits a piece of the streamed answer (`agent_response_chunk`).
    pub fn respond_chunk(&self, delta: impl Into<String>) {
        self.emit(EventKind::AgentResponseChunk {
            delta: delta.into(),
        });
    }

    /// Calls tool `name` with `args` under a fresh tool call id. See
    /// [`call_tool_with_id`](Self::call_tool_with_id).
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let id = format!("call_{}", ulid::Ulid::new());
        self.call_tool_with_id(&id, name, args).await
    }

    /// Calls tool `name` with `args`, using `tool_call_id` (a model's own call id, say).
    ///
    /// Emits `tool_executing` before and exactly one `tool_completed` after, whatever
    /// happens: success, failure, unknown tool, arguments that do not fit the tool's schema
    /// (the tool is not called), timeout, cancellation, a panicking tool, or the run dropping
    /// this call half-way (then the completion says the call was abandoned). A result (or a
    /// failure's message) over [`DispatchConfig::max_result_bytes`] comes back, and is
    /// shown, truncated.
    ///
    /// A call that needs a person's approval (the server's `--approve-tools`, or the tool's
    /// own [`Tool::needs_approval`](crate::Tool::needs_approval)) emits nothing yet: it is
    /// held and returns [`ToolError::AwaitingApproval`], and the agent ends its turn with
    /// [`pause`](Self::pause). In a resumed run, a call with a held call's id gets the
    /// decision: the tool runs (with the edited arguments for `edit`; its result is recorded
    /// under the id, and a call already recorded is not run again), or the call completes as
    /// rejected, expired, or with the person's response as its result.
    pub async fn call_tool_with_id(
        &self,
        tool_call_id: &str,
        name: &str,
        args: Value,
    ) -> Result<Value, ToolError> {
        let gate = &self.parts.approvals;
        if let Some(decided) = gate.decided.get(tool_call_id) {
            return self.call_decided(tool_call_id, decided).await;
        }
        if self.needs_approval(name, &args) {
            if !gate.can_pause {
                let why =
                    "a sub-run, an agent that cannot pause, or a server that keeps no paused runs";
                let error = ToolError::ApprovalUnavailable(why.to_owned());
                return self.complete_unrun(tool_call_id, name, &args, Err(error));
            }
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(PendingCall {
                    tool_call_id: tool_call_id.to_owned(),
                    tool_name: name.to_owned(),
                    arguments: args,
                });
            return Err(ToolError::AwaitingApproval);
        }
        self.run_call(tool_call_id, name, args).await
    }

    /// Pauses the run: the calls held since the run (or its resumption) began wait for a
    /// person, and `state` is what [`Agent::resume`](crate::Agent::resume) gets to go on.
    /// Return the error it gives from `run` (or `resume`): the engine saves the state, emits
    /// `approval_requested` for each held call, and ends the run's task without a terminal
    /// event. Without held calls this is an error of its own (`nothing_to_approve`).
    pub fn pause(&self, state: Value) -> AgentError {
        if self.held_calls().is_empty() {
            return AgentError::new(
                "nothing_to_approve",
                "the agent paused its run, but no tool call waits for approval",
            );
        }
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = Some((state, None));
        AgentError::new("paused", "the run waits for a person's approval")
    }

    /// The calls held for approval since the run (or its resumption) began.
    pub fn held_calls(&self) -> Vec<PendingCall> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a pause for the user's budget (`meter.rs`'s `wait_for_budget`).
    pub(crate) fn pause_for_budget(&self, state: Value, exhausted: Exhausted) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((state, Some(exhausted)));
    }

    /// The pause the agent asked for, if it did: for approval (it held calls), or for the
    /// user's budget. For the engine, once the agent returned.
    pub fn take_pause(&self) -> Option<Pause> {
        let (state, budget) = self
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let steps = self.steps.load(Ordering::Relaxed);
        if let Some(exhausted) = budget {
            return Some(Pause::Budget {
                state,
                exhausted,
                steps,
            });
        }
        let calls = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        (!calls.is_empty()).then_some(Pause::Approval {
            state,
            calls,
            steps,
        })
    }

    /// Whether a call of tool `name` with `args` waits for a person.
    fn needs_approval(&self, name: &str, args: &Value) -> bool {
        self.parts.approvals.policy.covers(name)
            || self
                .parts
                .tools
                .resolve(name)
                .is_some_and(|resolved| resolved.tool.needs_approval(args))
    }

    /// A held call, decided: see [`call_tool_with_id`](Self::call_tool_with_id).
    async fn call_decided(
        &self,
        tool_call_id: &str,
        decided: &DecidedCall,
    ) -> Result<Value, ToolError> {
        let call = &decided.call;
        if let Some(result) = &decided.result {
            // It ran before this resumption; its events were emitted then.
            return Ok(result.clone());
        }
        let (name, args) = (call.tool_name.as_str(), &call.arguments);
        let outcome = match &decided.decision {
            Decision::Approve => self.run_call(tool_call_id, name, args.clone()).await,
            Decision::Edit { arguments } => {
                self.run_call(tool_call_id, name, arguments.clone()).await
            }
            Decision::Reject { message } => {
                let error = ToolError::Rejected(message.clone());
                return self.complete_unrun(tool_call_id, name, args, Err(error));
            }
            Decision::Expired => {
                return self.complete_unrun(
                    tool_call_id,
                    name,
                    args,
                    Err(ToolError::ApprovalExpired),
                );
            }
            Decision::Respond { message } => {
                let answer = Ok(Value::String(message.clone()));
                return self.complete_unrun(tool_call_id, name, args, answer);
            }
        };
        if let Some(log) = &self.parts.approvals.results {
            let recorded = match &outcome {
                Ok(value) => value.clone(),
                Err(error) => error.to_result(),
            };
            log.record(&self.parts.scope.run_id, tool_call_id, &recorded)
                .await;
        }
        outcome
    }

    /// A call that ends without running its tool: its `tool_executing` and `tool_completed`
    /// with `outcome`.
    fn complete_unrun(
        &self,
        tool_call_id: &str,
        name: &str,
        args: &Value,
        outcome: Result<Value, ToolError>,
    ) -> Result<Value, ToolError> {
        let limits = &self.parts.dispatch.redaction;
        self.emit(EventKind::ToolExecuting {
            tool_call_id: tool_call_id.to_owned(),
            tool_name: name.to_owned(),
            arguments: redact::redact(args, limits),
        });
        let (result, is_error) = match &outcome {
            Ok(value) => (redact::redact(value, limits), false),
            Err(error) => (error.to_result(), true),
        };
        self.emit(EventKind::ToolCompleted {
            tool_call_id: tool_call_id.to_owned(),
            tool_name: name.to_owned(),
            result,
            is_error,
            duration_ms: 0,
        });
        outcome
    }

    /// Runs the call: see [`call_tool_with_id`](Self::call_tool_with_id).
    async fn run_call(
        &self,
        tool_call_id: &str,
        name: &str,
        args: Value,
    ) -> Result<Value, ToolError> {
        let limits = &self.parts.dispatch.redaction;
        self.emit(EventKind::ToolExecuting {
            tool_call_id: tool_call_id.to_owned(),
            tool_name: name.to_owned(),
            arguments: redact::redact(&args, limits),
        });
        let mut guard = OpenCall {
            ctx: self,
            tool_call_id,
            tool_name: name,
            started: Instant::now(),
            open: true,
        };
        let span = tracing::info_span!("tool", tool = %name, tool_call_id = %tool_call_id);
        let outcome = self.dispatch(name, args).instrument(span.clone()).await;
        let outcome = self.bound(name, outcome);
        span.in_scope(|| tracing::debug!(failed = outcome.is_err(), "tool call ended"));
        let result = match &outcome {
            Ok(value) => redact::redact(value, limits),
            Err(error) => error.to_result(),
        };
        guard.close(result, outcome.is_err());
        outcome
    }

    async fn dispatch(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let tools = &self.parts.tools;
        let Resolved { tool, schema } =
            tools.resolve(name).ok_or_else(|| ToolError::UnknownTool {
                name: name.to_owned(),
                available: tools.tool_names().join(", "),
            })?;
        if let Some(Err(problems)) = schema.map(|schema| schema.check(&args)) {
            tools.count(name, |c| c.invalid_arguments += 1);
            return Err(ToolError::InvalidArguments(problems));
        }
        let limit = tool
            .timeout()
            .unwrap_or(self.parts.dispatch.default_tool_timeout);
        let call = AssertUnwindSafe(tool.call(&self.parts.user_context, args)).catch_unwind();
        tokio::select! {
            biased;
            () = self.parts.cancellation.cancelled() => Err(ToolError::Cancelled),
            outcome = tokio::time::timeout(limit, call) => match outcome {
                Err(_) => Err(ToolError::Timeout(limit)),
                Ok(Err(panic)) => Err(ToolError::Panicked(panic_message(&*panic))),
                Ok(Ok(result)) => result,
            },
        }
    }

    /// `outcome` within [`DispatchConfig::max_result_bytes`], counted when it was cut.
    fn bound(&self, name: &str, outcome: Result<Value, ToolError>) -> Result<Value, ToolError> {
        let max = self.parts.dispatch.max_result_bytes;
        let (outcome, cut) = match outcome {
            Ok(value) => {
                let (value, cut) = bound::bound_value(value, max);
                (Ok(value), cut)
            }
            Err(error) => {
                let (error, cut) = bound::bound_error(error, max);
                (Err(error), cut)
            }
        };
        if cut {
            self.parts.tools.count(name, |c| c.truncated_results += 1);
            tracing::debug!(tool = %name, max_bytes = max, "a tool's result was truncated");
        }
        outcome
    }

    /// Emits `kind` for the run. An event the sink refused is counted
    /// ([`emit_failures`](Self::emit_failures)) and stops the run (its token is cancelled): a
    /// run must not go on with a hole in its stream that its client cannot see. The engine
    /// ends such a run `events_lost`.
    fn emit(&self, kind: EventKind) {
        let user = self.parts.user_context.user_id();
        if let Err(error) = self.parts.sink.emit(user, self.parts.scope.event(kind)) {
            self.emit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                run_id = %self.parts.scope.run_id,
                %error,
                "an agent event could not be emitted; the run is stopped"
            );
            self.parts.cancellation.cancel();
        }
    }
}

/// Closes a `tool_executing` exactly once: by [`close`](Self::close), or on drop when the
/// call is abandoned (the run was cancelled, timed out or panicked while the tool ran). The
/// engine drops the agent's future before it emits the terminal event, so even an abandoned
/// call is closed before the run ends.
struct OpenCall<'a> {
    ctx: &'a AgentContext,
    tool_call_id: &'a str,
    tool_name: &'a str,
    started: Instant,
    open: bool,
}

impl OpenCall<'_> {
    fn close(&mut self, result: Value, is_error: bool) {
        self.open = false;
        self.ctx.emit(EventKind::ToolCompleted {
            tool_call_id: self.tool_call_id.to_owned(),
            tool_name: self.tool_name.to_owned(),
            result,
            is_error,
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        if self.open {
            let error = serde_json::json!({
                "code": "abandoned",
                "error": "the run ended (cancelled, timed out or failed) while this tool was running",
            });
            self.close(error, true);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bounds_tests;
