//! The HTTP side: the routes, and the handlers that answer before any socket exists (the chat
//! page, the agent list, health, dev tokens, and the WebSocket upgrade, which authenticates
//! and validates the resume parameters first).
//!
//! **Architecture Invariant:** a request without a valid token never gets a socket: the
//! upgrade answers 401 with an [`HttpError`](agent_protocol::http::HttpError) body first.

use std::collections::HashMap;
use std::sync::Arc;

use agent_protocol::http::{DevTokenRequest, DevTokenResponse};
use agent_protocol::{ErrorCode, ResumeParams};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use agent_registry::AgentRegistry;

use crate::app::{AppState, Health, Live, RouterState};
use crate::auth::{Auth, DEV_TOKEN_TTL};
use crate::connection::{self, ABUSIVE_FRAME_FACTOR};
use http_guard::bearer::{authenticate, refuse};
use http_guard::{Edge, Guarded, guard, with_security_headers};

/// The chat page, its script and its styles, embedded so the binary needs no build step.
/// They are separate files because the page's Content Security Policy runs no inline script
/// and applies no inline style.
pub const CHAT_PAGE: &str = include_str!("../static/index.html");
/// The chat page's script (`/static/app.js`).
pub const CHAT_SCRIPT: &str = include_str!("../static/app.js");
const CHAT_STYLE: &str = include_str!("../static/app.css");
/// The page's tool-call approvals (`/static/approvals.js`), kept apart from `app.js`.
const APPROVALS_SCRIPT: &str = include_str!("../static/approvals.js");
/// The page's messages into a busy thread (`/static/multitask.js`: queued, interrupting,
/// steering), kept apart from `app.js`.
const MULTITASK_SCRIPT: &str = include_str!("../static/multitask.js");
/// The page's usage line (`/static/usage.js`: `GET /v1/me/usage` under the composer).
const USAGE_SCRIPT: &str = include_str!("../static/usage.js");

/// The page's markdown renderer and HTML sanitizer, vendored unchanged from npm (versions,
/// licences and checksums in `static/vendor/README.md`).
const MARKED: &str = include_str!("../static/vendor/marked.umd.js");
const PURIFY: &str = include_str!("../static/vendor/purify.min.js");

/// A vendored script, cached by browsers for a day.
fn script(body: &'static str) -> Response {
    asset(
        "text/javascript; charset=utf-8",
        "public, max-age=86400",
        body,
    )
}

/// One of the page's own files, checked again on each load (it changes with the server).
fn own(content_type: &'static str, body: &'static str) -> Response {
    asset(content_type, "no-cache", body)
}

