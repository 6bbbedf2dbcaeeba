//! Approvals with the `llm` agent on a scripted model, and paused runs that outlive their
//! process: several calls of one model turn wait together and the run resumes once both are
//! decided, with the person's rejection reaching the model as the tool's result; a run paused
//! before a graceful restart (what SIGTERM does) or a crash (kill -9) resumes on the next
//! process when it is approved, and its tool runs once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_server::config::ServerConfig;
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::approvals::{approving, decide, paused_run, rest_of_run, sqlite, store_dir};
use crate::approvals_engine::Tally;
use crate::history_server::{eventually, http};
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::server_support::{Client, KillableServer, start_server};

/// A model turn that calls `calls` (id, tool, arguments), then one that answers `answer`.
fn turns(calls: &[(&str, &str, &str)], answer: &str) -> Vec<Reply> {
    let mut first = Vec::new();
    for (index, (id, tool, args)) in calls.iter().enumerate() {
        first.push(tool_piece(index as u64, Some(id), Some(tool), args));
    }
    first.push(DONE);
    vec![
        Reply::Stream(first),
        Reply::Stream(vec![content(answer), DONE]),
    ]
}

/// Settings with the `llm` agent on `model`, approvals for `patterns`, and the tally tool.
fn with_model(
    store: &str,
    patterns: &[&str],
    model: &Model,
    tally: &Arc<AtomicU32>,
) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let base = approving(store, patterns);
    let url = format!("http://{}/v1", model.addr);
    let tally = Arc::clone(tally);
    move |config| {
        base(config);
        config.llm = Some(LlmConfig::new(url, "test-model"));
        config.tools.tools.push(Arc::new(Tally(tally)));
    }
}

