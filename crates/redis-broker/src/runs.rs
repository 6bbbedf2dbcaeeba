//! [`ClusterRuns`]: users' runs across nodes: a cluster-wide per-user run limit and queue
//! held by leases that expire, `cancel_run` routed to the node executing the run, and the
//! runs of a node that died ended for their users by a surviving node.
//!
//! Keys (beside the streams' of the `scripts` module):
//! - `<prefix>:{<user>}:slots`, a sorted set: the user's held slots, scored by expiry (ms);
//! - `<prefix>:{<user>}:threads`, a hash: for each thread kept to one run at a time, the
//!   lease and run holding a slot in it (valid while that lease is in the slots);
//! - `<prefix>:{<user>}:qthreads`, a hash: each queued claim's thread, whether it queued to
//!   the front of its thread, and its run;
//! - `<prefix>:{<user>}:queue`, a sorted set: the user's claims waiting for a slot, scored by
//!   arrival (ms), and `<prefix>:{<user>}:queued`, the same claims scored by expiry (a
//!   waiting claim renews its place each time it asks again);
//! - `<prefix>:{<user>}:leases`, a sorted set: the user's held slots and queue places, scored
//!   by expiry, for the reaper;
//! - `<prefix>:{<user>}:lease:<id>`, a hash: a held slot's user, node, run id, thread and
//!   agent (what a terminal event for its run needs);
//! - `<prefix>:reap`, a sorted set, the reapers' index: users scored by when a lease of
//!   theirs may expire next (set after each claim, lowered only; a reaper visits the users
//!   whose time has come and sets their next one, or removes them);
//! - `<prefix>:{<user>}:run:<run id>`, a hash: the run's user, node and lease, from the moment its
//!   claim holds a slot or a place (for `cancel_run`, queued runs too), and `started` once
//!   its `agent_started` is in its user's stream, `open:<tool_call_id>` (the tool's name)
//!   for each of its tool calls begun and not completed there, and `ended` once its terminal
//!   event is there (the publish script keeps them), so that a reaper emits the start if it
//!   never came, closes the open calls, and says nothing of a run that had already ended;
//! - `<prefix>:{<user>}:ended:<run id>`: the run was ended by a reaper; its node's later events are
//!   dropped, so the `node_lost` terminal event stays the run's last;
//! - `<prefix>:node:<node id>`, a pub/sub channel: `cancel` commands for the node's runs,
//!   and `slot\n<user>\n<lease>…` when a slot or a thread of the user's was given back and
//!   the node holds one of the first places in their queue (those claims then ask again at
//!   once).
//!
//! A node renews its leases every third of their TTL. A lease not renewed in time (its node
//! died or lost Redis for that long) is taken by exactly one surviving node's reaper, which
//! emits the run's terminal `agent_error` (code [`NODE_LOST`]). A node that finds it lost a
//! lease of a run it still executes cancels that run; what the run emits meanwhile is dropped.
//!
//! Every script's keys are one user's (the user's hash tag, so one slot of a Redis Cluster);
//! the reapers' index is a key of its own, changed by single commands and one small script.
//! A node that dies between a claim and its index entry leaves a lease no reaper visits
//! until that user claims again or another lease of theirs is renewed (renewals re-add a
//! missing entry).

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;

use core_context::multitask::ThreadRule;
use core_context::{RunId, RunScope, ThreadId, UserId};
use redis::Script;
use ws_bridge::broker::BrokerError;

use crate::node_requests::USER_CANCELLED;
use crate::publisher::PublishQueue;
use crate::run_scripts::{
    CLAIM, HOLD, NAME_PLACES, REAP, RELEASE, RENEW, RUNNER, SETTLE_INDEX, UNHOLD, take_prelude,
};
use crate::shared::{Shared, SteerRequest, broker_error};
use crate::slot_waiters::SlotWaiting;

mod leases;

/// A claim on one of a user's run slots in the cluster: a slot held, or a place in the
/// user's queue. Give it back with [`ClusterRuns::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    id: String,
    user: UserId,
    run: RunId,
}

/// What [`ClusterRuns::claim`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// The slot is held: the run may start.
    Running,
    /// The claim waits in the user's queue, with `position` claims ahead of it; claim again
    /// (with the same lease) to renew the place and take a slot once it is its turn.
    Queued {
        /// Claims ahead of this one (of its thread, for a claim kept one run per thread).
        position: usize,
        /// The run of its thread holding a slot, if any.
        behind: Option<RunId>,
    },
    /// The claim's thread has a run (`run`, running or queued) and the claim said
    /// [`ThreadRule::Reject`]: refused.
    ThreadBusy {
        /// The thread's run.
        run: RunId,
    },
    /// A claim asking again whose place a reaper took (its node could not renew it for a
    /// whole TTL): its run was ended for its user and must not start.
    Lost,
    /// The user has `max running` runs and `max queued` waiting: refused.
    Full {
        /// The user's runs running, all nodes together.
        running: usize,
        /// The user's runs waiting, all nodes together.
        queued: usize,
    },
}

