//! [`LocalSlots`]: the run slots of this process's users: up to `max_running` runs of a user
//! at once, and a first-come-first-served queue of up to `max_queued` more. A factory shares
//! one among all of a user's engines; a standalone engine has its own.
//!
//! A slot given back goes to the first claims of the user's queue that may run (never to a
//! newcomer), so queued runs start in the order they were claimed. A claim that keeps one
//! run per thread ([`ThreadRule::serializes`]) may run only while its thread has no run
//! holding a slot and no such claim queued ahead of it; one blocked by its thread alone lets
//! the user's claims of other threads behind it go first. The map holds a user only while
//! they hold a slot or a queue place: it is bounded by the users with runs, not by every
//! user ever seen.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use core_context::{RunId, RunScope, ThreadId, UserId};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::slots::{
    Claim, QueuedSlot, RunSlots, SlotError, SlotLoad, SlotLost, SlotPermit, ThreadRule,
};

/// Per-user run slots in this process; see the module documentation.
#[derive(Clone)]
pub struct LocalSlots {
    inner: Arc<Inner>,
}

struct Inner {
    max_running: usize,
    max_queued: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, UserSlots>,
    next_ticket: u64,
}

/// One user's slots: how many are held, which run holds each serialized thread, and who
/// waits, in order.
#[derive(Default)]
struct UserSlots {
    running: usize,
    /// Each serialized thread's run: running, or paused for approvals (it keeps its thread).
    holders: HashMap<ThreadId, Holder>,
    waiting: VecDeque<Waiter>,
}

/// The run a serialized thread belongs to now.
struct Holder {
    run: RunId,
    agent: Arc<str>,
    /// Paused for approvals: it holds no slot, but its thread waits for it.
    paused: bool,
}

/// A queued claim: its ticket, its thread (when it keeps one run per thread), whether it
/// queued with [`ThreadRule::Front`], its run, and where its slot is sent.
struct Waiter {
    ticket: u64,
    thread: Option<ThreadId>,
    front: bool,
    run: RunId,
    agent: Arc<str>,
    slot: oneshot::Sender<()>,
}

impl UserSlots {
    /// Nothing of the user's is held: no slot, no place, no thread of a paused run.
    fn is_empty(&self) -> bool {
        self.running == 0 && self.waiting.is_empty() && self.holders.is_empty()
    }

    /// Hands free slots to the waiters that may run, in queue order: a waiter runs when a
    /// slot is free, and (keeping one run per thread) its thread has no holder and no
    /// waiter ahead of it.
    fn grant(&mut self, max_running: usize) {
        let mut seen: HashSet<ThreadId> = HashSet::new();
        let mut at = 0;
        while self.running < max_running && at < self.waiting.len() {
            let waiter = &self.waiting[at];
            // A thread is free for its own paused run's claim, even with others waiting.
            let free = waiter
                .thread
                .as_ref()
                .is_none_or(|t| match self.holders.get(t) {
                    Some(holder) => holder.run == waiter.run,
                    None => !seen.contains(t),
                });
            if !free {
                if let Some(thread) = &waiter.thread {
                    seen.insert(thread.clone());
                }
                at += 1;
                continue;
            }
            let Some(waiter) = self.waiting.remove(at) else {
                break;
            };
            // A waiter leaves the queue under this lock before its receiver goes, so the
            // send fails only for a waiter dropped mid-way; the slot then goes on.
            if waiter.slot.send(()).is_ok() {
                self.running += 1;
                if let Some(thread) = waiter.thread {
                    let holder = Holder {
                        run: waiter.run,
                        agent: waiter.agent,
                        paused: false,
                    };
                    self.holders.insert(thread, holder);
                }
            }
        }
    }

