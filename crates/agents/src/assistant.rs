//! `assistant`: a local rule-based agent (no language model) that picks tools by rules.
//!
//! It reads the message ([`plan`], in `rules`), says what it is doing (`agent_thinking`), and
//! when a rule fits calls the tools (arithmetic → `calculator`, the time in a known city or an
//! IANA zone → `current_time`, questions about this project → `search_docs`, an explicit
//! request such as "count the words in: …" → `text_stats`), streams its answer
//! (`agent_response_chunk`) and completes with it. When no rule fits (a greeting, a haiku, a
//! place it does not know, a general question) it calls no tool: it says plainly that it is a
//! local rule-based assistant without a language model, what it can do, and how to connect a
//! model (the `llm` agent). Its answers never pretend to come from a model.

use agent_registry::{Agent, AgentContext, AgentError, AgentInput, AgentOutput, ToolError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod follow_up;
mod rules;

pub use rules::{Help, Plan, Step, plan};

/// What the assistant can do, as the help answer lists it and `GET /agents` offers it: each
/// example is answered by a tool.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("arithmetic", "What is (12 + 3) * 7?"),
    ("the time in a city", "What time is it in Tokyo?"),
    ("questions about this server", "How does resume work?"),
    ("text statistics", "Count the words in: the quick brown fox"),
];

/// How to connect a model, with the server's real flags and variables (`agent-server serve`).
const CONNECT_MODEL: &str = "For anything else, connect a language model: start the server \
with `agent-server serve --llm-base-url URL --llm-model NAME` (or set `LLM_BASE_URL` and \
`LLM_MODEL`, and `LLM_API_KEY` for a hosted API), then choose the `llm` agent.";

/// The sentence for a place whose time the assistant does not know, with the cities it knows.
fn unknown_place_sentence(place: &str) -> String {
    let names: Vec<&str> = rules::CITIES.iter().map(|(_, name, _)| *name).collect();
    let (last, first) = names.split_last().unwrap_or((&"UTC", &[]));
    format!(
        "I do not know a place called \"{place}\", so I cannot tell its time. I know the time \
         in {} and {last}, and in any IANA time zone such as `Europe/Zurich`.",
        first.join(", ")
    )
}

/// The answer when no rule fits: why, what the assistant can do, and how to connect a model.
pub fn help_answer(help: &Help) -> String {
    const WHAT_I_AM: &str = "I am a local rule-based assistant without a language model";
    let opening = match help {
        Help::Greeting => format!("Hello! {WHAT_I_AM}, so I answer only what my rules know."),
        Help::UnknownPlace(place) => format!(
            "{} {WHAT_I_AM}, so I answer only what my rules know.",
            unknown_place_sentence(place)
        ),
        Help::Other => format!(
            "I cannot answer that. {WHAT_I_AM}: I cannot chat, write (a poem, a story) or \
             answer general questions."
        ),
    };
    let examples: String = EXAMPLES
        .iter()
        .map(|(what, example)| format!("\n- {what}: `{example}`"))
        .collect();
    format!("{opening}\n\nWhat I can do, for example:{examples}\n\n{CONNECT_MODEL}")
}

