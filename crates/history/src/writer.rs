//! [`HistoryWriter`]: writes reach the store off the live path. Recording only queues
//! (bounded; a full queue drops the write, logged and counted); one task drains the queue
//! in batches, one transaction each (a running run's events are held up to [`HOLD`] so
//! they are stored together), retrying a failed batch a few times before dropping it
//! (logged and counted). [`HistoryWriter::flush`] waits until everything queued before it
//! is stored: graceful shutdown calls it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use core_context::{AgentEvent, RunId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::{HistoryStore, Write};

/// Bounds of a [`HistoryWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Writes waiting at most; past it new writes are dropped (and counted). The default
    /// holds a few seconds of a full burst (the writer may get no core until it ends); a
    /// queued event is its encoding, shared with the live stream, and a few ids.
    pub queue: usize,
    /// Writes per transaction at most (each transaction is a handful of multi-row
    /// statements whatever its size).
    pub batch: usize,
    /// Whether the writer's thread (and the database threads it starts) runs below the
    /// priority of the live path: nice [`BACKGROUND_NICE`] on Linux. When the cores are
    /// busy, the live stream goes first and the history catches up after.
    pub background: bool,
}

/// The writer's niceness when [`WriterConfig::background`]: the lowest. Measured on two
/// cores, nice 10 still cost a burst a quarter of its events/s; at 19 the writer mostly uses
/// what the live path leaves, in larger batches. Under a load that keeps every core busy
/// for long, the history falls behind until its queue fills (then writes are dropped,
/// logged and counted); the live stream does not slow.
pub const BACKGROUND_NICE: i32 = 19;

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 250_000,
            batch: 4_096,
            background: true,
        }
    }
}

/// What the writer has done.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Writes stored.
    pub written: AtomicU64,
    /// Writes dropped because the queue was full.
    pub dropped_full: AtomicU64,
    /// Writes dropped because the store failed them repeatedly.
    pub dropped_failed: AtomicU64,
    /// Batches that failed at least once (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Whether the last batch reached the store (true until one fails).
    pub last_ok: std::sync::atomic::AtomicBool,
}

enum Job {
    Write(Write),
    Flush(oneshot::Sender<()>),
}

/// What the writer follows of the runs in flight.
#[derive(Default)]
struct Tracking {
    /// Sub-runs' top-level runs, so their events are kept with the run the user started.
    roots: HashMap<RunId, RunId>,
}

/// The queue in front of a [`HistoryStore`]; cloning gives another handle to it.
#[derive(Clone)]
pub struct HistoryWriter {
    queue: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    /// Finding an event's run and queueing it happen under this lock, so a run's events are
    /// queued in the order they were recorded.
    tracking: Arc<Mutex<Tracking>>,
}

impl std::fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl HistoryWriter {
    /// Starts the writer on a thread of its own.
    pub fn start(store: Arc<dyn HistoryStore>, config: WriterConfig) -> Self {
        let (queue, jobs) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(WriterStats {
            last_ok: std::sync::atomic::AtomicBool::new(true),
            ..WriterStats::default()
        });
        let drained = drain(store, jobs, config, Arc::clone(&stats));
        // Its own thread and runtime: under load the server's runtime has thousands of
        // connection tasks ready, and a writer queued behind them for every statement's
        // answer falls behind a burst. Its database connections are the store's, which work
        // from any runtime.
        let spawned = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                if config.background {
                    lower_priority();
                }
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(drained),
                    Err(error) => tracing::error!(%error, "history: cannot start the writer's runtime; nothing will be stored"),
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "history: cannot start the writer's thread; nothing will be stored");
        }
        Self {
            queue,
            stats,
            tracking: Arc::new(Mutex::new(Tracking::default())),
        }
    }

    /// What the writer has done.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues `write`; never waits. A run's start must come before its events.
    pub fn record(&self, write: Write) {
        if self.queue.try_send(Job::Write(write)).is_err() {
            let dropped = self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped = dropped + 1,
                    "history: the write queue is full (the store is too slow or failing); writes are dropped, the live stream is not affected"
                );
            }
        }
    }

    /// Queues an event of a run, under its top-level run; `json` is its encoding (the one
    /// its stream carries).
    pub fn record_event(&self, event: &AgentEvent, json: Arc<str>, at_ms: i64) {
        let mut tracking = self.tracking.lock();
        let root = match &event.parent_run_id {
            Some(parent) => tracking
                .roots
                .get(parent)
                .cloned()
                .unwrap_or_else(|| parent.clone()),
            None => event.run_id.clone(),
        };
        let ends = event.kind.is_terminal();
        if event.parent_run_id.is_some() {
            if ends {
                tracking.roots.remove(&event.run_id);
            } else {
                tracking.roots.insert(event.run_id.clone(), root.clone());
            }
        }
        self.record(Write::event(root, event, json, at_ms));
    }

    /// Waits until everything queued before the call is stored (or dropped).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]; threads it starts inherit
/// it. Failing (a platform without niceness) only means the writer competes as an equal.
fn lower_priority() {
    if let Err(error) = thread_priority::ThreadPriority::Min.set_for_current() {
        tracing::warn!(%error, "history: cannot lower the writer's priority; it competes with the live path as an equal");
    }
}

/// How long a small batch waits for more writes.
const LINGER: Duration = Duration::from_millis(50);

