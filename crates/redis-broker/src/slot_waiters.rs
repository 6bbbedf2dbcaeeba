//! The run claims of this node queued for a slot, by user and lease: a slot given back wakes
//! the claims that may take it and nobody else's. The release script names them (the
//! queue's first places, as many as the user has slots free and two more), hands the
//! releasing node its own and sends each other node holding one `slot\n<user>\n<lease>…` on
//! its node channel; a thread freed from its paused run names the queue's first 16 places
//! the same way.
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

/// One user's claims waiting on this node: each one's lease id and signal.
type Claims = Vec<(String, Arc<Notify>)>;

/// Queued claims by user and lease; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SlotWaiters {
    /// Each user with a claim waiting on this node.
    users: Mutex<HashMap<UserId, Claims>>,
}

impl SlotWaiters {
    /// Registers the queued claim of `user`'s lease `lease`, until the returned guard is
    /// dropped.
    pub(crate) fn waiting(self: &Arc<Self>, user: &UserId, lease: &str) -> SlotWaiting {
        let notify = Arc::new(Notify::new());
        self.users
            .lock()
            .entry(user.clone())
            .or_default()
            .push((lease.to_owned(), Arc::clone(&notify)));
        SlotWaiting {
            waiters: Arc::clone(self),
            user: user.clone(),
            notify,
        }
    }

    /// Wakes `user`'s queued claims on this node whose leases are in `leases`; a claim not
    /// waiting now takes the wake-up at its next wait.
    pub(crate) fn wake(&self, user: &UserId, leases: &[String]) {
        if leases.is_empty() {
            return;
        }
        if let Some(claims) = self.users.lock().get(user) {
            for (lease, notify) in claims {
                if leases.contains(lease) {
                    notify.notify_one();
                }
            }
        }
    }

    /// Users with a claim waiting on this node.
    #[cfg(test)]
    fn users(&self) -> usize {
        self.users.lock().len()
    }
}

/// One queued claim's registration (see [`ClusterRuns::slot_waiting`](crate::ClusterRuns::slot_waiting)).
#[derive(Debug)]
pub struct SlotWaiting {
    waiters: Arc<SlotWaiters>,
    user: UserId,
    notify: Arc<Notify>,
}

impl SlotWaiting {
    /// Completes when a slot may be this claim's: woken since the last call completed.
    pub fn freed(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for SlotWaiting {
    fn drop(&mut self) {
        let mut users = self.waiters.users.lock();
        if let Some(claims) = users.get_mut(&self.user) {
            claims.retain(|(_, notify)| !Arc::ptr_eq(notify, &self.notify));
            if claims.is_empty() {
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
    async fn a_release_wakes_the_claims_it_names_and_no_others() {
        let waiters = Arc::new(SlotWaiters::default());
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let (a1, a2, b) = (
            waiters.waiting(&alice, "l1"),
            waiters.waiting(&alice, "l2"),
            waiters.waiting(&bob, "l3"),
        );
        waiters.wake(&alice, &["l2".to_owned()]);
        assert!(a1.freed().now_or_never().is_none(), "l1 was not named");
        assert!(a2.freed().now_or_never().is_some(), "l2 was named");
        assert!(b.freed().now_or_never().is_none(), "bob's claim sleeps on");
        waiters.wake(&alice, &[]);
        assert!(
            a1.freed().now_or_never().is_none(),
            "nothing named, nothing woken"
        );
        // Both of alice's named: both woken, and still nobody else's.
        waiters.wake(&alice, &["l1".to_owned(), "l2".to_owned()]);
        assert!(a1.freed().now_or_never().is_some());
        assert!(a2.freed().now_or_never().is_some());
        assert!(b.freed().now_or_never().is_none(), "bob's claim sleeps on");
        // Bob's lease named under alice wakes nothing.
        waiters.wake(&alice, &["l3".to_owned()]);
        assert!(b.freed().now_or_never().is_none());
        waiters.wake(&bob, &["l3".to_owned()]);
        assert!(
            b.freed().now_or_never().is_some(),
            "bob's own slot wakes him"
        );
    }

    #[test]
    fn a_user_is_forgotten_with_their_last_claim() {
        let waiters = Arc::new(SlotWaiters::default());
        let alice = UserId::parse("alice").unwrap();
        let first = waiters.waiting(&alice, "l1");
        let second = waiters.waiting(&alice, "l2");
        drop(first);
        assert_eq!(waiters.users(), 1);
        waiters.wake(&alice, &["l1".to_owned(), "l2".to_owned()]);
        assert!(second.freed().now_or_never().is_some());
        drop(second);
        assert_eq!(waiters.users(), 0);
        // Nobody to wake: nothing happens.
        waiters.wake(&alice, &["l2".to_owned()]);
    }
}
