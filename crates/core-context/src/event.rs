//! The agent event vocabulary of wire protocol v1.
//!
//! An [`AgentEvent`] is what the engine, an agent or the tool dispatcher emits; it serialises
//! to exactly the wire shape of `docs/protocol.md` minus the per-user `seq`, which only the
//! bridge assigns. A [`SequencedEvent`] is the frame a client receives:
//!
//! ```json
//! {"type":"agent_thinking","seq":43,"run_id":"run_..","thread_id":"thr_..","agent_name":"assistant",
//!  "timestamp":"2026-11-24T10:00:00.001803Z","data":{"reasoning":"..","step":1}}
//! ```
//!
//! Sub-runs add a top-level `parent_run_id`; it is absent (not `null`) for top-level runs.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::budget::{Amount, BudgetKind};
use crate::id::{RunId, ThreadId};
use crate::thread_event::ThreadEvent;
pub use crate::time::Timestamp;

/// Codes of `agent_error` events that the engine itself produces. Agents may use others.
pub mod error_code {
    /// The run exceeded its time limit.
    pub const TIMEOUT: &str = "timeout";
    /// The agent panicked.
    pub const PANIC: &str = "panic";
    /// The agent returned an error without a more specific code.
    pub const AGENT_FAILED: &str = "agent_failed";
    /// The engine could not start the agent (for example, its factory failed).
    pub const START_FAILED: &str = "start_failed";
    /// The run reached a tool call that waits for approval but its state could not be saved.
    pub const PAUSE_FAILED: &str = "pause_failed";
    /// Some of the run's events could not be handed on (a node's publish queue was full
    /// because Redis had been out of reach): the run was stopped, so that it does not go on
    /// with a hole its client cannot see.
    pub const EVENTS_LOST: &str = "events_lost";
}

/// The `type` and `data` of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began. Always the first event of a run.
    AgentStarted {
        /// The user's message.
        message: String,
    },
    /// A reasoning step the agent wants the user to see.
    AgentThinking {
        /// What the agent is thinking.
        reasoning: String,
        /// 1-based step number within the run.
        step: u32,
    },
    /// A tool call began.
    ToolExecuting {
        /// Pairs this event with its `tool_completed`.
        tool_call_id: String,
        /// The tool.
        tool_name: String,
        /// The arguments (sensitive values redacted, long values truncated).
        arguments: Value,
    },
    /// A tool call ended (successfully or not).
    ToolCompleted {
        /// The id of the matching `tool_executing`.
        tool_call_id: String,
        /// The tool.
        tool_name: String,
        /// The result, or an error object when `is_error` (redacted and truncated).
        result: Value,
        /// Whether the call failed.
        is_error: bool,
        /// How long the call took.
        duration_ms: u64,
    },
    /// A piece of the streamed answer.
    AgentResponseChunk {
        /// The text to append.
        delta: String,
    },
    /// The run finished successfully. Terminal.
    AgentCompleted {
        /// The agent's result.
        result: Value,
        /// How long the run took.
        duration_ms: u64,
        /// Token usage, for agents backed by a model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
    },
    /// The run failed. Terminal.
    AgentError {
        /// A machine-readable code such as `timeout`, `panic` or `agent_failed`.
        code: String,
        /// A message for the user.
        message: String,
    },
    /// The run was cancelled. Terminal.
    AgentCancelled {
        /// Why.
        reason: String,
    },
    /// A tool call waits for a person's decision; the run pauses (it holds no slot and no
    /// task) until every call it waits on is decided or expires.
    ApprovalRequested {
        /// The call waiting; its `tool_executing` follows when it is approved.
        tool_call_id: String,
        /// The tool.
        tool_name: String,
        /// The arguments the agent asked for (sensitive values redacted, long values truncated).
        arguments: Value,
        /// When the call is rejected as expired if nobody decides (RFC 3339).
        expires_at: Timestamp,
    },
    /// A person decided a waiting call (`approve`, `edit`, `reject`, `respond`), or it
    /// expired (`expired`).
    ApprovalResolved {
        /// The call decided.
        tool_call_id: String,
        /// The decision.
        decision: String,
    },
    /// The running run took a message the user sent into its thread while it ran
    /// (`multitask` `steer`), at this point of its work.
    MessageReceived {
        /// The user's message.
        message: String,
    },
    /// The run's next model call would pass its user's budget: the run pauses (it holds no
    /// slot and no task) until a new period begins or the limit is raised, then goes on by
    /// itself; the user may cancel it meanwhile.
    BudgetExhausted {
        /// The budget in the way (`tokens`, `cost_usd`).
        budget: BudgetKind,
        /// Used this period (tokens, or US dollars).
        used: Amount,
        /// Allowed per period.
        limit: Amount,
        /// When the next period begins (RFC 3339).
        resets_at: Timestamp,
    },
}

