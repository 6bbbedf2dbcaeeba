//! Wire protocol v1: parsing client frames and encoding server frames (`docs/protocol.md`).
//!
//! Parsing never panics and never guesses: every malformed frame becomes a [`ProtocolError`]
//! with a code and a message that names the problem, which the connection sends back as an
//! `error` frame while staying open.

use core_context::{ConnectionId, RunId, ThreadId, UserId};
use serde::Serialize;
use serde_json::{Map, Value};
use ws_bridge::{Epoch, ResumeOutcome};

/// The longest `request_id` echoed back, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The longest agent name accepted.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// Error codes of `error` frames.
pub mod code {
    /// The frame is not JSON.
    pub const INVALID_JSON: &str = "invalid_json";
    /// The frame is JSON but not an object with a string `type`.
    pub const INVALID_FRAME: &str = "invalid_frame";
    /// The `type` is not one the server knows.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A required field is missing.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A field has the wrong type or an invalid value.
    pub const INVALID_FIELD: &str = "invalid_field";
    /// The frame is larger than the limit.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// Binary frames are not part of the protocol.
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    /// Too many `start_agent` requests.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The run does not exist or is not the user's (the two are not told apart).
    pub const RUN_NOT_FOUND: &str = "run_not_found";
    /// The thread belongs to another user (told apart from nothing else).
    pub const THREAD_NOT_FOUND: &str = "thread_not_found";
    /// The server is shutting down and takes no new runs.
    pub const SHUTTING_DOWN: &str = "shutting_down";
}

/// A client frame that failed to parse, as the `error` frame that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The frame's `request_id`, when it had a usable one.
    pub request_id: Option<String>,
    /// One of [`code`].
    pub code: &'static str,
    /// What was wrong, for a human.
    pub message: String,
}

impl ProtocolError {
    fn new(request_id: Option<&str>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            request_id: request_id.map(str::to_owned),
            code,
            message: message.into(),
        }
    }
}

/// A `start_agent` request (or a legacy `user_message` / `chat`).
#[derive(Debug, Clone, PartialEq)]
pub struct StartAgent {
    /// Echoed in the reply.
    pub request_id: Option<String>,
    /// The agent's registered name.
    pub agent: String,
    /// The user's message.
    pub message: String,
    /// The thread to continue, if any.
    pub thread_id: Option<ThreadId>,
    /// Agent-specific options (`Value::Null` when absent).
    pub input: Value,
}

/// A valid request from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// Start an agent run.
    StartAgent(StartAgent),
    /// Cancel one of the user's runs.
    CancelRun {
        /// Echoed in an error reply.
        request_id: Option<String>,
        /// The run.
        run_id: RunId,
    },
    /// A heartbeat; answered with `pong`.
    Ping,
}

const KNOWN_TYPES: &str = "start_agent, cancel_run, ping (legacy: user_message, chat)";

