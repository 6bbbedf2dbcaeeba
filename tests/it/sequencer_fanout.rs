//! In the sequencer mode a user's holder sends each frame only to the nodes following the
//! user (the meta's `fl`, read in the transaction that appends it), on their events channels,
//! as the publish script does: a node is sent nothing of the users it does not follow, and no
//! frame goes to a channel every node reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::redis_support::{RedisServer, nodes_on};
use crate::server_support::{Client, SEQUENCER};

/// Users of each node's own: each connects to its node only, and its runs start there.
const USERS: [[&str; 3]; 2] = [
    ["fan-a1", "fan-a2", "fan-a3"],
    ["fan-b1", "fan-b2", "fan-b3"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_go_only_to_the_nodes_following_their_users() {
    let redis = RedisServer::start();
    let nodes = nodes_on(&format!("{}{SEQUENCER}", redis.url()), 2, |_| {}).await;
    // Every message on every channel of the Redis, as it comes.
    let client = redis::Client::open(redis.url()).expect("a Redis URL");
    let mut pubsub = client.get_async_pubsub().await.expect("Redis is up");
    pubsub.psubscribe("*").await.expect("PSUBSCRIBE");
    let mut messages = pubsub.into_on_message();

    // The seqs each user's connection was sent.
    let mut delivered: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (node, users) in nodes.iter().zip(USERS) {
        for user in users {
            let mut client = Client::user(node.addr(), user).await;
            let work = json!({"thinking": 2, "tools": 1, "chunks": 3});
            let accepted = client.start("r1", "synthetic", work).await;
            assert_eq!(accepted["type"], "run_accepted", "{accepted}");
            let frames = client.events_until_terminals(1).await;
            delivered.insert(user, frames.iter().map(|f| f.seq).collect());
        }
    }

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

    // One events channel per node, each with exactly its own users' frames, every one of them.
    assert_eq!(heard.len(), 2, "channels with frames: {heard:?}");
    for users in USERS {
        let channel = heard
            .iter()
            .find(|(_, seen)| seen.contains_key(users[0]))
            .map(|(channel, seen)| (channel, seen.keys().cloned().collect::<BTreeSet<_>>()))
            .unwrap_or_else(|| panic!("no channel had {}'s frames: {heard:?}", users[0]));
        let own: BTreeSet<String> = users.iter().map(|u| (*u).to_owned()).collect();
        assert_eq!(channel.1, own, "{} carried other nodes' users", channel.0);
        for user in users {
            assert_eq!(
                heard[channel.0][user], delivered[user],
                "{user}'s frames on {}",
                channel.0
            );
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}
