//! Agents and tools that ship with the engine.
//!
//! - [`tools`]: local tools that do real work without a network: `calculator`,
//!   `current_time`, `text_stats`, `search_docs`.
//! - [`assistant`]: the local rule-based `assistant`, the embedded default agent.
//! - [`docs`]: the project's documents, bundled: sections, search (`search_docs`) and pages.
//! - [`triage`]: a supervisor that hands parts of a request to the assistant as sub-runs.
//! - [`synthetic`]: an agent whose shape (thinking steps, tool calls, answer chunks, pauses,
//!   and failure modes) comes from its input, for tests, load tests and benchmarks. Servers
//!   register it only on request.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use agent_registry::{AgentRegistry, AgentSpec, RegistryError};

pub mod assistant;
pub mod docs;
pub mod synthetic;
pub mod tools;
pub mod triage;

/// Registers the local tools, `assistant` and `triage`.
pub fn register_local(registry: &mut AgentRegistry) -> Result<(), RegistryError> {
    registry.register_tool(tools::CalculatorTool)?;
    registry.register_tool(tools::CurrentTimeTool)?;
    registry.register_tool(tools::TextStatsTool)?;
    registry.register_tool(tools::SearchDocsTool)?;
    registry.register_agent(
        AgentSpec::new("assistant", || assistant::AssistantAgent)
            .description(
                "Local rule-based assistant (no language model): calculator, time zones, text statistics, documentation search. For anything else, connect a model and choose the llm agent.",
            )
            .examples(assistant::EXAMPLES.iter().map(|(_, example)| *example)),
    )?;
    registry.register_agent(
        AgentSpec::new("triage", || triage::TriageAgent)
            .description(
                "Local rule-based supervisor: splits a request into parts and hands each to the assistant as a sub-run.",
            )
            .examples(triage::EXAMPLES.iter().copied()),
    )
}