/// One sentence of the answer for a tool's result.
pub fn describe(step: &Step, result: &Result<Value, String>) -> String {
    let r = match result {
        Err(error) => return format!("I could not use {}: {error}.", step.tool),
        // A person answered in the tool's place (an approval's `respond`).
        Ok(Value::String(answer)) => {
            return format!("A person answered for {}: {answer}", step.tool);
        }
        Ok(r) => r,
    };
    match step.tool {
        // The expression is a code span: answers are rendered as markdown, where the `*`s
        // of "2*3*4" would otherwise become emphasis.
        "calculator" => format!(
            "`{}` = {}.",
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
        "search_docs" => docs_answer(r),
        "text_stats" => format!(
            "The text has {} words in {} sentence(s) and {} characters.",
            r["words"], r["sentences"], r["characters"]
        ),
        other => format!("{other} returned {r}."),
    }
}

/// The most of a section's prose a documentation answer quotes.
const QUOTED_CHARS: usize = 700;

/// The answer for a documentation search: the best section's prose, whole paragraphs and list
/// items up to [`QUOTED_CHARS`], under its heading and a link to it; the next sections as
/// links.
fn docs_answer(r: &Value) -> String {
    let results = r["results"].as_array().cloned().unwrap_or_default();
    let field = |hit: &Value, name: &str| hit[name].as_str().unwrap_or_default().to_owned();
    let Some(best) = results.iter().find(|hit| !field(hit, "text").is_empty()) else {
        return "I found nothing about that in the documentation.".into();
    };
    let link = |hit: &Value| format!("[{}]({})", field(hit, "section"), field(hit, "link"));
    let mut quoted = String::new();
    let text = field(best, "text");
    let blocks: Vec<&str> = text.split("\n\n").collect();
    for block in &blocks {
        if !quoted.is_empty() && quoted.len() + block.len() > QUOTED_CHARS {
            break;
        }
        quoted.push_str(&crate::tools::shorten(block, QUOTED_CHARS));
        quoted.push_str("\n\n");
    }
    let whole = quoted.trim_end().len() >= text.trim_end().len();
    // A last block that introduces what is not quoted ("Guarantees:") is left out too.
    while let Some(end) = quoted.trim_end().strip_suffix(':') {
        let cut = end.rfind("\n\n").map_or(0, |i| i + 2);
        if cut == 0 {
            break;
        }
        quoted.truncate(cut);
    }
    let mut answer = format!(
        "From **{}** in {}:\n\n{}",
        field(best, "section"),
        field(best, "document"),
        quoted.trim_end()
    );
    answer.push_str(&if whole {
        format!("\n\nSource: {}.", link(best))
    } else {
        format!("\n\nRead on in {}.", link(best))
    });
    let others: Vec<String> = results
        .iter()
        .filter(|hit| !std::ptr::eq(*hit, best))
        .map(|hit| format!("{} in {}", link(hit), field(hit, "document")))
        .collect();
    if !others.is_empty() {
        answer.push_str(&format!(" See also {}.", others.join("; ")));
    }
    answer
}

/// The local rule-based assistant.
#[derive(Debug, Default)]
pub struct AssistantAgent;

/// How far the assistant got through its plan: what a paused run keeps. The plan itself is
/// made again from the message as read (it depends on nothing else).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// The message as the assistant read it, when a follow-up made it differ from the run's
    /// (a resumed run gets no earlier turns to read it with again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_as: Option<String>,
    /// The answer's sentences for the steps done.
    sentences: Vec<String>,
    /// The step to do next.
    next: usize,
    /// The id of the next step's call, when it waits for approval.
    held: Option<String>,
}

impl AssistantAgent {
    /// Works through the plan for `message` from `progress` and answers; pauses when a
    /// step's tool call waits for approval.
    async fn answer(
        &self,
        ctx: &AgentContext,
        message: &str,
        mut progress: Progress,
    ) -> Result<AgentOutput, AgentError> {
        let answer = match plan(message) {
            Plan::Tools {
                steps,
                unknown_place,
            } => {
                for (index, step) in steps.iter().enumerate().skip(progress.next) {
                    let id = match progress.held.take() {
                        Some(held) => held,
                        None => {
                            ctx.think(step.why.clone());
                            format!("call_{}_{index}", ctx.scope().run_id.as_str())
                        }
                    };
                    let result = ctx
                        .call_tool_with_id(&id, step.tool, step.args.clone())
                        .await;
                    if let Err(ToolError::AwaitingApproval) = result {
                        ctx.think(format!(
                            "Using {} needs your approval; I will go on once you decide.",
                            step.tool
                        ));
                        progress.next = index;
                        progress.held = Some(id);
                        let state = serde_json::to_value(&progress).unwrap_or_default();
                        return Err(ctx.pause(state));
                    }
                    let result = result.map_err(|e| e.to_string());
                    progress.sentences.push(describe(step, &result));
                }
                let mut sentences = progress.sentences;
                sentences.extend(unknown_place.as_deref().map(unknown_place_sentence));
                sentences.join(" ")
            }
            Plan::Help(help) => {
                ctx.think("No rule of mine fits this message; I will say what I can do and how to connect a model.");
                help_answer(&help)
            }
        };
        for piece in answer.split_inclusive(' ') {
            ctx.respond_chunk(piece);
        }
        Ok(Value::String(answer).into())
    }
}

