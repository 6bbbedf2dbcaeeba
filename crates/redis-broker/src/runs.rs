//! [`ClusterRuns`]: users' runs across nodes: a cluster-wide per-user run limit and queue
//! held by leases that expire, `cancel_run` routed to the node executing the run, and the
//! runs of a node that died ended for their users by a surviving node.
//!
//! Keys (beside the streams' of the `scripts` module):
//! - `<prefix>:{<user>}:slots`, a sorted set: the user's held slots, scored by expiry (ms);
//! - `<prefix>:{<user>}:queue`, a sorted set: the user's claims waiting for a slot, scored by
//!   arrival (ms), and `<prefix>:{<user>}:queued`, the same claims scored by expiry (a
//!   waiting claim renews its place each time it asks again);
//! - `<prefix>:leases`, a sorted set: every held slot, scored by expiry, for the reaper;
//! - `<prefix>:lease:<id>`, a hash: a held slot's user, node, run id, thread and agent (what a
//!   terminal event for its run needs);
//! - `<prefix>:run:<run id>`, a hash: the run's user, node and lease, from the moment its
//!   claim holds a slot or a place (for `cancel_run`, queued runs too);
//! - `<prefix>:ended:<run id>`: the run was ended by a reaper; its node's later events are
//!   dropped, so the `node_lost` terminal event stays the run's last;
//! - `<prefix>:node:<node id>`, a pub/sub channel: `cancel` commands for the node's runs.
//!
//! A node renews its leases every third of their TTL. A lease not renewed in time (its node
//! died or lost Redis for that long) is taken by exactly one surviving node's reaper, which
//! emits the run's terminal `agent_error` (code [`NODE_LOST`]). A node that finds it lost a
//! lease of a run it still executes cancels that run; what the run emits meanwhile is dropped.
//!
//! These scripts name keys they build themselves, so they need a single Redis (or a cluster
//! where these keys share a slot); the streams' scripts work on a cluster too.

use std::sync::Arc;
use std::time::Duration;

use core_context::{
    AgentEvent, EmitError, EncodedEvent, EventKind, RunId, RunScope, ThreadId, UserId,
};
use redis::Script;
use ws_bridge::broker::BrokerError;

use crate::publisher::PublishQueue;
use crate::shared::{CancelRequest, Shared, broker_error};

/// The `agent_error` code of a run whose node stopped renewing its lease.
pub const NODE_LOST: &str = "node_lost";

/// Claims a run slot or a place in the user's queue. `KEYS[1]` the user's slots (scored by
/// expiry), `KEYS[2]` all leases (slots and places, scored by expiry, for the reaper),
/// `KEYS[3]` this claim's lease hash, `KEYS[4]` the user's queue (scored by arrival, strictly
/// increasing), `KEYS[5]` the queue's expiries, `KEYS[6]` the run's hash, `KEYS[7]` the run's
/// ended mark; `ARGV[1]` the claim's id, `ARGV[2]` TTL ms, `ARGV[3]` max running,
/// `ARGV[4]` max queued, `ARGV[5]` user, `ARGV[6]` node, `ARGV[7]` run, `ARGV[8]` thread,
/// `ARGV[9]` agent, `ARGV[10]` the run's message, `ARGV[11]` 1 when a queued claim asks again.
///
/// A claim already in the queue (a waiter asking again) takes a slot when fewer claims are
/// ahead of it than slots are free, else renews its place; a new claim does the same as if
/// it stood at the end of the queue, and queues while the queue has room. Slots and places
/// not renewed within their TTL (their node died) are dropped first; a reaper ends their
/// runs. A waiter whose place a reaper took (its run ended) is told so.
/// Returns `{1}` running, `{2, position}` queued, `{0, running, queued}` refused, `{3}` lost.
const CLAIM: &str = r"
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then return {3} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local expiry = now + ttl
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, id in ipairs(dead) do redis.call('ZREM', KEYS[4], id) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now) end
local running = redis.call('ZCARD', KEYS[1])
local queued = redis.call('ZCARD', KEYS[4])
local rank = redis.call('ZRANK', KEYS[4], ARGV[1])
local ahead = rank or queued
local function record(is_queued)
  redis.call('ZADD', KEYS[2], expiry, ARGV[1])
  redis.call('HSET', KEYS[3], 'user', ARGV[5], 'node', ARGV[6], 'run', ARGV[7],
    'thread', ARGV[8], 'agent', ARGV[9], 'queued', is_queued, 'message', ARGV[10])
  redis.call('HSET', KEYS[6], 'user', ARGV[5], 'node', ARGV[6], 'lease', ARGV[1])
  redis.call('PEXPIRE', KEYS[6], 86400000)
