//! The sequencer's writes (`sequencer`): one batch's transaction of appends, forwards and the
//! frames of the appends, then, once Redis answered, the replies other nodes are owed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use core_context::UserId;
use futures::StreamExt;
use ws_bridge::Frame;
use ws_bridge::broker::Epoch;

use crate::attached::Offer;
use crate::conn::Conn;
use crate::forwarded::{Frames, Item, Replies, forward_message};
use crate::publisher::{RETRY, retryable};
use crate::routes::Route;
use crate::scripts::{log_key, meta_and_log};
use crate::seq_records::RecordChange;
use crate::sequencer::{Sequencer, Written};

impl Sequencer {
    /// One transaction for `work` (every user routed): the appends, the forwards and the
    /// appends' frames; then one pipeline with the confirmations and refusals for other nodes.
    ///
    /// On a Redis Cluster a transaction's keys must share one slot, so `work` goes in one
    /// transaction per slot (each user's keys share one), sent at once. A slot whose
    /// transaction failed with the connection (its master failing over, say) has its users'
    /// leases taken anew and its events routed again, as a whole batch's are on one Redis,
    /// while the other slots' go through ([`Written::failed`]); only when every slot failed is
    /// the error returned.
    pub(crate) async fn write(&mut self, work: &[Item]) -> redis::RedisResult<Written> {
        if !self.conn.is_cluster() {
            let plan = self.plan(work);
            let first_sent = Instant::now();
            let conn = self.conn.clone();
            let results = send(conn.clone(), &plan.pipe).await?;
            let took = first_sent.elapsed();
            let sent = Sent {
                conn,
                first_sent,
                took,
            };
            return Ok(self.settle(work, plan, results, sent).await);
        }
        let groups: Vec<Vec<Item>> = crate::calls::by_slot(true, work, |item| item.user.as_str())
            .into_iter()
            .map(|group| group.into_iter().cloned().collect())
            .collect();
        let plans: Vec<Plan> = groups.iter().map(|group| self.plan(group)).collect();
        // Each slot's pipeline to its master (its frames' `PUBLISH`es would route it
        // elsewhere).
        let conns: Vec<Conn> = groups
            .iter()
            .map(|group| self.conn.on_slot_of(group[0].user.as_str()))
            .collect();
        let first_sent = Instant::now();
        let sends: Vec<_> = plans
            .iter()
            .zip(&conns)
            .map(|(plan, conn)| send(conn.clone(), &plan.pipe))
            .collect();
        let answers: Vec<_> = futures::stream::iter(sends)
            .buffered(crate::calls::CALLS_AT_ONCE)
            .collect()
            .await;
        let took = first_sent.elapsed();
        let slots = groups.len();
        let mut written = Written::default();
        let mut failures = Vec::new();
        for (((group, plan), conn), answer) in groups.iter().zip(plans).zip(conns).zip(answers) {
            match answer {
                Ok(results) => {
                    let sent = Sent {
                        conn,
                        first_sent,
                        took,
                    };
                    let settled = self.settle(group, plan, results, sent).await;
                    written.again.extend(settled.again);
                }
                Err(error) => {
                    self.failed_slot(group, &error, &mut written.again);
                    failures.push(error);
                }
            }
        }
        if failures.len() == slots && failures.iter().all(retryable) {
            // Nothing went through: retried whole, with backoff, as on one Redis.
            return Err(failures.swap_remove(0));
        }
        written.failed = failures.into_iter().next();
        Ok(written)
    }

    /// A slot's transaction failed with `error`: its users' leases are taken anew (which
    /// fences what may still be in flight and reads what went in) and its events routed
    /// again (into `again`); or, when Redis refused the commands themselves, its events are
    /// lost, counted as a refused publish's are.
    fn failed_slot(&mut self, group: &[Item], error: &redis::RedisError, again: &mut Vec<Item>) {
        for item in group {
            self.user(&item.user).route = Route::Unknown;
        }
        if retryable(error) {
            again.extend(group.iter().cloned());
        } else {
            self.shared
                .stats
                .events_lost
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            tracing::error!(%error, events = group.len(), "redis broker: Redis refused a publish; these events are lost (clients resuming past them get too_old)");
        }
    }