/// Parses one text frame. `default_agent` serves the legacy `user_message` / `chat` types.
pub fn parse_client_frame(text: &str, default_agent: &str) -> Result<ClientRequest, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            None,
            code::INVALID_JSON,
            format!("the frame is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(frame) = value else {
        return Err(ProtocolError::new(
            None,
            code::INVALID_FRAME,
            "a frame must be a JSON object with a \"type\" field",
        ));
    };
    let request_id = match frame.get("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.len() <= MAX_REQUEST_ID_LEN => Some(id.as_str()),
        Some(Value::String(_)) => {
            return Err(ProtocolError::new(
                None,
                code::INVALID_FIELD,
                format!("request_id is longer than {MAX_REQUEST_ID_LEN} bytes"),
            ));
        }
        Some(other) => {
            return Err(ProtocolError::new(
                None,
                code::INVALID_FIELD,
                format!("request_id must be a string, got {}", json_kind(other)),
            ));
        }
    };
    let fail = |code, message: String| ProtocolError::new(request_id, code, message);
    let kind_name = match frame.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(other) => {
            return Err(fail(
                code::INVALID_FRAME,
                format!("\"type\" must be a string, got {}", json_kind(other)),
            ));
        }
        None => {
            return Err(fail(
                code::INVALID_FRAME,
                "the frame has no \"type\" field".into(),
            ));
        }
    };
    let owned_id = request_id.map(str::to_owned);
    match kind_name {
        "ping" => Ok(ClientRequest::Ping),
        "start_agent" => {
            let payload = payload(&frame, request_id)?;
            let agent = required_str(payload, "agent", request_id)?;
            if agent.is_empty() || agent.len() > MAX_AGENT_NAME_LEN {
                return Err(fail(
                    code::INVALID_FIELD,
                    format!("payload.agent must be 1 to {MAX_AGENT_NAME_LEN} characters"),
                ));
            }
            let message = required_str(payload, "message", request_id)?;
            let input = match payload.get("input") {
                None | Some(Value::Null) => Value::Null,
                Some(v @ Value::Object(_)) => v.clone(),
                Some(other) => {
                    return Err(fail(
                        code::INVALID_FIELD,
                        format!(
                            "payload.input must be a JSON object, got {}",
                            json_kind(other)
                        ),
                    ));
                }
            };
            Ok(ClientRequest::StartAgent(StartAgent {
                request_id: owned_id,
                agent: agent.to_owned(),
                message: message.to_owned(),
                thread_id: thread_id(payload, request_id)?,
                input,
            }))
        }
        "cancel_run" => {
            let payload = payload(&frame, request_id)?;
            let raw = required_str(payload, "run_id", request_id)?;
            let run_id = RunId::parse(raw)
                .map_err(|e| fail(code::INVALID_FIELD, format!("payload.run_id: {e}")))?;
            Ok(ClientRequest::CancelRun {
                request_id: owned_id,
                run_id,
            })
        }
        "user_message" | "chat" => {
            let payload = payload(&frame, request_id)?;
            let message = ["message", "content", "text"]
                .iter()
                .find_map(|k| payload.get(*k))
                .ok_or_else(|| {
                    fail(
                        code::MISSING_FIELD,
                        format!(
                            "{kind_name} needs payload.message, payload.content or payload.text"
                        ),
                    )
                })?;
            let Value::String(message) = message else {
                return Err(fail(
                    code::INVALID_FIELD,
                    format!(
                        "the message of {kind_name} must be a string, got {}",
                        json_kind(message)
                    ),
                ));
            };
            Ok(ClientRequest::StartAgent(StartAgent {
                request_id: owned_id,
                agent: default_agent.to_owned(),
                message: message.clone(),
                thread_id: thread_id(payload, request_id)?,
                input: Value::Null,
            }))
        }
        other => Err(fail(
            code::UNKNOWN_TYPE,
            format!("unknown message type {other:?}; expected one of: {KNOWN_TYPES}"),
        )),
    }
}

/// How a JSON value's type is named in error messages ("a number", "an array", ...).
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn payload<'a>(
    frame: &'a Map<String, Value>,
    request_id: Option<&str>,
) -> Result<&'a Map<String, Value>, ProtocolError> {
    match frame.get("payload") {
        Some(Value::Object(p)) => Ok(p),
        None => Err(ProtocolError::new(
            request_id,
            code::MISSING_FIELD,
            "the frame has no \"payload\" object",
        )),
        Some(other) => Err(ProtocolError::new(
            request_id,
            code::INVALID_FIELD,
            format!("\"payload\" must be an object, got {}", json_kind(other)),
        )),
    }
}

fn required_str<'a>(
    payload: &'a Map<String, Value>,
    field: &str,
    request_id: Option<&str>,
) -> Result<&'a str, ProtocolError> {
    match payload.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ProtocolError::new(
            request_id,
            code::MISSING_FIELD,
            format!("payload.{field} is required"),
        )),
        Some(other) => Err(ProtocolError::new(
            request_id,
            code::INVALID_FIELD,
            format!("payload.{field} must be a string, got {}", json_kind(other)),
        )),
    }
}