end
if ahead < tonumber(ARGV[3]) - running then
  if rank then
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  record('0')
  return {1}
end
if rank then
  redis.call('ZADD', KEYS[5], 'XX', expiry, ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
  return {2, rank}
end
if queued >= tonumber(ARGV[4]) then return {0, running, queued} end
-- Arrival order, strictly after the last place (several may arrive in one millisecond).
local arrival = now
local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= arrival then arrival = tonumber(last[2]) + 1 end
redis.call('ZADD', KEYS[4], arrival, ARGV[1])
redis.call('ZADD', KEYS[5], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('PEXPIRE', KEYS[5], ttl)
record('1')
return {2, queued}
";

/// Takes a lease off the books and marks its run ended for a day (`<prefix>:ended:<run>`:
/// the publish script drops the run's later events, so its `node_lost` stays its last).
/// Returns `{user, run, thread, agent, queued, message}` for a lease that names its run, else
/// nil (`queued`: '1' for a place in the queue, whose run never started).
const TAKE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function take(prefix, leases, id)
  redis.call('ZREM', leases, id)
  local lease = prefix .. ':lease:' .. id
  local f = redis.call('HMGET', lease, 'user', 'run', 'thread', 'agent', 'queued', 'message')
  redis.call('DEL', lease)
  if f[1] and f[2] then
    redis.call('DEL', prefix .. ':run:' .. f[2])
    redis.call('SET', prefix .. ':ended:' .. f[2], 1, 'PX', 86400000)
    return {f[1], f[2], f[3], f[4], f[5] or '0', f[6] or ''}
  end
  return nil
end
";

/// Renews leases: `KEYS[1]` all leases, `ARGV[1]` TTL ms, `ARGV[2]` the key prefix, then
/// pairs of (user slots key, lease id). A lease already expired is not renewed (a reaper may
/// be ending its run): it is taken here instead. Returns `{lost ids, taken runs}`: the ids no
/// longer held, and the runs of those this call took (the caller ends them).
const RENEW: &str = r"
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local lost, taken = {}, {}
for i = 3, #ARGV, 2 do
  local slots, id = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if not score then
    table.insert(lost, id)
  elseif tonumber(score) <= now then
    table.insert(lost, id)
    local run = take(ARGV[2], KEYS[1], id)
    if run then table.insert(taken, run) end
  else
    redis.call('ZADD', KEYS[1], 'XX', expiry, id)
    redis.call('ZADD', slots, 'XX', expiry, id)
    redis.call('PEXPIRE', slots, ARGV[1])
  end
end
return {lost, taken}
";

/// Takes up to 100 expired leases: `KEYS[1]` all leases, `ARGV[1]` the key prefix. Returns
/// the runs of those that had started.
const REAP: &str = r"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, 100)) do
  local run = take(ARGV[1], KEYS[1], id)
  if run then table.insert(out, run) end
end
return out
";

/// A claim on one of a user's run slots in the cluster: a slot held, or a place in the
/// user's queue. Give it back with [`ClusterRuns::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    id: String,
    user: UserId,
    run: RunId,
}

/// What [`ClusterRuns::claim`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// The slot is held: the run may start.
    Running,
    /// The claim waits in the user's queue, with `position` claims ahead of it; claim again
    /// (with the same lease) to renew the place and take a slot once it is its turn.
    Queued {
        /// Claims ahead of this one.
        position: usize,
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

/// What the reaper found: a run whose node stopped renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRun {
    /// Its user.
    pub user: UserId,
    /// The run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// Its agent.
    pub agent_name: String,
}

/// Users' runs across the nodes sharing one Redis; see the module documentation.
#[derive(Clone)]
pub struct ClusterRuns {
    shared: Arc<Shared>,
    /// Where the end of a lost run is published.
    publish: Arc<PublishQueue>,
    lease_ttl: Duration,
    claim: Arc<Script>,
    renew: Arc<Script>,
    reap: Arc<Script>,
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
        Self {
            shared,
            publish,
            lease_ttl,
            claim: Arc::new(Script::new(CLAIM)),
            renew: Arc::new(Script::new(&format!("{TAKE}{RENEW}"))),
            reap: Arc::new(Script::new(&format!("{TAKE}{REAP}"))),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.shared.prefix)
    }

    fn slots_key(&self, user: &UserId) -> String {
        format!("{}:{{{}}}:slots", self.shared.prefix, user.as_str())
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

    /// Claims a run slot for `lease`'s run (`scope`) within `limits` across the cluster: held
    /// at once, or a place in the user's queue (claim again with the same lease to renew the
    /// place, at least once per lease TTL, and to take a slot when it is its turn), or
    /// refused. A claim that holds a slot or a place is where `cancel_run` finds its run; a
    /// held slot is renewed with [`renew`](Self::renew), a place by asking again (`again`),
    /// and either's run is ended by a reaper if its node stops renewing it (a queued run's
    /// `agent_started`, saying `started_with`, then its `agent_error`).
    pub async fn claim(
        &self,
        lease: &Lease,
        scope: &RunScope,
        limits: SlotLimits,
        started_with: &str,
        again: bool,
    ) -> Result<ClaimState, BrokerError> {
        let [queue, queued] = self.queue_keys(&lease.user);
        let answer: Vec<usize> = self
            .claim
            .key(self.slots_key(&lease.user))
            .key(self.key("leases"))
            .key(self.key(&format!("lease:{}", lease.id)))
            .key(queue)
            .key(queued)
            .key(self.key(&format!("run:{}", lease.run)))
            .key(self.key(&format!("ended:{}", lease.run)))
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
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        match answer.as_slice() {
            [1] => Ok(ClaimState::Running),
            [3] => Ok(ClaimState::Lost),
            [2, position] => Ok(ClaimState::Queued {
                position: *position,
            }),
            [0, running, queued] => Ok(ClaimState::Full {
                running: *running,
                queued: *queued,
            }),
            other => Err(BrokerError(format!(
                "Redis: the claim script answered {other:?}"
            ))),
        }
    }

    /// Gives `lease` back: its slot or its place in the queue (its run ended, was cancelled
    /// while queued, or never started), and its run's record.
    pub async fn release(&self, lease: &Lease) -> Result<(), BrokerError> {
        let [queue, queued] = self.queue_keys(&lease.user);
        let mut pipe = redis::pipe();
        pipe.zrem(self.slots_key(&lease.user), &lease.id)
            .ignore()
            .zrem(queue, &lease.id)
            .ignore()
            .zrem(queued, &lease.id)
            .ignore()
            .zrem(self.key("leases"), &lease.id)
            .ignore()
            .del(self.key(&format!("lease:{}", lease.id)))
            .ignore()
            .del(self.key(&format!("run:{}", lease.run)))
            .ignore();
        pipe.query_async::<()>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))
    }

    /// Renews `leases` (this node's runs); returns those this node no longer holds. Leases
    /// found expired are taken and their runs ended here.
    pub async fn renew(&self, leases: &[Lease]) -> Result<Vec<Lease>, BrokerError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.renew.key(self.key("leases"));
        invocation.arg(self.ttl_ms()).arg(&self.shared.prefix);
        for lease in leases {
            invocation.arg(self.slots_key(&lease.user)).arg(&lease.id);
        }
        let (lost, taken): (Vec<String>, Vec<TakenRun>) = invocation
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        end_runs(&self.publish, taken);
        Ok(leases
            .iter()
            .filter(|lease| lost.contains(&lease.id))
            .cloned()
            .collect())
    }

    /// Takes expired leases (of nodes that stopped renewing) and ends their runs: emits each
    /// run's terminal `agent_error`. Returns the runs ended.
    pub async fn reap(&self) -> Result<Vec<LostRun>, BrokerError> {
        let taken: Vec<TakenRun> = self
            .reap
            .key(self.key("leases"))
            .arg(&self.shared.prefix)
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        Ok(end_runs(&self.publish, taken))
    }

    /// Sends `cancel_run` to the node executing `user`'s run `run`. False when no node runs
    /// it for this user (another user's run and a missing one alike).
    pub async fn cancel(&self, user: &UserId, run: &RunId) -> Result<bool, BrokerError> {
        let mut conn = self.shared.conn.clone();
        let (owner, node): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(&format!("run:{run}")))
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
        let channel = self.key(&format!("node:{node}"));
        let _receivers: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(format!("cancel\n{}\n{run}", user.as_str()))
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        Ok(true)
    }
}

