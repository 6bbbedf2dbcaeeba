//! Redaction and truncation of values before they leave the server.
//!
//! Tool arguments and results travel to the user's browser and into replay logs. Values under
//! sensitive keys (anything naming a password, secret, token, API key, authorization,
//! credential, cookie or private key, in any case and with `_`/`-` spelled either way) are
//! replaced by [`REDACTED`]; strings longer than the limit are cut and marked; very deep values
//! are cut at [`Limits::max_depth`]. The agent itself still sees the real values; only events
//! are redacted.

use serde_json::{Map, Value};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Key fragments that mark a value as sensitive, compared after lowercasing and removing
/// `_` and `-` (so `apiKey`, `api_key` and `API-KEY` all match `apikey`).
pub const SENSITIVE_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "cookie",
    "privatekey",
    "sessionid",
];

/// Bounds applied by [`redact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Strings longer than this many characters are truncated.
    pub max_string_chars: usize,
    /// Nesting below this depth is replaced by a marker.
    pub max_depth: usize,
    /// Arrays and objects keep at most this many entries.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_chars: 2_000,
            max_depth: 16,
            max_entries: 200,
        }
    }
}

/// Whether `key` names a sensitive value.
pub fn is_sensitive_key(key: &str) -> bool {
    let normal: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SENSITIVE_KEY_FRAGMENTS.iter().any(|f| normal.contains(f))
}

/// A copy of `value` with sensitive values redacted and long or deep parts cut.
pub fn redact(value: &Value, limits: &Limits) -> Value {
    redact_at(value, limits, 0)
}

fn redact_at(value: &Value, limits: &Limits, depth: usize) -> Value {
    if depth >= limits.max_depth && (value.is_array() || value.is_object()) {
        return Value::String("[truncated: nested too deep]".into());
    }
    match value {
        Value::String(s) => Value::String(truncate(s, limits.max_string_chars)),
        Value::Array(items) => {
            let mut out: Vec<Value> = items
                .iter()
                .take(limits.max_entries)
                .map(|v| redact_at(v, limits, depth + 1))
                .collect();
            if items.len() > limits.max_entries {
                out.push(Value::String(format!(
                    "[truncated: {} more items]",
                    items.len() - limits.max_entries
                )));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, v) in map.iter().take(limits.max_entries) {
                let v = if is_sensitive_key(key) {
                    Value::String(REDACTED.into())
                } else {
                    redact_at(v, limits, depth + 1)
                };
                out.insert(key.clone(), v);
            }
            if map.len() > limits.max_entries {
                out.insert(
                    "[truncated]".into(),
                    Value::String(format!("{} more keys", map.len() - limits.max_entries)),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `s` cut to `max_chars` characters with a marker saying how much was cut.
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((cut, _)) => {
            let dropped = s[cut..].chars().count();
            format!("{}…[truncated {dropped} chars]", &s[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(input: Value, expected: Value) {
        let limits = Limits {
            max_string_chars: 5,
            max_depth: 3,
            max_entries: 3,
        };
        assert_eq!(redact(&input, &limits), expected, "input: {input}");
    }

    #[test]
    fn redaction_table() {
        check(json!({"expression": "1+2"}), json!({"expression": "1+2"}));
        check(
            json!({"password": "hunter2"}),
            json!({"password": REDACTED}),
        );
        check(
            json!({"apiKey": 1, "API-KEY": 2, "api_key": 3}),
            json!({"apiKey": REDACTED, "API-KEY": REDACTED, "api_key": REDACTED}),
        );
        check(
            json!({"Authorization": "Bearer x"}),
            json!({"Authorization": REDACTED}),
        );
        check(
            json!({"db": {"credentials": {"user": "u"}}}),
            json!({"db": {"credentials": REDACTED}}),
        );
        check(
            json!([{"access_token": "t"}]),
            json!([{"access_token": REDACTED}]),
        );
        check(
            json!({"note": "abcdefgh"}),
            json!({"note": "abcde…[truncated 3 chars]"}),
        );
        check(json!("héllo wörld"), json!("héllo…[truncated 6 chars]"));
        check(
            json!([1, 2, 3, 4, 5]),
            json!([1, 2, 3, "[truncated: 2 more items]"]),
        );
        check(
            json!({"a": {"b": {"c": {"d": 1}}}}),
            json!({"a": {"b": {"c": "[truncated: nested too deep]"}}}),
        );
        check(json!(42), json!(42));
    }
}
