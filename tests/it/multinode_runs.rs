//! Runs across nodes sharing Redis, over real sockets: `cancel_run` sent to one node stops
//! the run executing on another (and another user's run stays indistinguishable from a
//! missing one), the per-user run limit and queue hold across nodes, and the runs of a node that died
//! end for their users with `agent_error` `node_lost` once its leases expire.

use std::time::Duration;

use agent_server::config::BrokerChoice;
use agent_server::server::RunningServer;
use core_context::SequencedEvent;
use core_context::lifecycle::check_lifecycle;
use serde_json::{Value, json};

use crate::redis_cluster_support::{SharedRedis, on_redis_and_cluster};
use crate::server_support::{Client, KillableServer, start_server};

const LEASE: Duration = Duration::from_millis(900);

fn tune(
    url: &str,
    max_runs: usize,
) -> impl FnOnce(&mut agent_server::config::ServerConfig) + Send + use<> {
    let url = url.to_owned();
    move |config| {
        config.broker = BrokerChoice::Redis(url);
        config.run_lease_ttl = LEASE;
        config.engine.max_concurrent_runs = max_runs;
        // No queue: a run past the limit is refused (the queue across nodes has its own test).
        config.engine.max_queued_runs = 0;
        config.start_rate_per_minute = 1_000;
        // The hanging runs are cancelled at once on shutdown.
        config.shutdown_grace = Duration::from_millis(50);
    }
}

async fn node(url: &str, max_runs: usize) -> RunningServer {
    start_server(tune(url, max_runs)).await
}

fn hang() -> Value {
    json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true})
}

/// Reads until the event of `run` whose `type` is `kind`; returns the run's events so far.
async fn until(client: &mut Client, run: &str, kind: &str) -> Vec<SequencedEvent> {
    let mut events = Vec::new();
    loop {
        let frame = client.next().await;
        if frame["run_id"] != run || frame.get("seq").is_none() {
            continue;
        }
        let done = frame["type"] == kind;
        events.push(serde_json::from_value(frame).unwrap());
        if done {
            return events;
        }
    }
}

async fn cancel(client: &mut Client, request_id: &str, run: &str) {
    client
        .send(json!({"type": "cancel_run", "request_id": request_id, "payload": {"run_id": run}}))
        .await;
}

/// The next non-event frame (a reply), skipping events.
async fn reply(client: &mut Client) -> Value {
    client.reply().await
}

async fn cancel_sent_to_one_node_stops_the_run_on_another(redis: &impl SharedRedis) {
    let (a, b) = (node(&redis.url(), 3).await, node(&redis.url(), 3).await);
    let mut on_a = Client::user(a.addr(), "frank").await;
    let mut on_b = Client::user(b.addr(), "frank").await;
    let accepted = on_b.start("r1", "synthetic", hang()).await;
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    until(&mut on_a, &run, "agent_thinking").await;

    // Another user, on the node the run is not on, cannot tell it from a missing run.
    let mut other = Client::user(a.addr(), "grace").await;
    cancel(&mut other, "x1", &run).await;
    let theirs = reply(&mut other).await;
    cancel(&mut other, "x2", "run_01JD6QA0B1C2D3E4F5G6H7J8K9").await;
    let missing = reply(&mut other).await;
    assert_eq!(theirs["code"], "run_not_found", "{theirs}");
    assert_eq!(missing["code"], "run_not_found", "{missing}");
    assert_eq!(
        theirs["message"].as_str().unwrap().replace(&run, "<run>"),
        missing["message"]
            .as_str()
            .unwrap()
            .replace("run_01JD6QA0B1C2D3E4F5G6H7J8K9", "<run>")
    );

    // The owner cancels through node A; node B stops the run.
    cancel(&mut on_a, "c1", &run).await;
    let events = until(&mut on_a, &run, "agent_cancelled").await;
    assert_eq!(
        events.last().unwrap().event.kind.type_name(),
        "agent_cancelled"
    );
    let seen_on_b = until(&mut on_b, &run, "agent_cancelled").await;
    let all: Vec<_> = seen_on_b.iter().map(|e| e.event.clone()).collect();
    check_lifecycle(&all).unwrap();
    for node in [a, b] {
        node.shutdown().await;
    }
}

