//! The local agents end to end, over a real socket, checked with the lifecycle checker.

use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use serde_json::{Value, json};

use crate::server_support::{Client, events, start_server};

/// Starts `agent` on `message` and returns the run's events (sub-runs included).
async fn run(
    client: &mut Client,
    agent: &str,
    message: &str,
    runs: usize,
) -> (String, Vec<core_context::AgentEvent>) {
    client
        .send(json!({"type": "start_agent", "request_id": "r", "payload": {"agent": agent, "message": message}}))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let frames = client.events_until_terminals(runs).await;
    (
        accepted["run_id"].as_str().unwrap().to_owned(),
        events(&frames),
    )
}

fn tool_results(events: &[core_context::AgentEvent]) -> Vec<(String, Value)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCompleted {
                tool_name,
                result,
                is_error: false,
                ..
            } => Some((tool_name.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

fn answer(events: &[core_context::AgentEvent], run_id: &str) -> Value {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::AgentCompleted { result, .. } if e.run_id.as_str() == run_id => {
                Some(result.clone())
            }
            _ => None,
        })
        .expect("the run completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_picks_tools_streams_and_says_it_is_rule_based() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "alice").await;

    let (run_id, evs) = run(&mut client, "assistant", "What is 12*7?", 1).await;
    check_lifecycle(&evs).unwrap();
    assert_eq!(
        tool_results(&evs),
        [(
            "calculator".to_owned(),
            json!({"expression": "12*7", "value": 84})
        )]
    );
    let text = answer(&evs, &run_id);
    assert_eq!(text, "[local rule-based agent] 12*7 = 84.");
    let streamed: String = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResponseChunk { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, text.as_str().unwrap());
    assert!(evs.iter().any(|e| matches!(&e.kind, EventKind::AgentThinking { reasoning, .. } if reasoning.contains("no language model"))));

    let (_, evs) = run(&mut client, "assistant", "And the time in Tokyo?", 1).await;
    let results = tool_results(&evs);
    assert_eq!(results[0].0, "current_time");
    assert_eq!(results[0].1["timezone"], "Asia/Tokyo");
    assert_eq!(results[0].1["utc_offset"], "+09:00");

    let (_, evs) = run(&mut client, "assistant", "How does resume work?", 1).await;
    let results = tool_results(&evs);
    assert_eq!(results[0].0, "search_docs");
    assert!(!results[0].1["results"].as_array().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_hands_parts_to_sub_runs_that_end_before_it() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let (run_id, evs) = run(
        &mut client,
        "triage",
        "What is 12*7? And the time in Tokyo?",
        3,
    )
    .await;
    let summary = check_lifecycle(&evs).unwrap();
    assert_eq!(
        (summary.runs, summary.sub_runs, summary.completed),
        (3, 2, 3)
    );
    assert_eq!(
        evs.last().unwrap().run_id.as_str(),
        run_id,
        "the parent must end last"
    );
    for e in evs.iter().filter(|e| e.run_id.as_str() != run_id) {
        assert_eq!(
            e.parent_run_id.as_ref().map(|p| p.as_str()),
            Some(run_id.as_str())
        );
        assert_eq!(&*e.agent_name, "assistant");
    }
    let result = answer(&evs, &run_id);
    let text = result["answer"].as_str().unwrap();
    assert!(text.contains("12*7 = 84"), "{text}");
    assert!(text.contains("Asia/Tokyo"), "{text}");
    assert_eq!(result["parts"].as_array().unwrap().len(), 2);
    server.shutdown().await;
}
