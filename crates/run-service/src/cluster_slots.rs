//! [`ClusterSlots`]: the engine's run slots ([`RunSlots`]) across the nodes sharing one
//! Redis, with the same semantics as the in-process slots: a run past the user's limit
//! queues (first come, first served, whichever node it came to) up to the queue bound, and
//! is refused beyond it. The conformance tests in `tests/it/run_slots.rs` run against both.
//!
//! A queued claim asks Redis again when a slot given back may be its, on this node or on
//! another (the release script names the queue's first places and tells the nodes holding
//! them: `ClusterRuns::slot_waiting`), when a thread of its user's is freed from a paused
//! run on any node, and at least every [`POLL`] otherwise (a slot a reaper took back, a place
//! held up past the ones named, a notice lost with the live connection), which also renews
//! its place; a place not renewed within the lease TTL (its node died) is dropped. Only
//! those claims ask again: a release does not wake every queued run of the node, nor every
//! one of its user's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use core_context::{RunId, RunScope, ThreadId, UserId};
use execution_engine::slots::{
    Claim, QueuedSlot, RunSlots, SlotError, SlotLoad, SlotLost, SlotPermit, ThreadRule,
};
use parking_lot::Mutex;
use redis_broker::{ClaimState, ClusterRuns, Lease, SlotLimits};

/// The leases of the runs this node executes, by run (shared with its `Cluster`, which renews
/// them).
pub(crate) type Held = Arc<Mutex<HashMap<RunId, Lease>>>;

/// How often a queued claim asks again at least when nothing woke it (and so how late it may
/// notice a slot whose release told it nothing: see the module documentation).
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// Per-user run slots across the cluster; see the module documentation.
#[derive(Clone)]
pub struct ClusterSlots {
    inner: Arc<Inner>,
}

struct Inner {
    runs: ClusterRuns,
    held: Held,
    limits: SlotLimits,
    /// How often a queued claim asks again: [`POLL`], or less than the lease TTL allows.
    poll: Duration,
    running: AtomicUsize,
    queued: AtomicUsize,
}

impl std::fmt::Debug for ClusterSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSlots")
            .field("limits", &self.inner.limits)
            .field("load", &self.load())
            .finish_non_exhaustive()
    }
}

impl ClusterSlots {
    pub(crate) fn new(runs: ClusterRuns, held: Held, limits: SlotLimits) -> Self {
        // A place is renewed each time it asks: several times per TTL.
        let poll = POLL.min(runs.renew_every() / 2);
        Self {
            inner: Arc::new(Inner {
                runs,
                held,
                limits,
                poll,
                running: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
            }),
        }
    }
}

impl Inner {
    /// The slot of `lease` is held: renewed by this node until the permit goes.
    fn permit(self: &Arc<Self>, lease: Lease) -> SlotPermit {
        self.held.lock().insert(lease.run().clone(), lease.clone());
        self.running.fetch_add(1, Ordering::AcqRel);
        let given_back = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = HeldSlot {
            inner: Arc::clone(self),
            lease: lease.clone(),
            given_back: Arc::clone(&given_back),
        };
        let inner = Arc::clone(self);
        SlotPermit::releasing(held, async move {
            // Awaited by a run that pauses: the lease is gone from Redis before the pause
            // is announced, so no node can take the paused run for a lost one.
            if given_back.swap(true, Ordering::AcqRel) {
                return;
            }
            inner.held.lock().remove(lease.run());
            // A release that went through has woken the user's queued claims.
            if let Err(error) = inner.runs.release(&lease, inner.limits.max_running).await {
                tracing::warn!(%error, "cluster: cannot give a run slot back; it expires with its lease");
            }
        })
    }

    /// Gives `lease` back in the background (from a drop), which wakes the user's queued
    /// claims. Without a runtime (the process is ending) the lease expires with its TTL.
    fn give_back(self: &Arc<Self>, lease: Lease) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "cluster: no runtime to give a run slot back; it expires with its lease"
            );
            return;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            // `release` retries for as long as the lease lives; once through, it has woken
            // the user's queued claims.
            if let Err(error) = inner.runs.release(&lease, inner.limits.max_running).await {
                tracing::warn!(%error, "cluster: cannot give a run slot back; it expires with its lease");
            }
        });
    }
}

/// A held slot: stops renewing it and gives it back when dropped.
struct HeldSlot {
    inner: Arc<Inner>,
    lease: Lease,
    /// Set once the permit's awaited release gave the lease back.
    given_back: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.inner.running.fetch_sub(1, Ordering::AcqRel);
        if self.given_back.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.held.lock().remove(self.lease.run());
        self.inner.give_back(self.lease.clone());
    }
}

