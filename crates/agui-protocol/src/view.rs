//! One run's view of its user's stream: the frames of the run and its sub-runs, mapped to
//! AG-UI events with their positions; and what a response cut at a position left open.

use std::collections::HashSet;

use agent_protocol::{EventKind, SequencedEvent};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::map::{ClientIds, Mapper};
use crate::position::{Position, Positions};

/// AG-UI events with the positions they are sent at.
pub type Positioned = Vec<(Position, Value)>;

/// The run's events among the user's stream's frames, as AG-UI events with positions.
#[derive(Debug)]
pub struct RunView {
    mapper: Mapper,
    /// The run (the engine's id).
    run_id: String,
    /// The run and its sub-runs (a sub-run's events name their parent).
    tree: HashSet<String>,
    positions: Positions,
    /// The run's thread (from its events).
    thread: Option<String>,
    /// While catching up to a position: what a cut response had sent, and what it had not.
    sent: Vec<Value>,
    unsent: Positioned,
    started: bool,
    paused: bool,
    done: bool,
}

impl RunView {
    /// The view of run `run_id` (the engine's id), which began after stream position `start`.
    pub fn new(mapper: Mapper, run_id: &str, start: u64) -> Self {
        Self {
            mapper,
            run_id: run_id.to_owned(),
            tree: HashSet::from([run_id.to_owned()]),
            positions: Positions::new(start),
            thread: None,
            sent: Vec::new(),
            unsent: Vec::new(),
            started: false,
            paused: false,
            done: false,
        }
    }

    /// The events that open a response (`RUN_STARTED`, `CUSTOM` `agent-engine.run`).
    pub fn opening(&mut self, thread_id: &str, epoch: &str) -> Positioned {
        let start = self.positions.seq();
        let events = self.mapper.started(thread_id, epoch, start);
        self.place(start, events)
    }

    /// One frame of the user's stream: its AG-UI events if it is of the run's tree (none
    /// otherwise). A frame that is not an event is refused with what is wrong with it.
    pub fn take(&mut self, text: &str) -> Result<Positioned, String> {
        let raw: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        // The tree is decided from the two ids, so another run's frame is not decoded.
        let (Some(run), parent) = (raw["run_id"].as_str(), raw["parent_run_id"].as_str()) else {
            return Ok(Vec::new());
        };
        if !self.tree.contains(run) {
            if !parent.is_some_and(|p| self.tree.contains(p)) {
                return Ok(Vec::new());
            }
            self.tree.insert(run.to_owned());
        }
        let sequenced =
            SequencedEvent::deserialize(&raw).map_err(|e| format!("not an event: {e}"))?;
        let event = &sequenced.event;
        if event.run_id.as_str() == self.run_id {
            self.thread
                .get_or_insert_with(|| event.thread_id.to_string());
            match event.kind {
                EventKind::AgentStarted { .. } => self.started = true,
                EventKind::ApprovalRequested { .. } => self.paused = true,
                _ => {}
            }
            self.done |= event.kind.is_terminal();
        }
        let mapped = self.mapper.map(event, &raw);
        Ok(self.place(sequenced.seq, mapped))
    }

    /// One frame of the replay that catches a cut response up to `upto` (the position of the
    /// last event its client received): mapped, to rebuild the mapping's state, and kept
    /// aside for [`RunView::continuation`].
    pub fn catch_up(&mut self, text: &str, upto: Position) -> Result<(), String> {
        for (at, event) in self.take(text)? {
            if at <= upto {
                self.sent.push(event);
            } else {
                self.unsent.push((at, event));
            }
        }
        Ok(())
    }

    /// What a continued response starts with, after [`RunView::catch_up`]: `RUN_STARTED`
    /// (with the client's ids; the run's thread when the client gave none), what the cut
    /// left open opened again (at the client's last position, `upto`), then the events the
    /// cut response had not sent. Empty when nothing is left to send (the run had ended, or
    /// paused and the client has its interrupts).
    pub fn continuation(&mut self, upto: Position, ids: &ClientIds) -> Positioned {
        let unsent = std::mem::take(&mut self.unsent);
        // Nothing left: the run ended, or it paused and the client has its interrupts (they
        // come at the next position).
        let interrupted = self.paused && self.positions.peek() <= upto;
        if unsent.is_empty() && (self.done || interrupted) {
            return Vec::new();
        }
        let thread = match (&ids.thread_id[..], &self.thread) {
            ("", Some(thread)) => thread.clone(),
            (given, _) => given.to_owned(),
        };
        let started = json!({"type": "RUN_STARTED", "threadId": thread, "runId": ids.run_id,
                             "protocolVersion": "1.0"});
        let mut first = vec![(upto, started)];
        first.extend(
            reopen(&std::mem::take(&mut self.sent))
                .into_iter()
                .map(|e| (upto, e)),
        );
        first.extend(unsent);
        first
    }

    /// Events the server adds of its own (a `RUN_ERROR`), placed after the last.
    pub fn own(&mut self, events: Vec<Value>) -> Positioned {
        let seq = self.positions.seq();
        self.place(seq, events)
    }

