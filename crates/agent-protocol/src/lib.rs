//! Wire protocol v1 (`docs/protocol.md`) as types, shared by everything that speaks it: the
//! server, the Rust client, the chat CLI and the tests.
//!
//! - [`client_frames`]: frames a client sends ([`ClientFrame`]) and the parser the server runs on
//!   them, whose error codes and messages are part of the contract.
//! - [`server_frames`]: frames the server sends that are not events ([`ServerFrame`]), and
//!   [`ServerMessage`], everything a client can receive, events included.
//! - [`codes`]: the `code` of `error` frames ([`ErrorCode`]) and the WebSocket close codes
//!   ([`CloseCode`]), as enums whose wire strings and numbers never change.
//! - [`resume`]: the resume parameters of the connect URL and the outcome the server reports.
//! - [`http`]: the JSON bodies of the HTTP side (refusals, dev tokens).
//! - [`typescript`]: all of these as TypeScript declarations, for the TypeScript client.
//!
//! Events themselves are [`core_context::SequencedEvent`]: the engine's vocabulary is the
//! wire's, defined once in `core-context` and re-exported here.
//!
//! **Architecture Invariant:** this crate does no IO and depends on `core-context` only (plus
//! serde). Every frame of `docs/protocol-examples.json` round-trips through these types.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::too_many_lines))]

pub mod client_frames;
pub mod codes;
pub mod http;
pub mod resume;
pub mod server_frames;
pub mod typescript;

pub use client_frames::{
    CancelRun, ClientFrame, ProtocolError, ResolveApproval, StartAgent, parse_client_frame,
};
pub use codes::{CloseCode, ErrorCode};
pub use core_context::{
    AgentEvent, EventKind, SequencedEvent, SequencedThreadEvent, ThreadChange, ThreadEvent,
    Timestamp,
};
pub use resume::{Epoch, ResumeFailure, ResumeParams, ResumeStatus};
pub use server_frames::{
    CONTROL_TYPES, EVENT_TYPES, ServerFrame, ServerMessage, THREAD_TYPES, UnexpectedFrame,
    UnknownFrame,
};

/// How a JSON value's type is named in error messages ("a number", "an array", ...).
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
