//! The bare baseline: a fan-out server with agent-server's WebSocket stack and frames, and
//! nothing else. No engine, no bridge, no history, no limits beyond the send queue.
//!
//! What it shares with agent-server, so that the difference between the two is the engine and
//! the bridge: axum 0.8's `ws` over tokio-tungstenite, TCP_NODELAY on every accepted socket,
//! 8 KiB read and write buffers, the same authentication before the upgrade (HS256 JWT with
//! `sub` and `exp`, from the `Authorization: Bearer` header or `?token=`), the same
//! `connection_established`, `run_accepted` and event frames (a synthetic run's events, the
//! same JSON, encoded once per event and shared by every connection of the user), the same
//! pauses, and a bounded queue per connection.
//!
//! - [`streams`]: each user's `seq` and connections; encode once, queue everywhere;
//! - [`connection`]: the socket loop and the run task;
//! - [`script`]: the events and pauses of a synthetic run.

pub mod connection;
pub mod script;
pub mod streams;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use agent_protocol::http::HttpError;
use agent_protocol::{Epoch, ErrorCode};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Args;
use core_context::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use streams::Streams;

/// The largest client message accepted (the server's default frame limit, times its abuse
/// factor of 4).
const MAX_MESSAGE: usize = 4 * 65_536;
/// The server's default send queue in bytes, plus the headroom it gives the socket's buffer.
const MAX_WRITE_BUFFER: usize = (1 << 20) + 64 * 1024;

/// Flags of `loadgen baseline-server`.
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// HS256 secret the clients' tokens are signed with.
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// Checks a connect request's token the way agent-server does: HS256 with `sub` and `exp`,
/// from the `Authorization: Bearer` header or `?token=`. The floor server checks with it too.
pub struct TokenCheck {
    key: DecodingKey,
    validation: Validation,
}

impl TokenCheck {
    /// A check of tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The user a request speaks for, given its `Authorization` header's value and its
    /// `token` query parameter, or why there is none.
    pub fn user(&self, authorization: Option<&str>, query: Option<&str>) -> Result<UserId, String> {
        let token = match authorization {
            Some(value) => value
                .strip_prefix("Bearer ")
                .map(str::trim)
                .ok_or("the Authorization header must be `Bearer <JWT>`")?,
            None => query.ok_or("no token")?,
        };
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or("no sub")?;
        UserId::parse(sub).map_err(|e| e.to_string())
    }
}

/// The baseline's shared state.
pub struct Baseline {
    tokens: TokenCheck,
    streams: Streams,
    epoch: Epoch,
}

impl Baseline {
    fn new(secret: &str) -> Self {
        Self {
            tokens: TokenCheck::new(secret),
            streams: Streams::default(),
            epoch: Epoch::new(&format!("ep_baseline_{}", std::process::id())),
        }
    }

    /// The user a connect request's token speaks for, or why there is none.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<UserId, String> {
        let authorization = match headers.get(header::AUTHORIZATION) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| "the Authorization header must be `Bearer <JWT>`")?,
            ),
            None => None,
        };
        self.tokens
            .user(authorization, query.get("token").map(String::as_str))
    }
}

/// `GET /ws`: authenticate, then upgrade with the server's buffer sizes.
async fn ws_handler(
    State(baseline): State<Arc<Baseline>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let user = match baseline.authenticate(&headers, &query) {
        Ok(user) => user,
        Err(message) => {
            let body = HttpError {
                error: ErrorCode::Unauthorized,
                message,
            };
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    };
    upgrade
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection::serve(baseline, user, socket))
}

/// `loadgen baseline-server`: listens, prints its address and pid, serves until Ctrl-C or
/// SIGTERM.
pub async fn serve(args: BaselineArgs) -> Result<(), String> {
    let listener = listen(args.addr, "baseline-server").await?;
    let listener = listener.tap_io(|tcp| {
        // As in agent-server: small frames leave at once.
        let _nodelay = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/ws", get(ws_handler))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(Baseline::new(&args.jwt_secret)));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("serving failed: {e}"))
}

/// Listens on `addr` and prints the first line the bench reads: `loadgen <name> listening on
/// ws://ADDR/ws (pid N)` (the baseline's and the floor's).
pub(crate) async fn listen(
    addr: SocketAddr,
    name: &str,
) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "loadgen {name} listening on ws://{local}/ws (pid {})",
        std::process::id()
    );
    let _ = out.flush();
    Ok(listener)
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}
