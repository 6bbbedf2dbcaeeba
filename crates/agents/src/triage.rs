//! `triage`: a supervisor that splits a request into parts and hands each part to the
//! `assistant` as a sub-run.
//!
//! Each sub-run has its own run id and lifecycle, runs under a child context of the triage
//! run, and carries `parent_run_id`; the parts run at once, and the triage run's own terminal
//! event comes after all of theirs (the engine guarantees both, and cancelling the triage run
//! cancels its sub-runs). Like the assistant, it is rule-based and says so in its thinking; its
//! answer is a markdown list with one item per part.

use agent_registry::{Agent, AgentContext, AgentError, AgentInput, AgentOutput};
use async_trait::async_trait;
use serde_json::{Value, json};

/// Requests it splits well, each into parts the assistant answers with a tool, for `GET /agents`.
pub const EXAMPLES: &[&str] = &[
    "What is 12*7 and what time is it in Tokyo?",
    "What time is it in London? What time is it in New York?",
    "Count the words in: to be or not to be. What is 2^10?",
];

/// At most this many parts are handed out; the rest stay with the last part.
pub const MAX_PARTS: usize = 5;

/// The parts of `message`: its questions and sentences, and clauses joined by " and ".
pub fn split(message: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        // A '.' ends a sentence only before a space or the end, not inside "2.5".
        let ends = match c {
            '?' | '!' | ';' => true,
            '.' => chars.peek().is_none_or(|n| n.is_whitespace()),
            _ => false,
        };
        if ends {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    let parts: Vec<String> = parts
        .iter()
        .flat_map(|p| p.split(" and ").map(str::to_owned).collect::<Vec<_>>())
        .map(|p| p.trim().trim_start_matches(['.', ',']).trim().to_owned())
        .filter(|p| p.chars().filter(|c| c.is_alphanumeric()).count() >= 2)
        .collect();
    if parts.len() <= MAX_PARTS {
        return parts;
    }
    let mut kept = parts[..MAX_PARTS - 1].to_vec();
    kept.push(parts[MAX_PARTS - 1..].join(" "));
    kept
}

/// The triage supervisor.
#[derive(Debug, Default)]
pub struct TriageAgent;

#[async_trait]
impl Agent for TriageAgent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let parts = split(&input.message);
        if parts.is_empty() {
            return Err(AgentError::new(
                "empty_request",
                "the message has nothing to triage",
            ));
        }
        ctx.think(format!(
            "I am a local rule-based supervisor. I split your request into {} part(s) and hand each to the assistant.",
            parts.len()
        ));
        let calls = parts
            .iter()
            .map(|part| ctx.run_sub_agent("assistant", AgentInput::message(part.clone())));
        let answers = futures::future::join_all(calls).await;
        ctx.think("All parts are answered; putting the answer together.");
        let mut lines = Vec::new();
        let mut results = Vec::new();
        for (i, (part, answer)) in parts.iter().zip(answers).enumerate() {
            let text = match answer {
                Ok(output) => output.result.as_str().unwrap_or_default().trim().to_owned(),
                Err(error) => format!("(this part failed: {error})"),
            };
            // Continuation lines are indented so a multi-line answer (the assistant's help)
            // stays inside its item of the markdown list.
            lines.push(format!("{}. {}", i + 1, text.replace('\n', "\n   ")));
            results.push(json!({ "part": part, "answer": text }));
        }
        let answer = lines.join("\n");
        for piece in answer.split_inclusive(' ') {
            ctx.respond_chunk(piece);
        }
        Ok(json!({ "answer": answer, "parts": Value::Array(results) }).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each example splits into parts the assistant answers with a tool.
    #[test]
    fn every_example_splits_into_parts_the_assistant_answers() {
        for example in EXAMPLES {
            let parts = split(example);
            assert!(parts.len() >= 2, "{example:?}: {parts:?}");
            for part in parts {
                assert!(
                    matches!(
                        crate::assistant::plan(&part),
                        crate::assistant::Plan::Tools { .. }
                    ),
                    "{example:?}: {part:?} gets {:?}",
                    crate::assistant::plan(&part)
                );
            }
        }
    }

    fn check(message: &str, expected: &[&str]) {
        assert_eq!(split(message), expected, "{message:?}");
    }

    #[test]
    fn split_table() {
        check("What is 12*7?", &["What is 12*7?"]);
        check(
            "What is 12*7? And the time in Tokyo?",
            &["What is 12*7?", "And the time in Tokyo?"],
        );
        check(
            "What is 2.5*2 and the time in Paris",
            &["What is 2.5*2", "the time in Paris"],
        );
        check("hi", &["hi"]);
        check("?!", &[]);
        check(
            "a1? b2? c3? d4? e5? f6? g7?",
            &["a1?", "b2?", "c3?", "d4?", "e5? f6? g7?"],
        );
    }
}
