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
use core_context::{
    AgentEvent, EncodedEvent, EventKind, RunId, RunScope, SequencedEvent, ThreadId, UserId,
};
use redis_broker::{ClaimState, Lease, NODE_LOST, RedisBroker, SlotLimits};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Broker, Subscription};

use crate::bridge::read;
use crate::redis_cluster_support::{Sequenced, SharedRedis, broker_config, in_every_mode};
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

/// A node that will die and a survivor on `redis`, with a bridge on the survivor.
async fn nodes(redis: &impl SharedRedis) -> (RedisBroker, Arc<RedisBroker>, AgentWebSocketBridge) {
    let config = BridgeConfig::default();
    let url = redis.url();
    let connect = || RedisBroker::connect(broker_config(&url, config.replay_bounds()));
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
    // The nested part's end, the open part's call closed and its end, then the top run's.
    let rest = reap_one(redis, &survivor, &sub, 4).await;
    assert_eq!(
        kinds(&rest),
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

/// Expires the run leases, has `survivor` reap them (one run lost), and reads the `n` events
/// that end it.
async fn reap_one(
    redis: &impl SharedRedis,
    survivor: &RedisBroker,
    sub: &Subscription,
    n: usize,
) -> Vec<SequencedEvent> {
    redis.expire_run_leases();
    let lost = survivor.runs(Duration::from_secs(1)).reap().await.unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    read(sub, n).await
}

/// Each event's run and type.
fn kinds(events: &[SequencedEvent]) -> Vec<(RunId, &'static str)> {
    events
        .iter()
        .map(|e| (e.event.run_id.clone(), e.event.kind.type_name()))
        .collect()
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

// Each test above, on one Redis, on a Redis Cluster, and in the sequencer mode.
in_every_mode!(a_lost_run_gets_its_start_when_it_never_came_and_its_open_calls_closed);
in_every_mode!(a_lost_runs_open_sub_runs_end_before_it);

/// A sub-run of `parent`, run by `agent`.
fn part(parent: &RunScope, agent: &str) -> RunScope {
    RunScope {
        run_id: RunId::generate(),
        parent_run_id: Some(parent.run_id.clone()),
        thread_id: parent.thread_id.clone(),
        agent_name: Arc::from(agent),
    }
}

fn started(scope: &RunScope) -> AgentEvent {
    scope.event(EventKind::AgentStarted {
        message: "go".into(),
    })
}

fn completed(scope: &RunScope) -> AgentEvent {
    scope.event(EventKind::AgentCompleted {
        result: json!("done"),
        duration_ms: 1,
        usage: None,
    })
}

fn executing(scope: &RunScope, call: &str) -> AgentEvent {
    scope.event(EventKind::ToolExecuting {
        tool_call_id: call.into(),
        tool_name: "calculator".into(),
        arguments: json!({"expression": "6*7"}),
    })
}

fn call_completed(scope: &RunScope, call: &str) -> AgentEvent {
    scope.event(EventKind::ToolCompleted {
        tool_call_id: call.into(),
        tool_name: "calculator".into(),
        result: json!(42),
        is_error: false,
        duration_ms: 1,
    })
}

/// `user`'s run `scope`, claimed on `node`.
async fn claimed(node: &RedisBroker, user: &UserId, scope: &RunScope) {
    let lease = Lease::new(user.clone(), scope.run_id.clone());
    let state = node
        .runs(Duration::from_secs(1))
        .claim(&lease, scope, LIMITS, "go", false, ThreadRule::Parallel)
        .await
        .unwrap();
    assert_eq!(state, ClaimState::Running);
}

/// In the sequencer mode a run's record takes its events' changes once Redis confirmed
/// their appends, so it lags the log, for good when the holder dies between the two. A
/// reaper reads the run's entries in the log on top of the record: with every change taken
/// off the record (as if none had been applied), the lost run gets no second start, its
/// completed call is not closed again, its open calls (its own and its open sub-run's) are
/// closed, and its sub-run that had ended is not ended again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaper_reads_the_log_on_top_of_a_record_that_lags_it() {
    let redis = Sequenced(RedisServer::start());
    let (dying, survivor, bridge) = nodes(&redis).await;
    let carol = user_id("carol");
    let sub = bridge.subscribe(&carol, None).await.unwrap();
    let top = scope();
    claimed(&dying, &carol, &top).await;
    let (done, open) = (part(&top, "assistant"), part(&top, "synthetic"));
    let published = [
        started(&top),
        executing(&top, "call_done"),
        executing(&top, "call_open"),
        call_completed(&top, "call_done"),
        started(&done),
        completed(&done),
        started(&open),
        executing(&open, "call_part"),
    ];
    publish(&dying, &carol, &published).await;
    let first = read(&sub, published.len()).await;
    // Once the holder applied the changes, they are taken off again.
    let record = format!("agentws:{{carol}}:run:{}", top.run_id.as_str());
    let tracked = |field: &str| {
        field == "started"
            || ["open:", "sub:", "sopen:"]
                .iter()
                .any(|p| field.starts_with(p))
    };
    let mut fields = Vec::new();
    for _ in 0..100 {
        fields = crate::redis_support::query_all(&redis.0, &["HKEYS", &record]);
        if fields.iter().any(|f| f == "sopen:call_part") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken: Vec<&String> = fields.iter().filter(|f| tracked(f)).collect();
    assert_eq!(
        taken.len(),
        4,
        "started, one open call, one sub-run, its call: {fields:?}"
    );
    for field in taken {
        assert_eq!(redis.0.command(&["HDEL", &record, field]), ":1");
    }
    let rest = reap_one(&redis, &survivor, &sub, 4).await;
    assert_eq!(
        kinds(&rest),
        [
            (top.run_id.clone(), "tool_completed"),
            (open.run_id.clone(), "tool_completed"),
            (open.run_id.clone(), "agent_error"),
            (top.run_id.clone(), "agent_error"),
        ]
    );
    let closed: Vec<&str> = rest
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::ToolCompleted { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, ["call_open", "call_part"]);
    let all: Vec<_> = first.iter().chain(&rest).map(|e| e.event.clone()).collect();
    let summary = check_lifecycle(&all).unwrap();
    assert_eq!(summary.errors.get(NODE_LOST), Some(&2), "{summary:?}");
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "an extra frame: {more:?}");
}

/// In the sequencer mode a reaper fences the user's stream as it ends a run, so whatever the
/// run's node still sends of it (it was late, not dead) is refused, and dropped by whichever
/// node holds the lease next (it learns the reaped runs as it takes the lease): the run's
/// `node_lost` stays its last. The user's other events still come, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaped_runs_late_events_are_dropped_and_the_users_others_come() {
    let redis = Sequenced(RedisServer::start());
    let (late, survivor, bridge) = nodes(&redis).await;
    let dave = user_id("dave");
    let sub = bridge.subscribe(&dave, None).await.unwrap();
    let top = scope();
    claimed(&late, &dave, &top).await;
    publish(&late, &dave, &[started(&top), executing(&top, "call_1")]).await;
    let first = read(&sub, 2).await;
    let ends = reap_one(&redis, &survivor, &sub, 2).await;
    // The late node goes on with the run, and starts another (with no claim).
    let other = scope();
    let thinking = top.event(EventKind::AgentThinking {
        reasoning: "still here".into(),
        step: 2,
    });
    publish(
        &late,
        &dave,
        &[
            thinking,
            call_completed(&top, "call_1"),
            started(&other),
            completed(&top),
            completed(&other),
        ],
    )
    .await;
    let after = read(&sub, 2).await;
    assert_eq!(
        kinds(&[ends.as_slice(), after.as_slice()].concat()),
        [
            (top.run_id.clone(), "tool_completed"),
            (top.run_id.clone(), "agent_error"),
            (other.run_id.clone(), "agent_started"),
            (other.run_id.clone(), "agent_completed"),
        ]
    );
    let seqs: Vec<u64> = first
        .iter()
        .chain(&ends)
        .chain(&after)
        .map(|e| e.seq)
        .collect();
    let from = seqs[0];
    assert_eq!(
        seqs,
        (from..from + 6).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "an extra frame: {more:?}");
    let record = format!("agentws:{{dave}}:run:{}", top.run_id.as_str());
    assert_eq!(redis.0.command(&["EXISTS", &record]), ":0");
}
