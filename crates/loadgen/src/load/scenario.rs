//! The scenarios' drivers and the measurement window around them.
//!
//! - burst: every run's `start_agent` is handed to its connection at once;
//! - steady: starts are paced at `rate` per second for `duration`, and a start waits while
//!   `in_flight` runs are still going, so about that many run at any time;
//! - idle: nothing starts; the connections are held for `hold`.
//!
//! Then the driver waits for the last event: every run accepted, ended on the connection that
//! started it, and delivered whole to every connection of its user. A monitor beside it
//! redraws the progress bar and fails runs that take longer than `--run-timeout`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cli::{LoadPlan, Scenario};
use crate::load::connection::{Command, Connection};
use crate::load::shared::Shared;
use crate::measure::process::{MachineTicks, ProcessProbe, machine_ticks};
use crate::progress::Progress;
use crate::report::{LoadFigures, ServerFigures};

/// Runs the plan's scenario over `connections` until its last event (or its first
/// violation).
pub async fn drive(plan: &LoadPlan, shared: &Shared, connections: &[Connection]) {
    let planned = match plan.scenario {
        Scenario::Burst { runs } => runs,
        Scenario::Steady { rate, duration, .. } => (rate * duration.as_secs_f64()).ceil() as u64,
        Scenario::Idle { .. } => 0,
    };
    let progress = Progress::new(plan.scenario.name(), planned, plan.args.no_progress);
    let timeout = Duration::from_secs(plan.args.run_timeout);
    let monitor = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            shared.expire(timeout);
            show(&progress, shared);
        }
    };
    let work = async {
        match plan.scenario {
            Scenario::Burst { runs } => burst(plan, shared, connections, runs),
            Scenario::Steady {
                in_flight,
                rate,
                duration,
            } => steady(plan, shared, connections, in_flight, rate, duration).await,
            Scenario::Idle { hold } => tokio::time::sleep(hold).await,
        }
        wait_for_the_last_event(shared, timeout).await;
    };
    tokio::select! {
        () = work => {},
        () = monitor => {},
    }
    progress.finish();
}

fn show(progress: &Progress, shared: &Shared) {
    let events = shared.events.load(Ordering::Relaxed);
    let seconds = shared.base.elapsed().as_secs_f64();
    let p99 = shared.latencies.lock().summary().p99_ms;
    progress.set(
        shared.finished.load(Ordering::Relaxed),
        format!(
            "runs done · {} in flight · {events} events · p99 {p99:.1} ms · {:.0} s",
            shared.in_flight(),
            seconds
        ),
    );
}

fn start(plan: &LoadPlan, shared: &Shared, connections: &[Connection], k: u64) {
    let index = plan
        .layout
        .starter(usize::try_from(k).unwrap_or(usize::MAX));
    if let Some(connection) = connections.get(index) {
        shared.issued.fetch_add(1, Ordering::Relaxed);
        // A connection whose task stopped has already reported why (and failed the load).
        let _sent = connection.commands.send(Command::Start(format!("r{k}")));
    }
}

fn burst(plan: &LoadPlan, shared: &Shared, connections: &[Connection], runs: u64) {
    for k in 0..runs {
        start(plan, shared, connections, k);
    }
}

async fn steady(
    plan: &LoadPlan,
    shared: &Shared,
    connections: &[Connection],
    in_flight: u64,
    rate: f64,
    duration: Duration,
) {
    let began = tokio::time::Instant::now();
    for k in 0u64.. {
        let due = Duration::from_secs_f64(k as f64 / rate);
        if due >= duration || shared.has_failed() {
            return;
        }
        tokio::time::sleep_until(began + due).await;
        // The start waits for a slot; it is paced again from the time it was due.
        while shared.in_flight() >= in_flight && !shared.has_failed() {
            let _woken =
                tokio::time::timeout(Duration::from_millis(1), shared.progress.notified()).await;
        }
        start(plan, shared, connections, k);
    }
}

