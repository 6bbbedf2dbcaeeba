//! The [`ToolTable`]: the registry's tools by name, which is all of the registry that the tool
//! dispatcher needs.
//!
//! Built-in tools are kept with their argument schema, compiled when they are registered, so
//! the dispatcher checks arguments without a lock; the tools of a [`ToolSet`] (an MCP
//! server's) are asked on each lookup, their schemas compiled on a tool's first call and cached
//! by name and schema. A built-in tool wins a name both have. The table also counts what the
//! dispatcher refused or cut, per tool ([`ToolCounts`]), for the server's metrics.
//!
//! It is its own room so that the run's context can hold the tools without holding the
//! registry: the registry stores agents, an agent is lent the context, and a context that held
//! the registry would close that loop. The registry owns one table behind an `Arc` and hands
//! each run's context a share of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use crate::schema::{ArgumentSchema, SchemaCache};
use crate::tool::{Tool, ToolSet};

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

/// What the dispatcher refused or cut for one tool, since the registry was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolCounts {
    /// Calls refused because their arguments did not fit the tool's schema (the tool was
    /// not called).
    pub invalid_arguments: u64,
    /// Results (or failure messages) cut to the dispatcher's size bound.
    pub truncated_results: u64,
}

/// Whether `name` is a valid agent or tool name: 1 to 64 characters of a-z, 0-9, `_` and `-`.
/// The registry checks both kinds of names with it; the table also leaves out a tool set's
/// tool whose name fails it.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A built-in tool and its compiled argument schema (`None` when it does not compile).
#[derive(Clone)]
struct ToolEntry {
    tool: Arc<dyn Tool>,
    schema: Option<Arc<ArgumentSchema>>,
}

/// A tool found for a call, with its compiled schema.
pub(crate) struct Resolved {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) schema: Option<Arc<ArgumentSchema>>,
}

/// Tools by name. See the module documentation.
///
/// A clone shares the original's counts and its cache of tool-set schemas.
#[derive(Clone, Default)]
pub(crate) struct ToolTable {
    tools: BTreeMap<String, ToolEntry>,
    tool_sets: Vec<Arc<dyn ToolSet>>,
    set_schemas: Arc<SchemaCache>,
    // Touched only when a call is refused or cut, so a lock costs the hot path nothing.
    counts: Arc<Mutex<BTreeMap<String, ToolCounts>>>,
}

impl ToolTable {
    /// Whether a built-in tool of that name is registered.
    pub(crate) fn has_built_in(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The built-in tools' names, sorted.
    pub(crate) fn built_in_names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }

    /// How many tool sets are registered.
    pub(crate) fn set_count(&self) -> usize {
        self.tool_sets.len()
    }

    /// Adds a built-in tool under `name`, which the caller checked. Its argument schema is
    /// compiled now; one that does not compile is logged, and the tool's arguments then go
    /// to it unchecked.
    pub(crate) fn insert(&mut self, name: String, tool: Arc<dyn Tool>) {
        let schema = ArgumentSchema::compile(&name, &tool.parameters());
        self.tools.insert(name, ToolEntry { tool, schema });
    }

    /// Adds a tool set, looked up after the built-in tools and the sets added before it.
    pub(crate) fn add_set(&mut self, set: Arc<dyn ToolSet>) {
        self.tool_sets.push(set);
    }

    /// The tool `name`: a built-in one, or one a tool set answers now.
    pub(crate) fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
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
    pub(crate) fn counts(&self) -> BTreeMap<String, ToolCounts> {
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
    pub(crate) fn tool_names(&self) -> Vec<String> {
        self.all_tools().into_keys().collect()
    }

    /// The tools now, sorted by name.
    pub(crate) fn list_tools(&self) -> Vec<ToolInfo> {
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
