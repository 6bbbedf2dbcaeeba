//! The integration tests: the whole system as its users see it, one binary.
//!
//! One module per concern; `support` holds the shared harness (registry with test agents,
//! recording sink, context builders). Every test that claims the run lifecycle uses
//! `core_context::lifecycle::check_lifecycle`.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod agents;
mod architecture;
mod bridge;
mod browser;
mod compat;
mod engine_isolation;
mod engine_limits;
mod llm;
mod server;
mod server_support;
mod subruns;
mod support;
