//! Changes to a user's threads, on the user's stream beside the runs' events: how every tab
//! and client of the user hears, live and on any node, that a conversation was renamed or
//! deleted elsewhere. (A thread's new runs need no event of their own: their `agent_started`
//! names the thread.)
//!
//! A [`SequencedThreadEvent`] is a frame of the user's stream like an event of a run, with
//! its `seq`, but without a run (`EncodedEvent::thread` encodes one for the stream):
//!
//! ```json
//! {"seq":44,"type":"thread_renamed","thread_id":"thr_..","timestamp":"2026-12-06T10:00:00.000001Z",
//!  "data":{"title":"Trip to Tokyo"}}
//! ```

use serde::{Deserialize, Serialize};

use crate::id::ThreadId;
use crate::time::Timestamp;

/// The `type` and `data` of a thread's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ThreadChange {
    /// The thread has a new title.
    ThreadRenamed {
        /// The title.
        title: String,
    },
    /// The thread, its runs and their events were deleted.
    ThreadDeleted {},
}

impl ThreadChange {
    /// Every thread change's wire `type`.
    pub const TYPE_NAMES: &'static [&'static str] = &["thread_renamed", "thread_deleted"];
}

/// A change to one of the user's threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct ThreadEvent {
    /// What changed.
    #[serde(flatten)]
    pub change: ThreadChange,
    /// The thread.
    pub thread_id: ThreadId,
    /// When.
    pub timestamp: Timestamp,
}

impl ThreadEvent {
    /// `change` to `thread_id`, now.
    pub fn now(thread_id: ThreadId, change: ThreadChange) -> Self {
        Self {
            change,
            thread_id,
            timestamp: Timestamp::now(),
        }
    }
}

/// A thread's change with its place in the user's stream: one server-to-client frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct SequencedThreadEvent {
    /// Position in the user's stream (shared with the runs' events).
    pub seq: u64,
    /// The change.
    #[serde(flatten)]
    pub event: ThreadEvent,
}
