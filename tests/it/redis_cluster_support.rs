//! A private Redis Cluster per test: three masters with a replica each, on free ports of
//! loopback, in a temp dir, no persistence, a node timeout of one second (so a killed master
//! fails over to its replica within a few seconds). Stopped on drop.
//!
//! [`SharedRedis`] is what the multi-node tests need of either a [`RedisServer`] or a
//! [`RedisCluster`], and [`on_redis_and_cluster!`] runs one such test on each.
//!
//! The tests need Debian's `redis-server` and `redis-cli` (`.ci/run` installs them).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_support::{RedisServer, binary, free_port, tls_only};

/// What a multi-node test needs of the Redis its nodes share.
pub trait SharedRedis {
    /// The `--broker` URL.
    fn url(&self) -> String;
    /// Expires every run lease now (see [`RedisServer::expire_run_leases`]).
    fn expire_run_leases(&self);
    /// Closes every pub/sub connection (the nodes' live connections), on every node.
    fn kill_pubsub_clients(&self);
}

impl SharedRedis for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }

    fn expire_run_leases(&self) {
        RedisServer::expire_run_leases(self);
    }

    fn kill_pubsub_clients(&self) {
        let killed = self.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed.starts_with(':'), "CLIENT KILL answered {killed}");
    }
}

/// A Redis (one, or a [`RedisCluster`]) whose nodes run in the sequencer mode
/// (`--broker-sequencer`): its URL carries `server_support::SEQUENCER`, which the test
/// servers turn into the flag.
pub struct Sequenced<R = RedisServer>(pub R);

impl<R: SharedRedis> SharedRedis for Sequenced<R> {
    fn url(&self) -> String {
        format!("{}{}", self.0.url(), crate::server_support::SEQUENCER)
    }

    fn expire_run_leases(&self) {
        self.0.expire_run_leases();
    }

    fn kill_pubsub_clients(&self) {
        self.0.kill_pubsub_clients();
    }
}

/// The broker configuration for `url`, a [`SharedRedis::url`]: in the sequencer mode when it
/// ends in `server_support::SEQUENCER` (see [`Sequenced`]), else in the publish script's.
pub fn broker_config(
    url: &str,
    bounds: ws_bridge::broker::ReplayBounds,
) -> redis_broker::RedisBrokerConfig {
    match url.strip_suffix(crate::server_support::SEQUENCER) {
        Some(plain) => redis_broker::RedisBrokerConfig {
            mode: redis_broker::PublishMode::Sequencer,
            ..redis_broker::RedisBrokerConfig::new(plain.to_owned(), bounds)
        },
        None => redis_broker::RedisBrokerConfig {
            mode: redis_broker::PublishMode::Script,
            ..redis_broker::RedisBrokerConfig::new(url.to_owned(), bounds)
        },
    }
}

