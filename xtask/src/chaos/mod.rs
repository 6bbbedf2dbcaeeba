//! `cargo xtask chaos`: faults under a cross-node load, and what they cost.
//!
//! For each fault: a private Redis (append-only file, fsynced before each reply), two
//! release-built agent-server nodes on it (and, for the store's faults, a private PostgreSQL
//! holding their history or a small volume for their SQLite files), and one `loadgen steady --reconnect` that gives every user a
//! connection on each node, starts runs on either, and verifies every frame. A third of the
//! way into the load the fault strikes. loadgen's verdict is the first column that matters:
//! an event lost, repeated or out of order, a failed resume, a run without its one terminal
//! event, fails it. The table says what each fault cost: events lost (must be 0), connections
//! that had to resume, runs ended `node_lost`, history writes dropped, and how long until the
//! system was whole again.
//!
//! - `faults`: the faults and how each strikes and is measured, and the broker each uses;
//! - `cluster`: the private Redis Cluster of `cluster-failover`;
//! - `services`: the private PostgreSQL, the small volume, and reading a node's `/readyz`
//!   and `/metrics`.

mod cluster;
mod faults;
mod services;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Error;
use crate::bench::cluster::Nodes;
use crate::bench::{self, Binaries, SECRET};
use faults::{Broker, Fault, Struck};

/// Flags of `cargo xtask chaos`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// A small load (about a minute in all).
    pub quick: bool,
    /// Only these faults (by name); all when empty.
    pub only: Vec<String>,
    /// The nodes in the Redis broker's sequencer mode (`--broker-sequencer`).
    pub sequencer: bool,
}

impl Options {
    /// Parses the arguments after `chaos`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--sequencer" => options.sequencer = true,
                "--only" => {
                    let names = args.next().ok_or("--only needs fault names")?;
                    options.only = names.split(',').map(str::to_owned).collect();
                }
                other => {
                    return Err(format!(
                        "chaos: unknown argument `{other}` (expected --quick, --sequencer, --only NAMES)"
                    ));
                }
            }
        }
        let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        if let Some(bad) = options.only.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(format!(
                "chaos: no fault `{bad}`; the faults are {}",
                known.join(", ")
            ));
        }
        Ok(options)
    }
}

/// The load every fault strikes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Users; each has one connection on each node.
    pub(crate) users: u64,
    /// Runs in flight: as many as users, so that both nodes always have runs going (runs are
    /// started on a block of `users` connections of one node, then of the other).
    pub(crate) in_flight: u64,
    /// Seconds of starting runs.
    pub(crate) seconds: u64,
}

impl Load {
    fn new(quick: bool) -> Self {
        if quick {
            Load {
                users: 200,
                in_flight: 200,
                seconds: 12,
            }
        } else {
            Load {
                users: 1_000,
                in_flight: 1_000,
                seconds: 30,
            }
        }
    }

    /// When the fault strikes, from the start of loadgen (connecting included).
    fn strike_at(self) -> Duration {
        Duration::from_secs(self.seconds / 3 + 2)
    }
}

/// Runs of 17 events with 12 pauses of 100 ms (1.2 s a run).
const SHAPE: &str = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":100}"#;

/// Seconds a node's claim on a run lasts: a killed node's runs end `node_lost` this long
/// after, and a node that cannot reach Redis for two thirds of it loses its runs.
const LEASE_SECS: &str = "6";

/// One fault's outcome: loadgen's report and verdict, and what the fault measured.
pub(crate) struct Outcome {
    fault: Fault,
    report: Option<Value>,
    verified: bool,
    error: Option<String>,
    struck: Struck,
}

/// Runs every chosen fault and prints the table; `Ok(false)` when one failed.
pub fn run(root: &Path, options: &Options) -> Result<bool, Error> {
    let binaries = bench::build(root)?;
    let log_dir = bench::target_dir(root)?.join("chaos");
    std::fs::create_dir_all(&log_dir).map_err(|source| Error::Io {
        path: log_dir.clone(),
        source,
    })?;
    let load = Load::new(options.quick);
    let mut outcomes = Vec::new();
    for fault in Fault::ALL {
        if !options.only.is_empty() && !options.only.iter().any(|n| n == fault.name()) {
            continue;
        }
        println!(
            "chaos: {} under {} users × 2 nodes{}: {}",
            fault.name(),
            load.users,
            if options.sequencer {
                " in the sequencer mode"
            } else {
                ""
            },
            fault.what()
        );
        let outcome = run_fault(&binaries, fault, load, &log_dir, options.sequencer);
        println!("  {}", outcome.summary());
        outcomes.push(outcome);
    }
    println!("\n{}", table(&outcomes, load));
    Ok(outcomes.iter().all(Outcome::passed))
}

