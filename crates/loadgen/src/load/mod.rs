//! One load run, phase by phase: open the connections (bounded concurrency, connect rate),
//! let them settle and read the server's memory at rest, run the scenario while measuring
//! CPU, close, give the final verdict on every connection, and gather the report.
//!
//! - [`plan`]: which user each connection is, which connection starts each run;
//! - [`connection`]: the task of one socket (sends starts, times and verifies what arrives);
//! - [`shared`]: the counters, histogram and violations those tasks share;
//! - [`scenario`]: the burst, steady and idle drivers, and waiting for the last event.

pub mod connection;
pub mod plan;
pub mod scenario;
pub mod shared;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_context::UserId;
use futures::StreamExt;

use crate::cli::LoadPlan;
use crate::connect::{self, ConnectError, Minter, Target};
use crate::measure::process::{self, FileLimit, ProcessProbe};
use crate::progress::Progress;
use crate::report::{
    BoxReadings, ConnectFigures, FaultFigures, LoadgenFigures, MachineFigures, Report, box_warnings,
};
use crate::verify::Violation;
use connection::{Command, Connection, Context, Reconnect};
use plan::Layout;
use scenario::{LoadWindow, Measured};
use shared::{Shared, UserRuns};

/// A load that could not be carried out (as opposed to one that found violations, which
/// ends with a report).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A connection could not be opened.
    #[error("connection {index} (user {user}) could not be opened, with {opened} open: {source}")]
    Connect {
        /// Which.
        index: usize,
        /// Its user.
        user: String,
        /// Why.
        source: ConnectError,
        /// Opened before it failed.
        opened: usize,
    },
    /// `--server-pid` names no process, or its /proc files cannot be read.
    #[error("--server-pid: {0}")]
    Server(String),
    /// The URL could not be used.
    #[error(transparent)]
    Target(ConnectError),
}

impl LoadError {
    /// Whether the box (file descriptors, ephemeral ports), not the server, stopped the load.
    pub fn is_box_limit(&self) -> bool {
        matches!(self, LoadError::Connect { source, .. } if source.is_box_limit())
    }
}

