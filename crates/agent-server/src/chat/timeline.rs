//! How `agent-server chat` prints a run: one line per event, sub-runs indented, the streamed
//! answer on one line as its chunks arrive. Kept apart from IO, so it is tested against the
//! frames of `docs/protocol-examples.json` without a server.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use agent_protocol::{AgentEvent, EventKind};
use serde_json::Value;

/// Width of the event label column of the timeline (the longest label is `tool failed`).
const LABEL_WIDTH: usize = 11;

/// Picks out the events of one run and of its sub-runs (at any depth). Other runs' events
/// arrive too when the same user has other tabs or clients open; they are not ours to show.
#[derive(Debug)]
pub(crate) struct RunFilter {
    /// Every run of this tree seen so far, with its depth (0 for the run itself). Bounded by
    /// the tree's own size, which the server bounds.
    depths: HashMap<String, usize>,
}

impl RunFilter {
    pub(crate) fn new(run_id: &str) -> Self {
        Self {
            depths: HashMap::from([(run_id.to_owned(), 0)]),
        }
    }

    /// The depth of the event's run in the tree, or `None` when it is not of the tree.
    pub(crate) fn depth_of(&mut self, run_id: &str, parent_run_id: Option<&str>) -> Option<usize> {
        if let Some(depth) = self.depths.get(run_id) {
            return Some(*depth);
        }
        let depth = self.depths.get(parent_run_id?)? + 1;
        self.depths.insert(run_id.to_owned(), depth);
        Some(depth)
    }
}

/// Renders events as a readable timeline, one line per event, with the answer streamed onto
/// a single line as its chunks arrive.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// The run whose answer line is still open (no newline written yet).
    open_answer: Option<String>,
    /// The answer text streamed so far per run, so `completed` does not repeat it.
    answers: HashMap<String, String>,
}

impl Timeline {
    /// The text to print for `event`, seen `elapsed` after the run was accepted, for a run at
    /// `depth` in the run tree (sub-runs are indented).
    pub(crate) fn render(&mut self, event: &AgentEvent, elapsed: Duration, depth: usize) -> String {
        let run_id = event.run_id.as_str();
        if let EventKind::AgentResponseChunk { delta } = &event.kind {
            return self.answer_chunk(run_id, delta, elapsed, depth);
        }
        let (label, body) = self.describe(event, depth);
        self.line(elapsed, depth, label, &body)
    }

    /// The text to print for an event of a type newer than this client: still shown, raw,
    /// rather than hidden.
    pub(crate) fn render_unknown(
        &mut self,
        kind: &str,
        data: &Value,
        elapsed: Duration,
        depth: usize,
    ) -> String {
        self.line(elapsed, depth, "event", &format!("{kind} {data}"))
    }

    /// Ends an open answer line; returns what to print for that (a newline, or nothing).
    pub(crate) fn finish(&mut self) -> String {
        match self.open_answer.take() {
            Some(_) => "\n".to_owned(),
            None => String::new(),
        }
    }

    fn line(&mut self, elapsed: Duration, depth: usize, label: &str, body: &str) -> String {
        let mut text = self.finish();
        let head = prefix(elapsed, depth, label);
        let pad = " ".repeat(head.chars().count());
        text.push_str(&head);
        text.push_str(&continued(body, &pad));
        text.push('\n');
        text
    }

    fn answer_chunk(
        &mut self,
        run_id: &str,
        delta: &str,
        elapsed: Duration,
        depth: usize,
    ) -> String {
        self.answers
            .entry(run_id.to_owned())
            .or_default()
            .push_str(delta);
        if self.open_answer.as_deref() == Some(run_id) {
            // The line's prefix is not known here any more; continuation lines of a
            // multi-line answer are indented like those of a fresh line of this depth.
            let pad = " ".repeat(prefix(elapsed, depth, "answer").chars().count());
            return continued(delta, &pad);
        }
        let mut text = self.finish();
        let head = prefix(elapsed, depth, "answer");
        let pad = " ".repeat(head.chars().count());
        text.push_str(&head);
        text.push_str(&continued(delta, &pad));
        self.open_answer = Some(run_id.to_owned());
        text
    }

