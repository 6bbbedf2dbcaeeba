//! `GET /agui/runs/{run_id}` with `Last-Event-ID`: an AG-UI response cut mid-run is continued
//! (replay, then live) with what the cut left open opened again, so the reference client's
//! stream checks accept it; a cut run waits a grace for its continuation before it is
//! cancelled, whichever node of a cluster the continuation comes through; refusals name what
//! is wrong.

use std::time::Duration;

use serde_json::{Value, json};

use crate::agui::{events_with_ids, post, run_input};
use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
use crate::server_support::{Client, start_server, token};

/// The answer's text: the `delta`s of the `TEXT_MESSAGE_CONTENT` events, in order.
fn text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
        .map(|e| e["delta"].as_str().unwrap())
        .collect()
}

fn answer(chunks: usize) -> String {
    (1..=chunks).map(|k| format!("chunk {k} ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_continues_a_cut_run_and_its_checks_accept_the_rest() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let props = json!({"thinking": 1, "tools": 1, "chunks": 30, "sleep_ms": 30});
    let args = [
        "continue.mjs".to_owned(),
        format!("http://{addr}"),
        token("alice"),
        "thread-continued".to_owned(),
        "go on".to_owned(),
        props.to_string(),
        "TEXT_MESSAGE_CONTENT".to_owned(),
        "5".to_owned(),
    ];
    let (stdout, stderr) = crate::agui_client::node_script(args.to_vec()).await;
    let line = |key: &str| -> Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|l| l.get(key).cloned())
            .unwrap_or_else(|| panic!("no {key} in {stdout}\n{stderr}"))
    };
    let (first, second, end) = (line("first"), line("second"), line("end"));
    assert!(end.get("done").is_some(), "{end}\n{second}");
    let (first, second) = (first.as_array().unwrap(), second.as_array().unwrap());
    assert_eq!(second[0]["type"], "RUN_STARTED", "{second:?}");
    assert_eq!(second[0]["runId"], "client-run");
    // The message the cut left open is opened again, under its id, before its next chunk.
    let open = first
        .iter()
        .rev()
        .find(|e| e["type"] == "TEXT_MESSAGE_START")
        .unwrap();
    assert_eq!(second[1]["type"], "TEXT_MESSAGE_START", "{second:?}");
    assert_eq!(second[1]["messageId"], open["messageId"]);
    let halves = format!("{}{}", text(first), text(&second[2..]));
    assert_eq!(halves, answer(30), "every chunk once, in order");
    assert_eq!(second.last().unwrap()["type"], "RUN_FINISHED");
    // The run was not cancelled by the cut: it completed, on the user's socket too.
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(last.kind.type_name(), "agent_completed", "{last:?}");
    server.shutdown().await;
}

