//! Agents and tools that ship with the engine.
//!
//! - [`synthetic`]: an agent whose shape (thinking steps, tool calls, answer chunks, pauses,
//!   and failure modes) comes from its input, for tests, load tests and benchmarks. Servers
//!   register it only on request.
//! - [`local`]: the local rule-based `assistant` and its tools, the embedded default.

pub mod local;
pub mod synthetic;
