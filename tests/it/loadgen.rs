//! loadgen end to end: a small burst against agent-server and against the bare baseline,
//! verified frame by frame by loadgen itself, with every run's events counted.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use loadgen::cli::{Cli, Command};
use loadgen::report::Report;
use loadgen::{baseline, load, measure};

use crate::server_support::{SECRET, start_server};

const SHAPE: &str = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":5}"#;
/// started + 4 thinking + 3 × (executing, completed) + 5 chunks + completed.
const EVENTS_PER_RUN: u64 = 17;

fn cli(words: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("loadgen").chain(words.iter().copied()))
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

async fn burst(addr: SocketAddr, connections: u64, runs: u64) -> Report {
    let url = format!("ws://{addr}/ws");
    let (c, r) = (connections.to_string(), runs.to_string());
    let args = [
        "burst",
        "--connections",
        &c,
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

#[tokio::test]
async fn the_baseline_serves_the_same_runs() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
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
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = burst(addr, 30, 60).await;
    assert_whole(&report, 60);
    serving.abort();
}
