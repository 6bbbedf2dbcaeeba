//! Adapters between the bridge's stream types and the protocol's wire types.
//!
//! `ws-bridge` holds no transport and knows no wire format; `agent-protocol` knows nothing of
//! streams. The server speaks both, and this is the one place where they meet.

use std::sync::Arc;

use agent_protocol::{CloseCode, ErrorCode, ResumeFailure, ResumeParams, ResumeStatus};
use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use ws_bridge::{CloseReason, ResumeOutcome, ResumeRequest};

/// The close code for a connection whose queue the bridge closed.
pub fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::SlowConsumer => CloseCode::SlowConsumer,
        CloseReason::Shutdown => CloseCode::GoingAway,
        CloseReason::StreamReset => CloseCode::StreamReset,
    }
}

/// The `connection_established.resume` status of a bridge resume outcome.
pub fn resume_status(outcome: &ResumeOutcome) -> ResumeStatus {
    match outcome {
        ResumeOutcome::Ok { replayed } => ResumeStatus::Ok {
            replayed: *replayed,
        },
        ResumeOutcome::Failed { reason, oldest_seq } => ResumeStatus::Failed {
            reason: match reason {
                ws_bridge::ResumeFailure::TooOld => ResumeFailure::TooOld,
                ws_bridge::ResumeFailure::EpochChanged => ResumeFailure::EpochChanged,
                ws_bridge::ResumeFailure::SeqAhead => ResumeFailure::SeqAhead,
            },
            oldest_seq: *oldest_seq,
        },
    }
}

/// The bridge's resume request for a connect URL's resume parameters.
pub fn resume_request(params: &ResumeParams) -> ResumeRequest {
    ResumeRequest {
        epoch: params.epoch.clone(),
        after_seq: params.after_seq,
    }
}

/// The frame's text as a WebSocket payload without copying it: every connection of the user
/// sends the one encoding the broker made.
pub fn shared_text(text: &Arc<str>) -> Utf8Bytes {
    let bytes = bytes::Bytes::from_owner(ArcText(Arc::clone(text)));
    // The bytes come from a `str`, so they are UTF-8; the fallback copy is unreachable.
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from(&**text))
}

/// An `Arc<str>` seen as bytes, to own a shared frame inside `Bytes`.
struct ArcText(Arc<str>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The run service's request for a `start_agent` frame's payload.
pub fn run_request(
    start: agent_protocol::StartAgent,
    request_id: Option<String>,
) -> run_service::RunRequest {
    run_service::RunRequest {
        agent: start.agent,
        message: start.message,
        thread_id: start.thread_id,
        input: start.input,
        request_id,
        multitask: start.multitask,
    }
}

/// The `error` frame of a refused request.
pub fn refused(
    request_id: Option<String>,
    refusal: run_service::Refusal,
) -> agent_protocol::ServerFrame {
    agent_protocol::ServerFrame::Error {
        request_id,
        code: agent_protocol::ErrorCode::from_wire(refusal.code),
        message: refusal.message,
        shortfall: refusal.shortfall,
    }
}

/// The HTTP response of a refused request (AG-UI, the history API): the protocol's error
/// body, with a `budget_exceeded`'s `budget`, `remaining` and `resets_at`.
pub fn refused_http(refusal: run_service::Refusal) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code = agent_protocol::ErrorCode::from_wire(refusal.code);
    let status = http_status(&code);
    let Some(shortfall) = refusal.shortfall else {
        return http_guard::bearer::refuse(status, code, refusal.message);
    };
    let mut body = serde_json::json!({"error": code, "message": refusal.message});
    if let (Some(body), Ok(serde_json::Value::Object(extra))) =
        (body.as_object_mut(), serde_json::to_value(&shortfall))
    {
        body.extend(extra);
    }
    (status, axum::Json(body)).into_response()
}

/// The close of a connection that could not join its user's stream: 1008 when the user's
/// connection limit was reached by a racing connection, 1013 (try again later) when the
/// broker cannot follow the stream now; with the reason.
pub fn join_refused(error: &ws_bridge::BridgeError) -> (CloseCode, String) {
    match error {
        ws_bridge::BridgeError::TooManyConnections { .. } => {
            (CloseCode::PolicyViolation, error.to_string())
        }
        ws_bridge::BridgeError::Broker(_) => (
            CloseCode::TryAgainLater,
            format!("try again later: {error}"),
        ),
    }
}

/// The HTTP status of a run service refusal (a start, a decision), for the HTTP transports
/// (AG-UI, the approvals API).
pub fn http_status(code: &ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownAgent | ErrorCode::ThreadNotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited
        | ErrorCode::TooManyRuns
        | ErrorCode::TooManyEngines
        | ErrorCode::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown | ErrorCode::EngineClosed | ErrorCode::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ApprovalNotFound => StatusCode::NOT_FOUND,
        ErrorCode::ApprovalAlreadyDecided
        | ErrorCode::ThreadWaitingForApproval
        | ErrorCode::ThreadBusy => StatusCode::CONFLICT,
        ErrorCode::ApprovalExpired => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sent_without_copying_the_shared_encoding() {
        let text: Arc<str> = Arc::from(r#"{"type":"agent_thinking","seq":1}"#);
        let payload = shared_text(&text);
        assert_eq!(payload.as_str(), &*text);
        assert_eq!(
            payload.as_str().as_ptr(),
            text.as_ptr(),
            "the frame was copied"
        );
    }

    #[test]
    fn a_refused_join_closes_by_cause() {
        let limit = ws_bridge::BridgeError::TooManyConnections { max: 3 };
        let (code, reason) = join_refused(&limit);
        assert_eq!(code, CloseCode::PolicyViolation);
        assert!(reason.contains("too many connections"), "{reason}");
        let broker = ws_bridge::BridgeError::Broker(ws_bridge::broker::BrokerError(
            "Redis: unavailable".into(),
        ));
        let (code, reason) = join_refused(&broker);
        assert_eq!(code, CloseCode::TryAgainLater);
        assert!(reason.starts_with("try again later: "), "{reason}");
    }
}
