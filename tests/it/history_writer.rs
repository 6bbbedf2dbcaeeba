//! The history writer against both stores (`history::stores`): it keeps a sub-run's events
//! with the run the user started, `flush` returns once everything recorded before it is
//! stored, a running run's events are stored without its end, and its threads run below the
//! live path's priority.

use std::sync::Arc;
use std::time::Duration;

use core_context::{EventKind, RunId, ThreadId};
use history::{HistoryStore, HistoryWriter, RunStatus, WriterConfig};
use serde_json::json;

use crate::history::{TempDir, connect_retrying, event, json_of, started, stores, thinking, user};

/// The writer keeps a sub-run's events with the run the user started, in emission order,
/// and `flush` returns once everything recorded before it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_sub_runs_with_their_run_and_flushes() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let writer = HistoryWriter::start(Arc::clone(store), WriterConfig::default());
        let erin = user("erin");
        let (thread, top) = (ThreadId::generate(), RunId::generate());
        let (sub, subsub) = (RunId::generate(), RunId::generate());
        writer.record(started(&erin, &top, &thread, "triage this", 1));
        let order = [
            event(
                &top,
                None,
                EventKind::AgentStarted {
                    message: "m".into(),
                },
            ),
            event(
                &sub,
                Some(&top),
                EventKind::AgentStarted {
                    message: "m".into(),
                },
            ),
            event(
                &subsub,
                Some(&sub),
                EventKind::AgentStarted {
                    message: "m".into(),
                },
            ),
            event(&subsub, Some(&sub), thinking(1)),
            event(
                &subsub,
                Some(&sub),
                EventKind::AgentCompleted {
                    result: json!(1),
                    duration_ms: 1,
                    usage: None,
                },
            ),
            event(
                &sub,
                Some(&top),
                EventKind::AgentCompleted {
                    result: json!(2),
                    duration_ms: 1,
                    usage: None,
                },
            ),
            event(
                &top,
                None,
                EventKind::AgentCompleted {
                    result: json!(3),
                    duration_ms: 1,
                    usage: None,
                },
            ),
        ];
        for e in &order {
            writer.record_event(e, json_of(e), 2);
        }
        writer.flush().await;
        let run = store.run(&erin, &top).await.unwrap().expect("the run");
        let ids: Vec<String> = run
            .events
            .iter()
            .map(|e| e["run_id"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = order.iter().map(|e| e.run_id.as_str().to_owned()).collect();
        assert_eq!(ids, expected, "{kind}");
        assert_eq!(
            run.run.status,
            RunStatus::Completed,
            "{kind}: the run ends with its own terminal event"
        );
        assert_eq!(run.run.outcome, Some(json!(3)), "{kind}");
        assert_eq!(
            writer
                .stats()
                .written
                .load(std::sync::atomic::Ordering::Relaxed),
            8
        );
    }
}

/// A running run's events reach the store without a flush or an end (the writer holds them
/// only so long, to store them together), and a flush stores what is held at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_stores_a_running_runs_events_without_its_end() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let writer = HistoryWriter::start(Arc::clone(store), WriterConfig::default());
        let ivan = user("ivan");
        let (thread, run) = (ThreadId::generate(), RunId::generate());
        writer.record(started(&ivan, &run, &thread, "long one", 1));
        for step in 1..=3 {
            let e = event(&run, None, thinking(step));
            writer.record_event(&e, json_of(&e), 2);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stored = store
                .run(&ivan, &run)
                .await
                .unwrap()
                .map_or(0, |r| r.events.len());
            if stored == 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: {stored} of 3 events of a running run stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = event(&run, None, thinking(4));
        writer.record_event(&e, json_of(&e), 3);
        writer.flush().await;
        let detail = store.run(&ivan, &run).await.unwrap().expect("the run");
        assert_eq!(
            detail.events.len(),
            4,
            "{kind}: the flush stored the held event"
        );
        assert_eq!(detail.run.status, RunStatus::Running, "{kind}");
    }
}

/// The writer's thread, and the SQLite worker thread of its connection, run at the
/// background niceness (Linux), so a burst's live events go first.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_runs_below_the_live_paths_priority() {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "agent-it-nice-{}-{}",
        std::process::id(),
        RunId::generate()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let url = format!("sqlite://{}", dir.0.join("nice.db").display());
    let store: Arc<dyn HistoryStore> = Arc::new(connect_retrying(&url).await);
    let writer = HistoryWriter::start(Arc::clone(&store), WriterConfig::default());
    let (thread, run) = (ThreadId::generate(), RunId::generate());
    writer.record(started(&user("jane"), &run, &thread, "q", 1));
    writer.flush().await;
    let niceness = |name: &str| -> Vec<i32> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (head, rest) = stat.rsplit_once(") ").unwrap();
            if head.ends_with(&format!("({name}")) {
                // Fields after the name start at the state (field 3); nice is field 19.
                found.push(rest.split_whitespace().nth(16).unwrap().parse().unwrap());
            }
        }
        found
    };
    let writers = niceness("history-writer");
    assert!(!writers.is_empty(), "no writer thread");
    assert!(
        writers.iter().all(|&n| n == history::BACKGROUND_NICE),
        "writer threads' niceness: {writers:?}"
    );
    let sqlite = niceness("sqlx-sqlite-wor");
    assert!(
        sqlite.contains(&history::BACKGROUND_NICE),
        "no SQLite worker at the writer's niceness: {sqlite:?}"
    );
}
