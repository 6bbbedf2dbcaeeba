//! The publisher of the sequencer mode (`docs/sequencer.md`): for each user one node at a
//! time holds a lease (`seq_scripts`) and gives the seqs itself, so a batch costs Redis plain
//! pipelined commands, not a script.
//!
//! Per batch of events (this node's own, and those other nodes forwarded to it):
//! - a user whose lease this node holds gets the next seqs; one transaction (`MULTI`/`EXEC`)
//!   appends each event to the log as `<lease>-<seq>` (`XADD ... NOMKSTREAM`, refused once
//!   another node took the lease: its barrier is above every id of an older lease) and sends
//!   their frames on `<prefix>:frames`, which every node reads. An append refused as it is
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use core_context::UserId;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::forwarded::{Inbound, Item};
use crate::publisher::{Outgoing, RETRY, retryable};
use crate::routes::{APPLIED_WITHIN, IDLE, LEASE, MARGIN, Route, UserState, read_take};
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
    /// Counters of this node's forwarded events not yet confirmed.
    pub(crate) unconfirmed: BTreeSet<u64>,
    /// The highest counter of this node's events taken off the queue.
    pub(crate) taken_through: u64,
    pub(crate) renewed_at: Instant,
    /// When [`Sequencer::maintain`] last ran.
    pub(crate) maintained_at: Instant,
    /// Where the changes appended events make to their runs' records go (`seq_records`).
    pub(crate) records: mpsc::UnboundedSender<Vec<crate::seq_records::RecordChange>>,
}

