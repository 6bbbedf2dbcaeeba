//! Frames a client sends, and the parser the server runs on every text frame.
//!
//! Parsing never panics and never guesses: every malformed frame becomes a [`ProtocolError`]
//! with a code and a message that names the problem, which the server sends back as an
//! `error` frame while the connection stays open. The messages are part of the contract
//! (clients show them), so the table test below pins them.

use core_context::{RunId, ThreadId};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::codes::ErrorCode;
use crate::json_kind;

/// The longest `request_id` echoed back, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The longest agent name accepted.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// The `type`s a server accepts, as an error message lists them.
const KNOWN_TYPES: &str = "start_agent, cancel_run, ping (legacy: user_message, chat)";

/// A valid client frame. Serialising it gives its wire form.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Start an agent run (legacy `user_message` / `chat` frames parse to this too).
    StartAgent {
        /// Echoed in the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// What to run.
        payload: StartAgent,
    },
    /// Cancel one of the user's runs.
    CancelRun {
        /// Echoed in an error reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// Which run.
        payload: CancelRun,
    },
    /// A heartbeat; answered with `pong`.
    Ping,
}

/// The payload of `start_agent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartAgent {
    /// The agent's registered name.
    pub agent: String,
    /// The user's message.
    pub message: String,
    /// The thread to continue, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<ThreadId>,
    /// Agent-specific options, handed to the agent as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Map<String, Value>>,
}

/// The payload of `cancel_run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelRun {
    /// The run to cancel.
    pub run_id: RunId,
}

impl ClientFrame {
    /// A `start_agent` frame.
    pub fn start_agent(request_id: Option<String>, payload: StartAgent) -> Self {
        ClientFrame::StartAgent {
            request_id,
            payload,
        }
    }

    /// A `cancel_run` frame.
    pub fn cancel_run(request_id: Option<String>, run_id: RunId) -> Self {
        ClientFrame::CancelRun {
            request_id,
            payload: CancelRun { run_id },
        }
    }

    /// The frame's `request_id`, if it has one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientFrame::StartAgent { request_id, .. }
            | ClientFrame::CancelRun { request_id, .. } => request_id.as_deref(),
            ClientFrame::Ping => None,
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // These plain structs with string keys always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A client frame that failed to parse, as the `error` frame that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// The frame's `request_id`, when it had a usable one.
    pub request_id: Option<String>,
    /// What kind of problem.
    pub code: ErrorCode,
    /// What was wrong, for a human.
    pub message: String,
}

impl ProtocolError {
    /// An error answering the request `request_id`.
    pub fn new(request_id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id: request_id.map(str::to_owned),
            code,
            message: message.into(),
        }
    }
}

/// Parses one text frame. `default_agent` serves the legacy `user_message` / `chat` types.
pub fn parse_client_frame(text: &str, default_agent: &str) -> Result<ClientFrame, ProtocolError> {
    let Envelope {
        frame,
        request_id,
        kind,
    } = envelope(text)?;
    let request = Fields {
        request_id: request_id.as_deref(),
    };
    match kind.as_str() {
        "ping" => Ok(ClientFrame::Ping),
        "start_agent" => Ok(ClientFrame::start_agent(
            request_id.clone(),
            request.start_agent(request.payload(&frame)?)?,
        )),
        "cancel_run" => {
            let payload = request.payload(&frame)?;
            let raw = request.required_str(payload, "run_id")?;
            let run_id = RunId::parse(raw).map_err(|e| {
                request.fail(ErrorCode::InvalidField, format!("payload.run_id: {e}"))
            })?;
            Ok(ClientFrame::cancel_run(request_id.clone(), run_id))
        }
        "user_message" | "chat" => Ok(ClientFrame::start_agent(
            request_id.clone(),
            request.legacy_message(request.payload(&frame)?, &kind, default_agent)?,
        )),
        other => Err(request.fail(
            ErrorCode::UnknownType,
            format!("unknown message type {other:?}; expected one of: {KNOWN_TYPES}"),
        )),
    }
}

/// A frame's object with its usable `request_id` and its `type` taken out.
struct Envelope {
    frame: Map<String, Value>,
    request_id: Option<String>,
    kind: String,
}

fn envelope(text: &str) -> Result<Envelope, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            None,
            ErrorCode::InvalidJson,
            format!("the frame is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut frame) = value else {
        return Err(ProtocolError::new(
            None,
            ErrorCode::InvalidFrame,
            "a frame must be a JSON object with a \"type\" field",
        ));
    };
    let request_id = match frame.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.len() <= MAX_REQUEST_ID_LEN => Some(id),
        Some(Value::String(_)) => {
            return Err(ProtocolError::new(
                None,
                ErrorCode::InvalidField,
                format!("request_id is longer than {MAX_REQUEST_ID_LEN} bytes"),
            ));
        }
        Some(other) => {
            return Err(ProtocolError::new(
                None,
                ErrorCode::InvalidField,
                format!("request_id must be a string, got {}", json_kind(&other)),
            ));
        }
    };
    let fail = |message: String| {
        ProtocolError::new(request_id.as_deref(), ErrorCode::InvalidFrame, message)
    };
    let kind = match frame.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(fail(format!(
                "\"type\" must be a string, got {}",
                json_kind(&other)
            )));
        }
        None => return Err(fail("the frame has no \"type\" field".into())),
    };
    Ok(Envelope {
        frame,
        request_id,
        kind,
    })
}

