//! What a run of loadgen gave, what a scenario's runs gave, and the one line a run prints
//! as the bench goes.

use serde_json::Value;

use super::scenarios::{HISTORY, MULTI_NODE, Scenario, WIDE};

/// The names of a scenario's two runs: agent-server and the baseline, or, for the
/// multi-node scenarios, agent-server on one node and on two nodes sharing Redis.
pub fn labels(scenario: &Scenario) -> (&'static str, &'static str) {
    if scenario.group == MULTI_NODE {
        ("1 node", "2 nodes + Redis")
    } else if scenario.group == WIDE {
        ("nodes + Redis", "")
    } else if scenario.group == HISTORY {
        ("store off", "store on (SQLite)")
    } else {
        ("agent-server", "baseline")
    }
}

/// One run of loadgen against one server.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// loadgen's `--json` report, when it printed one.
    pub report: Option<Value>,
    /// Whether loadgen exited 0 (everything verified).
    pub ok: bool,
    /// Why it did not, when it said (its stderr's last line, or a start failure).
    pub error: Option<String>,
    /// The server's command line.
    pub server_command: String,
    /// loadgen's command line.
    pub loadgen_command: String,
}

/// A scenario's two runs.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// Against agent-server.
    pub server: Run,
    /// Against the baseline.
    pub baseline: Run,
    /// Against the floor (`loadgen floor-server`), for the scenarios that run there.
    pub floor: Option<Run>,
}

impl Outcome {
    /// The scenario's runs with their labels: the two of [`labels`], then the floor's (the
    /// wide run has one).
    pub(crate) fn runs(&self) -> Vec<(&'static str, &Run)> {
        let (first, second) = labels(&self.scenario);
        if self.scenario.group == WIDE {
            return vec![(first, &self.server)];
        }
        let mut runs = vec![(first, &self.server), (second, &self.baseline)];
        if let Some(floor) = &self.floor {
            runs.push(("floor", floor));
        }
        runs
    }
}

/// Prints a run's figures on one line, as the bench goes.
pub(crate) fn print_line(run: &Run) {
    if let Some(total) = run.report.as_ref().and_then(|r| r.get("total")) {
        let figure = |key: &str| {
            total
                .get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        println!(
            "  {}: {:.0} connections on {:.0} nodes, {:.0} events/s, worst p99 {:.2} ms, {:.1} KiB/connection{}",
            if run.ok { "verified" } else { "FAILED" },
            figure("connections"),
            figure("nodes"),
            figure("events_per_second"),
            figure("worst_p99_ms"),
            figure("rss_per_connection_kib"),
            run.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        return;
    }
    let figure = |pointer: &str| {
        run.report
            .as_ref()
            .and_then(|r| r.pointer(pointer))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let verdict = if run.ok { "verified" } else { "FAILED" };
    println!(
        "  {verdict}: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, server {:.1} µs/event, {:.1} KiB/connection{}",
        figure("/load/events_per_second"),
        figure("/latency_ms/p50_ms"),
        figure("/latency_ms/p99_ms"),
        figure("/server/cpu_us_per_event"),
        figure("/server/rss_per_connection_kib"),
        run.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
}
