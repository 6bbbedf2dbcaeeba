//! The sequencer's lease lookups (`sequencer`), off its loop: a user whose route is not known
//! has their events parked (in order, forwarded ones too) while a task of its own asks Redis
//! for the lease; the other users' events are written meanwhile. The answer comes back on the
//! sequencer's inbound queue ([`Inbound::Routed`]), and the user's parked events go back into
//! the next round's work ahead of any of theirs that came since.
//!
//! A parked event of this node's own counts as not yet through for `flush` and `stored`, and
//! as held for the publish queue's bound (the sequencer's `most_unconfirmed`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use core_context::UserId;
use futures::StreamExt;

use crate::conn::Conn;
use crate::forwarded::{Inbound, Item};
use crate::publisher::{RETRY, retryable};
use crate::routes::{APPLIED_WITHIN, LEASE, Route, read_take};
use crate::scripts::meta_and_log;
use crate::sequencer::Sequencer;
use crate::shared::Shared;

impl Sequencer {
    /// Splits `work` into the events that can be written now (their user's route is known)
    /// and those parked until their user's lease lookup answers; starts the lookups that are
    /// needed. Returns the first, in order.
    pub(crate) fn route_or_park(&mut self, work: Vec<Item>) -> Vec<Item> {
        let lookups = self.lookups_needed(&work);
        for (user, _) in &lookups {
            // Its unconfirmed forwarded events go first, as they may now go elsewhere.
            let state = self.user(user);
            state.looking = true;
            state.forwarded_at = None;
            let pending: Vec<Item> = state.pending.drain(..).collect();
            for item in pending {
                self.unconfirmed.remove(&item.counter);
                self.park(item);
            }
        }
        let mut ready = Vec::with_capacity(work.len());
        for item in work {
            if self.users.get(&item.user).is_some_and(|s| s.looking) {
                self.park(item);
            } else {
                ready.push(item);
            }
        }
        if !lookups.is_empty() {
            self.look_up(lookups);
        }
        ready
    }

    /// The users of `work` whose route must be looked up (none is out for them yet), each with
    /// whether this node has events of its own for them (in `work`, or forwarded and not yet
    /// confirmed): else their leases are taken only if this node holds them already.
    fn lookups_needed(&self, work: &[Item]) -> Vec<(UserId, bool)> {
        let now = Instant::now();
        let own: HashSet<&UserId> = work
            .iter()
            .filter(|item| item.origin.is_none())
            .map(|item| &item.user)
            .collect();
        let mut seen = HashSet::new();
        let mut lookups = Vec::new();
        for item in work {
            if !seen.insert(&item.user) {
                continue;
            }
            let user = &item.user;
            let needed = match self.users.get(user) {
                None => Some(own.contains(user)),
                Some(state) if state.looking => None,
                Some(state) => {
                    let own = own.contains(user) || !state.pending.is_empty();
                    state.needs_route(now, || own).then_some(own)
                }
            };
            if let Some(own) = needed {
                lookups.push((user.clone(), own));
            }
        }
        lookups
    }

    /// Parks `item` until its user's lookup answers.
    fn park(&mut self, item: Item) {
        if item.origin.is_none() {
            self.parked.insert(item.counter);
        }
        self.user(&item.user).parked.push_back(item);
    }

    /// Takes in a lease lookup's answer: the user's route, and their parked events back into
    /// `work`, ahead of theirs already there (which came after them). A lookup Redis refused
    /// (not a passing failure: those are retried) loses the parked events, as a refused
    /// publish does.
    pub(crate) fn take_route(
        &mut self,
        user: &UserId,
        sent: Instant,
        answer: redis::RedisResult<redis::Value>,
        work: &mut Vec<Item>,
    ) {
        let Some(state) = self.users.get_mut(user) else {
            return;
        };
        state.looking = false;
        let parked = std::mem::take(&mut state.parked);
        // This node's own events among them are no longer parked, whatever the answer.
        let mut own = 0u64;
        for item in parked.iter().filter(|item| item.origin.is_none()) {
            self.parked.remove(&item.counter);
            own += 1;
        }
        let route = answer.and_then(|answer| {
            read_take(answer, sent).ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "the lease script answered something else",
                ))
            })
        });
        match route {
            Ok(route) => {
                if matches!(route, Route::Mine(_)) {
                    self.shared
                        .stats
                        .leases_taken
                        .fetch_add(1, Ordering::Relaxed);
                }
                state.fresh = matches!(route, Route::Other { .. });
                state.route = route;
            }
            Err(error) => {
                // Other nodes' events among them are theirs to send again: unconfirmed, they
                // go to whoever holds the lease within `CONFIRM_WITHIN`.
                state.route = Route::Unknown;
                self.shared
                    .stats
                    .events_lost
                    .fetch_add(own, Ordering::Relaxed);
                tracing::error!(%error, events = own, "redis broker: Redis refused a lease lookup; these events are lost (clients resuming past them get too_old)");
                return;
            }
        }
        unpark(parked, user, work);
    }

    /// Looks up (or takes) the leases of `users` on a task of its own, the calls all at once
    /// (a lookup retries until it is through: on a Redis Cluster whose master is down, a
    /// bound on those in flight would hold the other masters' users behind its own); each
    /// answer comes back as [`Inbound::Routed`] when it arrives.
    fn look_up(&self, users: Vec<(UserId, bool)>) {
        let shared = Arc::clone(&self.shared);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let Some(back) = shared.inbound.clone() else {
                return;
            };
            futures::stream::iter(users)
                .for_each_concurrent(None, |(user, own)| {
                    let (shared, back, conn) = (&shared, &back, conn.clone());
                    async move {
                        let (sent, answer) = take_lease(shared, conn, &user, own).await;
                        let _ = back.send(Inbound::Routed { user, sent, answer });
                    }
                })
                .await;
        });
    }
}