fn asset(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// The routes: the chat page at `/`, `/agents`, `/ws`, `/health`, the history under `/v1`,
/// and `/dev/token` when the secret was generated. The API and the socket are behind the
/// origin check and the rate limits (see the `http-guard` crate); every response carries the
/// security headers.
pub fn router(state: Arc<AppState>) -> Router {
    let edge = Arc::new(Edge {
        allowed_origins: state.config.allowed_origins.clone(),
        loopback_only: state.auth.dev_tokens() && state.config.addr.ip().is_loopback(),
        auth: Arc::clone(&state.auth),
        limits: Arc::clone(&state.http_limits),
        metrics: Arc::clone(&state.metrics),
    });
    let guarded = |kind, route| guard(&edge, kind, route);
    let agui = post(crate::agui::run).layer(axum::extract::DefaultBodyLimit::max(
        crate::agui::MAX_BODY_BYTES,
    ));
    let mut router = Router::new()
        .route("/", get(|| async { Html(CHAT_PAGE) }))
        .route("/agents", get(list_agents))
        .route("/tools", get(list_tools))
        .route(
            "/static/app.js",
            get(|| async { own("text/javascript; charset=utf-8", CHAT_SCRIPT) }),
        )
        .route(
            "/static/approvals.js",
            get(|| async { own("text/javascript; charset=utf-8", APPROVALS_SCRIPT) }),
        )
        .route(
            "/static/multitask.js",
            get(|| async { own("text/javascript; charset=utf-8", MULTITASK_SCRIPT) }),
        )
        .route(
            "/static/usage.js",
            get(|| async { own("text/javascript; charset=utf-8", USAGE_SCRIPT) }),
        )
        .route(
            "/static/app.css",
            get(|| async { own("text/css; charset=utf-8", CHAT_STYLE) }),
        )
        .route("/static/marked.js", get(|| async { script(MARKED) }))
        .route("/static/purify.js", get(|| async { script(PURIFY) }))
        .route("/docs/{file}", get(doc_page))
        .route("/v1/me", guarded(Guarded::History, get(me)))
        .route("/agui/{agent}", guarded(Guarded::Agui, agui))
        .route(
            "/agui/runs/{run_id}",
            guarded(Guarded::Agui, get(crate::agui::continue_run)),
        )
        .route("/ws", guarded(Guarded::Socket, get(ws_handler)))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics));
    for (path, route) in crate::history_http::routes() {
        router = router.route(path, guarded(Guarded::History, route));
    }
    for (path, route) in crate::approvals_http::routes() {
        router = router.route(path, guarded(Guarded::History, route));
    }
    for (path, route) in crate::usage_http::routes() {
        router = router.route(path, guarded(Guarded::History, route));
    }
    if state.auth.dev_tokens() {
        router = router.route("/dev/token", guarded(Guarded::DevToken, post(dev_token)));
    }
    let scrubber = Arc::clone(&state.config.scrubber);
    let state = RouterState(state);
    with_security_headers(router.fallback(unknown_route).with_state(state)).layer(
        axum::middleware::from_fn_with_state(scrubber, crate::scrub::responses),
    )
}

/// The routes a client can use, for the 404 of an unknown one.
const KNOWN_ROUTES: &str = "GET /, GET /agents, GET /tools, GET /static/app.js, GET /static/approvals.js, GET /static/multitask.js, GET /static/usage.js, GET /static/app.css, GET /static/marked.js, GET /static/purify.js, GET /docs/{file}, GET /ws, GET /v1/me, POST /agui/{agent}, GET /agui/runs/{run_id}, GET /health, GET /healthz, GET /readyz, \
    GET /version, GET /metrics, GET /v1/threads, GET /v1/threads/{thread_id}, PATCH /v1/threads/{thread_id}, DELETE /v1/threads/{thread_id}, \
    GET /v1/runs/{run_id}, GET /v1/approvals, GET /v1/me/usage, POST /v1/runs/{run_id}/approvals/{tool_call_id}, POST /dev/token (only without a configured secret)";

/// An unknown route: a JSON 404 that names the known ones.
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!(
            "no route {method} {}; the routes are {KNOWN_ROUTES}",
            uri.path()
        ),
    )
}

/// `GET /readyz`: 200 when the server takes traffic; 503 while it drains, or while its
/// broker (Redis) or its history store fails, with each check's state. Each MCP server's
/// state is shown too but does not decide readiness: a server that is down costs its tools,
/// not the node.
async fn ready(State(health): State<Health>) -> Response {
    let draining = health.runs.is_draining();
    let broker = health.bridge.broker_healthy();
    let store = health.recorder.as_ref().map(|r| {
        r.writer()
            .stats()
            .last_ok
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let ready = !draining && broker && store.unwrap_or(true);
    let mut body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "checks": {
            "broker": word(broker),
            "store": store.map_or("none", word),
        },
    });
    if let Some(mcp) = &health.mcp {
        let mut servers = serde_json::Map::new();
        for server in mcp.servers() {
            let up = server.status().up;
            servers.insert(server.name().to_owned(), json!(word(up)));
        }
        body["checks"]["mcp"] = servers.into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the server's metrics for Prometheus (no user's data: counts by agent,
/// tool, code and outcome). It reads the whole state: a scrape is every part's state now.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.snapshot());
    ([(header::CONTENT_TYPE, server_metrics::CONTENT_TYPE)], text).into_response()
}

/// `GET /version`: the server's version and the git revision it was built from.
async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "name": "agent-server",
        "version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("AGENT_SERVER_GIT_REVISION").unwrap_or("unknown"),
    }))
}

