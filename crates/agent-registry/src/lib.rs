//! Agents, tools, and the registry the engine finds them in.
//!
//! - [`Agent`]: what the engine runs. It gets an [`AgentContext`] (its user context,
//!   emitters for thinking steps and answer chunks, and [`AgentContext::call_tool`]) and the
//!   user's input, and returns a result or an [`AgentError`].
//! - [`Tool`]: a named, described function with a JSON Schema for its arguments.
//! - [`ToolSet`]: tools that come and go while the server runs (an MCP server's).
//! - [`AgentRegistry`]: agents (as factories, so every run gets a FRESH instance and no agent
//!   state is shared between users) and tools, by name.
//! - The tool dispatcher behind [`AgentContext::call_tool`] emits `tool_executing` and
//!   `tool_completed` itself, so an agent cannot forget one: arguments and results are redacted
//!   and truncated in the events, each call has a timeout, honours cancellation, turns a
//!   panicking tool into a failed call, and closes its `tool_executing` even when the run is
//!   abandoned mid-call. Before the call it checks the arguments against the tool's JSON
//!   Schema (a refusal the model can read, the tool not called); after it, it bounds the
//!   result's size (a larger one is replaced by a marked preview that the agent sees too).
//!
//! This crate does not know about WebSockets: it emits through
//! [`core_context::EventSink`]. It does not know about the engine either; the engine builds
//! the [`AgentContext`] of each run.
//!
//! # Layering
//!
//! The three main types name each other in a loop: an [`Agent`] is lent an [`AgentContext`],
//! the context's parts carry the [`AgentRegistry`], and the registry stores agents. Their
//! files do not: each module imports only the ones listed under it here, so no two import
//! each other, directly or around a loop.
//!
//! - `context_parts`: [`AgentContextParts`] and [`AgentContext::new`], the one place that
//!   names both the context and the registry (it hands the context the registry's tools);
//!   imports `approval`, `context`, `registry`.
//! - `registry`: [`AgentRegistry`], [`AgentSpec`]; imports `agent`, `tool_table`, `tool`.
//! - `agent`: the [`Agent`] trait; imports `context`, `run_types`.
//! - `context`: [`AgentContext`] and the tool dispatcher, holding a share of the registry's
//!   tool table, not the registry; imports `approval`, `tool_table`, `run_types`, `tool`,
//!   `bound`.
//! - `approval`: [`ApprovalPolicy`] (which calls wait for a person) and a run's
//!   [`ApprovalGate`]; imports nothing of this crate.
//! - `tool_table`: the tools by name, their schemas and counts; imports `tool`, `schema`.
//! - `bound`, `schema`: size bounds and argument checks; import `tool`.
//! - `tool`, `run_types`: the [`Tool`] traits, and an agent's input, output and error; import
//!   nothing of this crate.
//! - `wake_gate`: [`wake_gated`], a run's guards (cancellation, deadline) polled only when
//!   they woke it; imports nothing of this crate.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod agent;
mod approval;
mod bound;
mod context;
mod context_budget;
mod context_parts;
mod inbox;
mod meter;
mod registry;
mod run_types;
mod schema;
mod tool;
mod tool_table;
mod wake_gate;

pub use agent::Agent;
pub use approval::{ApprovalGate, ApprovalPolicy, DecidedCall, PolicyError, ResultLog};
pub use context::{AgentContext, DEFAULT_MAX_RESULT_BYTES, DispatchConfig, SubRunner};
pub use context_parts::AgentContextParts;
pub use inbox::Inbox;
pub use meter::{
    BUDGET_EXCEEDED, BudgetStop, CallEstimate, CallUsage, Grant, Pause, Reservation, UsageMeter,
    estimate_tokens,
};
pub use registry::{AgentInfo, AgentRegistry, AgentSpec, CreatedAgent, RegistryError};
pub use run_types::{AgentError, AgentInput, AgentOutput, Turn, panic_message};
pub use schema::check_args;
pub use tool::{Tool, ToolError, ToolSet, parse_args};
pub use tool_table::{ToolCounts, ToolInfo};
pub use wake_gate::{WakeGated, wake_gated};
