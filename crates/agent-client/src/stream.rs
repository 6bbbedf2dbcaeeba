//! What the client hands the application: the user's events, in `seq` order and each exactly
//! once, and [`Notice`]s about the stream itself (a reconnect, a failed resume that lost
//! events) that the application may have to act on; and what an accepted run is.

use std::fmt;

use agent_protocol::{Epoch, ErrorCode, SequencedEvent, UnexpectedFrame};
use core_context::{RunId, ThreadId};

/// One item of the user's stream, from [`Client::next_item`](crate::Client::next_item).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The next event: its `seq` is one more than the previous event's, except right after a
    /// failed-resume notice, which says where the stream continues.
    Event(SequencedEvent),
    /// Something about the stream itself.
    Notice(Notice),
}

/// A notice about the stream. The failed-resume notices (`TooOld`, `EpochChanged`, `SeqAhead`, and `ResumeFailed` for a reason from a newer server) mean events were missed: the
/// application should refetch the state it shows (for example the history of its runs) and
/// then follow the stream, which continues with the event after `last_seq`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// The socket dropped and the client reconnected; the `replayed` events it missed follow.
    /// Nothing was lost. (A reconnect whose resume failed is reported by the failed-resume
    /// notice instead.)
    Reconnected {
        /// Events the server replayed (they come next, before live ones).
        replayed: usize,
        /// Connection attempts it took.
        attempts: u32,
    },
    /// The events after `after_seq` had already left the server's replay log (the client was
    /// away too long, or fell too far behind): the events from `after_seq + 1` up to and
    /// including `last_seq` are lost. Refetch state.
    TooOld {
        /// The last event the client had.
        after_seq: u64,
        /// The oldest event the log still held.
        oldest_seq: u64,
        /// The stream continues after this `seq`.
        last_seq: u64,
    },
    /// The server no longer has the stream the client was reading (it restarted, or the
    /// stream was evicted after being idle); `seq` started again under a new epoch. Refetch
    /// state.
    EpochChanged {
        /// The epoch the client was reading.
        previous: Epoch,
        /// The stream's new epoch.
        epoch: Epoch,
        /// The oldest event the new stream's log holds.
        oldest_seq: u64,
        /// The stream continues after this `seq`.
        last_seq: u64,
    },
    /// The client asked to resume after a `seq` its epoch never reached: its saved position is
    /// wrong (for example the position of another user's stream). Refetch state, and check
    /// where positions are saved.
    SeqAhead {
        /// The position the client asked for.
        after_seq: u64,
        /// The oldest event the log holds.
        oldest_seq: u64,
        /// The stream continues after this `seq`.
        last_seq: u64,
    },
    /// The resume failed for a reason this version of the client does not name (a newer
    /// server): events may have been missed. Refetch state.
    ResumeFailed {
        /// The last event the client had.
        after_seq: u64,
        /// The oldest event the log holds.
        oldest_seq: u64,
        /// The stream continues after this `seq`.
        last_seq: u64,
    },
    /// The server sent an `error` frame that answers no request of this client.
    ServerError {
        /// What kind of problem.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// One of the user's threads was renamed or deleted (by any tab or client of the user, on
    /// any node): a frame of the stream with its `seq`, which belongs to no run.
    Thread(agent_protocol::SequencedThreadEvent),
    /// The server sent a frame of a `type` newer than this client (a newer server), kept raw
    /// so the application can still show it. When it has a `seq`, that `seq` is consumed, so
    /// the stream stays contiguous.
    NewerFrame(agent_protocol::UnknownFrame),
    /// The server sent a frame of a known type that does not parse (a broken server). When it
    /// had a `seq`, that `seq` is consumed, so the stream
    /// stays contiguous.
    UnknownFrame {
        /// The frame's `seq`, when it had one.
        seq: Option<u64>,
        /// What did not parse.
        error: UnexpectedFrame,
    },
}

impl Notice {
    /// Whether events were missed, so the application must refetch its state.
    pub fn requires_refetch(&self) -> bool {
        matches!(
            self,
            Notice::TooOld { .. }
                | Notice::EpochChanged { .. }
                | Notice::SeqAhead { .. }
                | Notice::ResumeFailed { .. }
        )
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Reconnected { replayed, attempts } => write!(
                f,
                "reconnected after {attempts} attempt(s); {replayed} missed event(s) replayed"
            ),
            Notice::TooOld {
                after_seq,
                oldest_seq,
                last_seq,
            } => write!(
                f,
                "events {}..={last_seq} were lost: the server's replay log starts at {oldest_seq}; refetch state",
                after_seq + 1
            ),
            Notice::EpochChanged {
                previous, epoch, ..
            } => write!(
                f,
                "the server lost the stream's history (epoch {previous} is now {epoch}, after a restart or eviction); refetch state"
            ),
            Notice::SeqAhead {
                after_seq,
                last_seq,
                ..
            } => write!(
                f,
                "the saved position {after_seq} is beyond the stream's last event {last_seq}; refetch state and check where positions are saved"
            ),
            Notice::ResumeFailed {
                after_seq,
                last_seq,
                ..
            } => write!(
                f,
                "the resume after {after_seq} failed for a reason this client does not know; the stream continues after {last_seq}; refetch state"
            ),
            Notice::ServerError { code, message } => {
                write!(f, "the server reported {code}: {message}")
            }
            Notice::UnknownFrame {
                seq: Some(seq),
                error,
            } => {
                write!(f, "event {seq} is not one this client understands: {error}")
            }
            Notice::UnknownFrame { seq: None, error } => write!(f, "{error}"),
            Notice::Thread(change) => match &change.event.change {
                agent_protocol::ThreadChange::ThreadRenamed { title } => {
                    write!(f, "thread {} was renamed {title:?}", change.event.thread_id)
                }
                agent_protocol::ThreadChange::ThreadDeleted {} => {
                    write!(f, "thread {} was deleted", change.event.thread_id)
                }
            },
            Notice::NewerFrame(frame) => write!(
                f,
                "a frame of type {:?} this client does not know (from a newer server)",
                frame.kind
            ),
        }
    }
}

/// A run the server accepted: its events follow in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAccepted {
    /// The new run.
    pub run_id: RunId,
    /// Its thread: pass it to the next `start` to continue the conversation.
    pub thread_id: ThreadId,
    /// When the run waits before it starts (behind its thread's running run, or for a run
    /// slot): its place in line, 1 when it is next.
    pub queued: Option<u64>,
    /// The message joined the thread's running run (`run_id` is that run's; `multitask`
    /// `steer`).
    pub steered: bool,
}