/// Reads the fields of one frame, answering errors with its `request_id`.
struct Fields<'r> {
    request_id: Option<&'r str>,
}

impl Fields<'_> {
    fn fail(&self, code: ErrorCode, message: String) -> ProtocolError {
        ProtocolError::new(self.request_id, code, message)
    }

    fn payload<'a>(
        &self,
        frame: &'a Map<String, Value>,
    ) -> Result<&'a Map<String, Value>, ProtocolError> {
        match frame.get("payload") {
            Some(Value::Object(p)) => Ok(p),
            None => Err(self.fail(
                ErrorCode::MissingField,
                "the frame has no \"payload\" object".into(),
            )),
            Some(other) => Err(self.fail(
                ErrorCode::InvalidField,
                format!("\"payload\" must be an object, got {}", json_kind(other)),
            )),
        }
    }

    fn required_str<'a>(
        &self,
        payload: &'a Map<String, Value>,
        field: &str,
    ) -> Result<&'a str, ProtocolError> {
        match payload.get(field) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(self.fail(
                ErrorCode::MissingField,
                format!("payload.{field} is required"),
            )),
            Some(other) => Err(self.fail(
                ErrorCode::InvalidField,
                format!("payload.{field} must be a string, got {}", json_kind(other)),
            )),
        }
    }

    fn start_agent(&self, payload: &Map<String, Value>) -> Result<StartAgent, ProtocolError> {
        let agent = self.required_str(payload, "agent")?;
        if agent.is_empty() || agent.len() > MAX_AGENT_NAME_LEN {
            return Err(self.fail(
                ErrorCode::InvalidField,
                format!("payload.agent must be 1 to {MAX_AGENT_NAME_LEN} characters"),
            ));
        }
        let message = self.non_empty(self.required_str(payload, "message")?)?;
        let input = match payload.get("input") {
            None | Some(Value::Null) => None,
            Some(Value::Object(input)) => Some(input.clone()),
            Some(other) => {
                return Err(self.fail(
                    ErrorCode::InvalidField,
                    format!(
                        "payload.input must be a JSON object, got {}",
                        json_kind(other)
                    ),
                ));
            }
        };
        Ok(StartAgent {
            agent: agent.to_owned(),
            message,
            thread_id: self.thread_id(payload)?,
            input,
        })
    }

    fn legacy_message(
        &self,
        payload: &Map<String, Value>,
        kind: &str,
        default_agent: &str,
    ) -> Result<StartAgent, ProtocolError> {
        let message = ["message", "content", "text"]
            .iter()
            .find_map(|k| payload.get(*k))
            .ok_or_else(|| {
                self.fail(
                    ErrorCode::MissingField,
                    format!("{kind} needs payload.message, payload.content or payload.text"),
                )
            })?;
        let Value::String(message) = message else {
            return Err(self.fail(
                ErrorCode::InvalidField,
                format!(
                    "the message of {kind} must be a string, got {}",
                    json_kind(message)
                ),
            ));
        };
        Ok(StartAgent {
            agent: default_agent.to_owned(),
            message: self.non_empty(message)?,
            thread_id: self.thread_id(payload)?,
            input: None,
        })
    }

    /// The message of a run, refused when it has no text (empty or only whitespace): no agent
    /// can answer nothing, and the user should hear so before a run starts.
    fn non_empty(&self, message: &str) -> Result<String, ProtocolError> {
        if message.trim().is_empty() {
            return Err(self.fail(
                ErrorCode::InvalidField,
                "the message is empty: type something for the agent".into(),
            ));
        }
        Ok(message.to_owned())
    }

    fn thread_id(&self, payload: &Map<String, Value>) -> Result<Option<ThreadId>, ProtocolError> {
        match payload.get("thread_id") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ThreadId::parse(s)
                .map(Some)
                .map_err(|e| self.fail(ErrorCode::InvalidField, format!("payload.thread_id: {e}"))),
            Some(other) => Err(self.fail(
                ErrorCode::InvalidField,
                format!(
                    "payload.thread_id must be a string, got {}",
                    json_kind(other)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::codes::ErrorCode as code;

    /// What a frame should parse to: `Ok(type)`, or `Err((code, message fragment))`.
    type Expected<'a> = Result<&'a str, (code, &'a str)>;

    /// Parses `frame` and compares the outcome with `expected`.
    fn check(frame: &str, expected: Expected<'_>) {
        let got = parse_client_frame(frame, "assistant");
        match (&got, expected.clone()) {
            (Ok(ClientFrame::Ping), Ok("ping"))
            | (Ok(ClientFrame::StartAgent { .. }), Ok("start_agent"))
            | (Ok(ClientFrame::CancelRun { .. }), Ok("cancel_run")) => {}
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
            ("not json", Err((code::InvalidJson, "not valid JSON"))),
            ("[1,2]", Err((code::InvalidFrame, "must be a JSON object"))),
            (
                r#"{"payload":{}}"#,
                Err((code::InvalidFrame, "no \"type\" field")),
            ),
            (
                r#"{"type":7}"#,
                Err((
                    code::InvalidFrame,
                    "\"type\" must be a string, got a number",
                )),
            ),
            (
                r#"{"type":"launch"}"#,
                Err((
                    code::UnknownType,
                    "unknown message type \"launch\"; expected one of: start_agent",
                )),
            ),
            (
                r#"{"type":"start_agent"}"#,
                Err((code::MissingField, "no \"payload\" object")),
            ),
            (
                r#"{"type":"start_agent","payload":[]}"#,
                Err((
                    code::InvalidField,
                    "\"payload\" must be an object, got an array",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"message":"hi"}}"#,
                Err((code::MissingField, "payload.agent is required")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a"}}"#,
                Err((code::MissingField, "payload.message is required")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":""}}"#,
                Err((
                    code::InvalidField,
                    "the message is empty: type something for the agent",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":" \n\t "}}"#,
                Err((code::InvalidField, "the message is empty")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":" . "}}"#,
                Ok("start_agent"),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":5,"message":"hi"}}"#,
                Err((
                    code::InvalidField,
                    "payload.agent must be a string, got a number",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"","message":"hi"}}"#,
                Err((code::InvalidField, "1 to 64 characters")),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","input":"x"}}"#,
                Err((
                    code::InvalidField,
                    "payload.input must be a JSON object, got a string",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"bad id"}}"#,
                Err((
                    code::InvalidField,
                    "payload.thread_id: thread id contains ' '",
                )),
            ),
            (
                r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"default"}}"#,
                Err((code::InvalidField, "placeholder")),
            ),
            (
                r#"{"type":"cancel_run","payload":{}}"#,
                Err((code::MissingField, "payload.run_id is required")),
            ),
            (
                r#"{"type":"cancel_run","payload":{"run_id":""}}"#,
                Err((code::InvalidField, "run id must not be empty")),
            ),
            (
                r#"{"type":"chat","payload":{}}"#,
                Err((
                    code::MissingField,
                    "payload.message, payload.content or payload.text",
                )),
            ),
            (
                r#"{"type":"user_message","payload":{"content":""}}"#,
                Err((code::InvalidField, "the message is empty")),
            ),
            (
                r#"{"type":"chat","payload":{"text":"\u00a0 "}}"#,
                Err((code::InvalidField, "the message is empty")),
            ),
            (
                r#"{"type":"chat","payload":{"text":3}}"#,
                Err((code::InvalidField, "must be a string, got a number")),
            ),
            (
                r#"{"type":"ping","request_id":5}"#,
                Err((code::InvalidField, "request_id must be a string")),
            ),
        ];
        for (frame, expected) in table {
            check(frame, expected.clone());
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
        let ClientFrame::StartAgent { payload: start, .. } = parse_client_frame(
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
            let parsed = parse_client_frame(&frame.to_string(), "assistant")
                .unwrap_or_else(|e| panic!("{frame}: {e:?}"));
            // Frames in today's vocabulary re-encode to exactly what was parsed; legacy
            // frames become the `start_agent` they stand for.
            let encoded: Value = serde_json::from_str(&parsed.to_text()).unwrap();
            if matches!(frame["type"].as_str(), Some("user_message" | "chat")) {
                assert_eq!(encoded["type"], "start_agent", "{frame}");
                assert_eq!(encoded["payload"]["agent"], "assistant", "{frame}");
            } else {
                assert_eq!(&encoded, frame);
            }
        }
    }

    #[test]
    fn built_frames_have_the_wire_shape() {
        let start = ClientFrame::start_agent(
            Some("r1".into()),
            StartAgent {
                agent: "assistant".into(),
                message: "hi".into(),
                thread_id: None,
                input: None,
            },
        );
        assert_eq!(
            serde_json::from_str::<Value>(&start.to_text()).unwrap(),
            json!({"type":"start_agent","request_id":"r1","payload":{"agent":"assistant","message":"hi"}})
        );
        let cancel = ClientFrame::cancel_run(None, RunId::parse("run_1").unwrap());
        assert_eq!(
            cancel.to_text(),
            r#"{"type":"cancel_run","payload":{"run_id":"run_1"}}"#
        );
        assert_eq!(ClientFrame::Ping.to_text(), r#"{"type":"ping"}"#);
        assert_eq!(start.request_id(), Some("r1"));
    }
}