    /// The end of the response of a run that paused: `RUN_FINISHED` with `interrupts`.
    pub fn interrupted(&mut self, interrupts: Vec<Value>, at_ms: u64) -> Positioned {
        self.paused = false;
        self.done = true;
        let events = self.mapper.interrupted(interrupts, at_ms);
        self.own(events)
    }

    /// The response ends here, after the server's own last events (a `RUN_ERROR`).
    pub fn end(&mut self) {
        self.paused = false;
        self.done = true;
    }

    /// Whether the run's `agent_started` was seen.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the run paused for approvals (and its interrupts are not sent yet).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether the run's response is complete (the run ended, or paused and said so).
    pub fn done(&self) -> bool {
        self.done
    }

    fn place(&mut self, seq: u64, events: Vec<Value>) -> Positioned {
        events
            .into_iter()
            .map(|event| (self.positions.next(seq), event))
            .collect()
    }
}

/// The events that open again what `sent` (a response's events, in order) left open: text
/// and reasoning messages, tool calls and sub-agents, in the order they were opened. A
/// response that continues a cut one sends them after its `RUN_STARTED`, so that a client
/// checking the stream's rules accepts what follows (a `TEXT_MESSAGE_CONTENT` of the message
/// the cut left open, say).
pub fn reopen(sent: &[Value]) -> Vec<Value> {
    let mut open: Vec<(&str, String, &Value)> = Vec::new();
    for event in sent {
        let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
        let (kind, key, opens) = match event["type"].as_str().unwrap_or_default() {
            "TEXT_MESSAGE_START" => ("text", field("messageId"), true),
            "TEXT_MESSAGE_END" => ("text", field("messageId"), false),
            "REASONING_START" => ("reasoning", field("messageId"), true),
            "REASONING_END" => ("reasoning", field("messageId"), false),
            "REASONING_MESSAGE_START" => ("reasoning message", field("messageId"), true),
            "REASONING_MESSAGE_END" => ("reasoning message", field("messageId"), false),
            "TOOL_CALL_START" => ("tool call", field("toolCallId"), true),
            "TOOL_CALL_END" => ("tool call", field("toolCallId"), false),
            "SUBAGENT_STARTED" => ("subagent", field("subagentRunId"), true),
            "SUBAGENT_FINISHED" | "SUBAGENT_ERROR" => ("subagent", field("subagentRunId"), false),
            _ => continue,
        };
        if opens {
            open.push((kind, key, event));
        } else {
            open.retain(|(k, id, _)| !(*k == kind && *id == key));
        }
    }
    open.into_iter()
        .map(|(_, _, event)| event.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RUN: &str = "run_01JD6QA0AAAAAAAAAAAAAAAAAA";

    fn frame(seq: u64, run: &str, kind: &str, data: Value) -> String {
        json!({"type": kind, "seq": seq, "run_id": run, "thread_id": "thr_1",
               "agent_name": "assistant", "timestamp": "2026-11-24T10:00:00.000000Z",
               "data": data})
        .to_string()
    }

    fn view() -> RunView {
        let ids = ClientIds {
            thread_id: "t".into(),
            run_id: "r".into(),
        };
        RunView::new(Mapper::new(ids, RUN), RUN, 40)
    }

    #[test]
    fn a_run_s_frames_get_positions_and_other_runs_frames_none() {
        let mut view = view();
        let opening = view.opening("thr_1", "ep_1");
        assert_eq!(opening[0].0.to_string(), "40.40.0");
        assert_eq!(opening[1].0.to_string(), "40.40.1");
        let other = frame(41, "run_other", "agent_started", json!({"message": "x"}));
        assert!(view.take(&other).unwrap().is_empty());
        let started = frame(42, RUN, "agent_started", json!({"message": "x"}));
        assert!(view.take(&started).unwrap().is_empty());
        assert!(view.started());
        let chunk = frame(43, RUN, "agent_response_chunk", json!({"delta": "hi"}));
        let got = view.take(&chunk).unwrap();
        let ids: Vec<String> = got.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(ids, ["40.43.0", "40.43.1"]);
        assert!(view.take("not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn what_a_cut_left_open_is_opened_again_in_order() {
        let sent = [
            json!({"type": "RUN_STARTED"}),
            json!({"type": "REASONING_START", "messageId": "a"}),
            json!({"type": "REASONING_MESSAGE_START", "messageId": "a", "role": "reasoning"}),
            json!({"type": "REASONING_MESSAGE_END", "messageId": "a"}),
            json!({"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "calc"}),
            json!({"type": "TOOL_CALL_END", "toolCallId": "c1"}),
            json!({"type": "SUBAGENT_STARTED", "subagentRunId": "s1", "name": "helper"}),
            json!({"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"}),
            json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "he"}),
        ];
        let again = reopen(&sent);
        let types: Vec<&str> = again.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["REASONING_START", "SUBAGENT_STARTED", "TEXT_MESSAGE_START"]
        );
        assert_eq!(again[2]["messageId"], "m");
        assert!(reopen(&sent[..1]).is_empty());
    }
}
