//! A node's publisher sends a batch again when its call fails for a passing reason (its
//! connection dropped, Redis busy with a long script): without a lost, repeated or
//! reordered event. And it counts its batches, their round trips and its events' waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ws_bridge::Broker;

use crate::broker_pair::BrokerPair;
use crate::redis_support::RedisServer;

/// Holds Redis 30 ms (a script busy on its own).
const HOLD_REDIS: &str = "local t = redis.call('TIME') \
    local start = t[1] * 1000000 + t[2] \
    repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 30000 \
    return 1";

/// How many times Redis answered `BUSY`.
const BUSY_ANSWERS: &str = "return tonumber(string.match(redis.call('INFO', 'errorstats'), \
    'errorstat_BUSY:count=(%d+)')) or 0";

/// 20 users' events (150 each at least), emitted 20 at a time on one node while Redis is held
/// 30 ms by a script every 20 ms (answering `BUSY` past 5 ms; ten times, and more until some
/// call was answered `BUSY`), then drops every plain connection every 20 ms (the publisher's with its call in flight; not the other node's subscription): the
/// other node gets every user's events, each once, in the order they were emitted, all of
/// them live, and nothing is counted lost. (A batch answered `BUSY` used to be counted lost:
/// its events were missing from the stream, their seqs given to the next ones.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_failed_by_a_dropped_connection_or_a_busy_redis_are_sent_again_in_order() {
    failed_publishes_are_sent_again_in_order(false).await;
}

/// The same in the sequencer mode: an append answered `BUSY` (or whose pipeline's connection
/// dropped) is written again after the node takes its user's lease anew, and no frame goes
/// out for an append that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_the_sequencer_mode_failed_appends_are_written_again_in_order() {
    failed_publishes_are_sent_again_in_order(true).await;
}

async fn failed_publishes_are_sent_again_in_order(sequencer: bool) {
    const USERS: usize = 20;
    const EVENTS: u64 = 150;
    let redis = RedisServer::start();
    let pair = BrokerPair::start_in(&redis, "order", USERS, sequencer).await;
    let port = redis.port();
    // Past 5 ms, a script that holds Redis has it answer other scripts BUSY until it ends.
    assert_eq!(
        redis.command(&["CONFIG", "SET", "busy-reply-threshold", "5"]),
        "+OK"
    );
    let chaos = tokio::spawn(async move {
        let query = move |args: &'static [&'static str]| {
            tokio::task::spawn_blocking(move || crate::redis_support::query(port, args))
        };
        // At least ten holds, and more until one of them answered a call BUSY (on a loaded
        // machine the publisher may have had nothing in flight during the first ones).
        let mut holds = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            query(&["EVAL", HOLD_REDIS, "0"]).await.unwrap();
            holds += 1;
            let busy = query(&["EVAL", BUSY_ANSWERS, "0"]).await.unwrap();
            if holds >= 10 && busy != ":0" || holds >= 60 {
                break;
            }
        }
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            query(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
                .await
                .unwrap();
        }
    });
    // Events flow for as long as the chaos goes on, and at least `EVENTS` steps.
    let mut steps = 0;
    while steps < EVENTS || !chaos.is_finished() {
        steps += 1;
        for u in 0..USERS {
            pair.emit(u, format!("{u}:{steps}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    chaos.await.unwrap();
    for u in 0..USERS {
        for step in 1..=steps {
            assert_eq!(
                pair.next_chunk(u).await,
                (step, format!("{u}:{step}")),
                "order-{u:02}'s events once each, in the order emitted"
            );
        }
    }
    let busy = redis.command(&["EVAL", BUSY_ANSWERS, "0"]);
    assert_ne!(busy, ":0", "Redis answered some calls BUSY");
    let stats = pair.publisher.stats();
    assert_eq!(stats.events_lost.load(Ordering::Relaxed), 0, "nothing lost");
    assert!(
        stats.publish_retries.load(Ordering::Relaxed) > 0,
        "the killed connections and the busy Redis failed calls that were sent again"
    );
}

/// The publisher's timing counts: while Redis holds every write (`CLIENT PAUSE ... WRITE`, 500
/// ms), a batch sent at the start of the pause counts the pause in its round trip, and the
/// events queued behind it 100 ms later count their wait until it was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_by_redis_counts_its_round_trip_and_the_events_behind_it_their_wait() {
    let redis = RedisServer::start();
    let pair = BrokerPair::start(&redis, "timing", 1).await;
    // The script loaded and the connection in use before the counts are read.
    pair.emit(0, "warm".into());
    assert_eq!(pair.next_chunk(0).await, (1, "warm".to_owned()));
    // The follower may get a batch's frames before the publisher has its answer (and counts
    // it): the counts are read once the publisher is done.
    pair.publisher.stored().await.unwrap();
    let stats = pair.publisher.stats();
    let counts = || {
        let read = |count: &AtomicU64| count.load(Ordering::Relaxed);
        (
            read(&stats.publish_batches),
            read(&stats.publish_batch_micros),
            read(&stats.publish_queue_micros),
        )
    };
    let before = counts();
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "500", "WRITE"]), "+OK");
    pair.emit(0, "first".into());
    tokio::time::sleep(Duration::from_millis(100)).await;
    pair.emit(0, "second".into());
    pair.emit(0, "third".into());
    for (seq, delta) in [(2, "first"), (3, "second"), (4, "third")] {
        assert_eq!(pair.next_chunk(0).await, (seq, delta.to_owned()));
    }
    pair.publisher.stored().await.unwrap();
    let after = counts();
    let batches = after.0 - before.0;
    assert_eq!(
        batches, 2,
        "the held batch, then the two events queued behind it in one"
    );
    let round_trips = after.1 - before.1;
    assert!(
        round_trips >= 200_000,
        "the held batch's round trip spans most of the 500 ms pause: {round_trips} µs in all"
    );
    let waited = after.2 - before.2;
    assert!(
        waited >= 2 * 200_000,
        "the two events queued 100 ms into the pause waited for its end: {waited} µs in all"
    );
}

