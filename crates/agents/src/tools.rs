//! The local tools: real work, no network.
//!
//! - `calculator`: arithmetic with the `evalexpr` crate (not a hand-written parser).
//! - `current_time`: the time now in an IANA time zone, with `jiff` and its bundled time zone
//!   database (so the answer does not depend on the host's `/usr/share/zoneinfo`).
//! - `text_stats`: characters, words, sentences and lines of a text.
//! - `search_docs`: a ranked search over the project's own `docs/`, bundled into the binary.
//!
//! Every tool's argument schema (its `parameters()`, what a model is shown and what the
//! dispatcher checks calls against) is derived with `schemars` from the struct the tool decodes
//! its arguments into, which denies unknown fields: the schema and the parsing cannot drift.
//! Each schema carries an example call, which the tests check against both.

use agent_registry::{Tool, ToolError, parse_args};
use async_trait::async_trait;
use core_context::UserExecutionContext;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::docs;

/// The JSON Schema of `T` as a tool's `parameters()`: draft 2020-12 (what the dispatcher and
/// MCP read), without `$schema` and the Rust type's name, which a model does not need.
fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.remove("$schema");
    schema.remove("title");
    schema.into()
}

/// The longest expression the calculator accepts.
pub const MAX_EXPRESSION_LEN: usize = 500;

/// Evaluates arithmetic expressions.
#[derive(Debug, Default)]
pub struct CalculatorTool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({"expression": "(12 + 3) * 7"}))]
struct CalculatorArgs {
    /// For example (12 + 3) * 7
    #[schemars(length(max = MAX_EXPRESSION_LEN))]
    expression: String,
}

/// Evaluates `expression`; the result is a number (or a boolean for comparisons).
pub fn calculate(expression: &str) -> Result<Value, ToolError> {
    let expression = expression.trim();
    if expression.is_empty() {
        return Err(ToolError::InvalidArguments("expression is empty".into()));
    }
    if expression.len() > MAX_EXPRESSION_LEN {
        return Err(ToolError::InvalidArguments(format!(
            "expression is {} characters; the limit is {MAX_EXPRESSION_LEN}",
            expression.len()
        )));
    }
    let value = evalexpr::eval(expression)
        .map_err(|e| ToolError::InvalidArguments(format!("cannot evaluate {expression:?}: {e}")))?;
    let value = match value {
        evalexpr::Value::Int(i) => json!(i),
        evalexpr::Value::Float(f) if f.is_finite() => json!(f),
        evalexpr::Value::Float(_) => {
            return Err(ToolError::Failed(format!(
                "{expression:?} has no finite value"
            )));
        }
        evalexpr::Value::Boolean(b) => json!(b),
        other => {
            return Err(ToolError::InvalidArguments(format!(
                "{expression:?} is not arithmetic (it gives {other})"
            )));
        }
    };
    Ok(json!({ "expression": expression, "value": value }))
}

#[async_trait]
impl Tool for CalculatorTool {
    fn name(&self) -> &str {
        "calculator"
    }
    fn description(&self) -> &str {
        "Evaluates an arithmetic expression: + - * / % ^, parentheses, comparisons, and math functions such as math::sqrt(2)."
    }
    fn parameters(&self) -> Value {
        schema_of::<CalculatorArgs>()
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let CalculatorArgs { expression } = parse_args(args)?;
        calculate(&expression)
    }
}

/// The current time in an IANA time zone.
#[derive(Debug, Default)]
pub struct CurrentTimeTool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({"timezone": "Asia/Tokyo"}))]
struct CurrentTimeArgs {
    /// An IANA time zone name, e.g. Europe/Zurich
    timezone: String,
}

