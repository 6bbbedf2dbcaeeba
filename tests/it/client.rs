//! `agent_client` against a real server: resume across hundreds of real socket drops (through
//! a cutting proxy), every failed-resume reason as its notice, connect refusals and refused
//! requests as typed errors, dev tokens, and concurrent requests on one client.

mod proxy;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_client::{Backoff, Client, ClientConfig, ClientError, Notice, StreamItem};
use agent_protocol::{Epoch, ErrorCode, ResumeParams};
use core_context::RunId;
use core_context::lifecycle::check_lifecycle;
use serde_json::json;
use tokio::sync::Semaphore;

use self::proxy::Proxy;
use crate::server_support::{
    SECRET, assert_contiguous, events, next_event, next_item, now_secs, start_server, synthetic,
    terminals, token, token_with, typed, url,
};

/// Quick reconnects, retrying forever: what a test behind a cutting proxy wants.
fn patient() -> ClientConfig {
    ClientConfig {
        backoff: Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(40),
            max_attempts: None,
        },
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

/// Connects through `proxy`, trying again while the proxy cuts the attempts.
async fn connect_through(proxy: &Proxy, token: &str) -> Client {
    let mut last = None;
    for _ in 0..200 {
        match Client::connect_with(&proxy.url(), token, patient()).await {
            Ok(client) => return client,
            Err(error) if error.is_retryable() => last = Some(error),
            Err(error) => panic!("connecting through the proxy: {error}"),
        }
    }
    panic!("no connection through the proxy in 200 attempts: {last:?}")
}

/// Socket drops the resume test makes at least.
const TARGET_CUTS: usize = 500;
/// Users streaming at once.
const CHAOS_USERS: usize = 5;
/// Runs of one user at once.
const CHAOS_SLOTS: usize = 3;

/// 5 users, each starting long runs (74 events, about 0.35 s each) three at a time until the
/// proxy has cut at least 500 connections at random moments (10 to 80 ms after each connect),
/// and reading them through the proxy. Each user receives every `seq` exactly once, in order,
/// from 1; only the runs they started; every run's lifecycle complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_hundreds_of_socket_drops_loses_and_repeats_nothing() {
    let began = Instant::now();
    let server = start_server(|c| {
        c.start_rate_per_minute = 100_000;
        c.bridge.replay_max_events = 100_000;
    })
    .await;
    let proxy = Arc::new(Proxy::start(server.addr()).await);
    proxy.cut_randomly(Duration::from_millis(10), Duration::from_millis(80));
    let users: Vec<_> = (0..CHAOS_USERS)
        .map(|u| {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(chaos_user(format!("chaos{u}"), server.addr(), proxy))
        })
        .collect();
    let (mut runs, mut delivered, mut reconnects) = (0, 0, 0);
    for user in users {
        let (r, d, n) = tokio::time::timeout(Duration::from_secs(120), user)
            .await
            .expect("a user's stream did not finish within 120 s")
            .unwrap();
        (runs, delivered, reconnects) = (runs + r, delivered + d, reconnects + n);
    }
    let cuts = proxy.cuts();
    assert!(cuts >= TARGET_CUTS, "only {cuts} socket drops");
    eprintln!(
        "resume under chaos: {cuts} socket drops, {reconnects} resumed reconnects, {runs} runs, {delivered} events, {:.1} s",
        began.elapsed().as_secs_f64()
    );
    server.shutdown().await;
}

