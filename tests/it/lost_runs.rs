//! The end of a run whose node died, at the broker: a surviving node's reaper ends it with
//! `agent_error` `node_lost`; first with its `agent_started` when the start never reached the
//! user's stream (the node died between accepting the run and publishing its start, as
//! `cargo xtask chaos` found at 1,000 runs in flight), and with a `tool_completed` (an error)
//! for each tool call the run began and did not complete; and not at all for a run that had
//! ended, its node dying before it gave the slot back (`tests/it/chaos.rs` found a second
//! terminal event that way). So a lost run keeps the lifecycle rules: one `agent_started`
//! first, every call closed, one terminal event last.

use std::sync::Arc;
use std::time::Duration;

use core_context::lifecycle::check_lifecycle;
use core_context::multitask::ThreadRule;
use core_context::{AgentEvent, EncodedEvent, EventKind, RunId, RunScope, ThreadId, UserId};
use redis_broker::{ClaimState, Lease, NODE_LOST, RedisBroker, RedisBrokerConfig, SlotLimits};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Broker};

use crate::bridge::read;
use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
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

/// A node that will die and a survivor on `redis`, with a bridge on the survivor.
async fn nodes(redis: &impl SharedRedis) -> (RedisBroker, Arc<RedisBroker>, AgentWebSocketBridge) {
    let config = BridgeConfig::default();
    let connect =
        || RedisBroker::connect(RedisBrokerConfig::new(redis.url(), config.replay_bounds()));
    let (dying, survivor) = (connect().await.unwrap(), Arc::new(connect().await.unwrap()));
    let bridge =
        AgentWebSocketBridge::with_broker(config.clone(), survivor.clone() as Arc<dyn Broker>);
    (dying, survivor, bridge)
}

