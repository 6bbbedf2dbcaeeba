//! `agent-server serve` in a child process (the real entry point, `serve_from_args`, with its
//! signal handling): the test binary runs itself again with only [`child_server`] and the
//! server's words in an environment variable. For what needs a real process: stopping it
//! with SIGTERM or SIGKILL (kill -9).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ARGV: &str = "AGENT_IT_SERVE_ARGV";

/// Not a test of its own: the body of the child, `agent-server serve` with the words of
/// [`CHILD_ARGV`]. Without it (a normal run) it has nothing to do.
#[test]
fn child_server() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv: Vec<&str> = argv.lines().collect();
    let (_, args, _) = crate::config::load(&argv).unwrap();
    let served = agent_server::server::runtime(args.worker_threads)
        .unwrap()
        .block_on(agent_server::server::serve_from_args(args));
    served.unwrap();
}

/// A server in a child process; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `agent-server` with `argv` (`serve` and its flags; `--addr 127.0.0.1:0` lets
    /// it pick a port) and waits until it says where it listens.
    pub fn start(argv: &[&str]) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process_support::child_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ARGV, argv.join("\n"))
            .env_remove("AGENT_SERVER_APPROVE_TOOLS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addr = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            // The test harness writes its own words before the server's on the same line.
            const SAYS: &str = "agent-server listening on http://";
            if let Some(at) = line.find(SAYS) {
                let rest = &line[at + SAYS.len()..];
                addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
                break;
            }
        }
        Self {
            child,
            addr: addr.expect("the child server says where it listens"),
        }
    }

    /// The first `lines` lines the server prints when started with `argv` (where it listens,
    /// its agents, its model): it is stopped once they are read.
    pub fn banner(argv: &[&str], lines: usize) -> Vec<String> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "process_support::child_server", "--nocapture"])
            .env(CHILD_ARGV, argv.join("\n"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let said: Vec<String> = stdout
            .lines()
            .map(Result::unwrap)
            .skip_while(|line| !line.contains("agent-server listening on"))
            .take(lines)
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        said
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) and waits (up to 15 s) for the process to end.
    pub fn stop(mut self, signal: &str) {
        let pid = self.child.id();
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .unwrap();
        assert!(sent.success());
        let until = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < until,
                "the server did not stop on SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
