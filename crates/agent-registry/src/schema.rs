//! Tool arguments checked against the tool's JSON Schema before the call.
//!
//! The dispatcher refuses arguments that do not fit [`Tool::parameters`](crate::Tool::parameters)
//! with [`ToolError::InvalidArguments`](crate::ToolError::InvalidArguments), whose message
//! names each failing path and why, so a model can correct its call; the tool never sees them.
//! A schema is compiled once: a built-in tool's when it is registered, a tool set's tool's the
//! first time it is called with that schema ([`SchemaCache`]). A schema that does not compile
//! (invalid, or referring to another document) is logged once and that tool's arguments go to
//! it unchecked: a bad schema must not make a working tool uncallable.
//!
//! Schemas without `$schema` are read as draft 2020-12 (what MCP and OpenAI assume). Format
//! keywords are annotations, as the draft says, so `"format": "date"` refuses nothing.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

/// Where a tool's schema lives for the compiler. Nothing is ever loaded from it: the schema
/// is added as this resource before it is compiled.
const LOCATION: &str = "file:///tool-arguments.json";

/// Problems a refusal lists; more are counted, not listed.
const MAX_PROBLEMS: usize = 5;

/// Characters of one problem's description; the rest is cut (a property name the caller
/// chose can be long).
const MAX_PROBLEM_CHARS: usize = 200;

/// Tool-set tools whose compiled schema is kept. Tool sets may answer names they do not
/// list, so the cache is bounded; when it is full it starts again.
const MAX_CACHED: usize = 1_024;

/// A tool's compiled argument schema.
pub(crate) struct ArgumentSchema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl std::fmt::Debug for ArgumentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgumentSchema").finish_non_exhaustive()
    }
}

/// Refuses every `$ref` to another document: a tool's schema must stand alone, and the
/// dispatcher never reads files or the network on a tool's behalf.
struct NoLoader;

impl boon::UrlLoader for NoLoader {
    fn load(&self, url: &str) -> Result<Value, Box<dyn Error>> {
        Err(format!("a tool's schema may not refer to another document ({url})").into())
    }
}

impl ArgumentSchema {
    /// `schema` compiled, or `None` (and a warning naming `tool`) when it does not compile.
    pub(crate) fn compile(tool: &str, schema: &Value) -> Option<Arc<Self>> {
        match Self::try_compile(schema) {
            Ok(compiled) => Some(Arc::new(compiled)),
            Err(error) => {
                tracing::warn!(
                    tool,
                    %error,
                    "the tool's argument schema does not compile; its arguments are not checked"
                );
                None
            }
        }
    }

    /// `schema` compiled, or why not (with its cause, which the alternate form adds).
    fn try_compile(schema: &Value) -> Result<Self, String> {
        let why = |error: boon::CompileError| format!("{error:#}");
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.use_loader(Box::new(NoLoader));
        compiler
            .add_resource(LOCATION, schema.clone())
            .map_err(why)?;
        let mut schemas = boon::Schemas::new();
        let index = compiler.compile(LOCATION, &mut schemas).map_err(why)?;
        Ok(Self { schemas, index })
    }

    /// Whether `args` fit; if not, what is wrong, one `path: why` per problem, bounded.
    ///
    /// `null` is checked as `{}`: it is how a caller says "no arguments", and an MCP tool
    /// takes it so.
    pub(crate) fn check(&self, args: &Value) -> Result<(), String> {
        let empty = Value::Object(serde_json::Map::new());
        let args = if args.is_null() { &empty } else { args };
        match self.schemas.validate(args, self.index) {
            Ok(()) => Ok(()),
            Err(error) => Err(describe(&error)),
        }
    }
}

/// Checks `args` against `schema` as the dispatcher does before a call, for a tool's own
/// tests (its schema accepts what its parser accepts) and for a tool that checks nested
/// values. A refusal names each failing path; a schema that does not compile is a
/// [`ToolError::Failed`](crate::ToolError::Failed) that says why.
pub fn check_args(schema: &Value, args: &Value) -> Result<(), crate::ToolError> {
    let compiled = ArgumentSchema::try_compile(schema).map_err(|why| {
        crate::ToolError::Failed(format!(
            "the tool's argument schema does not compile: {why}"
        ))
    })?;
    compiled
        .check(args)
        .map_err(crate::ToolError::InvalidArguments)
}

/// The leaves of `error`'s tree (the specific problems, not "validation failed" around
/// them), as `path: why`, at most [`MAX_PROBLEMS`] of them.
fn describe(error: &boon::ValidationError<'_, '_>) -> String {
    let mut leaves = Vec::new();
    collect_leaves(error, &mut leaves);
    let mut out = String::new();
    for leaf in leaves.iter().take(MAX_PROBLEMS) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let path = leaf.instance_location.to_string();
        let path = if path.is_empty() {
            "(arguments)"
        } else {
            &path
        };
        let problem = format!("{path}: {}", leaf.kind);
        out.push_str(&core_context::redact::truncate(&problem, MAX_PROBLEM_CHARS));
    }
    if leaves.len() > MAX_PROBLEMS {
        let _ = write!(out, "; and {} more", leaves.len() - MAX_PROBLEMS);
    }
    out
}

