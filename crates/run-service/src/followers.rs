//! Which runs a client follows: an AG-UI response follows its run while it is open, and a run
//! whose response was cut is cancelled after a grace unless another response follows it by
//! then, on this node or (with a cluster) on any other: the client may come back through
//! another node behind a load balancer. `RunService::watch` and its kin use these.

use std::collections::HashMap;

use core_context::{RunId, UserId};
use parking_lot::Mutex;

use crate::cluster::Cluster;

/// The responses of this node that follow each run, counted by user and run.
#[derive(Debug, Default)]
pub(crate) struct Followers(Mutex<HashMap<(UserId, RunId), usize>>);

impl Followers {
    /// A client began to follow `user`'s run `run` from this node.
    pub(crate) async fn follow(&self, cluster: Option<&Cluster>, user: &UserId, run: &RunId) {
        *self
            .0
            .lock()
            .entry((user.clone(), run.clone()))
            .or_default() += 1;
        if let Some(cluster) = cluster
            && let Err(error) = cluster.follow(user, run, true).await
        {
            tracing::warn!(%run, %error, "cluster: cannot count a client following a run");
        }
    }

    /// A client of this node stopped following `user`'s run `run`.
    pub(crate) async fn unfollow(&self, cluster: Option<&Cluster>, user: &UserId, run: &RunId) {
        {
            let mut followed = self.0.lock();
            let key = (user.clone(), run.clone());
            if let Some(count) = followed.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    followed.remove(&key);
                }
            }
        }
        if let Some(cluster) = cluster
            && let Err(error) = cluster.follow(user, run, false).await
        {
            tracing::warn!(%run, %error, "cluster: cannot count a client leaving a run");
        }
    }

    /// Whether a client follows `user`'s run `run` now, from this node or (with a cluster)
    /// any. When the cluster cannot say, this node's count answers.
    pub(crate) async fn followed(
        &self,
        cluster: Option<&Cluster>,
        user: &UserId,
        run: &RunId,
    ) -> bool {
        if self.0.lock().contains_key(&(user.clone(), run.clone())) {
            return true;
        }
        match cluster {
            Some(cluster) => cluster.followed(user, run).await.unwrap_or_else(|error| {
                tracing::warn!(%run, %error, "cluster: cannot tell whether a client follows a run");
                false
            }),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_is_followed_while_one_of_its_clients_is_there() {
        let followers = Followers::default();
        let (user, run) = (UserId::parse("alice").unwrap(), RunId::generate());
        let other = UserId::parse("bobby").unwrap();
        assert!(!followers.followed(None, &user, &run).await);
        followers.follow(None, &user, &run).await;
        followers.follow(None, &user, &run).await;
        followers.unfollow(None, &user, &run).await;
        assert!(followers.followed(None, &user, &run).await);
        assert!(!followers.followed(None, &other, &run).await);
        followers.unfollow(None, &user, &run).await;
        assert!(!followers.followed(None, &user, &run).await);
        // A client that leaves twice does not make the count negative for the next one.
        followers.unfollow(None, &user, &run).await;
        followers.follow(None, &user, &run).await;
        assert!(followers.followed(None, &user, &run).await);
    }
}