    /// Where a new claim of `thread` queues: after the thread's `Front` waiters when it is
    /// one, before the thread's other waiters; at the end otherwise. With the number of the
    /// thread's waiters ahead of it.
    fn place_for(&self, thread: Option<&ThreadId>, front: bool) -> (usize, usize) {
        let Some(thread) = thread else {
            return (self.waiting.len(), self.waiting.len());
        };
        let same = |w: &&Waiter| w.thread.as_ref() == Some(thread);
        let ahead_all = self.waiting.iter().filter(same).count();
        if !front {
            return (self.waiting.len(), ahead_all);
        }
        let fronts = self.waiting.iter().filter(same).filter(|w| w.front).count();
        match self.waiting.iter().position(|w| same(&w) && !w.front) {
            Some(at) => (at, fronts),
            None => (self.waiting.len(), ahead_all),
        }
    }
}

impl std::fmt::Debug for LocalSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSlots")
            .field("max_running", &self.inner.max_running)
            .field("max_queued", &self.inner.max_queued)
            .field("load", &self.load())
            .finish()
    }
}

impl LocalSlots {
    /// `max_running` runs of each user at once, and up to `max_queued` more waiting.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_running,
                max_queued,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Users holding a slot or a queue place.
    pub fn users(&self) -> usize {
        self.inner.state.lock().users.len()
    }
}

impl Inner {
    /// Gives one of `user`'s slots back (and `thread`, which `run` held, unless the run
    /// paused in it): to the first waiters that may run, or to no one.
    fn release(&self, user: &UserId, thread: Option<&(ThreadId, RunId)>) {
        let mut state = self.state.lock();
        let Some(slots) = state.users.get_mut(user) else {
            return;
        };
        debug_assert!(slots.running > 0, "a slot given back that was not held");
        slots.running = slots.running.saturating_sub(1);
        if let Some((thread, run)) = thread {
            let ours = slots
                .holders
                .get(thread)
                .is_some_and(|h| h.run == *run && !h.paused);
            if ours {
                slots.holders.remove(thread);
            }
        }
        slots.grant(self.max_running);
        if slots.is_empty() {
            state.users.remove(user);
        }
    }

    fn permit(self: &Arc<Self>, user: &UserId, thread: Option<(ThreadId, RunId)>) -> SlotPermit {
        SlotPermit::new(LocalPermit {
            inner: Arc::clone(self),
            user: user.clone(),
            thread,
        })
    }
}

/// A held slot (and the thread it holds, for its run): gives it back when dropped.
struct LocalPermit {
    inner: Arc<Inner>,
    user: UserId,
    thread: Option<(ThreadId, RunId)>,
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        self.inner.release(&self.user, self.thread.as_ref());
    }
}