impl EventKind {
    /// Every event's wire `type`, in the order of the variants.
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_response_chunk",
        "agent_completed",
        "agent_error",
        "agent_cancelled",
        "approval_requested",
        "approval_resolved",
        "message_received",
        "budget_exhausted",
    ];

    /// The wire `type` of this event.
    pub fn type_name(&self) -> &'static str {
        Self::TYPE_NAMES[self.type_index()]
    }

    /// Where this event's `type` is in [`TYPE_NAMES`](Self::TYPE_NAMES) (the variant's
    /// place): a key for per-type tables that needs no hashing.
    pub fn type_index(&self) -> usize {
        match self {
            EventKind::AgentStarted { .. } => 0,
            EventKind::AgentThinking { .. } => 1,
            EventKind::ToolExecuting { .. } => 2,
            EventKind::ToolCompleted { .. } => 3,
            EventKind::AgentResponseChunk { .. } => 4,
            EventKind::AgentCompleted { .. } => 5,
            EventKind::AgentError { .. } => 6,
            EventKind::AgentCancelled { .. } => 7,
            EventKind::ApprovalRequested { .. } => 8,
            EventKind::ApprovalResolved { .. } => 9,
            EventKind::MessageReceived { .. } => 10,
            EventKind::BudgetExhausted { .. } => 11,
        }
    }

    /// Whether this event opens, pauses or ends its run (`agent_started`,
    /// `approval_requested`, `budget_exhausted` or a terminal event): the events a client
    /// must see to know where a run stands. A sink short of room keeps a reserve for them
    /// ([`EncodedEvent::bookend`]).
    pub fn is_bookend(&self) -> bool {
        self.is_terminal()
            || matches!(
                self,
                EventKind::AgentStarted { .. }
                    | EventKind::ApprovalRequested { .. }
                    | EventKind::BudgetExhausted { .. }
            )
    }

    /// Whether this event ends its run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::AgentCompleted { .. }
                | EventKind::AgentError { .. }
                | EventKind::AgentCancelled { .. }
        )
    }
}

/// One event of one run, as emitted (before the bridge gives it a `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct AgentEvent {
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The run it happened in.
    pub run_id: RunId,
    /// The parent run, for sub-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<RunId>,
    /// The run's thread.
    pub thread_id: ThreadId,
    /// The agent running.
    pub agent_name: Arc<str>,
    /// When the event was emitted.
    pub timestamp: Timestamp,
}

/// An event with its per-user sequence number: exactly one server-to-client event frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct SequencedEvent {
    /// Position in the user's stream; increases by exactly 1 per event within an epoch.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AgentEvent,
}

/// An event encoded once: its JSON object (without `seq`), shared by everything that sends
/// or keeps it (the stream's frames, a networked broker, the history), with the run it
/// belongs to for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The run the event belongs to; `None` for a change to a thread ([`ThreadEvent`]),
    /// which belongs to none.
    pub run_id: Option<RunId>,
    /// The event as a JSON object, exactly as [`AgentEvent`] serialises.
    pub json: Arc<str>,
    /// Whether the event opens, pauses or ends its run ([`EventKind::is_bookend`]). A sink
    /// that refuses events when it is short of room keeps room for these a while longer, so
    /// that a run whose other events it refused still shows its client its start and its end.
    pub bookend: bool,
}

