//! The history's HTTP API, for the signed-in user (the same JWT as the socket, as
//! `Authorization: Bearer`):
//!
//! - `GET /v1/threads?limit=&cursor=`: the user's threads, newest first, by cursor;
//! - `GET /v1/threads/{thread_id}`: a thread with its runs (`?events=true`: with their
//!   events, the newest `limit` runs, `before` a run for older ones);
//! - `GET /v1/runs/{run_id}`: a run with its events;
//! - `PATCH /v1/threads/{thread_id}` with `{"title"}`: renames a thread;
//! - `DELETE /v1/threads/{thread_id}`: erases a thread with its runs and events.
//!
//! A rename or a deletion is announced on the user's stream (`thread_renamed`,
//! `thread_deleted`), so every tab and client of the user, on any node, hears of it.
//!
//! Another user's thread or run answers 404 exactly like a missing one. Without a store
//! (`--store none`) the routes answer 404 `not_found` naming the flag.

use std::collections::HashMap;
use std::sync::Arc;

use agent_protocol::ErrorCode;
use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use core_context::{EncodedEvent, RunId, ThreadChange, ThreadEvent, ThreadId, UserId};
use history::{HistoryError, HistoryStore};
use run_service::recorder::Recorder;
use serde_json::json;
use ws_bridge::AgentWebSocketBridge;

use crate::app::RouterState;
use crate::auth::Auth;
use http_guard::bearer::{authenticate, refuse};

/// The routes under `/v1`, by path (the router puts them behind the HTTP API's guard).
pub fn routes() -> [(&'static str, MethodRouter<RouterState>); 3] {
    [
        ("/v1/threads", get(list_threads)),
        (
            "/v1/threads/{thread_id}",
            get(get_thread).patch(rename_thread).delete(delete_thread),
        ),
        ("/v1/runs/{run_id}", get(get_run)),
    ]
}

/// The signed-in user and the store: every handler here starts from it, and a request
/// without a valid token, or to a server with no store, is refused before the handler.
/// Handlers run once the writer has stored what was recorded before the request (it holds
/// a live run's events a little), so a live run shows the events emitted before it and an
/// erased thread takes every event recorded before the erasure with it.
pub(crate) struct Caller {
    pub(crate) user: UserId,
    pub(crate) store: Arc<dyn HistoryStore>,
}

/// It reads two parts of any state that has them: the token's verifier and the history.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
    Option<Arc<Recorder>>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Auth>::from_ref(state);
        let verified = authenticate(&auth, &parts.headers, &HashMap::new()).await;
        let user = verified.map_err(|e| {
            refuse(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                e.to_string(),
            )
        })?;
        let (store, writer) = Option::<Arc<Recorder>>::from_ref(state)
            .as_ref()
            .map(|r| (Arc::clone(r.store()), r.writer().clone()))
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    "this server keeps no history (started with --store none)",
                )
            })?;
        writer.flush().await;
        Ok(Self { user, store })
    }
}

fn failed(error: &HistoryError) -> Response {
    match error {
        HistoryError::Cursor(_) => refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            error.to_string(),
        ),
        _ => {
            tracing::error!(%error, "history: a read failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the history store is unavailable; retry shortly",
            )
        }
    }
}

async fn list_threads(
    Caller { user, store }: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match history::page_limit(query.get("limit")) {
        Ok(limit) => limit,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why),
    };
    match store
        .threads(&user, limit, query.get("cursor").map(String::as_str))
        .await
    {
        Ok(page) => Json(history::ThreadPage::from(page)).into_response(),
        Err(error) => failed(&error),
    }
}

/// 404 for a thread (`run`: false) or a run the user has not.
fn not_found(run: bool, raw: &str) -> Response {
    let (code, what) = if run {
        (ErrorCode::RunNotFound, "run")
    } else {
        (ErrorCode::ThreadNotFound, "thread")
    };
    refuse(
        StatusCode::NOT_FOUND,
        code,
        format!("no {what} {raw} for this user"),
    )
}

/// A thread with its runs; with `events=true`, with its newest runs' events too (a page of
/// `limit` runs, `before` a run for older ones).
async fn get_thread(
    Caller { user, store }: Caller,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Ok(thread) = ThreadId::parse(&raw) else {
        return not_found(false, &raw);
    };
    if query.get("events").is_some_and(|e| e == "true") {
        let limit = match history::page_limit(query.get("limit")) {
            Ok(limit) => limit,
            Err(why) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why),
        };
        let before = query.get("before").map(String::as_str);
        return match history::conversation(&*store, &user, &thread, limit, before).await {
            Ok(Some(conversation)) => Json(conversation).into_response(),
            Ok(None) => not_found(false, &raw),
            Err(error) => failed(&error),
        };
    }
    match store.thread(&user, &thread).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => not_found(false, &raw),
        Err(error) => failed(&error),
    }
}

/// A thread's title at most, in characters.
const MAX_TITLE_CHARS: usize = 120;

/// The body of `PATCH /v1/threads/{thread_id}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    title: String,
}

async fn rename_thread(
    Caller { user, store }: Caller,
    State(stream): State<AgentWebSocketBridge>,
    Path(raw): Path<String>,
    body: Result<Json<Rename>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(thread) = ThreadId::parse(&raw) else {
        return not_found(false, &raw);
    };
    let title = match &body {
        Ok(Json(rename)) => rename.title.trim(),
        Err(rejection) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!(
                    "the body must be {{\"title\": \"…\"}}: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters, without control characters (it has {chars})"
            ),
        );
    }
    match store.rename_thread(&user, &thread, title).await {
        Ok(true) => {
            let renamed = ThreadChange::ThreadRenamed {
                title: title.to_owned(),
            };
            announce(&stream, &user, ThreadEvent::now(thread.clone(), renamed));
            Json(json!({"thread_id": thread.as_str(), "title": title})).into_response()
        }
        Ok(false) => not_found(false, &raw),
        Err(error) => failed(&error),
    }
}

async fn delete_thread(
    Caller { user, store }: Caller,
    State(stream): State<AgentWebSocketBridge>,
    Path(raw): Path<String>,
) -> Response {
    let Ok(thread) = ThreadId::parse(&raw) else {
        return not_found(false, &raw);
    };
    match store.delete_thread(&user, &thread).await {
        Ok(true) => {
            let deleted = ThreadEvent::now(thread, ThreadChange::ThreadDeleted {});
            announce(&stream, &user, deleted);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => not_found(false, &raw),
        Err(error) => failed(&error),
    }
}

/// Tells every tab and client of `user`, on any node, of a change to one of their threads,
/// through the user's stream. The change is made: a stream that cannot take the news is
/// logged, not made the request's failure (a client refetches the list on reconnect).
fn announce(stream: &AgentWebSocketBridge, user: &UserId, change: ThreadEvent) {
    let published = EncodedEvent::thread(&change)
        .map_err(|e| e.to_string())
        .and_then(|encoded| stream.publish(user, encoded).map_err(|e| e.to_string()));
    if let Err(error) = published {
        tracing::warn!(%error, thread_id = %change.thread_id, "history: a thread's change is not on the user's stream");
    }
}

async fn get_run(Caller { user, store }: Caller, Path(raw): Path<String>) -> Response {
    let Ok(run) = RunId::parse(&raw) else {
        return not_found(true, &raw);
    };
    match store.run(&user, &run).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => not_found(true, &raw),
        Err(error) => failed(&error),
    }
}
