//! In the sequencer mode a user's holder sends each frame only to the other nodes following
//! the user (the meta's `fl`, read in the transaction that appends it), on their events
//! channels, as the publish script does; its own listeners it hands the frames itself. So a
//! node is sent nothing of the users it does not follow, nor of those whose runs it holds,
//! and no frame goes to a channel every node reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::redis_support::{RedisServer, nodes_on};
use crate::server_support::{Client, SEQUENCER};

/// A run of `user`'s, started on the first of `clients` (all the user's) and read whole on
/// each: the seqs each was sent, which must be the same, from 1 on.
async fn run_on(clients: &mut [Client], user: &str) -> BTreeSet<u64> {
    let work = json!({"thinking": 2, "tools": 1, "chunks": 3});
    let accepted = clients[0].start("r1", "synthetic", work).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let mut seen = Vec::new();
    for client in clients {
        let frames = client.events_until_terminals(1).await;
        seen.push(frames.iter().map(|f| f.seq).collect::<Vec<u64>>());
    }
    let expected: Vec<u64> = (1..=seen[0].len() as u64).collect();
    assert!(expected.len() >= 5, "{user}: a whole run: {seen:?}");
    for seqs in &seen {
        assert_eq!(*seqs, expected, "{user}'s connections");
    }
    expected.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_go_only_to_the_other_nodes_following_their_users() {
    let redis = RedisServer::start();
    let nodes = nodes_on(&format!("{}{SEQUENCER}", redis.url()), 2, |_| {}).await;
    // Every message on every channel of the Redis, as it comes.
    let client = redis::Client::open(redis.url()).expect("a Redis URL");
    let mut pubsub = client.get_async_pubsub().await.expect("Redis is up");
    pubsub.psubscribe("*").await.expect("PSUBSCRIBE");
    let mut messages = pubsub.into_on_message();

    // Users on one node each, whose runs start there; and one on both, whose runs start on
    // the first.
    let (first, second) = (nodes[0].addr(), nodes[1].addr());
    for (user, node) in [("fan-a1", first), ("fan-a2", first), ("fan-b1", second)] {
        run_on(&mut [Client::user(node, user).await], user).await;
    }
    let mut both = [
        Client::user(first, "fan-c").await,
        Client::user(second, "fan-c").await,
    ];
    let shared = run_on(&mut both, "fan-c").await;

    // Per channel, the seqs of each user whose records it carried.
    let mut heard: BTreeMap<String, BTreeMap<String, BTreeSet<u64>>> = BTreeMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(1500), messages.next()).await
    {
        let channel = message.get_channel_name().to_owned();
        let payload: String = message.get_payload().expect("a text message");
        assert_ne!(
            channel, "agentws:frames",
            "a frame went to the channel every node reads: {payload}"
        );
        if !channel.ends_with(":events") {
            continue;
        }
        // `<user>\n<epoch>\n<lease>:<seq>\n<rest>` records, joined by `\n`.
        let lines: Vec<&str> = payload.split('\n').collect();
        assert_eq!(lines.len() % 4, 0, "{payload}");
        for record in lines.chunks(4) {
            let (_, seq) = record[2].split_once(':').expect("`<lease>:<seq>`");
            heard
                .entry(channel.clone())
                .or_default()
                .entry(record[0].to_owned())
                .or_default()
                .insert(seq.parse().expect("a seq"));
        }
    }

    // Only the second node was sent frames, all of fan-c's and nobody else's: the users on
    // one node got theirs from their holder, as did fan-c's tab on the first node.
    let expected = BTreeMap::from([("fan-c".to_owned(), shared)]);
    let sent: Vec<_> = heard.values().collect();
    assert_eq!(sent, [&expected], "frames per events channel: {heard:?}");
    for node in nodes {
        node.shutdown().await;
    }
}