/// Runs `plan` and reports. `limit` is the open-file limit in force.
pub async fn run(plan: &LoadPlan, limit: FileLimit) -> Result<Report, LoadError> {
    let args = &plan.args;
    let mut targets = Vec::new();
    for url in args.url.split(',') {
        targets.push(
            Target::resolve(url.trim(), args.sources)
                .await
                .map_err(LoadError::Target)?,
        );
    }
    let server = args
        .server_pid
        .map(|pid| (pid, ProcessProbe::new(Some(pid))));
    let rss_before = match &server {
        Some((pid, probe)) if !probe.exists() => {
            return Err(LoadError::Server(format!("no process {pid} is running")));
        }
        Some((pid, probe)) => Some(
            probe
                .rss_kib()
                .map_err(|e| LoadError::Server(format!("process {pid}: {e}")))?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared::new(users(plan), plan.shape.events_per_run()));
    let minter = Minter::new(&args.jwt_secret);
    let tokens = shared
        .users
        .iter()
        .map(|u| minter.token(u.id.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadError::Target)?;
    let context = Context {
        shared: Arc::clone(&shared),
        input: plan.shape.to_input(),
        reconnect: args.reconnect.then(|| {
            Arc::new(Reconnect {
                targets: targets.clone(),
                tokens: tokens.clone(),
                tolerate_failed_resumes: args.tolerate_failed_resumes,
            })
        }),
    };
    let (connections, connect) = open_all(plan, &targets, &tokens, &context).await?;
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_idle = server.as_ref().and_then(|(_, p)| p.rss_kib().ok());
    let server_probe = server.as_ref().map(|(_, p)| p.clone());
    let window = LoadWindow::open(server_probe.as_ref());
    scenario::drive(plan, &shared, &connections).await;
    let measured = window.close(&shared);
    await_orphans(&connections, &shared).await;
    close_all(connections, &shared).await;
    if !shared.has_failed() && !shared.all_delivered() {
        shared.fail(Violation::Incomplete(shared.counts()));
    }
    let rss_after = server.as_ref().and_then(|(_, p)| p.rss_kib().ok());
    let server_figures = server.as_ref().map(|(pid, probe)| {
        let rss = [rss_before, rss_idle, rss_after].map(|r| r.unwrap_or(0));
        measured.server_figures(*pid, probe, rss, plan.layout.connections)
    });
    Ok(report(
        plan,
        connect,
        &measured,
        server_figures,
        limit,
        &shared,
    ))
}

/// The users of the plan, with their connection counts.
fn users(plan: &LoadPlan) -> Vec<UserRuns> {
    let layout = plan.layout;
    (0..layout.users)
        .map(|u| UserRuns {
            id: UserId::parse(&Layout::user_id(&plan.args.user_prefix, u))
                .expect("--user-prefix was validated with the flags"),
            connections: layout.connections_of(u) as u64,
            runs: parking_lot::Mutex::new(HashSet::new()),
            lost_requests: std::sync::atomic::AtomicU64::new(0),
        })
        .collect()
}

/// Opens every connection with at most `--connect-concurrency` in progress, starting each
/// one's task as soon as it is greeted (so it answers the server's pings from then on). With
/// several servers (nodes), a user's k-th connection goes to server k mod their count, so
/// runs started on one node stream to the user's connections on the others.
async fn open_all(
    plan: &LoadPlan,
    targets: &[Target],
    tokens: &[String],
    context: &Context,
) -> Result<(Vec<Connection>, ConnectFigures), LoadError> {
    let layout = plan.layout;
    let progress = Progress::new("connect", layout.connections as u64, plan.args.no_progress);
    let overflows_before = process::listen_overflows();
    let started = Instant::now();
    let concurrency = usize::try_from(plan.args.connect_concurrency).unwrap_or(1);
    let mut attempts = futures::stream::iter(0..layout.connections)
        .map(|index| {
            let user = layout.user_of(index);
            let id = context.shared.users[user].id.as_str();
            let token = &tokens[user];
            let target = (index / layout.users) % targets.len();
            async move {
                let began = Instant::now();
                let result = connect::open(&targets[target], index, id, token, None).await;
                (index, user, target, result, began.elapsed())
            }
        })
        .buffer_unordered(concurrency);
    let mut slots: Vec<Option<Connection>> = (0..layout.connections).map(|_| None).collect();
    let mut opened = 0;
    let mut slowest = Duration::ZERO;
    while let Some((index, user, target, result, took)) = attempts.next().await {
        slowest = slowest.max(took);
        match result {
            Ok(open) => {
                slots[index] = Some(connection::spawn(context, open, index, user, target));
                opened += 1;
                if opened % 64 == 0 {
                    progress.set(
                        opened as u64,
                        format!("{:.0}/s", opened as f64 / started.elapsed().as_secs_f64()),
                    );
                }
            }
            Err(source) => {
                progress.finish();
                return Err(LoadError::Connect {
                    index,
                    user: context.shared.users[user].id.to_string(),
                    source,
                    opened,
                });
            }
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let figures = ConnectFigures {
        seconds,
        per_second: layout.connections as f64 / seconds.max(1e-9),
        concurrency: concurrency as u64,
        slowest_ms: slowest.as_secs_f64() * 1e3,
        listen_overflows: process::listen_overflows()
            .zip(overflows_before)
            .map_or(0, |(after, before)| after.saturating_sub(before)),
    };
    Ok((slots.into_iter().flatten().collect(), figures))
}

/// How long the end of a load waits for runs that lost requests may have started.
const ORPHANS_WAIT: Duration = Duration::from_secs(20);

/// When a user lost requests unanswered (with a connection to a node that died, or refused
/// after their claim's answer was lost), waits (up to [`ORPHANS_WAIT`]) until no connection
/// has a run open that is not known as its user's: such a run was started by a lost request
/// and ends `node_lost` once its lease expires, which may be after every run the load knows
/// of has ended. Closed before that, it would be judged a stranger's run.
async fn await_orphans(connections: &[Connection], shared: &Shared) {
    let lost = |user: &shared::UserRuns| {
        user.lost_requests
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    };
    // After a violation the load stopped early: its verdict is made.
    if shared.has_failed() || !shared.users.iter().any(lost) {
        return;
    }
    let deadline = tokio::time::Instant::now() + ORPHANS_WAIT;
    while tokio::time::Instant::now() < deadline {
        let mut open = 0;
        for connection in connections {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if connection
                .commands
                .send(Command::OpenUnconfirmed(reply))
                .is_ok()
            {
                // A connection reopening answers once it is back: never past the deadline.
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(answered) => open += answered.unwrap_or(0),
                    Err(_) => return,
                }
            }
        }
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells every connection to close, then gives each one's final verdict.
async fn close_all(connections: Vec<Connection>, shared: &Shared) {
    for connection in &connections {
        let _gone = connection.commands.send(Command::Close);
    }
    for connection in connections {
        let Ok(verifier) = connection.task.await else {
            continue;
        };
        // After a violation the load stopped early: other connections are then expected to
        // be short of runs, which would only bury the first violation.
        if shared.has_failed() {
            continue;
        }
        let user = &shared.users[connection.user];
        let runs = user.runs.lock().clone();
        let lost = user
            .lost_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Err(violation) = verifier.finish(&runs, lost) {
            shared.fail(violation);
        }
    }
}

fn report(
    plan: &LoadPlan,
    connect: ConnectFigures,
    measured: &Measured,
    server: Option<crate::report::ServerFigures>,
    limit: FileLimit,
    shared: &Shared,
) -> Report {
    let threads = plan.args.threads;
    let cpu_per_thread = measured.loadgen_cpu / measured.wall.max(1e-9) / threads as f64;
    // An idle scenario has no load phase to judge CPU shares by.
    let loaded = measured.load.runs_requested > 0;
    let mut warnings = box_warnings(&BoxReadings {
        connections: plan.layout.connections as u64,
        nofile_soft: limit.soft,
        loadgen_per_thread: loaded.then_some(cpu_per_thread),
        server_cpu: server.as_ref().filter(|_| loaded).map(|s| s.cpu_seconds),
        steal: if loaded { measured.machine_steal } else { 0.0 },
        other_cores: if loaded { measured.other_cores } else { 0.0 },
        listen_overflows: connect.listen_overflows,
    });
    if loaded && measured.machine_busy >= 0.95 {
        warnings.push(format!(
            "the machine's cores were {:.0}% busy during the load: server and loadgen share them, \
             so the figures are those of a saturated box",
            measured.machine_busy * 100.0
        ));
    }
    let (violations, violation_count) = shared.violations();
    let (latency_ms, latency_windows) = {
        let latencies = shared.latencies.lock();
        (latencies.summary(), latencies.windows())
    };
    Report {
        scenario: plan.scenario.name().to_owned(),
        url: plan.args.url.clone(),
        connections: plan.layout.connections as u64,
        users: plan.layout.users as u64,
        shape: plan.shape,
        events_per_run: plan.shape.events_per_run(),
        connect,
        load: measured.load,
        latency_ms,
        latency_windows,
        server,
        loadgen: LoadgenFigures {
            threads,
            cpu_seconds: measured.loadgen_cpu,
            cpu_per_thread,
            rss_kib: ProcessProbe::new(None).rss_kib().unwrap_or(0),
            nofile_soft: limit.soft,
            nofile_hard: limit.hard,
        },
        machine: MachineFigures {
            description: process::machine_description(),
            cpu_busy: measured.machine_busy,
            cpu_steal: measured.machine_steal,
            other_cores: measured.other_cores,
        },
        faults: plan.args.reconnect.then(|| fault_figures(shared)),
        warnings,
        verified: violation_count == 0,
        violations: violations.iter().map(ToString::to_string).collect(),
        violation_count,
    }
}

/// What faults did, from the shared counters.
fn fault_figures(shared: &Shared) -> FaultFigures {
    let faults = &shared.faults;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let mut recovery = faults.recovery_ms.lock().clone();
    recovery.sort_by(f64::total_cmp);
    FaultFigures {
        reconnects: n(&faults.reconnects),
        replayed_events: n(&faults.replayed),
        lost_requests: n(&faults.lost_requests),
        refused_requests: n(&faults.refused_requests),
        node_lost_runs: n(&faults.node_lost_runs),
        orphan_deliveries: n(&faults.orphan_deliveries),
        failed_resumes: n(&faults.failed_resumes),
        runs_written_off: n(&faults.runs_written_off),
        recovery_ms_p50: recovery.get(recovery.len() / 2).copied().unwrap_or(0.0),
        recovery_ms_max: recovery.last().copied().unwrap_or(0.0),
    }
}
