//! A thread renamed or deleted is announced on its user's stream (`thread_renamed`,
//! `thread_deleted`): every connection of the user hears of it, in the stream's order (the
//! next `seq`), on the node that made the change and on another node (Redis and Postgres);
//! another user hears nothing, and a refused change announces nothing. A connection that was
//! away gets the change in its resume; the typed client gets it as a notice.

use std::net::SocketAddr;
use std::time::Duration;

use agent_server::config::BrokerChoice;
use agent_server::server::RunningServer;
use serde_json::{Value, json};

use crate::history_server::http_sending;
use crate::postgres_support::PostgresServer;
use crate::redis_support::RedisServer;
use crate::server_support::{Client, start_server, token};

/// Two nodes sharing a private Redis (the streams) and Postgres (the history); the services
/// live as long as the value.
pub(crate) struct TwoNodes {
    pub(crate) a: RunningServer,
    pub(crate) b: RunningServer,
    _redis: RedisServer,
    _postgres: PostgresServer,
}

impl TwoNodes {
    pub(crate) async fn start() -> Self {
        let redis = RedisServer::start();
        let postgres = PostgresServer::start();
        let store = postgres.url();
        crate::history::connect_retrying(&store).await;
        let node = || {
            let (redis, store) = (redis.url(), store.clone());
            move |c: &mut agent_server::config::ServerConfig| {
                c.broker = BrokerChoice::Redis(redis);
                c.store = Some(store);
            }
        };
        let a = start_server(node()).await;
        let b = start_server(node()).await;
        Self {
            a,
            b,
            _redis: redis,
            _postgres: postgres,
        }
    }

    pub(crate) async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

/// Alice's conversation, started on `addr` and ended: its thread id and the last `seq`.
async fn conversation(addr: SocketAddr) -> (String, u64) {
    let mut alice = Client::user(addr, "alice").await;
    let mut thread = None;
    alice
        .start_in_thread("assistant", "What is 2+2?", &mut thread)
        .await;
    let events = alice.events_until_terminals(1).await;
    (thread.unwrap(), events.last().unwrap().seq)
}

/// The next frame of `client`'s stream, which must be a thread's change.
async fn change(client: &mut Client) -> Value {
    let frame = client.next().await;
    assert!(
        frame["type"].as_str().unwrap_or("").starts_with("thread_"),
        "{frame}"
    );
    frame
}

/// Nothing arrives on `client` for a while.
async fn hears_nothing(client: &mut Client) {
    client.pump(Duration::from_millis(500)).await;
    assert!(client.pending.is_empty(), "{:?}", client.pending);
}

/// The story: the change is made through `http` (a node), heard on `listener` (a node).
async fn renames_and_deletions_reach_every_connection(http: SocketAddr, listener: SocketAddr) {
    let (thread, last) = conversation(http).await;
    let mut first = Client::user(listener, "alice").await;
    let mut second = Client::user(http, "alice").await;
    let mut bob = Client::user(listener, "bob").await;
    let epoch = first.established["epoch"].as_str().unwrap().to_owned();

    // Bob cannot rename Alice's thread, and nothing is announced.
    let path = format!("/v1/threads/{thread}");
    let (status, _) = http_sending(http, "PATCH", &path, Some("bob"), r#"{"title":"Mine"}"#).await;
    assert_eq!(status, 404);
    hears_nothing(&mut first).await;

    let (status, _) =
        http_sending(http, "PATCH", &path, Some("alice"), r#"{"title":"Sums"}"#).await;
    assert_eq!(status, 200);
    for client in [&mut first, &mut second] {
        let renamed = change(client).await;
        assert_eq!(renamed["seq"], last + 1, "{renamed}");
        assert_eq!(renamed["thread_id"], thread.as_str());
        assert_eq!(renamed["data"], json!({"title": "Sums"}));
        assert!(renamed.get("run_id").is_none(), "{renamed}");
    }
    let (status, _) = http_sending(http, "DELETE", &path, Some("alice"), "").await;
    assert_eq!(status, 204);
    for client in [&mut first, &mut second] {
        let deleted = change(client).await;
        assert_eq!(deleted["seq"], last + 2, "{deleted}");
        assert_eq!(deleted["type"], "thread_deleted");
        assert_eq!(deleted["data"], json!({}));
    }
    hears_nothing(&mut bob).await;

    // Away since before the rename: the resume brings both changes, in order.
    let mut back = Client::resuming(listener, "alice", Some((&epoch, last))).await;
    assert_eq!(
        back.established["resume"]["status"], "ok",
        "{}",
        back.established
    );
    assert_eq!(change(&mut back).await["type"], "thread_renamed");
    assert_eq!(change(&mut back).await["type"], "thread_deleted");

    // The typed client: a notice, the stream's order kept.
    let url = format!("http://{listener}");
    let mut typed = agent_client::Client::connect(&url, &token("alice"))
        .await
        .unwrap();
    let (thread, _) = conversation(http).await;
    let (status, _) = http_sending(
        http,
        "PATCH",
        &format!("/v1/threads/{thread}"),
        Some("alice"),
        r#"{"title":"Again"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let notice = loop {
        match tokio::time::timeout(Duration::from_secs(10), typed.next_item()).await {
            Ok(Some(Ok(agent_client::StreamItem::Notice(agent_client::Notice::Thread(
                change,
            ))))) => break change,
            Ok(Some(Ok(_))) => {}
            other => panic!("no thread notice: {other:?}"),
        }
    };
    assert_eq!(notice.event.thread_id.as_str(), thread);
    assert_eq!(
        notice.event.change,
        agent_protocol::ThreadChange::ThreadRenamed {
            title: "Again".into()
        }
    );
    typed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_a_threads_changes_reach_every_connection_of_its_user() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| c.store = Some(store)).await;
    renames_and_deletions_reach_every_connection(server.addr(), server.addr()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_nodes_a_threads_changes_reach_every_connection_of_its_user() {
    let nodes = TwoNodes::start().await;
    renames_and_deletions_reach_every_connection(nodes.a.addr(), nodes.b.addr()).await;
    nodes.shutdown().await;
}
