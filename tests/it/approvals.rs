//! Approvals end to end over real sockets and HTTP, on a server keeping its history in
//! SQLite: each decision (`approve`, `edit`, `reject`, `respond`, an expiry) resumes the
//! paused run to the answer it implies; a run that waits holds the status
//! `waiting_for_approval` and is listed; another user cannot see, decide or cancel it (404
//! like a missing one); a second decision is 409, a late one 410, a bad one 400 naming the
//! field; a waiting run is cancelled with `agent_cancelled`.

use std::net::SocketAddr;
use std::time::Duration;

use agent_server::config::ServerConfig;
use serde_json::{Value, json};

use crate::history::TempDir;
use crate::history_server::{http, http_sending};
use crate::server_support::{Client, start_server};

/// A temp dir for a SQLite history.
pub fn store_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "agent-it-approvals-{}-{}",
        std::process::id(),
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The store URL of `dir`.
pub fn sqlite(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.0.join("history.db").display())
}

/// Settings of a server whose `patterns` need approval, keeping its history at `store`.
pub fn approving(store: &str, patterns: &[&str]) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let store = store.to_owned();
    let policy = agent_registry::ApprovalPolicy::new(patterns.iter().copied()).unwrap();
    move |config| {
        config.store = Some(store);
        config.start_rate_per_minute = 1_000;
        config.shutdown_grace = Duration::from_millis(50);
        config.engine.approve_tools = policy;
    }
}

/// Starts `message` with the assistant; returns its run id once it asks for approval, with
/// the `approval_requested` frame.
pub async fn paused_run(client: &mut Client, agent: &str, message: &str) -> (String, Value) {
    client
        .send(json!({"type": "start_agent", "payload": {"agent": agent, "message": message}}))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    loop {
        let frame = client.next().await;
        assert_ne!(frame["type"], "agent_completed", "{frame}");
        if frame["run_id"] == run.as_str() && frame["type"] == "approval_requested" {
            return (run, frame);
        }
    }
}

/// The user's frames of `run` until its terminal event, in order.
pub async fn rest_of_run(client: &mut Client, run: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.next().await;
        if frame["run_id"] != run {
            continue;
        }
        let end = matches!(
            frame["type"].as_str(),
            Some("agent_completed" | "agent_error" | "agent_cancelled")
        );
        frames.push(frame);
        if end {
            return frames;
        }
    }
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

