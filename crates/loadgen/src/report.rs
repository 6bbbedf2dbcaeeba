//! The figures of one load run, as a plain-text table for people and one JSON object for
//! machines (`--json`; `cargo xtask bench` reads it), with the warnings that say when the box,
//! not the server, limited a figure.

use std::fmt::Write as _;

use serde::Serialize;

use crate::measure::{LatencySummary, LatencyWindow};
use crate::shape::Shape;

/// Every figure of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `burst`, `steady` or `idle`.
    pub scenario: String,
    /// The server's URL.
    pub url: String,
    /// Connections opened.
    pub connections: u64,
    /// Users they belong to.
    pub users: u64,
    /// The runs' shape.
    pub shape: Shape,
    /// Events one run delivers to each of its user's connections.
    pub events_per_run: u64,
    /// The connect phase.
    pub connect: ConnectFigures,
    /// The load phase.
    pub load: LoadFigures,
    /// Emit-to-client latency of every event delivered.
    pub latency_ms: LatencySummary,
    /// The same by windows of receive time (5 s each, from the first event received), so
    /// that a latency growing through the load shows.
    pub latency_windows: Vec<LatencyWindow>,
    /// The server, when `--server-pid` was given.
    pub server: Option<ServerFigures>,
    /// loadgen itself.
    pub loadgen: LoadgenFigures,
    /// The machine.
    pub machine: MachineFigures,
    /// What faults did to the load, with `--reconnect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultFigures>,
    /// Where the box, not the server, limited a figure (empty when nothing did).
    pub warnings: Vec<String>,
    /// Whether every frame, seq and run checked out.
    pub verified: bool,
    /// The violations found (the first 20), in words.
    pub violations: Vec<String>,
    /// How many violations there were in all.
    pub violation_count: u64,
}

/// What faults did to a load run with `--reconnect`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultFigures {
    /// Connections dropped by the server and resumed on another (or the same) node.
    pub reconnects: u64,
    /// Events those resumes replayed.
    pub replayed_events: u64,
    /// Requests lost unanswered with their connection (the client would send them again).
    pub lost_requests: u64,
    /// Requests the server refused with an error frame (explicitly: no run started).
    pub refused_requests: u64,
    /// Runs ended with `agent_error` `node_lost`, each delivered once to every connection
    /// of its user.
    pub node_lost_runs: u64,
    /// Deliveries of `node_lost` runs whose acceptance was lost with a connection.
    pub orphan_deliveries: u64,
    /// Resumes the server answered `failed` (explicitly: events not replayed), accepted
    /// with `--tolerate-failed-resumes`; without it each is a violation.
    pub failed_resumes: u64,
    /// (run, connection) deliveries written off after those failed resumes: counted, not
    /// checked.
    pub runs_written_off: u64,
    /// From a drop to the resumed connection: the median and the longest, milliseconds.
    pub recovery_ms_p50: f64,
    /// The longest.
    pub recovery_ms_max: f64,
}

impl std::fmt::Display for FaultFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reconnects resumed ({} events replayed, recovery p50 {:.0} ms, max {:.0} ms), \
             {} requests lost with their connection, {} refused, {} runs ended node_lost, \
             {} failed resumes ({} run deliveries written off)",
            self.reconnects,
            self.replayed_events,
            self.recovery_ms_p50,
            self.recovery_ms_max,
            self.lost_requests,
            self.refused_requests,
            self.node_lost_runs,
            self.failed_resumes,
            self.runs_written_off
        )
    }
}

/// How fast connections opened.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ConnectFigures {
    /// Wall time to open all of them, greetings included.
    pub seconds: f64,
    /// Connections per second.
    pub per_second: f64,
    /// Opened at once at most.
    pub concurrency: u64,
    /// The slowest connection, upgrade and greeting included (a second or more is a SYN
    /// retransmit: the listen backlog overflowed).
    pub slowest_ms: f64,
    /// SYNs and handshakes the kernel dropped in the connect phase because a listen queue was
    /// full (`ListenOverflows`; the whole machine's, so another listener's count too).
    pub listen_overflows: u64,
}

/// What the load phase did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadFigures {
    /// From the first start to the last event received.
    pub seconds: f64,
    /// `start_agent` frames sent.
    pub runs_requested: u64,
    /// Runs whose terminal event reached the connection that started them.
    pub runs_finished: u64,
    /// Runs started per second over the start phase.
    pub start_rate: f64,
    /// Events received, on all connections.
    pub events: u64,
    /// Events received per second.
    pub events_per_second: f64,
}

