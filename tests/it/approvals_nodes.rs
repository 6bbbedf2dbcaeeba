//! Approvals across nodes sharing Redis (the streams, the run slots) and Postgres (the
//! history, where paused runs are kept): a run paused on node A, A killed, approved on node
//! B: the run completes on B and its tool ran once; decisions for one call sent to two nodes
//! at once: exactly one is taken (the other is 409) and the tool runs once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_server::config::{BrokerChoice, ServerConfig};
use llm_agent::LlmConfig;
use serde_json::json;

use crate::approvals::{approving, decide, paused_run, rest_of_run};
use crate::approvals_engine::Tally;
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::postgres_support::PostgresServer;
use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
use crate::server_support::{Client, KillableServer, start_server};

/// A node on `redis` and `postgres`, with the `llm` agent on `model`, `tally` needing approval.
fn node(
    redis: &str,
    postgres: &str,
    model: &Model,
    tally: &Arc<AtomicU32>,
) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let base = approving(postgres, &["tally"]);
    let (redis, url, tally) = (
        redis.to_owned(),
        format!("http://{}/v1", model.addr),
        Arc::clone(tally),
    );
    move |config| {
        base(config);
        config.broker = BrokerChoice::Redis(redis);
        config.run_lease_ttl = Duration::from_millis(900);
        config.llm = Some(LlmConfig::new(url, "test-model"));
        config.tools.tools.push(Arc::new(Tally(tally)));
    }
}

/// A turn calling `tally` under `id`, then an answer.
fn tally_turns(id: &str, answer: &str) -> Vec<Reply> {
    vec![
        Reply::Stream(vec![tool_piece(0, Some(id), Some("tally"), "{}"), DONE]),
        Reply::Stream(vec![content(answer), DONE]),
    ]
}

async fn a_run_paused_on_a_killed_node_is_approved_and_completed_on_another(
    redis: &impl SharedRedis,
) {
    let postgres = PostgresServer::start();
    let store = postgres.url();
    crate::history::connect_retrying(&store).await;
    let tally = Arc::new(AtomicU32::new(0));
    let mut replies = tally_turns("call_n1", "counted on B");
    replies.extend(tally_turns("call_n2", "counted once"));
    let model = Model::start(replies).await;
    let b = start_server(node(&redis.url(), &store, &model, &tally)).await;
    let c = start_server(node(&redis.url(), &store, &model, &tally)).await;
    let mut a = KillableServer::start(node(&redis.url(), &store, &model, &tally));

    // Paused on A; the user watches from B.
    let mut on_b = Client::user(b.addr(), "alice").await;
    let mut on_a = Client::user(a.addr, "alice").await;
    let (run, _) = paused_run(&mut on_a, "llm", "count").await;
    drop(on_a);
    a.kill();
    // Past a lease TTL: a paused run holds no lease, so no node ends it as lost.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (status, reply) = decide(
        b.addr(),
        "alice",
        &run,
        "call_n1",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(
        (status, reply["resumed"].as_bool()),
        (200, Some(true)),
        "{reply}"
    );
    let rest = rest_of_run(&mut on_b, &run).await;
    let kinds: Vec<&str> = rest.iter().map(|f| f["type"].as_str().unwrap()).collect();
    // B's client saw the whole run, its start and pause on A and its end on B, with no
    // `node_lost` between them.
    assert_eq!(
        kinds,
        [
            "agent_started",
            "approval_requested",
            "approval_resolved",
            "tool_executing",
            "tool_completed",
            "agent_response_chunk",
            "agent_completed"
        ]
    );
    assert_eq!(rest.last().unwrap()["data"]["result"], "counted on B");
    assert_eq!(tally.load(Ordering::SeqCst), 1);

    // One call decided on two nodes at once: one decision is taken, the tool runs once.
    let (run, _) = paused_run(&mut on_b, "llm", "count again").await;
    let (on_b_answer, on_c_answer) = tokio::join!(
        decide(
            b.addr(),
            "alice",
            &run,
            "call_n2",
            json!({"decision": "approve"})
        ),
        decide(
            c.addr(),
            "alice",
            &run,
            "call_n2",
            json!({"decision": "approve"})
        ),
    );
    let mut statuses = [on_b_answer.0, on_c_answer.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{on_b_answer:?} {on_c_answer:?}");
    let rest = rest_of_run(&mut on_b, &run).await;
    assert_eq!(rest.last().unwrap()["data"]["result"], "counted once");
    let resolved = rest
        .iter()
        .filter(|f| f["type"] == "approval_resolved")
        .count();
    assert_eq!(resolved, 1);
    assert_eq!(
        tally.load(Ordering::SeqCst),
        2,
        "each approved call ran once"
    );
    b.shutdown().await;
    c.shutdown().await;
}

// Each test above, on one Redis and on a Redis Cluster.
on_redis_and_cluster!(a_run_paused_on_a_killed_node_is_approved_and_completed_on_another);
