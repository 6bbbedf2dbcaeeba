//! The publisher of the sequencer mode (`docs/sequencer.md`): for each user one node at a
//! time holds a lease (`seq_scripts`) and gives the seqs itself, so a batch costs Redis plain
//! pipelined commands, not a script.
//!
//! Per batch of events (this node's own, and those other nodes forwarded to it):
//! - a user whose lease this node holds gets the next seqs; one transaction (`MULTI`/`EXEC`)
//!   appends each event to the log as `<lease>-<seq>` (`XADD ... NOMKSTREAM`, refused once
//!   another node took the lease: its barrier is above every id of an older lease) and sends
//!   their frames to the nodes following their users (the fan-out script, `seq_scripts`, reads
//!   each user's followers in the transaction). An append refused as it is
//!   queued (for memory, or `BUSY`) aborts the whole transaction, so no frame goes out
//!   without its entry; one refused at run time is a stale lease's, whose frames followers
//!   drop (the lease taken was announced before); a follower fills from the log what it
//!   missed;
//! - a user whose lease is free, expired, or this node's is taken first (one script call);
//! - a user whose lease another node holds gets this node's events forwarded to that node
//!   (its node channel, in publish order), kept until it confirms them (`forwarded`), and sent
//!   again, to whoever holds the lease by then, when it refuses them or does not confirm them
//!   within [`CONFIRM_WITHIN`]. Each log entry names its origin's publish counter, so a
//!   sequencer (or its successor, reading the log as it takes the lease) appends an event once.
//!
//! A refused append makes the node take the user's lease again or forward to the new holder;
//! a failed pipeline (the connection: applied or not, nobody knows) is sent again after the
//! node took its users' leases anew (new numbers fence what may still be in flight, and the
//! log says what was applied). Leases last [`LEASE`], renewed every [`RENEW_EVERY`] while
//! the holder wrote its own events under them within [`IDLE`], given back when not (and
//! taken by the next node to publish for the user: a node with only other nodes' events of a
//! user does not take the lease for them, it refuses them).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use core_context::UserId;
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::forwarded::{Inbound, Item};
use crate::publisher::{Outgoing, RETRY, retryable};
use crate::routes::{IDLE, LEASE, MARGIN, Route, UserState};
use crate::scripts::meta_and_log;
use crate::shared::Shared;

/// How often held leases are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long forwarded events wait for their confirmation before they are sent again.
pub(crate) const CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// How often timeouts and renewals are looked at.
const TICK: Duration = Duration::from_millis(200);
/// Events taken off the queue at once.
const BATCH: usize = 256;

pub(crate) struct Sequencer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Conn,
    pub(crate) me: Arc<str>,
    pub(crate) users: HashMap<UserId, UserState>,
    /// The subscriber, asked to catch a user's listeners here up from the log: the holder's
    /// frames do not come back to its own node through Redis (see [`Sequencer::catch_up`]).
    pub(crate) subscriber: mpsc::UnboundedSender<crate::subscriber::Command>,
    /// Counters of this node's forwarded events not yet confirmed.
    pub(crate) unconfirmed: BTreeSet<u64>,
    /// Counters of this node's events parked while their user's lease is looked up.
    pub(crate) parked: BTreeSet<u64>,
    /// The highest counter of this node's events taken off the queue.
    pub(crate) taken_through: u64,
    pub(crate) renewed_at: Instant,
    /// When [`Sequencer::maintain`] last ran.
    pub(crate) maintained_at: Instant,
    /// Where the changes appended events make to their runs' records go (`seq_records`).
    pub(crate) records: mpsc::UnboundedSender<Vec<crate::seq_records::RecordChange>>,
}