impl EncodedEvent {
    /// Encodes `event`.
    pub fn encode(event: &AgentEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            run_id: Some(event.run_id.clone()),
            json: Arc::from(serde_json::to_string(event)?),
            bookend: event.kind.is_bookend(),
        })
    }

    /// Encodes a change to one of the user's threads, which belongs to no run.
    pub fn thread(event: &ThreadEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            run_id: None,
            json: Arc::from(serde_json::to_string(event)?),
            bookend: false,
        })
    }

    /// The wire frame at `seq`: byte for byte what encoding the [`SequencedEvent`] gives
    /// (`seq` first, then the event's fields).
    pub fn frame(&self, seq: u64) -> String {
        // An encoded event is a JSON object with at least its `type`: `{"type":...}`.
        let fields = self.json.strip_prefix('{').unwrap_or(&self.json);
        let mut frame = String::with_capacity(fields.len() + 30);
        frame.push_str("{\"seq\":");
        // Writing to a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut frame, format_args!("{seq}"));
        frame.push(',');
        frame.push_str(fields);
        frame
    }
}

/// The identity every event of one run shares; stamps events with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunScope {
    /// The run.
    pub run_id: RunId,
    /// The parent run, for sub-runs.
    pub parent_run_id: Option<RunId>,
    /// The thread.
    pub thread_id: ThreadId,
    /// The agent.
    pub agent_name: Arc<str>,
}

