//! What an operator probes: `/healthz`, `/readyz` (draining, and a broker that is down),
//! `/version`, and the JSON 404 of an unknown route.

use std::time::Duration;

use agent_server::config::BrokerChoice;
use serde_json::json;

use crate::history_server::http;
use crate::redis_support::RedisServer;
use crate::server_support::{Client, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_unknown_routes() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    assert_eq!(
        http(addr, "GET", "/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    let (status, version) = http(addr, "GET", "/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        version["git_revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{version}"
    );
    let (status, ready) = http(addr, "GET", "/readyz", None).await;
    assert_eq!(
        (status, ready),
        (
            200,
            json!({"status": "ready", "checks": {"broker": "ok", "store": "none"}})
        )
    );
    let (status, missing) = http(addr, "GET", "/metricz", None).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains("no route GET /metricz") && message.contains("GET /readyz"),
        "{message}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_draining() {
    let server = start_server(|c| c.shutdown_grace = Duration::from_secs(3)).await;
    let addr = server.addr();
    let mut client = Client::user(addr, "olga").await;
    let accepted = client
        .start("r1", "synthetic", json!({"tools": 0, "hang": true}))
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let draining = tokio::spawn(server.shutdown());
    let mut seen = None;
    for _ in 0..100 {
        let (status, body) = http(addr, "GET", "/readyz", None).await;
        if status == 503 {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.expect("503 while draining")["status"], "draining");
    draining.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_redis_broker() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = start_server(move |c| c.broker = BrokerChoice::Redis(url)).await;
    let addr = server.addr();
    let ready_is = |expected: u16| async move {
        for _ in 0..200 {
            let (status, body) = http(addr, "GET", "/readyz", None).await;
            if status == expected {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("/readyz never answered {expected}");
    };
    assert_eq!(ready_is(200).await["checks"]["broker"], "ok");
    redis.stop();
    let down = ready_is(503).await;
    assert_eq!(
        down,
        json!({"status": "not_ready", "checks": {"broker": "failing", "store": "none"}})
    );
    redis.restart();
    assert_eq!(ready_is(200).await["status"], "ready");
    server.shutdown().await;
}