/// One user of the chaos test: starts runs on a direct connection (so that every start has a
/// certain answer) and reads the stream through the proxy. Returns runs, events, reconnects.
async fn chaos_user(user: String, server: SocketAddr, proxy: Arc<Proxy>) -> (usize, usize, usize) {
    const EVENTS_PER_RUN: usize = 1 + 4 + 2 * 4 + 60 + 1;
    let token = token(&user);
    let direct = Client::connect(&url(server), &token).await.unwrap();
    let mut client = connect_through(&proxy, &token).await;
    let slots = Arc::new(Semaphore::new(CHAOS_SLOTS));
    let mut starter = {
        let (requests, slots, proxy) = (direct.handle(), Arc::clone(&slots), Arc::clone(&proxy));
        tokio::spawn(async move {
            let mut runs = BTreeSet::new();
            while proxy.cuts() < TARGET_CUTS {
                slots.acquire().await.unwrap().forget();
                let shape = json!({"thinking": 4, "tools": 4, "chunks": 60, "sleep_ms": 5});
                runs.insert(requests.start(synthetic(shape)).await.unwrap().run_id);
            }
            runs
        })
    };
    let (mut started, mut seen, mut ended, mut reconnects) = (None, Vec::new(), 0, 0);
    while started
        .as_ref()
        .is_none_or(|runs: &BTreeSet<RunId>| ended < runs.len())
    {
        tokio::select! {
            runs = &mut starter, if started.is_none() => started = Some(runs.unwrap()),
            item = tokio::time::timeout(Duration::from_secs(30), client.next_item()) => {
                let item = item.expect("no item within 30 s").expect("the stream ended");
                match item.unwrap_or_else(|e| panic!("{user}: {e}")) {
                    StreamItem::Event(event) => {
                        if event.event.kind.is_terminal() {
                            ended += 1;
                            slots.add_permits(1);
                        }
                        seen.push(event);
                    }
                    StreamItem::Notice(Notice::Reconnected { .. }) => reconnects += 1,
                    StreamItem::Notice(other) => panic!("{user}: {other}"),
                }
            }
        }
    }
    let runs = started.unwrap();
    assert_contiguous(&seen, 0);
    assert_eq!(client.position().after_seq, seen.len() as u64);
    let owned: BTreeSet<RunId> = seen.iter().map(|e| e.event.run_id.clone()).collect();
    assert_eq!(
        owned, runs,
        "{user} saw a run it did not start, or missed one"
    );
    let summary = check_lifecycle(&events(&seen)).unwrap_or_else(|v| panic!("{user}: {v}"));
    assert_eq!(summary.completed, runs.len(), "{user}");
    assert_eq!(seen.len(), runs.len() * EVENTS_PER_RUN, "{user}");
    direct.close().await;
    client.close().await;
    (runs.len(), seen.len(), reconnects)
}

/// A client cut off while a run emits more events than the replay log holds is told, on its
/// automatic reconnect, which events were lost; then the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_too_long_is_told_events_were_lost_and_reads_on() {
    let server = start_server(|c| c.bridge.replay_max_events = 20).await;
    let proxy = Proxy::start(server.addr()).await;
    let mut away = connect_through(&proxy, &token("alice")).await;
    let epoch = away.position().epoch.clone();
    let mut direct = typed(server.addr(), "alice").await;
    proxy.refuse(true);
    proxy.cut_all();
    let lots = json!({"thinking": 0, "tools": 0, "chunks": 50});
    direct.start(synthetic(lots)).await.unwrap();
    assert_eq!(terminals(&mut direct, 1).await.len(), 52);
    proxy.refuse(false);
    match next_item(&mut away).await {
        StreamItem::Notice(
            notice @ Notice::TooOld {
                after_seq: 0,
                oldest_seq: 33,
                last_seq: 52,
            },
        ) => assert!(notice.requires_refetch()),
        other => panic!("expected too_old, got {other:?}"),
    }
    let after_gap = ResumeParams {
        epoch,
        after_seq: 52,
    };
    assert_eq!(away.position(), &after_gap);
    let one = json!({"thinking": 0, "tools": 0, "chunks": 1});
    let run = direct.start(synthetic(one)).await.unwrap();
    let more = terminals(&mut away, 1).await;
    assert_contiguous(&more, 52);
    assert!(more.iter().all(|e| e.event.run_id == run.run_id));
    server.shutdown().await;
}

/// A server restart behind the client's address: the old instance closes with 1001, the
/// client reconnects to the new one on its own, is told the stream's history is gone, and
/// reads the new stream from its first `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_surfaces_as_epoch_changed_and_the_stream_goes_on() {
    let first = start_server(|c| c.shutdown_grace = Duration::from_secs(2)).await;
    let proxy = Proxy::start(first.addr()).await;
    let mut client = connect_through(&proxy, &token("alice")).await;
    let old = client.position().epoch.clone();
    client.start(synthetic(json!({"tools": 1}))).await.unwrap();
    assert_contiguous(&terminals(&mut client, 1).await, 0);

    let second = start_server(|_| {}).await;
    proxy.retarget(second.addr());
    first.shutdown().await;
    match next_item(&mut client).await {
        StreamItem::Notice(Notice::EpochChanged {
            previous,
            epoch,
            oldest_seq: 1,
            last_seq: 0,
        }) => {
            assert_eq!(previous, old);
            assert_ne!(epoch, old);
        }
        other => panic!("expected epoch_changed, got {other:?}"),
    }
    client.start(synthetic(json!({"tools": 1}))).await.unwrap();
    let fresh = terminals(&mut client, 1).await;
    assert_contiguous(&fresh, 0);
    assert_eq!(check_lifecycle(&events(&fresh)).unwrap().completed, 1);
    second.shutdown().await;
}