/// The node's calls from outside the broker's own thread (the server's runtime asks for a
/// position, claims a run's slot) do not move its Redis connection there: when one of them
/// finds the connection dropped and reconnects it, the new connection runs on the broker's
/// thread still. Here the call comes from a runtime of its own, dropped once it is answered,
/// and with it whatever was left on it: the publisher's next batch then goes through without
/// a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_from_another_runtime_leaves_the_connection_on_the_brokers_thread() {
    let redis = RedisServer::start();
    let pair = BrokerPair::start(&redis, "home", 1).await;
    pair.emit(0, "before".into());
    assert_eq!(pair.next_chunk(0).await, (1, "before".to_owned()));
    pair.publisher.stored().await.unwrap();
    let retries = || {
        pair.publisher
            .stats()
            .publish_retries
            .load(Ordering::Relaxed)
    };
    let before = retries();
    // Every plain connection (both nodes' commands, not their subscriptions).
    assert!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .starts_with(':')
    );
    let publisher = Arc::clone(&pair.publisher);
    let user = crate::support::user_id("home-00");
    let asked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..200 {
                if publisher.position(&user).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        })
        // The runtime is dropped here, with any task still on it.
    });
    assert!(
        asked.join().unwrap(),
        "the position was answered after the reconnect"
    );
    pair.emit(0, "after".into());
    assert_eq!(pair.next_chunk(0).await, (2, "after".to_owned()));
    assert_eq!(
        retries(),
        before,
        "the publisher's batch went through at once: its connection did not die with the other runtime"
    );
}

/// In the sequencer mode, a lease lookup that Redis refuses (here the user's stream meta is
/// made a string, so every script on it fails with `WRONGTYPE`: a fault of Redis's data, not a
/// passing one) loses that user's events parked behind it, counted as lost, and nothing else:
/// another user's events emitted between them arrive whole and in order, and `stored` returns
/// (the lost events are no longer held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lookup_redis_refuses_loses_only_its_users_events() {
    const STEPS: u64 = 5;
    let redis = RedisServer::start();
    let pair = BrokerPair::start_in(&redis, "refused", 2, true).await;
    break_meta(&redis, "refused-00");
    for step in 1..=STEPS {
        pair.emit(0, format!("refused {step}"));
        pair.emit(1, format!("kept {step}"));
    }
    for step in 1..=STEPS {
        assert_eq!(pair.next_chunk(1).await, (step, format!("kept {step}")));
    }
    stored_with_lost(
        &pair,
        STEPS,
        "each of the refused user's events is counted lost, once",
    )
    .await;
}

/// Makes `user`'s stream meta (which the following node made) a string instead of a hash.
fn break_meta(redis: &RedisServer, user: &str) {
    let meta = format!("agentws:{{{user}}}:meta");
    assert_eq!(redis.command(&["DEL", &meta]), ":1", "the follower made it");
    assert_eq!(redis.command(&["SET", &meta, "not a hash"]), "+OK");
}

