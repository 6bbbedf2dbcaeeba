//! `docs/benchmarks.md` from loadgen's JSON reports: the table (agent-server, the baseline,
//! and their ratio per figure), the scaling summary, the box-limit warnings, the verdicts,
//! the machine, and the commands to reproduce every run.

use std::fmt::Write as _;

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

/// A figure of the table: its label, where it is in the report, and how to print it.
struct Figure {
    label: &'static str,
    pointer: &'static str,
    scale: f64,
    decimals: usize,
}

const fn figure(label: &'static str, pointer: &'static str, scale: f64, decimals: usize) -> Figure {
    Figure {
        label,
        pointer,
        scale,
        decimals,
    }
}

/// The figures of a load scenario.
const LOAD_FIGURES: &[Figure] = &[
    figure("events/s delivered", "/load/events_per_second", 1.0, 0),
    figure("latency p50 (ms)", "/latency_ms/p50_ms", 1.0, 2),
    figure("latency p90 (ms)", "/latency_ms/p90_ms", 1.0, 2),
    figure("latency p99 (ms)", "/latency_ms/p99_ms", 1.0, 2),
    figure("latency p99.9 (ms)", "/latency_ms/p999_ms", 1.0, 2),
    figure("latency max (ms)", "/latency_ms/max_ms", 1.0, 2),
    figure(
        "server CPU per event (µs)",
        "/server/cpu_us_per_event",
        1.0,
        1,
    ),
    figure("server CPU (cores)", "/server/cpu_cores", 1.0, 2),
    figure(
        "server RSS per idle connection (KiB)",
        "/server/rss_per_connection_kib",
        1.0,
        1,
    ),
    figure("connects/s", "/connect/per_second", 1.0, 0),
    figure(
        "loadgen busy (% of its thread)",
        "/loadgen/cpu_per_thread",
        100.0,
        0,
    ),
    figure(
        "machine busy (% of all cores)",
        "/machine/cpu_busy",
        100.0,
        0,
    ),
];

/// The history store's own figures, in a store-on run's report (see `bench/history.rs`).
const STORE_FIGURES: &[Figure] = &[
    figure(
        "history complete (s after the load)",
        "/history/caught_up_s",
        1.0,
        2,
    ),
    figure(
        "store threads' CPU per event, load and catch-up (µs)",
        "/history/store_cpu_us_per_event",
        1.0,
        1,
    ),
];

/// The figures of an idle scenario.
const IDLE_FIGURES: &[Figure] = &[
    figure(
        "server RSS per idle connection (KiB)",
        "/server/rss_per_connection_kib",
        1.0,
        1,
    ),
    figure(
        "server RSS idle (MiB)",
        "/server/rss_idle_kib",
        1.0 / 1024.0,
        1,
    ),
    figure("connects/s", "/connect/per_second", 1.0, 0),
    figure("slowest connect (ms)", "/connect/slowest_ms", 1.0, 0),
    figure(
        "listen queue overflows",
        "/connect/listen_overflows",
        1.0,
        0,
    ),
];

