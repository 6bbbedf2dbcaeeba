//! Runs across nodes (with `--broker redis://…`): the per-user run limit and queue held
//! cluster-wide by leases (the engine's run slots, [`ClusterSlots`]), `cancel_run` for a run
//! executing on another node, and the runs of a node that died ended by this one. The Redis
//! side is `redis_broker::ClusterRuns`.
//!
//! A node holds a lease per run it executes and renews them all every third of the lease
//! TTL, waiting half of that at most for the answers; a task of its own, as often, reaps
//! leases other nodes stopped renewing (each taken by one node, which emits the run's
//! terminal `agent_error` with code `node_lost`).

use std::sync::Arc;

use core_context::{RunId, UserId};
use redis_broker::{ClusterRuns, Lease, RedisBroker, SlotLimits};
use ws_bridge::broker::BrokerError;

pub use crate::cluster_slots::ClusterSlots;
use crate::cluster_slots::Held;

/// This node's part in the cluster's runs.
pub struct Cluster {
    broker: Arc<RedisBroker>,
    runs: ClusterRuns,
    /// The leases of the runs this node executes (shared with its [`ClusterSlots`]).
    held: Held,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("runs", &self.runs)
            .field("held", &self.held.lock().len())
            .finish()
    }
}

impl Cluster {
    /// The cluster of the nodes sharing `broker`'s Redis, with leases of `lease_ttl`.
    pub fn new(broker: Arc<RedisBroker>, lease_ttl: std::time::Duration) -> Self {
        let runs = broker.runs(lease_ttl);
        Self {
            broker,
            runs,
            held: Held::default(),
        }
    }

    /// Users' budgets across the cluster: the reservations of model calls under way on every
    /// node.
    pub fn budget_ledger(&self) -> redis_broker::BudgetLedger {
        self.broker.budget_ledger()
    }

    /// The engine's run slots across the cluster, with `limits` per user.
    pub fn slots(&self, limits: SlotLimits) -> ClusterSlots {
        ClusterSlots::new(self.runs.clone(), Arc::clone(&self.held), limits)
    }

    /// The Redis broker's counts.
    pub fn broker_stats(&self) -> &redis_broker::BrokerStats {
        self.broker.stats()
    }

    /// The requests other nodes route to this one's runs (`cancel_run`, messages for a
    /// running run); one receiver per node.
    pub(crate) fn node_requests(
        &self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<redis_broker::NodeRequest> {
        self.broker.node_requests()
    }

    /// Routes a message for a running run (`multitask` `steer`) to the node executing it;
    /// false when no node took it.
    pub(crate) async fn steer(
        &self,
        request: &redis_broker::SteerRequest,
    ) -> Result<bool, BrokerError> {
        self.runs.steer(request).await
    }

    /// Counts a client that began (or stopped) following `user`'s run from this node.
    pub(crate) async fn follow(
        &self,
        user: &UserId,
        run: &RunId,
        began: bool,
    ) -> Result<(), BrokerError> {
        self.runs.follow(user, run, began).await
    }

    /// Whether a client follows `user`'s run from any node.
    pub(crate) async fn followed(&self, user: &UserId, run: &RunId) -> Result<bool, BrokerError> {
        self.runs.followed(user, run).await
    }

    /// How often [`Cluster::renew`] must run to keep this node's leases.
    pub(crate) fn renew_every(&self) -> std::time::Duration {
        self.runs.renew_every()
    }

    /// Routes `cancel_run` (with `reason`) to the node executing `user`'s run; false when
    /// none does.
    pub(crate) async fn cancel(
        &self,
        user: &UserId,
        run: &RunId,
        reason: &str,
    ) -> Result<bool, BrokerError> {
        self.runs.cancel(user, run, reason).await
    }

    /// Renews this node's leases. Returns the runs this node executes whose leases it lost
    /// (another node ended them for their users): the caller cancels them. Takes half of
    /// [`renew_every`](Self::renew_every) at most, so that the next renewal comes on time.
    pub(crate) async fn renew(&self) -> Vec<(UserId, RunId)> {
        let held: Vec<(RunId, Lease)> = self
            .held
            .lock()
            .iter()
            .map(|(run, lease)| (run.clone(), lease.clone()))
            .collect();
        let leases: Vec<Lease> = held.iter().map(|(_, lease)| lease.clone()).collect();
        match self.runs.renew(&leases).await {
            Ok(lost) => {
                let lost = still_held(held, &lost, &self.held.lock());
                if !lost.is_empty() {
                    tracing::error!(
                        leases = lost.len(),
                        "cluster: this node lost leases of runs still executing (it could not reach Redis for a whole lease TTL); another node ended those runs for their users, so they are cancelled here"
                    );
                }
                lost
            }
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot renew run leases now");
                Vec::new()
            }
        }
    }

    /// Ends the runs of nodes that stopped renewing their leases. Apart from
    /// [`renew`](Self::renew), which it never holds up: a reap waits on one call after
    /// another, each for as long as its master takes to answer.
    pub(crate) async fn reap(&self) {
        match self.runs.reap().await {
            Ok(lost) if !lost.is_empty() => {
                tracing::warn!(
                    runs = lost.len(),
                    "cluster: ended runs of a node that stopped"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cluster: cannot reap expired run leases now"),
        }
    }
}

/// Of the leases `held` when a renewal was sent, those it found `lost` that this node still
/// holds (`now_held`), as (user, run): a run that ended during the call gave its lease back
/// (out of `held` before Redis heard of it), so it was not lost.
fn still_held(
    held: Vec<(RunId, Lease)>,
    lost: &[Lease],
    now_held: &std::collections::HashMap<RunId, Lease>,
) -> Vec<(UserId, RunId)> {
    held.into_iter()
        .filter(|(run, lease)| lost.contains(lease) && now_held.get(run) == Some(lease))
        .map(|(run, lease)| (lease.user().clone(), run))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A lease the renewal found gone is lost only while its run still holds it here: one
    /// given back during the call (its run ended) is not, nor is one its run holds anew.
    #[test]
    fn only_leases_still_held_after_the_renewal_are_lost() {
        let user = UserId::parse("alice").expect("valid");
        let run = |n: usize| RunId::parse(&format!("run_{n}")).expect("valid");
        // Each lease has an id of its own: `leases[5]` is run 3's new one.
        let leases: Vec<Lease> = [0, 1, 2, 3, 4, 3]
            .into_iter()
            .map(|n| Lease::new(user.clone(), run(n)))
            .collect();
        let lease = |n: usize| leases[n].clone();
        let held: Vec<(RunId, Lease)> = (1..=4).map(|n| (run(n), lease(n))).collect();
        let lost = [lease(1), lease(2), lease(3)];
        let mut now_held: HashMap<RunId, Lease> = HashMap::new();
        now_held.insert(run(1), lease(1));
        now_held.insert(run(3), lease(5));
        now_held.insert(run(4), lease(4));
        assert_eq!(
            still_held(held, &lost, &now_held),
            [(user.clone(), run(1))],
            "run 2 gave its lease back during the call; run 3 holds another one now; run 4's was renewed"
        );
    }
}
