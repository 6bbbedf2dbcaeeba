//! Frames a client sends, and the parser the server runs on every text frame.
//!
//! Parsing never panics and never guesses: every malformed frame becomes a [`ProtocolError`]
//! with a code and a message that names the problem, which the server sends back as an
//! `error` frame while the connection stays open. The messages are part of the contract
//! (clients show them), so the table test below pins them.

use core_context::approval::Decision;
use core_context::multitask::Multitask;
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
const KNOWN_TYPES: &str =
    "start_agent, cancel_run, resolve_approval, ping (legacy: user_message, chat)";

/// The longest `tool_call_id` accepted, in bytes.
pub const MAX_TOOL_CALL_ID_LEN: usize = 128;

/// A valid client frame. Serialising it gives its wire form.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Start an agent run (legacy `user_message` / `chat` frames parse to this too).
    StartAgent {
        /// Echoed in the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        request_id: Option<String>,
        /// What to run.
        payload: StartAgent,
    },
    /// Cancel one of the user's runs.
    CancelRun {
        /// Echoed in an error reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        request_id: Option<String>,
        /// Which run.
        payload: CancelRun,
    },
    /// A person's decision about a tool call waiting for approval.
    ResolveApproval {
        /// Echoed in an error reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        request_id: Option<String>,
        /// Which call, and the decision.
        payload: ResolveApproval,
    },
    /// A heartbeat; answered with `pong`.
    Ping,
}

/// The payload of `resolve_approval`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct ResolveApproval {
    /// The paused run.
    pub run_id: RunId,
    /// The call waiting (its `approval_requested`'s `tool_call_id`).
    pub tool_call_id: String,
    /// The decision, with its `arguments` (edit) or `message` (reject, respond).
    #[serde(flatten)]
    pub decision: Decision,
}

/// The payload of `start_agent`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct StartAgent {
    /// The agent's registered name.
    pub agent: String,
    /// The user's message.
    pub message: String,
    /// The thread to continue, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub thread_id: Option<ThreadId>,
    /// Agent-specific options, handed to the agent as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub input: Option<Map<String, Value>>,
    /// What to do with the thread's live run, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub multitask: Option<Multitask>,
}

/// The payload of `cancel_run`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
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
            | ClientFrame::CancelRun { request_id, .. }
            | ClientFrame::ResolveApproval { request_id, .. } => request_id.as_deref(),
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
        "resolve_approval" => Ok(ClientFrame::ResolveApproval {
            request_id: request_id.clone(),
            payload: request.resolve_approval(request.payload(&frame)?)?,
        }),
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

    fn resolve_approval(
        &self,
        payload: &Map<String, Value>,
    ) -> Result<ResolveApproval, ProtocolError> {
        let raw = self.required_str(payload, "run_id")?;
        let run_id = RunId::parse(raw)
            .map_err(|e| self.fail(ErrorCode::InvalidField, format!("payload.run_id: {e}")))?;
        let tool_call_id = self.required_str(payload, "tool_call_id")?;
        if tool_call_id.is_empty() || tool_call_id.len() > MAX_TOOL_CALL_ID_LEN {
            return Err(self.fail(
                ErrorCode::InvalidField,
                format!("payload.tool_call_id must be 1 to {MAX_TOOL_CALL_ID_LEN} bytes"),
            ));
        }
        let decision = self.required_str(payload, "decision")?;
        let arguments = payload.get("arguments").filter(|v| !v.is_null()).cloned();
        let message = match payload.get("message") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(other) => {
                return Err(self.fail(
                    ErrorCode::InvalidField,
                    format!("payload.message must be a string, got {}", json_kind(other)),
                ));
            }
        };
        let decision = Decision::from_request(decision, arguments, message)
            .map_err(|e| self.fail(ErrorCode::InvalidField, format!("payload.{e}")))?;
        Ok(ResolveApproval {
            run_id,
            tool_call_id: tool_call_id.to_owned(),
            decision,
        })
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
        let multitask = match payload.get("multitask") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(Multitask::parse(name).ok_or_else(|| {
                self.fail(
                    ErrorCode::InvalidField,
                    format!(
                        "payload.multitask {name:?} is not a strategy; use one of {}",
                        Multitask::NAMES.join(", ")
                    ),
                )
            })?),
            Some(other) => {
                return Err(self.fail(
                    ErrorCode::InvalidField,
                    format!(
                        "payload.multitask must be a string, got {}",
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
            multitask,
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
            multitask: None,
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
mod tests;