fn value(run: &Run, f: &Figure) -> Option<f64> {
    Some(run.report.as_ref()?.pointer(f.pointer)?.as_f64()? * f.scale)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// The whole document. `machine` describes the box; `quick` marks a `--quick` run.
pub fn render(outcomes: &[Outcome], machine: &str, date: &str, quick: bool) -> String {
    let mut out = String::new();
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{command}` on {date}. Every figure below is measured, none is edited by hand; \
         run the command again to refresh them.\n"
    );
    let _ = writeln!(out, "**Machine:** {machine}.\n");
    let _ = writeln!(
        out,
        "**How:** release builds. For each scenario a fresh server process starts (agent-server, then \
         the bare baseline: `loadgen baseline-server`, the same axum/tokio-tungstenite stack, buffers, \
         TCP_NODELAY, authentication and frames, with no engine and no bridge), then `loadgen` loads \
         it from its own process on the same cores (one thread; 100 connects at once, below the \
         listen backlog of 128 that both servers get from tokio) and reads the server's `/proc`. \
         Latency is emit-to-client: the client's receive time minus the event's `timestamp` (the \
         server's emit time, same clock), so it includes the client's own queueing. Server CPU is \
         utime + stime over the load phase (in 10 ms clock ticks) divided by the events delivered. RSS per connection is \
         (RSS with the connections open and idle − RSS before) / connections. Every run verifies \
         every frame (its user's, `seq` contiguous, each run's lifecycle whole, 17 events a run).\n"
    );
    table(&mut out, outcomes);
    floor(&mut out, outcomes);
    scaling(&mut out, outcomes);
    history(&mut out, outcomes);
    multi_node(&mut out, outcomes);
    super::wide::section(&mut out, outcomes);
    notes(&mut out, outcomes);
    reproduce(&mut out, outcomes, command);
    out
}

fn table(out: &mut String, outcomes: &[Outcome]) {
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(
        out,
        "| scenario | figure | agent-server | baseline | agent-server / baseline |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for outcome in outcomes
        .iter()
        .filter(|o| ![MULTI_NODE, HISTORY, WIDE].contains(&o.scenario.group))
    {
        let figures = if outcome.scenario.group == "idle" {
            IDLE_FIGURES
        } else {
            LOAD_FIGURES
        };
        for (i, f) in figures.iter().enumerate() {
            let name = if i == 0 {
                format!("**{}**: {}", outcome.scenario.name, outcome.scenario.what)
            } else {
                String::new()
            };
            let (a, b) = (value(&outcome.server, f), value(&outcome.baseline, f));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                f.label,
                cell(a, f.decimals),
                cell(b, f.decimals),
                ratio(a, b)
            );
        }
    }
    let _ = writeln!(out);
}

/// The server and the baseline against the floor: what each costs per event above the least
/// a server on this box can do.
fn floor(out: &mut String, outcomes: &[Outcome]) {
    let runs: Vec<(&Outcome, &Run)> = outcomes
        .iter()
        .filter_map(|o| Some((o, o.floor.as_ref()?)))
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(out, "## The floor\n");
    let _ = writeln!(
        out,
        "The same loads on `loadgen floor-server`: the least a server on this box can do per \
         event. It greets, authenticates and answers like the baseline and sends the same \
         frames, but with no framework: the upgrade read and answered by hand, each event \
         serialized once straight behind its WebSocket frame header and written to each \
         connection of its user with one `write`, from the task that emitted it (no queue, no \
         task switch, no copy). The target is agent-server at most 1.5× the floor's server CPU \
         per event.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | figure | agent-server | baseline | floor | agent-server / floor | baseline / floor |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (outcome, floor) in runs {
        for (i, f) in [0, 1, 3, 6, 7].map(|i| &LOAD_FIGURES[i]).iter().enumerate() {
            let name = if i == 0 {
                format!("**{}**: {}", outcome.scenario.name, outcome.scenario.what)
            } else {
                String::new()
            };
            let (a, b, c) = (
                value(&outcome.server, f),
                value(&outcome.baseline, f),
                value(floor, f),
            );
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                f.label,
                cell(a, f.decimals),
                cell(b, f.decimals),
                cell(c, f.decimals),
                ratio(a, c),
                ratio(b, c)
            );
        }
    }
    let _ = writeln!(out);
}

fn scaling(out: &mut String, outcomes: &[Outcome]) {
    let runs: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.scenario.group == "scaling")
        .collect();
    let (Some(small), Some(large)) = (runs.first(), runs.last()) else {
        return;
    };
    if runs.len() < 2 {
        return;
    }
    let p99 = &LOAD_FIGURES[3];
    let _ = writeln!(out, "## Scaling\n");
    let _ = writeln!(
        out,
        "The same steady load with more idle connections beside it: p99 latency at {} vs {}.\n",
        small.scenario.name, large.scenario.name
    );
    let _ = writeln!(
        out,
        "| server | p99 at {} (ms) | p99 at {} (ms) | ratio |",
        small.scenario.name, large.scenario.name
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (label, pick) in [("agent-server", 0), ("baseline", 1)] {
        let get = |o: &Outcome| value(if pick == 0 { &o.server } else { &o.baseline }, p99);
        let (a, b) = (get(small), get(large));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            cell(a, 2),
            cell(b, 2),
            ratio(b, a)
        );
    }
    let _ = writeln!(out);
}

/// The cost of the history store: the same loads with no store and with SQLite.
fn history(out: &mut String, outcomes: &[Outcome]) {
    paired_section(
        out,
        outcomes,
        HISTORY,
        "History store",
        "The burst and the steady load with no history (`--store none`, as in every other \
         agent-server run above) and with the SQLite store on (`--store sqlite://…`, a fresh \
         file): every run recorded when it starts and every event as it is emitted, written by \
         the batching writer on its own thread at the lowest priority (nice 19), so under a full \
         load the live stream goes first and the history catches up after. Each side ran 3 \
         times, in turns; each column is its median run by events/s (one run varies by about \
         ±10% here). Server CPU is the load phase's, the writer's and SQLite's threads \
         included; the last two rows are the store's alone: when, after the load, its threads \
         went idle (the history complete), and their CPU over the whole run per event. A \
         store-on run whose server logged dropped history writes counts as failed. The target \
         is at most 10% fewer events/s with the store on.",
        &LOAD_FIGURES[..8]
            .iter()
            .chain(STORE_FIGURES)
            .collect::<Vec<_>>(),
    );
}

