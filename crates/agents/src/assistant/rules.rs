//! The assistant's rules: what a message asks, read without a language model.
//!
//! [`plan`] turns a message into a [`Plan`]: the tools to call, or, when no rule fits, the
//! kind of help to answer with. The rules are deliberately narrow (a word list, a phrase list,
//! an arithmetic scanner): a message they do not recognise gets the help answer, never a guess
//! dressed up as an answer. Words are compared after [`normalize`], so punctuation, case and
//! apostrophes do not matter and "utc" never matches inside another word.

use serde_json::{Value, json};

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

/// What the assistant does with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Call these tools in order and describe their results.
    Tools {
        /// The calls, at least one.
        steps: Vec<Step>,
        /// A place the message also asks the time in that the assistant does not know.
        unknown_place: Option<String>,
    },
    /// No rule fits: say what the assistant can do and how to connect a model.
    Help(Help),
}

/// Why no rule fits, which decides how the help answer opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Help {
    /// A greeting ("hello", "hi there").
    Greeting,
    /// The time in a place the assistant does not know.
    UnknownPlace(String),
    /// Anything else: a creative request, a general question, small talk.
    Other,
}

/// The cities the assistant knows: the name in lowercase words, as shown, and its time zone.
pub(crate) const CITIES: &[(&str, &str, &str)] = &[
    ("tokyo", "Tokyo", "Asia/Tokyo"),
    ("london", "London", "Europe/London"),
    ("paris", "Paris", "Europe/Paris"),
    ("berlin", "Berlin", "Europe/Berlin"),
    ("zurich", "Zurich", "Europe/Zurich"),
    ("new york", "New York", "America/New_York"),
    ("los angeles", "Los Angeles", "America/Los_Angeles"),
    ("san francisco", "San Francisco", "America/Los_Angeles"),
    ("sydney", "Sydney", "Australia/Sydney"),
    ("singapore", "Singapore", "Asia/Singapore"),
    ("mumbai", "Mumbai", "Asia/Kolkata"),
    ("delhi", "Delhi", "Asia/Kolkata"),
    ("utc", "UTC", "UTC"),
];

/// Phrases that ask for the time or the date (in normalized words).
const TIME_PHRASES: &[&str] = &[
    "what time",
    "time is it",
    "time in",
    "time now",
    "current time",
    "local time",
    "what s the time",
    "what is the time",
    "tell me the time",
    "what s the date",
    "what is the date",
    "today s date",
    "what day is it",
];

/// Phrases that ask for statistics of a text (in normalized words).
const STATS_PHRASES: &[&str] = &[
    "count the words",
    "count words",
    "word count",
    "how many words",
    "count the characters",
    "how many characters",
    "how many sentences",
    "text stats",
    "text statistics",
];

/// Words that make a message a question or a request for an explanation.
const QUESTION_WORDS: &[&str] = &[
    "how", "what", "why", "where", "which", "when", "explain", "describe",
];

/// Words about this project: a question that holds one is searched for in its documentation.
const PROJECT_WORDS: &[&str] = &[
    "doc",
    "docs",
    "documentation",
    "readme",
    "project",
    "protocol",
    "resume",
    "reconnect",
    "server",
    "agent",
    "agents",
    "assistant",
    "triage",
    "engine",
    "thread",
    "threads",
    "history",
    "websocket",
    "token",
    "tokens",
    "jwt",
    "run",
    "runs",
    "tool",
    "tools",
    "broker",
    "redis",
    "postgres",
    "migration",
    "migrate",
    "config",
    "configuration",
    "architecture",
    "api",
    "frame",
    "frames",
    "event",
    "events",
    "epoch",
    "seq",
    "cancel",
    "llm",
    "legacy",
    "metrics",
];

/// Words that open a greeting.
const GREETINGS: &[&str] = &[
    "hello",
    "hi",
    "hey",
    "hallo",
    "hiya",
    "howdy",
    "greetings",
    "good morning",
    "good afternoon",
    "good evening",
];

/// Words after a place name that are not part of it ("in Tokyo right now").
const NOT_PLACE: &[&str] = &["right", "now", "today", "currently", "please", "exactly"];

/// `text` in lowercase words separated by single spaces, padded with a space at each end so
/// a phrase matches only whole words (`" utc "` is not inside `" hutch "`).
pub(crate) fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!(" {} ", words.join(" "))
}

fn has_phrase(normalized: &str, phrases: &[&str]) -> bool {
    phrases
        .iter()
        .any(|p| normalized.contains(&format!(" {p} ")))
}