    /// What Redis answered to `plan`'s transaction for `work`: the events appended are
    /// handed to this node's listeners and their records, the others routed again.
    async fn settle(
        &mut self,
        work: &[Item],
        mut plan: Plan,
        results: Vec<redis::RedisResult<redis::Value>>,
        sent: Sent,
    ) -> Written {
        let Sent {
            mut conn,
            first_sent,
            took,
        } = sent;
        let mut moved: HashSet<&UserId> = HashSet::new();
        let (mut appended, mut waited) = (0u64, 0u128);
        // Entries appended after one of their user's failed: taken out again, as their
        // events go again after it. (In one transaction an append fails at run time only for
        // its lease, or for a lost log, and then so do the user's later ones: not seen.)
        let mut undo: Vec<(String, String)> = Vec::new();
        let mut here: Vec<(&Item, &Append)> = Vec::new();
        for (k, append) in plan.appends.iter().enumerate() {
            let item = &work[append.item];
            let result = results.get(k);
            if moved.contains(&item.user) {
                if let Some(Ok(value)) = result
                    && *value != redis::Value::Nil
                {
                    let log = log_key(&self.shared.prefix, &item.user);
                    undo.push((log, format!("{}-{}", append.lease, append.seq)));
                }
                plan.again.push(item.clone());
                continue;
            }
            match result {
                Some(Ok(redis::Value::Nil)) | None => {
                    moved.insert(&item.user);
                    plan.again.push(item.clone());
                }
                Some(Ok(_)) => {
                    appended += 1;
                    here.push((item, append));
                    match &item.origin {
                        Some(origin) => plan.replies.confirm(origin, &item.user, item.counter),
                        None => {
                            waited += first_sent
                                .saturating_duration_since(item.queued_at)
                                .as_micros();
                        }
                    }
                }
                // Another node took the lease, or Redis was busy or loading: the event goes
                // again, once its user's lease is found anew.
                Some(Err(error)) if is_refused_append(error) || retryable(error) => {
                    moved.insert(&item.user);
                    plan.again.push(item.clone());
                }
                Some(Err(error)) => {
                    tracing::error!(%error, user = %item.user, "redis broker: Redis refused an append; the event is lost (clients resuming past it get too_old)");
                    self.shared
                        .stats
                        .events_lost
                        .fetch_add(1, Ordering::Relaxed);
                    moved.insert(&item.user);
                    if let Some(origin) = &item.origin {
                        plan.replies.confirm(origin, &item.user, item.counter);
                    }
                }
            }
        }
        for user in moved {
            // Taken by another node (or the log lost): found again before the next append.
            self.user(user).route = Route::Unknown;
        }
        if plan.fanout
            && let Some(Err(error)) = results.get(plan.appends.len())
        {
            tracing::error!(%error, "redis broker: a batch's frames were not sent to the nodes following its users; they fetch them from the log at their users' next frame");
        }
        self.keep_forwarded(plan.forwards);
        self.count(appended, took, waited);
        self.deliver_here(&here);
        self.send_records(&here);
        self.send_replies(&mut conn, undo, &plan.replies).await;
        Written {
            again: plan.again,
            failed: None,
        }
    }

    /// Hands the events just appended to this node's own listeners of their users, before
    /// their frames go through Redis (which brings them here again, then dropped as repeats).
    /// A frame that is not its listener's next one is left to that copy: the subscriber fills
    /// the gap before it.
    fn deliver_here(&self, appended: &[(&Item, &Append)]) {
        let followed: Vec<_> = {
            let attached = self.shared.attached.lock();
            appended
                .iter()
                .filter_map(|(item, append)| {
                    Some((
                        Arc::clone(attached.get(item.user.as_str())?),
                        *item,
                        *append,
                    ))
                })
                .collect()
        };
        for (attached, item, append) in followed {
            let frame = Arc::new(Frame {
                seq: append.seq,
                text: Arc::from(format!("{{\"seq\":{},{}", append.seq, item.rest())),
                published: Instant::now(),
            });
            match attached.offer(&append.epoch, Some(append.lease), &frame) {
                Offer::Delivered | Offer::Duplicate | Offer::Waiting => {}
                // Behind what it was sent through Redis before this node held the lease, or
                // of another lease or epoch than it knows: the log sorts it out.
                Offer::Gap | Offer::Stale | Offer::OtherEpoch => self.catch_up(&item.user),
            }
        }
    }

