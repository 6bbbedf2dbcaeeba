//! [`HistoryWriter`]: writes reach the store off the live path. Recording only queues
//! (bounded; a full queue drops the write, logged and counted); one task drains the queue
//! in batches, one transaction each, retrying a failed batch a few times before dropping it
//! (logged and counted). [`HistoryWriter::flush`] waits until everything queued before it
//! is stored: graceful shutdown calls it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use core_context::{AgentEvent, RunId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::{HistoryStore, Write};

/// Bounds of a [`HistoryWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Writes waiting at most; past it new writes are dropped (and counted).
    pub queue: usize,
    /// Writes per transaction at most (each transaction is a handful of multi-row
    /// statements whatever its size).
    pub batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 100_000,
            batch: 2_048,
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
        let drained = drain(store, jobs, config.batch.max(1), Arc::clone(&stats));
        // Its own thread and runtime: under load the server's runtime has thousands of
        // connection tasks ready, and a writer queued behind them for every statement's
        // answer falls behind a burst. Its database connections are the store's, which work
        // from any runtime.
        let spawned = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
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

    /// Queues an event of a run, under its top-level run.
    pub fn record_event(&self, event: &AgentEvent, at_ms: i64) {
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
        self.record(Write::Event {
            root,
            event: event.clone(),
            at_ms,
        });
    }

    /// Waits until everything queued before the call is stored (or dropped).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// How long a small batch waits for more writes.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Attempts per batch before it is dropped.
const ATTEMPTS: u32 = 5;

async fn drain(
    store: Arc<dyn HistoryStore>,
    mut jobs: mpsc::Receiver<Job>,
    batch_size: usize,
    stats: Arc<WriterStats>,
) {
    let mut received = Vec::with_capacity(batch_size);
    while jobs.recv_many(&mut received, batch_size).await > 0 {
        // A small batch waits a little for more (unless a flush is waiting): a transaction
        // per handful of writes would cost more than the writes.
        let flushing = received.iter().any(|job| matches!(job, Job::Flush(_)));
        if received.len() < batch_size && !flushing {
            tokio::time::sleep(LINGER).await;
            while received.len() < batch_size {
                match jobs.try_recv() {
                    Ok(job) => received.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut writes = Vec::with_capacity(received.len());
        let mut flushes = Vec::new();
        for job in received.drain(..) {
            match job {
                Job::Write(write) => writes.push(write),
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !writes.is_empty() {
            store_batch(store.as_ref(), &writes, &stats).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn store_batch(store: &dyn HistoryStore, writes: &[Write], stats: &WriterStats) {
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        match store.apply(writes).await {
            Ok(()) => {
                stats.last_ok.store(true, Ordering::Relaxed);
                stats
                    .written
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(error) if attempt < ATTEMPTS => {
                stats.last_ok.store(false, Ordering::Relaxed);
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, attempt, "history: a batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(error) => {
                stats
                    .dropped_failed
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                tracing::error!(%error, writes = writes.len(), "history: a batch failed {ATTEMPTS} times and is dropped; the live stream is not affected");
            }
        }
    }
}