/// The `tool` messages of the model's `n`th request, by call id.
fn tool_results(model: &Model, n: usize) -> Vec<(String, String)> {
    let requests = model.requests();
    requests[n].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_of_one_turn_wait_together_and_a_rejection_reaches_the_model() {
    let model = Model::start(turns(
        &[
            ("call_a", "calculator", r#"{"expression":"2+2"}"#),
            (
                "call_b",
                "calculator",
                r#"{"expression":"3*3","api_key":"sk-live-secret-42"}"#,
            ),
        ],
        "Four, and I skipped the other.",
    ))
    .await;
    let dir = store_dir();
    let tally = Arc::new(AtomicU32::new(0));
    let server = start_server(with_model(&sqlite(&dir), &["calc*"], &model, &tally)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (run, first) = paused_run(&mut alice, "llm", "compute both").await;
    assert_eq!(first["data"]["tool_call_id"], "call_a");
    let second = alice.next().await;
    assert_eq!(second["type"], "approval_requested", "{second}");
    assert_eq!(second["data"]["tool_call_id"], "call_b");
    assert_eq!(model.requests().len(), 1);
    // A sensitive argument is shown redacted, in the event and in the listing alike.
    assert_eq!(second["data"]["arguments"]["api_key"], "[REDACTED]");
    let (_, listed) = http(addr, "GET", "/v1/approvals", Some("alice")).await;
    assert_eq!(
        listed["approvals"][1]["arguments"]["api_key"], "[REDACTED]",
        "{listed}"
    );
    assert!(
        !listed.to_string().contains("sk-live-secret-42"),
        "{listed}"
    );

    let (status, reply) = decide(
        addr,
        "alice",
        &run,
        "call_a",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (reply["waiting"].as_u64(), reply["resumed"].as_bool()),
        (Some(1), Some(false))
    );
    let resolved = alice.next().await;
    assert_eq!(
        resolved["data"],
        json!({"tool_call_id": "call_a", "decision": "approve"})
    );
    let (_, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
    assert_eq!(
        detail["status"], "waiting_for_approval",
        "one call still waits"
    );

    let (status, reply) = decide(
        addr,
        "alice",
        &run,
        "call_b",
        json!({"decision": "reject", "message": "use mental math"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["resumed"], true);
    let rest = rest_of_run(&mut alice, &run).await;
    assert_eq!(
        rest[0]["data"],
        json!({"tool_call_id": "call_b", "decision": "reject"})
    );
    assert_eq!(
        rest.last().unwrap()["data"]["result"],
        "Four, and I skipped the other."
    );
    let results = tool_results(&model, 1);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].0, "call_a");
    assert!(results[0].1.contains("\"value\":4"), "{results:?}");
    assert_eq!(results[1].0, "call_b");
    assert!(
        results[1]
            .1
            .contains("a person rejected this call: use mental math"),
        "{results:?}"
    );
    // The model was asked twice: the resumed run did not call it again for the first turn.
    assert_eq!(model.requests().len(), 2);
    server.shutdown().await;
}

/// Polls `/v1/runs/{run}` until its status is `status`.
async fn status_becomes(addr: std::net::SocketAddr, user: &str, run: &str, status: &str) -> Value {
    let path = format!("/v1/runs/{run}");
    eventually(addr, &path, user, |body| body["status"] == status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_run_resumes_after_a_graceful_restart_and_after_a_crash() {
    let dir = store_dir();
    let store = sqlite(&dir);
    let tally = Arc::new(AtomicU32::new(0));
    let mut replies = turns(&[("call_t1", "tally", "{}")], "counted once");
    replies.extend(turns(&[("call_t2", "tally", "{}")], "counted again"));
    let model = Model::start(replies).await;

    // Paused, then the server stops gracefully; the next one resumes it on approval.
    let first = start_server(with_model(&store, &["tally"], &model, &tally)).await;
    let mut alice = Client::user(first.addr(), "alice").await;
    let (graceful, _) = paused_run(&mut alice, "llm", "count").await;
    drop(alice);
    first.shutdown().await;
    let second = start_server(with_model(&store, &["tally"], &model, &tally)).await;
    let addr = second.addr();
    let detail = status_becomes(addr, "alice", &graceful, "waiting_for_approval").await;
    assert!(detail["finished_ms"].is_null(), "{detail}");
    let (status, reply) = decide(
        addr,
        "alice",
        &graceful,
        "call_t1",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(
        (status, reply["resumed"].as_bool()),
        (200, Some(true)),
        "{reply}"
    );
    let done = status_becomes(addr, "alice", &graceful, "completed").await;
    assert_eq!(done["outcome"], "counted once");
    assert_eq!(tally.load(Ordering::SeqCst), 1);
    let kinds: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent_started").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"approval_requested") && kinds.contains(&"approval_resolved"));
    second.shutdown().await;

    // Paused, then the process dies at once (kill -9): nothing flushed after the pause.
    let mut doomed = KillableServer::start(with_model(&store, &["tally"], &model, &tally));
    let mut alice = Client::user(doomed.addr, "alice").await;
    let (crashed, _) = paused_run(&mut alice, "llm", "count again").await;
    doomed.kill();
    drop(alice);
    let third = start_server(with_model(&store, &["tally"], &model, &tally)).await;
    let addr = third.addr();
    status_becomes(addr, "alice", &crashed, "waiting_for_approval").await;
    let mut alice = Client::user(addr, "alice").await;
    alice
        .send(json!({"type": "resolve_approval", "payload":
            {"run_id": crashed, "tool_call_id": "call_t2", "decision": "approve"}}))
        .await;
    let rest = rest_of_run(&mut alice, &crashed).await;
    assert_eq!(rest.last().unwrap()["data"]["result"], "counted again");
    assert_eq!(
        tally.load(Ordering::SeqCst),
        2,
        "each approved call ran once"
    );
    // Deciding again after the resume changes nothing.
    let (status, _) = decide(
        addr,
        "alice",
        &crashed,
        "call_t2",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(tally.load(Ordering::SeqCst), 2);
    third.shutdown().await;
}
