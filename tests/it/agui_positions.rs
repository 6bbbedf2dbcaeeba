//! `POST /agui/{agent}`'s events carry their positions as server-sent event ids, and a
//! one-line answer's response stays small (the engine's frame rides along only on request).

use serde_json::{Value, json};

use crate::agui::{events_with_ids, post, run_input};
use crate::server_support::start_server;

/// An id as its three numbers: (stream position before the run, engine seq, index).
fn position(id: &str) -> (u64, u64, u32) {
    let parts: Vec<&str> = id.split('.').collect();
    assert_eq!(parts.len(), 3, "{id}");
    (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

/// One run of the assistant: the response's size in bytes and its events with their ids.
async fn ask(addr: std::net::SocketAddr, props: Value) -> (usize, Vec<(Option<String>, Value)>) {
    let body = run_input("t-size", "What is 12*7?", props).to_string();
    let mut response = post(addr, "assistant", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    let events = events_with_ids(&mut response, |_| false).await;
    let size = events
        .iter()
        .map(|(id, event)| {
            // `id: …\ndata: …\n\n`, as the server writes each event.
            id.as_ref().map_or(0, |id| id.len() + 5) + event.to_string().len() + 8
        })
        .sum();
    (size, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_has_its_position_and_a_one_line_answer_stays_under_3_kb() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let (size, events) = ask(addr, json!({})).await;
    let types: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"RUN_STARTED"));
    assert_eq!(types.last(), Some(&"RUN_FINISHED"), "{types:?}");
    assert!(types.contains(&"TOOL_CALL_RESULT"), "{types:?}");
    let answer = &events.last().unwrap().1["result"];
    assert!(answer.to_string().contains("84"), "{answer}");
    let start = events[1].1["value"]["after_seq"].as_u64().unwrap();
    let mut last = None;
    for (id, event) in &events {
        let id = id.as_deref().unwrap_or_else(|| panic!("no id: {event}"));
        let here = position(id);
        assert_eq!(here.0, start, "{id}");
        assert!(last < Some(here), "{id} after {last:?}");
        last = Some(here);
        assert!(event.get("rawEvent").is_none(), "{event}");
    }
    println!("a one-line answer's AG-UI response: {size} bytes");
    assert!(size < 3 * 1024, "the response is {size} bytes");

    let (with_raw, events) = ask(addr, json!({"rawEvent": true})).await;
    println!("the same with rawEvent: {with_raw} bytes");
    for (_, event) in &events[2..] {
        assert!(event["rawEvent"]["seq"].is_u64(), "{event}");
    }
    refused_props(addr, json!({"rawEvent": "yes"}), "forwardedProps.rawEvent").await;
    server.shutdown().await;
}

/// A run whose `forwardedProps` holds a bad value of one of this server's keys is refused
/// with 400 and a message that names the key.
pub(crate) async fn refused_props(addr: std::net::SocketAddr, props: Value, names: &str) {
    let body = run_input("t-props", "hi", props).to_string();
    let bad = post(addr, "synthetic", Some("alice"), &body).await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains(names), "{text}");
}