/// A position saved from an earlier client resumes where it was; one whose epoch the server
/// does not know, or whose `seq` is beyond the stream, says so and starts at the live edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_position_resumes_or_says_why_it_cannot() {
    let server = start_server(|_| {}).await;
    let (addr, alice) = (server.addr(), token("alice"));
    let mut first = typed(addr, "alice").await;
    first.start(synthetic(json!({"tools": 2}))).await.unwrap();
    let all = terminals(&mut first, 1).await;
    let saved = first.position().clone();
    assert_eq!(saved.after_seq, all.len() as u64);
    first.close().await;
    let from = |epoch: &Epoch, after_seq| ClientConfig {
        resume_from: Some(ResumeParams {
            epoch: epoch.clone(),
            after_seq,
        }),
        ..ClientConfig::default()
    };

    let mut again = Client::connect_with(&url(addr), &alice, from(&saved.epoch, 3))
        .await
        .unwrap();
    for expected in &all[3..] {
        assert_eq!(&next_event(&mut again).await, expected);
    }
    assert_eq!(again.position(), &saved);

    let last_seq = saved.after_seq;
    let unknown = Epoch::new("ep_unknown");
    let mut stale = Client::connect_with(&url(addr), &alice, from(&unknown, 5))
        .await
        .unwrap();
    let expected = Notice::EpochChanged {
        previous: unknown,
        epoch: saved.epoch.clone(),
        oldest_seq: 1,
        last_seq,
    };
    assert_eq!(next_item(&mut stale).await, StreamItem::Notice(expected));
    assert_eq!(stale.position(), &saved);

    let beyond = last_seq + 100;
    let mut ahead = Client::connect_with(&url(addr), &alice, from(&saved.epoch, beyond))
        .await
        .unwrap();
    let expected = Notice::SeqAhead {
        after_seq: beyond,
        oldest_seq: 1,
        last_seq,
    };
    assert_eq!(next_item(&mut ahead).await, StreamItem::Notice(expected));
    assert_eq!(ahead.position(), &saved);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refusals_carry_the_status_and_the_servers_message() {
    let server = start_server(|c| c.bridge.max_connections_per_user = 1).await;
    let server_url = url(server.addr());
    let check =
        |result: Result<Client, ClientError>, status: u16, code: ErrorCode, fragment: &str| {
            match result {
                Err(ClientError::Refused { status: s, error }) => {
                    assert_eq!((s, &error.error), (status, &code), "{}", error.message);
                    assert!(
                        error.message.contains(fragment),
                        "{:?} lacks {fragment:?}",
                        error.message
                    );
                }
                other => panic!("expected HTTP {status}, got {other:?}"),
            }
        };
    let connect = |token: String| {
        let server_url = server_url.clone();
        async move { Client::connect(&server_url, &token).await }
    };
    let unauthorized = ErrorCode::Unauthorized;
    check(
        connect("garbage".into()).await,
        401,
        unauthorized.clone(),
        "not a well-formed JWT",
    );
    let expired = token_with(json!({"sub": "alice", "exp": now_secs() - 3600}), SECRET);
    let refused = connect(expired).await;
    assert!(
        refused
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("get a new token")
    );
    check(refused, 401, unauthorized, "expired");

    let _held = typed(server.addr(), "alice").await;
    check(
        connect(token("alice")).await,
        429,
        ErrorCode::TooManyConnections,
        "already has 1 open connections",
    );
    let long_epoch = ClientConfig {
        resume_from: Some(ResumeParams {
            epoch: Epoch::new(&"e".repeat(65)),
            after_seq: 1,
        }),
        ..ClientConfig::default()
    };
    let bob = Client::connect_with(&server_url, &token("bob"), long_epoch).await;
    check(bob, 400, ErrorCode::BadRequest, "1 to 64 characters");

    let bad_url = Client::connect("127.0.0.1:8080", &token("bob")).await;
    assert!(
        matches!(bad_url, Err(ClientError::InvalidUrl { .. })),
        "{bad_url:?}"
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = Client::connect(&url(free), &token("bob")).await;
    assert!(
        matches!(nobody, Err(ClientError::Unreachable { .. })),
        "{nobody:?}"
    );
    server.shutdown().await;
}

/// The token expires while the client is connected; at its next reconnect the server
/// refuses it, and the stream ends with that refusal instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_the_stream_at_the_next_reconnect() {
    let server = start_server(|_| {}).await;
    let proxy = Proxy::start(server.addr()).await;
    // Valid for 1 s, plus the 5 s of clock skew the server allows.
    let short = token_with(json!({"sub": "alice", "exp": now_secs() + 1}), SECRET);
    let mut client = connect_through(&proxy, &short).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    proxy.cut_all();
    let end = tokio::time::timeout(Duration::from_secs(10), client.next_item())
        .await
        .unwrap();
    match end {
        Some(Err(ClientError::Refused { status: 401, error })) => {
            assert!(error.message.contains("expired"), "{}", error.message);
        }
        other => panic!("expected the stream to end with a 401, got {other:?}"),
    }
    assert!(client.next_item().await.is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_come_only_from_a_server_without_a_configured_secret() {
    let configured = start_server(|_| {}).await;
    match agent_client::get_dev_token(&url(configured.addr()), "alice").await {
        Err(error @ ClientError::DevTokensOff { .. }) => {
            assert!(error.to_string().contains("configured secret"), "{error}");
        }
        other => panic!("expected DevTokensOff, got {other:?}"),
    }
    configured.shutdown().await;

    let embedded = start_server(|c| c.jwt_secret = None).await;
    let embedded_url = url(embedded.addr());
    let dev = agent_client::get_dev_token(&embedded_url, "alice")
        .await
        .unwrap();
    assert_eq!(dev.user_id.as_str(), "alice");
    let client = Client::connect(&embedded_url, &dev.token).await.unwrap();
    assert_eq!(client.user_id().as_str(), "alice");
    match agent_client::get_dev_token(&embedded_url, "default").await {
        Err(ClientError::Refused { status: 400, error }) => {
            assert_eq!(error.error, ErrorCode::BadRequest);
            assert!(error.message.contains("placeholder"), "{}", error.message);
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    client.close().await;
    embedded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_typed_errors_and_a_cancel_ends_the_run() {
    let server = start_server(|_| {}).await;
    let mut alice = typed(server.addr(), "alice").await;
    match alice.start_agent("summarizer", "hi").await {
        Err(ClientError::Server {
            code: ErrorCode::UnknownAgent,
            message,
        }) => assert!(
            message.contains("available: assistant, synthetic"),
            "{message}"
        ),
        other => panic!("expected unknown_agent, got {other:?}"),
    }
    let hang = json!({"thinking": 0, "tools": 0, "chunks": 0, "hang": true});
    let run = alice.start(synthetic(hang)).await.unwrap();
    alice.cancel_run(&run.run_id).await.unwrap();
    let frames = terminals(&mut alice, 1).await;
    let kinds: Vec<_> = frames.iter().map(|f| f.event.kind.type_name()).collect();
    assert_eq!(kinds, ["agent_started", "agent_cancelled"]);
    // A run that has ended cannot be cancelled.
    let again = alice.cancel_run(&run.run_id).await.unwrap_err();
    assert_eq!(again.code(), Some(&ErrorCode::RunNotFound), "{again}");
    server.shutdown().await;
}

/// Requests from many tasks on one client each get their own answer (correlated by
/// `request_id`), refusals included, while the stream carries every accepted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_client_each_get_their_own_answer() {
    let server = start_server(|c| c.engine.max_concurrent_runs = 10).await;
    let mut client = typed(server.addr(), "alice").await;
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let handle = client.handle();
            tokio::spawn(async move {
                match i % 3 {
                    0 => handle.start_agent("nope", "x").await.map(Some),
                    1 => handle.ping().await.map(|_| None),
                    _ => handle.start(synthetic(json!({"tools": 1}))).await.map(Some),
                }
            })
        })
        .collect();
    let mut accepted = BTreeSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        match (i % 3, request.await.unwrap()) {
            (0, Err(error)) => assert_eq!(error.code(), Some(&ErrorCode::UnknownAgent)),
            (1, Ok(None)) => {}
            (2, Ok(Some(run))) => assert!(accepted.insert(run.run_id)),
            (_, other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(accepted.len(), 4);
    let seen = terminals(&mut client, accepted.len()).await;
    assert_contiguous(&seen, 0);
    let runs: BTreeSet<RunId> = seen.iter().map(|e| e.event.run_id.clone()).collect();
    assert_eq!(runs, accepted);
    assert_eq!(check_lifecycle(&events(&seen)).unwrap().completed, 4);
    server.shutdown().await;
}
