//! How a node follows a user through Redis: its entry in the user's stream meta
//! (`f:<node id>`, listed in the meta's `fl`) routes each published batch to the node's
//! events channel. These tests take
//! that entry away the ways Redis can (a field gone, the whole stream evicted) while the
//! user's connections stay open, and check that the connections still get every event, or
//! an explicit failed resume: never a silent stop.

use std::time::Duration;

use agent_server::server::RunningServer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::redis_support::RedisServer;
use crate::server_support::Client;

/// Two nodes on `redis`, with a replay age of `replay_age` (nodes renew their entries every
/// third of it).
async fn two_nodes(redis: &RedisServer, replay_age: Duration) -> Vec<RunningServer> {
    nodes_in_mode(redis, replay_age, false).await
}

/// [`two_nodes`], in the sequencer mode when `sequencer`.
async fn nodes_in_mode(
    redis: &RedisServer,
    replay_age: Duration,
    sequencer: bool,
) -> Vec<RunningServer> {
    let mut url = redis.url();
    if sequencer {
        url.push_str(crate::server_support::SEQUENCER);
    }
    crate::redis_support::nodes_on(&url, 2, |config| {
        config.bridge.replay_max_age = replay_age;
    })
    .await
}

/// The `f:<node>` fields of `user`'s stream meta: the nodes following the user.
fn followers(redis: &RedisServer, user: &str) -> Vec<String> {
    let meta = format!("agentws:{{{user}}}:meta");
    let fields = crate::redis_support::query_all(redis, &["HKEYS", &meta]);
    fields.into_iter().filter(|f| f.starts_with("f:")).collect()
}

/// Takes the nodes' entries (`f:<node>` fields) out of `users`' stream metas, and with them
/// their listing (`fl`, which the publish script reads), as if they were lost, in one step.
fn lose_entries(redis: &RedisServer, users: &[String]) -> usize {
    let metas: Vec<String> = users
        .iter()
        .map(|user| format!("agentws:{{{user}}}:meta"))
        .collect();
    let count = users.len().to_string();
    let mut command = vec!["EVAL", LOSE_ENTRIES, &count];
    command.extend(metas.iter().map(String::as_str));
    let reply = redis.command(&command);
    reply
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {reply}"))
}

/// Takes every `f:<node>` field and the `fl` listing out of each meta in `KEYS` at once (so
/// no renewal sets some back while others are taken); returns how many entries it took.
const LOSE_ENTRIES: &str = "local taken = 0 \
    for _, meta in ipairs(KEYS) do \
      for _, field in ipairs(redis.call('HKEYS', meta)) do \
        if string.sub(field, 1, 2) == 'f:' then taken = taken + redis.call('HDEL', meta, field) end \
      end \
      redis.call('HDEL', meta, 'fl') \
    end \
    return taken";

/// The seq of each event frame until the run's terminal event (replies are skipped).
async fn seqs_until_terminal(client: &mut Client) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let frame = client.next().await;
        let Some(seq) = frame["seq"].as_u64() else {
            continue;
        };
        seqs.push(seq);
        let kind = frame["type"].as_str().unwrap_or_default();
        if matches!(kind, "agent_completed" | "agent_error" | "agent_cancelled") {
            return seqs;
        }
    }
}

/// Both nodes' entries vanish (as if a field were lost) while the user's tabs are idle, and a
/// whole run is then published to nobody: each node's next renewal finds its entry gone, sets
/// it again and fetches what its tabs missed from the log, so both tabs get the whole run in
/// order, on connections that stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_entry_was_lost_catches_its_users_up_at_its_next_renewal() {
    entry_lost(false).await;
}

/// The same in the sequencer mode, whose holder sends frames to the nodes the meta lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_the_sequencer_mode_a_node_whose_entry_was_lost_catches_its_users_up() {
    entry_lost(true).await;
}

