//! A multi-node run: a private `redis-server` (free port, temp dir, no persistence) and two
//! agent-server nodes on it, loaded by one loadgen that spreads each user's connections over
//! both nodes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::outcome::Run;
use super::scenarios::Scenario;
use super::{Binaries, Kind, load, server_command, shell_line, start_server};

/// Starts Redis and the nodes, runs loadgen against them, stops everything.
pub(crate) fn run(binaries: &Binaries, scenario: &Scenario, log_dir: &Path) -> Run {
    with_nodes(binaries, scenario, log_dir, |nodes, redis, run| {
        load(binaries, scenario, &nodes.addrs(), nodes.pids()[0], run);
        let metrics: Vec<String> = nodes
            .addrs()
            .iter()
            .filter_map(|addr| super::probe::metrics(addr))
            .collect();
        let pids = nodes.pids().into_iter().chain(redis.pid());
        let ticks = pids.filter_map(super::probe::ticks).sum();
        super::cross_path::add(run, &metrics, ticks);
    })
}

/// Starts a private Redis and `scenario.nodes` agent-server nodes on it (writing their
/// command line to the run), lets `load` load them, and stops everything.
pub(crate) fn with_nodes(
    binaries: &Binaries,
    scenario: &Scenario,
    log_dir: &Path,
    load: impl FnOnce(&Nodes, &Redis, &mut Run),
) -> Run {
    let mut run = Run::default();
    let mut redis = match Redis::start(log_dir) {
        Ok(redis) => redis,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let mut broker = vec!["--broker".to_owned(), redis.url()];
    broker.extend(scenario.broker.iter().map(|flag| (*flag).to_owned()));
    // The nodes share this machine: each runs on its share of the CPUs, as an operator
    // sizes nodes put on one machine (docs/operations.md, "Running several nodes").
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    broker.extend([
        "--worker-threads".to_owned(),
        worker_share(cpus, scenario.nodes).to_string(),
    ]);
    let (program, args) = server_command(binaries, scenario, Kind::AgentServer, &broker);
    run.server_command = format!(
        "redis-server --port $REDIS_PORT --save '' --appendonly no & {} (× {}, $ADDR1 … $ADDR{})",
        shell_line(&program, &args).replace(&redis.url(), "redis://127.0.0.1:$REDIS_PORT"),
        scenario.nodes,
        scenario.nodes
    );
    let log = |n: usize| log_dir.join(format!("{}-node{n}.log", scenario.name));
    match Nodes::start(&program, scenario.nodes, |_| args.clone(), log) {
        Ok(nodes) => load(&nodes, &redis, &mut run),
        Err(e) => run.error = Some(e),
    }
    redis.stop();
    // Let the closed sockets and the processes' memory go before the next run.
    std::thread::sleep(Duration::from_secs(2));
    run
}

/// The worker threads of each of `nodes` nodes on a machine of `cpus` CPUs: an equal share,
/// at least one.
pub(crate) fn worker_share(cpus: usize, nodes: usize) -> usize {
    (cpus / nodes.max(1)).max(1)
}

/// agent-server nodes, each a child process with the address it printed; killed on drop.
pub(crate) struct Nodes(Vec<(Child, String)>);

impl Nodes {
    /// Starts `count` nodes of `program`, node `n` (from 1) with `args_of(n)` and its stderr
    /// in `log_of(n)`; on a failure the ones started are stopped.
    pub(crate) fn start(
        program: &Path,
        count: usize,
        args_of: impl Fn(usize) -> Vec<String>,
        log_of: impl Fn(usize) -> std::path::PathBuf,
    ) -> Result<Self, String> {
        let mut nodes = Nodes(Vec::with_capacity(count));
        for n in 1..=count {
            nodes
                .0
                .push(start_server(program, &args_of(n), &log_of(n))?);
        }
        Ok(nodes)
    }

    /// Their addresses (`host:port`), in order.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.0.iter().map(|(_, addr)| addr.clone()).collect()
    }

    /// Their process ids, in order.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|(child, _)| child.id()).collect()
    }

    /// Kills node `i` (from 0) with SIGKILL and waits for it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some((child, _)) = self.0.get_mut(i) {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.0.len() {
            self.kill(i);
        }
    }
}

/// A private Redis for one run.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    /// Whether it keeps an append-only file, written before each reply (survives a crash).
    persistent: bool,
    /// Whether it is a node of a Redis Cluster (`--cluster-enabled`).
    cluster: bool,
}

impl Redis {
    /// Starts one on a free port, keeping nothing on disk.
    pub(crate) fn start(log_dir: &Path) -> Result<Self, String> {
        Self::start_with(log_dir, false)
    }

    /// Starts one on a free port that keeps an append-only file, fsynced before each reply:
    /// killed and started again, it has everything it acknowledged.
    pub(crate) fn start_persistent(log_dir: &Path) -> Result<Self, String> {
        Self::start_with(log_dir, true)
    }

    /// Starts a Redis Cluster node on a free port (not yet in a cluster), keeping nothing
    /// on disk, with a node timeout of one second, syncing its replicas at once.
    pub(crate) fn start_cluster_node(log_dir: &Path) -> Result<Self, String> {
        Self::start_as(log_dir, false, true)
    }

    fn start_with(log_dir: &Path, persistent: bool) -> Result<Self, String> {
        Self::start_as(log_dir, persistent, false)
    }

    fn start_as(log_dir: &Path, persistent: bool, cluster: bool) -> Result<Self, String> {
        let port = loop {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port for redis-server: {e}"))?
                .port();
            // A cluster node's bus listens on port + 10000: both must be free.
            if !cluster
                || (port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok())
            {
                break port;
            }
        };
        let dir = log_dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut redis = Redis {
            child: None,
            port,
            dir,
            persistent,
            cluster,
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// Kills it (SIGKILL, a crash) and starts it again on the same port and directory.
    pub(crate) fn crash_and_restart(&mut self, down_for: Duration) -> Result<(), String> {
        self.kill();
        std::thread::sleep(down_for);
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port;
        let appendonly: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let cluster: &[&str] = if self.cluster {
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--repl-diskless-sync-delay",
                "0",
            ]
        } else {
            &[]
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(appendonly)
            .args(cluster)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}); install Debian's redis-server")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("redis-server did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it runs (not killed).
    pub(crate) fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it (SIGKILL), leaving its directory.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }

    /// Stops it and removes its directory.
    pub(crate) fn stop(&mut self) {
        self.kill();
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn nodes_on_one_machine_share_its_cpus() {
        for (cpus, nodes, each) in [
            (2, 2, 1),
            (2, 6, 1),
            (8, 2, 4),
            (8, 3, 2),
            (4, 1, 4),
            (1, 0, 1),
        ] {
            assert_eq!(
                worker_share(cpus, nodes),
                each,
                "{cpus} CPUs, {nodes} nodes"
            );
        }
    }
}
