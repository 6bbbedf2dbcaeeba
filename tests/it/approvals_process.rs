//! Paused runs outlive a real server process: `agent-server serve` (the real entry point,
//! `serve_from_args`, with its signal handling) runs in a child process, a run pauses for
//! approval, the process is stopped with SIGTERM (graceful) or SIGKILL (kill -9), and a new
//! process on the same SQLite file resumes the run when it is approved; the call ran once.

use serde_json::json;

use crate::approvals::{decide, paused_run, rest_of_run, sqlite, store_dir};
use crate::history_server::http;
use crate::process_support::ServerProcess;
use crate::server_support::{Client, SECRET};

/// A server process keeping its history in `store`, holding `calculator` calls.
fn server(store: &str) -> ServerProcess {
    ServerProcess::start(&[
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
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_resumes_in_a_new_process_after_sigterm_and_after_sigkill() {
    let dir = store_dir();
    let store = sqlite(&dir);
    for signal in ["TERM", "KILL"] {
        let first = server(&store);
        let mut alice = Client::user(first.addr, "alice").await;
        let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
        let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
        drop(alice);
        first.stop(signal);

        let second = server(&store);
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
