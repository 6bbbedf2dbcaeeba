//! The shape of a synthetic run, as `start_agent`'s `input` carries it to the `synthetic`
//! agent (`crates/agents/src/synthetic.rs`): how many thinking steps, tool calls and answer
//! chunks, and the pause after each step.
//!
//! loadgen needs it twice: to know how many events a run must deliver (the verifier counts
//! them) and to emit exactly those events from the baseline server. The agent's own type lives
//! in `agents`, which this crate may not depend on, so the four numbers are restated here; the
//! failure knobs (`fail`, `panic`, `hang`) are refused because a load run expects every run to
//! complete.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The agent loadgen starts.
pub const AGENT: &str = "synthetic";
/// The tool the synthetic agent calls.
pub const TOOL: &str = "synthetic_echo";
/// The synthetic agent's bounds on counts and pauses.
const MAX_STEPS: u32 = 1_000;
const MAX_SLEEP_MS: u64 = 60_000;

/// The shape of one synthetic run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shape {
    /// Thinking steps.
    pub thinking: u32,
    /// Tool calls (two events each).
    pub tools: u32,
    /// Answer chunks.
    pub chunks: u32,
    /// Pause after each step, in milliseconds.
    pub sleep_ms: u64,
}

impl Default for Shape {
    /// The shape of issue 9's figures: 17 events a run, about 600 ms long.
    fn default() -> Self {
        Self {
            thinking: 4,
            tools: 3,
            chunks: 5,
            sleep_ms: 50,
        }
    }
}

impl Shape {
    /// Reads a shape from JSON text such as `{"thinking":4,"tools":3,"chunks":5,"sleep_ms":50}`;
    /// missing keys take the synthetic agent's defaults (1, 1, 1, 0).
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the shape is not JSON: {e}"))?;
        if !value.is_object() {
            return Err(format!(
                "the shape must be a JSON object like {}, got {value}",
                Shape::default().to_json()
            ));
        }
        let agent_defaults = Shape {
            thinking: 1,
            tools: 1,
            chunks: 1,
            sleep_ms: 0,
        };
        let mut merged = serde_json::to_value(agent_defaults).unwrap_or_default();
        if let (Some(base), Some(given)) = (merged.as_object_mut(), value.as_object()) {
            for (key, v) in given {
                base.insert(key.clone(), v.clone());
            }
        }
        let shape = Shape::deserialize(&merged).map_err(|e| {
            format!("the shape: {e} (keys: thinking, tools, chunks, sleep_ms; failure knobs are not for load runs)")
        })?;
        for (field, value) in [
            ("thinking", shape.thinking),
            ("tools", shape.tools),
            ("chunks", shape.chunks),
        ] {
            if value > MAX_STEPS {
                return Err(format!(
                    "the shape's {field} is {value}; the synthetic agent allows at most {MAX_STEPS}"
                ));
            }
        }
        if shape.sleep_ms > MAX_SLEEP_MS {
            return Err(format!(
                "the shape's sleep_ms is {}; the synthetic agent allows at most {MAX_SLEEP_MS}",
                shape.sleep_ms
            ));
        }
        Ok(shape)
    }

    /// Events one complete run delivers: started, the steps (a tool call is two), completed.
    pub fn events_per_run(&self) -> u64 {
        2 + u64::from(self.thinking) + 2 * u64::from(self.tools) + u64::from(self.chunks)
    }

    /// The pause after each step.
    pub fn pause(&self) -> Duration {
        Duration::from_millis(self.sleep_ms)
    }

    /// How long a run takes at the least: one pause per step.
    pub fn min_run_time(&self) -> Duration {
        let steps = self.thinking + self.tools + self.chunks;
        self.pause() * steps
    }

    /// The `input` object of `start_agent`.
    pub fn to_input(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// The shape as compact JSON, as `--shape` takes it.
    pub fn to_json(&self) -> String {
        Value::Object(self.to_input()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(u32, u32, u32, u64, u64), &str>) {
        let got = Shape::parse(text).map(|s| {
            (
                s.thinking,
                s.tools,
                s.chunks,
                s.sleep_ms,
                s.events_per_run(),
            )
        });
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(m), Err(f)) => assert!(m.contains(f), "{text}: {m:?} lacks {f:?}"),
            _ => panic!("{text}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn shape_table() {
        check(
            r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":50}"#,
            Ok((4, 3, 5, 50, 17)),
        );
        check("{}", Ok((1, 1, 1, 0, 6)));
        check(r#"{"tools":0}"#, Ok((1, 0, 1, 0, 4)));
        check("[1]", Err("must be a JSON object"));
        check("thinking=4", Err("not JSON"));
        check(r#"{"tool":3}"#, Err("unknown field `tool`"));
        check(
            r#"{"fail":"x"}"#,
            Err("failure knobs are not for load runs"),
        );
        check(r#"{"tools":-1}"#, Err("invalid value"));
        check(r#"{"chunks":5000}"#, Err("chunks is 5000"));
        check(r#"{"sleep_ms":600000}"#, Err("sleep_ms is 600000"));
    }

    #[test]
    fn the_default_is_issue_9s_shape_and_round_trips() {
        let shape = Shape::default();
        assert_eq!(shape.events_per_run(), 17);
        assert_eq!(shape.min_run_time(), Duration::from_millis(600));
        assert_eq!(Shape::parse(&shape.to_json()), Ok(shape));
    }
}
