//! The run claims of this node queued for a slot, by user: a slot the user's run gives back
//! wakes that user's queued claims only, on this node and (through the release script's
//! `slot\n<user>` on their node channels) on the nodes holding the queue's first places.
//!
//! Before, one signal woke every queued claim of the node on every slot given back, so each
//! release cost one claim script per queued run of any user: with 8,000 runs queued over two
//! nodes (16,000 runs of 2,000 users at a limit of 3 each), Redis ran millions of claims and
//! two nodes delivered a tenth of what one node does.

use std::collections::HashMap;
use std::sync::Arc;

use core_context::UserId;
use parking_lot::Mutex;
use tokio::sync::{Notify, futures::Notified};

/// Queued claims by user, each user's woken together; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SlotWaiters {
    /// Each user with a claim waiting on this node: the signal, and how many wait on it.
    users: Mutex<HashMap<UserId, (Arc<Notify>, usize)>>,
}

impl SlotWaiters {
    /// Registers a queued claim of `user`'s, until the returned guard is dropped.
    pub(crate) fn waiting(self: &Arc<Self>, user: &UserId) -> SlotWaiting {
        let notify = {
            let mut users = self.users.lock();
            let entry = users
                .entry(user.clone())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            Arc::clone(&entry.0)
        };
        SlotWaiting {
            waiters: Arc::clone(self),
            user: user.clone(),
            notify,
        }
    }

    /// Wakes `user`'s queued claims on this node (those waiting in
    /// [`SlotWaiting::freed`] now); nothing when none waits.
    pub(crate) fn wake(&self, user: &UserId) {
        if let Some((notify, _)) = self.users.lock().get(user) {
            notify.notify_waiters();
        }
    }

    /// Users with a claim waiting on this node.
    #[cfg(test)]
    fn users(&self) -> usize {
        self.users.lock().len()
    }
}

/// One queued claim's registration (see [`SlotWaiters::waiting`]).
#[derive(Debug)]
pub struct SlotWaiting {
    waiters: Arc<SlotWaiters>,
    user: UserId,
    notify: Arc<Notify>,
}

impl SlotWaiting {
    /// Completes when a slot of this user's is given back after it was enabled (with
    /// [`Notified::enable`], before asking Redis, so that a release between the answer and
    /// the wait is not missed).
    pub fn freed(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for SlotWaiting {
    fn drop(&mut self) {
        let mut users = self.waiters.users.lock();
        if let Some(entry) = users.get_mut(&self.user) {
            entry.1 -= 1;
            if entry.1 == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_slot_given_back_wakes_only_its_users_claims() {
        let waiters = Arc::new(SlotWaiters::default());
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let (a1, a2, b) = (
            waiters.waiting(&alice),
            waiters.waiting(&alice),
            waiters.waiting(&bob),
        );
        let (mut fa1, mut fa2, mut fb) = (
            Box::pin(a1.freed()),
            Box::pin(a2.freed()),
            Box::pin(b.freed()),
        );
        fa1.as_mut().enable();
        fa2.as_mut().enable();
        fb.as_mut().enable();
        waiters.wake(&alice);
        assert!(fa1.now_or_never().is_some(), "alice's first claim is woken");
        assert!(
            fa2.now_or_never().is_some(),
            "alice's second claim is woken"
        );
        assert!(
            fb.as_mut().now_or_never().is_none(),
            "bob's claim must sleep on"
        );
        waiters.wake(&bob);
        assert!(fb.now_or_never().is_some(), "bob's own slot wakes him");
    }

    #[test]
    fn a_user_is_forgotten_with_their_last_claim() {
        let waiters = Arc::new(SlotWaiters::default());
        let alice = UserId::parse("alice").unwrap();
        let first = waiters.waiting(&alice);
        let second = waiters.waiting(&alice);
        drop(first);
        assert_eq!(waiters.users(), 1);
        drop(second);
        assert_eq!(waiters.users(), 0);
        // Nobody to wake: nothing happens.
        waiters.wake(&alice);
    }
}