fn thread_id(
    payload: &Map<String, Value>,
    request_id: Option<&str>,
) -> Result<Option<ThreadId>, ProtocolError> {
    match payload.get("thread_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ThreadId::parse(s).map(Some).map_err(|e| {
            ProtocolError::new(
                request_id,
                code::INVALID_FIELD,
                format!("payload.thread_id: {e}"),
            )
        }),
        Some(other) => Err(ProtocolError::new(
            request_id,
            code::INVALID_FIELD,
            format!(
                "payload.thread_id must be a string, got {}",
                json_kind(other)
            ),
        )),
    }
}

/// A frame the server sends that is not part of the user's event stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        server_time: String,
        /// The resume outcome, when the client asked to resume.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeOutcome>,
    },
    /// A `start_agent` was accepted.
    RunAccepted {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The new run.
        run_id: RunId,
        /// Its thread.
        thread_id: ThreadId,
    },
    /// A request was refused or a frame was invalid.
    Error {
        /// The request's id, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// A machine-readable code.
        code: String,
        /// What was wrong.
        message: String,
    },
    /// The answer to `ping`.
    Pong {
        /// The server's clock.
        server_time: String,
    },
}

impl ServerFrame {
    /// The `error` frame answering `error`.
    pub fn from_error(error: ProtocolError) -> Self {
        ServerFrame::Error {
            request_id: error.request_id,
            code: error.code.to_owned(),
            message: error.message,
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"code\":\"internal_error\",\"message\":\"{e}\"}}")
        })
    }
}

