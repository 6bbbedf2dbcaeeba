//! The [`AgentRegistry`]: agents and tools by name.
//!
//! The registry is filled at start-up (`&mut self` methods) and then shared read-only behind
//! an `Arc`, so looking an agent or a built-in tool up on the hot path takes no lock. Tools
//! that come and go while the server runs (an MCP server's) are registered as a [`ToolSet`],
//! asked on each lookup; a built-in tool wins a name both have. Agents are registered as
//! factories: [`AgentRegistry::create_agent`] calls the factory, so every run gets a fresh
//! instance and no agent state outlives its run or crosses between users.
//!
//! The tools live in a [`ToolTable`] (`tool_table.rs`): each built-in tool's argument schema
//! compiled when it is registered, a tool set's tool's schema compiled on its first call, and
//! the counts of what the dispatcher refused or cut, per tool ([`AgentRegistry::tool_counts`]),
//! for the server's metrics. A run's context holds a share of that table, not the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::agent::Agent;
use crate::tool::{Tool, ToolSet};
use crate::tool_table::{ToolCounts, ToolInfo, ToolTable, valid_name};

type AgentFactory = Arc<dyn Fn() -> Box<dyn Agent> + Send + Sync>;

/// How to make an agent, and its settings.
#[derive(Clone)]
pub struct AgentSpec {
    name: String,
    description: String,
    examples: Vec<String>,
    timeout: Option<Duration>,
    factory: AgentFactory,
}

impl AgentSpec {
    /// An agent named `name` made by `factory` (called once per run).
    pub fn new<A, F>(name: impl Into<String>, factory: F) -> Self
    where
        A: Agent + 'static,
        F: Fn() -> A + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            description: String::new(),
            examples: Vec::new(),
            timeout: None,
            factory: Arc::new(move || Box::new(factory())),
        }
    }

    /// What the agent does, for people choosing one.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Messages the agent answers well, which a client offers on an empty conversation.
    #[must_use]
    pub fn examples<S: Into<String>>(mut self, examples: impl IntoIterator<Item = S>) -> Self {
        self.examples = examples.into_iter().map(Into::into).collect();
        self
    }

    /// A run timeout for this agent that overrides the engine's default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSpec")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A registered agent, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its timeout override, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether a run of it takes messages sent while it runs (`multitask` `steer`).
    pub steerable: bool,
    /// Messages it answers well, for a client to offer; none is left out of the JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// Why a registration or lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No agent has that name.
    #[error("no agent named {name:?}; available: {available}")]
    UnknownAgent {
        /// The requested name.
        name: String,
        /// The registered agents, comma-separated.
        available: String,
    },
    /// The name is taken.
    #[error("an {kind} named {name:?} is already registered")]
    Duplicate {
        /// `agent` or `tool`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The name is not a valid agent or tool name.
    #[error("{kind} name {name:?} is invalid: use 1 to 64 characters of a-z, 0-9, _ and -")]
    InvalidName {
        /// `agent` or `tool`.
        kind: &'static str,
        /// The name.
        name: String,
    },
}

/// A fresh agent instance for one run, from [`AgentRegistry::create_agent`].
pub struct CreatedAgent {
    /// The instance.
    pub agent: Box<dyn Agent>,
    /// Its registered name, shared (it is stamped on every event of the run).
    pub name: Arc<str>,
    /// Its run timeout override, if any.
    pub timeout: Option<Duration>,
}

impl fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedAgent")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AgentEntry {
    spec: AgentSpec,
    name: Arc<str>,
}

/// Agents and tools by name. See the module documentation.
///
/// A clone shares the original's counts and its cache of tool-set schemas.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentEntry>,
    // Shared with every run's context; registering a tool after a clone or a context took a
    // share copies the table (`Arc::make_mut`), so what was shared never changes.
    tools: Arc<ToolTable>,
}

