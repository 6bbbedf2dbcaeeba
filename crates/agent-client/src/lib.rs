//! The typed async client of `agent-server`: what a Rust service depends on to start agent
//! runs for a user and follow their events live.
//!
//! A [`Client`] holds one user's connection (wire protocol v1, `docs/protocol.md`). It
//! starts and cancels runs ([`Client::start_agent`], [`Client::start`],
//! [`Client::cancel_run`]) and decides tool calls that wait for approval
//! ([`Client::resolve_approval`]), matching answers to requests by `request_id` so that any number of
//! tasks can make requests at once ([`Client::handle`]); and it hands out the user's event
//! stream ([`Client::next_item`]) with every `seq` exactly once and in order. When the socket
//! drops, it reconnects with exponential backoff and jitter ([`Backoff`]) and resumes from the
//! last event it received; when the server cannot replay what was missed, a [`Notice`] says
//! why (`TooOld`, `EpochChanged`, `SeqAhead`) and the stream continues from the new position.
//! Requests in flight when the socket dropped fail with [`ClientError::ConnectionLost`] and
//! are never sent twice. [`get_dev_token`] gets a development token from a server that serves
//! them, [`pending_approvals`] lists the user's calls waiting for a decision, and [`usage()`]
//! says what the user's runs spent this budget period and what their budget allows, and
//! [`agents()`] lists the agents the server runs with their example prompts (all over HTTP,
//! the `dev-token` feature).
//!
//! ```no_run
//! use agent_client::{Client, StreamItem, get_dev_token};
//!
//! # async fn example() -> Result<(), agent_client::ClientError> {
//! let server = "http://127.0.0.1:8080";
//! let token = get_dev_token(server, "alice").await?.token;
//! let mut client = Client::connect(server, &token).await?;
//! let run = client.start_agent("assistant", "What is 12*7?").await?;
//! while let Some(item) = client.next_item().await {
//!     match item? {
//!         StreamItem::Event(event) => {
//!             println!("{} {}", event.seq, event.event.kind.type_name());
//!             if event.event.run_id == run.run_id && event.event.kind.is_terminal() {
//!                 break;
//!             }
//!         }
//!         // A failed resume: events were missed, so refetch what the application shows.
//!         StreamItem::Notice(notice) if notice.requires_refetch() => eprintln!("{notice}"),
//!         StreamItem::Notice(_) => {}
//!     }
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Plain `ws://` works out of the box; `wss://` needs the `tls` cargo feature (rustls with the
//! webpki root certificates).
//!
//! **Architecture Invariant:** this crate depends on `agent-protocol` and `core-context` only
//! among the workspace's crates: a client never links the server, the bridge or the engine.
//! The vocabulary (frames, codes, events) is `agent-protocol`'s, never restated here.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "dev-token")]
mod agents;
#[cfg(feature = "dev-token")]
mod approvals;
mod backoff;
mod client;
mod config;
mod connect;
#[cfg(feature = "dev-token")]
mod dev_token;
mod driver;
mod error;
#[cfg(feature = "dev-token")]
mod http;
mod requests;
mod sequence;
mod stream;
mod url;
#[cfg(feature = "dev-token")]
mod usage;

#[cfg(test)]
mod scripted_server_tests;

#[cfg(feature = "dev-token")]
pub use agents::{AgentListing, agents};
#[cfg(feature = "dev-token")]
pub use approvals::{PendingApproval, pending_approvals};
pub use backoff::Backoff;
pub use client::{Client, ClientHandle};
pub use config::ClientConfig;
#[cfg(feature = "dev-token")]
pub use dev_token::get_dev_token;
pub use error::ClientError;
pub use stream::{Notice, RunAccepted, StreamItem};
#[cfg(feature = "dev-token")]
pub use usage::{Allowance, Usage, usage};
