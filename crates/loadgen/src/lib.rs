//! The load generator and the bare baseline behind the `loadgen` binary (`src/main.rs`,
//! which only parses flags and sets the exit code).
//!
//! - [`cli`]: the flags and their validation into a [`cli::LoadPlan`];
//! - [`connect`]: tokens, source addresses, opening a greeted WebSocket;
//! - [`load`]: one load run, phase by phase, and its scenarios (burst, steady, idle);
//! - [`verify`]: what every connection's stream must satisfy;
//! - [`measure`]: latency histograms and `/proc` readings (memory, CPU, limits);
//! - [`report`]: the table, the JSON, and the box-limit warnings;
//! - [`shape`]: the synthetic run's shape;
//! - [`baseline`]: `loadgen baseline-server`, the same stack and frames without the engine;
//! - [`floor`]: `loadgen floor-server`, the least a server can do per event;
//! - [`progress`]: the progress bar.
//!
//! **Architecture Invariant:** loadgen depends on `agent-protocol` and `core-context` only
//! among the workspace's crates, so it speaks the wire as its types define it and measures
//! the server from outside; nothing depends on loadgen (`tests/it/architecture.rs`).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::too_many_lines))]

pub mod baseline;
pub mod cli;
pub mod connect;
pub mod floor;
pub mod load;
pub mod measure;
pub mod progress;
pub mod report;
pub mod shape;
pub mod verify;