/// Runs the test body `$name` (an `async fn(&impl SharedRedis)`) as `$name::redis` on one
/// Redis and as `$name::cluster` on a Redis Cluster.
macro_rules! on_redis_and_cluster {
    ($name:ident) => {
        mod $name {
            crate::redis_cluster_support::on_redis_and_cluster!(@each $name);
        }
    };
    (@each $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn redis() {
            super::$name(&crate::redis_support::RedisServer::start()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn cluster() {
            super::$name(&crate::redis_cluster_support::RedisCluster::start()).await;
        }
    };
}
pub(crate) use on_redis_and_cluster;

/// [`on_redis_and_cluster!`], and in the sequencer mode ([`Sequenced`]) as
/// `$name::sequencer` on one Redis and `$name::sequencer_cluster` on a Redis Cluster.
macro_rules! in_every_mode {
    ($name:ident) => {
        mod $name {
            crate::redis_cluster_support::on_redis_and_cluster!(@each $name);

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sequencer() {
                let redis = crate::redis_support::RedisServer::start();
                super::$name(&crate::redis_cluster_support::Sequenced(redis)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sequencer_cluster() {
                let cluster = crate::redis_cluster_support::RedisCluster::start();
                super::$name(&crate::redis_cluster_support::Sequenced(cluster)).await;
            }
        }
    };
}
pub(crate) use in_every_mode;

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running private Redis Cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// The directory of `ca.pem`, `server.pem` and `server.key` when it speaks TLS only
    /// (clients, the cluster bus and replication alike).
    tls: Option<PathBuf>,
}

/// Masters, each with one replica.
const MASTERS: usize = 3;

/// `redis-cli` on `port` (over TLS, trusting `tls`'s `ca.pem`, when given).
fn cli_at(tls: Option<&PathBuf>, port: u16, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(files) = tls {
        command
            .arg("--tls")
            .arg("--cacert")
            .arg(files.join("ca.pem"));
    }
    command.args(args);
    let output = output_within(&mut command, Duration::from_secs(30));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `command`'s output, once it ended; panics, naming it, when it runs past `limit` (a
/// `redis-cli` whose port another process took after the free-port check waits for an
/// answer forever, and `--cluster create` waits for the nodes to agree as long as it takes).
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {command:?} ({e}); install Debian's redis-server and redis-tools")
        });
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped")));
    let stderr = read(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let said = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
            panic!("{command:?} did not end within {limit:?}; it said: {said}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

impl RedisCluster {
    /// Starts six nodes and joins them into a cluster of three masters with a replica
    /// each; returns once every node says the cluster is ok.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`RedisCluster::start`], speaking TLS only with `certificates`' `server.pem` and
    /// `server.key` (made by `mcp_https::certificates`); clients need no certificate.
    pub fn start_tls(certificates: &std::path::Path) -> Self {
        Self::start_with(Some(certificates.to_owned()))
    }

    fn start_with(tls: Option<PathBuf>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "agent-it-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
            tls,
        };
        for _ in 0..MASTERS * 2 {
            let node = cluster.launch();
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(files) = &cluster.tls {
            create
                .arg("--tls")
                .arg("--cacert")
                .arg(files.join("ca.pem"));
        }
        create
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"]);
        let created = output_within(&mut create, Duration::from_secs(60));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// Spawns one cluster-enabled node on a free port.
    fn launch(&self) -> Node {
        for _ in 0..20 {
            let port = free_port();
            // The node's cluster bus listens on port + 10000: both must be free.
            if port > 55_535 || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let dir = self.dir.join(port.to_string());
            std::fs::create_dir_all(&dir).expect("node dir");
            let mut command = Command::new(binary());
            match &self.tls {
                None => command.args(["--port", &port.to_string()]),
                Some(files) => tls_only(&mut command, files, &port.to_string())
                    .args(["--tls-auth-clients", "no"])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    // What a node shows the others on the cluster bus and its master: the
                    // server certificate is for servers only.
                    .arg("--tls-client-cert-file")
                    .arg(files.join("client.pem"))
                    .arg("--tls-client-key-file")
                    .arg(files.join("client.key")),
            };
            let mut child = command
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once (the default waits 5 s for more replicas): a replica
                // that never synced cannot take over.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}); install Debian's redis-server")
                });
            // Up once this very process answers on the port: a node answers only after it
            // has bound its cluster bus too (it exits when the bus port was taken after the
            // check above), and a port answering for another test's Redis is not this one.
            let mine = format!("process_id:{}", child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && cli_at(self.tls.as_ref(), port, &["INFO", "server"])
                        .lines()
                        .any(|line| line.trim_end() == mine)
                {
                    return Node {
                        port,
                        child: Some(child),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a cluster node on a free port");
    }

    /// Waits (up to 30 s) until every live node says `cluster_state:ok`, every slot is
    /// served by a live master, and every replica is in sync with its master.
    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live: Vec<u16> = self.live_ports();
            let ok = live.iter().all(|port| {
                let info = self.cli(*port, &["CLUSTER", "INFO"]);
                let replication = self.cli(*port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok && self.masters().len() == MASTERS {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok: {}",
                self.cli(live[0], &["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_at(self.tls.as_ref(), port, args)
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.port)
            .collect()
    }

    /// The live masters: their ports, and the slot ranges each serves.
    fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let live = self.live_ports();
        let nodes = self.cli(live[0], &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                if !live.contains(&port) {
                    return None;
                }
                let ranges = fields[8..]
                    .iter()
                    .filter_map(|range| {
                        let (from, to) = range.split_once('-').unwrap_or((range, range));
                        Some((from.parse().ok()?, to.parse().ok()?))
                    })
                    .collect();
                Some((port, ranges))
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self.live_ports();
        let slot: u16 = self
            .cli(live[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    /// Kills (SIGKILL) the master serving `key`'s slot; its replica takes over once the
    /// others have seen it fail. Returns the killed node's port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key);
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("the master is one of ours");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Waits until a replica took over every slot of the killed master.
    pub fn wait_failed_over(&self) {
        self.wait_ok();
    }

    /// Stops (SIGSTOP) the master serving `key`'s slot and its replica: both hold their
    /// connections open and answer nothing, and no replica takes over, as a master whose
    /// machine stalls. The other masters first learn to serve their slots while some are not
    /// (`cluster-require-full-coverage no`). Returns the stopped nodes' ports, for
    /// [`RedisCluster::resume`].
    pub fn stall_master_of(&self, key: &str) -> Vec<u16> {
        for port in self.live_ports() {
            let set = self.cli(
                port,
                &["CONFIG", "SET", "cluster-require-full-coverage", "no"],
            );
            assert_eq!(set.trim(), "OK", "CONFIG SET on {port}");
        }
        let master = self.master_of(key);
        let nodes = self.cli(master, &["CLUSTER", "NODES"]);
        let lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|line| line.split_whitespace().collect())
            .collect();
        let port_of = |fields: &[&str]| -> Option<u16> {
            fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()
        };
        let id = lines
            .iter()
            .find(|fields| port_of(fields) == Some(master))
            .map(|fields| fields[0])
            .expect("the master is in CLUSTER NODES");
        let mut ports = vec![master];
        ports.extend(
            lines
                .iter()
                .filter(|fields| fields.get(3) == Some(&id))
                .filter_map(|fields| port_of(fields)),
        );
        assert_eq!(ports.len(), 2, "a master and its replica: {nodes}");
        self.signal(&ports, "-STOP");
        ports
    }

    /// Lets nodes stopped by [`RedisCluster::stall_master_of`] go on.
    pub fn resume(&self, ports: &[u16]) {
        self.signal(ports, "-CONT");
    }

    fn signal(&self, ports: &[u16], signal: &str) {
        for port in ports {
            let pid = self
                .nodes
                .iter()
                .find(|node| node.port == *port)
                .and_then(|node| node.child.as_ref())
                .map(Child::id)
                .expect("a live node of ours");
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid}");
        }
    }
}

impl SharedRedis for RedisCluster {
    /// `redis-cluster://` naming every node, as an operator lists the seeds.
    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss-cluster"
        } else {
            "redis-cluster"
        };
        format!("{scheme}://{}", seeds.join(","))
    }

    fn expire_run_leases(&self) {
        // A script may touch one slot's keys only: each user's leases, one at a time.
        for (port, _) in self.masters() {
            let keys = self.cli(port, &["KEYS", "agentws:{*}:leases"]);
            for key in keys.lines().filter(|key| !key.is_empty()) {
                let script = "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do redis.call('ZADD', KEYS[1], 0, m) end return 1";
                let done = self.cli(port, &["EVAL", script, "1", key]);
                assert_eq!(done.trim(), "1", "expiring the leases of {key}: {done}");
            }
        }
        let index = self.master_of("agentws:reap");
        let users = self.cli(index, &["ZRANGE", "agentws:reap", "0", "-1"]);
        for user in users.lines().filter(|user| !user.is_empty()) {
            self.cli(index, &["ZADD", "agentws:reap", "0", user]);
        }
    }

    fn kill_pubsub_clients(&self) {
        for port in self.live_ports() {
            let killed = self.cli(port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(
                killed.trim().parse::<u64>().is_ok(),
                "CLIENT KILL answered {killed}"
            );
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
