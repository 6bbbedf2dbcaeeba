//! A private Redis Cluster for the `cluster-failover` fault: three masters with a replica
//! each (Debian's `redis-server` in cluster mode, joined with `redis-cli --cluster create`),
//! and a master killed so that its replica takes over.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::cluster::Redis;

/// Masters, each with one replica.
const MASTERS: usize = 3;

/// A running Redis Cluster.
pub(crate) struct RedisCluster {
    nodes: Vec<Redis>,
}

/// `redis-cli -p <port> <args>`'s output.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli ({e}); install Debian's redis-tools"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl RedisCluster {
    /// Starts six nodes and joins them; returns once the cluster is ok and every replica
    /// in sync.
    pub(crate) fn start(log_dir: &Path) -> Result<Self, String> {
        let nodes = (0..MASTERS * 2)
            .map(|_| Redis::start_cluster_node(log_dir))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Self { nodes };
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port())),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `redis-cluster://` naming every node.
    pub(crate) fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Kills (SIGKILL) one master and waits until its replica serves its slots; returns
    /// how long the cluster took to be whole again.
    pub(crate) fn fail_over(&mut self) -> Result<Duration, String> {
        let masters = self.masters()?;
        let doomed = *masters.first().ok_or("the cluster has no master")?;
        let killed = Instant::now();
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == doomed) {
            node.kill();
        }
        self.wait_ok(Duration::from_secs(60))?;
        Ok(killed.elapsed())
    }

    /// The live masters' ports.
    fn masters(&self) -> Result<Vec<u16>, String> {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(Redis::port)
            .collect();
        let first = *live.first().ok_or("no cluster node is alive")?;
        Ok(cli(first, &["CLUSTER", "NODES"])?
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                (flags.contains("master") && !flags.contains("fail") && live.contains(&port))
                    .then_some(port)
            })
            .collect())
    }

    /// Waits until every live node says the cluster is ok with all slots served, every
    /// replica is in sync, and there are three live masters.
    fn wait_ok(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let mut ok = self.masters()?.len() == MASTERS;
            for node in self.nodes.iter().filter(|n| n.alive()) {
                let info = cli(node.port(), &["CLUSTER", "INFO"])?;
                let replication = cli(node.port(), &["INFO", "replication"])?;
                ok &= info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"));
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the Redis Cluster was not ok within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every node.
    pub(crate) fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}
