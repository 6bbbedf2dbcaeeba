//! The run service: starting and cancelling a user's runs, below the server and with no
//! transport. The server's three transports (the WebSocket loop, AG-UI, the history API) all
//! start and cancel runs here and render the typed answers in their own terms.
//!
//! - [`service`]: [`RunService`]: draining, the stored thread's owner, the session's rules,
//!   the thread's earlier turns, and the run on a fresh engine (which claims its slot); answers
//!   [`RunAccepted`] or a [`Refusal`]. What it counts goes to a [`RunCounter`] (the server's
//!   metrics).
//! - [`sessions`]: per-user rules: the start rate limit, thread ownership, active runs.
//! - [`cluster`]: runs across nodes (with a Redis broker): the engine's run slots across
//!   nodes ([`cluster::ClusterSlots`], the cluster-wide run limit and queue), cross-node
//!   `cancel_run`, and ending the runs of a node that died.
//! - [`recorder`]: the history (with `--store`): runs recorded, earlier turns read back,
//!   interrupted runs.
//! - [`approvals`]: a person's decisions about tool calls that wait for approval, resuming
//!   and cancelling paused runs, expiring undecided calls.
//! - [`paused_runs`]: the engine's paused runs, kept in the history store.
//! - [`usage`]: what users' runs spend: each model call counted once in the history, priced,
//!   and the per-user budgets; [`budgets`]: the server's budget and users' plans; `ledger`:
//!   the reservation of each model call's worst case before it; `spending`: a user's usage
//!   against their budget, the check a new run passes, and resuming runs that waited for
//!   their budget.
//! - `threads`: one run per thread: what a new message into a busy thread does to its run
//!   (`multitask`: reject, enqueue, interrupt, rollback), the run's admission into its
//!   thread, and its earlier turns read when it starts.
//! - [`tag`]: a user's tag in log lines, which names no user.
//!
//! **Architecture Invariant:** this crate depends on neither the wire protocol's crate nor an
//! HTTP framework, and its source names no wire frame and no HTTP type
//! (`tests/it/architecture.rs`, `the_run_service_has_no_transport`).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod approvals;
pub mod budgets;
pub mod cluster;
mod cluster_slots;
pub mod counter;
mod followers;
mod ledger;
pub mod paused_runs;
pub mod recorder;
pub mod service;
pub mod sessions;
mod spending;
pub mod tag;
mod threads;
pub mod usage;

pub use service::{Refusal, RunAccepted, RunCounter, RunRequest, RunService};
pub use tag::user_tag;
