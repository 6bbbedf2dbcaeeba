//! Engine settings, with the defaults of `docs/ARCHITECTURE.md`.

use std::time::Duration;

use agent_registry::{ApprovalPolicy, DispatchConfig};

use crate::approvals::DEFAULT_APPROVAL_TIMEOUT;

/// Limits and timeouts of engines. Limits are per user when engines come from an
/// [`ExecutionEngineFactory`](crate::ExecutionEngineFactory).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Runs of one user that execute at once.
    pub max_concurrent_runs: usize,
    /// Runs of one user that may wait for a slot; beyond this, `too_many_runs`.
    pub max_queued_runs: usize,
    /// How long a run may take, unless its agent sets its own timeout.
    pub run_timeout: Duration,
    /// Tool dispatcher settings (tool timeout, redaction bounds).
    pub dispatch: DispatchConfig,
    /// Live engines one user may hold in a factory.
    pub max_engines_per_user: usize,
    /// A factory's engine with no run for this long is closed by cleanup.
    pub engine_idle_timeout: Duration,
    /// Tools whose calls wait for a person's approval (`--approve-tools`).
    pub approve_tools: ApprovalPolicy,
    /// How long a held call waits for a decision before it is rejected as expired.
    pub approval_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrent_runs: 3,
            max_queued_runs: 10,
            run_timeout: Duration::from_secs(25),
            dispatch: DispatchConfig::default(),
            max_engines_per_user: 20,
            engine_idle_timeout: Duration::from_secs(300),
            approve_tools: ApprovalPolicy::default(),
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
        }
    }
}
