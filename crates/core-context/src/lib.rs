//! The bottom layer of the agent engine: data and traits, no IO.
//!
//! Everything above depends on this crate and nothing here depends on anything above:
//! - [`id`]: validated, typed ids (`UserId`, `ThreadId`, `RunId`, `RequestId`, `ConnectionId`).
//!   An id that fails validation (empty, too long, unsafe characters, a placeholder such as
//!   `test` or `default`) cannot be constructed, so no context can ever name a fake user.
//! - [`context`]: the immutable [`UserExecutionContext`] every engine is built from.
//! - [`event`]: the [`AgentEvent`] vocabulary, serialising exactly to wire protocol v1.
//! - [`sink`]: the [`EventSink`] trait, the one way anything emits an event.
//! - [`redact`]: redaction of sensitive values and truncation of long ones before they leave.
//! - [`approval`]: a tool call waiting for a person, and the person's decision.
//! - [`budget`]: a budget a run used up, and what its pause reports.
//! - [`multitask`]: what a new message into a thread does to the thread's live run.
//! - [`time`]: the [`Timestamp`] events and frames carry.
//! - [`lifecycle`]: the checker of the run lifecycle guarantees, shared by every test that
//!   claims them (and usable by clients that want to verify a stream).

pub mod approval;
pub mod budget;
pub mod context;
pub mod epoch;
pub mod event;
pub mod id;
pub mod lifecycle;
pub mod multitask;
pub mod redact;
pub mod sink;
pub mod thread_event;
pub mod time;

pub use context::{ContextError, UserExecutionContext, UserExecutionContextBuilder};
pub use epoch::Epoch;
pub use event::{AgentEvent, EncodedEvent, EventKind, RunScope, SequencedEvent, Timestamp};
pub use id::{ConnectionId, IdError, RequestId, RunId, ThreadId, UserId};
pub use sink::{EmitError, EventSink, RecordingSink};
pub use thread_event::{SequencedThreadEvent, ThreadChange, ThreadEvent};
pub use tokio_util::sync::CancellationToken;
