//! [`InProcessBroker`], the embedded broker: users' streams in this process's memory.
//!
//! Each user's replay log is bounded by count and age ([`ReplayBounds`]), and all users' logs
//! together by bytes ([`ReplayBounds::max_bytes`]): past it, the oldest frames of all users go
//! first, whoever they belong to. Every frame is numbered in publish order across users, and
//! an index holds each non-empty log's oldest frame by that number, so the frame to drop is
//! found without looking at every log. A resume past a dropped frame is refused (`too_old`),
//! never answered with a gap.
//!
//! Locks: a user's stream, then the index, never the other way round. Dropping for the byte
//! bound takes the oldest entry out of the index first and only then locks its stream; a log
//! whose oldest frame changed meanwhile was re-indexed by whoever changed it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use core_context::{EmitError, EncodedEvent, UserId};
use parking_lot::{Mutex, RwLock};

use crate::broker::{
    AttachmentId, Broker, BrokerError, Epoch, FrameListener, ReplayBounds, ReplayMemory,
    ReplayRefused, ResumeFailure, StreamPosition,
};
use crate::queue::Frame;

/// What keeping one frame costs besides its text: the frame (seq, text pointer, time), its
/// shared allocation's counts, the text's header, and the log's slot.
pub const FRAME_OVERHEAD: usize = 96;

/// A frame in a user's log: when it was published, its place in publish order across users,
/// and the frame.
struct Kept {
    at: Instant,
    order: u64,
    frame: Arc<Frame>,
}

impl Kept {
    fn bytes(&self) -> usize {
        self.frame.text.len() + FRAME_OVERHEAD
    }
}

/// What the byte bound needs across users: the bytes held, and each non-empty log's oldest
/// frame by its publish order.
struct Memory {
    max_bytes: usize,
    bytes: AtomicUsize,
    frames: AtomicU64,
    evicted: AtomicU64,
    next_order: AtomicU64,
    oldest: Mutex<BTreeMap<u64, Arc<Mutex<Stream>>>>,
}

struct Stream {
    epoch: Epoch,
    next_seq: u64,
    // Each frame with when it was published, side by side: trimming reads the times of the
    // oldest frames on every publish, and these stay in the deque's own (warm) buffer.
    log: VecDeque<Kept>,
    listener: Option<(AttachmentId, Arc<dyn FrameListener>)>,
    last_activity: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: Epoch::generate(),
            next_seq: 1,
            log: VecDeque::new(),
            listener: None,
            last_activity: Instant::now(),
        }
    }

    fn head(&self) -> Option<u64> {
        self.log.front().map(|k| k.order)
    }

    /// Drops the oldest frame, counting it out of `memory`.
    fn pop(&mut self, memory: &Memory) {
        if let Some(kept) = self.log.pop_front() {
            memory.bytes.fetch_sub(kept.bytes(), Ordering::Relaxed);
            memory.frames.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Keeps the log within its user's bounds; true when its oldest frame changed.
    fn trim(&mut self, bounds: &ReplayBounds, now: Instant, memory: &Memory) -> bool {
        let before = self.head();
        while self.log.len() > bounds.max_events {
            self.pop(memory);
        }
        while let Some(kept) = self.log.front() {
            if now.duration_since(kept.at) <= bounds.max_age {
                break;
            }
            self.pop(memory);
        }
        self.head() != before
    }

    fn oldest_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |k| k.frame.seq)
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            last_seq: self.next_seq - 1,
        }
    }
}

impl Memory {
    /// `stream`'s oldest frame was `was` and is now its log's (the caller holds its lock).
    fn reindex(&self, stream: &Arc<Mutex<Stream>>, was: Option<u64>, now: Option<u64>) {
        if was == now {
            return;
        }
        let mut oldest = self.oldest.lock();
        if let Some(was) = was {
            oldest.remove(&was);
        }
        if let Some(now) = now {
            oldest.insert(now, Arc::clone(stream));
        }
    }

    /// Drops the oldest frames across users until the logs are within the byte bound.
    fn evict_over_bound(&self) {
        while self.bytes.load(Ordering::Relaxed) > self.max_bytes {
            let Some((order, stream)) = self.oldest.lock().pop_first() else {
                return;
            };
            let mut s = stream.lock();
            if s.head() != Some(order) {
                // Trimmed meanwhile: whoever did it indexed its new oldest frame.
                continue;
            }
            s.pop(self);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            if let Some(next) = s.head() {
                self.oldest.lock().insert(next, Arc::clone(&stream));
            }
        }
    }
}

/// The embedded broker: streams in this process's memory (see the module documentation).
/// Its history is lost on restart, which a resuming client learns as `epoch_changed`.
pub struct InProcessBroker {
    bounds: ReplayBounds,
    // Read on every event, written when a user's first stream opens or idle ones go.
    streams: RwLock<foldhash::HashMap<UserId, Arc<Mutex<Stream>>>>,
    next_attachment: AtomicU64,
    memory: Memory,
}

impl InProcessBroker {
    /// A broker keeping each user's log, and all of them together, within `bounds`.
    pub fn new(bounds: ReplayBounds) -> Self {
        Self {
            bounds,
            streams: RwLock::new(foldhash::HashMap::default()),
            next_attachment: AtomicU64::new(1),
            memory: Memory {
                max_bytes: bounds.max_bytes,
                bytes: AtomicUsize::new(0),
                frames: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                next_order: AtomicU64::new(0),
                oldest: Mutex::default(),
            },
        }
    }