/// Starts a long synthetic run for alice and reads it until `chunks` answer chunks came;
/// the events read, each with its id. The response is dropped (cut) on return.
async fn cut_after(addr: std::net::SocketAddr, chunks: usize) -> Vec<(Option<String>, Value)> {
    let props = json!({"chunks": 40, "sleep_ms": 25});
    let body = run_input("t-cut", "go", props).to_string();
    let mut response = post(addr, "synthetic", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    events_with_ids(&mut response, |e| {
        e.iter()
            .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
            .count()
            >= chunks
    })
    .await
}

async fn continuation(
    addr: std::net::SocketAddr,
    user: &str,
    run: &str,
    last_id: Option<&str>,
) -> reqwest::Response {
    let mut request = crate::support::http_client()
        .get(format!("http://{addr}/agui/runs/{run}"))
        .bearer_auth(token(user));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_run_waits_its_grace_for_a_continuation_and_refusals_name_the_problem() {
    let server = start_server(|c| c.agui_reattach = Duration::from_secs(1)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;

    // Cut, and nobody continues: cancelled once the grace is over.
    let got = cut_after(addr, 2).await;
    let run = got[1].1["value"]["run_id"].as_str().unwrap().to_owned();
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(
        (last.run_id.as_str(), last.kind.type_name()),
        (run.as_str(), "agent_cancelled")
    );

    // Cut, and continued at once: the rest of the run, then its end; not cancelled.
    let got = cut_after(addr, 3).await;
    let run = got[1].1["value"]["run_id"].as_str().unwrap().to_owned();
    let last_id = got.last().unwrap().0.clone().unwrap();
    for (user, id, status, says) in [
        ("alice", None, 400, "Last-Event-ID is missing"),
        ("alice", Some("7"), 400, "is not an event id"),
        ("bob", Some(last_id.as_str()), 404, "run_not_found"),
        ("alice", Some("0.0.0"), 404, "run_not_found"),
    ] {
        let run = if status == 404 && user == "alice" {
            "run_01JD6QA0AAAAAAAAAAAAAAAAAA"
        } else {
            run.as_str()
        };
        let refused = continuation(addr, user, run, id).await;
        assert_eq!(refused.status(), status, "{user} {id:?}");
        let body = refused.text().await.unwrap();
        assert!(body.contains(says), "{body} lacks {says}");
    }
    let mut response = continuation(addr, "alice", &run, Some(&last_id)).await;
    assert_eq!(response.status(), 200);
    let rest = events_with_ids(&mut response, |_| false).await;
    let types: Vec<&str> = rest
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types[..2],
        ["RUN_STARTED", "TEXT_MESSAGE_START"],
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"RUN_FINISHED"));
    let before: Vec<Value> = got.into_iter().map(|(_, e)| e).collect();
    let after: Vec<Value> = rest.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(format!("{}{}", text(&before), text(&after)), answer(40));
    // The continued response's ids go on from the cut one's: its opening events (and what
    // it opens again) at the cut's position, the rest past it, in order.
    let position = |id: &str| -> Vec<u64> { id.split('.').map(|n| n.parse().unwrap()).collect() };
    let cut = position(&last_id);
    let ids: Vec<Vec<u64>> = rest
        .iter()
        .map(|(id, _)| position(id.as_deref().unwrap()))
        .collect();
    assert_eq!(ids[..2], [cut.clone(), cut.clone()]);
    assert!(
        ids[2] > cut && ids[2..].windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(
        (last.run_id.as_str(), last.kind.type_name()),
        (run.as_str(), "agent_completed")
    );
    // The run has ended and its last event was read: nothing is left to continue.
    let last_id = rest.last().unwrap().0.clone().unwrap();
    let done = continuation(addr, "alice", &run, Some(&last_id)).await;
    assert_eq!(done.status(), 204);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_runs_response_continued_before_its_interrupt_gets_it_once() {
    let dir = crate::approvals::store_dir();
    let server = start_server(crate::approvals::approving(
        &crate::approvals::sqlite(&dir),
        &["calculator"],
    ))
    .await;
    let addr = server.addr();
    let body = run_input("t-paused", "What is 12*7?", json!({})).to_string();
    let mut response = post(addr, "assistant", Some("alice"), &body).await;
    let all = events_with_ids(&mut response, |_| false).await;
    let end = &all.last().unwrap().1;
    assert_eq!(end["outcome"]["type"], "interrupt", "{end}");
    let run = all[1].1["value"]["run_id"].as_str().unwrap().to_owned();
    // The client had everything, the interrupts included: nothing is left to send.
    let last_id = all.last().unwrap().0.clone().unwrap();
    let done = continuation(addr, "alice", &run, Some(&last_id)).await;
    assert_eq!(done.status(), 204);
    // Cut just before the interrupts: they come once, after the prologue.
    let before = all[all.len() - 2].0.clone().unwrap();
    let mut rest = continuation(addr, "alice", &run, Some(&before)).await;
    assert_eq!(rest.status(), 200);
    let rest = events_with_ids(&mut rest, |_| false).await;
    let types: Vec<&str> = rest
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["RUN_STARTED", "RUN_FINISHED"], "{rest:?}");
    assert_eq!(rest[1].1["outcome"], end["outcome"]);
    assert_eq!(rest[1].0, all.last().unwrap().0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_asked_to_continue_on_disconnect_outlives_its_cut_response() {
    let server = start_server(|c| c.agui_reattach = Duration::from_millis(200)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let props = json!({"chunks": 20, "sleep_ms": 40, "onDisconnect": "continue"});
    let body = run_input("t-keep", "go", props).to_string();
    let mut response = post(addr, "synthetic", Some("alice"), &body).await;
    let got = events_with_ids(&mut response, |e| {
        e.iter().any(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
    })
    .await;
    let run = got[1].1["value"]["run_id"].as_str().unwrap().to_owned();
    drop(response);
    // Well past the grace, nobody continued: the run goes on to its end all the same.
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(
        (last.run_id.as_str(), last.kind.type_name()),
        (run.as_str(), "agent_completed")
    );
    let stay = json!({"onDisconnect": "stay"});
    crate::agui_positions::refused_props(addr, stay, "forwardedProps.onDisconnect").await;
    server.shutdown().await;
}

/// Two nodes on Redis (or a Redis Cluster): a response cut on the node running the run and
/// continued through the other keeps the run going past the first node's grace.
async fn a_run_cut_on_one_node_and_continued_on_another_goes_on(redis: &impl SharedRedis) {
    let nodes = crate::redis_support::nodes_on(&redis.url(), 2, |c| {
        c.agui_reattach = Duration::from_millis(800);
    })
    .await;
    let (first, second) = (nodes[0].addr(), nodes[1].addr());
    // 100 chunks 25 ms apart: about 2.5 s, well past the grace.
    let body = run_input("t-nodes", "go", json!({"chunks": 100, "sleep_ms": 25})).to_string();
    let mut response = post(first, "synthetic", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    let got = events_with_ids(&mut response, |e| {
        e.iter()
            .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
            .count()
            >= 3
    })
    .await;
    drop(response);
    let run = got[1].1["value"]["run_id"].as_str().unwrap().to_owned();
    let last_id = got.last().unwrap().0.clone().unwrap();
    let mut continued = continuation(second, "alice", &run, Some(&last_id)).await;
    assert_eq!(continued.status(), 200);
    let rest = events_with_ids(&mut continued, |_| false).await;
    let end = &rest.last().unwrap().1;
    assert_eq!(end["type"], "RUN_FINISHED", "the run was cancelled: {end}");
    let before: Vec<Value> = got.into_iter().map(|(_, e)| e).collect();
    let after: Vec<Value> = rest.into_iter().map(|(_, e)| e).collect();
    assert_eq!(format!("{}{}", text(&before), text(&after)), answer(100));
    for node in nodes {
        node.shutdown().await;
    }
}

on_redis_and_cluster!(a_run_cut_on_one_node_and_continued_on_another_goes_on);
