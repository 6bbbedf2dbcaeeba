//! [`AgentContextParts`]: what the engine hands a run's context, and [`AgentContext::new`].
//!
//! This is the one module that names both the context and the registry, and it sits above
//! both. The engine gives a run the whole [`AgentRegistry`]; the context keeps only the
//! registry's tool table. Keeping that narrowing here, not in `context.rs`, is what breaks the
//! loop the three types would otherwise make between their files: an [`Agent`](crate::Agent)
//! is lent an [`AgentContext`], the registry stores agents, and a context that named the
//! registry would bring it back to the agent.

use std::sync::Arc;
use std::time::Instant;

use core_context::{CancellationToken, EventSink, RunScope, UserExecutionContext};

use crate::approval::ApprovalGate;
use crate::context::{AgentContext, DispatchConfig, RunParts, SubRunner};
use crate::inbox::Inbox;
use crate::meter::UsageMeter;
use crate::registry::AgentRegistry;

/// Everything the engine hands a run's context.
pub struct AgentContextParts {
    /// The run's user context (a child context for sub-runs).
    pub user_context: UserExecutionContext,
    /// The run's identity, stamped on every event.
    pub scope: RunScope,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
    /// Where tools are found.
    pub registry: Arc<AgentRegistry>,
    /// Cancelled when the run is cancelled, times out or the engine shuts down.
    pub cancellation: CancellationToken,
    /// Tool dispatcher settings.
    pub dispatch: DispatchConfig,
    /// Starts sub-runs for [`AgentContext::run_sub_agent`]; the engine provides it.
    pub sub_runner: Option<Arc<dyn SubRunner>>,
    /// When the run times out.
    pub deadline: Option<Instant>,
    /// Which calls wait for approval, whether the run can pause, and a resumed run's
    /// decisions.
    pub approvals: ApprovalGate,
    /// Thinking steps the run already took (a resumed run goes on counting from there).
    pub steps_taken: u32,
    /// Messages sent into the thread while the run goes ([`AgentContext::take_messages`]);
    /// `None` for a run that takes none.
    pub inbox: Option<Inbox>,
    /// Where its model calls' usage goes ([`AgentContext::record_usage`]).
    pub meter: Option<Arc<dyn UsageMeter>>,
}

impl AgentContext {
    /// Builds a run's context. Called by the engine.
    pub fn new(parts: AgentContextParts) -> Self {
        let AgentContextParts {
            user_context,
            scope,
            sink,
            registry,
            cancellation,
            dispatch,
            sub_runner,
            deadline,
            approvals,
            steps_taken,
            inbox,
            meter,
        } = parts;
        Self::from_parts(RunParts {
            user_context,
            scope,
            sink,
            tools: registry.tool_table(),
            cancellation,
            dispatch,
            sub_runner,
            deadline,
            approvals,
            steps_taken,
            inbox,
            meter,
        })
    }
}
