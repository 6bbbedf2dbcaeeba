//! [`AgentWebSocketBridge`]: routes every event to its user's connections, and to nobody else.
//!
//! The bridge implements [`core_context::EventSink`]. For each user it keeps one stream:
//! - a `seq` that increases by exactly 1 per event, within an `epoch` (one life of the stream;
//!   a new epoch starts when the history is lost: restart or eviction);
//! - a replay log bounded by count and age, so an event for a user with no open connection is
//!   kept, not dropped, and a client that reconnects gets every event it missed (all users'
//!   logs together are bounded in bytes too: past it the oldest frames across users go, and a
//!   resume past one is refused as `too_old`);
//! - the user's open connections, each with a send queue bounded in events and bytes. A
//!   connection whose queue is full is closed as a slow consumer (it can resume); it never
//!   grows memory or delays anyone else.
//!
//! Each event is encoded to its wire frame once, and the one encoded frame is shared by the
//! log and every connection. [`AgentWebSocketBridge::subscribe`] joins replay and live
//! delivery without a lock shared with the broker: it registers the connection's queue
//! first, then reads the stream's position or fetches the replay, and drops by `seq` every
//! live frame the replay already covers. So a connection never misses, repeats or reorders a
//! `seq`, and a networked broker plugs in unchanged.
//!
//! Where the streams live is a [`Broker`] ([`broker`] also holds the stream's types:
//! [`ResumeRequest`], [`ResumeOutcome`], and re-exports core-context's [`Epoch`], the one
//! type the wire carries too): the embedded [`InProcessBroker`] keeps them in
//! memory; a networked one (Redis) lets several nodes share users, each node holding only its
//! own connections.
//!
//! This crate holds no transport: no sockets, no HTTP, no wire protocol types. The server
//! reads [`Subscription`]s, writes their frames to WebSockets, and maps a [`CloseReason`] and
//! a [`ResumeOutcome`] to the protocol's close codes and `resume` status. No lock is held
//! across an await.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bridge;
pub mod broker;
mod in_process;
mod machine;
mod queue;

pub use bridge::{AgentWebSocketBridge, BridgeConfig, BridgeError, Subscription};
pub use broker::{Broker, Epoch, ResumeFailure, ResumeOutcome, ResumeRequest};
pub use in_process::{FRAME_OVERHEAD, InProcessBroker};
pub use machine::{DEFAULT_REPLAY_MAX_BYTES, replay_max_bytes, replay_max_bytes_for_machine};
pub use queue::{CloseReason, Frame};