    fn describe(&mut self, event: &AgentEvent, depth: usize) -> (&'static str, String) {
        let run_id = event.run_id.as_str();
        match &event.kind {
            EventKind::AgentStarted { message } if depth == 0 => {
                ("started", format!("{message:?}"))
            }
            EventKind::AgentStarted { message } => (
                "started",
                format!("sub-run {}: {message:?}", event.agent_name),
            ),
            EventKind::AgentThinking { reasoning, step } => {
                ("thinking", format!("({step}) {reasoning}"))
            }
            EventKind::ToolExecuting {
                tool_name,
                arguments,
                ..
            } => ("tool", format!("{tool_name} {arguments}")),
            EventKind::ToolCompleted {
                tool_name,
                result,
                is_error,
                duration_ms,
                ..
            } => (
                if *is_error {
                    "tool failed"
                } else {
                    "tool done"
                },
                format!("{tool_name} -> {result} ({duration_ms} ms)"),
            ),
            EventKind::AgentResponseChunk { delta } => ("answer", delta.clone()),
            EventKind::AgentCompleted {
                result,
                duration_ms,
                usage,
            } => (
                "completed",
                self.completed(run_id, result, *duration_ms, usage.as_ref()),
            ),
            EventKind::AgentError { code, message } => {
                self.answers.remove(run_id);
                ("error", format!("{code}: {message}"))
            }
            EventKind::AgentCancelled { reason } => {
                self.answers.remove(run_id);
                ("cancelled", reason.clone())
            }
        }
    }

    fn completed(
        &mut self,
        run_id: &str,
        result: &Value,
        duration_ms: u64,
        usage: Option<&Value>,
    ) -> String {
        let mut body = format!("in {duration_ms} ms");
        let streamed = self.answers.remove(run_id);
        // The streamed answer is usually the result; printing it twice helps nobody.
        let repeated = result.as_str().is_some() && result.as_str() == streamed.as_deref();
        match result {
            Value::Null => {}
            _ if repeated => {}
            Value::String(s) => {
                let _ = write!(body, ": {s}");
            }
            other => {
                let _ = write!(body, ": {other}");
            }
        }
        if let Some(usage) = usage.filter(|u| !u.is_null()) {
            let _ = write!(body, " (usage {usage})");
        }
        body
    }
}

/// `+0.012s  ` then the indentation of a sub-run, then the label padded to its column.
fn prefix(elapsed: Duration, depth: usize, label: &str) -> String {
    format!(
        "+{}.{:03}s  {}{label:<LABEL_WIDTH$} ",
        elapsed.as_secs(),
        elapsed.subsec_millis(),
        "  ".repeat(depth)
    )
}