/// Delivery figures only: loadgen reads one server process's `/proc`, which on two nodes is
/// half the server side.
fn multi_node(out: &mut String, outcomes: &[Outcome]) {
    paired_section(
        out,
        outcomes,
        MULTI_NODE,
        "Many nodes (Redis)",
        "The same loads on one agent-server node (in-process broker) and on two nodes sharing a \
         private Redis (`--broker redis://…`), on the same 2 cores (Redis, both nodes and loadgen \
         share them). Every user has two connections; on two nodes they sit on different nodes, \
         and a user's runs start on either in turn, so every event is published once to Redis \
         and reaches one connection on the node that ran it and one on the other node. Latency \
         is emit-to-client as above, so on two nodes it includes the trip through Redis.",
        &LOAD_FIGURES[..6].iter().collect::<Vec<_>>(),
    );
}

/// A section comparing a group's two runs of each scenario (named by [`labels`]): the
/// `figures`, and the second run's ratio to the first.
fn paired_section(
    out: &mut String,
    outcomes: &[Outcome],
    group: &str,
    title: &str,
    intro: &str,
    figures: &[&Figure],
) {
    let runs: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.scenario.group == group)
        .collect();
    let Some(first) = runs.first() else {
        return;
    };
    let (a_label, b_label) = labels(&first.scenario);
    let _ = writeln!(out, "## {title}\n\n{intro}\n");
    let _ = writeln!(
        out,
        "| scenario | figure | {a_label} | {b_label} | {b_label} / {a_label} |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for outcome in runs {
        for (i, f) in figures.iter().enumerate() {
            let name = if i == 0 {
                format!("**{}**: {}", outcome.scenario.name, outcome.scenario.what)
            } else {
                String::new()
            };
            let (a, b) = (value(&outcome.server, f), value(&outcome.baseline, f));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                f.label,
                cell(a, f.decimals),
                cell(b, f.decimals),
                ratio(b, a)
            );
        }
    }
    let _ = writeln!(out);
}