/// Runs until the broker is dropped. `most_unconfirmed`: past this many events held (forwarded
/// and awaiting their confirmations, or parked while their user's lease is looked up), the
/// queue is not read (so it fills, and `publish` refuses
/// events, as when Redis is unreachable).
pub(crate) async fn run(
    shared: Arc<Shared>,
    conn: Conn,
    mut queue: mpsc::Receiver<Outgoing>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    most_unconfirmed: usize,
    subscriber: mpsc::UnboundedSender<crate::subscriber::Command>,
) {
    let mut sequencer = Sequencer {
        me: Arc::from(shared.node_id.as_str()),
        subscriber,
        records: crate::seq_records::spawn(shared.prefix.clone(), conn.clone()),
        shared,
        conn,
        users: HashMap::new(),
        unconfirmed: BTreeSet::new(),
        parked: BTreeSet::new(),
        taken_through: 0,
        renewed_at: Instant::now(),
        maintained_at: Instant::now(),
    };
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut local = Vec::with_capacity(BATCH);
    loop {
        let mut work = Vec::new();
        tokio::select! {
            message = inbound.recv() => match message {
                Some(message) => sequencer.take_inbound(message, &mut work),
                None => return,
            },
            taken = queue.recv_many(&mut local, BATCH),
                if sequencer.held() < most_unconfirmed => {
                if taken == 0 {
                    return;
                }
            }
            _ = ticks.tick() => {}
        }
        // Also under a load that never leaves the select to its tick.
        if sequencer.maintained_at.elapsed() >= TICK {
            sequencer.maintain(&mut work);
        }
        while let Ok(message) = inbound.try_recv() {
            sequencer.take_inbound(message, &mut work);
        }
        while local.len() < BATCH && sequencer.held() < most_unconfirmed {
            match queue.try_recv() {
                Ok(outgoing) => local.push(outgoing),
                Err(_) => break,
            }
        }
        let taken = local.len();
        for outgoing in local.drain(..) {
            sequencer.taken_through = sequencer.taken_through.max(outgoing.counter);
            work.push(Item {
                origin: None,
                user: outgoing.user,
                body: outgoing.body,
                counter: outgoing.counter,
                run: outgoing.run,
                ends_lost_run: outgoing.ends_lost_run,
                anew: false,
                queued_at: outgoing.queued_at,
            });
        }
        if !work.is_empty() {
            sequencer.process(work).await;
        }
        sequencer.shared.queued.fetch_sub(taken, Ordering::Relaxed);
        sequencer.report_through();
    }
}

/// What one pipeline did with a batch.
#[derive(Default)]
pub(crate) struct Written {
    /// Items to route again (their user's lease moved), in order.
    pub(crate) again: Vec<Item>,
    /// On a Redis Cluster, why some slots' transactions failed while others went through
    /// (their events are in `again`).
    pub(crate) failed: Option<redis::RedisError>,
}

impl Sequencer {
    /// Has the subscriber fetch from the log what `user`'s listeners on this node missed: the
    /// holder hands them its frames itself (on the transaction's answer), and the fan-out
    /// does not send them back to it, so a frame they could not take in order, or one
    /// appended by an attempt whose answer was lost, comes from the log.
    pub(crate) fn catch_up(&self, user: &UserId) {
        let _ = self.subscriber.send(crate::subscriber::Command::CatchUp {
            user: user.as_str().to_owned(),
        });
    }

    /// `user`'s state (made on first use: the id is cloned only then).
    pub(crate) fn user(&mut self, user: &UserId) -> &mut UserState {
        if !self.users.contains_key(user) {
            self.users.insert(user.clone(), UserState::default());
        }
        self.users.get_mut(user).expect("inserted above")
    }

    /// This node's events taken off the queue and not yet through: forwarded and not yet
    /// confirmed, or parked.
    fn held(&self) -> usize {
        self.unconfirmed.len() + self.parked.len()
    }

    /// Tells `flush` and `stored` how far this node's events are through: taken off the
    /// queue, not parked and, when forwarded, confirmed.
    fn report_through(&self) {
        let first_held = [self.unconfirmed.first(), self.parked.first()]
            .into_iter()
            .flatten()
            .min();
        let through = match first_held {
            Some(first) => (first - 1).min(self.taken_through),
            None => self.taken_through,
        };
        if through > self.shared.sent_through.load(Ordering::Acquire) {
            self.shared.sent_through(through);
        }
    }