#[async_trait]
impl Agent for AssistantAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        ctx.think("I am a local rule-based agent (no language model). Reading your message.");
        let read_as = follow_up::standalone(&input.message, &input.history);
        if let Some(rewritten) = &read_as {
            ctx.think(format!(
                "This follows on from your earlier message; I read it as: {rewritten}"
            ));
        }
        let message = read_as.clone().unwrap_or(input.message);
        let progress = Progress {
            read_as,
            ..Progress::default()
        };
        self.answer(ctx, &message, progress).await
    }

    fn can_pause(&self) -> bool {
        true
    }

    async fn resume(
        &self,
        ctx: &AgentContext,
        input: AgentInput,
        state: Value,
    ) -> Result<AgentOutput, AgentError> {
        let progress: Progress = serde_json::from_value(state).map_err(|e| {
            AgentError::new(
                "bad_state",
                format!("the paused run's progress cannot be read: {e}"),
            )
        })?;
        // The same reading as when it began.
        let message = progress.read_as.clone().unwrap_or(input.message);
        self.answer(ctx, &message, progress).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step(tool: &'static str) -> Step {
        Step {
            tool,
            args: json!({}),
            why: String::new(),
        }
    }

    #[test]
    fn answers_describe_results_and_errors() {
        let table = [
            (
                "calculator",
                Ok(json!({"expression": "12*7", "value": 84})),
                "`12*7` = 84.",
            ),
            (
                "calculator",
                Ok(json!({"expression": "2*3*4", "value": 24})),
                "`2*3*4` = 24.",
            ),
            (
                "current_time",
                Ok(
                    json!({"timezone": "Asia/Tokyo", "local_time": "2026-11-24T21:00:00+09:00", "weekday": "Tuesday", "utc_offset": "+09:00"}),
                ),
                "In Asia/Tokyo it is 2026-11-24T21:00:00+09:00 (Tuesday, UTC+09:00).",
            ),
            (
                "text_stats",
                Ok(json!({"words": 4, "sentences": 1, "characters": 19, "lines": 1})),
                "The text has 4 words in 1 sentence(s) and 19 characters.",
            ),
            (
                "calculator",
                Err("bad".to_owned()),
                "I could not use calculator: bad.",
            ),
            (
                "search_docs",
                Ok(json!({"results": []})),
                "I found nothing about that in the documentation.",
            ),
            (
                "calculator",
                Ok(json!("about 84")),
                "A person answered for calculator: about 84",
            ),
        ];
        for (tool, result, expected) in table {
            assert_eq!(
                describe(&step(tool), &result),
                expected,
                "{tool} {result:?}"
            );
        }
    }

    /// A documentation answer is the best section's prose under its heading, with a link to
    /// it: no code fence, table or JSON, no cut-off snippets run together.
    #[test]
    fn a_documentation_answer_is_prose_with_its_heading_and_a_link() {
        let result =
            crate::tools::search_docs("How does resume work?", 2).map_err(|e| e.to_string());
        let answer = describe(&step("search_docs"), &result);
        println!("{answer}");
        assert!(
            answer.starts_with("From **Resume** in docs/protocol.md:\n\nConnections drop:"),
            "{answer}"
        );
        assert!(
            answer.contains("[Resume](/docs/protocol.md#resume)"),
            "{answer}"
        );
        assert!(answer.contains("1. Remember the `epoch`"), "{answer}");
        assert!(
            answer.contains("3. Read `resume` in the new `connection_established`.\n"),
            "what introduced the left-out table ends as a sentence: {answer}"
        );
        assert!(!answer.contains(":\n\nRead on"), "{answer}");
        for absent in ["```", "{\"status\"", "| `resume`", "…"] {
            assert!(!answer.contains(absent), "{absent:?} in {answer}");
        }
        // A section longer than what is quoted says where to read on.
        let long = json!({"results": [{"document": "d.md", "section": "Long", "link": "/docs/d.md#long",
            "text": format!("{}\n\n{}", "word ".repeat(100).trim(), "more ".repeat(200).trim())}]});
        let answer = describe(&step("search_docs"), &Ok(long));
        assert!(
            answer.ends_with("Read on in [Long](/docs/d.md#long)."),
            "{answer}"
        );
        assert!(!answer.contains("more"), "{answer}");
    }

    /// Every help answer says what the assistant is, what it can do and how to connect a
    /// model, with the server's real flags; each kind opens its own way.
    #[test]
    fn help_answers_are_honest_and_say_how_to_connect_a_model() {
        let table = [
            (Help::Greeting, "Hello!"),
            (Help::Other, "I cannot answer that."),
            (
                Help::UnknownPlace("Atlantis".into()),
                "I do not know a place called \"Atlantis\"",
            ),
        ];
        for (help, opening) in table {
            let answer = help_answer(&help);
            assert!(answer.starts_with(opening), "{answer}");
            for needed in [
                "local rule-based assistant without a language model",
                "`What is (12 + 3) * 7?`",
                "--llm-base-url URL --llm-model NAME",
                "`LLM_BASE_URL`",
                "`LLM_MODEL`",
                "`LLM_API_KEY`",
                "the `llm` agent",
            ] {
                assert!(
                    answer.contains(needed),
                    "{help:?} lacks {needed:?}: {answer}"
                );
            }
            assert!(!answer.contains("[local rule-based agent]"), "{answer}");
        }
        let atlantis = help_answer(&Help::UnknownPlace("Atlantis".into()));
        assert!(
            atlantis.contains("Tokyo, London, Paris") && atlantis.contains("Delhi and UTC"),
            "{atlantis}"
        );
    }

    /// The examples the help answer offers are answered by tools, not by more help.
    #[test]
    fn every_example_of_the_help_answer_is_answered_by_a_tool() {
        for (what, example) in EXAMPLES {
            assert!(
                matches!(plan(example), Plan::Tools { .. }),
                "{what}: {example:?} gets {:?}",
                plan(example)
            );
        }
    }
}