    /// Hands the changes the events just appended make to their runs' records to the task
    /// applying them (`seq_records`).
    fn send_records(&self, appended: &[(&Item, &Append)]) {
        let changes: Vec<RecordChange> = appended
            .iter()
            .filter_map(|(item, _)| RecordChange::of(item))
            .collect();
        if !changes.is_empty() {
            // The task ends only with the sequencer.
            let _ = self.records.send(changes);
        }
    }

    /// Counts a pipeline's appends in the broker's stats: `took` its round trip, `waited` its
    /// own events' time in the queue (µs).
    fn count(&self, appended: u64, took: Duration, waited: u128) {
        if appended == 0 {
            return;
        }
        self.shared
            .stats
            .events_published
            .fetch_add(appended, Ordering::Relaxed);
        crate::publisher::count_batch(&self.shared, took, waited);
    }

    /// Builds `work`'s pipeline: each event appended (its user's lease held here), forwarded
    /// (held elsewhere; this node's events) or refused (another node's events).
    fn plan(&mut self, work: &[Item]) -> Plan {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut plan = Plan::default();
        plan.pipe.ignore_errors();
        let cap = self.shared.bounds.max_events;
        let keep_every = Duration::from_millis(self.shared.ttl_ms() / 4);
        let prefix = self.shared.prefix.clone();
        let me = Arc::clone(&self.me);
        let now = Instant::now();
        for (i, item) in work.iter().enumerate() {
            let state = self.user(&item.user);
            match &mut state.route {
                Route::Mine(held) => {
                    if let Some(origin) = &item.origin {
                        if item.anew {
                            state.blocked.remove(origin);
                        } else if state.blocked.contains(origin) {
                            plan.replies.refuse(origin, &item.user, item.counter);
                            continue;
                        }
                    }
                    if of_reaped_run(held, item) {
                        if let Some(origin) = &item.origin {
                            plan.replies.confirm(origin, &item.user, item.counter);
                        }
                        continue;
                    }
                    let origin = item.origin.clone().unwrap_or_else(|| Arc::clone(&me));
                    let applied = held.applied.entry(Arc::clone(&origin)).or_insert(0);
                    if item.counter <= *applied {
                        // This node's own, appended by an attempt whose answer was lost: its
                        // listeners here fetch it from the log when the lease taken anew is
                        // announced, as other nodes' do.
                        if item.origin.is_some() {
                            plan.replies.confirm(&origin, &item.user, item.counter);
                        }
                        continue;
                    }
                    *applied = item.counter;
                    held.last_seq += 1;
                    if item.origin.is_none() {
                        held.written_at = now;
                    }
                    if now - held.kept_at >= keep_every {
                        held.kept_at = now;
                        plan.keep.push(item.user.clone());
                    }
                    let append = Append {
                        item: i,
                        epoch: held.epoch.clone(),
                        lease: held.lease,
                        seq: held.last_seq,
                    };
                    let entry = Entry {
                        log: log_key(&prefix, &item.user),
                        cap,
                        now_ms,
                        origin: &origin,
                    };
                    plan.append(item, append, &entry);
                }
                Route::Other { node, .. } if item.origin.is_none() => {
                    let mut item = item.clone();
                    item.anew = std::mem::take(&mut state.fresh);
                    plan.forwards
                        .entry(Arc::clone(node))
                        .or_default()
                        .push(item);
                }
                Route::Other { .. } | Route::Free { .. } => match &item.origin {
                    Some(origin) => {
                        state.blocked.insert(Arc::clone(origin));
                        plan.replies.refuse(origin, &item.user, item.counter);
                    }
                    // Found free for other nodes' events only; should its own come in the same
                    // batch, it is found again for them.
                    None => plan.again.push(item.clone()),
                },
                // Routed just before; should its route be lost meanwhile, it is routed again.
                Route::Unknown => plan.again.push(item.clone()),
            }
        }
        self.finish(&mut plan);
        plan
    }