/// The arithmetic expression in `message`, if any: the longest run of digits, operators,
/// parentheses, dots and spaces that holds a digit and an operator between operands.
pub(crate) fn find_expression(message: &str) -> Option<String> {
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

/// What a message asks about the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeQuestion {
    /// The time in this IANA time zone.
    Zone(String),
    /// The time in a place the assistant does not know.
    UnknownPlace(String),
}

/// What `message` asks about the time, if it asks for the time or the date: an IANA zone it
/// names, a city the assistant knows, a place it does not know, or (no place at all) UTC.
pub(crate) fn find_time_question(message: &str) -> Option<TimeQuestion> {
    let normalized = normalize(message);
    if !has_phrase(&normalized, TIME_PHRASES) {
        return None;
    }
    if let Some(zone) = iana_zone(message) {
        return Some(TimeQuestion::Zone(zone));
    }
    if let Some((_, _, zone)) = CITIES
        .iter()
        .find(|(city, _, _)| normalized.contains(&format!(" {city} ")))
    {
        return Some(TimeQuestion::Zone((*zone).to_owned()));
    }
    Some(match place_after_in(message) {
        Some(place) => TimeQuestion::UnknownPlace(place),
        None => TimeQuestion::Zone("UTC".to_owned()),
    })
}

/// A word shaped like an IANA zone name (`Area/Location`, each part capitalised).
fn iana_zone(message: &str) -> Option<String> {
    message
        .split(|c: char| c.is_whitespace() || ",?!;".contains(c))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| {
            let parts: Vec<_> = w.split('/').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| p.chars().next().is_some_and(char::is_uppercase))
        })
        .map(str::to_owned)
}

/// The place named after the last "in" of `message`: up to four words, ending at the first
/// punctuation, without trailing words such as "now". Only letters, digits, spaces, hyphens,
/// dots and apostrophes are kept, so the name is safe to quote in a markdown answer.
fn place_after_in(message: &str) -> Option<String> {
    let words: Vec<&str> = message.split_whitespace().collect();
    let start = words.iter().rposition(|w| w.eq_ignore_ascii_case("in"))? + 1;
    let mut place = Vec::new();
    for word in words.iter().skip(start).take(4) {
        let ends = word.ends_with(|c: char| ",;:?!".contains(c));
        let clean: String = word
            .chars()
            .filter(|c| c.is_alphanumeric() || "-'.".contains(*c))
            .collect();
        let clean = clean.trim_end_matches('.').to_owned();
        if !clean.is_empty() {
            place.push(clean);
        }
        if ends {
            break;
        }
    }
    while place
        .last()
        .is_some_and(|w| NOT_PLACE.contains(&w.to_lowercase().as_str()))
    {
        place.pop();
    }
    (!place.is_empty()).then(|| place.join(" "))
}

/// The text to measure when `message` explicitly asks for text statistics: what follows
/// its first colon, or the whole message when there is none.
fn stats_request(message: &str, normalized: &str) -> Option<String> {
    if !has_phrase(normalized, STATS_PHRASES) {
        return None;
    }
    let text = match message.split_once(':') {
        Some((_, after)) if !after.trim().is_empty() => after.trim(),
        _ => message,
    };
    Some(text.to_owned())
}

/// Whether `message` is a question about this project.
fn about_project(message: &str, normalized: &str) -> bool {
    let question = message.trim_end().ends_with('?') || has_phrase(normalized, QUESTION_WORDS);
    question && has_phrase(normalized, PROJECT_WORDS)
}

/// Whether `normalized` is a short greeting.
fn is_greeting(normalized: &str) -> bool {
    let words = normalized.split_whitespace().count();
    words <= 4
        && GREETINGS
            .iter()
            .any(|g| normalized.starts_with(&format!(" {g} ")))
}

