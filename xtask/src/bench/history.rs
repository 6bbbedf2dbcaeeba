//! The history scenarios' runs: the same load with the store off and on (SQLite), in turns,
//! [`REPEATS`] times each, every side reported by its median run (one burst varies by about
//! ±10% on two cores, which is the size of the figure being measured).
//!
//! The writer runs below the live path's priority, so part of its work happens after the
//! load: a store-on run waits until the writer's and SQLite's threads are idle, and its
//! report gains `history.caught_up_s` (seconds from the load's end until then) and
//! `history.store_cpu_us_per_event` (those threads' CPU over the whole run, load and catch-up,
//! per event delivered). A server log that says writes were dropped fails the run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::outcome::Run;
use super::probe::{TICKS_PER_SECOND, stat_ticks};
use super::scenarios::Scenario;
use super::{Binaries, Kind};

/// Turns of store off / store on per scenario (1 with `--quick`).
pub(crate) const REPEATS: usize = 3;

/// How long the store's threads must stay idle to count as caught up.
const IDLE: Duration = Duration::from_millis(500);

/// How long a catch-up may take at most before the run gives up waiting.
const MAX_CATCH_UP: Duration = Duration::from_secs(180);

/// Runs `scenario` with the store off and on, `repeats` times each in turns, and returns
/// the median run of each side (a failed run, if any, so a failure is never hidden).
pub(crate) fn paired(
    binaries: &Binaries,
    scenario: &Scenario,
    repeats: usize,
    log_dir: &Path,
) -> (Run, Run) {
    let store = log_dir.join(format!("{}.db", scenario.name));
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for turn in 1..=repeats {
        println!("  turn {turn}/{repeats}: store off");
        let run = run_one(binaries, scenario, None, log_dir);
        super::print_line(&run);
        off.push(run);
        println!("  turn {turn}/{repeats}: store on");
        let run = run_one(binaries, scenario, Some(&store), log_dir);
        super::print_line(&run);
        on.push(run);
    }
    (median(off), median(on))
}

/// The run with the median events/s, or the first failed one.
fn median(mut runs: Vec<Run>) -> Run {
    if let Some(failed) = runs.iter().position(|r| !r.ok) {
        return runs.swap_remove(failed);
    }
    let rate = |run: &Run| {
        run.report
            .as_ref()
            .and_then(|r| r.pointer("/load/events_per_second"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// One run on a fresh server: with the store at `store` (a fresh file), or none.
fn run_one(binaries: &Binaries, scenario: &Scenario, store: Option<&Path>, log_dir: &Path) -> Run {
    let Some(file) = store else {
        return super::run_one(binaries, scenario, Kind::AgentServer, &[], log_dir, None);
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let extra = ["--store".to_owned(), format!("sqlite://{}", file.display())];
    super::run_one(
        binaries,
        scenario,
        Kind::AgentServer,
        &extra,
        log_dir,
        Some(&settle),
    )
}

/// Waits until the store's threads of server `pid` are idle, then adds the history figures
/// to `run`'s report and fails it if the server's log says writes were dropped.
fn settle(pid: u32, _addr: &str, log: &Path, run: &mut Run) {
    let load_end = Instant::now();
    let mut last = store_ticks(pid);
    let mut changed = load_end;
    while changed.elapsed() < IDLE && load_end.elapsed() < MAX_CATCH_UP {
        std::thread::sleep(Duration::from_millis(50));
        let now = store_ticks(pid);
        if now != last {
            last = now;
            changed = Instant::now();
        }
    }
    let caught_up = changed.duration_since(load_end).as_secs_f64();
    let dropped = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|line| line.contains("history:") && line.contains("dropped"));
    if dropped && run.ok {
        run.ok = false;
        run.error = Some("the server's log says history writes were dropped".into());
    }
    if let Some(report) = run.report.as_mut().and_then(|r| r.as_object_mut()) {
        let events = report
            .get("load")
            .and_then(|l| l.get("events"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        let cpu_us = last as f64 / TICKS_PER_SECOND * 1e6;
        report.insert(
            "history".into(),
            json!({
                "caught_up_s": caught_up,
                "store_cpu_us_per_event": if events > 0.0 { cpu_us / events } else { 0.0 },
            }),
        );
    }
}

/// CPU ticks (user + system) so far of the server's history writer and SQLite threads.
fn store_ticks(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, ticks) = stat_ticks(&stat)?;
            let store = name == "history-writer" || name.starts_with("sqlx-sqlite");
            store.then_some(ticks)
        })
        .sum()
}
