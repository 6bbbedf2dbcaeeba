//! One run per thread across nodes sharing Redis, and under load: a message sent to node B
//! into a thread whose run executes on node A queues behind it, is refused (`reject`), or
//! interrupts it there; and a hundred users double texting at once, each on two nodes, get
//! exactly the runs their strategies say, in order, in every thread.

use std::time::Duration;

use agent_server::config::BrokerChoice;
use agent_server::server::RunningServer;
use serde_json::{Value, json};

use crate::history_server::http;
use crate::multitask::{ask, long, one_at_a_time, read_until_ended, until_ended};
use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
use crate::server_support::{Client, start_server};

async fn node(url: &str) -> RunningServer {
    let url = url.to_owned();
    start_server(move |config| {
        config.broker = BrokerChoice::Redis(url);
        config.run_lease_ttl = Duration::from_secs(3);
        config.start_rate_per_minute = 10_000;
        config.shutdown_grace = Duration::from_millis(50);
    })
    .await
}

/// One user's double texting: a long run on `first`, then on `second` an `enqueue`, a
/// `reject` and an `interrupt` into its thread. Checks what each strategy says: the reject
/// is refused naming the long run, which ends `interrupted`; then the interrupting run,
/// then the queued one, one at a time.
async fn double_text(first: &mut Client, second: &mut Client, user: &str) {
    first
        .send(ask("synthetic", "long", long(40, 50), None, None))
        .await;
    let accepted = first.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{user}: {accepted}");
    let a = accepted["run_id"].as_str().unwrap().to_owned();
    let thread = accepted["thread_id"].as_str().unwrap().to_owned();
    let short = json!({"thinking": 1, "tools": 1, "chunks": 1, "sleep_ms": 0});

    second
        .send(ask(
            "synthetic",
            "queued",
            short.clone(),
            Some(&thread),
            Some("enqueue"),
        ))
        .await;
    let queued = second.reply().await;
    assert_eq!(queued["queued"], true, "{user}: {queued}");
    assert_eq!(queued["position"], 1, "{user}: {queued}");
    let b = queued["run_id"].as_str().unwrap().to_owned();

    second
        .send(ask(
            "synthetic",
            "refused",
            short.clone(),
            Some(&thread),
            Some("reject"),
        ))
        .await;
    let refused = second.reply().await;
    assert_eq!(refused["code"], "thread_busy", "{user}: {refused}");
    assert!(
        refused["message"].as_str().unwrap().contains(&a),
        "{user}: {refused}"
    );

    second
        .send(ask(
            "synthetic",
            "now",
            short,
            Some(&thread),
            Some("interrupt"),
        ))
        .await;
    let now = second.reply().await;
    assert_eq!(now["queued"], true, "{user}: {now}");
    assert_eq!(now["position"], 1, "{user}: ahead of the queued one: {now}");
    let d = now["run_id"].as_str().unwrap().to_owned();

    let frames = until_ended(second, &[&a, &b, &d]).await;
    let runs = one_at_a_time(&frames, &thread);
    let order: Vec<&str> = runs.iter().map(|(run, _)| run.as_str()).collect();
    assert_eq!(order, [a.as_str(), d.as_str(), b.as_str()], "{user}");
    let ends: Vec<(&Value, &Value)> = runs
        .iter()
        .map(|(_, end)| (&end["type"], &end["data"]["reason"]))
        .collect();
    assert_eq!(
        ends[0],
        (&json!("agent_cancelled"), &json!("interrupted")),
        "{user}"
    );
    assert_eq!(ends[1].0, "agent_completed", "{user}");
    assert_eq!(ends[2].0, "agent_completed", "{user}");
}

async fn a_message_on_one_node_queues_behind_or_interrupts_the_run_on_another(
    redis: &impl SharedRedis,
) {
    let (one, two) = (node(&redis.url()).await, node(&redis.url()).await);
    let mut on_one = Client::user(one.addr(), "alice").await;
    let mut on_two = Client::user(two.addr(), "alice").await;
    double_text(&mut on_one, &mut on_two, "alice").await;
}