/// What the assistant does with `message`. An explicit request for text statistics is only
/// that; otherwise arithmetic and the time can be asked together, and the documentation is
/// searched only when neither was asked.
pub fn plan(message: &str) -> Plan {
    let normalized = normalize(message);
    if let Some(text) = stats_request(message, &normalized) {
        let step = Step {
            tool: "text_stats",
            args: json!({ "text": text }),
            why: "You asked for text statistics; I will measure the text.".into(),
        };
        return Plan::Tools {
            steps: vec![step],
            unknown_place: None,
        };
    }
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
    let mut unknown_place = None;
    match find_time_question(message) {
        Some(TimeQuestion::Zone(zone)) => steps.push(Step {
            tool: "current_time",
            args: json!({ "timezone": zone }),
            why: format!("The message asks for the time; I will look it up for {zone}."),
        }),
        Some(TimeQuestion::UnknownPlace(place)) => unknown_place = Some(place),
        None => {}
    }
    if steps.is_empty() && unknown_place.is_none() && about_project(message, &normalized) {
        steps.push(Step {
            tool: "search_docs",
            args: json!({ "query": message, "limit": 2 }),
            why: "This looks like a question about this project; I will search its documentation."
                .into(),
        });
    }
    match (steps.is_empty(), unknown_place) {
        (false, unknown_place) => Plan::Tools {
            steps,
            unknown_place,
        },
        (true, Some(place)) => Plan::Help(Help::UnknownPlace(place)),
        (true, None) if is_greeting(&normalized) => Plan::Help(Help::Greeting),
        (true, None) => Plan::Help(Help::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan in one line: `tool {args}` per step (joined by "; ", then `+ unknown <place>`),
    /// or `greeting`, `unknown <place>`, `help`.
    fn summary(plan: &Plan) -> String {
        match plan {
            Plan::Tools {
                steps,
                unknown_place,
            } => {
                let mut parts: Vec<String> = steps
                    .iter()
                    .map(|s| format!("{} {}", s.tool, s.args))
                    .collect();
                if let Some(place) = unknown_place {
                    parts.push(format!("+ unknown {place}"));
                }
                parts.join("; ")
            }
            Plan::Help(Help::Greeting) => "greeting".into(),
            Plan::Help(Help::UnknownPlace(place)) => format!("unknown {place}"),
            Plan::Help(Help::Other) => "help".into(),
        }
    }

    fn check(message: &str, expected: &str) {
        assert_eq!(summary(&plan(message)), expected, "{message:?}");
    }

    #[test]
    fn plan_table() {
        let table = [
            ("What is 12*7?", r#"calculator {"expression":"12*7"}"#),
            (
                "compute (2 + 3) * 4 please",
                r#"calculator {"expression":"(2 + 3) * 4"}"#,
            ),
            (
                "version 1.2.3 - 4",
                r#"calculator {"expression":"1.2.3 - 4"}"#,
            ),
            (
                "And the time in Tokyo?",
                r#"current_time {"timezone":"Asia/Tokyo"}"#,
            ),
            (
                "what time is it in America/New_York",
                r#"current_time {"timezone":"America/New_York"}"#,
            ),
            (
                "What's the time in new york right now?",
                r#"current_time {"timezone":"America/New_York"}"#,
            ),
            ("What time is it?", r#"current_time {"timezone":"UTC"}"#),
            (
                "What is 2+2 and the time in Zurich?",
                r#"calculator {"expression":"2+2"}; current_time {"timezone":"Europe/Zurich"}"#,
            ),
            ("What time is it in Atlantis?", "unknown Atlantis"),
            ("what time is it in atlantis right now?", "unknown atlantis"),
            ("time in El Dorado, please", "unknown El Dorado"),
            (
                "What is 2+2 and the time in Atlantis?",
                r#"calculator {"expression":"2+2"}; + unknown Atlantis"#,
            ),
            (
                "How does resume work?",
                r#"search_docs {"limit":2,"query":"How does resume work?"}"#,
            ),
            (
                "Explain the protocol",
                r#"search_docs {"limit":2,"query":"Explain the protocol"}"#,
            ),
            (
                "count the words in: the quick brown fox",
                r#"text_stats {"text":"the quick brown fox"}"#,
            ),
            (
                "How many words are in this sentence?",
                r#"text_stats {"text":"How many words are in this sentence?"}"#,
            ),
            ("hello", "greeting"),
            ("Hi there!", "greeting"),
            ("Good morning", "greeting"),
            ("Write me a haiku", "help"),
            ("Write me a haiku about time", "help"),
            ("I went to Tokyo in 2019.", "help"),
            ("How do I bake bread?", "help"),
            ("What can you do?", "help"),
            ("What is the meaning of life?", "help"),
            ("Tell me about the weather in Paris", "help"),
            ("Hello, can you write a poem for my mother?", "help"),
            ("", "help"),
            ("   ", "help"),
        ];
        for (message, expected) in table {
            check(message, expected);
        }
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let table = [
            (" hutch ", "utc", false),
            (" in utc ", "utc", true),
            (" sometimes in paris ", "time in", false),
            (" what time is it ", "what time", true),
        ];
        for (normalized, phrase, expected) in table {
            assert_eq!(
                has_phrase(normalized, &[phrase]),
                expected,
                "{phrase:?} in {normalized:?}"
            );
        }
        assert_eq!(normalize("What's the TIME?"), " what s the time ");
    }
}
