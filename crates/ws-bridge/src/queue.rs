//! A connection's send queue: bounded in events and bytes, closed with a reason.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// One encoded event frame, shared by the replay log and every connection of the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// The event's sequence number.
    pub seq: u64,
    /// The JSON text frame, exactly as sent.
    pub text: Arc<str>,
    /// When this node had it: published here, or received from a networked broker (the
    /// start of the emit-to-send latency the server measures).
    pub published: Instant,
}

/// Why a connection's queue was closed (the server maps it to a WebSocket close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client did not read fast enough; its queue hit a bound.
    SlowConsumer,
    /// The bridge is shutting down.
    Shutdown,
    /// The broker lost the stream the connection was reading (a networked broker's store
    /// restarted without its data, or frames were lost for good): the client reconnects and
    /// its resume says what was lost.
    StreamReset,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    closed: Option<CloseReason>,
    /// Frames at or below this seq were covered by the join (position or replay): a
    /// networked broker may still deliver some of them late, and they are dropped.
    floor: u64,
}

/// The bounded queue between the bridge and one connection's writer.
#[derive(Debug)]
pub(crate) struct ConnectionQueue {
    state: Mutex<State>,
    ready: Notify,
    max_events: usize,
    max_bytes: usize,
}

impl ConnectionQueue {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max_events,
            max_bytes,
        }
    }

    /// Queues `frame`; a full queue closes the connection as a slow consumer. Returns whether
    /// the connection is still open.
    pub(crate) fn push(&self, frame: &Arc<Frame>) -> bool {
        let open = {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return false;
            }
            if frame.seq <= state.floor {
                return true;
            }
            let bytes = state.bytes + frame.text.len();
            if state.frames.len() >= self.max_events || bytes > self.max_bytes {
                state.closed = Some(CloseReason::SlowConsumer);
                state.frames.clear();
                state.bytes = 0;
                false
            } else {
                state.frames.push_back(Arc::clone(frame));
                state.bytes = bytes;
                true
            }
        };
        self.ready.notify_one();
        open
    }

    /// Joins a replay to the live frames already queued: drops queued frames at or below
    /// `floor` or covered by `replay` (and those that come later), and puts `replay`'s
    /// frames above `floor` in front.
    /// Returns how many replayed frames were queued. The bounds do not apply to the replay:
    /// the replay log's own bounds limit it, and a resuming client must get all of it.
    pub(crate) fn splice(&self, replay: &[Arc<Frame>], floor: u64) -> usize {
        let mut state = self.state.lock();
        let covered = replay.last().map_or(floor, |f| f.seq.max(floor));
        let live: Vec<Arc<Frame>> = state.frames.drain(..).filter(|f| f.seq > covered).collect();
        let replayed: Vec<Arc<Frame>> = replay.iter().filter(|f| f.seq > floor).cloned().collect();
        let count = replayed.len();
        state.frames = replayed.into_iter().chain(live).collect();
        state.floor = covered;
        state.bytes = state.frames.iter().map(|f| f.text.len()).sum();
        count
    }

    pub(crate) fn close(&self, reason: CloseReason) {
        self.state.lock().closed.get_or_insert(reason);
        self.ready.notify_one();
    }

    /// The next frame, or why the queue closed. Frames queued before a shutdown are still
    /// delivered; a slow consumer's are dropped (it resumes from its last `seq`).
    pub(crate) async fn recv(&self) -> Result<Arc<Frame>, CloseReason> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if let Some(frame) = state.frames.pop_front() {
                    state.bytes -= frame.text.len();
                    return Ok(frame);
                }
                if let Some(reason) = state.closed {
                    return Err(reason);
                }
            }
            notified.await;
        }
    }

    /// Waits for at least one frame, then moves up to `max` queued frames into `out`, in
    /// order, so the writer can send them with one flush. Fails only when the queue is closed
    /// and empty: frames queued before a shutdown are still delivered.
    pub(crate) async fn recv_batch(
        &self,
        out: &mut Vec<Arc<Frame>>,
        max: usize,
    ) -> Result<(), CloseReason> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if Self::take(&mut state, out, max.max(1)) > 0 {
                    return Ok(());
                }
                if let Some(reason) = state.closed {
                    return Err(reason);
                }
            }
            notified.await;
        }
    }

    fn take(state: &mut State, out: &mut Vec<Arc<Frame>>, max: usize) -> usize {
        let take = state.frames.len().min(max);
        let mut bytes = 0;
        for frame in state.frames.drain(..take) {
            bytes += frame.text.len();
            out.push(frame);
        }
        state.bytes -= bytes;
        take
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.frames.len(), state.bytes)
    }
}
