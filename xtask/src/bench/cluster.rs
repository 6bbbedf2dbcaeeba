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
    let mut run = Run::default();
    let mut redis = match Redis::start(log_dir) {
        Ok(redis) => redis,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let broker = ["--broker".to_owned(), redis.url()];
    let (program, args) = server_command(binaries, scenario, Kind::AgentServer, &broker);
    run.server_command = format!(
        "redis-server --port $REDIS_PORT --save '' --appendonly no & {} (× {})",
        shell_line(&program, &args).replace(&redis.url(), "redis://127.0.0.1:$REDIS_PORT"),
        scenario.nodes
    );
    let mut nodes: Vec<Child> = Vec::new();
    let mut addrs = Vec::new();
    for n in 1..=scenario.nodes {
        let log = log_dir.join(format!("{}-node{n}.log", scenario.name));
        match start_server(&program, &args, &log) {
            Ok((child, addr)) => {
                nodes.push(child);
                addrs.push(addr);
            }
            Err(e) => {
                run.error = Some(e);
                break;
            }
        }
    }
    if run.error.is_none() {
        load(binaries, scenario, &addrs, nodes[0].id(), &mut run);
    }
    for mut node in nodes {
        let _killed = node.kill();
        let _reaped = node.wait();
    }
    redis.stop();
    std::thread::sleep(Duration::from_secs(1));
    run
}

/// A private Redis for one run.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    /// Whether it keeps an append-only file, written before each reply (survives a crash).
    persistent: bool,
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

    fn start_with(log_dir: &Path, persistent: bool) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for redis-server: {e}"))?
            .port();
        let dir = log_dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut redis = Redis {
            child: None,
            port,
            dir,
            persistent,
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// Kills it (SIGKILL, a crash) and starts it again on the same port and directory.
    pub(crate) fn crash_and_restart(&mut self, down_for: Duration) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
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
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(appendonly)
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

    /// Stops it and removes its directory.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