/// How long a running run's events wait at most to be stored together: a run's events
/// then take one row, not one per batch they were spread over (under load a batch holds a
/// few events of each of thousands of runs).
pub(crate) const HOLD: Duration = Duration::from_millis(500);

/// Events of one run held at most before they are stored.
const HOLD_EVENTS: usize = 256;

/// How a failed batch is retried (the workspace's one policy: exponential, with jitter,
/// capped): 50 ms doubling to 2 s, 6 retries, so a batch is dropped after about 3 to 6 s
/// of failures (a database failover or restart of that length loses nothing). Retries hold
/// up the batches behind it, which wait in the queue meanwhile.
const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(2))
    .with_max_times(6)
    .with_jitter();

/// Events of one running run, waiting to be stored together.
struct Held {
    since: Instant,
    writes: Vec<Write>,
}

/// Sorts writes into those to store now and the events of running runs, held until their
/// run ends, [`HOLD_EVENTS`] gather, [`HOLD`] passes, or a flush asks for everything.
/// Released writes keep the order they were recorded in, per run.
struct Holding {
    held: HashMap<RunId, Held>,
    /// Events held, all runs together.
    count: usize,
    /// At most this many held (the queue's bound): past it everything is released.
    bound: usize,
    ready: Vec<Write>,
}

impl Holding {
    fn new(bound: usize) -> Self {
        Self {
            held: HashMap::new(),
            count: 0,
            bound,
            ready: Vec::new(),
        }
    }

    fn take(&mut self, write: Write) {
        let Write::Event { root, ending, .. } = &write else {
            self.ready.push(write);
            return;
        };
        let ends = ending.is_some();
        let root = root.clone();
        let held = self.held.entry(root.clone()).or_insert_with(|| Held {
            since: Instant::now(),
            writes: Vec::new(),
        });
        held.writes.push(write);
        self.count += 1;
        if ends || held.writes.len() >= HOLD_EVENTS {
            self.release(&root);
        }
        if self.count > self.bound {
            self.release_all();
        }
    }

    fn release(&mut self, root: &RunId) {
        if let Some(held) = self.held.remove(root) {
            self.count -= held.writes.len();
            self.ready.extend(held.writes);
        }
    }

    fn release_all(&mut self) {
        for (_, held) in self.held.drain() {
            self.ready.extend(held.writes);
        }
        self.count = 0;
    }

    /// Releases the runs held since before `before`.
    fn release_older(&mut self, before: Instant) {
        let old: Vec<RunId> = self
            .held
            .iter()
            .filter(|(_, held)| held.since < before)
            .map(|(root, _)| root.clone())
            .collect();
        for root in &old {
            self.release(root);
        }
    }

    /// When the run held longest is due.
    fn due(&self) -> Option<Instant> {
        self.held.values().map(|held| held.since + HOLD).min()
    }
}

async fn drain(
    store: Arc<dyn HistoryStore>,
    mut jobs: mpsc::Receiver<Job>,
    config: WriterConfig,
    stats: Arc<WriterStats>,
) {
    let batch_size = config.batch.max(1);
    let mut holding = Holding::new(config.queue);
    let mut received = Vec::with_capacity(batch_size);
    loop {
        let got = match holding.due() {
            Some(due) => {
                tokio::time::timeout_at(due.into(), jobs.recv_many(&mut received, batch_size))
                    .await
                    .ok()
            }
            None => Some(jobs.recv_many(&mut received, batch_size).await),
        };
        if got == Some(0) {
            break;
        }
        // A small batch waits a little for more (unless a flush is waiting): a transaction
        // per handful of writes would cost more than the writes.
        let flushing = received.iter().any(|job| matches!(job, Job::Flush(_)));
        if got.is_some() && received.len() < batch_size && !flushing {
            tokio::time::sleep(LINGER).await;
            while received.len() < batch_size {
                match jobs.try_recv() {
                    Ok(job) => received.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut flushes = Vec::new();
        for job in received.drain(..) {
            match job {
                Job::Write(write) => holding.take(write),
                Job::Flush(done) => flushes.push(done),
            }
        }
        if flushes.is_empty() {
            if let Some(before) = Instant::now().checked_sub(HOLD) {
                holding.release_older(before);
            }
        } else {
            holding.release_all();
        }
        let ready = std::mem::take(&mut holding.ready);
        if !ready.is_empty() {
            store_batch(store.as_ref(), &ready, &stats).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
    // Closed: what is held is stored before the writer ends.
    holding.release_all();
    if !holding.ready.is_empty() {
        store_batch(store.as_ref(), &holding.ready, &stats).await;
    }
}

async fn store_batch(store: &dyn HistoryStore, writes: &[Write], stats: &WriterStats) {
    let mut retries = RETRY.build();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match store.apply(writes).await {
            Ok(()) => {
                stats.last_ok.store(true, Ordering::Relaxed);
                stats
                    .written
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(error) => error,
        };
        stats.last_ok.store(false, Ordering::Relaxed);
        let Some(pause) = retries.next() else {
            stats
                .dropped_failed
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            tracing::error!(%error, writes = writes.len(), attempts = attempt, "history: a batch failed every attempt and is dropped; the live stream is not affected");
            return;
        };
        stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, attempt, ?pause, "history: a batch failed; retrying");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
