//! [`UserExecutionEngine`]: the one engine type, and the factories that make it.
//!
//! An engine serves one request of one user. It is cheap (a few hundred bytes, well under a
//! microsecond to make) and built only by its factories:
//! - [`UserExecutionEngine::create_execution_engine`]: the primary factory, for one request;
//! - [`UserExecutionEngine::create_request_scoped_engine`]: the same, wrapped in a
//!   [`ScopedEngine`] whose cleanup is guaranteed (explicit [`ScopedEngine::close`], or drop);
//! - [`ExecutionEngineFactory`]: for servers; shares one set of run slots per USER across
//!   all of that user's engines (in this process, or across nodes through any [`RunSlots`]),
//!   caps engines per user and cleans up idle ones.
//!
//! Every run the engine accepts keeps the lifecycle guarantees of
//! [`core_context::lifecycle`]: one `agent_started` first, exactly one terminal event last
//! (`agent_completed`, `agent_error` with `timeout`/`panic`/the agent's code, or
//! `agent_cancelled`), every tool call closed before the terminal event. A panicking or
//! hanging agent ends in `agent_error` and affects no other run.
//!
//! **Architecture Invariant:** this crate defines the only engine type. Its fields are
//! private and it has no public constructor other than the factories above; `cargo xtask
//! ssot-check` fails if another crate defines an engine type.

pub mod admission;
pub mod approvals;
mod config;
mod engine;
mod error;
mod execute;
mod factory;
mod inner;
mod local_slots;
mod pause;
mod pipeline;
mod run;
pub mod slots;
mod stats;

pub use admission::{Admission, Prelude, QueuedAt, RunSettle};
pub use approvals::{PausedRun, PausedRuns, Resume};
pub use config::EngineConfig;
pub use engine::UserExecutionEngine;
pub use error::EngineError;
pub use factory::{CleanupReport, ExecutionEngineFactory, FactoryStats, ScopedEngine};
pub use local_slots::LocalSlots;
pub use pipeline::{PipelineReport, PipelineStep, StepReport};
pub use run::{RunHandle, RunOutcome};
pub use slots::{RunSlots, ThreadRule};
pub use stats::EngineStats;