/// The time `now` (a UTC instant) in `timezone`.
pub fn time_in(timezone: &str, now: jiff::Timestamp) -> Result<Value, ToolError> {
    let zone = jiff::tz::TimeZone::get(timezone).map_err(|_| {
        ToolError::InvalidArguments(format!(
            "unknown time zone {timezone:?}; use an IANA name such as Europe/Zurich or Asia/Tokyo"
        ))
    })?;
    let zoned = now.to_zoned_datetime(zone);
    Ok(json!({
        "timezone": timezone,
        "local_time": zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "utc_offset": zoned.strftime("%:z").to_string(),
        "weekday": zoned.strftime("%A").to_string(),
    }))
}

#[async_trait]
impl Tool for CurrentTimeTool {
    fn name(&self) -> &str {
        "current_time"
    }
    fn description(&self) -> &str {
        "The current date and time in an IANA time zone (for example Asia/Tokyo)."
    }
    fn parameters(&self) -> Value {
        schema_of::<CurrentTimeArgs>()
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let CurrentTimeArgs { timezone } = parse_args(args)?;
        time_in(&timezone, jiff::Timestamp::now())
    }
}

/// Counts characters, words, sentences and lines of a text.
#[derive(Debug, Default)]
pub struct TextStatsTool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({"text": "One. Two! Three?"}))]
struct TextStatsArgs {
    /// The text to measure.
    text: String,
}

/// The statistics `text_stats` returns.
pub fn text_stats(text: &str) -> Value {
    let sentences = text
        .split(['.', '!', '?'])
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count();
    json!({
        "characters": text.chars().count(),
        "words": text.split_whitespace().count(),
        "sentences": sentences,
        "lines": if text.is_empty() { 0 } else { text.lines().count() },
    })
}

#[async_trait]
impl Tool for TextStatsTool {
    fn name(&self) -> &str {
        "text_stats"
    }
    fn description(&self) -> &str {
        "Counts the characters, words, sentences and lines of a text."
    }
    fn parameters(&self) -> Value {
        schema_of::<TextStatsArgs>()
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let TextStatsArgs { text } = parse_args(args)?;
        Ok(text_stats(&text))
    }
}

/// Searches the bundled documents.
#[derive(Debug, Default)]
pub struct SearchDocsTool;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({"query": "resume after a reconnect", "limit": 3}))]
struct SearchDocsArgs {
    /// Words to look for.
    query: String,
    /// How many sections to return, best first.
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 10))]
    limit: usize,
}

fn default_limit() -> usize {
    3
}

/// The sections of the bundled documents that best match `query`, best first
/// ([`docs::search`]): each with its document, heading, link on the server, score and prose
/// (paragraphs and list items, no code or tables: what an answer can quote), and a snippet of
/// that prose.
pub fn search_docs(query: &str, limit: usize) -> Result<Value, ToolError> {
    if !(1..=10).contains(&limit) {
        return Err(ToolError::InvalidArguments(format!(
            "limit is {limit}; use 1 to 10"
        )));
    }
    if docs::terms(query).is_empty() {
        return Err(ToolError::InvalidArguments(
            "query has no word of 3 or more letters to search for".into(),
        ));
    }
    let results: Vec<Value> = docs::search(query, limit)
        .into_iter()
        .map(|(section, score)| {
            json!({
                "document": section.document,
                "section": section.heading,
                "link": section.link(),
                "score": (score * 100.0).round() / 100.0,
                "text": shorten(&section.prose, MAX_TEXT_CHARS),
                "snippet": shorten(&section.prose.split_whitespace().collect::<Vec<_>>().join(" "), 240),
            })
        })
        .collect();
    Ok(json!({ "query": query, "results": results }))
}

/// The most prose a search result carries.
const MAX_TEXT_CHARS: usize = 1_500;

/// `text` cut to at most `max` characters at a word's end, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let end = cut.rfind(char::is_whitespace).unwrap_or(cut.len());
    format!("{}…", cut[..end].trim_end())
}