/// Runs until the broker is dropped. `most_unconfirmed`: past this many forwarded events
/// awaiting their confirmations, the queue is not read (so it fills, and `publish` refuses
/// events, as when Redis is unreachable).
pub(crate) async fn run(
    shared: Arc<Shared>,
    conn: Conn,
    mut queue: mpsc::Receiver<Outgoing>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    most_unconfirmed: usize,
) {
    let mut sequencer = Sequencer {
        me: Arc::from(shared.node_id.as_str()),
        records: crate::seq_records::spawn(shared.prefix.clone(), conn.clone()),
        shared,
        conn,
        users: HashMap::new(),
        unconfirmed: BTreeSet::new(),
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
                if sequencer.unconfirmed.len() < most_unconfirmed => {
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
        while local.len() < BATCH && sequencer.unconfirmed.len() < most_unconfirmed {
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
pub(crate) struct Written {
    /// Items to route again (their user's lease moved), in order.
    pub(crate) again: Vec<Item>,
}

impl Sequencer {
    /// `user`'s state (made on first use: the id is cloned only then).
    pub(crate) fn user(&mut self, user: &UserId) -> &mut UserState {
        if !self.users.contains_key(user) {
            self.users.insert(user.clone(), UserState::default());
        }
        self.users.get_mut(user).expect("inserted above")
    }

    /// Tells `flush` and `stored` how far this node's events are through: taken off the
    /// queue and, when forwarded, confirmed.
    fn report_through(&self) {
        let through = match self.unconfirmed.first() {
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

    /// Appends, forwards or refuses each of `work`'s events, in order per user; retries what
    /// the connection failed, with backoff, until it is through.
    async fn process(&mut self, mut work: Vec<Item>) {
        let mut pauses = RETRY.build();
        let mut failed_before = false;
        while !work.is_empty() {
            let (left, outcome) = self.step(work).await;
            work = left;
            match outcome {
                Ok(()) => {
                    if failed_before {
                        tracing::info!("redis broker: publishing again");
                    }
                    self.shared.publish_up.store(true, Ordering::Relaxed);
                    failed_before = false;
                }
                Err(error) if retryable(&error) => {
                    self.shared.publish_up.store(false, Ordering::Relaxed);
                    self.shared
                        .stats
                        .publish_retries
                        .fetch_add(1, Ordering::Relaxed);
                    if !failed_before {
                        tracing::warn!(%error, events = work.len(), "redis broker: publish failed; retrying with backoff");
                    }
                    failed_before = true;
                    // What the failed pipeline did is unknown: its users' leases are taken
                    // anew, which fences what may still be in flight and reads what went in.
                    for item in &work {
                        self.user(&item.user).route = Route::Unknown;
                    }
                    tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
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

    /// One round of `work`: the events of users whose route is known are written while the
    /// others' leases are looked up, so a lookup holds up its own user's events only.
    /// Returns what is left (events to route again, those of the users looked up) and the
    /// round's error, if any (then what is left holds everything not known to be through).
    async fn step(&mut self, mut work: Vec<Item>) -> (Vec<Item>, redis::RedisResult<()>) {
        let unknown = self.unknown_routes(&mut work);
        if unknown.is_empty() {
            return match self.write(&work).await {
                Ok(written) => (written.again, Ok(())),
                Err(error) => (work, Err(error)),
            };
        }
        let looked_up: HashSet<UserId> = unknown.iter().map(|(user, _)| user.clone()).collect();
        let (waiting, ready): (Vec<Item>, Vec<Item>) = work
            .into_iter()
            .partition(|item| looked_up.contains(&item.user));
        let lookups = look_up(Arc::clone(&self.shared), self.conn.clone(), unknown);
        let (answers, written) = tokio::join!(lookups, async {
            if ready.is_empty() {
                Ok(Written { again: Vec::new() })
            } else {
                self.write(&ready).await
            }
        });
        let routed = self.take_routes(answers);
        match written {
            Ok(mut written) => {
                written.again.extend(waiting);
                (written.again, routed)
            }
            Err(error) => {
                let mut left = ready;
                left.extend(waiting);
                (left, Err(error))
            }
        }
    }

    /// The users of `work` whose route is not known, each with whether `work` holds events of
    /// this node's own for them (else their leases are taken only if this node holds them
    /// already); their unconfirmed forwarded events go first in `work`, as they may now go
    /// elsewhere.
    fn unknown_routes(&mut self, work: &mut Vec<Item>) -> Vec<(UserId, bool)> {
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut unknown = Vec::new();
        // Whether `work` holds events of this node's own for `user`: asked only of users whose
        // lease was found free, so a batch builds no set of them.
        let has_own = |user: &UserId| {
            work.iter()
                .any(|item| item.origin.is_none() && item.user == *user)
        };
        for item in work.iter() {
            if seen.insert(&item.user)
                && self
                    .users
                    .get(&item.user)
                    .is_none_or(|s| s.needs_route(now, || has_own(&item.user)))
            {
                unknown.push(item.user.clone());
            }
        }
        if unknown.is_empty() {
            return Vec::new();
        }
        let mut first = Vec::new();
        for user in &unknown {
            self.resend(user, &mut first);
        }
        if !first.is_empty() {
            first.append(work);
            *work = first;
        }
        let own = own_users(work);
        unknown
            .into_iter()
            .map(|user| {
                let mine = own.contains(&user);
                (user, mine)
            })
            .collect()
    }

    /// Takes in the lease lookups' answers (see [`look_up`]): each user's route.
    fn take_routes(&mut self, answers: Vec<redis::RedisResult<Lookup>>) -> redis::RedisResult<()> {
        let mut outcome = Ok(());
        for answer in answers {
            let (user, sent, answer) = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    outcome = Err(error);
                    continue;
                }
            };
            let Some(route) = read_take(answer, sent) else {
                outcome = Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "the lease script answered something else",
                )));
                continue;
            };
            if matches!(route, Route::Mine(_)) {
                self.shared
                    .stats
                    .leases_taken
                    .fetch_add(1, Ordering::Relaxed);
            }
            let state = self.user(&user);
            state.fresh = matches!(route, Route::Other { .. });
            state.route = route;
        }
        outcome
    }
}

/// The users of `work` with events of this node's own.
fn own_users(work: &[Item]) -> HashSet<&UserId> {
    work.iter()
        .filter(|item| item.origin.is_none())
        .map(|item| &item.user)
        .collect()
}

/// A lease lookup's answer: the user, when it was asked, and the lease script's answer.
type Lookup = (UserId, Instant, redis::Value);

/// Looks up (or takes) the leases of `users` (each with whether this node has events of its
/// own for them: else the lease is taken only if this node holds it already), the calls at
/// once.
async fn look_up(
    shared: Arc<Shared>,
    conn: Conn,
    users: Vec<(UserId, bool)>,
) -> Vec<redis::RedisResult<Lookup>> {
    let Some(scripts) = &shared.scripts.leases else {
        return Vec::new();
    };
    let calls = users.into_iter().map(|(user, own)| {
        let mut conn = conn.clone();
        let (meta, log) = meta_and_log(&shared.prefix, &user);
        let mut invocation = scripts.take.prepare_invoke();
        invocation
            .key(meta)
            .key(log)
            .arg(ws_bridge::Epoch::generate().as_str())
            .arg(shared.ttl_ms())
            .arg(shared.node_id.as_str())
            .arg(LEASE.as_millis() as u64)
            .arg(shared.bounds.max_events)
            .arg(&shared.prefix)
            .arg(APPLIED_WITHIN.as_millis() as u64)
            .arg(if own { "0" } else { "1" });
        async move {
            let sent = Instant::now();
            let answer: redis::Value = invocation.invoke_async(&mut conn).await?;
            Ok((user, sent, answer))
        }
    });
    futures::stream::iter(calls)
        .buffer_unordered(crate::conn::CALLS_AT_ONCE)
        .collect()
        .await
}

/// Renews (or gives back) `held` leases (user, lease number, whether to renew), in calls of
/// at most [`RENEWED_PER_CALL`](crate::conn::RENEWED_PER_CALL) users, and tells the publisher
/// which it still holds and which it lost.
async fn renew_leases(shared: &Shared, conn: Conn, held: Vec<(UserId, u64, bool)>) {
    let (Some(scripts), Some(publisher)) = (&shared.scripts.leases, &shared.inbound) else {
        return;
    };
    let calls: Vec<Vec<(UserId, u64, bool)>> = held
        .chunks(crate::conn::RENEWED_PER_CALL)
        .map(<[_]>::to_vec)
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
            match invocation.invoke_async::<Vec<usize>>(&mut conn).await {
                Ok(lost) => Some((sent, call, lost)),
                Err(error) => {
                    tracing::debug!(%error, "redis broker: cannot renew leases yet");
                    None
                }
            }
        }
    });
    let answers: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(crate::conn::CALLS_AT_ONCE)
        .collect()
        .await;
    for (sent, call, lost) in answers.into_iter().flatten() {
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
}
