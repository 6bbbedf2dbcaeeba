//! A second message into a busy thread (`payload.multitask`, over real sockets): one run per
//! thread at a time, `reject` refused with `thread_busy` naming the running run, `enqueue`
//! runs after it (`run_accepted` says queued and where), `interrupt` ends it as
//! `interrupted` keeping its partial answer for the next run's model, `rollback` ends and
//! erases it, a call in flight is closed before the interrupted run's end, and a hundred
//! users double texting at once each get exactly what their strategies say, in order.

use std::collections::HashMap;

use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::approvals::{sqlite, store_dir};
use crate::history::TempDir;
use crate::history_server::http;
use crate::llm::{DONE, Model, Piece, Reply, content, tool_piece};
use crate::server_support::{Client, start_server};

/// A `start_agent` of `agent` saying `message` with `input`, into `thread` (a new one when
/// `None`), with `multitask` when given.
pub(crate) fn ask(
    agent: &str,
    message: &str,
    input: Value,
    thread: Option<&str>,
    multitask: Option<&str>,
) -> Value {
    let mut payload = json!({"agent": agent, "message": message, "input": input});
    if let Some(thread) = thread {
        payload["thread_id"] = json!(thread);
    }
    if let Some(multitask) = multitask {
        payload["multitask"] = json!(multitask);
    }
    json!({"type": "start_agent", "request_id": message, "payload": payload})
}

/// A synthetic run streaming `chunks` chunks `sleep_ms` apart.
pub(crate) fn long(chunks: u32, sleep_ms: u64) -> Value {
    json!({"thinking": 0, "tools": 0, "chunks": chunks, "sleep_ms": sleep_ms})
}

/// Reads events until every run of `runs` has ended; returns every event frame read.
pub(crate) async fn until_ended(client: &mut Client, runs: &[&str]) -> Vec<Value> {
    let mut open: Vec<String> = runs.iter().map(|r| (*r).to_owned()).collect();
    let mut frames = Vec::new();
    while !open.is_empty() {
        let frame = client.next().await;
        if frame.get("seq").is_none() {
            continue;
        }
        if matches!(
            frame["type"].as_str(),
            Some("agent_completed" | "agent_error" | "agent_cancelled")
        ) && frame.get("parent_run_id").is_none()
        {
            open.retain(|r| frame["run_id"] != r.as_str());
        }
        frames.push(frame);
    }
    frames
}

/// Adds to `seen` the events read until every run of `runs` has ended (those that ended
/// within `seen` already are not waited for).
pub(crate) async fn read_until_ended(client: &mut Client, runs: &[&str], seen: &mut Vec<Value>) {
    let ended = |run: &str| {
        seen.iter().any(|f| {
            f["run_id"] == run
                && f.get("parent_run_id").is_none()
                && matches!(
                    f["type"].as_str(),
                    Some("agent_completed" | "agent_error" | "agent_cancelled")
                )
        })
    };
    let open: Vec<&str> = runs.iter().copied().filter(|run| !ended(run)).collect();
    let rest = until_ended(client, &open).await;
    seen.extend(rest);
}

/// The runs of `thread` in the order they started, each with its terminal event, checking
/// that no two of them were ever open at once.
pub(crate) fn one_at_a_time(frames: &[Value], thread: &str) -> Vec<(String, Value)> {
    let mut open: Option<String> = None;
    let mut runs = Vec::new();
    for frame in frames.iter().filter(|f| f["thread_id"] == thread) {
        if frame.get("parent_run_id").is_some() {
            continue;
        }
        let run = frame["run_id"].as_str().unwrap().to_owned();
        match frame["type"].as_str().unwrap() {
            "agent_started" => {
                assert!(
                    open.is_none(),
                    "{run} started while {open:?} was still open in its thread"
                );
                open = Some(run);
            }
            "agent_completed" | "agent_error" | "agent_cancelled" => {
                assert_eq!(open.as_deref(), Some(run.as_str()), "{frame}");
                open = None;
                runs.push((run, frame.clone()));
            }
            _ => assert_eq!(open.as_deref(), Some(run.as_str()), "{frame}"),
        }
    }
    runs
}

fn run_id(accepted: &Value) -> String {
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    accepted["run_id"].as_str().unwrap().to_owned()
}

async fn status(addr: std::net::SocketAddr, user: &str, run: &str) -> (u16, Value) {
    http(addr, "GET", &format!("/v1/runs/{run}"), Some(user)).await
}

