//! Runs agents for two users at once and prints what each user's connection receives.
//!
//! `cargo run -p execution-engine --example live_events` (add `-- --json` for raw frames).
//!
//! Each user has a subscription to the bridge, as a WebSocket connection would; the engine
//! runs a synthetic agent for each (thinking, tool calls, streamed answer) and one of Bob's
//! runs is cancelled half-way. Every line is one frame that only its user received.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_registry::{AgentInput, AgentRegistry};
use core_context::{SequencedEvent, UserExecutionContext, UserId};
use execution_engine::{EngineConfig, ExecutionEngineFactory};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, Subscription};

async fn print_stream(name: &'static str, sub: Subscription, frames: usize, raw: bool) {
    for _ in 0..frames {
        let Ok(Ok(frame)) = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await else {
            println!("{name:<6} (stream ended)");
            return;
        };
        if raw {
            println!("{name:<6} {}", frame.text);
            continue;
        }
        let event: SequencedEvent = serde_json::from_str(&frame.text).unwrap();
        println!(
            "{name:<6} #{:<3} {:<22} {} {}",
            event.seq,
            event.event.kind.type_name(),
            short(event.event.run_id.as_str()),
            serde_json::to_value(&event.event.kind).unwrap()["data"]
        );
    }
}

/// The distinctive end of an id (ULIDs share their leading time digits).
fn short(id: &str) -> String {
    format!("run_…{}", &id[id.len().saturating_sub(6)..])
}

fn describe(outcome: &execution_engine::RunOutcome) -> String {
    match outcome {
        execution_engine::RunOutcome::Completed { output, duration } => {
            format!(
                "completed in {} ms: {}",
                duration.as_millis(),
                output.result
            )
        }
        execution_engine::RunOutcome::Failed(e) => format!("failed: {e}"),
        execution_engine::RunOutcome::Cancelled(reason) => format!("cancelled: {reason}"),
        execution_engine::RunOutcome::Paused(calls) => {
            format!("paused: {} call(s) wait for approval", calls.len())
        }
        execution_engine::RunOutcome::WaitingForBudget(why) => {
            format!("paused: its user's {} budget is used up", why.budget.name())
        }
    }
}

#[tokio::main]
async fn main() {
    let raw = std::env::args().any(|a| a == "--json");
    let mut registry = AgentRegistry::new();
    agents::synthetic::register(&mut registry).unwrap();
    let bridge = AgentWebSocketBridge::default();
    let factory = ExecutionEngineFactory::new(
        Arc::new(registry),
        Arc::new(bridge.clone()),
        EngineConfig::default(),
    );
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let alice_sub = bridge.subscribe(&alice, None).await.unwrap();
    let bob_sub = bridge.subscribe(&bob, None).await.unwrap();
    println!(
        "alice's stream epoch {}, bob's stream epoch {}\n",
        alice_sub.epoch(),
        bob_sub.epoch()
    );

    let shape = json!({"thinking": 2, "tools": 2, "chunks": 3, "sleep_ms": 20});
    let start = async |user: &UserId, shape: serde_json::Value| {
        let ctx = UserExecutionContext::builder(user.clone()).build().unwrap();
        let engine = factory.create_for_user(ctx).unwrap();
        let input = AgentInput::message("show me what you do").with_input(shape);
        engine.execute_agent("synthetic", input).await.unwrap()
    };
    let a = start(&alice, shape.clone()).await;
    let b = start(&bob, shape).await;
    let b_hang = start(
        &bob,
        json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true}),
    )
    .await;
    let (a_id, b_id, c_id) = (
        a.run_id().clone(),
        b.run_id().clone(),
        b_hang.run_id().clone(),
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    b_hang.cancel("cancelled by the user");

    // 1 start + 2 thinking + 4 tool events + 3 chunks + 1 end = 11 frames per full run;
    // the cancelled run sends start, one thinking step and its cancellation.
    let printers = tokio::join!(
        print_stream("alice", alice_sub, 11, raw),
        print_stream("bob", bob_sub, 11 + 3, raw),
        async { (a.wait().await, b.wait().await, b_hang.wait().await) }
    );
    let (a, b, c) = printers.2;
    println!("\nalice {}: {}", short(a_id.as_str()), describe(&a));
    println!("bob   {}: {}", short(b_id.as_str()), describe(&b));
    println!("bob   {}: {}", short(c_id.as_str()), describe(&c));
}
