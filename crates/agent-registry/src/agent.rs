//! The [`Agent`] trait: what the engine runs.
//!
//! It sits above [`AgentContext`] (an agent is lent its run's context) and below the
//! registry, which stores agents as factories of `Box<dyn Agent>`.

use async_trait::async_trait;

use crate::context::AgentContext;
use crate::run_types::{AgentError, AgentInput, AgentOutput};

/// An agent: what the engine runs for one request.
///
/// A fresh instance is made for every run (the registry's `AgentSpec` is a factory), so
/// fields of `self` are per run. The context is lent, not given: an agent cannot move it into a
/// spawned task, so every event it emits happens inside its run, before the terminal event.
#[async_trait]
pub trait Agent: Send + Sync {
    /// Runs the agent to completion. Returning `Err` ends the run with `agent_error`.
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError>;

    /// Whether this agent can pause a run for approvals and continue it with
    /// [`resume`](Self::resume). An agent that cannot has its calls that need approval
    /// refused (the tool is not called). No by default.
    fn can_pause(&self) -> bool {
        false
    }

    /// Whether this agent takes messages the user sends while it runs (`multitask` `steer`),
    /// by calling [`AgentContext::take_messages`] at its safe points (the `llm` agent: before
    /// each model call). A message for an agent that cannot is queued as a run of its own. No
    /// by default.
    fn can_steer(&self) -> bool {
        false
    }

    /// Continues a run this agent paused with [`AgentContext::pause`], from the `state` it
    /// gave there, once every held call is decided. The calls it then makes again with the
    /// held calls' `tool_call_id`s get the person's decision: the tool runs (approved, or
    /// with edited arguments), or the call returns the rejection or the person's response.
    /// `input` is the run's message and options (not the thread's earlier turns: keep what
    /// you need of them in `state`).
    async fn resume(
        &self,
        ctx: &AgentContext,
        input: AgentInput,
        state: serde_json::Value,
    ) -> Result<AgentOutput, AgentError> {
        let _ = (ctx, input, state);
        Err(AgentError::new(
            "cannot_resume",
            "this agent cannot continue a paused run",
        ))
    }
}