/// Waits until every run is over everywhere, a violation is found, or nothing has moved for
/// `timeout` (the verdict then names what is missing).
async fn wait_for_the_last_event(shared: &Shared, timeout: Duration) {
    let mut last_count = u64::MAX;
    let mut last_move = Instant::now();
    while !shared.has_failed() && !shared.all_delivered() {
        let count = shared.events.load(Ordering::Relaxed);
        if count != last_count {
            last_count = count;
            last_move = Instant::now();
        } else if last_move.elapsed() > timeout {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// CPU and machine readings at the start of the load phase.
pub struct LoadWindow {
    started: Instant,
    server: Option<(ProcessProbe, Duration)>,
    loadgen_cpu: Duration,
    machine: MachineTicks,
}

/// What the window measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Load-phase figures.
    pub load: LoadFigures,
    /// Wall time of the window, seconds.
    pub wall: f64,
    /// The server's CPU time in the window, seconds.
    pub server_cpu: f64,
    /// loadgen's CPU time in the window, seconds.
    pub loadgen_cpu: f64,
    /// The machine's busy share in the window.
    pub machine_busy: f64,
    /// The share the hypervisor stole in the window.
    pub machine_steal: f64,
    /// Cores' worth of busy time in the window that neither the server nor loadgen used
    /// (other processes, or kernel work charged to no process).
    pub other_cores: f64,
}

impl LoadWindow {
    /// Opens the window: reads the CPU clocks now.
    pub fn open(server: Option<&ProcessProbe>) -> Self {
        Self {
            started: Instant::now(),
            server: server.and_then(|p| Some((p.clone(), p.cpu_time().ok()?))),
            loadgen_cpu: ProcessProbe::new(None).cpu_time().unwrap_or_default(),
            machine: machine_ticks().unwrap_or_default(),
        }
    }

    /// Closes the window: reads the clocks again and computes the load figures. The load
    /// lasted until the last event arrived (the driver notices a little later).
    pub fn close(self, shared: &Shared) -> Measured {
        let server_cpu = self.server.as_ref().map_or(0.0, |(probe, before)| {
            let after = probe.cpu_time().unwrap_or(*before);
            after.saturating_sub(*before).as_secs_f64()
        });
        let loadgen_cpu = ProcessProbe::new(None).cpu_time().unwrap_or_default();
        let machine = machine_ticks().unwrap_or_default();
        let wall = self.started.elapsed().as_secs_f64();
        let since_start = |at: Instant| {
            at.checked_duration_since(self.started)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let seconds = since_start(shared.last_event());
        let events = shared.events.load(Ordering::Relaxed);
        let requested = shared.requested.load(Ordering::Relaxed);
        // A burst starts everything at once; its rate is that of handing out the requests.
        let start_phase = since_start(shared.last_request()).max(1e-3);
        let cores = machine.cores_since(&self.machine, wall);
        let machine_busy = machine.busy_since(&self.machine);
        let loadgen_cpu = loadgen_cpu.saturating_sub(self.loadgen_cpu).as_secs_f64();
        let other_cores = machine_busy * cores - (server_cpu + loadgen_cpu) / wall.max(1e-9);
        Measured {
            load: LoadFigures {
                seconds,
                runs_requested: requested,
                runs_finished: shared.finished.load(Ordering::Relaxed),
                start_rate: requested as f64 / start_phase,
                events,
                events_per_second: events as f64 / seconds.max(1e-9),
            },
            wall,
            server_cpu,
            loadgen_cpu,
            machine_busy,
            machine_steal: machine.steal_since(&self.machine),
            other_cores: if self.server.is_some() {
                other_cores.max(0.0)
            } else {
                0.0
            },
        }
    }
}

impl Measured {
    /// The server's figures: memory readings (KiB) and this window's CPU time.
    pub fn server_figures(
        &self,
        pid: u32,
        probe: &ProcessProbe,
        rss_kib: [u64; 3],
        connections: usize,
    ) -> ServerFigures {
        let [before, idle, after] = rss_kib;
        ServerFigures {
            pid,
            rss_before_kib: before,
            rss_idle_kib: idle,
            rss_per_connection_kib: idle.saturating_sub(before) as f64 / connections.max(1) as f64,
            rss_after_load_kib: after,
            cpu_seconds: self.server_cpu,
            cpu_cores: self.server_cpu / self.wall.max(1e-9),
            cpu_us_per_event: self.server_cpu * 1e6 / self.load.events.max(1) as f64,
            threads: probe.threads().unwrap_or(0),
        }
    }
}