/// Puts `parked` (events of `user`, in order) back into `work` just before `user`'s first
/// event there (those came after them), or at its end.
pub(crate) fn unpark(parked: VecDeque<Item>, user: &UserId, work: &mut Vec<Item>) {
    if parked.is_empty() {
        return;
    }
    let at = work
        .iter()
        .position(|item| item.user == *user)
        .unwrap_or(work.len());
    work.splice(at..at, parked);
}

/// Takes or looks up `user`'s lease (the lease script), retrying with backoff while the
/// connection fails or Redis is passing through a state that refuses it (loading, busy).
/// Returns when it was last asked, and the answer.
async fn take_lease(
    shared: &Shared,
    mut conn: Conn,
    user: &UserId,
    own: bool,
) -> (Instant, redis::RedisResult<redis::Value>) {
    let Some(scripts) = &shared.scripts.leases else {
        let error = (redis::ErrorKind::Client, "the lease scripts are not loaded");
        return (Instant::now(), Err(error.into()));
    };
    let (meta, log) = meta_and_log(&shared.prefix, user);
    let mut pauses = RETRY.build();
    let mut failed_before = false;
    loop {
        let mut invocation = scripts.take.prepare_invoke();
        invocation
            .key(&meta)
            .key(&log)
            .arg(ws_bridge::Epoch::generate().as_str())
            .arg(shared.ttl_ms())
            .arg(shared.node_id.as_str())
            .arg(LEASE.as_millis() as u64)
            .arg(shared.bounds.max_events)
            .arg(&shared.prefix)
            .arg(APPLIED_WITHIN.as_millis() as u64)
            .arg(if own { "0" } else { "1" });
        let sent = Instant::now();
        match invocation.invoke_async(&mut conn).await {
            Err(error) if retryable(&error) => {
                shared.publish_up.store(false, Ordering::Relaxed);
                shared.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                if !failed_before {
                    tracing::warn!(%error, %user, "redis broker: lease lookup failed; retrying with backoff");
                }
                failed_before = true;
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
            }
            answer => {
                if failed_before && answer.is_ok() {
                    shared.publish_up.store(true, Ordering::Relaxed);
                }
                return (sent, answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(user: &str, counter: u64) -> Item {
        Item {
            origin: None,
            user: UserId::parse(user).expect("a valid user id"),
            body: Arc::from("{}"),
            counter,
            run: None,
            ends_lost_run: false,
            anew: false,
            queued_at: Instant::now(),
        }
    }

    fn order(work: &[Item]) -> Vec<(String, u64)> {
        work.iter()
            .map(|i| (i.user.as_str().to_owned(), i.counter))
            .collect()
    }

    #[test]
    fn parked_events_go_back_before_the_users_later_ones() {
        let user = UserId::parse("u-1").expect("a valid user id");
        let mut work = vec![
            item("u-2", 10),
            item("u-1", 11),
            item("u-2", 12),
            item("u-1", 13),
        ];
        unpark(
            VecDeque::from([item("u-1", 3), item("u-1", 5)]),
            &user,
            &mut work,
        );
        assert_eq!(
            order(&work),
            [
                ("u-2", 10),
                ("u-1", 3),
                ("u-1", 5),
                ("u-1", 11),
                ("u-2", 12),
                ("u-1", 13)
            ]
            .map(|(u, c)| (u.to_owned(), c))
        );
    }

    #[test]
    fn parked_events_of_a_user_absent_from_the_work_go_at_its_end() {
        let user = UserId::parse("u-3").expect("a valid user id");
        let mut work = vec![item("u-2", 10)];
        unpark(VecDeque::from([item("u-3", 4)]), &user, &mut work);
        assert_eq!(
            order(&work),
            [("u-2", 10), ("u-3", 4)].map(|(u, c)| (u.to_owned(), c))
        );
        unpark(VecDeque::new(), &user, &mut work);
        assert_eq!(work.len(), 2);
    }
}
