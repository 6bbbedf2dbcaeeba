//! The node's publisher: takes encoded events off a bounded queue in order and runs the
//! publish script for each, pipelined, retrying with backoff while Redis is unreachable.
//!
//! [`Broker::publish`](ws_bridge::Broker::publish) must not wait on IO, so it only queues.
//! A batch goes in one script call. A batch whose call failed with the connection (applied
//! or not, nobody knows) or for a passing state of Redis (loading, `BUSY` with another's long
//! script) is sent again whole: each event carries this node's publish
//! counter, and the script applies a counter at most once per user, so a retry never
//! duplicates an event and never reorders one node's events for a user.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use core_context::{EmitError, EncodedEvent, RunId, UserId};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::scripts::meta_and_log;
use crate::shared::Shared;

/// One event waiting to be published.
pub(crate) struct Outgoing {
    pub(crate) user: UserId,
    /// The event's JSON without its seq.
    pub(crate) body: Arc<str>,
    /// This node's publish counter for it.
    pub(crate) counter: u64,
    /// Its run (an ended run's late events are dropped by the script); `None` (sent as `""`)
    /// for a change to a thread, which belongs to no run.
    pub(crate) run: Option<RunId>,
    /// The terminal event of a run whose lease was taken: passes the run's ended mark.
    pub(crate) ends_lost_run: bool,
    /// When it was queued.
    pub(crate) queued_at: Instant,
}

/// The node's publish queue with its next publish counter: numbering and queueing under one
/// lock keeps the queue in counter order, which the publish script's retry check needs.
///
/// It holds up to `bound` events ([`RedisBrokerConfig::publish_queue`](crate::RedisBrokerConfig::publish_queue));
/// past that it refuses an event, unless the event opens, pauses or ends its run
/// ([`EncodedEvent::bookend`]), which may use a reserve of a quarter more
/// ([`reserve_for`]). The engine stops a run one of whose events was refused
/// (`events_lost`); the reserve lets that run's end, and the start of a run whose slot came
/// meanwhile, still reach its client once Redis is back.
pub(crate) struct PublishQueue {
    shared: Arc<Shared>,
    bound: usize,
    state: Mutex<(u64, mpsc::Sender<Outgoing>)>,
}

/// The room kept past a queue of `bound` events for the events that open, pause or end runs.
pub(crate) fn reserve_for(bound: usize) -> usize {
    (bound / 4).max(16)
}

impl PublishQueue {
    /// A queue of `bound` events (and [`reserve_for`] it) for the publisher, numbering from 1;
    /// the publisher's end of it.
    pub(crate) fn new(shared: Arc<Shared>, bound: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let bound = bound.max(1);
        let (sender, queue) = mpsc::channel(bound + reserve_for(bound));
        let this = Self {
            shared,
            bound,
            state: Mutex::new((1, sender)),
        };
        (this, queue)
    }

    /// Queues `event` for the publisher; see [`Broker::publish`](ws_bridge::Broker::publish).
    /// `ends_lost_run`: an event of the end a reaper writes for a run whose lease it took
    /// (which, like a run's start and end, may use the queue's reserve).
    pub(crate) fn enqueue(
        &self,
        user: &UserId,
        event: EncodedEvent,
        ends_lost_run: bool,
    ) -> Result<(), EmitError> {
        let EncodedEvent {
            run_id: run,
            json: body,
            bookend,
        } = event;
        // Read before the lock: every node's publishing task takes it.
        let queued_at = Instant::now();
        let mut state = self.state.lock();
        let (next_counter, queue) = &mut *state;
        let outgoing = Outgoing {
            user: user.clone(),
            body,
            counter: *next_counter,
            run,
            ends_lost_run,
            queued_at,
        };
        // The end a reaper writes for a lost run closes it as a terminal event does. Only the
        // publisher takes events out meanwhile, so the count can only be lower by the time
        // the event is in.
        let reserved = bookend || ends_lost_run;
        let full = !reserved && self.shared.queued.load(Ordering::Relaxed) >= self.bound;
        let queued = if full {
            Err(FULL)
        } else {
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            queue.try_send(outgoing).map_err(|error| {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                match error {
                    mpsc::error::TrySendError::Full(_) => FULL,
                    mpsc::error::TrySendError::Closed(_) => "the broker stopped",
                }
            })
        };
        if queued.is_ok() {
            *next_counter += 1;
        }
        drop(state);
        queued.map_err(|why| {
            self.shared
                .stats
                .events_rejected
                .fetch_add(1, Ordering::Relaxed);
            EmitError::Rejected(format!("broker unavailable: {why}"))
        })
    }

