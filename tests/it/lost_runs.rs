//! The end of a run whose node died, at the broker: a surviving node's reaper ends it with
//! `agent_error` `node_lost`, and first with its `agent_started` when the start never reached
//! the user's stream (the node died between accepting the run and publishing its start, as
//! `cargo xtask chaos` found at 1,000 runs in flight), so every run's first event is its one
//! `agent_started` and it is never sent twice.

use std::sync::Arc;
use std::time::Duration;

use core_context::lifecycle::check_lifecycle;
use core_context::multitask::ThreadRule;
use core_context::{EncodedEvent, EventKind, RunId, RunScope, ThreadId};
use redis_broker::{ClaimState, Lease, NODE_LOST, RedisBroker, RedisBrokerConfig, SlotLimits};
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Broker};

use crate::bridge::read;
use crate::redis_support::RedisServer;
use crate::support::user_id;

const LIMITS: SlotLimits = SlotLimits {
    max_running: 5,
    max_queued: 5,
};

fn scope() -> RunScope {
    RunScope {
        run_id: RunId::generate(),
        parent_run_id: None,
        thread_id: ThreadId::generate(),
        agent_name: Arc::from("assistant"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_gets_its_start_only_when_the_start_never_reached_the_stream() {
    let redis = RedisServer::start();
    let config = BridgeConfig::default();
    let connect =
        || RedisBroker::connect(RedisBrokerConfig::new(redis.url(), config.replay_bounds()));
    let (dying, survivor) = (connect().await.unwrap(), Arc::new(connect().await.unwrap()));
    let bridge =
        AgentWebSocketBridge::with_broker(config.clone(), survivor.clone() as Arc<dyn Broker>);
    let alice = user_id("alice");
    let sub = bridge.subscribe(&alice, None).await.unwrap();

    // Run 1 holds a slot on the dying node, which dies before publishing its start. Run 2
    // holds one too, and its start was published.
    let dying_runs = dying.runs(Duration::from_secs(1));
    let (silent, started) = (scope(), scope());
    for (run, message) in [(&silent, "never started"), (&started, "started")] {
        let lease = Lease::new(alice.clone(), run.run_id.clone());
        let state = dying_runs
            .claim(&lease, run, LIMITS, message, false, ThreadRule::Parallel)
            .await
            .unwrap();
        assert_eq!(state, ClaimState::Running);
    }
    let start = started.event(EventKind::AgentStarted {
        message: "started".into(),
    });
    dying
        .publish(&alice, EncodedEvent::encode(&start).unwrap())
        .unwrap();
    dying.stored().await.unwrap();
    let first = read(&sub, 1).await;
    assert_eq!(first[0].event.run_id, started.run_id);

    // The dying node stops renewing; a survivor's reaper takes both leases.
    redis.expire_run_leases();
    let lost = survivor.runs(Duration::from_secs(1)).reap().await.unwrap();
    assert_eq!(lost.len(), 2, "{lost:?}");
    let rest = read(&sub, 3).await;
    let of = |run: &RunId| -> Vec<&'static str> {
        first
            .iter()
            .chain(&rest)
            .filter(|e| &e.event.run_id == run)
            .map(|e| e.event.kind.type_name())
            .collect()
    };
    assert_eq!(of(&silent.run_id), ["agent_started", "agent_error"]);
    assert_eq!(of(&started.run_id), ["agent_started", "agent_error"]);
    let all: Vec<_> = first.iter().chain(&rest).map(|e| e.event.clone()).collect();
    let summary = check_lifecycle(&all).unwrap();
    assert_eq!(summary.errors.get(NODE_LOST), Some(&2), "{summary:?}");
    let silent_start = rest
        .iter()
        .find(|e| e.event.run_id == silent.run_id)
        .unwrap();
    assert!(
        matches!(&silent_start.event.kind, EventKind::AgentStarted { message } if message == "never started"),
        "{:?}",
        silent_start.event.kind
    );
    // Nothing more comes: no second start of the run that had one.
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "an extra frame: {more:?}");
}
