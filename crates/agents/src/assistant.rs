//! `assistant`: a local rule-based agent (no language model) that picks tools by rules.
//!
//! It reads the message, says what it is doing (`agent_thinking`), calls the tools that fit
//! (arithmetic → `calculator`, "time in `<place>`" → `current_time`, questions about this
//! project → `search_docs`, anything else → `text_stats`), streams its answer
//! (`agent_response_chunk`), and completes with that answer. Every answer says it comes from
//! a local rule-based agent: it never pretends to be a model.

use agent_registry::{Agent, AgentContext, AgentError, AgentInput, AgentOutput};
use async_trait::async_trait;
use serde_json::{Value, json};

/// The label every answer starts with.
pub const LABEL: &str = "[local rule-based agent]";

/// A tool call the assistant plans: the tool, its arguments, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The tool.
    pub tool: &'static str,
    /// Its arguments.
    pub args: Value,
    /// Why, as said in `agent_thinking`.
    pub why: String,
}

const CITIES: &[(&str, &str)] = &[
    ("tokyo", "Asia/Tokyo"),
    ("london", "Europe/London"),
    ("paris", "Europe/Paris"),
    ("berlin", "Europe/Berlin"),
    ("zurich", "Europe/Zurich"),
    ("new york", "America/New_York"),
    ("los angeles", "America/Los_Angeles"),
    ("san francisco", "America/Los_Angeles"),
    ("sydney", "Australia/Sydney"),
    ("singapore", "Asia/Singapore"),
    ("mumbai", "Asia/Kolkata"),
    ("delhi", "Asia/Kolkata"),
    ("utc", "UTC"),
];

/// The arithmetic expression in `message`, if any: the longest run of digits, operators,
/// parentheses, dots and spaces that holds a digit and an operator between operands.
pub fn find_expression(message: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_digit() || "+-*/%^(). ".contains(c);
    let mut best: Option<String> = None;
    for run in message.split(|c: char| !allowed(c)) {
        let run = run.trim().trim_end_matches(['.', ' ']);
        let has_digit = run.chars().any(|c| c.is_ascii_digit());
        let has_operator = run.char_indices().any(|(i, c)| {
            "+-*/%^".contains(c) && i > 0 && run[..i].chars().any(|d| d.is_ascii_digit())
        });
        if has_digit && has_operator && best.as_ref().is_none_or(|b| run.len() > b.len()) {
            best = Some(run.to_owned());
        }
    }
    best
}

/// The IANA time zone `message` asks the time in, if it asks for a time.
pub fn find_timezone(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    if !["time", "clock", "date"].iter().any(|w| lower.contains(w)) {
        return None;
    }
    let iana = message
        .split(|c: char| c.is_whitespace() || ",?!;".contains(c))
        .find(|w| {
            let parts: Vec<_> = w.trim_end_matches('.').split('/').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| p.chars().next().is_some_and(char::is_uppercase))
        });
    if let Some(zone) = iana {
        return Some(zone.trim_end_matches('.').to_owned());
    }
    CITIES
        .iter()
        .find(|(city, _)| lower.contains(city))
        .map(|(_, zone)| (*zone).to_owned())
}