    /// The counter of the last event queued (0 before the first).
    pub(crate) fn last_counter(&self) -> u64 {
        self.state.lock().0 - 1
    }
}

/// Why an event was refused when the queue had no room for it.
const FULL: &str = "Redis has been unreachable long enough to fill the publish queue";

/// Events sent in one pipeline.
const BATCH: usize = 256;
/// How a batch is sent again while Redis is unreachable (the workspace's one retry policy:
/// exponential, with jitter, capped): 50 to 100 ms, doubling, up to 1 to 2 s, until it
/// is through. Shared with the subscriber's reconnects.
pub(crate) const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(1))
    .without_max_times()
    .with_jitter();

/// Runs until every sender is gone (the broker was dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut conn: Conn, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut retries = RETRY.build();
        let mut failed_before = false;
        let first_sent = Instant::now();
        loop {
            let sent = Instant::now();
            match send(&shared, &mut conn, &batch).await {
                Ok(()) => {
                    count_accepted(&shared, &batch, first_sent, sent.elapsed());
                    shared.publish_up.store(true, Ordering::Relaxed);
                    if failed_before {
                        tracing::info!(events = batch.len(), "redis broker: publishing again");
                    }
                    break;
                }
                Err(error) if retryable(&error) => {
                    shared.publish_up.store(false, Ordering::Relaxed);
                    shared.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                    if !failed_before {
                        tracing::warn!(%error, events = batch.len(), "redis broker: publish failed; retrying with backoff");
                    }
                    failed_before = true;
                    let pause = retries.next().unwrap_or(Duration::from_secs(2));
                    tokio::time::sleep(pause).await;
                }
                Err(error) => {
                    // Redis refused the commands themselves (a key of the wrong type, say):
                    // sending them again would fail again.
                    shared
                        .stats
                        .events_lost
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::error!(%error, events = batch.len(), "redis broker: Redis refused a publish; these events are lost (clients resuming past them get too_old)");
                    break;
                }
            }
        }
        shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        if let Some(last) = batch.last() {
            shared.sent_through(last.counter);
        }
        batch.clear();
    }
}

/// Counts an accepted batch in the broker's stats: `first_sent` when it was first sent, `took`
/// the accepted attempt's round trip.
fn count_accepted(shared: &Shared, batch: &[Outgoing], first_sent: Instant, took: Duration) {
    let waited: u128 = batch
        .iter()
        .map(|event| {
            first_sent
                .saturating_duration_since(event.queued_at)
                .as_micros()
        })
        .sum();
    count_batch(shared, took, waited);
}

/// Counts one batch Redis accepted: `took` its round trip, `waited` its events' time in the
/// queue before it was first sent (µs, summed).
pub(crate) fn count_batch(shared: &Shared, took: Duration, waited: u128) {
    let stats = &shared.stats;
    stats.publish_batches.fetch_add(1, Ordering::Relaxed);
    stats
        .publish_batch_micros
        .fetch_add(micros(took.as_micros()), Ordering::Relaxed);
    stats
        .publish_queue_micros
        .fetch_add(micros(waited), Ordering::Relaxed);
}