/// A place in a user's queue, with the channel its slot arrives on.
struct Waiting {
    inner: Arc<Inner>,
    user: UserId,
    thread: Option<(ThreadId, RunId)>,
    ticket: u64,
    slot: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    async fn wait(mut self) -> Result<SlotPermit, SlotLost> {
        let arrived = match self.slot.as_mut() {
            Some(slot) => slot.await.is_ok(),
            None => false,
        };
        // The sender lives in the queue until it sends, and the queue lives until its last
        // waiter leaves, so the slot always arrives.
        debug_assert!(arrived, "a queued run's slot never arrived");
        self.slot = None;
        Ok(self.inner.permit(&self.user, self.thread.clone()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return; // the permit took over
        };
        let handed = {
            let mut state = self.inner.state.lock();
            let Some(slots) = state.users.get_mut(&self.user) else {
                return;
            };
            match slots.waiting.iter().position(|w| w.ticket == self.ticket) {
                Some(at) => {
                    slots.waiting.remove(at);
                    // A waiter gone may have held up its thread's next one.
                    slots.grant(self.inner.max_running);
                    if slots.is_empty() {
                        state.users.remove(&self.user);
                    }
                    false
                }
                // Not in the queue any more: the slot was sent to this place.
                None => slot.try_recv().is_ok(),
            }
        };
        if handed {
            self.inner.release(&self.user, self.thread.as_ref());
        }
    }
}

#[async_trait]
impl RunSlots for LocalSlots {
    async fn claim(
        &self,
        user: &UserId,
        scope: &RunScope,
        _message: &str,
        rule: ThreadRule,
    ) -> Result<Claim, SlotError> {
        let inner = &self.inner;
        let thread = rule.serializes().then(|| scope.thread_id.clone());
        let mut state = inner.state.lock();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        let slots = state.users.entry(user.clone()).or_default();
        let holder = thread.as_ref().and_then(|t| slots.holders.get(t));
        // The thread's own paused run, claiming again to resume: its thread waits for it.
        let own = holder.is_some_and(|h| h.run == scope.run_id);
        let active = holder
            .filter(|h| h.run != scope.run_id)
            .map(|h| h.run.clone());
        let first_waiting = thread.as_ref().and_then(|t| {
            slots
                .waiting
                .iter()
                .find(|w| w.thread.as_ref() == Some(t))
                .map(|w| w.run.clone())
        });
        if rule == ThreadRule::Reject
            && let Some(run) = active.clone().or_else(|| first_waiting.clone())
        {
            if slots.is_empty() {
                state.users.remove(user);
            }
            return Err(SlotError::ThreadBusy { run });
        }
        // While a slot is free every waiter left waits for its thread (slots go to the first
        // waiters that may run), so a claim whose thread is free runs while a slot is.
        let thread_free = own || (active.is_none() && first_waiting.is_none());
        if slots.running < inner.max_running && thread_free {
            slots.running += 1;
            if let Some(thread) = &thread {
                let holder = Holder {
                    run: scope.run_id.clone(),
                    agent: Arc::clone(&scope.agent_name),
                    paused: false,
                };
                slots.holders.insert(thread.clone(), holder);
            }
            let held = thread.map(|t| (t, scope.run_id.clone()));
            return Ok(Claim::Running(inner.permit(user, held)));
        }
        let queued = slots.waiting.len();
        if queued >= inner.max_queued {
            let running = slots.running;
            if slots.is_empty() {
                // Limits of zero: nothing of this user's is held.
                state.users.remove(user);
            }
            return Err(SlotError::Full {
                running,
                queued,
                max_running: inner.max_running,
                max_queued: inner.max_queued,
            });
        }
        let front = rule == ThreadRule::Front;
        let (at, position) = slots.place_for(thread.as_ref(), front);
        let (send, slot) = oneshot::channel();
        slots.waiting.insert(
            at,
            Waiter {
                ticket,
                thread: thread.clone(),
                front,
                run: scope.run_id.clone(),
                agent: Arc::clone(&scope.agent_name),
                slot: send,
            },
        );
        drop(state);
        let waiting = Waiting {
            inner: Arc::clone(inner),
            user: user.clone(),
            thread: thread.map(|t| (t, scope.run_id.clone())),
            ticket,
            slot: Some(slot),
        };
        Ok(Claim::Queued(
            QueuedSlot::new(position, waiting.wait()).behind(active),
        ))
    }

    async fn thread_runner(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, String)>, SlotError> {
        let state = self.inner.state.lock();
        Ok(state
            .users
            .get(user)
            .and_then(|slots| slots.holders.get(thread))
            .filter(|holder| !holder.paused)
            .map(|holder| (holder.run.clone(), holder.agent.to_string())))
    }

    async fn hold_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError> {
        let mut state = self.inner.state.lock();
        let holder = state
            .users
            .get_mut(user)
            .and_then(|slots| slots.holders.get_mut(thread))
            .filter(|holder| holder.run == *run);
        if let Some(holder) = holder {
            holder.paused = true;
        }
        Ok(())
    }

    async fn release_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
    ) -> Result<(), SlotError> {
        let mut state = self.inner.state.lock();
        let Some(slots) = state.users.get_mut(user) else {
            return Ok(());
        };
        if slots
            .holders
            .get(thread)
            .is_some_and(|h| h.run == *run && h.paused)
        {
            slots.holders.remove(thread);
            slots.grant(self.inner.max_running);
        }
        if slots.is_empty() {
            state.users.remove(user);
        }
        Ok(())
    }

    fn load(&self) -> SlotLoad {
        let state = self.inner.state.lock();
        state
            .users
            .values()
            .fold(SlotLoad::default(), |load, slots| SlotLoad {
                running: load.running + slots.running,
                queued: load.queued + slots.waiting.len(),
            })
    }
}