    /// Adds to `plan`'s pipeline, after its appends, the keys' renewals and the forwards.
    fn finish(&self, plan: &mut Plan) {
        let prefix = &self.shared.prefix;
        let keep = self.shared.ttl_ms() + self.shared.ttl_ms() / 4;
        for user in &plan.keep {
            let (meta, log) = meta_and_log(prefix, user);
            plan.pipe.cmd("PEXPIRE").arg(meta).arg(keep).ignore();
            plan.pipe.cmd("PEXPIRE").arg(log).arg(keep).ignore();
        }
        for (node, items) in &plan.forwards {
            plan.pipe
                .cmd("PUBLISH")
                .arg(format!("{}:node:{node}", self.shared.prefix))
                .arg(forward_message(&self.me, items))
                .ignore();
        }
        if plan.appends.is_empty() {
            return;
        }
        if !plan.frames.is_empty() {
            // To the nodes following each user (their `fl`), read in the transaction.
            let frames = std::mem::take(&mut plan.frames);
            let fanout = plan.pipe.cmd("EVAL");
            fanout
                .arg(crate::scripts::FANOUT_SCRIPT.as_str())
                .arg(frames.users.len());
            for (user, _) in &frames.users {
                fanout.arg(meta_and_log(prefix, user).0);
            }
            fanout.arg(prefix).arg(self.me.as_ref());
            let renewed: HashSet<&UserId> = plan.keep.iter().collect();
            for (user, records) in frames.users {
                let prune = if renewed.contains(&user) { "1" } else { "0" };
                fanout.arg(records).arg(prune);
            }
            // Its answer follows the appends' (the commands between are ignored).
            plan.fanout = true;
        }
        // One transaction: an append refused as it is queued (out of memory, a script
        // running long) aborts it all, so no frame goes out without its entry. At run time
        // an append fails only for its lease (then a newer one was announced before, and its
        // frames are dropped as stale) or for a lost log (whose epoch ends).
        plan.pipe.atomic();
    }

    /// Takes `undo`'s entries out of their logs, and sends the replies other nodes are owed,
    /// retrying while the connection fails.
    /// `conn` goes to the slot of the entries' users on a Redis Cluster (`Conn::on_slot_of`).
    async fn send_replies(&self, conn: &mut Conn, undo: Vec<(String, String)>, replies: &Replies) {
        if !undo.is_empty() {
            tracing::error!(
                entries = undo.len(),
                "redis broker: appends went through after their user's earlier one failed; taken out of the log again (their frames were sent)"
            );
            // Before anything reads the log again (a new lease reads what was applied).
            let mut pipe = redis::pipe();
            for (log, id) in &undo {
                pipe.cmd("XDEL").arg(log).arg(id).ignore();
            }
            send_until_through(conn, &pipe).await;
        }
        let mut pipe = redis::pipe();
        replies.add_to(&mut pipe, &self.shared.prefix);
        if pipe.is_empty() {
            return;
        }
        // On a task of its own: the next batch's appends need not wait for this answer (the
        // connection keeps the order in which they are sent; a follower that gets a later
        // frame first fills the gap from the log).
        let mut conn = conn.clone();
        tokio::spawn(async move { send_until_through(&mut conn, &pipe).await });
    }

    /// Keeps the events just forwarded until they are confirmed.
    fn keep_forwarded(&mut self, forwards: HashMap<Arc<str>, Vec<Item>>) {
        let now = Instant::now();
        for mut item in forwards.into_values().flatten() {
            item.anew = false;
            self.shared
                .stats
                .events_forwarded
                .fetch_add(1, Ordering::Relaxed);
            self.unconfirmed.insert(item.counter);
            let state = self.user(&item.user);
            state.forwarded_at.get_or_insert(now);
            state.pending.push_back(item);
        }
    }
}

