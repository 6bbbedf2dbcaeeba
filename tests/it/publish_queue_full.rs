//! A node's publish queue, full because Redis holds its writes, refuses a run's next event:
//! the run stops and its end (`agent_error` `events_lost`) still goes through, on the room
//! the queue keeps for runs' starts and ends, so that another node's client sees the run
//! start and end with no silent hole, once Redis takes writes again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use core_context::event::{EventKind, error_code};
use core_context::lifecycle::check_lifecycle;
use core_context::{AgentEvent, SequencedEvent};
use execution_engine::{EngineConfig, ExecutionEngineFactory};
use redis_broker::{PublishMode, RedisBroker, RedisBrokerConfig};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, BridgeConfig};

use crate::events_lost::thinking_step;
use crate::redis_support::RedisServer;
use crate::support::{Harness, context, shape, user_id};

/// The publishing node's queue: so few events that one run fills it.
const QUEUE: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_by_a_full_publish_queue_ends_events_lost_on_every_node() {
    a_full_queue_ends_the_run(PublishMode::Script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sequencer_mode_a_run_refused_by_a_full_queue_ends_events_lost() {
    a_full_queue_ends_the_run(PublishMode::Sequencer).await;
}

async fn a_full_queue_ends_the_run(mode: PublishMode) {
    let redis = RedisServer::start();
    let config = BridgeConfig::default();
    let connect = |publish_queue| {
        RedisBroker::connect(RedisBrokerConfig {
            mode,
            publish_queue,
            ..RedisBrokerConfig::new(redis.url(), config.replay_bounds())
        })
    };
    let publishing = Arc::new(connect(QUEUE).await.unwrap());
    let following = Arc::new(connect(100_000).await.unwrap());
    let following_bridge = AgentWebSocketBridge::with_broker(config.clone(), following.clone());
    let alice = user_id("alice");
    let subscription = following_bridge.subscribe(&alice, None).await.unwrap();
    let sink = Arc::new(AgentWebSocketBridge::with_broker(
        config,
        publishing.clone(),
    ));
    let h = Harness::new();
    let factory = ExecutionEngineFactory::new(h.registry.clone(), sink, EngineConfig::default());

    // Redis holds every write (the publish calls among them) until told to go on.
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "60000", "WRITE"]), "+OK");
    let engine = factory.create_for_user(context("alice")).unwrap();
    let input = shape(json!({"thinking": 40, "tools": 0, "sleep_ms": 1}));
    let outcome = engine
        .execute_agent("synthetic", input)
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(
        outcome.error_code(),
        Some(error_code::EVENTS_LOST),
        "{outcome:?}"
    );
    let rejected = publishing.stats().events_rejected.load(Ordering::Relaxed);
    assert_eq!(
        rejected, 1,
        "the run stopped at the first event refused, and its end was taken"
    );
    assert_eq!(redis.command(&["CLIENT", "UNPAUSE"]), "+OK");

    // The other node's client gets the run whole: its start, the steps that were taken, in
    // order with no gap in the seqs, and its end, last.
    let mut events: Vec<AgentEvent> = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), subscription.recv())
            .await
            .expect("the run's frames stopped coming")
            .expect("the subscription closed");
        let event: SequencedEvent = serde_json::from_str(&frame.text).unwrap();
        assert_eq!(event.seq, events.len() as u64 + 1, "{}", frame.text);
        let done = event.event.kind.is_terminal();
        events.push(event.event);
        if done {
            break;
        }
    }
    check_lifecycle(&events).unwrap();
    let steps: Vec<u32> = events.iter().filter_map(thinking_step).collect();
    assert!(
        !steps.is_empty() && steps.len() < 40,
        "some steps went through before the queue was full: {steps:?}"
    );
    assert_eq!(steps, (1..=steps.len() as u32).collect::<Vec<_>>());
    let EventKind::AgentError { code, .. } = &events.last().unwrap().kind else {
        panic!("the run's end is an agent_error")
    };
    assert_eq!(code, error_code::EVENTS_LOST);
}
