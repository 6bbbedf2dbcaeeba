//! `POST /agui/{agent}` driven by the reference AG-UI client: `@ag-ui/client`'s `HttpAgent`
//! (which checks the stream's rules as it reads), run by node from `tests/agui-client`
//! (`npm ci --prefix tests/agui-client` installs it; `.ci/run` does). The assistant's run
//! through a tool with a streamed answer, an agent's error, a missing token, a cancel by
//! aborting, and two users at once each getting only their own run; the runs seen on the
//! users' sockets.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::server_support::{Client, start_server, token};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agui-client")
}

/// What the client printed for one run: the events it accepted, and how the run ended
/// (`done` or `failed`).
pub(crate) struct Seen {
    pub(crate) events: Vec<Value>,
    pub(crate) end: Value,
}

impl Seen {
    fn types(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect()
    }

    /// The engine's run id (from the `agent-engine.run` event).
    fn run_id(&self) -> &str {
        self.events
            .iter()
            .find(|e| e["name"] == "agent-engine.run")
            .and_then(|e| e["value"]["run_id"].as_str())
            .unwrap_or_else(|| panic!("no agent-engine.run event in {:?}", self.events))
    }
}

/// Runs `node` with `args` (a script of `tests/agui-client` and its arguments) to its end;
/// what it printed on stdout and stderr.
pub(crate) async fn node_script(args: Vec<String>) -> (String, String) {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/@ag-ui/client").exists(),
        "the AG-UI client is not installed: npm ci --prefix tests/agui-client (.ci/run does)"
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(&args)
            .current_dir(dir)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs (apt-get install nodejs)");
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the client: `agent` on `addr` as `user` (no token for `None`).
pub(crate) async fn run(
    addr: SocketAddr,
    agent: &str,
    user: Option<&str>,
    message: &str,
    props: Value,
    abort_at: &str,
) -> Seen {
    let args = vec![
        "run.mjs".to_owned(),
        format!("http://{addr}/agui/{agent}"),
        user.map(token).unwrap_or_default(),
        format!("thread-{}", core_context::RunId::generate()),
        message.to_owned(),
        props.to_string(),
        abort_at.to_owned(),
    ];
    let (stdout, stderr) = node_script(args).await;
    let mut events = Vec::new();
    let mut end = Value::Null;
    for line in stdout.lines() {
        let line: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}\n{stderr}"));
        match line.get("event") {
            Some(event) => events.push(event.clone()),
            None => end = line,
        }
    }
    assert!(
        !end.is_null(),
        "the client did not finish: {stdout}\n{stderr}"
    );
    Seen { events, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_runs_tools_streams_answers_and_reports_errors() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let seen = run(
        addr,
        "assistant",
        Some("alice"),
        "What is 12*7?",
        json!({}),
        "",
    )
    .await;
    assert!(seen.end.get("done").is_some(), "{}", seen.end);
    let types = seen.types();
    assert_eq!(types.first(), Some(&"RUN_STARTED"));
    assert_eq!(types.last(), Some(&"RUN_FINISHED"));
    for needed in [
        "TOOL_CALL_START",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_CONTENT",
    ] {
        assert!(types.contains(&needed), "no {needed} in {types:?}");
    }
    let answer = seen.end["done"]["newMessages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| m["content"].as_str())
        .collect::<String>();
    assert!(answer.contains("84"), "{}", seen.end);
    // The same run, on alice's socket.
    let socket = alice.events_until_terminals(1).await;
    assert!(
        socket
            .iter()
            .all(|e| e.event.run_id.as_str() == seen.run_id())
    );
    assert_eq!(
        socket.last().unwrap().event.kind.type_name(),
        "agent_completed"
    );

    // An agent's error reaches the client as RUN_ERROR with its code.
    let failed = run(
        addr,
        "synthetic",
        Some("alice"),
        "fail",
        json!({"fail": "boom"}),
        "",
    )
    .await;
    let error = failed.events.iter().find(|e| e["type"] == "RUN_ERROR");
    assert_eq!(
        error.map(|e| (&e["code"], &e["message"])),
        Some((&json!("synthetic_failure"), &json!("boom"))),
        "{:?} {}",
        failed.events,
        failed.end
    );
    // No token: refused before anything runs.
    let refused = run(addr, "assistant", None, "hi", json!({}), "").await;
    assert!(refused.events.is_empty(), "{:?}", refused.events);
    assert!(
        refused.end["failed"].as_str().unwrap().contains("401"),
        "{}",
        refused.end
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_cancels_and_two_users_at_once_get_only_their_own_runs() {
    // An aborted response cancels its run after the grace a continuation would have had.
    let server = start_server(|c| c.agui_reattach = std::time::Duration::from_secs(1)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let hang = json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true});
    let aborted = run(
        addr,
        "synthetic",
        Some("alice"),
        "wait",
        hang,
        "REASONING_END",
    )
    .await;
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(last.run_id.as_str(), aborted.run_id());
    assert_eq!(last.kind.type_name(), "agent_cancelled");

    let shape = json!({"thinking": 2, "tools": 2, "chunks": 4, "sleep_ms": 20});
    let (a, b) = tokio::join!(
        run(addr, "synthetic", Some("alice"), "mine", shape.clone(), ""),
        run(addr, "synthetic", Some("bob"), "mine too", shape, "")
    );
    assert_ne!(a.run_id(), b.run_id());
    for seen in [&a, &b] {
        assert!(seen.end.get("done").is_some(), "{}", seen.end);
        for event in &seen.events {
            let raw = &event["rawEvent"];
            if !raw.is_null() {
                assert_eq!(raw["run_id"], seen.run_id(), "another run's event: {event}");
            }
        }
        assert_eq!(
            seen.types()
                .iter()
                .filter(|t| **t == "TOOL_CALL_START")
                .count(),
            2
        );
    }
    server.shutdown().await;
}