async fn the_run_limit_holds_across_nodes(redis: &impl SharedRedis) {
    let (a, b) = (node(&redis.url(), 2).await, node(&redis.url(), 2).await);
    let mut on_a = Client::user(a.addr(), "helen").await;
    let mut on_b = Client::user(b.addr(), "helen").await;
    let first = on_a.start("r1", "synthetic", hang()).await;
    assert_eq!(first["type"], "run_accepted", "{first}");
    let second = on_b.start("r2", "synthetic", hang()).await;
    assert_eq!(second["type"], "run_accepted", "{second}");
    for client in [&mut on_a, &mut on_b] {
        let refused = client.start("r3", "synthetic", hang()).await;
        assert_eq!(refused["code"], "too_many_runs", "{refused}");
    }
    // Another user is not limited by helen's runs.
    let mut ivan = Client::user(b.addr(), "ivan").await;
    let his = ivan.start("r1", "synthetic", json!({})).await;
    assert_eq!(his["type"], "run_accepted", "{his}");

    // Ending one run (cancelled from the other node) frees its slot for any node.
    let second_run = second["run_id"].as_str().unwrap().to_owned();
    cancel(&mut on_a, "c1", &second_run).await;
    until(&mut on_a, &second_run, "agent_cancelled").await;
    let mut again = on_a.start("r4", "synthetic", hang()).await;
    // The slot is given back just after the terminal event; a start racing it may be refused.
    for attempt in 0..50 {
        if again["type"] == "run_accepted" {
            break;
        }
        assert_eq!(again["code"], "too_many_runs", "{again}");
        assert!(
            attempt < 49,
            "the cancelled run's slot was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = on_a
            .start(&format!("r5-{attempt}"), "synthetic", hang())
            .await;
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// A run past the limit queues across nodes exactly as on one node: accepted, started when
/// a slot frees on any node, in order; past the queue bound refused; cancellable from any
/// node while it waits.
async fn a_run_past_the_limit_queues_across_nodes(redis: &impl SharedRedis) {
    let queueing = |url: &str| {
        let tune = tune(url, 1);
        move |config: &mut agent_server::config::ServerConfig| {
            tune(config);
            config.engine.max_queued_runs = 2;
        }
    };
    let a = start_server(queueing(&redis.url())).await;
    let b = start_server(queueing(&redis.url())).await;
    let mut on_a = Client::user(a.addr(), "nina").await;
    let mut on_b = Client::user(b.addr(), "nina").await;
    let first = on_a.start("r1", "synthetic", hang()).await;
    assert_eq!(first["type"], "run_accepted", "{first}");
    let first = first["run_id"].as_str().unwrap().to_owned();
    until(&mut on_a, &first, "agent_started").await;
    // Past the limit of 1, on the other node: accepted and queued behind the first.
    let second = on_b.start("r2", "synthetic", json!({})).await;
    assert_eq!(second["type"], "run_accepted", "{second}");
    let second = second["run_id"].as_str().unwrap().to_owned();
    let third = on_a.start("r3", "synthetic", hang()).await;
    assert_eq!(third["type"], "run_accepted", "{third}");
    let third = third["run_id"].as_str().unwrap().to_owned();
    // Past the queue bound of 2: refused, on either node.
    let refused = on_b.start("r4", "synthetic", hang()).await;
    assert_eq!(refused["code"], "too_many_runs", "{refused}");

    // The third, queued on node A, is cancelled from node B: it starts and ends at once.
    cancel(&mut on_b, "c1", &third).await;
    let ended = until(&mut on_b, &third, "agent_cancelled").await;
    let kinds: Vec<_> = ended.iter().map(|e| e.event.kind.type_name()).collect();
    assert_eq!(kinds, ["agent_started", "agent_cancelled"]);

    // Ending the first (on A) lets the second (queued on B) start, and it completes.
    cancel(&mut on_a, "c2", &first).await;
    let events = until(&mut on_a, &second, "agent_completed").await;
    let all: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    check_lifecycle(&all).unwrap();
    assert_eq!(all[0].kind.type_name(), "agent_started");
    for node in [a, b] {
        node.shutdown().await;
    }
}

async fn the_runs_of_a_killed_node_end_for_their_users(redis: &impl SharedRedis) {
    let survivor = node(&redis.url(), 1).await;
    let mut doomed = KillableServer::start(tune(&redis.url(), 1));
    let mut watcher = Client::user(survivor.addr(), "judy").await;
    let mut on_doomed = Client::user(doomed.addr, "judy").await;
    let accepted = on_doomed.start("r1", "synthetic", hang()).await;
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let mut events = until(&mut watcher, &run, "agent_thinking").await;
    // The limit (1) is held by the run on the doomed node.
    let refused = watcher.start("r2", "synthetic", hang()).await;
    assert_eq!(refused["code"], "too_many_runs", "{refused}");

    doomed.kill();
    events.extend(until(&mut watcher, &run, "agent_error").await);
    let end = events.last().unwrap();
    assert_eq!(
        serde_json::to_value(&end.event).unwrap()["data"]["code"],
        "node_lost",
        "{end:?}"
    );
    // The watcher's stream stayed whole: started, thinking, then the end, seq contiguous.
    let kinds: Vec<_> = events.iter().map(|e| e.event.kind.type_name()).collect();
    assert_eq!(kinds, ["agent_started", "agent_thinking", "agent_error"]);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (seqs[0]..seqs[0] + 3).collect::<Vec<_>>());
    // The lost run's slot is free again.
    let started = watcher.start("r3", "synthetic", json!({})).await;
    assert_eq!(started["type"], "run_accepted", "{started}");
    survivor.shutdown().await;
}

/// A run queued on a node that dies (accepted, waiting for the user's slot held elsewhere)
/// still ends for its user: once its place expires a surviving node emits its start and its
/// `node_lost` end, and the queue is free again.
async fn a_run_queued_on_a_killed_node_ends_for_its_user(redis: &impl SharedRedis) {
    let queueing = |url: &str| {
        let tune = tune(url, 1);
        move |config: &mut agent_server::config::ServerConfig| {
            tune(config);
            config.engine.max_queued_runs = 1;
        }
    };
    let survivor = start_server(queueing(&redis.url())).await;
    let mut doomed = KillableServer::start(queueing(&redis.url()));
    let mut watcher = Client::user(survivor.addr(), "lena").await;
    let mut on_doomed = Client::user(doomed.addr, "lena").await;
    let holder = watcher.start("r1", "synthetic", hang()).await;
    let holder = holder["run_id"].as_str().unwrap().to_owned();
    until(&mut watcher, &holder, "agent_started").await;
    let queued = on_doomed.start("r2", "synthetic", json!({})).await;
    assert_eq!(queued["type"], "run_accepted", "{queued}");
    let queued = queued["run_id"].as_str().unwrap().to_owned();
    // The queue (1) is full: the place on the doomed node counts.
    let refused = watcher.start("r3", "synthetic", hang()).await;
    assert_eq!(refused["code"], "too_many_runs", "{refused}");

    doomed.kill();
    let events = until(&mut watcher, &queued, "agent_error").await;
    let kinds: Vec<_> = events.iter().map(|e| e.event.kind.type_name()).collect();
    assert_eq!(kinds, ["agent_started", "agent_error"]);
    let end = serde_json::to_value(&events[1].event).unwrap();
    assert_eq!(end["data"]["code"], "node_lost", "{end}");
    let start = serde_json::to_value(&events[0].event).unwrap();
    assert_eq!(start["data"]["message"], "go", "{start}");
    // The dead node's place is gone: a new run queues behind the holder again.
    let again = watcher.start("r4", "synthetic", json!({})).await;
    assert_eq!(again["type"], "run_accepted", "{again}");
    survivor.shutdown().await;
}

/// A node that still runs a run whose lease expired (as when it could not reach Redis for a
/// whole lease TTL): the run is ended once, with `node_lost`, and nothing of it follows; the
/// node cancels it, and what the run emits meanwhile is dropped.
async fn a_run_whose_lease_expired_ends_once(redis: &impl SharedRedis) {
    let (a, b) = (node(&redis.url(), 3).await, node(&redis.url(), 3).await);
    let mut on_a = Client::user(a.addr(), "kate").await;
    let mut watcher = Client::user(b.addr(), "kate").await;
    let accepted = on_a
        .start(
            "r1",
            "synthetic",
            json!({"thinking": 300, "tools": 0, "chunks": 0, "sleep_ms": 10}),
        )
        .await;
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let mut events = until(&mut watcher, &run, "agent_thinking").await;
    // Expire every lease now, as if node A had stopped renewing.
    redis.expire_run_leases();
    events.extend(until(&mut watcher, &run, "agent_error").await);
    let end = serde_json::to_value(&events.last().unwrap().event).unwrap();
    assert_eq!(end["data"]["code"], "node_lost", "{end}");
    // A later run of the user streams to its end; nothing of the ended run comes meanwhile.
    let second = on_a
        .start(
            "r2",
            "synthetic",
            json!({"thinking": 3, "tools": 0, "chunks": 0, "sleep_ms": 400}),
        )
        .await;
    let second = second["run_id"].as_str().unwrap().to_owned();
    loop {
        let frame = watcher.next().await;
        assert_ne!(
            frame["run_id"], run,
            "an event after the run's end: {frame}"
        );
        if frame["run_id"] == second && frame["type"] == "agent_completed" {
            break;
        }
    }
    let all: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    check_lifecycle(&all).unwrap();
    for node in [a, b] {
        node.shutdown().await;
    }
}

// Each test above, on one Redis and on a Redis Cluster.
on_redis_and_cluster!(cancel_sent_to_one_node_stops_the_run_on_another);
on_redis_and_cluster!(the_run_limit_holds_across_nodes);
on_redis_and_cluster!(a_run_past_the_limit_queues_across_nodes);
on_redis_and_cluster!(the_runs_of_a_killed_node_end_for_their_users);
on_redis_and_cluster!(a_run_queued_on_a_killed_node_ends_for_its_user);
on_redis_and_cluster!(a_run_whose_lease_expired_ends_once);
