//! Frames the server sends: the control frames ([`ServerFrame`]) and, for clients, everything
//! a connection can receive ([`ServerMessage`]: a control frame or an event of the user's
//! stream).

use core_context::budget::Shortfall;
use core_context::{
    ConnectionId, RunId, SequencedEvent, SequencedThreadEvent, ThreadId, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};

use crate::client_frames::ProtocolError;
use crate::codes::ErrorCode;
use crate::resume::{Epoch, ResumeStatus};

/// A frame the server sends that is not part of the user's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of every connection.
    ConnectionEstablished {
        /// The connection.
        connection_id: ConnectionId,
        /// The authenticated user.
        user_id: UserId,
        /// The user's stream epoch.
        epoch: Epoch,
        /// The last `seq` of the stream when the connection opened.
        last_seq: u64,
        /// The server's clock.
        server_time: Timestamp,
        /// The resume outcome, when the client asked to resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeStatus>,
    },
    /// A `start_agent` was accepted.
    RunAccepted {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The new run.
        run_id: RunId,
        /// Its thread.
        thread_id: ThreadId,
        /// Whether the run waits before it starts: behind its thread's running run (one run
        /// per thread; `multitask`), or for one of the user's run slots.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        queued: bool,
        /// A queued run's place in line: 1 when it is next (of its thread's waiting runs, or
        /// of the user's queue).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u64>,
        /// The message joined the thread's running run (`run_id` is that run's; `multitask`
        /// `steer`): it shows there as `message_received`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        steered: bool,
    },
    /// A request was refused or a frame was invalid.
    Error {
        /// The request's id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// What kind of problem.
        code: ErrorCode,
        /// What was wrong, for a human.
        message: String,
        /// For `budget_exceeded`: the budget in the way, what remains of it and when it
        /// resets (`budget`, `remaining`, `resets_at`).
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        // TypeScript cannot flatten an optional object: `ErrorFrame` there adds these fields.
        #[ts(skip)]
        shortfall: Option<Shortfall>,
    },
    /// The answer to `ping`.
    Pong {
        /// The server's clock.
        server_time: Timestamp,
    },
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(request_id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            request_id,
            code,
            message: message.into(),
            shortfall: None,
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // These plain structs with string keys always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl From<ProtocolError> for ServerFrame {
    fn from(error: ProtocolError) -> Self {
        ServerFrame::Error {
            request_id: error.request_id,
            code: error.code,
            message: error.message,
            shortfall: None,
        }
    }
}

/// Anything a connection receives: a control frame or an event of the user's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `connection_established`, `run_accepted`, `error` or `pong`.
    Frame(ServerFrame),
    /// An event of the user's stream (it has a `seq`).
    Event(SequencedEvent),
    /// A change to one of the user's threads, on the user's stream (it has a `seq`, and no
    /// run): renamed or deleted, from any tab, client or node.
    Thread(SequencedThreadEvent),
    /// A frame whose `type` this version does not know, from a newer server. A client keeps
    /// its `seq` (an event of the stream all the same) and may show it raw, not drop it.
    Unknown(UnknownFrame),
}

/// A frame of a `type` this version of the protocol does not name.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownFrame {
    /// Its `type`.
    pub kind: String,
    /// Its `seq`, when it is an event of the user's stream.
    pub seq: Option<u64>,
    /// The whole frame.
    pub value: serde_json::Value,
}

/// The `type`s of the user's stream's changes to threads (`core_context::ThreadChange`).
pub const THREAD_TYPES: &[&str] = core_context::ThreadChange::TYPE_NAMES;

/// The `type`s of the server's control frames.
pub const CONTROL_TYPES: &[&str] = &["connection_established", "run_accepted", "error", "pong"];

/// The `type`s of the events of a user's stream (`core_context::EventKind`'s wire names).
pub const EVENT_TYPES: &[&str] = core_context::EventKind::TYPE_NAMES;

/// A text frame that is not a frame of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a protocol v1 server frame ({reason}): {excerpt}")]
pub struct UnexpectedFrame {
    /// What did not fit.
    pub reason: String,
    /// The start of the frame, for a log line.
    pub excerpt: String,
}

/// Just enough of a frame to tell events (they have a `seq`) from control frames, and known
/// types from newer ones.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<u64>,
}

