//! Why the engine refused a request.

use agent_registry::RegistryError;

use crate::slots::SlotError;

/// Why a run (or an engine) was not started. Nothing was emitted for a refused run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The agent is not registered.
    #[error(transparent)]
    UnknownAgent(#[from] RegistryError),
    /// The user's run slots refused the run: the user already has the maximum of running
    /// and queued runs (`too_many_runs`), or the slots cannot be reached now (across nodes:
    /// Redis is down).
    #[error(transparent)]
    Slots(#[from] SlotError),
    /// The user holds the maximum number of engines in the factory.
    #[error("user already holds {max} engines; close finished ones (ScopedEngine does it on drop)")]
    TooManyEngines {
        /// The limit.
        max: usize,
    },
    /// The engine was shut down and accepts no new runs.
    #[error("the engine is shut down and accepts no new runs; create a new one")]
    EngineClosed,
    /// There is no Tokio runtime to run on.
    #[error("no Tokio runtime: call the engine from within a Tokio runtime")]
    NoRuntime,
}

impl EngineError {
    /// The wire `code` of an `error` frame for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownAgent(RegistryError::UnknownAgent { .. }) => "unknown_agent",
            EngineError::UnknownAgent(_) => "invalid_agent",
            EngineError::Slots(SlotError::Full { .. }) => "too_many_runs",
            EngineError::Slots(SlotError::ThreadBusy { .. }) => "thread_busy",
            EngineError::TooManyEngines { .. } => "too_many_engines",
            EngineError::EngineClosed => "engine_closed",
            EngineError::Slots(SlotError::Unavailable(_)) => "unavailable",
            EngineError::NoRuntime => "internal_error",
        }
    }
}