#[async_trait]
impl Tool for SearchDocsTool {
    fn name(&self) -> &str {
        "search_docs"
    }
    fn description(&self) -> &str {
        "Searches this project's documentation (README, architecture, protocol, migration, operations, AG-UI, security) and returns the best sections, each with its prose and a link."
    }
    fn parameters(&self) -> Value {
        schema_of::<SearchDocsArgs>()
    }
    async fn call(&self, _ctx: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        let SearchDocsArgs { query, limit } = parse_args(args)?;
        search_docs(&query, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(got: Result<Value, ToolError>, expected: Result<Value, &str>) {
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(e), Err(fragment)) => {
                assert!(e.to_string().contains(fragment), "{e} lacks {fragment:?}")
            }
            _ => panic!("expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn calculator_table() {
        let value = |v: Value| Ok(v);
        check(
            calculate("12*7").map(|v| v["value"].clone()),
            value(json!(84)),
        );
        check(
            calculate(" (2 + 3) * 4 ").map(|v| v["value"].clone()),
            value(json!(20)),
        );
        check(
            calculate("7 / 2").map(|v| v["value"].clone()),
            value(json!(3)),
        );
        check(
            calculate("7.0 / 2").map(|v| v["value"].clone()),
            value(json!(3.5)),
        );
        check(
            calculate("2 ^ 10").map(|v| v["value"].clone()),
            value(json!(1024.0)),
        );
        check(
            calculate("math::sqrt(16)").map(|v| v["value"].clone()),
            value(json!(4.0)),
        );
        check(
            calculate("3 > 2").map(|v| v["value"].clone()),
            value(json!(true)),
        );
        check(calculate(""), Err("expression is empty"));
        check(calculate("1 +"), Err("cannot evaluate \"1 +\""));
        check(calculate("1 / 0"), Err("cannot evaluate"));
        check(calculate("\"text\""), Err("is not arithmetic"));
        check(calculate(&"1+".repeat(300)), Err("the limit is 500"));
    }

    #[test]
    fn time_table() {
        let noon_utc: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        check(
            time_in("Asia/Tokyo", noon_utc),
            Ok(
                json!({"timezone": "Asia/Tokyo", "local_time": "2026-11-24T21:00:00+09:00", "utc_offset": "+09:00", "weekday": "Tuesday"}),
            ),
        );
        check(
            time_in("Europe/Zurich", noon_utc).map(|v| v["utc_offset"].clone()),
            Ok(json!("+01:00")),
        );
        let summer: jiff::Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
        check(
            time_in("Europe/Zurich", summer).map(|v| v["utc_offset"].clone()),
            Ok(json!("+02:00")),
        );
        check(
            time_in("UTC", noon_utc).map(|v| v["local_time"].clone()),
            Ok(json!("2026-11-24T12:00:00+00:00")),
        );
        check(
            time_in("Mars/Olympus", noon_utc),
            Err("unknown time zone \"Mars/Olympus\""),
        );
        check(time_in("", noon_utc), Err("unknown time zone"));
    }

    #[test]
    fn text_stats_table() {
        let cases = [
            (
                "",
                json!({"characters": 0, "words": 0, "sentences": 0, "lines": 0}),
            ),
            (
                "Hello world.",
                json!({"characters": 12, "words": 2, "sentences": 1, "lines": 1}),
            ),
            (
                "One. Two! Three?\nFour",
                json!({"characters": 21, "words": 4, "sentences": 4, "lines": 2}),
            ),
            (
                "héllo",
                json!({"characters": 5, "words": 1, "sentences": 1, "lines": 1}),
            ),
        ];
        for (text, expected) in cases {
            check(Ok(text_stats(text)), Ok(expected));
        }
    }

    #[test]
    fn search_docs_table() {
        let top = search_docs("resume after_seq epoch", 3).unwrap();
        let first = &top["results"][0];
        assert_eq!(first["document"], "docs/protocol.md", "{top}");
        assert!(top["results"].as_array().unwrap().len() <= 3);
        let migration = search_docs("create_from_legacy migration", 1).unwrap();
        assert_eq!(
            migration["results"][0]["document"], "docs/migration.md",
            "{migration}"
        );
        check(
            search_docs("xyzzyplugh", 3).map(|v| v["results"].clone()),
            Ok(json!([])),
        );
        check(search_docs("a b", 3), Err("no word of 3 or more letters"));
        check(search_docs("resume", 0), Err("use 1 to 10"));
    }

    /// Decodes arguments as a tool's `call` does, keeping only whether that worked.
    type Parse = fn(Value) -> Result<(), ToolError>;

    /// Every built-in tool with its arguments decoded as its `call` decodes them.
    fn tools() -> Vec<(Box<dyn Tool>, Parse)> {
        vec![
            (Box::new(CalculatorTool), |v| {
                parse_args::<CalculatorArgs>(v).map(drop)
            }),
            (Box::new(CurrentTimeTool), |v| {
                parse_args::<CurrentTimeArgs>(v).map(drop)
            }),
            (Box::new(TextStatsTool), |v| {
                parse_args::<TextStatsArgs>(v).map(drop)
            }),
            (Box::new(SearchDocsTool), |v| {
                parse_args::<SearchDocsArgs>(v).map(drop)
            }),
        ]
    }

    /// Each tool's schema documents an example that the dispatcher's check and the tool's
    /// parsing both accept; a wrong type, a missing field and an unknown field each fail both.
    #[test]
    fn schemas_and_parsing_agree() {
        for (tool, parse) in tools() {
            let schema = tool.parameters();
            let name = tool.name();
            let examples = schema["examples"].as_array().cloned().unwrap_or_default();
            assert!(!examples.is_empty(), "{name}: no example in {schema}");
            for example in examples {
                agent_registry::check_args(&schema, &example)
                    .unwrap_or_else(|e| panic!("{name}: {example} refused by the schema: {e}"));
                parse(example.clone())
                    .unwrap_or_else(|e| panic!("{name}: {example} refused by parsing: {e}"));
            }
            let required = schema["required"][0].as_str().unwrap();
            let refused = [
                json!({ required: 42 }),
                json!({}),
                json!({ required: "x", "unexpected": 1 }),
            ];
            for args in refused {
                let checked = agent_registry::check_args(&schema, &args);
                assert!(
                    matches!(checked, Err(ToolError::InvalidArguments(_))),
                    "{name}: {args} passed the schema: {checked:?}"
                );
                assert!(parse(args.clone()).is_err(), "{name}: {args} parsed");
            }
            // serde also reads a struct from an array of its fields, so here the schema is
            // what refuses a call whose arguments are no object.
            let positional = json!([required]);
            assert!(
                agent_registry::check_args(&schema, &positional).is_err(),
                "{name}: {positional} passed the schema"
            );
        }
    }

    /// The bounds the tools enforce are in their schemas, so a model sees them.
    #[test]
    fn schemas_state_the_bounds() {
        let check = |tool: &dyn Tool, args: Value, ok: bool| {
            let checked = agent_registry::check_args(&tool.parameters(), &args);
            assert_eq!(checked.is_ok(), ok, "{}: {args}: {checked:?}", tool.name());
        };
        check(&SearchDocsTool, json!({"query": "resume"}), true);
        check(
            &SearchDocsTool,
            json!({"query": "resume", "limit": 10}),
            true,
        );
        check(
            &SearchDocsTool,
            json!({"query": "resume", "limit": 0}),
            false,
        );
        check(
            &SearchDocsTool,
            json!({"query": "resume", "limit": 11}),
            false,
        );
        let long = "1".repeat(MAX_EXPRESSION_LEN + 1);
        check(&CalculatorTool, json!({"expression": long}), false);
        assert_eq!(
            CalculatorTool.parameters()["properties"]["expression"]["description"],
            "For example (12 + 3) * 7"
        );
    }
}