/// A run whose lease a script took: `(user, run, thread, agent, queued, message)`.
type TakenRun = (String, String, String, String, String, String);

/// Emits the terminal `agent_error` `node_lost` of each taken run (past its run's ended
/// mark, which drops every other late event of it).
fn end_runs(publish: &PublishQueue, taken: Vec<TakenRun>) -> Vec<LostRun> {
    let mut lost = Vec::new();
    for (user, run, thread, agent, queued, message) in taken {
        let (Ok(user), Ok(run_id), Ok(thread_id)) = (
            UserId::parse(&user),
            RunId::parse(&run),
            ThreadId::parse(&thread),
        ) else {
            tracing::error!(%run, "redis broker: an expired lease names invalid ids; skipped");
            continue;
        };
        let scope = RunScope {
            run_id: run_id.clone(),
            parent_run_id: None,
            thread_id: thread_id.clone(),
            agent_name: Arc::from(agent.as_str()),
        };
        // A queued run never started: it gets its start, then its end, as a queued run
        // cancelled on its own node does.
        let mut events: Vec<AgentEvent> = Vec::with_capacity(2);
        if queued == "1" {
            events.push(scope.event(EventKind::AgentStarted { message }));
        }
        events.push(scope.event(EventKind::AgentError {
            code: NODE_LOST.into(),
            message: "the server running this run stopped; start it again".into(),
        }));
        for event in events {
            let sent = EncodedEvent::encode(&event)
                .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))
                .and_then(|encoded| publish.enqueue(&user, encoded, true));
            if let Err(error) = sent {
                tracing::error!(%error, %run, "redis broker: cannot emit the end of a lost run");
            }
        }
        tracing::warn!(%run, user = %user.as_str(), "redis broker: ended a run whose node stopped renewing its lease");
        lost.push(LostRun {
            user,
            run_id,
            thread_id,
            agent_name: agent,
        });
    }
    lost
}

/// Reads a node channel message (`cancel\n<user>\n<run>`).
pub(crate) fn parse_cancel(payload: &[u8]) -> Option<CancelRequest> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\n');
    (parts.next()? == "cancel").then_some(())?;
    let user = UserId::parse(parts.next()?).ok()?;
    let run_id = RunId::parse(parts.next()?).ok()?;
    parts
        .next()
        .is_none()
        .then_some(CancelRequest { user, run_id })
}
