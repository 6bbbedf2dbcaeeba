//! [`LocalSlots`]: the run slots of this process's users: up to `max_running` runs of a user
//! at once, and a first-come-first-served queue of up to `max_queued` more. A factory shares
//! one among all of a user's engines; a standalone engine has its own.
//!
//! A slot given back goes straight to the head of the user's queue (never to a newcomer), so
//! queued runs start in the order they were claimed. The map holds a user only while they
//! hold a slot or a queue place: it is bounded by the users with runs, not by every user
//! ever seen.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use core_context::{RunScope, UserId};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::slots::{Claim, QueuedSlot, RunSlots, SlotError, SlotLoad, SlotLost, SlotPermit};

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

/// One user's slots: how many are held, and who waits, in order.
#[derive(Default)]
struct UserSlots {
    running: usize,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
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
    /// Gives one of `user`'s slots back: to the head of their queue, or to no one.
    fn release(&self, user: &UserId) {
        let mut state = self.state.lock();
        let Some(slots) = state.users.get_mut(user) else {
            return;
        };
        while let Some((_, next)) = slots.waiting.pop_front() {
            // A waiter leaves the queue under this lock before its receiver goes, so the
            // send fails only for a waiter dropped mid-way; the slot then goes to the next.
            if next.send(()).is_ok() {
                return;
            }
        }
        debug_assert!(slots.running > 0, "a slot given back that was not held");
        slots.running = slots.running.saturating_sub(1);
        if slots.running == 0 {
            state.users.remove(user);
        }
    }
}

/// A held slot: gives it back when dropped.
struct LocalPermit {
    inner: Arc<Inner>,
    user: UserId,
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        self.inner.release(&self.user);
    }
}

/// A place in a user's queue, with the channel its slot arrives on.
struct Waiting {
    inner: Arc<Inner>,
    user: UserId,
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
        Ok(SlotPermit::new(LocalPermit {
            inner: Arc::clone(&self.inner),
            user: self.user.clone(),
        }))
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
            match slots.waiting.iter().position(|(t, _)| *t == self.ticket) {
                Some(at) => {
                    slots.waiting.remove(at);
                    if slots.running == 0 && slots.waiting.is_empty() {
                        state.users.remove(&self.user);
                    }
                    false
                }
                // Not in the queue any more: the slot was sent to this place.
                None => slot.try_recv().is_ok(),
            }
        };
        if handed {
            self.inner.release(&self.user);
        }
    }
}

#[async_trait]
impl RunSlots for LocalSlots {
    async fn claim(
        &self,
        user: &UserId,
        _scope: &RunScope,
        _message: &str,
    ) -> Result<Claim, SlotError> {
        let inner = &self.inner;
        let mut state = inner.state.lock();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        let slots = state.users.entry(user.clone()).or_default();
        if slots.running < inner.max_running && slots.waiting.is_empty() {
            slots.running += 1;
            return Ok(Claim::Running(SlotPermit::new(LocalPermit {
                inner: Arc::clone(inner),
                user: user.clone(),
            })));
        }
        let position = slots.waiting.len();
        if position >= inner.max_queued {
            let running = slots.running;
            if running == 0 && position == 0 {
                // Limits of zero: nothing of this user's is held.
                state.users.remove(user);
            }
            return Err(SlotError::Full {
                running,
                queued: position,
                max_running: inner.max_running,
                max_queued: inner.max_queued,
            });
        }
        let (send, slot) = oneshot::channel();
        slots.waiting.push_back((ticket, send));
        drop(state);
        let waiting = Waiting {
            inner: Arc::clone(inner),
            user: user.clone(),
            ticket,
            slot: Some(slot),
        };
        Ok(Claim::Queued(QueuedSlot::new(position, waiting.wait())))
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
