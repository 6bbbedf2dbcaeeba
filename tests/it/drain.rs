//! A graceful drain under load, with two nodes sharing Redis: node A gets SIGTERM's shutdown
//! while hundreds of users have runs going on it. Every client either reads every event of
//! its runs before A's 1001 close, or resumes on node B and reads the rest there: no event
//! is lost, none repeats, and every run ends (completed, or cancelled when A's grace ran out).

use std::net::SocketAddr;
use std::time::Duration;

use agent_server::config::BrokerChoice;
use core_context::SequencedEvent;
use core_context::lifecycle::check_lifecycle;
use serde_json::json;

use crate::redis_support::RedisServer;
use crate::server_support::{Client, start_server};

const USERS: usize = 200;
const RUNS: usize = 2;

/// What one user saw: its events in order, whether it moved to node B, and how many of the
/// events it read there.
struct Seen {
    events: Vec<SequencedEvent>,
    moved: bool,
    on_b: usize,
}

/// Starts the user's runs on `a`, then reads until they all ended, moving to `b` (resuming)
/// when `a` closes with 1001.
async fn user_session(
    a: SocketAddr,
    b: SocketAddr,
    user: String,
    started: tokio::sync::mpsc::Sender<()>,
) -> Seen {
    let mut client = Client::resuming(a, &user, None).await;
    let epoch = client.established["epoch"].as_str().unwrap().to_owned();
    // A fifth of the users' runs are short (they end within A's grace if they started early
    // enough); the others' never end by themselves, so A cancels them when its grace is over.
    let hangs = !user.ends_with(['0', '5']);
    let shape = json!({"thinking": 2, "tools": 2, "chunks": 3, "sleep_ms": 15, "hang": hangs});
    for run in 0..RUNS {
        let accepted = client
            .start(&format!("r{run}"), "synthetic", shape.clone())
            .await;
        assert_eq!(accepted["type"], "run_accepted", "{user}: {accepted}");
    }
    started.send(()).await.unwrap();
    let mut seen = Seen {
        events: Vec::new(),
        moved: false,
        on_b: 0,
    };
    let mut ended = 0;
    while ended < RUNS {
        match client.next_or_close().await {
            Ok(frame) if frame.get("seq").is_some() => {
                let event: SequencedEvent = serde_json::from_value(frame).unwrap();
                ended += usize::from(event.event.kind.is_terminal());
                seen.on_b += usize::from(seen.moved);
                seen.events.push(event);
            }
            Ok(_) => {}
            Err(1001) if !seen.moved => {
                let after = seen.events.last().map_or(0, |e| e.seq);
                client = Client::resuming(b, &user, Some((&epoch, after))).await;
                assert_eq!(client.established["resume"]["status"], "ok", "{user}");
                seen.moved = true;
            }
            Err(code) => panic!("{user}: closed with {code} before its runs ended"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_loses_no_event_of_its_users() {
    let redis = RedisServer::start();
    let node = |grace: Duration| {
        let url = redis.url();
        start_server(move |config| {
            config.broker = BrokerChoice::Redis(url);
            config.start_rate_per_minute = 1_000;
            config.shutdown_grace = grace;
        })
    };
    // A's grace ends while runs still go, so it cancels them.
    let a = node(Duration::from_millis(400)).await;
    let b = node(Duration::from_secs(5)).await;
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let (started, mut all_started) = tokio::sync::mpsc::channel(USERS);
    let sessions: Vec<_> = (0..USERS)
        .map(|i| {
            tokio::spawn(user_session(
                a_addr,
                b_addr,
                format!("drain-{i}"),
                started.clone(),
            ))
        })
        .collect();
    for _ in 0..USERS {
        all_started.recv().await.unwrap();
    }
    let drained = tokio::spawn(a.shutdown());
    let (mut events, mut moved, mut on_b, mut completed, mut cancelled) = (0, 0, 0, 0, 0);
    for session in sessions {
        let seen = tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("a user's runs ended within 60 s")
            .unwrap();
        let seqs: Vec<u64> = seen.events.iter().map(|e| e.seq).collect();
        let first = seqs[0];
        assert_eq!(first, 1, "the user's first event is missing");
        assert_eq!(
            seqs,
            (first..first + seqs.len() as u64).collect::<Vec<_>>(),
            "a gap or a repeat"
        );
        let runs: Vec<_> = seen.events.iter().map(|e| e.event.clone()).collect();
        let summary = check_lifecycle(&runs).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(summary.runs, RUNS);
        completed += summary.completed;
        cancelled += summary.cancelled;
        events += seen.events.len();
        moved += usize::from(seen.moved);
        on_b += seen.on_b;
    }
    drained.await.unwrap();
    eprintln!(
        "drain under load: {USERS} users x {RUNS} runs, {events} events read, {moved} users \
         resumed on node B and read {on_b} events there, runs completed {completed}, cancelled \
         at the end of the grace {cancelled}, events lost 0"
    );
    assert_eq!(completed + cancelled, USERS * RUNS);
    assert!(
        cancelled >= USERS * 4 / 5 * RUNS,
        "the runs that never end by themselves were cancelled: {cancelled}"
    );
    b.shutdown().await;
}