/// `text` made safe for a terminal, with continuation lines indented by `pad`.
///
/// Agent output is untrusted: control characters (ANSI escapes among them) could rewrite the
/// user's terminal, so they are printed escaped. Newlines stay, aligned under the first line.
fn continued(text: &str, pad: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(pad);
            }
            '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use agent_protocol::ServerMessage;
    use serde_json::json;

    use super::*;

    const EXAMPLES: &str = include_str!("../../../../docs/protocol-examples.json");

    /// The first server-to-client example frame that `matches`.
    pub(crate) fn example_where(matches: impl Fn(&Value) -> bool) -> Value {
        let examples: Value = serde_json::from_str(EXAMPLES).unwrap();
        examples["server_to_client"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| matches(f))
            .unwrap()
            .clone()
    }

    /// The first server-to-client example frame of type `kind`.
    pub(crate) fn example(kind: &str) -> Value {
        example_where(|f| f["type"] == kind)
    }

    /// Renders `frame` as the chat does: through the protocol's types.
    fn render(timeline: &mut Timeline, frame: &Value, elapsed: Duration, depth: usize) -> String {
        match ServerMessage::parse(&frame.to_string()).unwrap() {
            ServerMessage::Event(event) => timeline.render(&event.event, elapsed, depth),
            ServerMessage::Unknown(frame) => {
                timeline.render_unknown(&frame.kind, &frame.value["data"], elapsed, depth)
            }
            ServerMessage::Frame(other) => panic!("not an event: {other:?}"),
        }
    }

    /// The depth the filter gives `frame`, or `None` for frames that are not events.
    fn depth_of(filter: &mut RunFilter, frame: &Value) -> Option<usize> {
        match ServerMessage::parse(&frame.to_string()).unwrap() {
            ServerMessage::Event(event) => filter.depth_of(
                event.event.run_id.as_str(),
                event.event.parent_run_id.as_ref().map(|p| p.as_str()),
            ),
            _ => None,
        }
    }

    /// Renders `frames` (each seen at its elapsed milliseconds, at depth 0) with one timeline
    /// and compares the whole output.
    fn check(frames: &[(Value, u64)], expected: &str) {
        let mut timeline = Timeline::default();
        let mut got = String::new();
        for (frame, ms) in frames {
            got.push_str(&render(&mut timeline, frame, Duration::from_millis(*ms), 0));
        }
        got.push_str(&timeline.finish());
        assert_eq!(
            got, expected,
            "\n--- got ---\n{got}\n--- expected ---\n{expected}"
        );
    }

    fn with_data(kind: &str, data: Value) -> Value {
        let mut frame = example(kind);
        frame["data"] = data;
        frame
    }

    #[test]
    fn each_event_of_the_examples_renders_as_one_line() {
        let table: &[(&str, u64, &str)] = &[
            (
                "agent_started",
                0,
                "+0.000s  started     \"What is 12*7?\"\n",
            ),
            (
                "agent_thinking",
                1,
                "+0.001s  thinking    (1) This is arithmetic; I will use the calculator.\n",
            ),
            (
                "tool_executing",
                2,
                "+0.002s  tool        calculator {\"expression\":\"12*7\"}\n",
            ),
            (
                "tool_completed",
                3,
                "+0.003s  tool done   calculator -> {\"value\":84} (0 ms)\n",
            ),
            (
                "agent_response_chunk",
                3,
                "+0.003s  answer      12*7 = 84\n",
            ),
            (
                "agent_completed",
                12,
                "+0.012s  completed   in 1 ms: 12*7 = 84\n",
            ),
            (
                "agent_error",
                25_001,
                "+25.001s  error       timeout: the run took longer than its 25 s limit\n",
            ),
            (
                "agent_cancelled",
                900,
                "+0.900s  cancelled   cancelled by the user\n",
            ),
        ];
        for (kind, ms, expected) in table {
            check(&[(example(kind), *ms)], expected);
        }
    }

    #[test]
    fn a_whole_run_reads_as_a_timeline() {
        let chunk = |delta: &str| with_data("agent_response_chunk", json!({ "delta": delta }));
        check(
            &[
                (example("agent_started"), 0),
                (example("tool_executing"), 1),
                (chunk("12*7"), 2),
                (chunk(" = 84"), 3),
                (example("agent_completed"), 4),
            ],
            "+0.000s  started     \"What is 12*7?\"\n\
             +0.001s  tool        calculator {\"expression\":\"12*7\"}\n\
             +0.002s  answer      12*7 = 84\n\
             +0.004s  completed   in 1 ms\n",
        );
    }

    #[test]
    fn variants_of_events_render_readably() {
        let table: Vec<(Value, &str)> = vec![
            (
                with_data(
                    "tool_completed",
                    json!({"tool_call_id":"c1","tool_name":"clock","result":{"error":"no zone"},
                           "is_error":true,"duration_ms":3}),
                ),
                "+0.000s  tool failed clock -> {\"error\":\"no zone\"} (3 ms)\n",
            ),
            (
                with_data(
                    "agent_completed",
                    json!({"result":{"n":1},"duration_ms":7,"usage":{"input_tokens":5}}),
                ),
                "+0.000s  completed   in 7 ms: {\"n\":1} (usage {\"input_tokens\":5})\n",
            ),
            (
                with_data(
                    "agent_thinking",
                    json!({"reasoning":"one\ntwo\u{1b}[2J","step":2}),
                ),
                "+0.000s  thinking    (2) one\n                     two\\u{1b}[2J\n",
            ),
            (
                with_data("agent_completed", json!({"result":null,"duration_ms":0})),
                "+0.000s  completed   in 0 ms\n",
            ),
            (
                json!({"type":"agent_dreaming","seq":1,"run_id":"r","data":{"x":1}}),
                "+0.000s  event       agent_dreaming {\"x\":1}\n",
            ),
        ];
        for (frame, expected) in table {
            check(&[(frame, 0)], expected);
        }
    }

    #[test]
    fn sub_runs_are_indented_and_other_runs_ignored() {
        let mut sub_run = example("agent_started");
        sub_run["run_id"] = json!("run_sub");
        sub_run["parent_run_id"] = json!("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
        let mut grandchild = sub_run.clone();
        grandchild["run_id"] = json!("run_grandchild");
        grandchild["parent_run_id"] = json!("run_sub");

        // (frame, depth it is shown at, or None when ignored), for the run of the examples.
        let table: Vec<(Value, Option<usize>)> = vec![
            (example("agent_started"), Some(0)),
            (sub_run.clone(), Some(1)),
            (grandchild, Some(2)),
            // The example's sub-run belongs to another parent: another tab's run.
            (example_where(|f| f.get("parent_run_id").is_some()), None),
            (example("agent_error"), None),
            (example("run_accepted"), None),
        ];
        let mut filter = RunFilter::new("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
        for (frame, expected) in table {
            assert_eq!(depth_of(&mut filter, &frame), expected, "{frame}");
        }

        let mut timeline = Timeline::default();
        assert_eq!(
            render(&mut timeline, &sub_run, Duration::from_millis(5), 1),
            "+0.005s    started     sub-run assistant: \"What is 12*7?\"\n"
        );
    }
}