fn micros(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Whether `error` is the connection's or a passing state of the server (worth a retry)
/// rather than the command's: the client library's own classification, `BUSY` (Redis
/// running a script past its time limit answers every other script so until it ends), which
/// it does not know, and the writes Redis refuses for a while: `OOM` (at its `maxmemory`
/// with no key it may evict; memory comes back as the streams' keys expire or an operator
/// raises the limit), `NOREPLICAS` (fewer replicas in reach than `min-replicas-to-write`)
/// and `READONLY` (a master demoted to replica by a failover). Redis refuses those whole (a
/// script at its first write, never half way), so the events wait, in order, as they do
/// while Redis is unreachable, instead of being lost.
pub(crate) fn retryable(error: &redis::RedisError) -> bool {
    if error.code() == Some("EXECABORT") {
        // A transaction Redis refused as it was queued: retryable when what refused it is.
        // On a Redis Cluster that is also a slot that moved (its master failed over, and the
        // client sent the transaction where the slot was), or a cluster without a master
        // for a slot yet: the client follows neither inside a transaction.
        return error.clone().into_server_errors().is_some_and(|errors| {
            errors.iter().any(|(_, error)| {
                matches!(
                    error.code(),
                    "BUSY"
                        | "OOM"
                        | "NOREPLICAS"
                        | "READONLY"
                        | "LOADING"
                        | "TRYAGAIN"
                        | "MOVED"
                        | "ASK"
                        | "CLUSTERDOWN"
                        | "MASTERDOWN"
                )
            })
        });
    }
    matches!(error.code(), Some("BUSY" | "OOM" | "NOREPLICAS"))
        || !matches!(error.retry_method(), redis::RetryMethod::NoRetry)
}

/// Sends `batch`: in one script call on one Redis; on a Redis Cluster in one call per slot
/// (each user's events stay in order within their slot's call), the calls at once.
async fn send(shared: &Shared, conn: &mut Conn, batch: &[Outgoing]) -> redis::RedisResult<()> {
    let groups = crate::calls::by_slot(conn.is_cluster(), batch, |event| event.user.as_str());
    let calls: Vec<_> = groups
        .iter()
        .map(|events| {
            let mut conn = conn.clone();
            async move { send_one(shared, &mut conn, events).await }
        })
        .collect();
    let refused = futures::stream::iter(calls)
        .buffer_unordered(crate::calls::CALLS_AT_ONCE)
        .try_collect::<Vec<usize>>()
        .await?;
    let refused: usize = refused.iter().sum();
    shared
        .stats
        .events_published
        .fetch_add((batch.len() - refused) as u64, Ordering::Relaxed);
    Ok(())
}

/// One publish script call for `events`; how many of them Redis refused (the events of a
/// user whose keys are of another type: lost, counted and logged).
async fn send_one(
    shared: &Shared,
    conn: &mut Conn,
    events: &[&Outgoing],
) -> redis::RedisResult<usize> {
    let script = &shared.scripts.publish;
    let mut invocation = script.prepare_invoke();
    // A new candidate per attempt: a stream lost between attempts starts a new epoch.
    invocation
        .arg(ws_bridge::Epoch::generate().as_str())
        .arg(shared.ttl_ms())
        .arg(&shared.node_id)
        .arg(shared.bounds.max_events)
        .arg(&shared.prefix);
    for event in events {
        let (meta, log) = meta_and_log(&shared.prefix, &event.user);
        invocation
            .key(meta)
            .key(log)
            .arg(event.counter)
            .arg(event.body.strip_prefix('{').unwrap_or(&event.body))
            .arg(event.run.as_ref().map_or("", RunId::as_str))
            .arg(u8::from(event.ends_lost_run));
    }
    // `EVALSHA`, loading the script only where Redis lacks it (it restarted): the script's
    // text is not sent, nor hashed by Redis, with every batch.
    let (_appended, refused, why): (usize, usize, String) = invocation.invoke_async(conn).await?;
    if refused > 0 {
        shared
            .stats
            .events_lost
            .fetch_add(refused as u64, Ordering::Relaxed);
        tracing::error!(events = refused, error = %why, "redis broker: Redis refused some users' events for their keys; those events are lost, the batch's other users' went through");
    } else if !why.is_empty() {
        tracing::warn!(error = %why, "redis broker: a run's record could not be kept (its key holds another type); its events went through");
    }
    Ok(refused)
}
