//! Several `agent-server` nodes sharing users through Redis, over real sockets: one stream
//! per user whichever node a tab is on, isolation with many users spread over the nodes,
//! resume after moving nodes, and Redis restarted under a live stream.
//!
//! Each test starts its own private `redis-server` (see `redis_support`) and its nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_server::server::RunningServer;
use core_context::SequencedEvent;
use serde_json::{Value, json};

use crate::redis_cluster_support::{SharedRedis, in_every_mode};
use crate::redis_support::RedisServer;
use crate::server_support::Client;

/// `count` nodes on free ports, all on the Redis at `url`.
async fn nodes(url: &str, count: usize) -> Vec<RunningServer> {
    crate::redis_support::nodes_on(url, count, |_| {}).await
}

fn event(frame: Value) -> SequencedEvent {
    serde_json::from_value(frame.clone()).unwrap_or_else(|e| panic!("not an event {frame}: {e}"))
}

/// Reads frames (skipping replies) until `terminals` runs ended; returns the raw frames.
async fn frames_until_terminals(client: &mut Client, terminals: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < terminals {
        let frame = client.next().await;
        if frame.get("seq").is_none() {
            continue;
        }
        if event(frame.clone()).event.kind.is_terminal() {
            ended += 1;
        }
        out.push(frame);
    }
    out
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

fn epoch_of(client: &Client) -> String {
    client.established["epoch"].as_str().unwrap().to_owned()
}

fn resume_url_parts(client: &Client, after_seq: u64) -> (String, u64) {
    (epoch_of(client), after_seq)
}

/// A user's tabs on three different nodes read one stream: the same frames, in the same
/// order, seq contiguous, whichever node runs the agent.
async fn tabs_on_different_nodes_read_one_stream(redis: &impl SharedRedis) {
    let nodes = nodes(&redis.url(), 3).await;
    let mut tabs = Vec::new();
    for node in &nodes {
        tabs.push(Client::user(node.addr(), "alice").await);
    }
    let epochs: BTreeSet<String> = tabs.iter().map(epoch_of).collect();
    assert_eq!(
        epochs.len(),
        1,
        "the nodes disagree on the epoch: {epochs:?}"
    );
    // One run started on each node.
    let shape = json!({"thinking": 3, "tools": 2, "chunks": 3});
    for (i, tab) in tabs.iter_mut().enumerate() {
        let accepted = tab
            .start(&format!("r{i}"), "synthetic", shape.clone())
            .await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    }
    let mut streams = Vec::new();
    for tab in &mut tabs {
        streams.push(frames_until_terminals(tab, 3).await);
    }
    let first = &streams[0];
    assert_eq!(seqs(first), (1..=first.len() as u64).collect::<Vec<_>>());
    for (node, stream) in streams.iter().enumerate() {
        assert_eq!(stream, first, "the tab on node {node} read another stream");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// 120 users, each with one tab on node A and one on node B, each starting runs on both:
/// every tab gets only its user's events, seq contiguous from 1, both tabs the same stream.
async fn many_users_alternating_nodes_get_only_their_own_events(redis: &impl SharedRedis) {
    let nodes = nodes(&redis.url(), 2).await;
    let users: Vec<String> = (0..120).map(|u| format!("multi{u:03}")).collect();
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        // Alternate which node gets the user's first tab.
        let (a, b) = if u % 2 == 0 {
            (nodes[0].addr(), nodes[1].addr())
        } else {
            (nodes[1].addr(), nodes[0].addr())
        };
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            let mut first = Client::resuming(a, &user, None).await;
            let mut second = Client::resuming(b, &user, None).await;
            let mut runs = BTreeSet::new();
            let shape = json!({"thinking": 2, "tools": 1, "chunks": 2});
            for (i, tab) in [&mut first, &mut second].into_iter().enumerate() {
                let accepted = tab
                    .start(&format!("r{i}"), "synthetic", shape.clone())
                    .await;
                assert_eq!(accepted["type"], "run_accepted", "{accepted}");
                runs.insert(accepted["run_id"].as_str().unwrap().to_owned());
            }
            let one = frames_until_terminals(&mut first, 2).await;
            let two = frames_until_terminals(&mut second, 2).await;
            assert_eq!(
                one, two,
                "{user}'s tabs on two nodes read different streams"
            );
            assert_eq!(
                seqs(&one),
                (1..=one.len() as u64).collect::<Vec<_>>(),
                "{user}"
            );
            for frame in &one {
                let run = frame["run_id"].as_str().unwrap();
                assert!(
                    runs.contains(run),
                    "{user} got another user's event: {frame}"
                );
            }
            one.len()
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    // 2 runs x (started + 2 thinking + 2 tool events + 2 chunks + completed) per user.
    assert_eq!(total, users.len() * 2 * 8);
    for node in nodes {
        node.shutdown().await;
    }
}

/// A client that leaves node A mid-run and resumes on node B gets every event it missed,
/// then the live ones, with no gap and no repeat.
async fn resume_on_another_node_loses_nothing(redis: &impl SharedRedis) {
    let nodes = nodes(&redis.url(), 2).await;
    let mut seen: Vec<u64> = Vec::new();
    let mut on_a = Client::user(nodes[0].addr(), "bob").await;
    let accepted = on_a
        .start(
            "r1",
            "synthetic",
            json!({"thinking": 30, "tools": 0, "chunks": 10, "sleep_ms": 5}),
        )
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    while seen.len() < 8 {
        let frame = on_a.next().await;
        if let Some(seq) = frame["seq"].as_u64() {
            seen.push(seq);
        }
    }
    let (epoch, after) = resume_url_parts(&on_a, *seen.last().unwrap());
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut on_b = Client::resuming(nodes[1].addr(), "bob", Some((&epoch, after))).await;
    assert_eq!(
        on_b.established["resume"]["status"], "ok",
        "{}",
        on_b.established
    );
    let rest = frames_until_terminals(&mut on_b, 1).await;
    seen.extend(seqs(&rest));
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    // started + 30 thinking + 10 chunks + completed.
    assert_eq!(seen.len(), 42);
    for node in nodes {
        node.shutdown().await;
    }
}

/// The nodes' live (pub/sub) connections are cut again and again while a run streams to a
/// tab on the other node; Redis keeps its data. The nodes reconnect and fetch what they missed
/// from the log: the tab gets every event, in order, and is never closed.
async fn cut_live_connections_lose_nothing(redis: &impl SharedRedis) {
    let nodes = nodes(&redis.url(), 2).await;
    let mut runner = Client::user(nodes[0].addr(), "erin").await;
    let mut watcher = Client::user(nodes[1].addr(), "erin").await;
    let accepted = runner
        .start(
            "r1",
            "synthetic",
            json!({"thinking": 120, "tools": 0, "chunks": 0, "sleep_ms": 5}),
        )
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let mut seen: Vec<u64> = Vec::new();
    let mut cuts = 0;
    loop {
        let frame = watcher.next().await;
        let Some(seq) = frame["seq"].as_u64() else {
            continue;
        };
        seen.push(seq);
        if seq % 20 == 0 && cuts < 4 {
            // Cut them for 100 ms: each reconnect is cut again, and events published
            // meanwhile reach no node live.
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_millis(100) {
                redis.kill_pubsub_clients();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cuts += 1;
        }
        if event(frame).event.kind.is_terminal() {
            break;
        }
    }
    assert_eq!(cuts, 4);
    // started + 120 thinking + completed, each once, in order, on a connection never closed.
    assert_eq!(seen, (1..=122).collect::<Vec<_>>());
    for node in nodes {
        node.shutdown().await;
    }
}

/// Redis is killed and restarted empty while a run streams to a tab on another node. The
/// nodes survive; the tab is closed with 4009 (stream reset) after a gapless prefix; its
/// resume says `epoch_changed`; the new epoch's events arrive contiguous from 1 up to the
/// run's end. Nothing is lost without the client being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_stream_ends_in_an_explicit_failed_resume() {
    redis_restarted_mid_stream(false).await;
}

/// The same with the nodes in the sequencer mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_the_sequencer_mode_redis_restarted_mid_stream_ends_in_an_explicit_failed_resume() {
    redis_restarted_mid_stream(true).await;
}

async fn redis_restarted_mid_stream(sequencer: bool) {
    let mut redis = RedisServer::start();
    let url = if sequencer {
        format!("{}{}", redis.url(), crate::server_support::SEQUENCER)
    } else {
        redis.url()
    };
    let nodes = nodes(&url, 2).await;
    let mut runner = Client::user(nodes[0].addr(), "carol").await;
    let mut watcher = Client::user(nodes[1].addr(), "carol").await;
    let accepted = runner
        .start(
            "r1",
            "synthetic",
            json!({"thinking": 150, "tools": 0, "chunks": 0, "sleep_ms": 10}),
        )
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let mut before: Vec<u64> = Vec::new();
    while before.len() < 5 {
        if let Some(seq) = watcher.next().await["seq"].as_u64() {
            before.push(seq);
        }
    }
    let old_epoch = epoch_of(&watcher);
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    // The watcher gets what was published before the crash, then the close.
    loop {
        let message = watcher.next_message().await;
        match message {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if let Some(seq) = frame["seq"].as_u64() {
                    before.push(seq);
                }
            }
            tokio_tungstenite::tungstenite::Message::Close(Some(close)) => {
                assert_eq!(u16::from(close.code), 4009, "{close:?}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        before,
        (1..=before.len() as u64).collect::<Vec<_>>(),
        "a gap before the reset"
    );
    let last = *before.last().unwrap();
    let mut again = Client::resuming(nodes[1].addr(), "carol", Some((&old_epoch, last))).await;
    assert_eq!(
        again.established["resume"]["status"], "failed",
        "{}",
        again.established
    );
    assert_eq!(again.established["resume"]["reason"], "epoch_changed");
    assert_ne!(epoch_of(&again), old_epoch);
    let after = frames_until_terminals(&mut again, 1).await;
    let new_seqs = seqs(&after);
    let first = new_seqs[0];
    assert_eq!(
        new_seqs,
        (first..first + new_seqs.len() as u64).collect::<Vec<_>>(),
        "a gap in the new epoch"
    );
    assert_eq!(
        first,
        again.established["last_seq"].as_u64().unwrap() + 1,
        "live events continue right after the last_seq the connection was told"
    );
    // The nodes kept serving: a new run on the other node streams normally.
    let mut fresh = Client::user(nodes[0].addr(), "dave").await;
    fresh.start("r2", "synthetic", json!({})).await;
    let frames = frames_until_terminals(&mut fresh, 1).await;
    assert_eq!(seqs(&frames), (1..=frames.len() as u64).collect::<Vec<_>>());
    for node in nodes {
        node.shutdown().await;
    }
}

// Each test above, on one Redis, on a Redis Cluster, and on one Redis in the sequencer mode.
in_every_mode!(tabs_on_different_nodes_read_one_stream);
in_every_mode!(many_users_alternating_nodes_get_only_their_own_events);
in_every_mode!(resume_on_another_node_loses_nothing);
in_every_mode!(cut_live_connections_lose_nothing);
