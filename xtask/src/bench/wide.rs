//! The widest run: more connections than one process may open (20,000 open files here), on
//! one box. A private Redis, `scenario.nodes` agent-server nodes on it, and one loadgen per
//! node loading only that node's users, all at once; while they run, every node's resident
//! memory is read each second, so the document shows whether it stays flat once the replay
//! logs reach their bound.
//!
//! The run's report is one JSON object: each node's loadgen report under `nodes`, the sums
//! and worst cases under `total`, and the nodes' memory over time under `rss_samples`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster;
use super::outcome::{Outcome, Run};
use super::scenarios::{Scenario, WIDE};
use super::{Binaries, SECRET, shell_line};

/// Starts Redis and the nodes, runs one loadgen per node at once, stops everything.
pub(crate) fn run(binaries: &Binaries, scenario: &Scenario, log_dir: &Path) -> Run {
    cluster::with_nodes(binaries, scenario, log_dir, |nodes, _, run| {
        load_all(binaries, scenario, &nodes.addrs(), &nodes.pids(), run);
    })
}

/// loadgen's arguments for node `n` (from 1) at `addr` with pid `pid`.
fn loadgen_args(scenario: &Scenario, n: usize, addr: &str, pid: u32) -> Vec<String> {
    let mut args = scenario.loadgen.clone();
    args.extend([
        "--url".into(),
        format!("ws://{addr}/ws"),
        "--user-prefix".into(),
        format!("n{n}"),
        "--jwt-secret".into(),
        SECRET.into(),
        "--server-pid".into(),
        pid.to_string(),
        "--json".into(),
        "--no-progress".into(),
    ]);
    args
}