    /// Another node's message: forwarded events join `work`; a confirmation lets go of the
    /// events it covers; a refusal sends the user's unconfirmed events again.
    fn take_inbound(&mut self, message: Inbound, work: &mut Vec<Item>) {
        match message {
            Inbound::Forwarded(items) => work.extend(items),
            Inbound::Confirmed(pairs) => {
                for (user, counter) in pairs {
                    let Some(state) = self.users.get_mut(&user) else {
                        continue;
                    };
                    while state.pending.front().is_some_and(|i| i.counter <= counter) {
                        if let Some(item) = state.pending.pop_front() {
                            self.unconfirmed.remove(&item.counter);
                        }
                    }
                    if state.pending.is_empty() {
                        state.forwarded_at = None;
                    }
                }
            }
            Inbound::Routed { user, sent, answer } => self.take_route(&user, sent, answer, work),
            Inbound::Refused(users) => {
                for user in users {
                    self.resend(&user, work);
                }
            }
            Inbound::Renewed { sent, kept, lost } => {
                for (user, lease) in kept {
                    if let Some(UserState {
                        route: Route::Mine(held),
                        ..
                    }) = self.users.get_mut(&user)
                        && held.lease == lease
                    {
                        held.valid_until = held.valid_until.max(sent + LEASE - MARGIN);
                    }
                }
                for (user, lease) in lost {
                    if let Some(state) = self.users.get_mut(&user)
                        && matches!(&state.route, Route::Mine(held) if held.lease == lease)
                    {
                        state.route = Route::Unknown;
                    }
                }
            }
        }
    }

    /// Sends `user`'s unconfirmed events again, after finding who holds their lease now.
    fn resend(&mut self, user: &UserId, work: &mut Vec<Item>) {
        let Some(state) = self.users.get_mut(user) else {
            return;
        };
        if !matches!(state.route, Route::Mine(_)) {
            state.route = Route::Unknown;
        }
        state.forwarded_at = None;
        for item in state.pending.drain(..) {
            self.unconfirmed.remove(&item.counter);
            work.push(item);
        }
    }

    /// Sends again what waited too long for a confirmation, and renews or gives back leases.
    fn maintain(&mut self, work: &mut Vec<Item>) {
        let now = Instant::now();
        self.maintained_at = now;
        let late: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, s)| s.forwarded_at.is_some_and(|at| now - at >= CONFIRM_WITHIN))
            .map(|(user, _)| user.clone())
            .collect();
        for user in late {
            tracing::debug!(%user, "redis broker: forwarded events unconfirmed; routing them again");
            self.resend(&user, work);
        }
        if now - self.renewed_at >= RENEW_EVERY {
            self.renewed_at = now;
            self.renew(now);
            self.users.retain(|_, state| {
                !state.pending.is_empty()
                    || !state.blocked.is_empty()
                    || state.looking
                    || match &state.route {
                        Route::Unknown => false,
                        Route::Other { until, .. } | Route::Free { until } => *until > now,
                        Route::Mine(_) => true,
                    }
            });
        }
    }

    /// Renews the leases this node wrote its own events under within [`IDLE`] and gives back
    /// the others, on a task of its own (the answer comes back as [`Inbound::Renewed`]): the
    /// batches go on meanwhile.
    fn renew(&mut self, now: Instant) {
        let mut held: Vec<(UserId, u64, bool)> = Vec::new();
        for (user, state) in &mut self.users {
            if let Route::Mine(lease) = &state.route {
                let renew = now - lease.written_at < IDLE;
                held.push((user.clone(), lease.lease, renew));
                if !renew {
                    state.route = Route::Unknown;
                }
            }
        }
        if held.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let conn = self.conn.clone();
        tokio::spawn(async move { renew_leases(&shared, conn, held).await });
    }

    /// Notes a publish of `events` that the connection failed: the broker is not up, the
    /// retry counted, and `what` logged once per outage (`failed_before`).
    fn publish_failed(
        &self,
        error: &redis::RedisError,
        events: usize,
        failed_before: &mut bool,
        what: &str,
    ) {
        self.shared.publish_up.store(false, Ordering::Relaxed);
        self.shared
            .stats
            .publish_retries
            .fetch_add(1, Ordering::Relaxed);
        if !*failed_before {
            tracing::warn!(%error, events, "{what}");
        }
        *failed_before = true;
    }

    /// Appends, forwards or refuses each of `work`'s events, in order per user (parking those
    /// of users whose lease is being looked up: `seq_lookup`); retries what the connection
    /// failed, with backoff, until it is through or parked.
    async fn process(&mut self, work: Vec<Item>) {
        let mut pauses = RETRY.build();
        let mut failed_before = false;
        let mut work = self.route_or_park(work);
        while !work.is_empty() {
            match self.write(&work).await {
                Ok(Written {
                    again,
                    failed: Some(error),
                }) => {
                    // Some slots failed, others went through: the failed ones' users are
                    // looked up anew (their lookups retry with backoff).
                    let what = "redis broker: publish failed on part of the cluster; retrying";
                    self.publish_failed(&error, again.len(), &mut failed_before, what);
                    work = self.route_or_park(again);
                }
                Ok(Written {
                    again,
                    failed: None,
                }) => {
                    if failed_before {
                        tracing::info!("redis broker: publishing again");
                    }
                    self.shared.publish_up.store(true, Ordering::Relaxed);
                    failed_before = false;
                    work = self.route_or_park(again);
                }
                Err(error) if retryable(&error) => {
                    let what = "redis broker: publish failed; retrying with backoff";
                    self.publish_failed(&error, work.len(), &mut failed_before, what);
                    // What the failed pipeline did is unknown: its users' leases are taken
                    // anew, which fences what may still be in flight and reads what went in.
                    for item in &work {
                        self.user(&item.user).route = Route::Unknown;
                    }
                    tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
                    work = self.route_or_park(work);
                }
                Err(error) => {
                    self.shared
                        .stats
                        .events_lost
                        .fetch_add(work.len() as u64, Ordering::Relaxed);
                    tracing::error!(%error, events = work.len(), "redis broker: Redis refused a publish; these events are lost (clients resuming past them get too_old)");
                    for item in &work {
                        self.user(&item.user).route = Route::Unknown;
                    }
                    return;
                }
            }
        }
    }
}

