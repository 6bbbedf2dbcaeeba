//! Follow-ups the assistant's rules can follow, read with the thread's earlier turns: "and
//! times 2?" after "What is 12*7?" is `(12*7)*2`; "and in Tokyo?" after a question about the
//! time asks the time in Tokyo. [`standalone`] rewrites such a message into one that says it
//! all, which then goes through [`plan`](super::plan) like any other. Anything else (a
//! question about what the answer said, "why?") needs a language model.

use agent_registry::Turn;

use super::rules::{CITIES, find_expression, find_time_question, normalize};

/// The operators a follow-up may continue the last result with, as words and as symbols.
const OPERATORS: &[(&str, &str)] = &[
    ("multiplied by", "*"),
    ("times", "*"),
    ("x", "*"),
    ("*", "*"),
    ("divided by", "/"),
    ("over", "/"),
    ("/", "/"),
    ("plus", "+"),
    ("+", "+"),
    ("minus", "-"),
    ("-", "-"),
    ("to the power of", "^"),
    ("^", "^"),
];

/// Words a follow-up may open with.
const OPENERS: &[&str] = &["and then", "and", "then", "now", "what about", "how about"];

/// `message` rewritten to stand alone, when it continues the thread's last turn in a way the
/// rules follow; `None` when it stands alone already or is no such follow-up.
pub(crate) fn standalone(message: &str, history: &[Turn]) -> Option<String> {
    if find_expression(message).is_some() || find_time_question(message).is_some() {
        return None;
    }
    let rest = strip_opener(message);
    if let Some((operator, operand)) = continued_arithmetic(rest) {
        let previous = expression_of(history)?;
        return Some(format!("What is ({previous}){operator}{operand}?"));
    }
    let place = place_of(rest)?;
    // A bare word ("Thanks!") is no place: without "and …" or "in …", only a city it knows.
    let marked = rest.len() < message.trim().len() || strip_word(rest, "in").is_some();
    let known = CITIES
        .iter()
        .any(|(name, _, _)| normalize(&place).trim() == *name);
    if !marked && !known {
        return None;
    }
    let last = history.last()?;
    let asked_time = find_time_question(&last.user).is_some()
        || standalone(&last.user, &history[..history.len() - 1])
            .is_some_and(|rewritten| find_time_question(&rewritten).is_some());
    asked_time.then(|| format!("What time is it in {place}?"))
}

/// The arithmetic the thread's last turn computed: its own expression, or the one its
/// follow-up made of the turn before.
fn expression_of(history: &[Turn]) -> Option<String> {
    let (last, earlier) = history.split_last()?;
    if let Some(expression) = find_expression(&last.user) {
        return Some(expression);
    }
    let (operator, operand) = continued_arithmetic(strip_opener(&last.user))?;
    Some(format!("({}){operator}{operand}", expression_of(earlier)?))
}

/// The message without its opening "and", "then", "what about", ….
fn strip_opener(message: &str) -> &str {
    let trimmed = message.trim();
    for opener in OPENERS {
        if let Some(rest) = strip_word(trimmed, opener) {
            return rest;
        }
    }
    trimmed
}

/// `text` after `word` (case-insensitive), when it starts with it as a whole word.
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    let whole = rest.is_empty()
        || rest.starts_with(char::is_whitespace)
        || !word.ends_with(|c: char| c.is_alphanumeric());
    (head.eq_ignore_ascii_case(word) && whole).then(|| rest.trim_start())
}

/// "times 2?" as (`*`, `2`): an operator, then a number, and nothing else.
fn continued_arithmetic(text: &str) -> Option<(&'static str, String)> {
    let text = text.trim_end_matches(['?', '.', '!', ' ']);
    OPERATORS.iter().find_map(|(word, symbol)| {
        let number = strip_word(text, word)?.trim();
        let valid = !number.is_empty()
            && number.parse::<f64>().is_ok()
            && number.chars().all(|c| c.is_ascii_digit() || c == '.');
        valid.then(|| (*symbol, number.to_owned()))
    })
}

/// "in Tokyo?" or "Tokyo?" as `Tokyo`: a place of one to three words, and nothing else.
fn place_of(text: &str) -> Option<String> {
    let text = text.trim_end_matches(['?', '.', '!', ' ']);
    let place = strip_word(text, "in").unwrap_or(text).trim();
    let words = normalize(place);
    let count = words.split_whitespace().count();
    let capitalised = place.starts_with(|c: char| c.is_uppercase());
    ((1..=3).contains(&count)
        && capitalised
        && place.chars().all(|c| c.is_alphabetic() || c == ' '))
    .then(|| place.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(user: &str) -> Turn {
        Turn {
            user: user.to_owned(),
            assistant: "(the answer)".to_owned(),
        }
    }

    #[test]
    fn follow_ups_are_rewritten_from_the_earlier_turns() {
        let arithmetic = [turn("What is 12*7?")];
        let time = [turn("What time is it in London?")];
        let chained = [turn("What is 12*7?"), turn("and times 2?")];
        let cases: &[(&str, &[Turn], Option<&str>)] = &[
            ("and times 2?", &arithmetic, Some("What is (12*7)*2?")),
            ("Times 2", &arithmetic, Some("What is (12*7)*2?")),
            ("then divided by 4", &arithmetic, Some("What is (12*7)/4?")),
            ("and minus 0.5?", &arithmetic, Some("What is (12*7)-0.5?")),
            ("and plus 1?", &chained, Some("What is ((12*7)*2)+1?")),
            ("and in Tokyo?", &time, Some("What time is it in Tokyo?")),
            (
                "What about New York?",
                &time,
                Some("What time is it in New York?"),
            ),
            ("and Paris?", &time, Some("What time is it in Paris?")),
            // Nothing to follow, or no follow-up at all.
            ("and times 2?", &[], None),
            ("and times 2?", &time, None),
            ("and in Tokyo?", &arithmetic, None),
            ("What is 3+4?", &arithmetic, None),
            ("and times two?", &arithmetic, None),
            ("why?", &arithmetic, None),
            ("Tokyo?", &time, Some("What time is it in Tokyo?")),
            ("Thanks!", &time, None),
            ("and what does it mean for the answer?", &time, None),
        ];
        for (message, history, want) in cases {
            assert_eq!(
                standalone(message, history).as_deref(),
                *want,
                "{message} after {history:?}"
            );
        }
    }
}
