//! The agent server: a WebSocket endpoint that runs agents per user and streams their events
//! live to exactly that user.
//!
//! - [`config`]: every setting, from flags and environment variables, validated.
//! - [`auth`]: JWT verification before the upgrade (HS256), and dev tokens for the embedded
//!   default.
//! - [`protocol`]: wire protocol v1, parsing and encoding (`docs/protocol.md`).
//! - [`server`]: the composition root: state, routes, the connection loop, graceful shutdown.
//! - [`chat`]: a terminal client that prints a run as a live timeline.
//!
//! **Architecture Invariant:** the user id of a connection comes from its verified token
//! only; no message can name another user, and every lookup of runs and threads is keyed by
//! that id.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod chat;
pub mod config;
pub mod protocol;
pub mod server;