/// What `/proc` says about the server.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerFigures {
    /// Its process id.
    pub pid: u32,
    /// Resident memory before the connections, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with the connections open and idle, KiB.
    pub rss_idle_kib: u64,
    /// (idle − before) / connections, KiB.
    pub rss_per_connection_kib: f64,
    /// Resident memory after the load, KiB.
    pub rss_after_load_kib: u64,
    /// CPU time (user + system) during the load phase.
    pub cpu_seconds: f64,
    /// CPU time / wall time: cores the server kept busy.
    pub cpu_cores: f64,
    /// CPU time per event delivered, microseconds.
    pub cpu_us_per_event: f64,
    /// Its threads.
    pub threads: u64,
}

/// What loadgen cost itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadgenFigures {
    /// Runtime threads.
    pub threads: u64,
    /// CPU time during the load phase.
    pub cpu_seconds: f64,
    /// CPU time / wall time / threads (1.0: every thread busy all the time).
    pub cpu_per_thread: f64,
    /// Its resident memory at the end, KiB.
    pub rss_kib: u64,
    /// The open-file limit in force (soft, after raising it to the hard one).
    pub nofile_soft: u64,
    /// The hard open-file limit.
    pub nofile_hard: u64,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MachineFigures {
    /// CPU model, cores, kernel.
    pub description: String,
    /// Share of all cores busy during the load phase (0.0 to 1.0).
    pub cpu_busy: f64,
    /// Share of all cores the hypervisor stole during the load phase.
    pub cpu_steal: f64,
    /// Cores busy during the load phase with work of neither the server nor loadgen.
    pub other_cores: f64,
}

/// A row of the table.
fn row(out: &mut String, label: &str, value: String) {
    let _ = writeln!(out, "  {label:<38} {value}");
}

impl Report {
    /// The plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadgen {} against {}: {} connections of {} users, shape {} ({} events a run)",
            self.scenario,
            self.url,
            self.connections,
            self.users,
            self.shape.to_json(),
            self.events_per_run
        );
        let c = &self.connect;
        row(
            &mut out,
            "connect",
            format!(
                "{:.1} s, {:.0} connections/s ({} at once)",
                c.seconds, c.per_second, c.concurrency
            ),
        );
        if self.load.runs_requested > 0 {
            self.load_rows(&mut out);
        }
        if let Some(s) = &self.server {
            self.server_rows(&mut out, s);
        }
        if let Some(f) = &self.faults {
            row(&mut out, "faults", f.to_string());
        }
        let g = &self.loadgen;
        row(
            &mut out,
            "loadgen CPU",
            format!(
                "{:.2} s ({:.0}% of its {} thread(s)), RSS {:.1} MiB",
                g.cpu_seconds,
                g.cpu_per_thread * 100.0,
                g.threads,
                g.rss_kib as f64 / 1024.0
            ),
        );
        row(
            &mut out,
            "open-file limit (soft / hard)",
            format!("{} / {}", g.nofile_soft, g.nofile_hard),
        );
        row(
            &mut out,
            "machine",
            format!(
                "{} ({:.0}% busy during the load)",
                self.machine.description,
                self.machine.cpu_busy * 100.0
            ),
        );
        for warning in &self.warnings {
            let _ = writeln!(out, "WARNING: {warning}");
        }
        if self.verified {
            let _ = writeln!(
                out,
                "verified: every frame its user's, seq contiguous, every run complete"
            );
        } else {
            let _ = writeln!(
                out,
                "FAILED: {} violation(s); the first:",
                self.violation_count
            );
            for violation in &self.violations {
                let _ = writeln!(out, "  {violation}");
            }
        }
        out
    }

    fn load_rows(&self, out: &mut String) {
        let l = &self.load;
        row(
            out,
            "runs requested / finished",
            format!(
                "{} / {} ({:.0} starts/s)",
                l.runs_requested, l.runs_finished, l.start_rate
            ),
        );
        row(
            out,
            "events delivered",
            format!(
                "{} in {:.2} s = {:.0} events/s",
                l.events, l.seconds, l.events_per_second
            ),
        );
        let t = &self.latency_ms;
        row(
            out,
            "latency p50 / p90 / p99 / p99.9 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms",
                t.p50_ms, t.p90_ms, t.p99_ms, t.p999_ms, t.max_ms
            ),
        );
        if self.latency_windows.len() > 1 {
            let by_window: Vec<String> = self
                .latency_windows
                .iter()
                .map(|w| format!("{}s {:.2}/{:.2}", w.from_s, w.p50_ms, w.p99_ms))
                .collect();
            row(out, "latency p50/p99 (ms) by 5 s", by_window.join(" · "));
        }
    }

    fn server_rows(&self, out: &mut String, s: &ServerFigures) {
        row(
            out,
            "server RSS before / idle / after",
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                s.rss_before_kib as f64 / 1024.0,
                s.rss_idle_kib as f64 / 1024.0,
                s.rss_after_load_kib as f64 / 1024.0
            ),
        );
        row(
            out,
            "server RSS per idle connection",
            format!("{:.1} KiB", s.rss_per_connection_kib),
        );
        if self.load.runs_requested > 0 {
            row(
                out,
                "server CPU",
                format!(
                    "{:.2} s ({:.2} cores), {:.1} µs per delivered event",
                    s.cpu_seconds, s.cpu_cores, s.cpu_us_per_event
                ),
            );
        }
    }

    /// The JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// How coarse the kernel's CPU times are: `/proc/<pid>/stat` counts clock ticks.