/// How a plan's transaction was sent: on which connection (its slot's on a Redis Cluster),
/// when, and how long Redis took to answer.
struct Sent {
    conn: Conn,
    first_sent: Instant,
    took: Duration,
}

/// One event appended in a pipeline.
struct Append {
    /// Its index in the batch.
    item: usize,
    epoch: Epoch,
    lease: u64,
    seq: u64,
}

/// Where and how an event is appended.
struct Entry<'a> {
    log: String,
    /// The log's length cap.
    cap: usize,
    now_ms: u64,
    /// Its origin node.
    origin: &'a str,
}

impl Plan {
    /// Appends `item` as `append` says (its `XADD`, and its frame for the transaction).
    fn append(&mut self, item: &Item, append: Append, entry: &Entry<'_>) {
        let command = self.pipe.cmd("XADD");
        command
            .arg(&entry.log)
            .arg("NOMKSTREAM")
            .arg("MAXLEN")
            .arg(entry.cap)
            .arg(format!("{}-{}", append.lease, append.seq));
        entry_fields(command, item, entry.now_ms, entry.origin);
        self.frames.add(
            &item.user,
            append.epoch.as_str(),
            append.lease,
            append.seq,
            item.rest(),
        );
        self.appends.push(append);
    }
}

/// One batch's pipeline and what it stands for.
#[derive(Default)]
struct Plan {
    pipe: redis::Pipeline,
    /// The appends, in the pipeline's order (its first commands).
    appends: Vec<Append>,
    /// This node's events for other holders.
    forwards: HashMap<Arc<str>, Vec<Item>>,
    /// Users whose keys the pipeline gives the replay age and a quarter more to live.
    keep: Vec<UserId>,
    /// The frames of the appends, sent in the same transaction.
    frames: Frames,
    /// Whether the transaction sends them (the fan-out script, answering after the appends).
    fanout: bool,
    replies: Replies,
    /// Items to route again.
    again: Vec<Item>,
}

/// Whether `item`, an event of a user whose lease `held` is, is a late one of a run a reaper
/// ended: dropped (as the publish script drops it), so the run's `node_lost` stays its last.
/// The events ending such a run pass.
fn of_reaped_run(held: &crate::routes::Held, item: &Item) -> bool {
    let late = !item.ends_lost_run
        && item
            .run
            .as_ref()
            .is_some_and(|run| held.reaped.contains(run.as_str()));
    if late {
        tracing::debug!(user = %item.user, "redis broker: a late event of a run ended by a reaper; dropped");
    }
    late
}

/// A log entry's fields: the event without its opening brace (`b`), the time (`t`), its
/// origin's counter (`c`) and its run (`r`, for a reaper; none for a change to a thread),
/// added to `append`'s last command.
fn entry_fields(append: &mut redis::Pipeline, item: &Item, now_ms: u64, origin: &str) {
    append
        .arg("b")
        .arg(item.rest())
        .arg("t")
        .arg(now_ms)
        .arg("c")
        .arg(format!("{origin}:{}", item.counter));
    if let Some(run) = &item.run {
        append.arg("r").arg(run.as_str());
    }
}

/// Whether an append was refused for its id: another node took the lease (its barrier is
/// above the id), or this node's own earlier attempt appended it.
fn is_refused_append(error: &redis::RedisError) -> bool {
    error
        .to_string()
        .contains("equal or smaller than the target stream top item")
}

/// Sends a plan's transaction, `pipe` (nothing when it has no commands).
async fn send(
    mut conn: Conn,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    pipe.query_async(&mut conn).await
}

/// Sends `pipe`, again after a pause while the connection fails.
async fn send_until_through(conn: &mut Conn, pipe: &redis::Pipeline) {
    let mut pauses = RETRY.build();
    while let Err(error) = pipe.query_async::<()>(conn).await {
        if !retryable(&error) {
            tracing::error!(%error, "redis broker: Redis refused frames or log trims; followers fetch what they miss from the log at the next frame");
            return;
        }
        tracing::warn!(%error, "redis broker: cannot send frames yet; retrying");
        tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
    }
}
