//! AG-UI 1.0 as this server speaks it, with no transport: the server's `POST /agui/{agent}`
//! handler (`crates/agent-server/src/agui/`) reads the request and writes server-sent events;
//! what goes in them is decided here.
//!
//! - [`Mapper`]: one run's engine events (and its sub-runs') as AG-UI events, in `seq`
//!   order; a run that paused for approvals ends with `RUN_FINISHED` carrying an interrupt
//!   outcome ([`Mapper::interrupted`]).
//! - [`input`]: a `RunAgentInput` read into what the server uses ([`Input`]).
//! - [`interrupt`] and [`answers`]: a waiting tool call as an AG-UI interrupt, and a
//!   `RunAgentInput`'s `resume` entries as the decisions they mean.
//!
//! - [`Position`]: an event's place in a run's response, its server-sent event `id`.
//! - [`RunView`]: one run's AG-UI events among its user's stream's frames, with their
//!   positions; [`reopen`]: what a cut response left open, opened again.
//!
//! `docs/agui.md` is the contract.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod input;
mod interrupts;
mod map;
mod position;
mod view;

pub use input::{Input, input};
pub use interrupts::{Answer, Waiting, answers, interrupt};
pub use map::{ClientIds, Mapper};
pub use position::{Position, Positions};
pub use view::{Positioned, RunView, reopen};
