//! Paused runs outlive a real server process: `agent-server serve` (the real entry point,
//! `serve_from_args`, with its signal handling) runs in a child process, a run pauses for
//! approval, the process is stopped with SIGTERM (graceful) or SIGKILL (kill -9), and a new
//! process on the same SQLite file resumes the run when it is approved; the call ran once.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::approvals::{decide, paused_run, rest_of_run, sqlite, store_dir};
use crate::history_server::http;
use crate::server_support::{Client, SECRET};

const CHILD_ARGV: &str = "AGENT_IT_APPROVALS_SERVE_ARGV";

/// Not a test of its own: the body of the child, `agent-server serve` with the words of
/// [`CHILD_ARGV`]. Without it (a normal run) it has nothing to do.
#[test]
fn child_server() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv: Vec<&str> = argv.lines().collect();
    let (_, args, _) = crate::config::load(&argv).unwrap();
    let served = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(agent_server::server::serve_from_args(args));
    served.unwrap();
}

/// A server process keeping its history in `store`, holding `calculator` calls.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(store: &str) -> Self {
        let argv = [
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--store",
            store,
            "--approve-tools",
            "calculator",
            "--shutdown-grace-secs",
            "1",
        ]
        .join("\n");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "approvals_process::child_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ARGV, argv)
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

    /// Sends `signal` and waits (up to 15 s) for the process to end.
    fn stop(mut self, signal: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_resumes_in_a_new_process_after_sigterm_and_after_sigkill() {
    let dir = store_dir();
    let store = sqlite(&dir);
    for signal in ["TERM", "KILL"] {
        let first = ServerProcess::start(&store);
        let mut alice = Client::user(first.addr, "alice").await;
        let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
        let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
        drop(alice);
        first.stop(signal);

        let second = ServerProcess::start(&store);
        let addr = second.addr;
        let (_, waiting) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
        assert_eq!(
            waiting["status"], "waiting_for_approval",
            "SIG{signal}: {waiting}"
        );
        let mut alice = Client::user(addr, "alice").await;
        let (status, reply) =
            decide(addr, "alice", &run, &call, json!({"decision": "approve"})).await;
        assert_eq!(
            (status, reply["resumed"].as_bool()),
            (200, Some(true)),
            "SIG{signal}: {reply}"
        );
        let rest = rest_of_run(&mut alice, &run).await;
        assert_eq!(
            rest.last().unwrap()["data"]["result"],
            "`12*7` = 84.",
            "SIG{signal}"
        );
        let (_, done) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
        assert_eq!(done["status"], "completed", "SIG{signal}: {done}");
        let events = done["events"].as_array().unwrap();
        let ran = events
            .iter()
            .filter(|e| e["type"] == "tool_executing" && e["data"]["tool_call_id"] == call.as_str())
            .count();
        assert_eq!(ran, 1, "SIG{signal}: the call ran once: {events:?}");
        second.stop("TERM");
    }
}