/// Runs one loadgen per node at once while sampling the nodes' memory; fills `run`.
fn load_all(
    binaries: &Binaries,
    scenario: &Scenario,
    addrs: &[String],
    pids: &[u32],
    run: &mut Run,
) {
    let first = loadgen_args(scenario, 1, &addrs[0], pids[0]);
    run.loadgen_command = format!(
        "{} (one per node, each with its node's $ADDR<n>, --user-prefix n<n> and $SERVER_PID<n>, all at once)",
        shell_line(&binaries.loadgen, &first)
            .replace(&addrs[0], "$ADDR1")
            .replace(
                &format!("--server-pid {}", pids[0]),
                "--server-pid $SERVER_PID1"
            )
    );
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples, pids) = (Arc::clone(&stop), Arc::clone(&samples), pids.to_vec());
        std::thread::spawn(move || sample(&pids, &stop, &samples))
    };
    let mut children = Vec::new();
    for (i, (addr, pid)) in addrs.iter().zip(pids).enumerate() {
        let spawned = Command::new(&binaries.loadgen)
            .args(loadgen_args(scenario, i + 1, addr, *pid))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => run.error = Some(format!("cannot start loadgen: {e}")),
        }
    }
    let mut reports = Vec::new();
    let mut ok = run.error.is_none();
    for (i, child) in children.into_iter().enumerate() {
        match child.wait_with_output() {
            Ok(output) => {
                ok &= output.status.success();
                if !output.status.success() && run.error.is_none() {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    let why = stderr
                        .lines()
                        .rfind(|l| l.starts_with("loadgen:"))
                        .unwrap_or("loadgen failed without a message");
                    run.error = Some(format!("node {}: {why}", i + 1));
                }
                reports.push(serde_json::from_slice(&output.stdout).unwrap_or(Value::Null));
            }
            Err(e) => {
                ok = false;
                run.error = Some(format!("loadgen for node {}: {e}", i + 1));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _joined = sampler.join();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    run.ok = ok && reports.len() == addrs.len();
    run.report = Some(report(&reports, &samples));
}

/// Every second until `stop`: the seconds since the start and each node's RSS in KiB.
fn sample(pids: &[u32], stop: &AtomicBool, samples: &Mutex<Vec<(f64, Vec<u64>)>>) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let rss = pids.iter().map(|pid| rss_kib(*pid).unwrap_or(0)).collect();
        if let Ok(mut samples) = samples.lock() {
            samples.push((start.elapsed().as_secs_f64(), rss));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The run's report: the nodes' reports, their totals, and the memory samples.
pub(crate) fn report(nodes: &[Value], samples: &[(f64, Vec<u64>)]) -> Value {
    let sum = |pointer: &str| -> f64 {
        nodes
            .iter()
            .filter_map(|r| r.pointer(pointer).and_then(Value::as_f64))
            .sum()
    };
    let worst = |pointer: &str| -> f64 {
        nodes
            .iter()
            .filter_map(|r| r.pointer(pointer).and_then(Value::as_f64))
            .fold(0.0, f64::max)
    };
    let connections = sum("/connections");
    let grown_kib = sum("/server/rss_idle_kib") - sum("/server/rss_before_kib");
    let per_connection = if connections > 0.0 {
        grown_kib / connections
    } else {
        0.0
    };
    let totals: Vec<(f64, u64)> = samples
        .iter()
        .map(|(t, rss)| (*t, rss.iter().sum()))
        .collect();
    json!({
        "nodes": nodes,
        "total": {
            "nodes": nodes.len(),
            "connections": connections,
            "events": sum("/load/events"),
            "events_per_second": sum("/load/events_per_second"),
            "connects_per_second": sum("/connect/per_second"),
            "rss_idle_mib": sum("/server/rss_idle_kib") / 1024.0,
            "rss_after_load_mib": sum("/server/rss_after_load_kib") / 1024.0,
            "rss_per_connection_kib": per_connection,
            "worst_rss_per_connection_kib": worst("/server/rss_per_connection_kib"),
            "worst_p50_ms": worst("/latency_ms/p50_ms"),
            "worst_p99_ms": worst("/latency_ms/p99_ms"),
            "worst_max_ms": worst("/latency_ms/max_ms"),
            "cpu_us_per_event": if sum("/load/events") > 0.0 {
                sum("/server/cpu_seconds") * 1e6 / sum("/load/events")
            } else { 0.0 },
        },
        "rss_samples": totals.iter().map(|(t, kib)| json!([t, *kib as f64 / 1024.0])).collect::<Vec<_>>(),
    })
}

/// The document's section on the wide run: the totals, each node, and the memory over time.
pub(crate) fn section(out: &mut String, outcomes: &[Outcome]) {
    for outcome in outcomes.iter().filter(|o| o.scenario.group == WIDE) {
        let Some(report) = &outcome.server.report else {
            continue;
        };
        let _ = writeln!(out, "## {} connections on one box\n", outcome.scenario.name);
        let _ = writeln!(
            out,
            "**{}**: {}. One process may hold at most 20,000 open files here, so each node holds \
             its share and is loaded by its own loadgen (its users connect only to it), all at \
             once; each event still goes through Redis. Memory per connection is each node's \
             (RSS with its connections open and idle − RSS before) summed over the nodes, \
             divided by all connections; latency is the worst node's. Every loadgen verifies \
             every frame of its connections. The target is at most 8 KiB per connection in \
             the nodes.\n",
            outcome.scenario.name, outcome.scenario.what
        );
        totals(out, &report["total"], outcome.server.ok);
        nodes(out, report);
        memory(out, report);
        let _ = writeln!(out);
    }
}

fn get(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn show(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn totals(out: &mut String, total: &Value, verified: bool) {
    let _ = writeln!(out, "| figure | all nodes |\n|---|---:|");
    for (label, key, decimals) in [
        ("connections", "connections", 0),
        ("nodes", "nodes", 0),
        (
            "server RSS per idle connection (KiB)",
            "rss_per_connection_kib",
            1,
        ),
        (
            "worst node's RSS per idle connection (KiB)",
            "worst_rss_per_connection_kib",
            1,
        ),
        (
            "nodes' RSS with the connections idle (MiB)",
            "rss_idle_mib",
            1,
        ),
        ("nodes' RSS after the load (MiB)", "rss_after_load_mib", 1),
        (
            "connects/s (the loadgens' sum, connecting at once)",
            "connects_per_second",
            0,
        ),
        ("events delivered", "events", 0),
        ("events/s delivered", "events_per_second", 0),
        ("latency p50, worst node (ms)", "worst_p50_ms", 2),
        ("latency p99, worst node (ms)", "worst_p99_ms", 2),
        ("latency max, worst node (ms)", "worst_max_ms", 2),
        (
            "server CPU per event, all nodes (µs)",
            "cpu_us_per_event",
            1,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} |",
            show(get(total, &format!("/{key}")), decimals)
        );
    }
    let verdict = if verified { "yes" } else { "**no**" };
    let _ = writeln!(out, "| every frame verified | {verdict} |\n");
}

fn nodes(out: &mut String, report: &Value) {
    let _ = writeln!(
        out,
        "| node | connections | RSS per idle connection (KiB) | RSS after the load (MiB) | events/s | p50 (ms) | p99 (ms) |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, node) in report["nodes"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            show(get(node, "/connections"), 0),
            show(get(node, "/server/rss_per_connection_kib"), 1),
            show(
                get(node, "/server/rss_after_load_kib").map(|k| k / 1024.0),
                1
            ),
            show(get(node, "/load/events_per_second"), 0),
            show(get(node, "/latency_ms/p50_ms"), 2),
            show(get(node, "/latency_ms/p99_ms"), 2),
        );
    }
}

fn memory(out: &mut String, report: &Value) {
    let samples: Vec<(f64, f64)> = report["rss_samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.get(0)?.as_f64()?, s.get(1)?.as_f64()?)))
        .collect();
    if samples.len() >= 2 {
        let step = (samples.len() / 12).max(1);
        let picked: Vec<&(f64, f64)> = samples.iter().step_by(step).collect();
        let _ = writeln!(
            out,
            "\nThe nodes' resident memory together, read every second from the start of the \
                 loads (connecting, settling, the steady load, closing), shown every {step} s:\n"
        );
        let _ = writeln!(
            out,
            "| s | {} |\n|---|{}\n| MiB | {} |",
            picked
                .iter()
                .map(|(t, _)| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(picked.len()),
            picked
                .iter()
                .map(|(_, m)| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_nodes_and_keep_the_worst_latency() {
        let node = |conns: f64, before: f64, idle: f64, p99: f64| {
            json!({
                "connections": conns,
                "load": {"events": 1000.0, "events_per_second": 500.0},
                "connect": {"per_second": 2000.0},
                "server": {"rss_before_kib": before, "rss_idle_kib": idle, "rss_after_load_kib": idle + 100.0,
                           "rss_per_connection_kib": (idle - before) / conns, "cpu_seconds": 0.01},
                "latency_ms": {"p50_ms": 1.0, "p99_ms": p99, "max_ms": p99 * 2.0},
            })
        };
        let samples = vec![(0.0, vec![1024, 2048]), (1.0, vec![2048, 2048])];
        let report = report(
            &[
                node(1000.0, 10_000.0, 16_000.0, 3.0),
                node(3000.0, 10_000.0, 22_000.0, 9.0),
            ],
            &samples,
        );
        let total = &report["total"];
        assert_eq!(total["connections"], 4000.0);
        assert_eq!(total["events_per_second"], 1000.0);
        assert_eq!(total["connects_per_second"], 4000.0);
        // (6,000 + 12,000) KiB grown over 4,000 connections.
        assert_eq!(total["rss_per_connection_kib"], 4.5);
        assert_eq!(total["worst_rss_per_connection_kib"], 6.0);
        assert_eq!(total["worst_p99_ms"], 9.0);
        assert_eq!(total["cpu_us_per_event"], 10.0);
        assert_eq!(report["rss_samples"], json!([[0.0, 3.0], [1.0, 4.0]]));

        let scenario = crate::bench::scenarios::scenarios(true)
            .into_iter()
            .find(|s| s.group == WIDE)
            .expect("a wide scenario");
        let outcome = Outcome {
            scenario,
            server: Run {
                report: Some(report),
                ok: true,
                ..Run::default()
            },
            baseline: Run::default(),
            floor: None,
        };
        let mut doc = String::new();
        section(&mut doc, &[outcome]);
        assert!(doc.starts_with("## c100k connections on one box"), "{doc}");
        assert!(doc.contains("| connections | 4000 |"), "{doc}");
        assert!(doc.contains("| server RSS per idle connection (KiB) | 4.5 |"));
        assert!(doc.contains("| latency p99, worst node (ms) | 9.00 |"));
        assert!(doc.contains("| every frame verified | yes |"));
        assert!(
            doc.contains("| 2 | 3000 | 4.0 | 21.6 | 500 | 1.00 | 9.00 |"),
            "{doc}"
        );
        assert!(
            doc.contains("| s | 0 | 1 |\n|---|---:|---:|\n| MiB | 3 | 4 |"),
            "{doc}"
        );
    }
}
