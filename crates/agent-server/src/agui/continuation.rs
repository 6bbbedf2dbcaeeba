//! `GET /agui/runs/{run_id}` with `Last-Event-ID`: a run's AG-UI response continued after a
//! cut, from the position of the last event the client received (our extension to AG-UI).
//!
//! The user's stream is replayed from where the run began (the position's `start`), so the
//! run's events up to the position rebuild the mapping's state (message ids, what was
//! streamed) without being sent; what the cut left open (a text message, reasoning, a
//! sub-agent) is opened again after `RUN_STARTED`, so a client that checks the stream's rules
//! accepts the rest; then the rest of the run follows, replayed and then live, as in the first
//! response. The replay log bounds how late a client may come back: past it the answer is
//! `410 resume_failed`, and the run is read from the history API instead.

use std::collections::HashMap;

use agent_protocol::{ErrorCode, ResumeStatus};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use core_context::{RunId, UserId};
use ws_bridge::{ResumeRequest, Subscription};

use super::stream::RunStream;
use crate::app::Live;
use agui_protocol::{ClientIds, Mapper, Position, RunView};
use http_guard::bearer::refuse;

/// `GET /agui/runs/{run_id}`; the query may give the client's own `threadId` and `runId` (for
/// `RUN_STARTED`), `rawEvent=true` and `onDisconnect=continue`.
pub(crate) async fn continue_run(
    State(live): State<Live>,
    Path(run_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let user = match live.user(&headers, &HashMap::new()).await {
        Ok(user) => user,
        Err(reason) => return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, reason),
    };
    let not_found = || not_found(&run_id);
    let Ok(run) = RunId::parse(&run_id) else {
        return not_found();
    };
    let header = headers.get("last-event-id").map(|v| v.as_bytes());
    let position = match Position::from_last_event_id(header) {
        Ok(position) => position,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why),
    };
    let subscription = match replay_from(&live, &user, &run, position).await {
        Ok(subscription) => subscription,
        Err(refusal) => return refusal,
    };
    let given = |key: &str| query.get(key).cloned();
    let ids = ClientIds {
        thread_id: given("threadId").unwrap_or_default(),
        run_id: given("runId").unwrap_or_else(|| run.to_string()),
    };
    let raw = given("rawEvent").is_some_and(|v| v == "true");
    let mapper = Mapper::new(ids.clone(), run.as_str()).with_raw_events(raw);
    let mut view = RunView::new(mapper, run.as_str(), position.start);
    if !catch_up(&subscription, &mut view, position).await {
        return not_found();
    }
    let active = || live.runs.sessions().active_run(&user, &run).is_some();
    if !view.started() && (position.seq > position.start || !active()) {
        return not_found();
    }
    let first = view.continuation(position, &ids);
    if first.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let keep_running = given("onDisconnect").is_some_and(|v| v == "continue");
    RunStream::new(
        &live,
        subscription,
        (view, first),
        (user, run),
        keep_running,
    )
    .await
    .into_response()
}

/// The user's stream replayed from the run's start (`position.start`) in its epoch now: the
/// run began in it if the replay holds it. Refused as the client should hear it.
async fn replay_from(
    live: &Live,
    user: &UserId,
    run: &RunId,
    position: Position,
) -> Result<Subscription, Response> {
    let not_found = || not_found(run.as_str());
    let epoch = match live.bridge.subscribe(user, None).await {
        Ok(probe) => probe.epoch().clone(),
        Err(e) => return Err(too_many(&e)),
    };
    let resume = ResumeRequest {
        epoch,
        after_seq: position.start,
    };
    let subscription = match live.bridge.subscribe(user, Some(&resume)).await {
        Ok(subscription) => subscription,
        Err(e) => return Err(too_many(&e)),
    };
    if let Some(ResumeStatus::Failed { reason, .. }) =
        subscription.resume().map(crate::wire::resume_status)
    {
        // A position past this user's stream is not one of theirs.
        if reason == agent_protocol::ResumeFailure::SeqAhead {
            return Err(not_found());
        }
        return Err(refuse(
            StatusCode::GONE,
            ErrorCode::ResumeFailed,
            format!(
                "the run's events after that position are no longer in the replay log \
                 ({reason}); read the run from GET /v1/runs/{run}"
            ),
        ));
    }
    if position.seq > subscription.last_seq() {
        return Err(not_found());
    }
    Ok(subscription)
}

fn not_found(run_id: &str) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        ErrorCode::RunNotFound,
        format!("no run {run_id:?} of this user is in the stream since that position"),
    )
}

/// Replays the user's stream into `view`, up to where it stood when the continuation joined
/// (nothing waits: the replay is queued already); false when the stream ends first.
async fn catch_up(subscription: &Subscription, view: &mut RunView, position: Position) -> bool {
    let mut seen = position.start;
    while seen < subscription.last_seq() {
        let Ok(frame) = subscription.recv().await else {
            return false;
        };
        seen = frame.seq;
        let _ = view.catch_up(&frame.text, position);
    }
    true
}

/// The user has as many connections (and AG-UI responses) open as allowed.
pub(super) fn too_many(error: &ws_bridge::BridgeError) -> Response {
    refuse(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyConnections,
        error.to_string(),
    )
}