fn collect_leaves<'e, 's, 'v>(
    error: &'e boon::ValidationError<'s, 'v>,
    out: &mut Vec<&'e boon::ValidationError<'s, 'v>>,
) {
    if error.causes.is_empty() {
        out.push(error);
    }
    for cause in &error.causes {
        collect_leaves(cause, out);
    }
}

/// Compiled schemas of tool-set tools, by tool name and schema: a tool whose server lists a
/// new schema under the same name is compiled again, once.
#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    entries: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    schema: Value,
    compiled: Option<Arc<ArgumentSchema>>,
}

impl SchemaCache {
    /// The compiled `schema` of tool `name`, compiled now if it is not cached yet (`None`
    /// when it does not compile).
    pub(crate) fn get(&self, name: &str, schema: Value) -> Option<Arc<ArgumentSchema>> {
        if let Some(cached) = self.lock().get(name)
            && cached.schema == schema
        {
            return cached.compiled.clone();
        }
        // Compiled without the lock: two first calls at once both compile, and one result
        // is kept; a warning for a bad schema may then appear twice, which is harmless.
        let compiled = ArgumentSchema::compile(name, &schema);
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED && !entries.contains_key(name) {
            entries.clear();
        }
        entries.insert(
            name.to_owned(),
            Cached {
                schema,
                compiled: compiled.clone(),
            },
        );
        compiled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // The map stays consistent even if a holder panicked: every change is one insert.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `args` against `schema`: `Ok` or the refusal's message.
    fn check(schema: &Value, args: Value, expected: Result<(), &str>) {
        let compiled = ArgumentSchema::compile("t", schema).expect("the schema compiles");
        let got = compiled.check(&args);
        assert_eq!(
            got.as_ref().copied().map_err(String::as_str),
            expected,
            "{args}"
        );
    }

    #[test]
    fn arguments_are_checked_with_readable_messages() {
        let schema = json!({
            "type": "object",
            "properties": {
                "ms": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["ms"],
            "additionalProperties": false,
        });
        let table: &[(Value, Result<(), &str>)] = &[
            (json!({"ms": 5}), Ok(())),
            (json!({"ms": 5, "tags": ["a", "b"]}), Ok(())),
            (json!({"ms": "x"}), Err("/ms: want integer, but got string")),
            (json!({}), Err("(arguments): missing properties 'ms'")),
            (json!(null), Err("(arguments): missing properties 'ms'")),
            (
                json!({"ms": 1, "extra": true}),
                Err("(arguments): additionalProperties 'extra' not allowed"),
            ),
            (
                json!("ms=5"),
                Err("(arguments): want object, but got string"),
            ),
            (json!([5]), Err("(arguments): want object, but got array")),
            (json!({"ms": -1}), Err("/ms: must be >=0, but got -1")),
            (
                json!({"ms": 1, "tags": ["a", 2]}),
                Err("/tags/1: want string, but got number"),
            ),
            (
                json!({"ms": "x", "tags": "y", "z": 1}),
                Err(
                    "/ms: want integer, but got string; /tags: want array, but got string; \
                     (arguments): additionalProperties 'z' not allowed",
                ),
            ),
        ];
        for (args, expected) in table {
            check(&schema, args.clone(), *expected);
        }
    }

    #[test]
    fn a_refusal_is_bounded() {
        let schema = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        let args: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("k{i:02}"), json!("x"))).collect();
        let message = ArgumentSchema::compile("t", &schema)
            .expect("compiles")
            .check(&Value::Object(args))
            .expect_err("refused");
        assert_eq!(message.matches("want integer").count(), MAX_PROBLEMS);
        assert!(message.ends_with("; and 45 more"), "{message}");

        let long = "k".repeat(5_000);
        let strict = json!({"type": "object", "additionalProperties": false});
        let message = ArgumentSchema::compile("t", &strict)
            .expect("compiles")
            .check(&json!({ long: 1 }))
            .expect_err("refused");
        assert!(message.len() < MAX_PROBLEM_CHARS + 40, "{message}");
        assert!(message.contains("[truncated"), "{message}");
    }

    #[test]
    fn schemas_that_do_not_compile_are_skipped() {
        for schema in [
            json!({"type": "integr"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!(42),
        ] {
            assert!(
                ArgumentSchema::compile("t", &schema).is_none(),
                "{schema} compiled"
            );
        }
        for schema in [
            json!({}),
            json!(true),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
            json!({"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}),
        ] {
            let compiled = ArgumentSchema::compile("t", &schema);
            let compiled = compiled.unwrap_or_else(|| panic!("{schema} did not compile"));
            assert_eq!(compiled.check(&json!({"d": "not a date"})), Ok(()));
        }
    }

    #[test]
    fn the_cache_compiles_a_schema_once_and_again_when_it_changes() {
        let cache = SchemaCache::default();
        let a = json!({"type": "object", "required": ["a"]});
        let first = cache.get("t", a.clone()).expect("compiles");
        let again = cache.get("t", a).expect("compiles");
        assert!(Arc::ptr_eq(&first, &again));
        let b = json!({"type": "object", "required": ["b"]});
        let changed = cache.get("t", b).expect("compiles");
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.check(&json!({"a": 1})).is_err());
        assert!(cache.get("u", json!({"type": "nope"})).is_none());
        for i in 0..MAX_CACHED + 10 {
            cache.get(&format!("n{i}"), json!({}));
        }
        assert!(cache.lock().len() <= MAX_CACHED);
    }
}