impl fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("tools", &self.tools.built_in_names())
            .field("tool_sets", &self.tools.set_count())
            .finish()
    }
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an agent. Fails on an invalid or taken name.
    pub fn register_agent(&mut self, spec: AgentSpec) -> Result<(), RegistryError> {
        if !valid_name(&spec.name) {
            return Err(RegistryError::InvalidName {
                kind: "agent",
                name: spec.name,
            });
        }
        if self.agents.contains_key(&spec.name) {
            return Err(RegistryError::Duplicate {
                kind: "agent",
                name: spec.name,
            });
        }
        let name: Arc<str> = Arc::from(spec.name.as_str());
        self.agents
            .insert(spec.name.clone(), AgentEntry { spec, name });
        Ok(())
    }

    /// Registers a tool under its own name. Fails on an invalid or taken name.
    pub fn register_tool(&mut self, tool: impl Tool + 'static) -> Result<(), RegistryError> {
        self.register_shared_tool(Arc::new(tool))
    }

    /// Registers a tool that is already shared. Its argument schema is compiled now; one
    /// that does not compile is logged, and the tool's arguments then go to it unchecked.
    pub fn register_shared_tool(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let name = tool.name().to_owned();
        if !valid_name(&name) {
            return Err(RegistryError::InvalidName { kind: "tool", name });
        }
        if self.tools.has_built_in(&name) {
            return Err(RegistryError::Duplicate { kind: "tool", name });
        }
        Arc::make_mut(&mut self.tools).insert(name, tool);
        Ok(())
    }

    /// Registers a set of tools that can change while the server runs. Its tools are looked
    /// up after the built-in ones (a built-in tool wins a name both have) and after the sets
    /// registered before it; a listed tool whose name is invalid is left out.
    pub fn register_tool_set(&mut self, set: Arc<dyn ToolSet>) {
        Arc::make_mut(&mut self.tools).add_set(set);
    }

    /// A fresh instance of the agent `name`, with its shared name and timeout override.
    pub fn create_agent(&self, name: &str) -> Result<CreatedAgent, RegistryError> {
        let entry = self
            .agents
            .get(name)
            .ok_or_else(|| RegistryError::UnknownAgent {
                name: name.to_owned(),
                available: self.agent_names().join(", "),
            })?;
        Ok(CreatedAgent {
            agent: (entry.spec.factory)(),
            name: Arc::clone(&entry.name),
            timeout: entry.spec.timeout,
        })
    }

    /// Whether an agent of that name is registered.
    pub fn has_agent(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    /// The tool `name`: a built-in one, or one a tool set answers now.
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.tool(name)
    }

    /// The registry's tools, shared: what a run's context dispatches calls to.
    pub(crate) fn tool_table(&self) -> Arc<ToolTable> {
        Arc::clone(&self.tools)
    }

    /// What the dispatcher refused or cut, by tool name (tools with nothing counted are
    /// absent).
    pub fn tool_counts(&self) -> BTreeMap<String, ToolCounts> {
        self.tools.counts()
    }

    /// Registered agent names, sorted.
    pub fn agent_names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }

    /// The tools' names now, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools.tool_names()
    }

    /// Registered agents, sorted by name.
    pub fn list_agents(&self) -> Vec<AgentInfo> {
        self.agents
            .values()
            .map(|e| AgentInfo {
                name: e.spec.name.clone(),
                description: e.spec.description.clone(),
                timeout_ms: e.spec.timeout.map(|t| t.as_millis() as u64),
                steerable: (e.spec.factory)().can_steer(),
                examples: e.spec.examples.clone(),
            })
            .collect()
    }

    /// Whether agent `name`'s runs take messages sent while they run (`multitask` `steer`);
    /// false for an unknown name.
    pub fn can_steer(&self, name: &str) -> bool {
        self.agents
            .get(name)
            .is_some_and(|e| (e.spec.factory)().can_steer())
    }

    /// The tools now, sorted by name.
    pub fn list_tools(&self) -> Vec<ToolInfo> {
        self.tools.list_tools()
    }
}

#[cfg(test)]
mod tests;