pub fn cpu_resolution() -> f64 {
    1.0 / rustix::param::clock_ticks_per_second().max(1) as f64
}

/// What the box-limit warnings look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoxReadings {
    /// Connections opened.
    pub connections: u64,
    /// The open-file limit in force.
    pub nofile_soft: u64,
    /// loadgen's CPU per thread in the load phase (`None`: no load phase worth judging).
    pub loadgen_per_thread: Option<f64>,
    /// The server's CPU seconds in the load phase (`None`: not measured).
    pub server_cpu: Option<f64>,
    /// Share of the cores stolen by the hypervisor.
    pub steal: f64,
    /// Cores of other work.
    pub other_cores: f64,
    /// Listen queue overflows while connecting.
    pub listen_overflows: u64,
}

/// The warnings that say when the box, not the server, limited a figure.
pub fn box_warnings(r: &BoxReadings) -> Vec<String> {
    let mut warnings = Vec::new();
    // A few descriptors go to stdio, the runtime and /proc reads.
    if r.nofile_soft < r.connections + 32 {
        warnings.push(format!(
            "the open-file limit ({}) is below {} connections plus a margin: the box, not the \
             server, limits how many sockets this process can open (raise `ulimit -n`)",
            r.nofile_soft, r.connections
        ));
    }
    if let Some(busy) = r.loadgen_per_thread.filter(|&b| b >= 0.9) {
        warnings.push(format!(
            "loadgen kept its thread(s) {:.0}% busy: the client, not the server, may have limited \
             events/s and added latency (give it more --threads, or a core of its own)",
            busy * 100.0
        ));
    }
    if r.steal >= 0.05 {
        warnings.push(format!(
            "the hypervisor took {:.0}% of the cores during the load (steal): the box had less CPU \
             than it shows",
            r.steal * 100.0
        ));
    }
    if r.other_cores >= 0.15 {
        warnings.push(format!(
            "{:.2} cores were busy with work of neither the server nor loadgen during the load \
             (other processes on the box): the figures are disturbed",
            r.other_cores
        ));
    }
    if r.listen_overflows > 0 {
        warnings.push(format!(
            "{} connection attempts overflowed a listen queue and waited for a SYN retransmit \
             (1 s or more): the connect rate is limited by the server's listen backlog, not by \
             its work (lower --connect-concurrency to measure the latter)",
            r.listen_overflows
        ));
    }
    let tick = cpu_resolution();
    if let Some(cpu) = r.server_cpu.filter(|&c| c < 50.0 * tick) {
        warnings.push(format!(
            "the server used {:.0} ms of CPU, counted in {:.0} ms clock ticks: its CPU per event \
             is coarse (±{:.0}%); load longer for a precise figure",
            cpu * 1e3,
            tick * 1e3,
            (tick / cpu.max(tick)) * 100.0
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_name_the_box_limit() {
        let calm = BoxReadings {
            connections: 1_000,
            nofile_soft: 20_000,
            loadgen_per_thread: Some(0.4),
            server_cpu: Some(5.0),
            ..BoxReadings::default()
        };
        let check = |readings: BoxReadings, expected: &[&str]| {
            let got = box_warnings(&readings);
            assert_eq!(got.len(), expected.len(), "{got:?}");
            for (warning, fragment) in got.iter().zip(expected) {
                assert!(warning.contains(fragment), "{warning:?} lacks {fragment:?}");
            }
        };
        check(calm, &[]);
        check(
            BoxReadings {
                connections: 19_990,
                ..calm
            },
            &["open-file limit (20000)"],
        );
        check(
            BoxReadings {
                loadgen_per_thread: Some(0.95),
                ..calm
            },
            &["95% busy"],
        );
        check(
            BoxReadings {
                loadgen_per_thread: None,
                ..calm
            },
            &[],
        );
        check(
            BoxReadings { steal: 0.2, ..calm },
            &["took 20% of the cores"],
        );
        check(
            BoxReadings {
                other_cores: 0.9,
                ..calm
            },
            &["0.90 cores were busy"],
        );
        check(
            BoxReadings {
                listen_overflows: 412,
                ..calm
            },
            &["412 connection attempts"],
        );
        check(
            BoxReadings {
                server_cpu: Some(0.05),
                ..calm
            },
            &["the server used 50 ms of CPU"],
        );
    }
}
