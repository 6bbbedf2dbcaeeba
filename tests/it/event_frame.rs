//! One event frame, whoever writes it. An event's wire frame is `{"seq":N,` followed by the
//! event's own JSON: `EncodedEvent::frame` (core-context) writes it for the in-process broker,
//! and the Redis broker's publish script (Lua, `redis-broker/src/scripts.rs`) splices the seq
//! in itself. Both must give, byte for byte, what serialising the `SequencedEvent` gives, for
//! every kind of event and for text that JSON escapes (quotes, backslashes, control
//! characters, non-ASCII), so the two cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use core_context::{
    AgentEvent, EncodedEvent, EventKind, EventSink, RunId, RunScope, SequencedEvent, ThreadId,
};
use redis_broker::{RedisBroker, RedisBrokerConfig};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Broker, InProcessBroker};

use crate::redis_support::RedisServer;
use crate::support::user_id;

/// Text that JSON escapes or that is not ASCII.
const AWKWARD: &str = "quote \" backslash \\ tab \t newline \n bell \u{7} é 漢字 🦀 </script>";

/// One event of each kind, the last ones of a sub-run.
fn events() -> Vec<AgentEvent> {
    let run = RunScope {
        run_id: RunId::parse("run_frame1").unwrap(),
        parent_run_id: None,
        thread_id: ThreadId::parse("thr_frame1").unwrap(),
        agent_name: Arc::from("assistant"),
    };
    let sub = RunScope {
        run_id: RunId::parse("run_frame2").unwrap(),
        parent_run_id: Some(run.run_id.clone()),
        agent_name: Arc::from("triage"),
        ..run.clone()
    };
    vec![
        run.event(EventKind::AgentStarted {
            message: AWKWARD.into(),
        }),
        run.event(EventKind::AgentThinking {
            reasoning: AWKWARD.into(),
            step: 1,
        }),
        run.event(EventKind::ToolExecuting {
            tool_call_id: "call_1".into(),
            tool_name: "calculator".into(),
            arguments: json!({"expression": AWKWARD, "n": [1, 2.5, null, true]}),
        }),
        run.event(EventKind::ToolCompleted {
            tool_call_id: "call_1".into(),
            tool_name: "calculator".into(),
            result: json!({"value": 84, "text": AWKWARD}),
            is_error: false,
            duration_ms: 3,
        }),
        run.event(EventKind::AgentResponseChunk {
            delta: AWKWARD.into(),
        }),
        sub.event(EventKind::AgentStarted {
            message: "sub".into(),
        }),
        sub.event(EventKind::AgentError {
            code: "agent_failed".into(),
            message: AWKWARD.into(),
        }),
        run.event(EventKind::AgentCancelled {
            reason: AWKWARD.into(),
        }),
        run.event(EventKind::AgentCompleted {
            result: json!(AWKWARD),
            duration_ms: 7,
            usage: Some(json!({"prompt_tokens": 1})),
        }),
    ]
}

/// The frames `broker` delivers for `events`, as text.
async fn frames_through(broker: Arc<dyn Broker>, events: &[AgentEvent]) -> Vec<String> {
    let bridge = AgentWebSocketBridge::with_broker(BridgeConfig::default(), broker);
    let user = user_id("frame-user");
    let subscription = bridge.subscribe(&user, None).await.unwrap();
    for event in events {
        bridge.emit(&user, event.clone()).unwrap();
    }
    let mut frames = Vec::new();
    while frames.len() < events.len() {
        let frame = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
            .await
            .expect("frames stopped coming")
            .expect("the subscription closed");
        frames.push(frame.text.to_string());
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_frames_an_event_as_its_sequenced_encoding() {
    let events = events();
    let expected: Vec<String> = events
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, event)| {
            let seq = i as u64 + 1;
            let framed = EncodedEvent::encode(&event).unwrap().frame(seq);
            let serialised = serde_json::to_string(&SequencedEvent { seq, event }).unwrap();
            assert_eq!(framed, serialised, "EncodedEvent::frame differs from serde");
            framed
        })
        .collect();
    let bounds = BridgeConfig::default().replay_bounds();
    let in_process = frames_through(Arc::new(InProcessBroker::new(bounds)), &events).await;
    assert_eq!(in_process, expected, "the in-process broker's frames");
    let redis = RedisServer::start();
    let networked = RedisBroker::connect(RedisBrokerConfig::new(redis.url(), bounds))
        .await
        .unwrap();
    let spliced = frames_through(Arc::new(networked), &events).await;
    for (got, want) in spliced.iter().zip(&expected) {
        assert_eq!(got, want, "the Redis publish script's splice differs");
    }
    assert_eq!(spliced.len(), expected.len());
}