/// A place in the user's queue; gives it back when dropped before it got a slot (the run was
/// cancelled while queued).
struct Place {
    inner: Arc<Inner>,
    lease: Lease,
    scope: RunScope,
    /// What the run's `agent_started` says (kept with the place, for a reaper).
    message: String,
    rule: ThreadRule,
    got_slot: bool,
}

impl Place {
    async fn wait(mut self) -> Result<SlotPermit, SlotLost> {
        let inner = Arc::clone(&self.inner);
        let waiting = inner.runs.slot_waiting(&self.lease);
        let mut failing = false;
        loop {
            let freed = waiting.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let answer = inner
                .runs
                .claim(
                    &self.lease,
                    &self.scope,
                    inner.limits,
                    &self.message,
                    true,
                    self.rule,
                )
                .await;
            let pause = match answer {
                Ok(ClaimState::Running) => {
                    self.got_slot = true;
                    return Ok(inner.permit(self.lease.clone()));
                }
                // A reaper took the place (this node could not renew it for a whole TTL) and
                // ended the run for its user: it must not start.
                Ok(ClaimState::Lost) => {
                    tracing::warn!(run_id = %self.lease.run(), "cluster: a queued run's place was taken by another node, which ended the run; it will not start");
                    return Err(SlotLost);
                }
                // Still queued; or the place lapsed (Redis was out of reach for a whole TTL)
                // and the queue is full now: the run was accepted, so it keeps asking.
                Ok(
                    ClaimState::Queued { .. }
                    | ClaimState::Full { .. }
                    | ClaimState::ThreadBusy { .. },
                ) => {
                    failing = false;
                    inner.poll
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cluster: a queued run cannot ask for its slot now; it keeps trying");
                    }
                    failing = true;
                    inner.poll * 10
                }
            };
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.inner.queued.fetch_sub(1, Ordering::AcqRel);
        if !self.got_slot {
            // A claim dropped mid-way may have taken the slot: giving back covers both.
            self.inner.give_back(self.lease.clone());
        }
    }
}

/// A claim on its way: gives back what it may hold unless it was answered.
struct Pending {
    inner: Arc<Inner>,
    lease: Option<Lease>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.inner.give_back(lease);
        }
    }
}

#[async_trait]
impl RunSlots for ClusterSlots {
    async fn claim(
        &self,
        user: &UserId,
        scope: &RunScope,
        message: &str,
        rule: ThreadRule,
    ) -> Result<Claim, SlotError> {
        let inner = &self.inner;
        let lease = Lease::new(user.clone(), scope.run_id.clone());
        // Dropped mid-claim (its caller went away), the slot Redis may have granted goes back.
        let mut pending = Pending {
            inner: Arc::clone(inner),
            lease: Some(lease.clone()),
        };
        let state = inner
            .runs
            .claim(&lease, scope, inner.limits, message, false, rule)
            .await;
        let state = match state {
            Ok(state) => {
                pending.lease = None;
                state
            }
            Err(error) => return Err(SlotError::Unavailable(error.to_string())),
        };
        match state {
            ClaimState::Running => Ok(Claim::Running(inner.permit(lease))),
            ClaimState::Queued { position, behind } => {
                inner.queued.fetch_add(1, Ordering::AcqRel);
                let place = Place {
                    inner: Arc::clone(inner),
                    lease,
                    scope: scope.clone(),
                    message: message.to_owned(),
                    rule,
                    got_slot: false,
                };
                Ok(Claim::Queued(
                    QueuedSlot::new(position, place.wait()).behind(behind),
                ))
            }
            // Only a claim asking again can find its place lost.
            ClaimState::Lost => Err(SlotError::Unavailable(
                "the slots' store answered `lost` to a new claim".into(),
            )),
            ClaimState::ThreadBusy { run } => Err(SlotError::ThreadBusy { run }),
            ClaimState::Full { running, queued } => Err(SlotError::Full {
                running,
                queued,
                max_running: inner.limits.max_running,
                max_queued: inner.limits.max_queued,
            }),
        }
    }

    async fn thread_runner(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, String)>, SlotError> {
        self.inner
            .runs
            .thread_runner(user, thread)
            .await
            .map_err(|e| SlotError::Unavailable(e.to_string()))
    }

    async fn hold_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError> {
        self.inner
            .runs
            .hold_thread(user, thread, run, true)
            .await
            .map_err(|e| SlotError::Unavailable(e.to_string()))
    }

    async fn release_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError> {
        self.inner
            .runs
            .hold_thread(user, thread, run, false)
            .await
            .map_err(|e| SlotError::Unavailable(e.to_string()))
    }

    fn load(&self) -> SlotLoad {
        SlotLoad {
            running: self.inner.running.load(Ordering::Acquire),
            queued: self.inner.queued.load(Ordering::Acquire),
        }
    }
}
