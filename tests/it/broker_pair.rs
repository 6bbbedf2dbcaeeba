//! Two nodes' Redis brokers on one Redis, for the tests of the publish path: one emits
//! chunks for some users, the other follows them.

use std::sync::Arc;
use std::time::Duration;

use core_context::{EventKind, EventSink, RunId, RunScope, SequencedEvent, ThreadId, UserId};
use redis_broker::{PublishMode, RedisBroker, RedisBrokerConfig};
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Subscription};

use crate::redis_support::RedisServer;

/// The two nodes, and the users (`<name>-00`, `<name>-01`, ...) the follower subscribed to.
pub struct BrokerPair {
    pub publisher: Arc<RedisBroker>,
    pub follower: Arc<RedisBroker>,
    emitting: AgentWebSocketBridge,
    name: &'static str,
    users: Vec<UserId>,
    subscriptions: Vec<Subscription>,
}

impl BrokerPair {
    pub async fn start(redis: &RedisServer, name: &'static str, users: usize) -> Self {
        Self::start_in(redis, name, users, false).await
    }

    /// [`BrokerPair::start`], both nodes in the sequencer mode when `sequencer`.
    pub async fn start_in(
        redis: &RedisServer,
        name: &'static str,
        users: usize,
        sequencer: bool,
    ) -> Self {
        let config = BridgeConfig::default();
        let connect = || async {
            Arc::new(
                RedisBroker::connect(RedisBrokerConfig {
                    mode: if sequencer {
                        PublishMode::Sequencer
                    } else {
                        PublishMode::Script
                    },
                    ..RedisBrokerConfig::new(redis.url(), config.replay_bounds())
                })
                .await
                .unwrap(),
            )
        };
        let (publisher, follower) = (connect().await, connect().await);
        let emitting = AgentWebSocketBridge::with_broker(config.clone(), publisher.clone());
        let following = AgentWebSocketBridge::with_broker(config, follower.clone());
        let users: Vec<_> = (0..users)
            .map(|u| crate::support::user_id(&format!("{name}-{u:02}")))
            .collect();
        let mut subscriptions = Vec::new();
        for user in &users {
            subscriptions.push(following.subscribe(user, None).await.unwrap());
        }
        Self {
            publisher,
            follower,
            emitting,
            name,
            users,
            subscriptions,
        }
    }

    /// Emits, on the publishing node, a chunk `delta` of user `u`'s run.
    pub fn emit(&self, u: usize, delta: String) {
        let run = RunScope {
            run_id: RunId::parse(&format!("run_{}{u:02}", self.name)).unwrap(),
            parent_run_id: None,
            thread_id: ThreadId::parse(&format!("thr_{}{u:02}", self.name)).unwrap(),
            agent_name: Arc::from("synthetic"),
        };
        let event = run.event(EventKind::AgentResponseChunk { delta });
        self.emitting.emit(&self.users[u], event).unwrap();
    }

    /// The next frame user `u`'s subscription on the following node gets: its seq and its
    /// chunk's text.
    pub async fn next_chunk(&self, u: usize) -> (u64, String) {
        let name = self.name;
        let frame = tokio::time::timeout(Duration::from_secs(20), self.subscriptions[u].recv())
            .await
            .unwrap_or_else(|_| panic!("{name}-{u:02}'s frames stopped coming"))
            .expect("the subscription closed");
        let event: SequencedEvent = serde_json::from_str(&frame.text).unwrap();
        let EventKind::AgentResponseChunk { delta } = event.event.kind else {
            panic!("{name}-{u:02} got another kind of event: {}", frame.text);
        };
        (event.seq, delta)
    }
}
