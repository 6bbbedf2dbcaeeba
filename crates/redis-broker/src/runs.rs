//! [`ClusterRuns`]: users' runs across nodes: a cluster-wide per-user run limit held by
//! leases that expire, `cancel_run` routed to the node executing the run, and the runs of a
//! node that died ended for their users by a surviving node.
//!
//! Keys (beside the streams' of the `scripts` module):
//! - `<prefix>:{<user>}:slots`, a sorted set: the user's leases, scored by expiry (ms);
//! - `<prefix>:leases`, a sorted set: every lease, scored by expiry, for the reaper;
//! - `<prefix>:lease:<id>`, a hash: the lease's user, node, and once it started its run's id,
//!   thread and agent (what a terminal event for it needs);
//! - `<prefix>:run:<run id>`, a hash: the run's user, node and lease (for `cancel_run`);
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

/// Claims a lease: `KEYS[1]` the user's slots, `KEYS[2]` all leases, `KEYS[3]` the lease;
/// `ARGV[1]` lease id, `ARGV[2]` TTL ms, `ARGV[3]` the limit, `ARGV[4]` user, `ARGV[5]` node.
/// Returns 1, or 0 when the user holds the limit already.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('ZADD', KEYS[2], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], 'user', ARGV[4], 'node', ARGV[5])
return 1
";

/// Takes a lease off the books and marks its run ended for a day (`<prefix>:ended:<run>`:
/// the publish script drops the run's later events, so its `node_lost` stays its last).
/// Returns `{user, run, thread, agent}` for a lease whose run had started, else nil.
const TAKE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function take(prefix, leases, id)
  redis.call('ZREM', leases, id)
  local lease = prefix .. ':lease:' .. id
  local f = redis.call('HMGET', lease, 'user', 'run', 'thread', 'agent')
  redis.call('DEL', lease)
  if f[1] and f[2] then
    redis.call('DEL', prefix .. ':run:' .. f[2])
    redis.call('SET', prefix .. ':ended:' .. f[2], 1, 'PX', 86400000)
    return {f[1], f[2], f[3], f[4]}
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

/// A run slot held in the cluster; give it back with [`ClusterRuns::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    id: String,
    user: UserId,
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
    acquire: Arc<Script>,
    renew: Arc<Script>,
    reap: Arc<Script>,
}

impl Lease {
    /// Whose run slot it is.
    pub fn user(&self) -> &UserId {
        &self.user
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
            acquire: Arc::new(Script::new(ACQUIRE)),
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

    /// Claims one of `user`'s `limit` run slots across the cluster; `None` when they are
    /// all held.
    pub async fn acquire(&self, user: &UserId, limit: usize) -> Result<Option<Lease>, BrokerError> {
        let id = ulid::Ulid::new().to_string();
        let acquired: u8 = self
            .acquire
            .key(self.slots_key(user))
            .key(self.key("leases"))
            .key(self.key(&format!("lease:{id}")))
            .arg(&id)
            .arg(self.ttl_ms())
            .arg(limit)
            .arg(user.as_str())
            .arg(&self.shared.node_id)
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        Ok((acquired == 1).then(|| Lease {
            id,
            user: user.clone(),
        }))
    }

    /// Records the run `lease` was taken for: where `cancel_run` finds it, and what the
    /// reaper needs to end it.
    pub async fn started(&self, lease: &Lease, scope: &RunScope) -> Result<(), BrokerError> {
        let lease_key = self.key(&format!("lease:{}", lease.id));
        let run_key = self.key(&format!("run:{}", scope.run_id));
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &lease_key,
            &[
                ("run", scope.run_id.as_str()),
                ("thread", scope.thread_id.as_str()),
                ("agent", &*scope.agent_name),
            ],
        )
        .ignore()
        .hset_multiple(
            &run_key,
            &[
                ("user", lease.user.as_str()),
                ("node", self.shared.node_id.as_str()),
                ("lease", lease.id.as_str()),
            ],
        )
        .ignore()
        .pexpire(&run_key, 86_400_000)
        .ignore();
        pipe.query_async::<()>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))
    }

    /// Gives `lease` back (its run ended, or never started).
    pub async fn release(&self, lease: &Lease, run: Option<&RunId>) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.slots_key(&lease.user), &lease.id)
            .ignore()
            .zrem(self.key("leases"), &lease.id)
            .ignore()
            .del(self.key(&format!("lease:{}", lease.id)))
            .ignore();
        if let Some(run) = run {
            pipe.del(self.key(&format!("run:{run}"))).ignore();
        }
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

/// A run whose lease a script took: `(user, run, thread, agent)`.
type TakenRun = (String, String, String, String);

/// Emits the terminal `agent_error` `node_lost` of each taken run (past its run's ended
/// mark, which drops every other late event of it).
fn end_runs(publish: &PublishQueue, taken: Vec<TakenRun>) -> Vec<LostRun> {
    let mut lost = Vec::new();
    for (user, run, thread, agent) in taken {
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
        let event: AgentEvent = scope.event(EventKind::AgentError {
            code: NODE_LOST.into(),
            message: "the server running this run stopped; start it again".into(),
        });
        let queued = EncodedEvent::encode(&event)
            .map_err(|e| EmitError::Rejected(format!("event could not be encoded: {e}")))
            .and_then(|encoded| publish.enqueue(&user, encoded, true));
        if let Err(error) = queued {
            tracing::error!(%error, %run, "redis broker: cannot emit the end of a lost run");
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
