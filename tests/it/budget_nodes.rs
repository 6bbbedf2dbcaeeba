//! One user's budget across two nodes sharing Redis (the streams, the runs, the reservations)
//! and Postgres (the history): runs started on both nodes at once, each model call spending
//! every answer token it was allowed, never pass the budget together; the runs that found it
//! used up wait (`budget_exhausted`) rather than fail.

use std::time::Duration;

use agent_server::config::{BrokerChoice, ServerConfig};
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::history_server::http;
use crate::llm::{DONE, Model, Piece, Reply, content};
use crate::multitask::ask;
use crate::postgres_support::PostgresServer;
use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
use crate::server_support::{Client, start_server};

/// The user's budget.
const BUDGET: u64 = 20_000;
/// Runs started at once on each node.
const RUNS_PER_NODE: usize = 6;

fn node(
    redis: &str,
    postgres: &str,
    model: &Model,
) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let (redis, postgres, url) = (
        redis.to_owned(),
        postgres.to_owned(),
        format!("http://{}/v1", model.addr),
    );
    move |config| {
        config.broker = BrokerChoice::Redis(redis);
        config.store = Some(postgres);
        config.start_rate_per_minute = 10_000;
        config.engine.max_concurrent_runs = 2 * RUNS_PER_NODE;
        config.llm = Some(LlmConfig::new(url, "test-model"));
        config.budget.tokens = Some(BUDGET);
    }
}

/// Reads `client`'s events until each of `runs` completed or waits for the budget; returns
/// how many waited.
async fn settled(client: &mut Client, runs: &[String]) -> usize {
    let mut open: Vec<&String> = runs.iter().collect();
    let mut waited = 0;
    while !open.is_empty() {
        let frame: Value = tokio::time::timeout(Duration::from_secs(30), client.next())
            .await
            .expect("every run completes or waits");
        let Some(run) = frame["run_id"].as_str() else {
            continue;
        };
        let ends = match frame["type"].as_str() {
            Some("agent_completed") => true,
            Some("budget_exhausted") => {
                waited += 1;
                true
            }
            Some("agent_error" | "agent_cancelled") => panic!("a run failed: {frame}"),
            _ => false,
        };
        if ends {
            open.retain(|r| r.as_str() != run);
        }
    }
    waited
}

async fn runs_on_two_nodes_at_once_never_pass_the_users_budget_together(redis: &impl SharedRedis) {
    let postgres = PostgresServer::start();
    let store = postgres.url();
    crate::history::connect_retrying(&store).await;
    // Each call spends 100 prompt tokens and every answer token it was allowed.
    let spend_all = Reply::Stream(vec![content("spent"), Piece::UsageOfAllowed(100), DONE]);
    let model = Model::start(vec![spend_all; 4 * RUNS_PER_NODE]).await;
    let one = start_server(node(&redis.url(), &store, &model)).await;
    let two = start_server(node(&redis.url(), &store, &model)).await;
    let mut on_one = Client::user(one.addr(), "spender").await;
    let mut on_two = Client::user(two.addr(), "spender").await;

    let mut runs = (Vec::new(), Vec::new());
    for n in 0..RUNS_PER_NODE {
        on_one
            .send(ask("llm", &format!("one {n}"), json!({}), None, None))
            .await;
        on_two
            .send(ask("llm", &format!("two {n}"), json!({}), None, None))
            .await;
    }
    for (client, started) in [(&mut on_one, &mut runs.0), (&mut on_two, &mut runs.1)] {
        while started.len() < RUNS_PER_NODE {
            let reply = client.reply().await;
            assert_eq!(reply["type"], "run_accepted", "{reply}");
            started.push(reply["run_id"].as_str().unwrap().to_owned());
        }
    }
    let all: Vec<String> = runs.0.iter().chain(&runs.1).cloned().collect();
    // Each connection sees the user's whole stream: every run's end or wait.
    let waited = settled(&mut on_one, &all).await;

    let calls = model.requests().len();
    let (_, used) = http(one.addr(), "GET", "/v1/me/usage", Some("spender")).await;
    let spent = used["tokens"]["used"].as_u64().unwrap();
    println!(
        "budget {BUDGET}: {calls} calls made, {spent} tokens spent, {waited} of {} runs waiting",
        all.len()
    );
    assert!(calls >= 2, "runs on both nodes made calls: {calls}");
    assert!(waited >= 1, "the budget stopped some runs: {used}");
    assert!(
        spent <= BUDGET,
        "two nodes together spent {spent} of a budget of {BUDGET} ({calls} calls)"
    );
    // Every call the model answered is counted, once.
    assert_eq!(used["calls"], calls, "{used}");
}

// Each test above, on one Redis and on a Redis Cluster.
on_redis_and_cluster!(runs_on_two_nodes_at_once_never_pass_the_users_budget_together);