/// Waits for `stored` to return (lost events are not held), then checks `lost` were counted.
async fn stored_with_lost(pair: &BrokerPair, lost: u64, why: &str) {
    tokio::time::timeout(Duration::from_secs(10), pair.publisher.stored())
        .await
        .expect("stored returns: lost events are not held")
        .unwrap();
    let stats = pair.publisher.stats();
    assert_eq!(stats.events_lost.load(Ordering::Relaxed), lost, "{why}");
}

/// With the publish script, a user whose keys Redis refuses (their meta, or their log, holds
/// another type) loses their own events, counted as lost, and nothing else: the other users
/// of the same batches get every event, in order. (The batch used to be lost whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_keys_redis_refuses_loses_only_their_events() {
    const STEPS: u64 = 20;
    let redis = RedisServer::start();
    let pair = BrokerPair::start(&redis, "broken", 3).await;
    break_meta(&redis, "broken-00");
    let log = "agentws:{broken-01}:log";
    assert_eq!(redis.command(&["SET", log, "not a stream"]), "+OK");
    for step in 1..=STEPS {
        for u in 0..3 {
            pair.emit(u, format!("{u}:{step}"));
        }
    }
    for step in 1..=STEPS {
        assert_eq!(pair.next_chunk(2).await, (step, format!("2:{step}")));
    }
    stored_with_lost(
        &pair,
        2 * STEPS,
        "each of the two broken users' events is counted lost, once",
    )
    .await;
    let stats = pair.publisher.stats();
    assert_eq!(
        stats.events_published.load(Ordering::Relaxed),
        STEPS,
        "only the healthy user's events count as published"
    );
}

/// While Redis refuses writes for a while (at its `maxmemory` with nothing it may evict:
/// `OOM`; fewer replicas than `min-replicas-to-write`: `NOREPLICAS`), every publish is
/// refused whole; the events wait, in order, and go out once Redis takes writes again, none
/// lost (they used to be counted lost at once, their runs going on without them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_for_memory_are_sent_again_once_redis_has_room() {
    refused_writes_wait(false, Refusal::Memory).await;
}

/// The same in the sequencer mode: its appends refused for memory are written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sequencer_mode_appends_refused_for_memory_are_written_again() {
    refused_writes_wait(true, Refusal::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_for_want_of_replicas_are_sent_again_once_they_are_back() {
    refused_writes_wait(false, Refusal::Replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sequencer_mode_appends_refused_for_want_of_replicas_are_written_again() {
    refused_writes_wait(true, Refusal::Replicas).await;
}

/// Why Redis refuses writes for a while, and the settings that make it and end it.
#[derive(Clone, Copy)]
enum Refusal {
    Memory,
    Replicas,
}

impl Refusal {
    fn set(self, redis: &RedisServer, on: bool) {
        let (name, value) = match (self, on) {
            // Any memory in use is past a limit of one byte.
            (Refusal::Memory, true) => ("maxmemory", "1"),
            (Refusal::Memory, false) => ("maxmemory", "0"),
            // This Redis has no replica.
            (Refusal::Replicas, true) => ("min-replicas-to-write", "1"),
            (Refusal::Replicas, false) => ("min-replicas-to-write", "0"),
        };
        assert_eq!(redis.command(&["CONFIG", "SET", name, value]), "+OK");
    }
}

async fn refused_writes_wait(sequencer: bool, refusal: Refusal) {
    const USERS: usize = 3;
    const STEPS: u64 = 20;
    let redis = RedisServer::start();
    let pair = BrokerPair::start_in(&redis, "refusal", USERS, sequencer).await;
    pair.emit(0, "before".into());
    assert_eq!(pair.next_chunk(0).await, (1, "before".into()));
    assert_eq!(
        redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "+OK"
    );
    refusal.set(&redis, true);
    for step in 1..=STEPS {
        for u in 0..USERS {
            pair.emit(u, format!("{u}:{step}"));
        }
    }
    let stats = pair.publisher.stats();
    crate::support::wait_until("a refused publish was retried", || {
        stats.publish_retries.load(Ordering::Relaxed) > 0
    })
    .await;
    refusal.set(&redis, false);
    for u in 0..USERS {
        let first = if u == 0 { 2 } else { 1 };
        for step in 1..=STEPS {
            assert_eq!(
                pair.next_chunk(u).await,
                (first + step - 1, format!("{u}:{step}")),
                "refusal-{u:02}'s events once each, in order, after the refusals"
            );
        }
    }
    assert_eq!(stats.events_lost.load(Ordering::Relaxed), 0, "nothing lost");
}
