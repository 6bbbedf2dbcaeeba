//! The [`AgentRegistry`]: agents and tools by name.
//!
//! The registry is filled at start-up (`&mut self` methods) and then shared read-only behind
//! an `Arc`, so looking an agent or a built-in tool up on the hot path takes no lock. Tools
//! that come and go while the server runs (an MCP server's) are registered as a [`ToolSet`],
//! asked on each lookup; a built-in tool wins a name both have. Agents are registered as
//! factories: [`AgentRegistry::create_agent`] calls the factory, so every run gets a fresh
//! instance and no agent state outlives its run or crosses between users.
//!
//! Each built-in tool's argument schema is compiled when it is registered and kept beside it,
//! so the dispatcher checks arguments without a lock; a tool set's tool's schema is compiled
//! on its first call and cached by name and schema. The registry also counts what the
//! dispatcher refused or cut, per tool ([`AgentRegistry::tool_counts`]), for the server's
//! metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::agent::Agent;
use crate::schema::{ArgumentSchema, SchemaCache};
use crate::tool::{Tool, ToolSet};

type AgentFactory = Arc<dyn Fn() -> Box<dyn Agent> + Send + Sync>;

/// How to make an agent, and its settings.
#[derive(Clone)]
pub struct AgentSpec {
    name: String,
    description: String,
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
}

/// A registered tool, as listed (and as offered to models).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub parameters: Value,
    /// Where it comes from ([`Tool::source`]).
    pub source: String,
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

/// A built-in tool and its compiled argument schema (`None` when it does not compile).
#[derive(Clone)]
struct ToolEntry {
    tool: Arc<dyn Tool>,
    schema: Option<Arc<ArgumentSchema>>,
}

/// What the dispatcher refused or cut for one tool, since the registry was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolCounts {
    /// Calls refused because their arguments did not fit the tool's schema (the tool was
    /// not called).
    pub invalid_arguments: u64,
    /// Results (or failure messages) cut to the dispatcher's size bound.
    pub truncated_results: u64,
}

/// Agents and tools by name. See the module documentation.
///
/// A clone shares the original's counts and its cache of tool-set schemas.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentEntry>,
    tools: BTreeMap<String, ToolEntry>,
    tool_sets: Vec<Arc<dyn ToolSet>>,
    set_schemas: Arc<SchemaCache>,
    // Touched only when a call is refused or cut, so a lock costs the hot path nothing.
    counts: Arc<Mutex<BTreeMap<String, ToolCounts>>>,
}

/// A tool found for a call, with its compiled schema.
pub(crate) struct Resolved {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) schema: Option<Arc<ArgumentSchema>>,
}

impl fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .field("tool_sets", &self.tool_sets.len())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
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
        if self.tools.contains_key(&name) {
            return Err(RegistryError::Duplicate { kind: "tool", name });
        }
        let schema = ArgumentSchema::compile(&name, &tool.parameters());
        self.tools.insert(name, ToolEntry { tool, schema });
        Ok(())
    }

    /// Registers a set of tools that can change while the server runs. Its tools are looked
    /// up after the built-in ones (a built-in tool wins a name both have) and after the sets
    /// registered before it; a listed tool whose name is invalid is left out.
    pub fn register_tool_set(&mut self, set: Arc<dyn ToolSet>) {
        self.tool_sets.push(set);
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
        if let Some(entry) = self.tools.get(name) {
            return Some(Arc::clone(&entry.tool));
        }
        self.tool_sets.iter().find_map(|set| set.tool(name))
    }

    /// The tool `name` with its compiled argument schema, for the dispatcher.
    pub(crate) fn resolve(&self, name: &str) -> Option<Resolved> {
        if let Some(entry) = self.tools.get(name) {
            return Some(Resolved {
                tool: Arc::clone(&entry.tool),
                schema: entry.schema.clone(),
            });
        }
        let tool = self.tool_sets.iter().find_map(|set| set.tool(name))?;
        let schema = self.set_schemas.get(name, tool.parameters());
        Some(Resolved { tool, schema })
    }

    /// What the dispatcher refused or cut, by tool name (tools with nothing counted are
    /// absent).
    pub fn tool_counts(&self) -> BTreeMap<String, ToolCounts> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one refusal or cut of tool `name`'s call.
    pub(crate) fn count(&self, name: &str, what: impl FnOnce(&mut ToolCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        what(counts.entry(name.to_owned()).or_default());
    }

    /// Registered agent names, sorted.
    pub fn agent_names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }

    /// The tools now, by name: the built-in ones, then each set's, the first of a name kept.
    fn all_tools(&self) -> BTreeMap<String, Arc<dyn Tool>> {
        let mut all: BTreeMap<String, Arc<dyn Tool>> = self
            .tools
            .iter()
            .map(|(name, entry)| (name.clone(), Arc::clone(&entry.tool)))
            .collect();
        for tool in self.tool_sets.iter().flat_map(|set| set.tools()) {
            let name = tool.name();
            if valid_name(name) && !all.contains_key(name) {
                all.insert(name.to_owned(), tool);
            }
        }
        all
    }

    /// The tools' names now, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        self.all_tools().into_keys().collect()
    }

    /// Registered agents, sorted by name.
    pub fn list_agents(&self) -> Vec<AgentInfo> {
        self.agents
            .values()
            .map(|e| AgentInfo {
                name: e.spec.name.clone(),
                description: e.spec.description.clone(),
                timeout_ms: e.spec.timeout.map(|t| t.as_millis() as u64),
            })
            .collect()
    }

    /// The tools now, sorted by name.
    pub fn list_tools(&self) -> Vec<ToolInfo> {
        self.all_tools()
            .values()
            .map(|t| ToolInfo {
                name: t.name().to_owned(),
                description: t.description().to_owned(),
                parameters: t.parameters(),
                source: t.source().to_owned(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
