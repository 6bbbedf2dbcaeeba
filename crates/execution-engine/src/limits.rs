//! Run slots of one user: a fair semaphore for running runs and a bounded queue count.
//!
//! Shared by every engine of the user when engines come from a factory; a standalone engine
//! has its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::EngineConfig;
use crate::error::EngineError;

#[derive(Debug)]
pub(crate) struct UserLimits {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_running: usize,
    max_queued: usize,
}

/// A run's claim on the user's capacity.
pub(crate) enum Slot {
    /// A slot was free: the run starts at once.
    Running(OwnedSemaphorePermit),
    /// The run waits in the queue; [`UserLimits::wait`] turns this into a permit.
    Queued(QueueTicket),
}

/// A place in the queue; gives the place back when dropped (a queued run that is cancelled).
pub(crate) struct QueueTicket {
    limits: Arc<UserLimits>,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.limits.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl UserLimits {
    pub(crate) fn new(config: &EngineConfig) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            queued: AtomicUsize::new(0),
            max_running: config.max_concurrent_runs,
            max_queued: config.max_queued_runs,
        })
    }

    /// Claims a slot or a queue place, or refuses with `too_many_runs`.
    pub(crate) fn claim(self: &Arc<Self>) -> Result<Slot, EngineError> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => return Ok(Slot::Running(permit)),
            Err(TryAcquireError::Closed) => return Err(EngineError::EngineClosed),
            Err(TryAcquireError::NoPermits) => {}
        }
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queued).then_some(q + 1)
            });
        match reserved {
            Ok(_) => Ok(Slot::Queued(QueueTicket {
                limits: Arc::clone(self),
            })),
            Err(queued) => Err(EngineError::TooManyRuns {
                running: self.running(),
                queued,
                max_running: self.max_running,
                max_queued: self.max_queued,
            }),
        }
    }

    /// Waits for a slot (fairly, in arrival order), giving back the queue place.
    pub(crate) async fn wait(&self, ticket: QueueTicket) -> OwnedSemaphorePermit {
        let permit = Arc::clone(&self.slots).acquire_owned().await;
        drop(ticket);
        // The semaphore is never closed, so acquiring cannot fail.
        permit.unwrap_or_else(|_| unreachable!("run slots are never closed"))
    }

    pub(crate) fn running(&self) -> usize {
        self.max_running - self.slots.available_permits()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether the user has no run running or queued.
    pub(crate) fn is_idle(&self) -> bool {
        self.running() == 0 && self.queued() == 0
    }
}
