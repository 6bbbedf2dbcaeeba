//! Counters of one engine's runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of an engine's counters ([`UserExecutionEngine::stats`](crate::UserExecutionEngine::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Runs accepted.
    pub total_runs: u64,
    /// Runs executing now.
    pub running: u64,
    /// Runs waiting for a slot now.
    pub queued: u64,
    /// Runs that ended in `agent_completed`.
    pub completed: u64,
    /// Runs that ended in `agent_error` other than a timeout (panics included).
    pub failed: u64,
    /// Runs of `failed` that ended because the agent panicked.
    pub panicked: u64,
    /// Runs that ended in `agent_error{code:"timeout"}`.
    pub timed_out: u64,
    /// Runs that ended in `agent_cancelled`.
    pub cancelled: u64,
    /// Events the sink refused (each one was logged).
    pub emit_failures: u64,
    /// Mean time a run waited for a slot.
    pub avg_queue_wait: Duration,
    /// Longest time a run waited for a slot.
    pub max_queue_wait: Duration,
    /// Mean run duration (from `agent_started` to the terminal event).
    pub avg_duration: Duration,
    /// Longest run duration.
    pub max_duration: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) emit_failures: AtomicU64,
    started: AtomicU64,
    queue_wait_us: AtomicU64,
    max_queue_wait_us: AtomicU64,
    duration_us: AtomicU64,
    max_duration_us: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Counters {
    pub(crate) fn record_queue_wait(&self, wait: Duration) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.queue_wait_us
            .fetch_add(micros(wait), Ordering::Relaxed);
        self.max_queue_wait_us
            .fetch_max(micros(wait), Ordering::Relaxed);
    }

    pub(crate) fn record_duration(&self, duration: Duration) {
        self.duration_us
            .fetch_add(micros(duration), Ordering::Relaxed);
        self.max_duration_us
            .fetch_max(micros(duration), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = get(&self.started).max(1);
        let ended = (get(&self.completed)
            + get(&self.failed)
            + get(&self.timed_out)
            + get(&self.cancelled))
        .max(1);
        EngineStats {
            total_runs: get(&self.total),
            running: get(&self.running),
            queued: get(&self.queued),
            completed: get(&self.completed),
            failed: get(&self.failed),
            panicked: get(&self.panicked),
            timed_out: get(&self.timed_out),
            cancelled: get(&self.cancelled),
            emit_failures: get(&self.emit_failures),
            avg_queue_wait: Duration::from_micros(get(&self.queue_wait_us) / started),
            max_queue_wait: Duration::from_micros(get(&self.max_queue_wait_us)),
            avg_duration: Duration::from_micros(get(&self.duration_us) / ended),
            max_duration: Duration::from_micros(get(&self.max_duration_us)),
        }
    }
}
