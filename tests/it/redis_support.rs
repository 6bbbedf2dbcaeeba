//! A private `redis-server` per test: a free port on loopback, a temp dir, no persistence
//! (so a restart loses everything, as a flushed or crashed Redis does). Stopped on drop.
//!
//! [`RedisServer::start_tls`] serves TLS only (`rediss://`), with a certificate the test made.
//!
//! The tests need Debian's `redis-server` (`.ci/run` installs it when missing).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Expires every user's run leases and the reapers' index entries (see `redis_broker::runs`).
pub const EXPIRE_RUN_LEASES: &str = "
for _, key in ipairs(redis.call('KEYS', 'agentws:{*}:leases')) do
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do redis.call('ZADD', key, 0, m) end
end
for _, u in ipairs(redis.call('ZRANGE', 'agentws:reap', 0, -1)) do
  redis.call('ZADD', 'agentws:reap', 0, u)
end
return 1";

/// A running private Redis.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// The directory of `ca.pem`, `server.pem` and `server.key` when it serves TLS only.
    tls: Option<PathBuf>,
    /// Whether it asks TLS clients for a certificate signed by `ca.pem`.
    client_auth: bool,
    /// Whether it keeps its data across [`RedisServer::shut_down`] (an append-only file
    /// written before each reply).
    persistent: bool,
}

pub fn binary() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

/// `count` nodes on free ports, all on the Redis (or Redis Cluster) at `url`, each with its
/// settings then changed by `tune`.
pub async fn nodes_on(
    url: &str,
    count: usize,
    tune: impl Fn(&mut agent_server::config::ServerConfig),
) -> Vec<agent_server::server::RunningServer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(
            crate::server_support::start_server(|config| {
                config.broker = agent_server::config::BrokerChoice::Redis(url.to_owned());
                config.start_rate_per_minute = 1_000;
                tune(config);
            })
            .await,
        );
    }
    nodes
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port on loopback")
        .port()
}

impl RedisServer {
    /// Starts a Redis on a free port; panics with what to install if it cannot.
    pub fn start() -> Self {
        Self::start_with(None, false, false)
    }

    /// Starts a Redis that speaks TLS only, on a free port, with `certificates`'
    /// `server.pem` and `server.key` (made by `mcp_https::certificates`); clients need no
    /// certificate of their own.
    pub fn start_tls(certificates: &Path) -> Self {
        Self::start_with(Some(certificates.to_owned()), false, false)
    }

    /// Like [`RedisServer::start_tls`], but clients must present a certificate signed by
    /// `certificates`' `ca.pem` (`--tls-auth-clients yes`).
    pub fn start_mtls(certificates: &Path) -> Self {
        Self::start_with(Some(certificates.to_owned()), true, false)
    }

    /// Starts a Redis that keeps its data across [`RedisServer::shut_down`] and
    /// [`RedisServer::start_again`], as a managed Redis with persistence does.
    pub fn start_persistent() -> Self {
        Self::start_with(None, false, true)
    }

    fn start_with(tls: Option<PathBuf>, client_auth: bool, persistent: bool) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("agent-it-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let mut server = Self {
                child: None,
                port,
                dir,
                tls: tls.clone(),
                client_auth,
                persistent,
            };
            if server.launch() {
                return server;
            }
        }
        panic!("could not start a private redis-server on a free port");
    }

    /// Spawns on `self.port`; false if it did not come up (the port was taken meanwhile).
    fn launch(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new(binary());
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(files) => tls_only(&mut command, files, &port).args([
                "--tls-auth-clients",
                if self.client_auth { "yes" } else { "no" },
            ]),
        };
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", appendonly, "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); install Debian's redis-server (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: nothing is saved, clients see their sockets drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Expires every run lease (held slots and queue places) now, as if their nodes had
    /// stopped renewing them: the next reap takes them all.
    pub fn expire_run_leases(&self) {
        let expired = self.command(&["EVAL", EXPIRE_RUN_LEASES, "0"]);
        assert_eq!(expired, ":1", "expiring the run leases");
    }

    /// Its port on loopback.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command (RESP array of `args`) and returns the raw reply's first line.
    pub fn command(&self, args: &[&str]) -> String {
        query(self.port, args)
    }

    /// Stops it the way an operator does (SHUTDOWN: a persistent one keeps its data); its
    /// port refuses connections until [`RedisServer::start_again`].
    pub fn shut_down(&mut self) {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("redis is up");
        stream
            .write_all(b"*1\r\n$8\r\nSHUTDOWN\r\n")
            .expect("write to redis");
        // Redis answers a SHUTDOWN that worked by closing the connection.
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(
            answer.is_empty(),
            "SHUTDOWN answered {}",
            String::from_utf8_lossy(&answer)
        );
        if let Some(mut child) = self.child.take() {
            let status = child.wait().expect("wait for redis-server");
            assert!(status.success(), "redis-server exited with {status}");
        }
    }

    /// Starts it again on the same port, with what it kept (everything, when persistent).
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it and starts it again on the same port, empty (unless persistent: SIGKILL
    /// loses nothing an `appendfsync always` Redis answered).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

/// Makes `command` a Redis that speaks TLS only on `port`, with `files`' `server.pem`,
/// `server.key` and `ca.pem`.
pub fn tls_only<'c>(command: &'c mut Command, files: &Path, port: &str) -> &'c mut Command {
    command
        .args(["--port", "0", "--tls-port", port])
        .arg("--tls-cert-file")
        .arg(files.join("server.pem"))
        .arg("--tls-key-file")
        .arg(files.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(files.join("ca.pem"))
}

/// Sends one command (RESP array of `args`) to the Redis on `port` of loopback and returns
/// the raw reply's first line.
pub fn query(port: u16, args: &[&str]) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    send(port, args)
        .read_line(&mut line)
        .expect("read from redis");
    line.trim_end().to_owned()
}

/// Sends one command (RESP array of `args`) to the Redis on `port` of loopback; its reply is
/// to be read.
fn send(port: u16, args: &[&str]) -> std::io::BufReader<TcpStream> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis is up");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("write to redis");
    std::io::BufReader::new(stream)
}

/// Sends one command whose reply is an array of strings (`HKEYS`, `KEYS`) to `redis`, and
/// returns them.
pub fn query_all(redis: &RedisServer, args: &[&str]) -> Vec<String> {
    use std::io::BufRead;
    let mut reader = send(redis.port, args);
    let mut line = || {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read from redis");
        line.trim_end().to_owned()
    };
    let header = line();
    let count: usize = header
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an array reply: {header}"));
    (0..count)
        .map(|_| {
            let length = line();
            assert!(length.starts_with('$'), "not a string: {length}");
            line()
        })
        .collect()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