/// POSTs a decision as `user`; the status and the JSON body.
pub async fn decide(
    addr: SocketAddr,
    user: &str,
    run: &str,
    call: &str,
    body: Value,
) -> (u16, Value) {
    let (status, text) = http_sending(
        addr,
        "POST",
        &format!("/v1/runs/{run}/approvals/{call}"),
        Some(user),
        &body.to_string(),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_over_the_socket_and_http_resumes_the_assistant() {
    let dir = store_dir();
    let server = start_server(approving(&sqlite(&dir), &["calculator"])).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;

    // approve, over the socket: the run pauses, is listed, waits, and goes on.
    let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
    let data = &asked["data"];
    assert_eq!(data["tool_name"], "calculator");
    assert_eq!(data["arguments"], json!({"expression": "12*7"}));
    let call = data["tool_call_id"].as_str().unwrap().to_owned();
    let expires = serde_json::from_value::<core_context::Timestamp>(data["expires_at"].clone())
        .unwrap()
        .as_system_time();
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        ahead > Duration::from_secs(23 * 3600) && ahead <= Duration::from_secs(24 * 3600),
        "{ahead:?}"
    );
    let (status, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
    assert_eq!(
        (status, detail["status"].as_str()),
        (200, Some("waiting_for_approval")),
        "{detail}"
    );
    let (_, listed) = http(addr, "GET", "/v1/approvals", Some("alice")).await;
    let listed = listed["approvals"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["run_id"], run.as_str());
    assert_eq!(listed[0]["tool_call_id"], call.as_str());
    assert_eq!(listed[0]["tool_name"], "calculator");
    // Another user sees nothing, and cannot decide or cancel it: exactly like a missing run.
    let (_, theirs) = http(addr, "GET", "/v1/approvals", Some("bob")).await;
    assert_eq!(theirs["approvals"], json!([]));
    let (status, body) = decide(addr, "bob", &run, &call, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("approval_not_found")),
        "{body}"
    );
    let (missing, body_missing) = decide(
        addr,
        "bob",
        "run_nope",
        "call_nope",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(missing, 404);
    assert_eq!(
        body["message"]
            .as_str()
            .unwrap()
            .replace(&call, "C")
            .replace(&run, "R"),
        body_missing["message"]
            .as_str()
            .unwrap()
            .replace("run_nope", "R")
            .replace("call_nope", "C")
    );
    let mut bob = Client::user(addr, "bob").await;
    bob.send(
        json!({"type": "resolve_approval", "request_id": "b1", "payload":
        {"run_id": run, "tool_call_id": call, "decision": "approve"}}),
    )
    .await;
    let refused = bob.reply().await;
    assert_eq!(refused["code"], "approval_not_found", "{refused}");
    bob.send(json!({"type": "cancel_run", "request_id": "b2", "payload": {"run_id": run}}))
        .await;
    assert_eq!(bob.reply().await["code"], "run_not_found");
    // Bad decisions are refused naming the field, and change nothing.
    for (body, field) in [
        (json!({}), "decision is required"),
        (
            json!({"decision": "maybe"}),
            "decision \"maybe\" is not a decision",
        ),
        (
            json!({"decision": "edit"}),
            "arguments is required for edit",
        ),
        (
            json!({"decision": "edit", "arguments": {"expression": 5}}),
            "arguments do not fit calculator's schema",
        ),
        (
            json!({"decision": "approve", "extra": 1}),
            "unknown field \"extra\"",
        ),
    ] {
        let (status, answer) = decide(addr, "alice", &run, &call, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{body}: {answer}"
        );
    }
    alice
        .send(
            json!({"type": "resolve_approval", "request_id": "a1", "payload":
            {"run_id": run, "tool_call_id": call, "decision": "approve"}}),
        )
        .await;
    let rest = rest_of_run(&mut alice, &run).await;
    assert_eq!(
        types(&rest)[..3],
        ["approval_resolved", "tool_executing", "tool_completed"]
    );
    assert_eq!(
        rest[0]["data"],
        json!({"tool_call_id": call, "decision": "approve"})
    );
    assert_eq!(rest.last().unwrap()["data"]["result"], "`12*7` = 84.");
    // A second decision: 409.
    let (status, body) = decide(addr, "alice", &run, &call, json!({"decision": "reject"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("approval_already_decided")),
        "{body}"
    );
    let (_, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
    assert_eq!(detail["status"], "completed");

    // edit, reject and respond over HTTP.
    for (body, answer) in [
        (
            json!({"decision": "edit", "arguments": {"expression": "12*8"}}),
            "`12*8` = 96.",
        ),
        (
            json!({"decision": "reject", "message": "not now"}),
            "I could not use calculator: a person rejected this call: not now.",
        ),
        (
            json!({"decision": "respond", "message": "about 84"}),
            "A person answered for calculator: about 84",
        ),
    ] {
        let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
        let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
        let (status, reply) = decide(addr, "alice", &run, &call, body.clone()).await;
        assert_eq!(status, 200, "{body}: {reply}");
        assert_eq!(reply["decision"], body["decision"]);
        assert_eq!(
            (reply["waiting"].as_u64(), reply["resumed"].as_bool()),
            (Some(0), Some(true))
        );
        let rest = rest_of_run(&mut alice, &run).await;
        assert_eq!(rest[0]["data"]["decision"], body["decision"], "{body}");
        assert_eq!(rest.last().unwrap()["data"]["result"], answer, "{body}");
    }

    // Cancelling a waiting run ends it; a decision after that is 409.
    let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
    let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
    alice
        .send(json!({"type": "cancel_run", "payload": {"run_id": run}}))
        .await;
    let rest = rest_of_run(&mut alice, &run).await;
    assert_eq!(types(&rest), ["agent_cancelled"]);
    let (status, _) = decide(addr, "alice", &run, &call, json!({"decision": "approve"})).await;
    assert_eq!(status, 409);
    let (_, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
    assert_eq!(detail["status"], "cancelled");
    let (_, listed) = http(addr, "GET", "/v1/approvals", Some("alice")).await;
    assert_eq!(listed["approvals"], json!([]));
    // Five pauses, four decisions (one of each kind) and the time each waited, counted.
    let metrics = crate::support::metrics_text(addr).await;
    for line in [
        "agent_server_approvals_requested_total 5",
        "agent_server_approvals_resolved_total{decision=\"approve\"} 1",
        "agent_server_approvals_resolved_total{decision=\"edit\"} 1",
        "agent_server_approvals_resolved_total{decision=\"reject\"} 1",
        "agent_server_approvals_resolved_total{decision=\"respond\"} 1",
        "agent_server_approvals_resolved_total{decision=\"expired\"} 0",
        "agent_server_approval_wait_seconds_count 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} is not in {metrics}"
        );
    }
    server.shutdown().await;
}

/// A call nobody decides within `--approval-timeout` is rejected as expired and its run goes
/// on; a decision after that is 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_call_expires_and_the_run_goes_on() {
    let dir = store_dir();
    let tune = approving(&sqlite(&dir), &["calculator"]);
    let server = start_server(move |config| {
        tune(config);
        config.engine.approval_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
    let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
    let rest = rest_of_run(&mut alice, &run).await;
    assert_eq!(
        rest[0]["data"],
        json!({"tool_call_id": call, "decision": "expired"})
    );
    assert_eq!(
        rest.last().unwrap()["data"]["result"],
        "I could not use calculator: nobody approved this call in time; the tool was not called."
    );
    let (status, body) = decide(addr, "alice", &run, &call, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("approval_expired")),
        "{body}"
    );
    // A call past its expiry that the sweep (every 5 s, and it just ran) has not reached
    // yet: 410 as well, and the run goes on at once rather than at the next sweep.
    let (run, asked) = paused_run(&mut alice, "assistant", "What is 2*3?").await;
    let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = decide(addr, "alice", &run, &call, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("approval_expired")),
        "{body}"
    );
    let rest = rest_of_run(&mut alice, &run).await;
    assert_eq!(rest[0]["data"]["decision"], "expired");
    server.shutdown().await;
}