fn notes(out: &mut String, outcomes: &[Outcome]) {
    let _ = writeln!(out, "## Where the box limited a figure\n");
    let mut any = false;
    for outcome in outcomes {
        for (label, run) in outcome.runs() {
            let warnings = run
                .report
                .as_ref()
                .and_then(|r| r.get("warnings"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for w in warnings.iter().filter_map(Value::as_str) {
                any = true;
                let _ = writeln!(out, "- {} on {label}: {w}", outcome.scenario.name);
            }
        }
    }
    if !any {
        let _ = writeln!(
            out,
            "Nothing: no open-file limit or loadgen CPU warning in any run."
        );
    }
    let _ = writeln!(out, "\n## Verification\n");
    let mut failed = false;
    for outcome in outcomes {
        for (label, run) in outcome.runs() {
            if !run.ok {
                failed = true;
                let why = run.error.clone().unwrap_or_else(|| "see its report".into());
                let _ = writeln!(
                    out,
                    "- **FAILED** {} on {label}: {why}",
                    outcome.scenario.name
                );
            }
        }
    }
    if !failed {
        let _ = writeln!(
            out,
            "Every run verified: every frame was its user's, `seq` was contiguous on every \
             connection, and every run delivered its whole lifecycle to every connection of its user."
        );
    }
    let _ = writeln!(out);
}

fn reproduce(out: &mut String, outcomes: &[Outcome], command: &str) {
    let _ = writeln!(out, "## Reproduce\n");
    let _ = writeln!(
        out,
        "`{command}` builds `agent-server` and `loadgen` in release mode and runs everything above \
         (`--quick` for a one-minute version, `--only NAME,...` for some scenarios). By hand, each \
         run is a server started in the background (it prints its address, `$ADDR`; `$SERVER_PID` \
         is its pid, `$!`) and loadgen against it:\n"
    );
    let _ = writeln!(out, "```sh");
    for outcome in outcomes {
        for (_, run) in outcome.runs() {
            let _ = writeln!(out, "{} &", run.server_command);
            let _ = writeln!(out, "{}", run.loadgen_command);
        }
    }
    let _ = writeln!(out, "```");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::scenarios::scenarios;

    fn run(events_per_second: f64, p99: f64, warnings: &[&str]) -> Run {
        Run {
            report: Some(json!({
                "load": {"events_per_second": events_per_second},
                "latency_ms": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99, "p999_ms": 9.0, "max_ms": 10.0},
                "server": {"cpu_us_per_event": 30.0, "cpu_cores": 1.5, "rss_per_connection_kib": 12.5, "rss_idle_kib": 20480},
                "connect": {"per_second": 3000.0},
                "loadgen": {"cpu_per_thread": 0.5},
                "machine": {"cpu_busy": 0.97},
                "warnings": warnings,
            })),
            ok: true,
            error: None,
            server_command: "agent-server serve".into(),
            loadgen_command: "loadgen burst".into(),
        }
    }

    #[test]
    fn the_document_has_every_figure_with_its_ratio() {
        let all = scenarios(false);
        let outcomes: Vec<Outcome> = all
            .iter()
            .map(|s| Outcome {
                scenario: s.clone(),
                server: run(30_000.0, 600.0, &["the machine's cores were 97% busy"]),
                baseline: run(60_000.0, 200.0, &[]),
                floor: crate::bench::scenarios::has_floor(s).then(|| run(40_000.0, 100.0, &[])),
            })
            .collect();
        let doc = render(&outcomes, "AMD EPYC, 2 cores", "2026-11-25", false);
        assert!(doc.contains("| **burst**: 5,000 users × 1 connection, 10,000 runs at once | events/s delivered | 30000 | 60000 | 0.50× |"), "{doc}");
        assert!(doc.contains("|  | latency p99 (ms) | 600.00 | 200.00 | 3.00× |"));
        assert!(doc.contains("| **idle-19k**: 19,000 idle connections | server RSS per idle connection (KiB) | 12.5 | 12.5 | 1.00× |"));
        assert!(
            doc.contains("| agent-server | 600.00 | 600.00 | 1.00× |"),
            "scaling table"
        );
        assert!(doc.contains("- burst on agent-server: the machine's cores were 97% busy"));
        assert!(doc.contains("Every run verified"));
        assert!(doc.contains("**Machine:** AMD EPYC, 2 cores."));
        assert!(doc.contains("## The floor"), "{doc}");
        assert!(doc.contains("| **steady**: 10,000 connections, 1,000 runs in flight, started steadily for 20 s | events/s delivered | 30000 | 60000 | 40000 | 0.75× | 1.50× |"), "{doc}");
        assert!(doc.contains("|  | latency p99 (ms) | 600.00 | 200.00 | 100.00 | 6.00× | 2.00× |"));
        assert_eq!(
            doc.matches("| **burst**:").count(),
            2,
            "the results table and the floor's"
        );
        assert_eq!(
            doc.matches("| **light**:").count(),
            1,
            "light runs on no floor"
        );
    }

    #[test]
    fn failures_and_missing_figures_show() {
        let mut failed = run(1.0, 1.0, &[]);
        failed.ok = false;
        failed.error = Some("connection 3: seq 9 where 8 was due".into());
        failed.report = None;
        let outcome = Outcome {
            scenario: scenarios(true)[0].clone(),
            server: failed,
            baseline: run(2.0, 1.0, &[]),
            floor: Some(Run {
                ok: false,
                error: Some("connection 1: closed".into()),
                ..run(3.0, 1.0, &[])
            }),
        };
        let doc = render(&[outcome], "m", "d", true);
        assert!(
            doc.contains("- **FAILED** burst on agent-server: connection 3: seq 9 where 8 was due")
        );
        assert!(doc.contains("| events/s delivered | – | 2 | – |"), "{doc}");
        assert!(doc.contains("cargo xtask bench --quick"));
        assert!(
            doc.contains("- **FAILED** burst on floor: connection 1: closed"),
            "{doc}"
        );
    }
}
