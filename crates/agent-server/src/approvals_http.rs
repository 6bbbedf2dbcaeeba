//! Approvals over HTTP, for the signed-in user (`Authorization: Bearer`, like the history):
//!
//! - `GET /v1/approvals`: the user's tool calls waiting for a decision, across threads,
//!   oldest first;
//! - `POST /v1/runs/{run_id}/approvals/{tool_call_id}` with `{"decision", "arguments"?,
//!   "message"?}`: decides one (200); 404 for a call that is not the user's (exactly like a
//!   missing one), 409 when it was already decided, 410 when it expired, 400 naming a bad
//!   field.
//!
//! The decision goes through the run service, as the socket's `resolve_approval` does. The
//! caller is the history API's (`history_http::Caller`): a token, and a server with a store.

use std::sync::Arc;

use agent_protocol::ErrorCode;
use agent_protocol::http::ApprovalOutcome;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use core_context::RunId;
use core_context::approval::Decision;
use http_guard::bearer::refuse;
use run_service::{Refusal, RunService};
use serde_json::{Value, json};

use crate::app::RouterState;
use crate::history_http::Caller;

/// The routes, by path (the router puts them behind the HTTP API's guard).
pub fn routes() -> [(&'static str, MethodRouter<RouterState>); 2] {
    [
        ("/v1/approvals", get(list_approvals)),
        (
            "/v1/runs/{run_id}/approvals/{tool_call_id}",
            post(resolve_approval),
        ),
    ]
}

/// A refusal of the run service as an HTTP answer.
fn refused(refusal: Refusal) -> Response {
    crate::wire::refused_http(refusal)
}

async fn list_approvals(
    Caller { user, .. }: Caller,
    State(runs): State<Arc<RunService>>,
) -> Response {
    match runs.pending_approvals(&user).await {
        Ok(approvals) => Json(json!({ "approvals": approvals })).into_response(),
        Err(refusal) => refused(refusal),
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message)
}

async fn resolve_approval(
    Caller { user, .. }: Caller,
    State(runs): State<Arc<RunService>>,
    Path((raw_run, tool_call_id)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let not_found = || {
        refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::ApprovalNotFound,
            format!("no approval {tool_call_id} of run {raw_run} for this user"),
        )
    };
    let Ok(run) = RunId::parse(&raw_run) else {
        return not_found();
    };
    let decision = match read_decision(body, &raw_run, &tool_call_id) {
        Ok(decision) => decision,
        Err(problem) => return bad_request(problem),
    };
    let name = decision.name();
    match runs
        .resolve_approval(&user, &run, &tool_call_id, decision)
        .await
    {
        Ok(resolved) => Json(ApprovalOutcome {
            run_id: run,
            tool_call_id,
            decision: name.to_owned(),
            waiting: resolved.waiting,
            resumed: resolved.resumed,
        })
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// The decision in a request's body: `decision`, with `arguments` (edit) or `message`
/// (reject, respond); a `run_id` or `tool_call_id` in it must match the path's. The error
/// says what is wrong.
fn read_decision(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
    raw_run: &str,
    tool_call_id: &str,
) -> Result<Decision, String> {
    const SHAPE: &str = "the body must be a JSON object such as {\"decision\": \"approve\"}";
    let body = match body {
        Ok(Json(Value::Object(body))) => body,
        Ok(Json(other)) => return Err(format!("{SHAPE}, got {other}")),
        Err(rejection) => return Err(format!("{SHAPE}: {}", rejection.body_text())),
    };
    for (field, path_value) in [("run_id", raw_run), ("tool_call_id", tool_call_id)] {
        if let Some(given) = body.get(field)
            && given.as_str() != Some(path_value)
        {
            return Err(format!(
                "{field} in the body ({given}) differs from the path's {path_value:?}"
            ));
        }
    }
    const FIELDS: [&str; 5] = ["decision", "arguments", "message", "run_id", "tool_call_id"];
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}; the body has decision, arguments (edit) and message (reject, respond)"
        ));
    }
    let decision = match body.get("decision") {
        Some(Value::String(decision)) => decision.clone(),
        Some(other) => return Err(format!("decision must be a string, got {other}")),
        None => {
            return Err(format!(
                "decision is required: one of {}",
                Decision::NAMES.join(", ")
            ));
        }
    };
    let message = match body.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(message)) => Some(message.clone()),
        Some(other) => return Err(format!("message must be a string, got {other}")),
    };
    let arguments = body.get("arguments").filter(|a| !a.is_null()).cloned();
    Decision::from_request(&decision, arguments, message).map_err(|e| e.to_string())
}