async fn a_lost_run_gets_its_start_when_it_never_came_and_its_open_calls_closed(
    redis: &impl SharedRedis,
) {
    let (dying, survivor, bridge) = nodes(redis).await;
    let alice = user_id("alice");
    let sub = bridge.subscribe(&alice, None).await.unwrap();

    // Four runs hold slots on the dying node: one dies before publishing its start, one
    // after, one in the middle of a tool call (another of its calls completed), and one that
    // ended but had not given its slot back.
    let dying_runs = dying.runs(Duration::from_secs(1));
    let (silent, started, calling, ended) = (scope(), scope(), scope(), scope());
    for (run, message) in [
        (&silent, "never started"),
        (&started, "started"),
        (&calling, "calling"),
        (&ended, "ended"),
    ] {
        let lease = Lease::new(alice.clone(), run.run_id.clone());
        let state = dying_runs
            .claim(&lease, run, LIMITS, message, false, ThreadRule::Parallel)
            .await
            .unwrap();
        assert_eq!(state, ClaimState::Running);
    }
    let call = |id: &str| EventKind::ToolExecuting {
        tool_call_id: id.into(),
        tool_name: "calculator".into(),
        arguments: json!({"expression": "6*7"}),
    };
    let published = [
        started.event(EventKind::AgentStarted {
            message: "started".into(),
        }),
        calling.event(EventKind::AgentStarted {
            message: "calling".into(),
        }),
        calling.event(call("call_done")),
        calling.event(call("call_open")),
        calling.event(EventKind::ToolCompleted {
            tool_call_id: "call_done".into(),
            tool_name: "calculator".into(),
            result: json!(42),
            is_error: false,
            duration_ms: 1,
        }),
        ended.event(EventKind::AgentStarted {
            message: "ended".into(),
        }),
        ended.event(EventKind::AgentCompleted {
            result: json!("done"),
            duration_ms: 5,
            usage: None,
        }),
    ];
    publish(&dying, &alice, &published).await;
    let first = read(&sub, published.len()).await;

    // The dying node stops renewing; a survivor's reaper takes both leases.
    redis.expire_run_leases();
    let lost = survivor.runs(Duration::from_secs(1)).reap().await.unwrap();
    // The ended run's slot is freed, and it is not among the runs ended here.
    assert_eq!(lost.len(), 3, "{lost:?}");
    assert!(lost.iter().all(|l| l.run_id != ended.run_id), "{lost:?}");
    // The silent run's start and end, the started run's end, the open call's close and the
    // calling run's end.
    let rest = read(&sub, 5).await;
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
    assert_eq!(of(&ended.run_id), ["agent_started", "agent_completed"]);
    assert_eq!(
        of(&calling.run_id),
        [
            "agent_started",
            "tool_executing",
            "tool_executing",
            "tool_completed",
            "tool_completed",
            "agent_error"
        ]
    );
    let closed = rest
        .iter()
        .find(|e| matches!(e.event.kind, EventKind::ToolCompleted { .. }))
        .unwrap();
    assert!(
        matches!(&closed.event.kind, EventKind::ToolCompleted { tool_call_id, tool_name, is_error: true, .. }
            if tool_call_id == "call_open" && tool_name == "calculator"),
        "{:?}",
        closed.event.kind
    );
    let all: Vec<_> = first.iter().chain(&rest).map(|e| e.event.clone()).collect();
    let summary = check_lifecycle(&all).unwrap();
    assert_eq!(summary.errors.get(NODE_LOST), Some(&3), "{summary:?}");
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

/// A lost run's sub-runs that had not ended (a triage run's parts, and a part's own part)
/// end before it, each with its open calls closed, and a sub-run that had ended is not ended
/// again: the stream keeps every lifecycle rule, sub-runs inside their parents.
async fn a_lost_runs_open_sub_runs_end_before_it(redis: &impl SharedRedis) {
    let (dying, survivor, bridge) = nodes(redis).await;
    let bob = user_id("bob");
    let sub = bridge.subscribe(&bob, None).await.unwrap();
    let top = scope();
    let lease = Lease::new(bob.clone(), top.run_id.clone());
    let state = dying
        .runs(Duration::from_secs(1))
        .claim(&lease, &top, LIMITS, "triage", false, ThreadRule::Parallel)
        .await
        .unwrap();
    assert_eq!(state, ClaimState::Running);
    let part = |parent: &RunScope, agent: &str| RunScope {
        run_id: RunId::generate(),
        parent_run_id: Some(parent.run_id.clone()),
        thread_id: parent.thread_id.clone(),
        agent_name: Arc::from(agent),
    };
    let (done, open, nested) = {
        let open = part(&top, "assistant");
        let nested = part(&open, "synthetic");
        (part(&top, "assistant"), open, nested)
    };
    let started = |scope: &RunScope| {
        scope.event(EventKind::AgentStarted {
            message: "part".into(),
        })
    };
    let published = [
        started(&top),
        started(&done),
        started(&open),
        done.event(EventKind::AgentCompleted {
            result: json!("done"),
            duration_ms: 1,
            usage: None,
        }),
        open.event(EventKind::ToolExecuting {
            tool_call_id: "call_part".into(),
            tool_name: "calculator".into(),
            arguments: json!({"expression": "1+1"}),
        }),
        started(&nested),
    ];
    publish(&dying, &bob, &published).await;
    let first = read(&sub, published.len()).await;
    redis.expire_run_leases();
    let lost = survivor.runs(Duration::from_secs(1)).reap().await.unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    // The nested part's end, the open part's call closed and its end, then the top run's.
    let rest = read(&sub, 4).await;
    let ends: Vec<(RunId, &'static str)> = rest
        .iter()
        .map(|e| (e.event.run_id.clone(), e.event.kind.type_name()))
        .collect();
    assert_eq!(
        ends,
        [
            (nested.run_id.clone(), "agent_error"),
            (open.run_id.clone(), "tool_completed"),
            (open.run_id.clone(), "agent_error"),
            (top.run_id.clone(), "agent_error"),
        ]
    );
    assert_eq!(rest[0].event.parent_run_id, Some(open.run_id.clone()));
    assert_eq!(&*rest[0].event.agent_name, "synthetic");
    let all: Vec<_> = first.iter().chain(&rest).map(|e| e.event.clone()).collect();
    let summary = check_lifecycle(&all).unwrap();
    assert_eq!(summary.errors.get(NODE_LOST), Some(&3), "{summary:?}");
    assert_eq!(summary.sub_runs, 3, "{summary:?}");
    // A late event of a part, from the dead node, is dropped: its run ended.
    publish(
        &dying,
        &bob,
        &[open.event(EventKind::AgentCompleted {
            result: json!("late"),
            duration_ms: 1,
            usage: None,
        })],
    )
    .await;
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "an extra frame: {more:?}");
}

/// Publishes `events` of `user` through `broker` and waits until they are stored.
async fn publish(broker: &RedisBroker, user: &UserId, events: &[AgentEvent]) {
    for event in events {
        broker
            .publish(user, EncodedEvent::encode(event).unwrap())
            .unwrap();
    }
    broker.stored().await.unwrap();
}

// Each test above, on one Redis and on a Redis Cluster.
on_redis_and_cluster!(a_lost_run_gets_its_start_when_it_never_came_and_its_open_calls_closed);
on_redis_and_cluster!(a_lost_runs_open_sub_runs_end_before_it);