fn history(dir: &TempDir) -> impl FnOnce(&mut agent_server::config::ServerConfig) + Send + use<> {
    let store = sqlite(dir);
    move |config| {
        config.store = Some(store);
        config.start_rate_per_minute = 10_000;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_and_reject_keep_one_run_per_thread_in_order() {
    let dir = store_dir();
    let server = start_server(history(&dir)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;

    alice
        .send(ask("synthetic", "first", long(8, 100), None, None))
        .await;
    let first = alice.reply().await;
    assert!(first.get("queued").is_none(), "{first}");
    let a = run_id(&first);
    let thread = first["thread_id"].as_str().unwrap().to_owned();

    alice
        .send(ask(
            "synthetic",
            "second",
            long(2, 10),
            Some(&thread),
            Some("enqueue"),
        ))
        .await;
    let second = alice.reply().await;
    assert_eq!(second["queued"], true, "{second}");
    assert_eq!(second["position"], 1, "{second}");
    let b = run_id(&second);

    alice
        .send(ask(
            "synthetic",
            "refused",
            long(1, 0),
            Some(&thread),
            Some("reject"),
        ))
        .await;
    let refused = alice.reply().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "thread_busy", "{refused}");
    assert_eq!(refused["request_id"], "refused");
    assert!(
        refused["message"].as_str().unwrap().contains(&a),
        "names the running run: {refused}"
    );

    // The server's default is enqueue.
    alice
        .send(ask("synthetic", "third", long(2, 10), Some(&thread), None))
        .await;
    let third = alice.reply().await;
    assert_eq!(third["queued"], true, "{third}");
    assert_eq!(third["position"], 2, "{third}");
    let d = run_id(&third);

    // Another thread is not held up.
    alice
        .send(ask("synthetic", "elsewhere", long(1, 0), None, None))
        .await;
    let elsewhere = alice.reply().await;
    assert!(elsewhere.get("queued").is_none(), "{elsewhere}");
    let e = run_id(&elsewhere);

    let frames = until_ended(&mut alice, &[&a, &b, &d, &e]).await;
    let runs = one_at_a_time(&frames, &thread);
    let order: Vec<&str> = runs.iter().map(|(run, _)| run.as_str()).collect();
    assert_eq!(order, [a.as_str(), b.as_str(), d.as_str()]);
    for (run, end) in &runs {
        assert_eq!(end["type"], "agent_completed", "{run}: {end}");
        let (code, detail) = status(addr, "alice", run).await;
        assert_eq!(code, 200, "{detail}");
        assert_eq!(detail["status"], "completed", "{detail}");
    }
    let (_, listed) = http(addr, "GET", &format!("/v1/threads/{thread}"), Some("alice")).await;
    assert_eq!(
        listed["runs"].as_array().map(Vec::len),
        Some(3),
        "the refused message left no run: {listed}"
    );
    // Counted by strategy: two queued behind a running run, one refused.
    let metrics = crate::support::metrics_text(addr).await;
    for line in [
        "agent_server_busy_thread_messages_total{strategy=\"enqueue\",outcome=\"accepted\"} 2",
        "agent_server_busy_thread_messages_total{strategy=\"reject\",outcome=\"refused\"} 1",
        "agent_server_busy_thread_messages_total{strategy=\"interrupt\",outcome=\"accepted\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_can_be_cancelled_and_the_thread_goes_on() {
    let dir = store_dir();
    let server = start_server(history(&dir)).await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice
        .send(ask("synthetic", "long", long(6, 100), None, None))
        .await;
    let first = alice.reply().await;
    let a = run_id(&first);
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    alice
        .send(ask(
            "synthetic",
            "dropped",
            long(1, 0),
            Some(&thread),
            Some("enqueue"),
        ))
        .await;
    let b = run_id(&alice.reply().await);
    alice
        .send(ask(
            "synthetic",
            "kept",
            long(1, 0),
            Some(&thread),
            Some("enqueue"),
        ))
        .await;
    let c = run_id(&alice.reply().await);
    alice
        .send(json!({"type": "cancel_run", "request_id": "x", "payload": {"run_id": b}}))
        .await;
    let frames = until_ended(&mut alice, &[&a, &b, &c]).await;
    let ends: HashMap<String, Value> = frames
        .iter()
        .filter(|f| {
            matches!(
                f["type"].as_str(),
                Some("agent_completed" | "agent_cancelled")
            )
        })
        .map(|f| (f["run_id"].as_str().unwrap().to_owned(), f.clone()))
        .collect();
    assert_eq!(ends[&b]["type"], "agent_cancelled", "{:?}", ends[&b]);
    assert_eq!(ends[&a]["type"], "agent_completed");
    assert_eq!(ends[&c]["type"], "agent_completed");
    // The cancelled one still opened and closed (it never ran), before the first ended.
    let seq_of = |run: &str, kind: &str| {
        frames
            .iter()
            .find(|f| f["run_id"] == run && f["type"] == kind)
            .map(|f| f["seq"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no {kind} of {run}"))
    };
    assert!(seq_of(&b, "agent_cancelled") < seq_of(&a, "agent_completed"));
    assert!(seq_of(&a, "agent_completed") < seq_of(&c, "agent_started"));
}

/// The `llm` agent's first turn streams a part of its answer, then stalls.
fn stalling(text: &'static str) -> Reply {
    Reply::Stream(vec![
        content(text),
        Piece::Sleep(20_000),
        content(" never"),
        DONE,
    ])
}

fn answer(text: &'static str) -> Reply {
    Reply::Stream(vec![content(text), DONE])
}

async fn llm_server(dir: &TempDir, model: &Model) -> agent_server::server::RunningServer {
    let base = history(dir);
    let url = format!("http://{}/v1", model.addr);
    start_server(move |config| {
        base(config);
        config.llm = Some(LlmConfig::new(url, "test-model"));
    })
    .await
}

/// Starts an `llm` run in a new thread and reads until its first streamed chunk; with the
/// run's frames so far.
pub(crate) async fn started_answering(
    alice: &mut Client,
    message: &str,
) -> (String, String, Vec<Value>) {
    alice.send(ask("llm", message, json!({}), None, None)).await;
    let accepted = alice.reply().await;
    let run = run_id(&accepted);
    let thread = accepted["thread_id"].as_str().unwrap().to_owned();
    let mut frames = Vec::new();
    loop {
        let frame = alice.next().await;
        let chunk = frame["run_id"] == run.as_str() && frame["type"] == "agent_response_chunk";
        frames.push(frame);
        if chunk {
            return (run, thread, frames);
        }
    }
}

/// The messages of the model's `n`th request, as text.
fn sent_to_model(model: &Model, n: usize) -> String {
    model.requests()[n].1["messages"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_ends_the_run_as_interrupted_and_the_next_run_remembers_its_partial_answer() {
    let model = Model::start(vec![stalling("The first half of a story"), answer("ok")]).await;
    let dir = store_dir();
    let server = llm_server(&dir, &model).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (a, thread, mut frames) = started_answering(&mut alice, "Tell me a long story").await;

    alice
        .send(ask(
            "llm",
            "Stop: a short one instead",
            json!({}),
            Some(&thread),
            Some("interrupt"),
        ))
        .await;
    let accepted = alice.reply().await;
    assert_eq!(accepted["queued"], true, "{accepted}");
    assert_eq!(accepted["position"], 1, "{accepted}");
    let b = run_id(&accepted);
    frames.extend(until_ended(&mut alice, &[&a, &b]).await);
    let runs = one_at_a_time(&frames, &thread);
    assert_eq!(runs[0].0, a);
    assert_eq!(runs[0].1["type"], "agent_cancelled", "{}", runs[0].1);
    assert_eq!(runs[0].1["data"]["reason"], "interrupted");
    assert_eq!(runs[1].0, b);
    assert_eq!(runs[1].1["type"], "agent_completed", "{}", runs[1].1);

    let (_, detail) = status(addr, "alice", &a).await;
    assert_eq!(detail["status"], "interrupted", "{detail}");
    // The new run's model hears the interrupted turn with what it had said.
    let heard = sent_to_model(&model, 1);
    assert!(heard.contains("Tell me a long story"), "{heard}");
    assert!(heard.contains("The first half of a story"), "{heard}");
    assert!(
        heard.contains("interrupted by the user's next message"),
        "{heard}"
    );
    assert!(heard.contains("Stop: a short one instead"), "{heard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_ends_and_erases_the_run_and_the_next_run_never_hears_of_it() {
    let model = Model::start(vec![stalling("A draft to forget"), answer("ok")]).await;
    let dir = store_dir();
    let server = llm_server(&dir, &model).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (a, thread, mut frames) = started_answering(&mut alice, "Write a draft").await;

    alice
        .send(ask(
            "llm",
            "Start over",
            json!({}),
            Some(&thread),
            Some("rollback"),
        ))
        .await;
    let b = run_id(&alice.reply().await);
    frames.extend(until_ended(&mut alice, &[&a, &b]).await);
    let runs = one_at_a_time(&frames, &thread);
    assert_eq!(runs[0].1["type"], "agent_cancelled", "{}", runs[0].1);
    assert_eq!(runs[0].1["data"]["reason"], "rolled_back");
    assert_eq!(runs[1].1["type"], "agent_completed", "{}", runs[1].1);
    let (code, gone) = status(addr, "alice", &a).await;
    assert_eq!(code, 404, "the rolled-back run is erased: {gone}");
    let heard = sent_to_model(&model, 1);
    assert!(!heard.contains("Write a draft"), "{heard}");
    assert!(!heard.contains("A draft to forget"), "{heard}");
    assert!(heard.contains("Start over"), "{heard}");
    let (_, listed) = http(addr, "GET", &format!("/v1/threads/{thread}"), Some("alice")).await;
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_tool_call_closes_it_before_the_run_ends() {
    let dir = store_dir();
    let started = dir.0.join("sleep-started");
    let arguments = json!({"ms": 20_000, "started": started.display().to_string()}).to_string();
    let model = Model::start(vec![
        Reply::Stream(vec![
            tool_piece(0, Some("call_s"), Some("mcp_scripted_sleep"), &arguments),
            DONE,
        ]),
        answer("ok"),
    ])
    .await;
    let base = history(&dir);
    let url = format!("http://{}/v1", model.addr);
    let server = start_server(move |config| {
        base(config);
        config.mcp_servers = vec![crate::mcp::scripted()];
        config.llm = Some(LlmConfig::new(url, "test-model"));
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice
        .send(ask("llm", "Sleep on it", json!({}), None, None))
        .await;
    let accepted = alice.reply().await;
    let a = run_id(&accepted);
    let thread = accepted["thread_id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(started.exists(), "the tool never started");
    alice
        .send(ask(
            "llm",
            "Never mind",
            json!({}),
            Some(&thread),
            Some("interrupt"),
        ))
        .await;
    let b = run_id(&alice.reply().await);
    let frames = until_ended(&mut alice, &[&a, &b]).await;
    let of_a: Vec<&Value> = frames
        .iter()
        .filter(|f| f["run_id"] == a.as_str())
        .collect();
    let kinds: Vec<&str> = of_a.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let closed = kinds
        .iter()
        .position(|k| *k == "tool_completed")
        .expect("the call in flight is closed");
    assert_eq!(kinds.last(), Some(&"agent_cancelled"), "{kinds:?}");
    assert!(closed < kinds.len() - 1, "{kinds:?}");
    let completion = of_a[closed];
    assert_eq!(completion["data"]["tool_call_id"], "call_s", "{completion}");
    assert_eq!(completion["data"]["is_error"], true, "{completion}");
    assert_eq!(
        completion["data"]["result"]["code"], "abandoned",
        "{completion}"
    );
    let runs = one_at_a_time(&frames, &thread);
    assert_eq!(runs[1].1["type"], "agent_completed", "{}", runs[1].1);
}

/// Over AG-UI, `forwardedProps.multitask` does the same: `reject` is refused with 409
/// `thread_busy`, `interrupt` ends the socket's run in that thread and streams the new run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agui_takes_the_strategy_from_forwarded_props() {
    let server = start_server(|config| config.start_rate_per_minute = 10_000).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    alice
        .send(ask("synthetic", "long", long(40, 100), None, None))
        .await;
    let first = alice.reply().await;
    let a = run_id(&first);
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    let post = |props: Value| {
        let body = json!({"threadId": thread, "runId": "client-run", "tools": [], "context": [],
               "forwardedProps": props,
               "messages": [{"id": "m1", "role": "user", "content": "now this"}]});
        crate::support::http_client()
            .post(format!("http://{addr}/agui/synthetic"))
            .bearer_auth(crate::server_support::token("alice"))
            .json(&body)
            .send()
    };
    let refused = post(json!({"multitask": "reject"})).await.unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"], "thread_busy", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(&a), "{answer}");
    let going = post(json!({"multitask": "interrupt", "chunks": 1}))
        .await
        .unwrap();
    assert_eq!(going.status().as_u16(), 200);
    let text = going.text().await.unwrap();
    assert!(text.contains("RUN_FINISHED"), "{text}");
    let frames = until_ended(&mut alice, &[&a]).await;
    let end = frames.last().unwrap();
    assert_eq!(end["type"], "agent_cancelled", "{end}");
    assert_eq!(end["data"]["reason"], "interrupted");
}
