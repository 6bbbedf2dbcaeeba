//! The size bound of a tool's result.
//!
//! A tool (an MCP server's, above all) can return far more than a model's context or a
//! user's event stream should carry. The dispatcher measures each result as JSON text and
//! replaces one over `DispatchConfig::max_result_bytes` by
//!
//! ```json
//! {"truncated": true, "bytes": 300000, "max_bytes": 262144, "preview": "{\"text\":\"The first…"}
//! ```
//!
//! Why a replacement rather than cutting the long strings inside the result: a result is
//! large either because of one long string (an MCP server's text) or because of many small
//! parts (a long array, a wide object), and only a rule on the whole text bounds both. The
//! replacement is valid JSON of a fixed shape, so the agent, the model (which gets exactly
//! this value) and the user's `tool_completed` all see plainly that the result was cut and
//! how large it was, rather than a value that looks whole. `preview` is the start of the
//! result's JSON text, cut so that the whole replacement, encoded, stays within the bound.
//!
//! A failed call's message is bounded the same way (cut with a marker), since the model
//! reads it too.

use std::io;

use serde_json::{Value, json};

use crate::ToolError;

/// `value` as it may leave the dispatcher: itself when its JSON text is at most `max`
/// bytes, else the truncated form (see the module documentation); `true` when it was cut.
pub(crate) fn bound_value(value: Value, max: usize) -> (Value, bool) {
    let mut text = Prefix::new(max);
    // Writing into `Prefix` cannot fail, and serializing a `Value` cannot either.
    let _ = serde_json::to_writer(&mut text, &value);
    if text.total <= max {
        return (value, false);
    }
    let envelope = |preview: &str| json!({"truncated": true, "bytes": text.total, "max_bytes": max, "preview": preview});
    let overhead = envelope("").to_string().len();
    let preview = escaped_prefix(&text.kept, max.saturating_sub(overhead));
    (envelope(preview), true)
}

/// `error` with its message cut to `max` bytes when it is longer; `true` when it was cut.
/// Only the messages a tool writes can be long; the dispatcher's own are bounded.
pub(crate) fn bound_error(error: ToolError, max: usize) -> (ToolError, bool) {
    match error {
        ToolError::Failed(message) if message.len() > max => {
            (ToolError::Failed(cut(&message, max)), true)
        }
        ToolError::Panicked(message) if message.len() > max => {
            (ToolError::Panicked(cut(&message, max)), true)
        }
        other => (other, false),
    }
}

/// The first bytes of `s` (at most `max`, on a character boundary) and a marker.
fn cut(s: &str, max: usize) -> String {
    let end = floor_char_boundary(s, max);
    format!("{}…[truncated {} bytes]", &s[..end], s.len() - end)
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The longest start of `bytes` (as text, on a character boundary) whose JSON string
/// encoding (without its quotes) takes at most `budget` bytes.
fn escaped_prefix(bytes: &[u8], budget: usize) -> &str {
    // `bytes` may end inside a character: keep only the valid start.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default(),
    };
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += escaped_len(c);
        if used > budget {
            return &text[..at];
        }
    }
    text
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{08}' | '\u{0C}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// A writer that keeps the first `max` bytes and counts all of them.
struct Prefix {
    kept: Vec<u8>,
    max: usize,
    total: usize,
}

impl Prefix {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            max,
            total: 0,
        }
    }
}

impl io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.max.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..room.min(buf.len())]);
        self.total += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds `value` at `max`: untouched when its JSON text fits, else replaced by the
    /// truncated form, within `max`, whose preview is the longest start of that text that
    /// fits.
    fn check(value: Value, max: usize, expect_cut: bool) {
        let text = value.to_string();
        let (bounded, cut) = bound_value(value.clone(), max);
        assert_eq!(cut, expect_cut, "{text}");
        let encoded = bounded.to_string();
        assert!(serde_json::from_str::<Value>(&encoded).is_ok(), "{encoded}");
        if !cut {
            assert_eq!(bounded, value);
            return;
        }
        assert_eq!(bounded["truncated"], true);
        assert_eq!(bounded["bytes"], text.len());
        assert_eq!(bounded["max_bytes"], max);
        assert!(encoded.len() <= max, "{} > {max}: {encoded}", encoded.len());
        let preview = bounded["preview"].as_str().expect("a string preview");
        assert!(
            text.starts_with(preview),
            "{preview:?} does not start {text:?}"
        );
        if let Some(next) = text[preview.len()..].chars().next() {
            let mut grown = bounded.clone();
            grown["preview"] = json!(format!("{preview}{next}"));
            assert!(grown.to_string().len() > max, "the preview could be longer");
        }
    }

    #[test]
    fn results_over_the_bound_are_replaced_and_stay_within_it() {
        let at = json!({"text": "a".repeat(90)});
        let at_len = at.to_string().len();
        check(at.clone(), at_len, false);
        check(at, at_len - 1, true);
        check(json!({"text": "small"}), 100, false);
        check(json!(null), 100, false);
        check(json!({"text": "\"quoted\" ".repeat(100)}), 200, true);
        // Many small parts are bounded as well as one long string.
        check(
            Value::Array((0..500).map(|i| json!(i)).collect()),
            200,
            true,
        );
        // A bound smaller than the replacement itself: the preview is empty.
        let (tiny, cut) = bound_value(json!("a".repeat(1_000)), 10);
        assert!(cut);
        assert_eq!(tiny["preview"], "");
        assert_eq!(tiny["bytes"], 1_002);
    }

    #[test]
    fn previews_never_split_a_character_nor_overflow_with_escapes() {
        for text in [
            "é".repeat(5_000),
            "\"\\".repeat(5_000),
            "\u{1}".repeat(5_000),
        ] {
            for max in [64, 100, 101, 102, 103, 1_000] {
                let (bounded, cut) = bound_value(json!({ "text": text }), max);
                assert!(cut);
                let encoded = bounded.to_string();
                assert!(encoded.len() <= max, "{} > {max}", encoded.len());
                let preview = bounded["preview"].as_str().unwrap();
                assert!(r#"{"text":""#.starts_with(preview) || preview.starts_with(r#"{"text":""#));
            }
        }
    }

    #[test]
    fn long_error_messages_are_cut_with_a_marker() {
        let (short, cut_short) = bound_error(ToolError::Failed("no".into()), 10);
        assert_eq!((short, cut_short), (ToolError::Failed("no".into()), false));
        let (long, cut_long) = bound_error(ToolError::Failed("é".repeat(10)), 5);
        assert!(cut_long);
        assert_eq!(long, ToolError::Failed("éé…[truncated 16 bytes]".into()));
        let (timeout, _) = bound_error(ToolError::Cancelled, 1);
        assert_eq!(timeout, ToolError::Cancelled);
    }
}
