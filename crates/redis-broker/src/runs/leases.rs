//! The renewal and the reaping of [`ClusterRuns`]' leases.

use std::sync::Arc;

use core_context::UserId;
use ws_bridge::broker::BrokerError;

use super::{ClusterRuns, Lease, now_ms};
use crate::lost::{LostRun, TakenRun, end_runs};
use crate::shared::broker_error;

impl ClusterRuns {
    /// Renews `leases` (this node's runs); returns those this node no longer holds. Leases
    /// found expired are taken and their runs ended here.
    ///
    /// Calls of at most `RENEWED_PER_CALL` leases (each of one slot on a Redis Cluster) go
    /// all at once, and the answers are awaited for half the renewal interval at most: on a
    /// Redis Cluster whose master is down, the leases on the other masters are renewed all
    /// the same, and the next round comes on time (else other nodes' reapers end runs this
    /// node executes). A call still out at that deadline goes on on its own task, ending
    /// the runs it took; a lease it found lost is found again by the next round. `Err` only
    /// when no call went through.
    pub async fn renew(&self, leases: &[Lease]) -> Result<Vec<Lease>, BrokerError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + self.renew_every() / 2;
        let groups = crate::calls::in_calls(
            self.shared.leases_conn.is_cluster(),
            leases,
            |lease| lease.user.as_str(),
            crate::calls::RENEWED_PER_CALL,
        );
        let calls: Vec<_> = groups
            .iter()
            .map(|group| {
                // Each lease's keys and arguments: its user's leases and slots, its user's
                // key base, its id.
                let leases: Vec<[String; 4]> = group
                    .iter()
                    .map(|lease| {
                        [
                            self.user_key(&lease.user, "leases"),
                            self.slots_key(&lease.user),
                            self.base(&lease.user),
                            lease.id.clone(),
                        ]
                    })
                    .collect();
                let (script, publish) = (Arc::clone(&self.renew), Arc::clone(&self.publish));
                let (ttl, mut conn) = (self.ttl_ms(), self.shared.leases_conn.clone());
                async move {
                    let mut invocation = script.prepare_invoke();
                    invocation.arg(ttl);
                    for [leases, slots, base, id] in &leases {
                        invocation.key(leases).key(slots).arg(base).arg(id);
                    }
                    let (gone, taken) = invocation
                        .invoke_async::<(Vec<String>, Vec<TakenRun>)>(&mut conn)
                        .await?;
                    end_runs(&publish, taken);
                    Ok(gone)
                }
            })
            .collect();
        let lost: Vec<String> = crate::calls::answers_by(calls, deadline)
            .await
            .answers("run-lease renewals")
            .map_err(|e| broker_error(&e))?
            .into_iter()
            .flatten()
            .collect();
        self.index_again(leases);
        Ok(leases
            .iter()
            .filter(|lease| lost.contains(&lease.id))
            .cloned()
            .collect())
    }

    /// Puts back the users of `leases` missing from the reapers' index (their entry lost),
    /// on a task of its own: the index is one key, whose master may be the one down.
    fn index_again(&self, leases: &[Lease]) {
        let mut users: Vec<&UserId> = leases.iter().map(|lease| &lease.user).collect();
        users.sort();
        users.dedup();
        let mut index = redis::cmd("ZADD");
        index.arg(self.index_key()).arg("NX");
        for user in &users {
            index.arg(now_ms() + self.ttl_ms()).arg(user.as_str());
        }
        let mut conn = self.shared.leases_conn.clone();
        tokio::spawn(async move {
            if let Err(error) = index.exec_async(&mut conn).await {
                tracing::warn!(%error, "redis broker: cannot put users back in the reapers' index now");
            }
        });
    }

    /// Takes expired leases (of nodes that stopped renewing) and ends their runs: emits each
    /// run's terminal `agent_error`. Visits the users the reapers' index says are due (up to
    /// 100 per call). Returns the runs ended.
    pub async fn reap(&self) -> Result<Vec<LostRun>, BrokerError> {
        let mut conn = self.shared.leases_conn.clone();
        let due: Vec<(String, String)> = redis::cmd("ZRANGE")
            .arg(self.index_key())
            .arg("-inf")
            .arg(now_ms())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error(&e))?;
        let mut ended = Vec::new();
        for (user, score) in due {
            let Ok(id) = UserId::parse(&user) else {
                tracing::error!(%user, "redis broker: the reapers' index names a user id that does not parse; dropped from it");
                let _: Result<(), _> = redis::cmd("ZREM")
                    .arg(self.index_key())
                    .arg(&user)
                    .exec_async(&mut conn)
                    .await;
                continue;
            };
            let (taken, next): (Vec<TakenRun>, String) = self
                .reap
                .key(self.user_key(&id, "leases"))
                .arg(self.base(&id))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| broker_error(&e))?;
            ended.extend(end_runs(&self.publish, taken));
            self.settle_index
                .key(self.index_key())
                .arg(&user)
                .arg(&score)
                .arg(&next)
                .invoke_async::<()>(&mut conn)
                .await
                .map_err(|e| broker_error(&e))?;
        }
        Ok(ended)
    }
}
