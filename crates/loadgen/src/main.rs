//! `loadgen`: loads agent-server the way its users do, from outside, and says what it cost.
//!
//! `loadgen burst|steady|idle` opens N authenticated WebSockets for U users, starts synthetic
//! runs, and reports emit-to-client latency (HDR histogram), events per second, the connect
//! rate, the server's memory per idle connection and CPU time per delivered event (from
//! `/proc/<--server-pid>`), and its own CPU. While it loads it verifies every frame: each
//! event is its user's, `seq` is contiguous per connection, every run's lifecycle is whole
//! and has the shape's event count. A violation fails the run (exit code 1) and says what and
//! where; a load that could not be carried out (a refused connection, a bad flag) exits 2.
//!
//! `loadgen baseline-server` serves the bare fan-out baseline (`baseline`) to compare with,
//! `loadgen floor-server` the floor (`floor`): the least a server can do per event.
//!
//! Warnings say when the box, not the server, limited a figure: an open-file limit below the
//! connection count, or loadgen's own thread(s) near 100% busy.

use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::{baseline, floor, load, measure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::BaselineServer(args) => {
            return finish(runtime(None).and_then(|rt| rt.block_on(baseline::serve(args))));
        }
        Command::FloorServer(args) => {
            return finish(runtime(None).and_then(|rt| rt.block_on(floor::serve(args))));
        }
        _ => {}
    }
    let plan = match cli.command.plan() {
        Some(Ok(plan)) => plan,
        Some(Err(message)) => {
            eprintln!("loadgen: {message}");
            return ExitCode::from(2);
        }
        None => return ExitCode::from(2),
    };
    let limit = measure::process::raise_file_limit();
    let threads = usize::try_from(plan.args.threads).unwrap_or(1);
    let runtime = match runtime(Some(threads)) {
        Ok(rt) => rt,
        Err(message) => return finish(Err(message)),
    };
    match runtime.block_on(load::run(&plan, limit)) {
        Ok(report) => {
            if plan.args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            if !report.verified {
                // The violations are in the report; say so on stderr too for `--json` runs.
                for violation in &report.violations {
                    eprintln!("loadgen: violation: {violation}");
                }
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            if error.is_box_limit() {
                eprintln!("loadgen: WARNING: the box, not the server, refused that connection");
            }
            ExitCode::from(2)
        }
    }
}

/// A runtime with `threads` workers (one thread: the current-thread runtime), or the
/// default multi-thread runtime for the baseline server, like agent-server's.
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let built = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    built.map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}