/// The agents a client can start, with their descriptions (public: names are not secrets).
async fn list_agents(
    State(registry): State<Arc<AgentRegistry>>,
) -> Json<Vec<agent_registry::AgentInfo>> {
    Json(registry.list_agents())
}

/// `GET /docs/{file}`: a bundled document as a page, where the assistant's documentation
/// answers link (`agents::docs`); public, as the documents are.
async fn doc_page(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match agents::docs::page(&file) {
        Some(page) => Html(page).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "no document {file:?}; the documents are {}",
                agents::docs::files().join(", ")
            ),
        ),
    }
}

/// `GET /v1/me`: whom the bearer token identifies (`{"user_id"}`), or 401 with the reason it
/// is refused; a client checks a token with it, since a browser cannot read the status of a
/// refused WebSocket upgrade.
async fn me(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    match authenticate(&auth, &headers, &HashMap::new()).await {
        Ok(user) => Json(json!({ "user_id": user.as_str() })).into_response(),
        Err(e) => refuse(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            e.to_string(),
        ),
    }
}

/// `GET /tools`: every tool agents can call, sorted by name, with its JSON Schema and source.
async fn list_tools(
    State(registry): State<Arc<AgentRegistry>>,
) -> Json<Vec<agent_registry::ToolInfo>> {
    Json(registry.list_tools())
}

async fn dev_token(
    State(auth): State<Arc<Auth>>,
    body: Result<Json<DevTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("expected a JSON body {{\"user\":\"<name>\"}}: {e}"),
            );
        }
    };
    let user = match agent_auth::user_for_name(&request.user) {
        Ok(user) => user,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why),
    };
    match auth.issue(&user, DEV_TOKEN_TTL) {
        Ok(token) => Json(DevTokenResponse {
            token,
            user_id: user,
            expires_in_secs: DEV_TOKEN_TTL.as_secs(),
        })
        .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            e.to_string(),
        ),
    }
}

/// `GET /ws`: authenticate, read the resume parameters, check the user's connection cap,
/// then upgrade with buffers sized for many small frames.
async fn ws_handler(
    State(live): State<Live>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let refuse = |status, code: ErrorCode, message: String| {
        live.metrics.refused(&code);
        refuse(status, code, message)
    };
    let user = match live.user(&headers, &query).await {
        Ok(user) => user,
        Err(reason) => {
            tracing::info!(%reason, "refused a connection");
            return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, reason);
        }
    };
    let resume = match ResumeParams::from_query(
        query.get("epoch").map(String::as_str),
        query.get("after_seq").map(String::as_str),
    ) {
        Ok(resume) => resume,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if live.runs.is_draining() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down; connect again (to another node) and resume".into(),
        );
    }
    let max = live.config.bridge.max_connections_per_user;
    if live.bridge.connection_count(&user) >= max {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyConnections,
            format!("this user already has {max} open connections; close one first"),
        );
    }
    let frame_limit = live.config.max_frame_bytes;
    upgrade
        // tungstenite allocates the read buffer up front (its default is 128 KiB) and zeroes
        // up to that much before every read; client frames are small, so 1 KiB serves them
        // (a larger frame grows the buffer as it arrives). The write buffer is a threshold:
        // queued frames are written once 8 KiB gather, and at the batch's flush.
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(live.config.bridge.send_queue_bytes + 64 * 1024)
        .max_message_size(frame_limit * ABUSIVE_FRAME_FACTOR)
        .max_frame_size(frame_limit * ABUSIVE_FRAME_FACTOR)
        .on_upgrade(move |socket| connection::serve(live, user, resume, socket))
}