/// The current time as the protocol writes it (RFC 3339 UTC, microseconds).
pub fn now() -> String {
    core_context::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What a frame should parse to: `Ok(type)`, or `Err((code, message fragment))`.
    type Expected<'a> = Result<&'a str, (&'a str, &'a str)>;

    /// Parses `frame` and compares the outcome with `expected`.
    fn check(frame: &str, expected: Expected<'_>) {
        let got = parse_client_frame(frame, "assistant");
        match (&got, expected) {
            (Ok(ClientRequest::Ping), Ok("ping"))
            | (Ok(ClientRequest::StartAgent(_)), Ok("start_agent"))
            | (Ok(ClientRequest::CancelRun { .. }), Ok("cancel_run")) => {}
            (Err(e), Err((code, fragment))) => {
                assert_eq!(e.code, code, "{frame}: {e:?}");
                assert!(
                    e.message.contains(fragment),
                    "{frame}: {:?} lacks {fragment:?}",
                    e.message
                );
            }
            _ => panic!("{frame}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn client_frame_table() {
        let table: &[(&str, Expected<'_>)] = &[
            (r#"{"type":"ping"}"#, Ok("ping")),
            (
                r#"{"type":"start_agent","request_id":"r1","payload":{"agent":"assistant","message":"hi"}}"#,
                Ok("start_agent"),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"thr_abc","input":{"x":1}}}"#,
                Ok("start_agent"),
            ),
            (
                r#"{"type":"cancel_run","payload":{"run_id":"run_abc"}}"#,
                Ok("cancel_run"),
            ),
            (
                r#"{"type":"user_message","payload":{"content":"hello"}}"#,
                Ok("start_agent"),
            ),
            (
                r#"{"type":"chat","payload":{"text":"hello"}}"#,
                Ok("start_agent"),
            ),
            ("not json", Err((code::INVALID_JSON, "not valid JSON"))),
            ("[1,2]", Err((code::INVALID_FRAME, "must be a JSON object"))),
            (
                r#"{"payload":{}}"#,
                Err((code::INVALID_FRAME, "no \"type\" field")),
            ),
            (
                r#"{"type":7}"#,
                Err((
                    code::INVALID_FRAME,
                    "\"type\" must be a string, got a number",
                )),
            ),
            (
                r#"{"type":"launch"}"#,
                Err((
                    code::UNKNOWN_TYPE,
                    "unknown message type \"launch\"; expected one of: start_agent",
                )),
            ),
            (
                r#"{"type":"start_agent"}"#,
                Err((code::MISSING_FIELD, "no \"payload\" object")),
            ),
            (
                r#"{"type":"start_agent","payload":[]}"#,
                Err((
                    code::INVALID_FIELD,
                    "\"payload\" must be an object, got an array",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"message":"hi"}}"#,
                Err((code::MISSING_FIELD, "payload.agent is required")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a"}}"#,
                Err((code::MISSING_FIELD, "payload.message is required")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":5,"message":"hi"}}"#,
                Err((
                    code::INVALID_FIELD,
                    "payload.agent must be a string, got a number",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"","message":"hi"}}"#,
                Err((code::INVALID_FIELD, "1 to 64 characters")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","input":"x"}}"#,
                Err((
                    code::INVALID_FIELD,
                    "payload.input must be a JSON object, got a string",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"bad id"}}"#,
                Err((
                    code::INVALID_FIELD,
                    "payload.thread_id: thread id contains ' '",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"default"}}"#,
                Err((code::INVALID_FIELD, "placeholder")),
            ),
            (
                r#"{"type":"cancel_run","payload":{}}"#,
                Err((code::MISSING_FIELD, "payload.run_id is required")),
            ),
            (
                r#"{"type":"cancel_run","payload":{"run_id":""}}"#,
                Err((code::INVALID_FIELD, "run id must not be empty")),
            ),
            (
                r#"{"type":"chat","payload":{}}"#,
                Err((
                    code::MISSING_FIELD,
                    "payload.message, payload.content or payload.text",
                )),
            ),
            (
                r#"{"type":"chat","payload":{"text":3}}"#,
                Err((code::INVALID_FIELD, "must be a string, got a number")),
            ),
            (
                r#"{"type":"ping","request_id":5}"#,
                Err((code::INVALID_FIELD, "request_id must be a string")),
            ),
        ];
        for (frame, expected) in table {
            check(frame, *expected);
        }
    }

    #[test]
    fn errors_echo_the_request_id_and_legacy_frames_use_the_default_agent() {
        let err = parse_client_frame(
            r#"{"type":"start_agent","request_id":"r9","payload":{}}"#,
            "assistant",
        )
        .unwrap_err();
        assert_eq!(err.request_id.as_deref(), Some("r9"));
        let ClientRequest::StartAgent(start) = parse_client_frame(
            r#"{"type":"user_message","payload":{"content":"hello"}}"#,
            "assistant",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (start.agent.as_str(), start.message.as_str()),
            ("assistant", "hello")
        );
    }

    #[test]
    fn every_client_example_of_the_protocol_parses() {
        let examples: Value =
            serde_json::from_str(include_str!("../../../docs/protocol-examples.json")).unwrap();
        for frame in examples["client_to_server"].as_array().unwrap() {
            parse_client_frame(&frame.to_string(), "assistant")
                .unwrap_or_else(|e| panic!("{frame}: {e:?}"));
        }
    }

    #[test]
    fn server_frames_have_the_wire_shape() {
        let frame = ServerFrame::RunAccepted {
            request_id: Some("r1".into()),
            run_id: RunId::parse("run_1").unwrap(),
            thread_id: ThreadId::parse("thr_1").unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type":"run_accepted","request_id":"r1","run_id":"run_1","thread_id":"thr_1"})
        );
        let pong: Value =
            serde_json::from_str(&ServerFrame::Pong { server_time: now() }.to_text()).unwrap();
        assert_eq!(pong["type"], "pong");
        let error = ServerFrame::from_error(ProtocolError::new(None, code::UNKNOWN_TYPE, "x"));
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type":"error","code":"unknown_type","message":"x"})
        );
    }
}