impl ServerMessage {
    /// Parses one text frame the server sent.
    pub fn parse(text: &str) -> Result<Self, UnexpectedFrame> {
        let unexpected = |e: serde_json::Error| UnexpectedFrame {
            reason: e.to_string(),
            excerpt: text.chars().take(200).collect(),
        };
        let probe: Probe = serde_json::from_str(text).map_err(unexpected)?;
        let kind = probe.kind.as_str();
        if THREAD_TYPES.contains(&kind) {
            return serde_json::from_str(text)
                .map(ServerMessage::Thread)
                .map_err(unexpected);
        }
        if !CONTROL_TYPES.contains(&kind) && !EVENT_TYPES.contains(&kind) {
            let value = serde_json::from_str(text).map_err(unexpected)?;
            return Ok(ServerMessage::Unknown(UnknownFrame {
                kind: probe.kind,
                seq: probe.seq,
                value,
            }));
        }
        if probe.seq.is_some() {
            serde_json::from_str(text)
                .map(ServerMessage::Event)
                .map_err(unexpected)
        } else {
            serde_json::from_str(text)
                .map(ServerMessage::Frame)
                .map_err(unexpected)
        }
    }

    /// The message as JSON text, exactly as the server encodes it.
    pub fn to_text(&self) -> String {
        match self {
            ServerMessage::Frame(frame) => frame.to_text(),
            ServerMessage::Event(event) => serde_json::to_string(event).unwrap_or_default(),
            ServerMessage::Thread(event) => serde_json::to_string(event).unwrap_or_default(),
            ServerMessage::Unknown(frame) => frame.value.to_string(),
        }
    }

    /// The `seq` of a message of the user's stream (known or not); `None` for control frames.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMessage::Frame(_) => None,
            ServerMessage::Event(event) => Some(event.seq),
            ServerMessage::Thread(event) => Some(event.seq),
            ServerMessage::Unknown(frame) => frame.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn every_server_example_round_trips_through_the_types() {
        let examples: Value =
            serde_json::from_str(include_str!("../../../docs/protocol-examples.json")).unwrap();
        let frames = examples["server_to_client"].as_array().unwrap();
        let (mut events, mut threads) = (0, 0);
        for frame in frames {
            let message =
                ServerMessage::parse(&frame.to_string()).unwrap_or_else(|e| panic!("{frame}: {e}"));
            events += usize::from(matches!(message, ServerMessage::Event(_)));
            threads += usize::from(matches!(message, ServerMessage::Thread(_)));
            let encoded: Value = serde_json::from_str(&message.to_text()).unwrap();
            assert_eq!(&encoded, frame, "re-encoded differently");
        }
        assert!(
            events > 0 && threads > 0 && events + threads < frames.len(),
            "every kind is covered"
        );
    }

    #[test]
    fn server_frames_have_the_wire_shape() {
        let frame = ServerFrame::RunAccepted {
            request_id: Some("r1".into()),
            run_id: RunId::parse("run_1").unwrap(),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            queued: false,
            position: None,
            steered: false,
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type":"run_accepted","request_id":"r1","run_id":"run_1","thread_id":"thr_1"})
        );
        let queued = ServerFrame::RunAccepted {
            request_id: None,
            run_id: RunId::parse("run_2").unwrap(),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            queued: true,
            position: Some(1),
            steered: false,
        };
        let wire = json!({"type":"run_accepted","run_id":"run_2","thread_id":"thr_1","queued":true,"position":1});
        assert_eq!(serde_json::to_value(&queued).unwrap(), wire);
        assert_eq!(serde_json::from_value::<ServerFrame>(wire).unwrap(), queued);
        let pong: Value = serde_json::from_str(
            &ServerFrame::Pong {
                server_time: Timestamp::now(),
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(pong["type"], "pong");
        let error = ServerFrame::from(ProtocolError::new(None, ErrorCode::UnknownType, "x"));
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type":"error","code":"unknown_type","message":"x"})
        );
    }

    #[test]
    fn frames_that_are_not_protocol_v1_are_named() {
        for text in [
            "not json",
            r#"{"seq":3}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"agent_started","seq":1}"#,
        ] {
            let err = ServerMessage::parse(text).unwrap_err();
            assert!(
                err.to_string().contains("not a protocol v1 server frame"),
                "{err}"
            );
        }
    }

    #[test]
    fn frames_of_newer_types_are_kept_with_their_seq() {
        let text = r#"{"type":"agent_dreaming","seq":7,"run_id":"run_1","data":{"x":1}}"#;
        let message = ServerMessage::parse(text).unwrap();
        assert_eq!(message.seq(), Some(7));
        let ServerMessage::Unknown(frame) = &message else {
            panic!("{message:?}")
        };
        assert_eq!(frame.kind, "agent_dreaming");
        assert_eq!(frame.value["data"]["x"], 1);
        let welcome = ServerMessage::parse(r#"{"type":"welcome"}"#).unwrap();
        assert_eq!(welcome.seq(), None);
    }
}