async fn a_hundred_users_double_texting_at_once_on_two_nodes_get_what_they_asked(
    redis: &impl SharedRedis,
) {
    let (one, two) = (node(&redis.url()).await, node(&redis.url()).await);
    let (a, b) = (one.addr(), two.addr());
    let mut users = Vec::new();
    for i in 0..100 {
        users.push(tokio::spawn(async move {
            let user = format!("texter-{i}");
            // Half start on node one and double text on node two, half the other way.
            let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
            let mut first = Client::user(first, &user).await;
            let mut second = Client::user(second, &user).await;
            double_text(&mut first, &mut second, &user).await;
        }));
    }
    for user in users {
        tokio::time::timeout(Duration::from_secs(60), user)
            .await
            .expect("a user's double texting did not finish in time")
            .expect("a user's checks failed");
    }
}

/// With the history in Postgres shared by two nodes: a message on node two interrupts the
/// run on node one (status `interrupted` in the shared history, its streamed chunks kept),
/// and another rolls the next run back (erased: both nodes answer 404), each new run
/// starting after the run it ended.
async fn interrupt_and_rollback_across_nodes_sharing_the_history(redis: &impl SharedRedis) {
    let postgres = crate::postgres_support::PostgresServer::start();
    let shared = |redis: String, store: String| {
        move |config: &mut agent_server::config::ServerConfig| {
            config.broker = BrokerChoice::Redis(redis);
            config.store = Some(store);
            config.run_lease_ttl = Duration::from_secs(3);
            config.start_rate_per_minute = 10_000;
            config.shutdown_grace = Duration::from_millis(50);
        }
    };
    let one = start_server(shared(redis.url(), postgres.url())).await;
    let two = start_server(shared(redis.url(), postgres.url())).await;
    let mut on_one = Client::user(one.addr(), "alice").await;
    let mut on_two = Client::user(two.addr(), "alice").await;

    on_one
        .send(ask("synthetic", "first", long(40, 50), None, None))
        .await;
    let first = on_one.reply().await;
    let a = first["run_id"].as_str().unwrap().to_owned();
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    // Some of its answer streams before the interruption.
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f: &&Value| f["type"] == "agent_response_chunk")
        .count()
        < 2
    {
        frames.push(on_two.next().await);
    }
    on_two
        .send(ask(
            "synthetic",
            "second",
            long(40, 50),
            Some(&thread),
            Some("interrupt"),
        ))
        .await;
    let b = on_two.reply().await["run_id"].as_str().unwrap().to_owned();
    // Once the second run streams, roll it back from node one.
    loop {
        let frame = on_two.next().await;
        let streaming = frame["run_id"] == b.as_str() && frame["type"] == "agent_response_chunk";
        frames.push(frame);
        if streaming {
            break;
        }
    }
    on_one
        .send(ask(
            "synthetic",
            "third",
            long(1, 0),
            Some(&thread),
            Some("rollback"),
        ))
        .await;
    let c = on_one.reply().await["run_id"].as_str().unwrap().to_owned();
    read_until_ended(&mut on_two, &[&a, &b, &c], &mut frames).await;
    let runs = one_at_a_time(&frames, &thread);
    let order: Vec<&str> = runs.iter().map(|(run, _)| run.as_str()).collect();
    assert_eq!(order, [a.as_str(), b.as_str(), c.as_str()]);
    assert_eq!(runs[0].1["data"]["reason"], "interrupted", "{}", runs[0].1);
    assert_eq!(runs[1].1["data"]["reason"], "rolled_back", "{}", runs[1].1);
    assert_eq!(runs[2].1["type"], "agent_completed", "{}", runs[2].1);

    for node in [one.addr(), two.addr()] {
        let (code, detail) = http(node, "GET", &format!("/v1/runs/{a}"), Some("alice")).await;
        assert_eq!(code, 200, "{detail}");
        assert_eq!(detail["status"], "interrupted", "{detail}");
        let kept = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "agent_response_chunk")
            .count();
        assert!(kept >= 2, "its partial answer is kept: {detail}");
        let (code, gone) = http(node, "GET", &format!("/v1/runs/{b}"), Some("alice")).await;
        assert_eq!(
            code, 404,
            "the rolled-back run is erased everywhere: {gone}"
        );
    }
}

// Each test above, on one Redis and on a Redis Cluster.
on_redis_and_cluster!(a_message_on_one_node_queues_behind_or_interrupts_the_run_on_another);
on_redis_and_cluster!(a_hundred_users_double_texting_at_once_on_two_nodes_get_what_they_asked);
on_redis_and_cluster!(interrupt_and_rollback_across_nodes_sharing_the_history);