async fn entry_lost(sequencer: bool) {
    let redis = RedisServer::start();
    let nodes = nodes_in_mode(&redis, Duration::from_secs(3), sequencer).await;
    let mut runner = Client::user(nodes[0].addr(), "erin").await;
    let mut watcher = Client::user(nodes[1].addr(), "erin").await;
    let entries = followers(&redis, "erin");
    assert_eq!(entries.len(), 2, "each node follows erin: {entries:?}");
    assert_eq!(lose_entries(&redis, &["erin".to_owned()]), 2);
    let last_before = runner.established["last_seq"].as_u64().unwrap_or(0);
    let accepted = runner.start("r1", "synthetic", json!({})).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let watched = seqs_until_terminal(&mut watcher).await;
    let expected: Vec<u64> = (last_before + 1..=last_before + watched.len() as u64).collect();
    assert!(watched.len() >= 3, "a whole run: {watched:?}");
    assert_eq!(watched, expected, "the watcher, from the first event on");
    assert_eq!(
        seqs_until_terminal(&mut runner).await,
        expected,
        "the runner"
    );
    assert_eq!(
        followers(&redis, "erin").len(),
        2,
        "both nodes follow erin again"
    );
}

/// The user's whole stream is evicted while their tabs are open (the nodes' entries with it),
/// and the node that runs the next run opens a new stream: the stream's start is announced,
/// so the other node learns its tab's stream was lost and closes it with 4009, and the tab's
/// resume says `epoch_changed`, with the new stream's events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_lost_under_its_followers_is_announced_and_ends_in_a_failed_resume() {
    let redis = RedisServer::start();
    // The default replay age: renewals are a minute apart, so only the announcement can tell.
    let nodes = two_nodes(&redis, Duration::from_secs(600)).await;
    let mut runner = Client::user(nodes[0].addr(), "frank").await;
    let mut watcher = Client::user(nodes[1].addr(), "frank").await;
    let old_epoch = watcher.established["epoch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        redis.command(&["DEL", "agentws:{frank}:meta", "agentws:{frank}:log"]),
        ":1",
        "frank's stream (only its meta exists before any event)"
    );
    runner
        .send(json!({"type": "start_agent", "request_id": "r1",
                     "payload": {"agent": "synthetic", "message": "go", "input": {}}}))
        .await;
    // The runner's stream was lost too: its node learns it from the same announcement and
    // may close it with 4009 before the run's acceptance is read (under load it did).
    loop {
        match runner.next_or_close().await {
            Ok(frame) if frame.get("seq").is_some() => {}
            Ok(frame) => {
                assert_eq!(frame["type"], "run_accepted", "{frame}");
                break;
            }
            Err(code) => {
                assert_eq!(code, 4009, "the runner's stream is reset too");
                break;
            }
        }
    }
    let close = match watcher.next_message().await {
        Message::Close(close) => close,
        Message::Text(text) => {
            let frame: Value = serde_json::from_str(&text).unwrap_or_default();
            panic!("the watcher got a frame of a stream it never joined: {frame}");
        }
        other => panic!("unexpected {other:?}"),
    };
    let code = close.map(|c| u16::from(c.code));
    assert_eq!(code, Some(4009), "the watcher is told its stream was reset");
    let mut again = Client::resuming(nodes[1].addr(), "frank", Some((&old_epoch, 0))).await;
    assert_eq!(again.established["resume"]["status"], "failed");
    assert_eq!(again.established["resume"]["reason"], "epoch_changed");
    assert_ne!(
        again.established["epoch"].as_str(),
        Some(old_epoch.as_str())
    );
    let fresh = again.start("r2", "synthetic", json!({})).await;
    assert_eq!(fresh["type"], "run_accepted", "{fresh}");
    let seqs = seqs_until_terminal(&mut again).await;
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "the new stream's events in order"
    );
}