    fn stream(&self, user: &UserId) -> Arc<Mutex<Stream>> {
        // Looked up on every event: shared, and the user id is cloned only for a new stream.
        if let Some(stream) = self.streams.read().get(user) {
            return Arc::clone(stream);
        }
        Arc::clone(
            self.streams
                .write()
                .entry(user.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Stream::new()))),
        )
    }

    /// The frames `user`'s log holds now, oldest first.
    pub fn replay_log(&self, user: &UserId) -> Vec<Arc<Frame>> {
        let Some(stream) = self.streams.read().get(user).cloned() else {
            return Vec::new();
        };
        let s = stream.lock();
        s.log.iter().map(|k| Arc::clone(&k.frame)).collect()
    }
}

impl std::fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBroker")
            .field("bounds", &self.bounds)
            .field("streams", &self.stream_count())
            .finish()
    }
}

#[async_trait]
impl Broker for InProcessBroker {
    fn publish(&self, user: &UserId, event: EncodedEvent) -> Result<(), EmitError> {
        let stream = self.stream(user);
        {
            let mut s = stream.lock();
            let seq = s.next_seq;
            // Framing and delivering under the stream's lock keeps seq order, log order and
            // delivery order one and the same; only this user's stream waits.
            let text = event.frame(seq);
            s.next_seq += 1;
            let now = Instant::now();
            let frame = Arc::new(Frame {
                seq,
                text: Arc::from(text),
                published: now,
            });
            let was = s.head();
            let kept = Kept {
                at: now,
                order: self.memory.next_order.fetch_add(1, Ordering::Relaxed),
                frame: Arc::clone(&frame),
            };
            self.memory.bytes.fetch_add(kept.bytes(), Ordering::Relaxed);
            self.memory.frames.fetch_add(1, Ordering::Relaxed);
            s.log.push_back(kept);
            s.trim(&self.bounds, now, &self.memory);
            self.memory.reindex(&stream, was, s.head());
            s.last_activity = now;
            if let Some((_, listener)) = &s.listener {
                listener.deliver(&frame);
            }
        }
        // Other users' streams are locked only once this one is let go.
        self.memory.evict_over_bound();
        Ok(())
    }

    async fn attach(
        &self,
        user: &UserId,
        listener: Arc<dyn FrameListener>,
    ) -> Result<(AttachmentId, StreamPosition), BrokerError> {
        let id = AttachmentId::new(self.next_attachment.fetch_add(1, Ordering::Relaxed));
        let stream = self.stream(user);
        let mut s = stream.lock();
        s.listener = Some((id, listener));
        s.last_activity = Instant::now();
        Ok((id, s.position()))
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, BrokerError> {
        Ok(self.stream(user).lock().position())
    }

    fn detach(&self, user: &UserId, id: AttachmentId) {
        let Some(stream) = self.streams.read().get(user).cloned() else {
            return;
        };
        let mut s = stream.lock();
        if s.listener
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            s.listener = None;
            s.last_activity = Instant::now();
        }
    }

    async fn replay(
        &self,
        user: &UserId,
        epoch: &Epoch,
        after_seq: u64,
    ) -> Result<Result<Vec<Arc<Frame>>, ReplayRefused>, BrokerError> {
        let stream = self.stream(user);
        let mut s = stream.lock();
        let was = s.head();
        s.trim(&self.bounds, Instant::now(), &self.memory);
        self.memory.reindex(&stream, was, s.head());
        let refused = |reason| {
            Ok(Err(ReplayRefused {
                reason,
                oldest_seq: s.oldest_seq(),
            }))
        };
        if *epoch != s.epoch {
            return refused(ResumeFailure::EpochChanged);
        }
        if after_seq > s.next_seq - 1 {
            return refused(ResumeFailure::SeqAhead);
        }
        if after_seq + 1 < s.oldest_seq() {
            return refused(ResumeFailure::TooOld);
        }
        Ok(Ok(s
            .log
            .iter()
            .filter(|k| k.frame.seq > after_seq)
            .map(|k| Arc::clone(&k.frame))
            .collect()))
    }

    fn evict_idle(&self) -> usize {
        let max_age = self.bounds.max_age;
        let mut streams = self.streams.write();
        let before = streams.len();
        streams.retain(|_, stream| {
            let mut s = stream.lock();
            let keep = s.listener.is_some() || s.last_activity.elapsed() <= max_age;
            if !keep {
                // Its frames leave the count and the index with it.
                let was = s.head();
                while !s.log.is_empty() {
                    s.pop(&self.memory);
                }
                self.memory.reindex(stream, was, None);
            }
            keep
        });
        before - streams.len()
    }

    fn stream_count(&self) -> usize {
        self.streams.read().len()
    }

    fn replay_memory(&self) -> Option<ReplayMemory> {
        Some(ReplayMemory {
            frames: self.memory.frames.load(Ordering::Relaxed),
            bytes: self.memory.bytes.load(Ordering::Relaxed) as u64,
            evicted: self.memory.evicted.load(Ordering::Relaxed),
        })
    }
}
