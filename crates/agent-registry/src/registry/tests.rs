//! Tool sets: tools that appear, change and vanish while the registry is shared.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use core_context::UserExecutionContext;
use serde_json::{Value, json};

use crate::{AgentRegistry, Tool, ToolError, ToolSet};

/// A tool that answers its own name and source.
struct Named {
    name: String,
    source: &'static str,
}

#[async_trait]
impl Tool for Named {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        "names itself"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    fn source(&self) -> &str {
        self.source
    }
    async fn call(&self, _ctx: &UserExecutionContext, _args: Value) -> Result<Value, ToolError> {
        Ok(json!({ "name": self.name, "source": self.source }))
    }
}

fn named(name: &str, source: &'static str) -> Arc<dyn Tool> {
    Arc::new(Named {
        name: name.to_owned(),
        source,
    })
}

/// A set whose tools a test changes; it answers any unlisted `late_` name as a placeholder.
#[derive(Default)]
struct Changing {
    tools: Mutex<Vec<Arc<dyn Tool>>>,
}

impl ToolSet for Changing {
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.lock().unwrap().clone()
    }
    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        let listed = self.tools().into_iter().find(|t| t.name() == name);
        listed.or_else(|| {
            name.starts_with("late_")
                .then(|| named(name, "placeholder"))
        })
    }
}

/// The registry's view, as (name, source) pairs: what it lists, and what each lookup finds.
fn view(
    registry: &AgentRegistry,
    lookups: &[&str],
) -> (Vec<(String, String)>, Vec<Option<String>>) {
    let listed = registry
        .list_tools()
        .into_iter()
        .map(|t| (t.name, t.source))
        .collect();
    let found = lookups
        .iter()
        .map(|name| registry.tool(name).map(|t| t.source().to_owned()))
        .collect();
    (listed, found)
}

/// The set's tools now, what the registry lists, and what each lookup finds.
type Case = (
    Vec<Arc<dyn Tool>>,
    Vec<(String, String)>,
    Vec<Option<String>>,
);

#[test]
fn a_tool_set_is_asked_on_every_lookup_after_the_built_in_tools() {
    let set = Arc::new(Changing::default());
    let mut registry = AgentRegistry::new();
    registry
        .register_shared_tool(named("echo", "built-in"))
        .unwrap();
    registry.register_tool_set(Arc::clone(&set) as Arc<dyn ToolSet>);
    let registry = Arc::new(registry);
    let pairs = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect::<Vec<_>>()
    };
    let some = |s: &str| Some(s.to_owned());
    let lookups = ["echo", "mcp_x", "late_y", "other"];

    let table: Vec<Case> = vec![
        (
            vec![],
            pairs(&[("echo", "built-in")]),
            vec![some("built-in"), None, some("placeholder"), None],
        ),
        (
            vec![
                named("mcp_x", "set"),
                named("echo", "set"),
                named("Bad Name", "set"),
            ],
            pairs(&[("echo", "built-in"), ("mcp_x", "set")]),
            vec![some("built-in"), some("set"), some("placeholder"), None],
        ),
        (
            vec![named("late_y", "set")],
            pairs(&[("echo", "built-in"), ("late_y", "set")]),
            vec![some("built-in"), None, some("set"), None],
        ),
    ];
    for (now, listed, found) in table {
        *set.tools.lock().unwrap() = now;
        assert_eq!(view(&registry, &lookups), (listed, found));
        let names: Vec<String> = registry.list_tools().into_iter().map(|t| t.name).collect();
        assert_eq!(registry.tool_names(), names);
    }
}
