//! `POST /agui/{agent}`: a run for any AG-UI frontend. The body is AG-UI's `RunAgentInput`;
//! the answer is the run's events as AG-UI events, as server-sent events (the `agui-protocol` crate's `Mapper`).
//!
//! The run goes through the same path as a socket's `start_agent` (the token's user, the
//! session's rules, the engine's limits), and its events are the user's stream's: the handler
//! joins the user's stream like a connection (so it counts toward the connection limit and has
//! a connection's bounded queue) before it starts the run, and sends that run's events (and
//! its sub-runs'). A tab of the same user shows the run live, under the same run id. A
//! response that ends before its run cancels it after a grace, unless `GET /agui/runs/{run_id}`
//! continued it meanwhile (`stream.rs`, `continuation.rs`); a reader too slow for its queue
//! gets `RUN_ERROR` `slow_consumer` and the run is cancelled.
//!
//! From `RunAgentInput` the server takes the last message (it must be the user's, as text) as
//! the run's message, `forwardedProps` (an object) as the agent's options, and `threadId` as
//! the run's thread when it is a valid thread id here (letters, digits and `_ - . @ + |`,
//! not a placeholder such as `test`; a UUID is one): runs with the same `threadId` share the thread, and its earlier
//! turns reach the agent from the history, as on the socket; another user's thread is refused
//! like a missing one. Any other `threadId` gets a new thread. `tools`,
//! `context` and `state` are accepted and not used: the engine's agents call the server's own
//! tools. `docs/agui.md` has the details.
//!
//! A run that pauses for approvals ends its response with `RUN_FINISHED` carrying an
//! interrupt outcome, and a later `RunAgentInput` whose `resume` answers the interrupts
//! resumes it and streams the rest of it (`agui_protocol::interrupt`, `agui_protocol::answers`).

mod continuation;
mod stream;

use std::collections::HashMap;

use agent_protocol::ErrorCode;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use run_service::RunRequest;
use serde_json::Value;

use crate::app::Live;
use agui_protocol::{Mapper, RunView};
pub(crate) use continuation::continue_run;
use http_guard::bearer::refuse;
use stream::RunStream;

/// The largest request body: a `RunAgentInput` carries the conversation so far.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `POST /agui/{agent}`.
pub(crate) async fn run(
    State(live): State<Live>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let user = match live.user(&headers, &HashMap::new()).await {
        Ok(user) => user,
        Err(reason) => return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, reason),
    };
    // A body over the limit is 413, one that is not JSON 415, anything else wrong 400.
    let input = match body
        .map_err(|e| {
            let message = format!("the body is not a RunAgentInput: {}", e.body_text());
            (e.status(), message)
        })
        .and_then(|Json(body)| {
            agui_protocol::input(&body, live.config.max_frame_bytes)
                .map_err(|m| (StatusCode::BAD_REQUEST, m))
        }) {
        Ok(input) => input,
        Err((status, message)) => {
            return refuse(status, ErrorCode::of_body(status.as_u16()), message);
        }
    };
    let subscription = match live.bridge.subscribe(&user, None).await {
        Ok(subscription) => subscription,
        Err(e) => return continuation::too_many(&e),
    };
    let accepted = match input.resume {
        // Subscribed first, so no event of the resumed run is missed.
        Some(answers) => {
            let decisions = answers.into_iter();
            let decisions = decisions.map(|a| (a.run, a.tool_call_id, a.decision));
            live.runs.resolve_all(&user, decisions.collect()).await
        }
        None => {
            let request = RunRequest {
                agent,
                message: input.message,
                thread_id: input.thread,
                input: input.options,
                request_id: None,
                multitask: input.multitask,
            };
            let connection = subscription.connection_id().clone();
            live.runs.start(&user, &connection, request).await
        }
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            return crate::wire::refused_http(refusal);
        }
    };
    let mapper = Mapper::new(input.ids, accepted.run_id.as_str()).with_raw_events(input.raw_events);
    let mut view = RunView::new(mapper, accepted.run_id.as_str(), subscription.last_seq());
    let opening = view.opening(accepted.thread_id.as_str(), subscription.epoch().as_str());
    let (ids, keep) = ((user, accepted.run_id), input.keep_running);
    RunStream::new(&live, subscription, (view, opening), ids, keep)
        .await
        .into_response()
}