/// The tools the assistant calls for `message`, in order.
pub fn plan(message: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(expression) = find_expression(message) {
        steps.push(Step {
            tool: "calculator",
            args: json!({ "expression": expression }),
            why: format!(
                "The message contains arithmetic ({expression}); I will use the calculator."
            ),
        });
    }
    if let Some(zone) = find_timezone(message) {
        steps.push(Step {
            tool: "current_time",
            args: json!({ "timezone": zone }),
            why: format!("The message asks for the time; I will look it up for {zone}."),
        });
    }
    let lower = message.to_lowercase();
    let about_docs = [
        "doc",
        "how do",
        "how does",
        "how can",
        "protocol",
        "explain",
        "what does",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if steps.is_empty() && about_docs {
        steps.push(Step {
            tool: "search_docs",
            args: json!({ "query": message, "limit": 2 }),
            why: "This looks like a question about this project; I will search its documentation."
                .into(),
        });
    }
    if steps.is_empty() {
        steps.push(Step {
            tool: "text_stats",
            args: json!({ "text": message }),
            why: "No tool fits a question here; I will measure the message instead.".into(),
        });
    }
    steps
}

/// One sentence of the answer for a tool's result.
pub fn describe(step: &Step, result: &Result<Value, String>) -> String {
    let r = match result {
        Err(error) => return format!("I could not use {}: {error}.", step.tool),
        Ok(r) => r,
    };
    match step.tool {
        "calculator" => format!(
            "{} = {}.",
            r["expression"].as_str().unwrap_or("?"),
            r["value"]
        ),
        "current_time" => format!(
            "In {} it is {} ({}, UTC{}).",
            r["timezone"].as_str().unwrap_or("?"),
            r["local_time"].as_str().unwrap_or("?"),
            r["weekday"].as_str().unwrap_or("?"),
            r["utc_offset"].as_str().unwrap_or("?"),
        ),
        "search_docs" => {
            let results = r["results"].as_array().cloned().unwrap_or_default();
            if results.is_empty() {
                return "I found nothing about that in the documentation.".into();
            }
            results
                .iter()
                .map(|hit| {
                    format!(
                        "{} ({}): {}…",
                        hit["document"].as_str().unwrap_or("?"),
                        hit["section"].as_str().unwrap_or("?"),
                        hit["snippet"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(160)
                            .collect::<String>()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => format!(
            "Your message has {} words in {} sentence(s) and {} characters.",
            r["words"], r["sentences"], r["characters"]
        ),
    }
}

/// The local rule-based assistant.
#[derive(Debug, Default)]
pub struct AssistantAgent;

#[async_trait]
impl Agent for AssistantAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        ctx.think("I am a local rule-based agent (no language model). Reading your message.");
        let mut sentences = Vec::new();
        for step in plan(&input.message) {
            ctx.think(step.why.clone());
            let result = ctx
                .call_tool(step.tool, step.args.clone())
                .await
                .map_err(|e| e.to_string());
            sentences.push(describe(&step, &result));
        }
        let answer = format!("{LABEL} {}", sentences.join(" "));
        for piece in answer.split_inclusive(' ') {
            ctx.respond_chunk(piece);
        }
        Ok(Value::String(answer).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str, expected: &[(&str, Value)]) {
        let got: Vec<(&str, Value)> = plan(message)
            .into_iter()
            .map(|s| (s.tool, s.args))
            .collect();
        let expected: Vec<(&str, Value)> = expected.to_vec();
        assert_eq!(got, expected, "{message:?}");
    }

    #[test]
    fn plan_table() {
        check(
            "What is 12*7?",
            &[("calculator", json!({"expression": "12*7"}))],
        );
        check(
            "compute (2 + 3) * 4 please",
            &[("calculator", json!({"expression": "(2 + 3) * 4"}))],
        );
        check(
            "And the time in Tokyo?",
            &[("current_time", json!({"timezone": "Asia/Tokyo"}))],
        );
        check(
            "what time is it in America/New_York",
            &[("current_time", json!({"timezone": "America/New_York"}))],
        );
        check(
            "What is 2+2 and the time in Zurich?",
            &[
                ("calculator", json!({"expression": "2+2"})),
                ("current_time", json!({"timezone": "Europe/Zurich"})),
            ],
        );
        check(
            "How does resume work?",
            &[(
                "search_docs",
                json!({"query": "How does resume work?", "limit": 2}),
            )],
        );
        check(
            "I went to Tokyo in 2019.",
            &[("text_stats", json!({"text": "I went to Tokyo in 2019."}))],
        );
        check("hello", &[("text_stats", json!({"text": "hello"}))]);
        check(
            "version 1.2.3 - 4",
            &[("calculator", json!({"expression": "1.2.3 - 4"}))],
        );
    }

    #[test]
    fn answers_describe_results_and_errors() {
        let step = |tool| Step {
            tool,
            args: json!({}),
            why: String::new(),
        };
        assert_eq!(
            describe(
                &step("calculator"),
                &Ok(json!({"expression": "12*7", "value": 84}))
            ),
            "12*7 = 84."
        );
        assert_eq!(
            describe(
                &step("current_time"),
                &Ok(
                    json!({"timezone": "Asia/Tokyo", "local_time": "2026-11-24T21:00:00+09:00", "weekday": "Tuesday", "utc_offset": "+09:00"})
                )
            ),
            "In Asia/Tokyo it is 2026-11-24T21:00:00+09:00 (Tuesday, UTC+09:00)."
        );
        assert_eq!(
            describe(&step("calculator"), &Err("bad".into())),
            "I could not use calculator: bad."
        );
        assert_eq!(
            describe(&step("search_docs"), &Ok(json!({"results": []}))),
            "I found nothing about that in the documentation."
        );
    }
}
