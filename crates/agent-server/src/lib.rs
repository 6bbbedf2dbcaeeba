//! The agent server: a WebSocket endpoint that runs agents per user and streams their events
//! live to exactly that user.
//!
//! - [`config`]: every setting, from flags, environment variables and a TOML file, validated.
//! - [`auth`]: the `agent-auth` crate re-exported: JWT verification before the upgrade (an HS256 secret, or an identity provider's
//!   RS256/ES256 public key or JWKS), and dev tokens for the embedded default.
//! - [`app`]: the composition root: the shared state, with the run service (the `run-service`
//!   crate: starting and cancelling runs, sessions, the cluster's runs, the history's records).
//! - [`mint`]: `agent-server token`, a token minted with the configured secret.
//! - [`usage_http`]: what the user's runs spent (`GET /v1/me/usage`).
//! - [`approvals_http`]: approvals over HTTP (`GET /v1/approvals`, `POST
//!   /v1/runs/{run_id}/approvals/{tool_call_id}`).
//! - [`history_http`]: the history's HTTP API for the signed-in user (`/v1/threads`, `/v1/runs`).
//! - `sink`: the engine's event sink: counted, scrubbed, encoded once, recorded, published.
//! - `scrub`: HTTP response bodies scrubbed of the server's secrets on their way out.
//! - the HTTP edge (security headers, the origin check, CORS, bearer tokens, the HTTP rate
//!   limits) is the `http-guard` crate's;
//! - [`routes`]: the HTTP routes and the handlers that answer before a socket exists.
//! - [`connection`]: the loop of one WebSocket: client frames in, the user's stream out.
//! - [`wire`]: where the bridge's stream types meet the protocol's wire types.
//! - [`server`]: startup, `agent-server serve`, and graceful shutdown.
//!
//! The wire protocol itself is the `agent-protocol` crate; `agent-server chat`, the terminal
//! client, is the `agent-chat` crate; what the server counts, served at `/metrics` for
//! Prometheus, is the `server-metrics` crate; its log lines and exported spans are the
//! `server-telemetry` crate's.
//!
//! **Architecture Invariant:** nothing leaves the process unscrubbed of the server's secrets:
//! events (the sink), other socket frames (the connection), HTTP bodies (`scrub`), model
//! requests (the `llm` agent) and log lines (the `server-telemetry` crate) each pass the one `Scrubber` the
//! configuration builds.
//!
//! **Architecture Invariant:** the user id of a connection comes from its verified token
//! only; no message can name another user, and every lookup of runs and threads is keyed by
//! that id.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agui;
pub mod app;
pub mod approvals_http;
/// Tokens: the `agent-auth` crate, and the logs' user tag (the run service's), under the
/// path the server's callers know.
pub mod auth {
    pub use agent_auth::*;
    pub use run_service::user_tag;
}
pub mod config;
pub mod connection;
pub mod history_http;
pub mod mint;
pub mod routes;
mod scrub;
pub mod server;
mod sink;
pub mod usage_http;
pub mod wire;
