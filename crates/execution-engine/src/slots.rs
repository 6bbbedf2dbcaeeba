//! The per-user run slots seam: how many runs of one user execute at once, and how many may
//! wait for a slot. Engines claim through [`RunSlots`], which has two implementations with
//! the same semantics: [`LocalSlots`](crate::LocalSlots) (this process), and the run
//! service's Redis leases (`run_service::cluster::ClusterSlots`, across nodes).
//!
//! The contract, which the conformance tests in `tests/it/run_slots.rs` check for both:
//! - a claim runs at once while the user has fewer than `max_running` runs and nobody is
//!   queued ahead of it; otherwise it queues while fewer than `max_queued` wait, and is
//!   refused ([`SlotError::Full`]) beyond that;
//! - queued claims get slots in the order they queued (first come, first served);
//! - a queued claim waits until it gets its slot, unless its place is lost (a networked
//!   implementation whose node lost the store for longer than a place lasts: [`SlotLost`]);
//! - dropping a [`SlotPermit`] gives its slot back (to the head of the queue, if any);
//!   dropping a [`QueuedSlot`] gives its place in the queue back;
//! - users never share slots;
//! - claims under a thread rule other than [`ThreadRule::Parallel`] keep one run per thread:
//!   such a claim runs only while no other serialized run of its thread holds a slot and none
//!   is queued ahead of it; the thread's runs start in the order they queued (a
//!   [`ThreadRule::Front`] claim queues ahead of the thread's other waiting claims, after
//!   earlier `Front` ones); a claim blocked only by its thread does not hold up the user's
//!   runs of other threads; [`ThreadRule::Reject`] is refused ([`SlotError::ThreadBusy`])
//!   when the thread has a run; a run paused for approvals keeps its thread
//!   ([`RunSlots::hold_thread`]) until it claims again (resumed) and ends, or
//!   [`RunSlots::release_thread`].

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
pub use core_context::multitask::ThreadRule;
use core_context::{RunId, RunScope, ThreadId, UserId};
use futures::future::BoxFuture;

/// Where a user's run limit and queue live. See the module documentation for the contract.
#[async_trait]
pub trait RunSlots: Send + Sync + fmt::Debug {
    /// Claims a slot for the run `scope` of `user`, started with `message`, sharing its
    /// thread by `rule`: it runs at once, waits in the user's queue, or is refused when the
    /// user has the maximum of running and queued runs (or, with [`ThreadRule::Reject`], when
    /// its thread has a run). (`message` is what the run's `agent_started` says, for an
    /// implementation that may have to end a queued run on behalf of a node that died.)
    async fn claim(
        &self,
        user: &UserId,
        scope: &RunScope,
        message: &str,
        rule: ThreadRule,
    ) -> Result<Claim, SlotError>;

    /// The run of `user`'s `thread` holding a slot now (one claimed with a rule that keeps
    /// one run per thread), with its agent's name; `None` when no run holds it.
    async fn thread_runner(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, String)>, SlotError>;

    /// Keeps `thread` for `run` (holding a slot in it) while the run is paused for approvals:
    /// its slot goes back, but the thread's other claims wait until the run claims again
    /// (resumed: the thread is free for its own claim) and ends, or
    /// [`release_thread`](Self::release_thread). Nothing when `run` does not hold `thread`.
    async fn hold_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError>;

    /// Frees `thread` from `run`, paused in it and ending without resuming (cancelled,
    /// interrupted, rolled back): the thread's next claim may run.
    async fn release_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError>;

    /// The permits and queue places this process holds now, all users together.
    fn load(&self) -> SlotLoad;
}

