//! The events of one synthetic run, in order, with the pauses between them: what the
//! `synthetic` agent and the engine emit for a [`Shape`], restated so the baseline can emit
//! the same frames at the same times without an engine.
//!
//! `agent_started`; per thinking step `agent_thinking` then a pause; per tool call
//! `tool_executing`, `tool_completed` then a pause; per chunk `agent_response_chunk` then a
//! pause; `agent_completed` with the agent's result.

use serde_json::json;

use core_context::EventKind;

use crate::shape::{Shape, TOOL};

/// One step of a run's script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Emit this event now.
    Emit(EventKind),
    /// Sleep for the shape's pause.
    Pause,
}

/// The script of a run of `shape` for `message`. Tool call ids are `call_<run>_<n>`; the
/// engine uses ULIDs, which are the same length give or take the run's prefix.
pub fn run_script(shape: &Shape, message: &str, run_tag: &str) -> Vec<Step> {
    let mut steps = vec![Step::Emit(EventKind::AgentStarted {
        message: message.to_owned(),
    })];
    for step in 1..=shape.thinking {
        steps.push(Step::Emit(EventKind::AgentThinking {
            reasoning: format!("synthetic thinking step {step} of {}", shape.thinking),
            step,
        }));
        steps.push(Step::Pause);
    }
    for call in 1..=shape.tools {
        let tool_call_id = format!("call_{run_tag}_{call}");
        let arguments = json!({ "call": call, "message": message });
        steps.push(Step::Emit(EventKind::ToolExecuting {
            tool_call_id: tool_call_id.clone(),
            tool_name: TOOL.to_owned(),
            arguments: arguments.clone(),
        }));
        steps.push(Step::Emit(EventKind::ToolCompleted {
            tool_call_id,
            tool_name: TOOL.to_owned(),
            result: arguments,
            is_error: false,
            duration_ms: 0,
        }));
        steps.push(Step::Pause);
    }
    for chunk in 1..=shape.chunks {
        steps.push(Step::Emit(EventKind::AgentResponseChunk {
            delta: format!("chunk {chunk} "),
        }));
        steps.push(Step::Pause);
    }
    steps.push(Step::Emit(EventKind::AgentCompleted {
        result: json!({ "thinking": shape.thinking, "tools": shape.tools, "chunks": shape.chunks }),
        duration_ms: shape
            .min_run_time()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
        usage: None,
    }));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_the_shapes_events_and_pauses() {
        let shape = Shape::default();
        let script = run_script(&shape, "load", "r1");
        let events = script.iter().filter(|s| matches!(s, Step::Emit(_))).count();
        let pauses = script.iter().filter(|s| **s == Step::Pause).count();
        assert_eq!(events as u64, shape.events_per_run());
        assert_eq!(pauses, 12);
        let kinds: Vec<&str> = script
            .iter()
            .filter_map(|s| match s {
                Step::Emit(kind) => Some(kind.type_name()),
                Step::Pause => None,
            })
            .collect();
        assert_eq!(kinds.first(), Some(&"agent_started"));
        assert_eq!(kinds.last(), Some(&"agent_completed"));
        assert_eq!(kinds[5..7], ["tool_executing", "tool_completed"]);
    }
}
