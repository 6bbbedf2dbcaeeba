//! The replay logs of all users together stay within their byte bound
//! (`--replay-max-bytes`): past it the oldest frames across users go first, whoever they
//! belong to; a resume past a dropped frame is refused `too_old`, never answered with a gap;
//! the count of what is held stays exact under many publishers at once, and idle streams take
//! their frames out of it when they go.

use std::sync::Arc;
use std::time::Duration;

use core_context::{EncodedEvent, RunId, UserId};
use ws_bridge::broker::{Broker, ReplayBounds};
use ws_bridge::{FRAME_OVERHEAD, InProcessBroker, ResumeFailure};

use crate::history::{event, thinking};

/// An encoded thinking event of `step`, with `pad` bytes of reasoning.
fn encoded(step: u32, pad: usize) -> EncodedEvent {
    let mut kind = thinking(step);
    if let core_context::EventKind::AgentThinking { reasoning, .. } = &mut kind {
        reasoning.push_str(&"x".repeat(pad));
    }
    EncodedEvent::encode(&event(&RunId::generate(), None, kind)).unwrap()
}

fn user(n: usize) -> UserId {
    UserId::parse(&format!("user{n}")).unwrap()
}

/// Bytes `broker`'s logs hold, counted frame by frame.
fn held(broker: &InProcessBroker, users: usize) -> (u64, u64) {
    (0..users).fold((0, 0), |(frames, bytes), n| {
        let log = broker.replay_log(&user(n));
        let size: usize = log.iter().map(|f| f.text.len() + FRAME_OVERHEAD).sum();
        (frames + log.len() as u64, bytes + size as u64)
    })
}

fn bounds(max_bytes: usize) -> ReplayBounds {
    ReplayBounds {
        max_events: 1_000,
        max_age: Duration::from_secs(600),
        max_bytes,
    }
}

#[tokio::test]
async fn the_oldest_frames_across_users_go_first_and_a_resume_past_them_is_too_old() {
    // One frame is a little over 1 KB with its keeping: room for about 20.
    let one = encoded(0, 1_000).frame(1).len() + FRAME_OVERHEAD;
    let broker = InProcessBroker::new(bounds(20 * one + one / 2));
    // Three users publish in turn, 30 frames each: 90 in all, 20 fit.
    for step in 1..=30 {
        for n in 0..3 {
            broker.publish(&user(n), encoded(step, 1_000)).unwrap();
        }
    }
    let memory = broker.replay_memory().unwrap();
    assert!(memory.bytes as usize <= 20 * one + one / 2, "{memory:?}");
    assert_eq!(
        (memory.frames, memory.bytes),
        held(&broker, 3),
        "{memory:?}"
    );
    assert_eq!(memory.frames + memory.evicted, 90, "{memory:?}");
    // The oldest went first, across users: each keeps only its newest frames, and what
    // remains is the newest 20 of the 90 in publish order (seq 24..=30 of each, give or take
    // the one whose turn it was).
    for n in 0..3 {
        let log = broker.replay_log(&user(n));
        let oldest = log.first().unwrap().seq;
        assert!((23..=25).contains(&oldest), "user{n}: oldest {oldest}");
        assert_eq!(log.last().unwrap().seq, 30);
        // From before the oldest kept: refused, with where the log starts.
        let position = broker.position(&user(n)).await.unwrap();
        let refused = broker
            .replay(&user(n), &position.epoch, 0)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.reason, ResumeFailure::TooOld);
        assert_eq!(refused.oldest_seq, oldest);
        // From the frame before the oldest kept: every frame after it, no gap.
        let replayed = broker
            .replay(&user(n), &position.epoch, oldest - 1)
            .await
            .unwrap()
            .unwrap();
        let seqs: Vec<u64> = replayed.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, (oldest..=30).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn the_count_stays_exact_under_many_publishers_and_leaves_with_idle_streams() {
    const USERS: usize = 64;
    const THREADS: usize = 8;
    const EACH: u32 = 400;
    let one = encoded(0, 200).frame(1).len() + FRAME_OVERHEAD;
    let max = 300 * one;
    let broker = Arc::new(InProcessBroker::new(ReplayBounds {
        // Per-user bounds trim too, at the same time as the byte bound.
        max_events: 50,
        max_age: Duration::from_millis(200),
        max_bytes: max,
    }));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let broker = Arc::clone(&broker);
            std::thread::spawn(move || {
                for step in 1..=EACH {
                    let n = (t * 7 + step as usize) % USERS;
                    broker.publish(&user(n), encoded(step, 200)).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let memory = broker.replay_memory().unwrap();
    assert_eq!(
        (memory.frames, memory.bytes),
        held(&broker, USERS),
        "{memory:?}"
    );
    // Each publisher may be one frame over while it evicts.
    assert!(
        memory.bytes as usize <= max + THREADS * one,
        "{memory:?} over {max}"
    );
    assert!(
        memory.evicted > 0,
        "the byte bound dropped frames: {memory:?}"
    );

    // Past the age bound with no listener, the streams go, and their frames with them.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(broker.evict_idle(), USERS);
    let memory = broker.replay_memory().unwrap();
    assert_eq!((memory.frames, memory.bytes), (0, 0), "{memory:?}");
}

/// On a server: with `--replay-max-bytes` small, one user's flood pushes another user's
/// older frames out; her resume from before them says `too_old` with where her log starts,
/// and `/metrics` shows the logs within the bound and the frames dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_user_pushes_out_anothers_oldest_frames_on_a_server() {
    use serde_json::json;

    use crate::multitask::until_ended;
    use crate::server_support::{Client, start_server};

    const MAX: usize = 256 * 1024;
    let server = start_server(|config| {
        config.bridge.replay_max_bytes = MAX;
        config.start_rate_per_minute = 10_000;
    })
    .await;
    let addr = server.addr();
    let run = |chunks: u32| {
        json!({"type": "start_agent", "payload": {"agent": "synthetic", "message": "go",
               "input": {"thinking": 1, "tools": 1, "chunks": chunks, "sleep_ms": 0}}})
    };

    // Alice's run: she reads its first event and goes away.
    let mut alice = Client::user(addr, "alice").await;
    alice.send(run(3)).await;
    let accepted = alice.reply().await;
    let alices = accepted["run_id"].as_str().unwrap().to_owned();
    let seen = until_ended(&mut alice, &[&alices]).await;
    let epoch = alice.established["epoch"].as_str().unwrap().to_owned();
    let first = seen[0]["seq"].as_u64().unwrap();
    drop(alice);

    // Bob's runs: well over the bound.
    let mut bob = Client::user(addr, "bob").await;
    for _ in 0..10 {
        bob.send(run(200)).await;
        let accepted = bob.reply().await;
        let runs = [accepted["run_id"].as_str().unwrap().to_owned()];
        until_ended(&mut bob, &[&runs[0]]).await;
    }

    let again = Client::resuming(addr, "alice", Some((&epoch, first))).await;
    let resume = &again.established["resume"];
    assert_eq!(resume["status"], "failed", "{resume}");
    assert_eq!(resume["reason"], "too_old", "{resume}");
    assert!(
        resume["oldest_seq"].as_u64().unwrap() > first + 1,
        "{resume}"
    );

    let metrics = crate::support::metrics_text(addr).await;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    let bytes = value("agent_server_replay_log_bytes");
    assert!(bytes as usize <= MAX, "{bytes} held over {MAX}");
    assert!(bytes as usize > MAX / 2, "the logs are full: {bytes}");
    assert!(value("agent_server_replay_log_evicted_frames_total") > 0);
}