/// A claim's answer: a slot now, or a place in the queue.
#[derive(Debug)]
pub enum Claim {
    /// A slot was free: the run starts at once.
    Running(SlotPermit),
    /// The run waits for a slot; [`QueuedSlot::wait`] gives the permit.
    Queued(QueuedSlot),
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The user has the maximum of running and queued runs.
    #[error(
        "too many runs: {running} running and {queued} queued (limits {max_running} and {max_queued}); wait for one to finish or cancel one"
    )]
    Full {
        /// The user's runs executing.
        running: usize,
        /// The user's runs waiting.
        queued: usize,
        /// The concurrency limit.
        max_running: usize,
        /// The queue limit.
        max_queued: usize,
    },
    /// The claim's thread has a run (running, or queued ahead), and the claim said
    /// [`ThreadRule::Reject`].
    #[error(
        "the thread has a run in progress ({run}); wait for it to end, cancel it, or send with another multitask strategy"
    )]
    ThreadBusy {
        /// The thread's running run (or, when none runs, the first one queued).
        run: RunId,
    },
    /// The slots cannot be reached now (their store is down); nothing was claimed.
    #[error("the run slots cannot be reached now: {0}; retry shortly")]
    Unavailable(String),
}

/// A queued claim's place was taken from it: its node lost the slots' store for longer than a
/// place lasts, and another node ended the run for its user (the run must not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the run's place in the queue was lost: another node ended the run")]
pub struct SlotLost;

/// Counts of permits and queue places held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotLoad {
    /// Permits held (runs executing).
    pub running: usize,
    /// Queue places held (runs waiting).
    pub queued: usize,
}

/// A run slot. Dropping it gives the slot back.
#[must_use = "dropping a permit gives its slot back at once"]
pub struct SlotPermit {
    _held: Box<dyn Send + Sync>,
    /// Gives the slot back and resolves once it is given back everywhere.
    release: Option<BoxFuture<'static, ()>>,
}

impl SlotPermit {
    /// A permit that gives its slot back when `held` is dropped (an implementation's guard).
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
            release: None,
        }
    }

    /// A permit whose slot `release` gives back and waits for (across nodes: until the
    /// shared store has it), for [`give_back`](Self::give_back); dropping the permit without
    /// it still gives the slot back, through `held`, without waiting. `release` runs only
    /// when awaited, so `held` must not give the slot back again once it has run.
    pub fn releasing(
        held: impl Send + Sync + 'static,
        release: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            _held: Box::new(held),
            release: Some(Box::pin(release)),
        }
    }

    /// Gives the slot back and returns once it is given back (a run that pauses must not
    /// hold a slot another node could still see when it announces the pause).
    pub async fn give_back(mut self) {
        if let Some(release) = self.release.take() {
            release.await;
        }
    }
}

impl fmt::Debug for SlotPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlotPermit")
    }
}

/// A place in a user's queue. Dropping it (or the future of [`wait`](Self::wait)) gives the
/// place back: a queued run that is cancelled.
#[must_use = "dropping a queue place gives it back at once"]
pub struct QueuedSlot {
    position: usize,
    thread_active: Option<RunId>,
    wait: BoxFuture<'static, Result<SlotPermit, SlotLost>>,
}

impl QueuedSlot {
    /// A place `position` runs from the head of the queue (0: next), whose permit `wait`
    /// gives. `wait` must give the place back when dropped before it is ready.
    pub fn new(
        position: usize,
        wait: impl Future<Output = Result<SlotPermit, SlotLost>> + Send + 'static,
    ) -> Self {
        Self {
            position,
            thread_active: None,
            wait: Box::pin(wait),
        }
    }

    /// This place, which waits (also) for `run`, the run of its thread holding a slot when
    /// it queued.
    pub fn behind(mut self, run: Option<RunId>) -> Self {
        self.thread_active = run;
        self
    }

    /// How many claims were ahead of this one when it queued (0: it is next): of its
    /// thread, for a claim that keeps one run per thread; of the user's queue otherwise.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The run of this claim's thread that held a slot when it queued, if any (the run a
    /// new message that interrupts cancels).
    pub fn thread_active(&self) -> Option<&RunId> {
        self.thread_active.as_ref()
    }

    /// Waits for a slot, in the order claims queued; [`SlotLost`] when the place was taken
    /// (the run was ended elsewhere and must not start).
    pub async fn wait(self) -> Result<SlotPermit, SlotLost> {
        self.wait.await
    }
}

impl fmt::Debug for QueuedSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedSlot")
            .field("position", &self.position)
            .field("thread_active", &self.thread_active)
            .finish_non_exhaustive()
    }
}