/// Renews (or gives back) `held` leases (user, lease number, whether to renew), in calls of
/// at most [`RENEWED_PER_CALL`](crate::calls::RENEWED_PER_CALL) users, and tells the publisher
/// which it still holds and which it lost.
async fn renew_leases(shared: &Shared, conn: Conn, held: Vec<(UserId, u64, bool)>) {
    let (Some(scripts), Some(publisher)) = (&shared.scripts.leases, &shared.inbound) else {
        return;
    };
    let calls: Vec<Vec<(UserId, u64, bool)>> = crate::calls::in_calls(
        conn.is_cluster(),
        &held,
        |(user, ..)| user.as_str(),
        crate::calls::RENEWED_PER_CALL,
    )
    .into_iter()
    .map(|call| call.into_iter().cloned().collect())
    .collect();
    let calls = calls.into_iter().map(|call| {
        let mut conn = conn.clone();
        async move {
            let mut invocation = scripts.renew.prepare_invoke();
            invocation
                .arg(shared.node_id.as_str())
                .arg(LEASE.as_millis() as u64);
            for (user, lease, renew) in &call {
                let (meta, _) = meta_and_log(&shared.prefix, user);
                invocation.key(meta).arg(*lease).arg(u8::from(*renew));
            }
            let sent = Instant::now();
            let lost = match invocation.invoke_async::<Vec<usize>>(&mut conn).await {
                Ok(lost) => lost,
                Err(error) => {
                    tracing::debug!(%error, "redis broker: cannot renew leases yet");
                    return;
                }
            };
            let (mut kept, mut gone) = (Vec::new(), Vec::new());
            for (i, (user, lease, renew)) in call.iter().enumerate() {
                if lost.contains(&i) {
                    gone.push((user.clone(), *lease));
                } else if *renew {
                    kept.push((user.clone(), *lease));
                }
            }
            let _ = publisher.send(Inbound::Renewed {
                sent,
                kept,
                lost: gone,
            });
        }
    });
    // All at once, each answer told as it comes: a master that does not answer (a Redis
    // Cluster's, down until its replica takes over) holds up none of the others' leases.
    futures::future::join_all(calls).await;
}