/// The nodes' flags besides the store; `sequencer`: in the Redis broker's sequencer mode.
fn node_args(broker: &Broker, sequencer: bool) -> Vec<String> {
    let mut args = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--synthetic-agent",
        "--jwt-secret",
        SECRET,
        "--broker",
        &broker.url(),
        "--run-lease-secs",
        LEASE_SECS,
        "--start-rate-per-minute",
        "100000",
    ]
    .map(String::from)
    .to_vec();
    if sequencer {
        args.push("--broker-sequencer".into());
    }
    args
}

fn run_fault(
    binaries: &Binaries,
    fault: Fault,
    load: Load,
    log_dir: &Path,
    sequencer: bool,
) -> Outcome {
    let mut outcome = Outcome {
        fault,
        report: None,
        verified: false,
        error: None,
        struck: Struck::default(),
    };
    let mut broker = match Broker::start(fault, log_dir) {
        Ok(broker) => broker,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    let mut services = match fault.services(log_dir) {
        Ok(services) => services,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    let args_of = |n: usize| {
        let mut args = node_args(&broker, sequencer);
        args.extend(services.store_args(n));
        args
    };
    let log = |n: usize| log_dir.join(format!("{}-node{n}.log", fault.name()));
    match Nodes::start(&binaries.server, 2, args_of, log) {
        Ok(mut nodes) => {
            let addrs = nodes.addrs();
            match start_loadgen(binaries, load, &addrs, nodes.pids()[0], fault) {
                Ok(loadgen) => {
                    std::thread::sleep(load.strike_at());
                    outcome.struck = fault.strike(&mut nodes, &mut broker, &mut services);
                    finish_loadgen(loadgen, &mut outcome);
                    outcome.struck.after_load(&addrs, &services);
                    let problems = fault.judge(outcome.report.as_ref(), load, &outcome.struck);
                    outcome.struck.problems.extend(problems);
                }
                Err(e) => outcome.error = Some(e),
            }
        }
        Err(e) => outcome.error = Some(e),
    }
    services.stop();
    broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    outcome
}

fn start_loadgen(
    binaries: &Binaries,
    load: Load,
    addrs: &[String],
    pid: u32,
    fault: Fault,
) -> Result<Child, String> {
    let urls: Vec<String> = addrs.iter().map(|a| format!("ws://{a}/ws")).collect();
    let (connections, users) = ((2 * load.users).to_string(), load.users.to_string());
    Command::new(&binaries.loadgen)
        .args(["steady", "--connections", &connections, "--users", &users])
        .args(["--in-flight", &load.in_flight.to_string()])
        .args(["--duration", &load.seconds.to_string(), "--shape", SHAPE])
        .args(["--url", &urls.join(","), "--jwt-secret", SECRET])
        .args(["--server-pid", &pid.to_string()])
        .args([
            "--reconnect",
            "--json",
            "--no-progress",
            "--settle-ms",
            "200",
        ])
        .args(fault.fails_resumes().then_some("--tolerate-failed-resumes"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start loadgen: {e}"))
}

fn finish_loadgen(loadgen: Child, outcome: &mut Outcome) {
    let started = Instant::now();
    match loadgen.wait_with_output() {
        Ok(output) => {
            outcome.verified = output.status.success();
            outcome.report = serde_json::from_slice(&output.stdout).ok();
            if !outcome.verified {
                let stderr = String::from_utf8_lossy(&output.stderr);
                outcome.error = Some(
                    stderr
                        .lines()
                        .rfind(|l| l.starts_with("loadgen:"))
                        .unwrap_or("loadgen failed without a message")
                        .to_owned(),
                );
            }
        }
        Err(e) => outcome.error = Some(format!("loadgen: {e} after {:?}", started.elapsed())),
    }
}

impl Outcome {
    fn figure(&self, pointer: &str) -> Option<f64> {
        self.report.as_ref()?.pointer(pointer)?.as_f64()
    }

    /// Whether loadgen verified every frame and the fault's own checks held.
    fn passed(&self) -> bool {
        self.verified && self.error.is_none() && self.struck.problems.is_empty()
    }

    fn summary(&self) -> String {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        let mut why: Vec<String> = self.error.iter().cloned().collect();
        why.extend(self.struck.problems.iter().cloned());
        format!(
            "{verdict}: {:.0} events delivered, {:.0} reconnects, {:.0} failed resumes, {:.0} runs ended node_lost, {:.0} history batches failed, recovery {}{}",
            self.figure("/load/events").unwrap_or(0.0),
            self.figure("/faults/reconnects").unwrap_or(0.0),
            self.figure("/faults/failed_resumes").unwrap_or(0.0),
            self.figure("/faults/node_lost_runs").unwrap_or(0.0),
            self.struck.failed_batches,
            self.recovery(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )
    }

    /// How long until the system was whole again, in words.
    fn recovery(&self) -> String {
        match self.struck.recovery {
            Some(took) => format!("{:.2} s", took.as_secs_f64()),
            None => match self.figure("/faults/recovery_ms_max") {
                Some(ms) if ms > 0.0 => format!("{:.2} s (longest resume)", ms / 1e3),
                _ if self.fault == Fault::PostgresRestart => {
                    "none needed (stayed ready)".to_owned()
                }
                _ => "–".to_owned(),
            },
        }
    }
}

/// The table, in Markdown.
fn table(outcomes: &[Outcome], load: Load) -> String {
    let mut out = format!(
        "Faults under a cross-node steady load: {} users × 2 connections (one per node), {} runs in flight, \
         {} s of starts, every frame verified.\n\n\
         | fault | passed | events delivered | events lost | connections resumed | resumes failed explicitly (run deliveries written off) | requests refused | runs ended node_lost | history writes (dropped) | recovery |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        load.users, load.in_flight, load.seconds
    );
    for o in outcomes {
        let n = |pointer: &str| {
            o.figure(pointer)
                .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
        };
        // loadgen fails the load at the first event lost, repeated or out of order, and at
        // a failed resume unless the fault must cause them (then they are counted).
        let lost = if o.verified { "0" } else { "see below" };
        out.push_str(&format!(
            "| {} | {} | {} | {lost} | {} | {} ({}) | {} | {} | {} | {} |\n",
            o.fault.name(),
            if o.passed() { "yes" } else { "**no**" },
            n("/load/events"),
            n("/faults/reconnects"),
            n("/faults/failed_resumes"),
            n("/faults/runs_written_off"),
            n("/faults/refused_requests"),
            n("/faults/node_lost_runs"),
            o.struck.dropped.map_or_else(
                || "–".to_owned(),
                |d| format!("{:.0} ({d} dropped)", o.struck.writes)
            ),
            o.recovery(),
        ));
    }
    for o in outcomes.iter().filter(|o| !o.passed()) {
        let mut why: Vec<String> = o.error.iter().cloned().collect();
        why.extend(o.struck.problems.iter().cloned());
        out.push_str(&format!(
            "\n- **{}** failed: {}",
            o.fault.name(),
            why.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_known_faults_only() {
        let parse = |words: &[&str]| {
            Options::parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(parse(&[]), Ok(Options::default()));
        assert_eq!(
            parse(&["--quick", "--only", "node-kill,sqlite-full"]),
            Ok(Options {
                quick: true,
                only: vec!["node-kill".into(), "sqlite-full".into()],
                sequencer: false,
            })
        );
        assert_eq!(
            parse(&["--sequencer"]),
            Ok(Options {
                sequencer: true,
                ..Options::default()
            })
        );
        let bad = parse(&["--only", "flood"]).expect_err("no such fault");
        assert_eq!(
            bad,
            "chaos: no fault `flood`; the faults are node-kill, redis-restart, redis-restart-empty, cluster-failover, postgres-restart, sqlite-full"
        );
        assert!(
            parse(&["--only"])
                .expect_err("refused")
                .contains("--only needs fault names")
        );
        assert!(
            parse(&["--slow"])
                .expect_err("refused")
                .contains("unknown argument `--slow`")
        );
    }
}
