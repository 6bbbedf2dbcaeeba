//! loadgen end to end: a small burst against agent-server, the bare baseline and the floor,
//! verified frame by frame by loadgen itself, with every run's events counted; and the
//! floor's own answers to what is not a run (a bad token, a ping, a binary frame).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use futures::{SinkExt as _, StreamExt as _};
use loadgen::cli::{Cli, Command};
use loadgen::report::Report;
use loadgen::{baseline, floor, load, measure};
use tokio_tungstenite::tungstenite::Message;

use crate::server_support::{SECRET, start_server};

const SHAPE: &str = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":5}"#;
/// started + 4 thinking + 3 × (executing, completed) + 5 chunks + completed.
const EVENTS_PER_RUN: u64 = 17;

fn cli(words: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("loadgen").chain(words.iter().copied()))
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

async fn burst(addr: SocketAddr, connections: u64, runs: u64) -> Report {
    burst_of(addr, connections, connections, runs).await
}

/// A burst of `runs` runs over `connections` connections of `users` users.
async fn burst_of(addr: SocketAddr, connections: u64, users: u64, runs: u64) -> Report {
    let url = format!("ws://{addr}/ws");
    let (c, u, r) = (connections.to_string(), users.to_string(), runs.to_string());
    let args = [
        "burst",
        "--connections",
        &c,
        "--users",
        &u,
        "--runs",
        &r,
        "--shape",
        SHAPE,
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--no-progress",
        "--settle-ms",
        "100",
    ];
    let plan = cli(&args).command.plan().expect("a load command").unwrap();
    load::run(&plan, measure::process::raise_file_limit())
        .await
        .unwrap_or_else(|e| panic!("loadgen against {url}: {e}"))
}

fn assert_whole(report: &Report, runs: u64) {
    assert!(report.verified, "violations: {:?}", report.violations);
    assert_eq!(report.violation_count, 0);
    assert_eq!(report.events_per_run, EVENTS_PER_RUN);
    assert_eq!(report.load.runs_requested, runs);
    assert_eq!(report.load.runs_finished, runs);
    assert_eq!(report.load.events, runs * EVENTS_PER_RUN);
}

#[tokio::test]
async fn a_burst_against_the_server_is_verified_and_whole() {
    let server = start_server(|c| c.start_rate_per_minute = 1_000).await;
    let report = burst(server.addr(), 30, 60).await;
    assert_whole(&report, 60);
    assert_eq!(report.connections, 30);
}

/// A free port's address.
fn free_addr() -> SocketAddr {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    free.local_addr().unwrap()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

#[tokio::test]
async fn the_baseline_serves_the_same_runs() {
    let addr = free_addr();
    let addr_text = addr.to_string();
    let Command::BaselineServer(args) = cli(&[
        "baseline-server",
        "--addr",
        &addr_text,
        "--jwt-secret",
        SECRET,
    ])
    .command
    else {
        panic!("not the baseline command")
    };
    let serving = tokio::spawn(baseline::serve(args));
    wait_listening(addr).await;
    let report = burst(addr, 30, 60).await;
    assert_whole(&report, 60);
    serving.abort();
}

/// Starts `loadgen floor-server` on a free port.
async fn start_floor() -> (SocketAddr, tokio::task::JoinHandle<Result<(), String>>) {
    let addr = free_addr();
    let addr_text = addr.to_string();
    let Command::FloorServer(args) =
        cli(&["floor-server", "--addr", &addr_text, "--jwt-secret", SECRET]).command
    else {
        panic!("not the floor command")
    };
    let serving = tokio::spawn(floor::serve(args));
    wait_listening(addr).await;
    (addr, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_floor_serves_the_same_runs_to_many_users_at_once() {
    let (addr, serving) = start_floor().await;
    let report = burst(addr, 30, 60).await;
    assert_whole(&report, 60);
    // Several connections per user, runs of 100 users at once on four threads: every
    // connection gets each of its user's events once, in seq order, and no other user's.
    let report = burst_of(addr, 400, 100, 1_000).await;
    assert!(report.verified, "violations: {:?}", report.violations);
    assert_eq!((report.connections, report.users), (400, 100));
    assert_eq!(report.load.runs_finished, 1_000);
    assert_eq!(
        report.load.events,
        4 * 1_000 * EVENTS_PER_RUN,
        "each event on each of its user's 4 connections"
    );
    serving.abort();
}

#[tokio::test]
async fn the_floor_refuses_bad_tokens_and_answers_pings_and_binary_frames() {
    let (addr, serving) = start_floor().await;
    let url = format!("ws://{addr}/ws");
    let refused = tokio_tungstenite::connect_async(format!("{url}?token=forged.token.here"))
        .await
        .expect_err("a forged token is refused");
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("not an HTTP refusal: {refused}");
    };
    assert_eq!(response.status(), 401);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid token"),
        "{body}"
    );

    let token = loadgen::connect::Minter::new(SECRET)
        .token("floor-user")
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
        .await
        .expect("a signed token connects");
    let greeting = next_text(&mut socket).await;
    assert_eq!(greeting["type"], "connection_established");
    assert_eq!(greeting["user_id"], "floor-user");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match socket.next().await.expect("open").unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await["code"], "binary_not_supported");
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await["code"], "invalid_json");
    socket.close(None).await.unwrap();
    serving.abort();
}

async fn next_text<S>(socket: &mut S) -> serde_json::Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a frame within 5 s")
        .expect("open")
        .unwrap();
    let Message::Text(text) = message else {
        panic!("expected a text frame, got {message:?}");
    };
    serde_json::from_str(text.as_str()).unwrap()
}
