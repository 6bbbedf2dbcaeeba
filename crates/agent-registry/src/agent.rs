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
}