/// A user's limits in the cluster: runs at once, and runs waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Runs of one user executing at once, all nodes together.
    pub max_running: usize,
    /// Runs of one user waiting for a slot, all nodes together.
    pub max_queued: usize,
}

/// Users' runs across the nodes sharing one Redis; see the module documentation.
#[derive(Clone)]
pub struct ClusterRuns {
    shared: Arc<Shared>,
    /// Where the end of a lost run is published.
    publish: Arc<PublishQueue>,
    lease_ttl: Duration,
    claim: Arc<Script>,
    release: Arc<Script>,
    runner: Arc<Script>,
    hold: Arc<Script>,
    unhold: Arc<Script>,
    renew: Arc<Script>,
    reap: Arc<Script>,
    settle_index: Arc<Script>,
}

impl Lease {
    /// A claim for `user`'s run `run` (a new one: claim it with [`ClusterRuns::claim`]).
    pub fn new(user: UserId, run: RunId) -> Self {
        Self {
            id: ulid::Ulid::new().to_string(),
            user,
            run,
        }
    }

    /// Whose run slot it is.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The run it is for.
    pub fn run(&self) -> &RunId {
        &self.run
    }
}

impl std::fmt::Debug for ClusterRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRuns")
            .field("node_id", &self.shared.node_id)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl ClusterRuns {
    pub(crate) fn new(
        shared: Arc<Shared>,
        publish: Arc<PublishQueue>,
        lease_ttl: Duration,
    ) -> Self {
        let take = take_prelude(shared.sequencer_channels.is_some());
        Self {
            shared,
            publish,
            lease_ttl,
            claim: Arc::new(Script::new(CLAIM)),
            release: Arc::new(Script::new(&format!("{NAME_PLACES}{RELEASE}"))),
            runner: Arc::new(Script::new(RUNNER)),
            hold: Arc::new(Script::new(HOLD)),
            unhold: Arc::new(Script::new(&format!("{NAME_PLACES}{UNHOLD}"))),
            renew: Arc::new(Script::new(&format!("{take}{RENEW}"))),
            reap: Arc::new(Script::new(&format!("{take}{REAP}"))),
            settle_index: Arc::new(Script::new(SETTLE_INDEX)),
        }
    }

    /// `<prefix>:{<user>}`, the base of the user's keys.
    fn base(&self, user: &UserId) -> String {
        crate::scripts::user_base(&self.shared.prefix, user)
    }

    /// `<prefix>:{<user>}:<rest>`.
    fn user_key(&self, user: &UserId, rest: &str) -> String {
        format!("{}:{rest}", self.base(user))
    }

    fn slots_key(&self, user: &UserId) -> String {
        self.user_key(user, "slots")
    }

    /// The reapers' index.
    fn index_key(&self) -> String {
        format!("{}:reap", self.shared.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// How often [`renew`](Self::renew) and [`reap`](Self::reap) should run.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn queue_keys(&self, user: &UserId) -> [String; 2] {
        let user = user.as_str();
        let prefix = &self.shared.prefix;
        [
            format!("{prefix}:{{{user}}}:queue"),
            format!("{prefix}:{{{user}}}:queued"),
        ]
    }

    /// The user's serialized threads and queued claims' threads.
    fn thread_keys(&self, user: &UserId) -> [String; 2] {
        let user = user.as_str();
        let prefix = &self.shared.prefix;
        [
            format!("{prefix}:{{{user}}}:threads"),
            format!("{prefix}:{{{user}}}:qthreads"),
        ]
    }

    /// Claims a run slot for `lease`'s run (`scope`) within `limits` across the cluster: held
    /// at once, or a place in the user's queue (claim again with the same lease to renew the
    /// place, at least once per lease TTL, and to take a slot when it is its turn), or
    /// refused. A claim that holds a slot or a place is where `cancel_run` finds its run; a
    /// held slot is renewed with [`renew`](Self::renew), a place by asking again (`again`),
    /// and either's run is ended by a reaper if its node stops renewing it (a queued run's
    /// `agent_started`, saying `started_with`, then its `agent_error`). `rule` keeps the
    /// run's thread to one run at a time (see [`ThreadRule`]).
    pub async fn claim(
        &self,
        lease: &Lease,
        scope: &RunScope,
        limits: SlotLimits,
        started_with: &str,
        again: bool,
        rule: ThreadRule,
    ) -> Result<ClaimState, BrokerError> {
        let [queue, queued] = self.queue_keys(&lease.user);
        let [threads, qthreads] = self.thread_keys(&lease.user);
        let answer: Vec<String> = self
            .claim
            .key(self.slots_key(&lease.user))
            .key(self.user_key(&lease.user, "leases"))
            .key(self.user_key(&lease.user, &format!("lease:{}", lease.id)))
            .key(queue)
            .key(queued)
            .key(self.user_key(&lease.user, &format!("run:{}", lease.run)))
            .key(self.user_key(&lease.user, &format!("ended:{}", lease.run)))
            .key(threads)
            .key(qthreads)
            .arg(&lease.id)
            .arg(self.ttl_ms())
            .arg(limits.max_running)
            .arg(limits.max_queued)
            .arg(lease.user.as_str())
            .arg(&self.shared.node_id)
            .arg(lease.run.as_str())
            .arg(scope.thread_id.as_str())
            .arg(&*scope.agent_name)
            .arg(started_with)
            .arg(u8::from(again))
            .arg(rule.name())
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        let state = parse_claim(&answer)
            .ok_or_else(|| BrokerError(format!("Redis: the claim script answered {answer:?}")))?;
        if matches!(state, ClaimState::Running | ClaimState::Queued { .. }) {
            // Lowered only: the user's earliest lease decides when a reaper looks.
            redis::cmd("ZADD")
                .arg(self.index_key())
                .arg("LT")
                .arg(now_ms() + self.ttl_ms())
                .arg(lease.user.as_str())
                .exec_async(&mut self.shared.conn.clone())
                .await
                .map_err(|e| broker_error(&e))?;
        }
        Ok(state)
    }

    /// Gives `lease` back: its slot or its place in the queue (its run ended, was cancelled
    /// while queued, or never started), and its run's record. Tried again while Redis is out
    /// of reach (the workspace's retry policy), for as long as the lease lives: a lease left
    /// to expire is ended by a reaper, which would tell the user of a run that was refused (a
    /// claim whose answer was lost), never started, or is paused. `Err` once it would
    /// outlive the lease.
    ///
    /// Once through, the user's queued claims that may take a slot now (with `max_running`
    /// the user's limit) are woken, on this node and on the others holding them.
    pub async fn release(&self, lease: &Lease, max_running: usize) -> Result<(), BrokerError> {
        let deadline = std::time::Instant::now() + self.lease_ttl;
        let mut pauses = crate::publisher::RETRY.build();
        loop {
            match self.release_once(lease, max_running).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(1));
                    if std::time::Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One attempt of [`release`](Self::release).
    async fn release_once(&self, lease: &Lease, max_running: usize) -> Result<(), BrokerError> {
        let [queue, queued] = self.queue_keys(&lease.user);
        let [threads, qthreads] = self.thread_keys(&lease.user);
        let mine: Vec<String> = self
            .release
            .key(self.slots_key(&lease.user))
            .key(queue)
            .key(queued)
            .key(self.user_key(&lease.user, "leases"))
            .key(self.user_key(&lease.user, &format!("lease:{}", lease.id)))
            .key(self.user_key(&lease.user, &format!("run:{}", lease.run)))
            .key(threads)
            .key(qthreads)
            .arg(&lease.id)
            .arg(&self.shared.node_id)
            .arg(format!("{}:node:", self.shared.prefix))
            .arg(lease.user.as_str())
            .arg(max_running)
            .arg(self.user_key(&lease.user, "lease:"))
            .invoke_async::<Vec<String>>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        self.shared.slot_waiters.wake(&lease.user, &mine);
        Ok(())
    }

    /// Registers `lease`'s claim, queued on this node, until the guard is dropped: woken when
    /// a slot given back here or on another node may be its (see [`release`](Self::release)),
    /// or a thread of its user's is freed from a paused run on any node
    /// ([`hold_thread`](Self::hold_thread)).
    pub fn slot_waiting(&self, lease: &Lease) -> SlotWaiting {
        self.shared.slot_waiters.waiting(&lease.user, &lease.id)
    }

    /// The run of `user`'s `thread` holding a slot now (kept one run per thread), with its
    /// agent's name; `None` when no run holds the thread.
    pub async fn thread_runner(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, String)>, BrokerError> {
        let [threads, _] = self.thread_keys(user);
        let found: Option<(String, String)> = self
            .runner
            .key(threads)
            .key(self.slots_key(user))
            .arg(thread.as_str())
            .arg(self.base(user))
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        Ok(found.and_then(|(run, agent)| RunId::parse(&run).ok().map(|run| (run, agent))))
    }

    /// Keeps `thread` for `run` while the run is paused for approvals (see
    /// `RunSlots::hold_thread`), or (`hold` false) frees it from the paused run, which wakes
    /// the claims holding the user's first 16 places in the queue, on this node and on the
    /// others.
    pub async fn hold_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        run: &RunId,
        hold: bool,
    ) -> Result<(), BrokerError> {
        let [threads, _] = self.thread_keys(user);
        if hold {
            return self
                .hold
                .key(threads)
                .arg(thread.as_str())
                .arg(run.as_str())
                .invoke_async::<()>(&mut self.shared.conn.clone())
                .await
                .map_err(|e| broker_error(&e));
        }
        let [queue, _] = self.queue_keys(user);
        let mine: Vec<String> = self
            .unhold
            .key(threads)
            .key(queue)
            .arg(thread.as_str())
            .arg(run.as_str())
            .arg(&self.shared.node_id)
            .arg(format!("{}:node:", self.shared.prefix))
            .arg(user.as_str())
            .arg(self.user_key(user, "lease:"))
            .invoke_async::<Vec<String>>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        self.shared.slot_waiters.wake(user, &mine);
        Ok(())
    }

    /// Sends `steer` to the node executing the run `request` names (the node hands the
    /// message to the run, or starts it as a run of its own). False when no node executes
    /// it for this user, or no node listened.
    pub async fn steer(&self, request: &SteerRequest) -> Result<bool, BrokerError> {
        let mut conn = self.shared.conn.clone();
        let (owner, node): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.user_key(&request.user, &format!("run:{}", request.run_id)))
            .arg("user")
            .arg("node")
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        let (Some(owner), Some(node)) = (owner, node) else {
            return Ok(false);
        };
        if owner != request.user.as_str() {
            return Ok(false);
        }
        let payload = serde_json::to_string(request)
            .map_err(|e| BrokerError(format!("a steer request could not be encoded: {e}")))?;
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(format!("{}:node:{node}", self.shared.prefix))
            .arg(format!("steer\n{payload}"))
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        Ok(receivers > 0)
    }

    /// A client began (`true`) or stopped following `user`'s run `run` from this node (see
    /// `followers`); nothing once the run has ended.
    pub async fn follow(&self, user: &UserId, run: &RunId, began: bool) -> Result<(), BrokerError> {
        let record = self.user_key(user, &format!("run:{run}"));
        crate::followers::follow(&mut self.shared.conn.clone(), record, began).await
    }

    /// Whether a client follows `user`'s run `run` from any node now.
    pub async fn followed(&self, user: &UserId, run: &RunId) -> Result<bool, BrokerError> {
        let record = self.user_key(user, &format!("run:{run}"));
        crate::followers::followed(&mut self.shared.conn.clone(), record).await
    }

    /// Sends `cancel_run` to the node executing `user`'s run `run`, which cancels it with
    /// `reason` (one line; its `agent_cancelled` says it). False when no node runs it for this
    /// user (another user's run and a missing one alike).
    pub async fn cancel(
        &self,
        user: &UserId,
        run: &RunId,
        reason: &str,
    ) -> Result<bool, BrokerError> {
        let mut conn = self.shared.conn.clone();
        let (owner, node): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.user_key(user, &format!("run:{run}")))
            .arg("user")
            .arg("node")
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        let (Some(owner), Some(node)) = (owner, node) else {
            return Ok(false);
        };
        if owner != user.as_str() {
            return Ok(false);
        }
        let channel = format!("{}:node:{node}", self.shared.prefix);
        let _receivers: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(if reason == USER_CANCELLED {
                // What nodes of the previous version read too.
                format!("cancel\n{}\n{run}", user.as_str())
            } else {
                format!(
                    "cancel\n{}\n{run}\n{}",
                    user.as_str(),
                    reason.replace('\n', " ")
                )
            })
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        Ok(true)
    }
}

/// Milliseconds since the Unix epoch, by this node's clock (the reapers' index: a node a
/// little ahead or behind Redis only moves a reaper's visit by as much).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Reads the claim script's answer (see `run_scripts::CLAIM`).
fn parse_claim(answer: &[String]) -> Option<ClaimState> {
    let number = |text: &String| text.parse::<usize>().ok();
    let run = |text: &String| {
        (!text.is_empty())
            .then(|| RunId::parse(text).ok())
            .flatten()
    };
    Some(match answer {
        [code] if code == "1" => ClaimState::Running,
        [code] if code == "3" => ClaimState::Lost,
        [code, position, behind] if code == "2" => ClaimState::Queued {
            position: number(position)?,
            behind: run(behind),
        },
        [code, running, queued] if code == "0" => ClaimState::Full {
            running: number(running)?,
            queued: number(queued)?,
        },
        [code, busy] if code == "4" => ClaimState::ThreadBusy { run: run(busy)? },
        _ => return None,
    })
}
