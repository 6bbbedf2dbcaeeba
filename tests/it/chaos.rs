//! Faults under load: two real `agent-server` processes on one private Redis carry a
//! cross-node steady load (every user has a connection on each node and starts runs on
//! either), and one node is killed with SIGKILL halfway through. loadgen (`--reconnect`)
//! verifies every frame as it goes: each dropped connection reopens on the other node and
//! resumes after its last event, so a lost, repeated or reordered event fails the load; the
//! killed node's runs must end with `agent_error` `node_lost` exactly once on every connection
//! of their user. Then Redis is restarted empty under the same load: every connection's
//! resume fails explicitly (`epoch_changed`) and loadgen (`--tolerate-failed-resumes`) goes
//! on from there, checking every run begun after whole. `cargo xtask chaos` runs the same at
//! a larger scale and prints the table.

use std::time::Duration;

use clap::Parser as _;
use loadgen::cli::Cli;
use loadgen::{load, measure};

use crate::process_support::ServerProcess;
use crate::redis_support::RedisServer;
use crate::server_support::SECRET;

/// Runs of 12 pauses of 50 ms: with [`USERS`] runs in flight, the runs of a block of starts
/// (runs k..k+100 go to one node's connections, the next 100 to the other's) last as long
/// as the block takes to start, so both nodes have runs in flight at any moment.
const SHAPE: &str = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":50}"#;
const USERS: u64 = 100;

fn node(redis: &RedisServer) -> ServerProcess {
    node_with(redis, &[])
}

/// A node on `redis` with `more` flags.
fn node_with(redis: &RedisServer, more: &[&str]) -> ServerProcess {
    let url = redis.url();
    let mut argv = vec![
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--synthetic-agent",
        "--store",
        "none",
        "--broker",
        &url,
        "--run-lease-secs",
        "3",
        "--start-rate-per-minute",
        "100000",
    ];
    argv.extend_from_slice(more);
    ServerProcess::start(&argv)
}

/// `loadgen steady --reconnect` over both nodes (`urls`), with `more` flags.
fn steady(urls: &str, more: &[&str]) -> Cli {
    let (connections, users) = ((2 * USERS).to_string(), USERS.to_string());
    let mut argv = vec![
        "loadgen",
        "steady",
        "--connections",
        &connections,
        "--users",
        &users,
        "--in-flight",
        &users,
        "--duration",
        "6",
        "--shape",
        SHAPE,
        "--url",
        urls,
        "--jwt-secret",
        SECRET,
        "--reconnect",
        "--no-progress",
        "--settle-ms",
        "100",
    ];
    argv.extend_from_slice(more);
    Cli::try_parse_from(argv).unwrap()
}

/// Runs `cli`'s load, strikes `fault` 3 s in, and returns loadgen's report and fault figures
/// once it verified every frame.
async fn load_with_fault(
    cli: &Cli,
    fault: impl FnOnce(),
) -> (loadgen::report::Report, loadgen::report::FaultFigures) {
    let plan = cli.command.plan().expect("a load command").unwrap();
    let (report, ()) = tokio::join!(
        load::run(&plan, measure::process::raise_file_limit()),
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            tokio::task::block_in_place(fault);
        }
    );
    let report = report.unwrap();
    assert!(
        report.verified,
        "{} violations: {:?}",
        report.violation_count, report.violations
    );
    let faults = report
        .faults
        .clone()
        .expect("--reconnect reports its faults");
    (report, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_loses_no_event_and_its_runs_end_node_lost_once() {
    killed_mid_load(&["--broker-mode", "script"]).await;
}

/// The same in the sequencer mode, where the killed node held leases of users' streams (the
/// other node takes them after 5 s) and the runs' records lag their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_sequencer_mode_a_node_killed_mid_load_loses_no_event_and_its_runs_end_once() {
    killed_mid_load(&["--broker-mode", "sequencer"]).await;
}

/// Two nodes with `flags` under the steady load; one killed 3 s in.
async fn killed_mid_load(flags: &[&str]) {
    let redis = RedisServer::start();
    let survivor = node_with(&redis, flags);
    let doomed = node_with(&redis, flags);
    let urls = format!("ws://{}/ws,ws://{}/ws", survivor.addr, doomed.addr);
    let cli = steady(&urls, &[]);
    let (report, faults) = load_with_fault(&cli, || doomed.stop("KILL")).await;
    eprintln!("chaos: {} events delivered, {faults}", report.load.events);
    // Each user had one connection on the killed node: every one of them came back.
    assert_eq!(faults.reconnects, USERS, "{faults}");
    // Runs were in flight on the killed node, ended node_lost: those it had accepted, or
    // those whose acceptance was lost with it (on a busy box, every one it had started).
    assert!(
        faults.node_lost_runs + faults.orphan_deliveries > 0,
        "runs were in flight on the killed node: {faults}"
    );
    let load = report.load;
    assert!(load.runs_finished > 100, "{load:?}");
    assert_eq!(
        load.runs_finished + faults.lost_requests,
        load.runs_requested,
        "every request ended, or was lost with its connection: {faults}"
    );
}

/// Redis killed and started again empty halfway through (no persistence: every stream,
/// lease and queue is gone). Nothing can be replayed, and nothing is lost silently: each
/// connection is closed, its resume answers `epoch_changed`, loadgen goes on from the new
/// position, and every run begun after is checked whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_load_ends_in_explicit_failed_resumes_only() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let urls = format!("ws://{}/ws,ws://{}/ws", a.addr, b.addr);
    let cli = steady(&urls, &["--tolerate-failed-resumes"]);
    let (report, faults) = load_with_fault(&cli, || redis.restart()).await;
    eprintln!(
        "redis restarted empty: {} events delivered, {faults}",
        report.load.events
    );
    assert!(faults.failed_resumes > 0, "{faults}");
    assert!(faults.runs_written_off > 0, "{faults}");
    assert!(
        report.load.runs_finished > faults.runs_written_off,
        "runs went on being checked after the restart: {:?}, {faults}",
        report.load
    );
}