/// A node following more users than one renewal call holds (they are renewed in calls of at
/// most 256, so that no call holds Redis long) still renews, and catches up, every one of
/// them: all 520 users' entries vanish, runs of 12 of them are published to nobody, and the
/// next renewal sets every entry again and brings those 12 their whole runs, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_followed_user_is_renewed_when_there_are_more_than_one_call_holds() {
    const USERS: usize = 520;
    let redis = RedisServer::start();
    let node = crate::redis_support::nodes_on(&redis.url(), 1, |config| {
        config.bridge.replay_max_age = Duration::from_secs(3);
    })
    .await
    .remove(0);
    let mut clients = Vec::with_capacity(USERS);
    for i in 0..USERS {
        clients.push(Client::user(node.addr(), &format!("many-{i:03}")).await);
    }
    let users: Vec<String> = (0..USERS).map(|i| format!("many-{i:03}")).collect();
    assert_eq!(
        lose_entries(&redis, &users),
        USERS,
        "every user's entry, at once"
    );
    let runners: Vec<usize> = (0..12).map(|k| k * 43).collect();
    let mut firsts = Vec::new();
    for &i in &runners {
        let client = &mut clients[i];
        firsts.push(client.established["last_seq"].as_u64().unwrap_or(0));
        let accepted = client.start(&format!("r{i}"), "synthetic", json!({})).await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    }
    for (&i, first) in runners.iter().zip(firsts) {
        let seqs = seqs_until_terminal(&mut clients[i]).await;
        let expected: Vec<u64> = (first + 1..=first + seqs.len() as u64).collect();
        assert!(seqs.len() >= 3, "a whole run for many-{i:03}: {seqs:?}");
        assert_eq!(seqs, expected, "many-{i:03}");
    }
    // A renewal may have been under way as the entries went: some of its calls set theirs
    // back before, the rest after; those are set by the next one, a second later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for user in &users {
        while followers(&redis, user).len() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "{user} is followed again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A batch holding more frames for a set of nodes than one message carries (about 7,000
/// bytes: the publish script keeps each message under Lua's buffer) reaches the following
/// node in several messages: 40 users' events of about 1 KB each, emitted on one node while
/// Redis holds writes back (so they are published in full batches), arrive at the other node
/// whole and in order, all of them live (none fetched from the log to fill a gap), in more
/// messages than batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_longer_than_one_message_arrive_whole_and_in_order() {
    use std::sync::atomic::Ordering;

    const USERS: usize = 40;
    const EVENTS: u64 = 12;
    let redis = RedisServer::start();
    let pair = crate::broker_pair::BrokerPair::start(&redis, "long", USERS).await;
    let (publishes_before, scripts_before) = (calls(&redis, "publish"), calls(&redis, "evalsha"));
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "1000", "WRITE"]), "+OK");
    for step in 1..=EVENTS {
        for u in 0..USERS {
            pair.emit(u, format!("{u}:{step}:{}", "x".repeat(1000)));
        }
    }
    for u in 0..USERS {
        for step in 1..=EVENTS {
            let (seq, delta) = pair.next_chunk(u).await;
            assert_eq!(seq, step, "long-{u:02}'s frames in order");
            assert!(
                delta.starts_with(&format!("{u}:{step}:")) && delta.len() > 1000,
                "long-{u:02}'s event {step} whole"
            );
        }
    }
    let recovered = pair
        .follower
        .stats()
        .frames_recovered
        .load(Ordering::Relaxed);
    assert_eq!(recovered, 0, "every frame came live");
    let publishes = calls(&redis, "publish") - publishes_before;
    let batches = calls(&redis, "evalsha") - scripts_before;
    assert!(
        publishes > 4 * batches,
        "{publishes} messages for about 500 KB of frames in {batches} script calls"
    );
}

/// How many times Redis has run `command` (scripts' calls included).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let count = "local s = redis.call('INFO', 'commandstats') \
        return tonumber(string.match(s, 'cmdstat_' .. ARGV[1] .. ':calls=(%d+)')) or 0";
    let reply = redis.command(&["EVAL", count, "0", command]);
    reply
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {reply}"))
}
