//! A connection's send queue: bounded in events and bytes, closed with a reason.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;

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
    /// The reader waiting for a frame or the close, woken (and taken) by the next of either.
    reader: Option<Waker>,
}

impl State {
    /// The reader to wake once the lock is let go.
    fn take_reader(&mut self) -> Option<Waker> {
        self.reader.take()
    }

    /// Waits with `cx`'s waker; a different reader's waker in its place is handed back, to be
    /// woken so that it looks again (one reader at a time is the rule, but two never hang).
    fn wait(&mut self, cx: &Context<'_>) -> Option<Waker> {
        match &self.reader {
            Some(waiting) if waiting.will_wake(cx.waker()) => None,
            _ => self.reader.replace(cx.waker().clone()),
        }
    }
}

/// The bounded queue between the bridge and one connection's writer. The writer waits with
/// its waker in the queue's one lock (no second lock of a `Notify` per frame).
#[derive(Debug)]
pub(crate) struct ConnectionQueue {
    state: Mutex<State>,
    max_events: usize,
    max_bytes: usize,
}

impl ConnectionQueue {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_events,
            max_bytes,
        }
    }

    /// Queues `frame`; a full queue closes the connection as a slow consumer. Returns whether
    /// the connection is still open.
    pub(crate) fn push(&self, frame: &Arc<Frame>) -> bool {
        let (open, reader) = {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return false;
            }
            if frame.seq <= state.floor {
                return true;
            }
            let bytes = state.bytes + frame.text.len();
            let open = if state.frames.len() >= self.max_events || bytes > self.max_bytes {
                state.closed = Some(CloseReason::SlowConsumer);
                state.frames.clear();
                state.bytes = 0;
                false
            } else {
                state.frames.push_back(Arc::clone(frame));
                state.bytes = bytes;
                true
            };
            (open, state.take_reader())
        };
        if let Some(reader) = reader {
            reader.wake();
        }
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
        let reader = {
            let mut state = self.state.lock();
            state.closed.get_or_insert(reason);
            state.take_reader()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// The next frame, or why the queue closed. Frames queued before a shutdown are still
    /// delivered; a slow consumer's are dropped (it resumes from its last `seq`).
    pub(crate) async fn recv(&self) -> Result<Arc<Frame>, CloseReason> {
        self.next(|state| {
            let frame = state.frames.pop_front()?;
            state.bytes -= frame.text.len();
            Some(frame)
        })
        .await
    }

    /// Waits for at least one frame, then moves up to `max` queued frames into `out`, in
    /// order, so the writer can send them with one flush. Fails only when the queue is closed
    /// and empty: frames queued before a shutdown are still delivered.
    pub(crate) async fn recv_batch(
        &self,
        out: &mut Vec<Arc<Frame>>,
        max: usize,
    ) -> Result<(), CloseReason> {
        self.next(|state| (Self::take(state, out, max.max(1)) > 0).then_some(()))
            .await
    }

    /// Waits until `take` takes something from the queue (frames come before the close), or
    /// the queue is closed and empty.
    async fn next<T>(
        &self,
        mut take: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, CloseReason> {
        poll_fn(|cx| {
            let mut state = self.state.lock();
            if let Some(taken) = take(&mut state) {
                return Poll::Ready(Ok(taken));
            }
            if let Some(reason) = state.closed {
                return Poll::Ready(Err(reason));
            }
            Self::pending(state, cx)
        })
        .await
    }

    /// Waits with `cx`'s waker, under the lock a push or a close takes to wake it.
    fn pending<T>(mut state: parking_lot::MutexGuard<'_, State>, cx: &Context<'_>) -> Poll<T> {
        let replaced = state.wait(cx);
        drop(state);
        if let Some(other) = replaced {
            other.wake();
        }
        Poll::Pending
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(seq: u64) -> Arc<Frame> {
        Arc::new(Frame {
            seq,
            text: Arc::from(format!("{{\"seq\":{seq}}}")),
            published: Instant::now(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_reader_is_woken_by_a_push_and_by_a_close() {
        let queue = Arc::new(ConnectionQueue::new(100, 1 << 20));
        let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let reader = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                loop {
                    match queue.recv_batch(&mut batch, 64).await {
                        Ok(()) => {
                            for f in batch.drain(..) {
                                got_tx.send(f.seq).unwrap();
                            }
                        }
                        Err(reason) => return reason,
                    }
                }
            })
        };
        for seq in 1..=3 {
            // The reader is waiting by now: the push alone must wake it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(queue.push(&frame(seq)));
            let received = tokio::time::timeout(Duration::from_secs(5), got.recv())
                .await
                .expect("the push woke the reader");
            assert_eq!(received, Some(seq));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.close(CloseReason::Shutdown);
        let reason = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the close woke the reader")
            .unwrap();
        assert_eq!(reason, CloseReason::Shutdown);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_readers_at_once_both_get_frames_and_neither_hangs() {
        let queue = Arc::new(ConnectionQueue::new(100, 1 << 20));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move { queue.recv().await.map(|f| f.seq) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(queue.push(&frame(1)));
        assert!(queue.push(&frame(2)));
        let mut got = Vec::new();
        for reader in readers {
            let seq = tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("neither reader hangs")
                .unwrap()
                .unwrap();
            got.push(seq);
        }
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
    }

    /// Pushes from several threads while the reader drains: every frame arrives once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_pushed_from_many_tasks_all_reach_the_reader() {
        const PER: u64 = 5_000;
        let queue = Arc::new(ConnectionQueue::new(usize::MAX, usize::MAX));
        let pushers: Vec<_> = (0..4u64)
            .map(|p| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    for i in 0..PER {
                        assert!(queue.push(&frame(1 + p * PER + i)));
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let mut seen = vec![false; (4 * PER) as usize];
        let mut batch = Vec::new();
        let mut count = 0;
        while count < 4 * PER {
            tokio::time::timeout(Duration::from_secs(5), queue.recv_batch(&mut batch, 64))
                .await
                .expect("a pushed frame wakes the reader")
                .unwrap();
            for f in batch.drain(..) {
                let i = (f.seq - 1) as usize;
                assert!(!seen[i], "frame {} twice", f.seq);
                seen[i] = true;
                count += 1;
            }
        }
        for pusher in pushers {
            pusher.await.unwrap();
        }
        assert!(seen.iter().all(|s| *s));
    }
}