impl RunScope {
    /// An event of this run, timestamped now.
    pub fn event(&self, kind: EventKind) -> AgentEvent {
        AgentEvent {
            kind,
            run_id: self.run_id.clone(),
            parent_run_id: self.parent_run_id.clone(),
            thread_id: self.thread_id.clone(),
            agent_name: Arc::clone(&self.agent_name),
            timestamp: Timestamp::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EXAMPLES: &str = include_str!("../../../docs/protocol-examples.json");

    /// Decodes `frame` as an event frame, re-encodes it, and compares the JSON values.
    fn check_round_trip(frame: &Value) {
        let event: SequencedEvent = serde_json::from_value(frame.clone())
            .unwrap_or_else(|e| panic!("{frame} does not decode: {e}"));
        let back = serde_json::to_value(&event).expect("encode");
        assert_eq!(&back, frame, "re-encoding changed the frame");
    }

    #[test]
    fn every_event_frame_of_the_protocol_examples_round_trips() {
        let examples: Value = serde_json::from_str(EXAMPLES).expect("examples are JSON");
        let frames = examples["server_to_client"].as_array().expect("array");
        let mut seen = std::collections::BTreeSet::new();
        for frame in frames.iter().filter(|f| f.get("seq").is_some()) {
            let kind = frame["type"].as_str().expect("type").to_owned();
            if crate::thread_event::ThreadChange::TYPE_NAMES.contains(&kind.as_str()) {
                // A thread's change: a frame of the stream, but no run's event.
                let change: crate::thread_event::SequencedThreadEvent =
                    serde_json::from_value(frame.clone())
                        .unwrap_or_else(|e| panic!("{frame} does not decode: {e}"));
                assert_eq!(&serde_json::to_value(&change).expect("encode"), frame);
            } else {
                check_round_trip(frame);
                let event: SequencedEvent = serde_json::from_value(frame.clone()).expect("decodes");
                assert_eq!(event.event.kind.type_name(), kind, "type_name of {frame}");
            }
            seen.insert(kind);
        }
        for &needed in EventKind::TYPE_NAMES
            .iter()
            .chain(crate::thread_event::ThreadChange::TYPE_NAMES)
        {
            assert!(seen.contains(needed), "no example of {needed}");
        }
    }

    #[test]
    fn an_encoded_event_frames_byte_for_byte_as_the_sequenced_event() {
        let examples: Value = serde_json::from_str(EXAMPLES).expect("examples are JSON");
        let frames = examples["server_to_client"].as_array().expect("array");
        for frame in frames
            .iter()
            .filter(|f| f.get("seq").is_some() && f.get("run_id").is_some())
        {
            let sequenced: SequencedEvent = serde_json::from_value(frame.clone()).expect("decodes");
            for seq in [0, 1, 42, u64::MAX] {
                let encoded = EncodedEvent::encode(&sequenced.event).expect("encodes");
                assert_eq!(encoded.run_id.as_ref(), Some(&sequenced.event.run_id));
                let expected = serde_json::to_string(&SequencedEvent {
                    seq,
                    event: sequenced.event.clone(),
                })
                .expect("encodes");
                assert_eq!(encoded.frame(seq), expected);
            }
        }
    }

    #[test]
    fn encodes_the_wire_shape_exactly() {
        let scope = RunScope {
            run_id: RunId::parse("run_a").expect("valid"),
            parent_run_id: None,
            thread_id: ThreadId::parse("thr_a").expect("valid"),
            agent_name: Arc::from("assistant"),
        };
        let mut event = scope.event(EventKind::AgentThinking {
            reasoning: "hm".into(),
            step: 1,
        });
        event.timestamp = Timestamp::from(
            humantime::parse_rfc3339("2026-11-24T10:00:00.001803Z").expect("valid"),
        );
        let frame = serde_json::to_value(SequencedEvent { seq: 43, event }).expect("encode");
        assert_eq!(
            frame,
            json!({"type":"agent_thinking","seq":43,"run_id":"run_a","thread_id":"thr_a",
                   "agent_name":"assistant","timestamp":"2026-11-24T10:00:00.001803Z",
                   "data":{"reasoning":"hm","step":1}})
        );
    }

    #[test]
    fn timestamps_have_microseconds_and_utc() {
        let t = Timestamp::now().to_string();
        assert_eq!(t.len(), "2026-11-24T10:00:00.123456Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn terminal_events() {
        let terminal: Vec<bool> = [
            EventKind::AgentStarted {
                message: String::new(),
            },
            EventKind::AgentCompleted {
                result: json!(null),
                duration_ms: 0,
                usage: None,
            },
            EventKind::AgentError {
                code: "x".into(),
                message: String::new(),
            },
            EventKind::AgentCancelled {
                reason: String::new(),
            },
        ]
        .iter()
        .map(EventKind::is_terminal)
        .collect();
        assert_eq!(terminal, [false, true, true, true]);
    }

    #[test]
    fn a_thread_change_frames_as_the_protocol_says() {
        let thread = crate::ThreadId::parse("thr_trip").expect("an id");
        let renamed = crate::ThreadEvent::now(
            thread.clone(),
            crate::ThreadChange::ThreadRenamed {
                title: "Trip".into(),
            },
        );
        let frame: serde_json::Value =
            serde_json::from_str(&EncodedEvent::thread(&renamed).expect("encodes").frame(44))
                .expect("JSON");
        assert_eq!(frame["seq"], 44);
        assert_eq!(frame["type"], "thread_renamed");
        assert_eq!(frame["thread_id"], "thr_trip");
        assert_eq!(frame["data"], json!({"title": "Trip"}));
        assert!(frame.get("run_id").is_none());
        let back: crate::SequencedThreadEvent = serde_json::from_value(frame).expect("JSON");
        assert_eq!(
            (back.event.change, back.event.thread_id),
            (renamed.change, renamed.thread_id)
        );
        let deleted = crate::ThreadEvent::now(thread, crate::ThreadChange::ThreadDeleted {});
        let frame: serde_json::Value =
            serde_json::from_str(&EncodedEvent::thread(&deleted).expect("encodes").frame(45))
                .expect("JSON");
        assert_eq!(frame["type"], "thread_deleted");
        assert_eq!(frame["data"], json!({}));
        assert!(
            EncodedEvent::thread(&deleted)
                .expect("encodes")
                .run_id
                .is_none()
        );
    }
}
