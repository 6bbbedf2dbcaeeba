//! The history store's behaviour, as one suite run against SQLite (a temp file) and
//! PostgreSQL (a private server): runs and their events, isolation between users, stable
//! pagination, deletion, interrupted runs, retention.
//!
//! This file holds the store's suite and the helpers; `history_writer.rs` the writer that
//! feeds it (sub-runs kept with their run, flush, held events, its thread's priority).

use std::sync::Arc;
use std::time::Duration;

use core_context::{AgentEvent, EncodedEvent, EventKind, RunId, RunScope, ThreadId, UserId};
use history::{HistoryStore, RunStatus, SqlStore, Write};
use serde_json::json;

use crate::postgres_support::PostgresServer;

/// A store of each kind, named for failure messages, with what keeps it alive.
pub struct Stores {
    pub list: Vec<(&'static str, Arc<dyn HistoryStore>)>,
    _postgres: PostgresServer,
    _dir: TempDir,
}

/// A directory removed when this is dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the store at `url`, waiting up to 10 s for a server that is still starting.
pub async fn connect_retrying(url: &str) -> SqlStore {
    let mut last = None;
    for _ in 0..100 {
        match SqlStore::connect(url).await {
            Ok(store) => return store,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot open {url}: {last:?}");
}

/// A SQLite store in a temp directory and a store on a private PostgreSQL.
pub async fn stores() -> Stores {
    let dir = std::env::temp_dir().join(format!(
        "agent-it-history-{}-{}",
        std::process::id(),
        RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = connect_retrying(&format!("sqlite://{}", dir.join("history.db").display())).await;
    let postgres = PostgresServer::start();
    let pg = connect_retrying(&postgres.url()).await;
    Stores {
        list: vec![("sqlite", Arc::new(sqlite)), ("postgres", Arc::new(pg))],
        _postgres: postgres,
        _dir: TempDir(dir),
    }
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// The start of `user`'s run `run` in `thread`, at `at_ms`.
pub fn started(user: &UserId, run: &RunId, thread: &ThreadId, message: &str, at_ms: i64) -> Write {
    Write::RunStarted {
        user: user.clone(),
        run_id: run.clone(),
        thread_id: thread.clone(),
        agent: "assistant".into(),
        message: message.into(),
        node: "node-a".into(),
        at_ms,
    }
}

/// An event of `run` (a sub-run of `parent`, if given).
pub fn event(run: &RunId, parent: Option<&RunId>, kind: EventKind) -> AgentEvent {
    RunScope {
        run_id: run.clone(),
        parent_run_id: parent.cloned(),
        thread_id: ThreadId::generate(),
        agent_name: Arc::from("assistant"),
    }
    .event(kind)
}

fn on(run: &RunId, kind: EventKind, at_ms: i64) -> Write {
    let e = event(run, None, kind);
    Write::event(run.clone(), &e, json_of(&e), at_ms)
}

pub fn json_of(e: &AgentEvent) -> Arc<str> {
    EncodedEvent::encode(e).expect("encodes").json
}

pub fn thinking(step: u32) -> EventKind {
    EventKind::AgentThinking {
        reasoning: format!("step {step}"),
        step,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_keep_their_events_and_end_with_their_terminal_event() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let alice = user("alice");
        let thread = ThreadId::generate();
        let endings = [
            (
                EventKind::AgentCompleted {
                    result: json!({"answer": 84}),
                    duration_ms: 5,
                    usage: Some(json!({"prompt_tokens": 12, "completion_tokens": 3})),
                },
                RunStatus::Completed,
            ),
            (
                EventKind::AgentError {
                    code: "timeout".into(),
                    message: "too slow".into(),
                },
                RunStatus::Failed,
            ),
            (
                EventKind::AgentCancelled {
                    reason: "by the user".into(),
                },
                RunStatus::Cancelled,
            ),
        ];
        let mut runs = Vec::new();
        for (i, (ending, _)) in endings.iter().enumerate() {
            let run = RunId::generate();
            let at = 1_000 * (i as i64 + 1);
            let mut batch = vec![started(&alice, &run, &thread, &format!("question {i}"), at)];
            batch.push(on(
                &run,
                EventKind::AgentStarted {
                    message: "m".into(),
                },
                at,
            ));
            batch.extend((1..=3).map(|s| on(&run, thinking(s), at + i64::from(s))));
            batch.push(on(&run, ending.clone(), at + 10));
            store.apply(&batch).await.unwrap();
            runs.push(run);
        }
        let detail = store
            .thread(&alice, &thread)
            .await
            .unwrap()
            .expect("the thread");
        assert_eq!(detail.thread.title, "question 0", "{kind}");
        assert_eq!(detail.thread.created_ms, 1_000, "{kind}");
        assert_eq!(detail.thread.updated_ms, 3_000, "{kind}");
        let statuses: Vec<_> = detail.runs.iter().map(|r| r.status).collect();
        let expected: Vec<_> = endings.iter().map(|(_, s)| *s).collect();
        assert_eq!(statuses, expected, "{kind}");
        assert_eq!(
            detail.runs[0].outcome,
            Some(json!({"answer": 84})),
            "{kind}"
        );
        assert_eq!(
            detail.runs[1].error_code.as_deref(),
            Some("timeout"),
            "{kind}"
        );
        assert_eq!(detail.runs[2].finished_ms, Some(3_010), "{kind}");
        let first = store.run(&alice, &runs[0]).await.unwrap().expect("the run");
        let types: Vec<_> = first.events.iter().map(|e| e["type"].clone()).collect();
        assert_eq!(
            types,
            [
                "agent_started",
                "agent_thinking",
                "agent_thinking",
                "agent_thinking",
                "agent_completed"
            ],
            "{kind}"
        );
        let steps: Vec<_> = first.events[1..4]
            .iter()
            .map(|e| e["data"]["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3], "{kind}: events out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_threads_and_runs_read_like_missing_ones() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (alice, bob) = (user("alice"), user("bob"));
        let (thread, run) = (ThreadId::generate(), RunId::generate());
        store
            .apply(&[started(&alice, &run, &thread, "mine", 1)])
            .await
            .unwrap();
        assert!(
            store.thread(&bob, &thread).await.unwrap().is_none(),
            "{kind}"
        );
        assert!(store.run(&bob, &run).await.unwrap().is_none(), "{kind}");
        assert!(!store.delete_thread(&bob, &thread).await.unwrap(), "{kind}");
        assert!(
            !store
                .rename_thread(&bob, &thread, "bob's now")
                .await
                .unwrap(),
            "{kind}"
        );
        assert_eq!(
            store.thread_owner(&thread).await.unwrap(),
            Some(alice.clone()),
            "{kind}"
        );
        assert_eq!(
            store.thread_owner(&ThreadId::generate()).await.unwrap(),
            None,
            "{kind}"
        );
        assert!(
            store
                .threads(&bob, 10, None)
                .await
                .unwrap()
                .items
                .is_empty(),
            "{kind}"
        );
        // Still there for alice after bob's attempts, with its title; she renames it, then
        // erases it.
        assert!(store.run(&alice, &run).await.unwrap().is_some(), "{kind}");
        let title = |store: &Arc<dyn HistoryStore>| {
            let (store, alice, thread) = (Arc::clone(store), alice.clone(), thread.clone());
            async move {
                store
                    .thread(&alice, &thread)
                    .await
                    .unwrap()
                    .unwrap()
                    .thread
                    .title
            }
        };
        assert_eq!(title(store).await, "mine", "{kind}");
        assert!(
            store.rename_thread(&alice, &thread, "Ours").await.unwrap(),
            "{kind}"
        );
        assert_eq!(title(store).await, "Ours", "{kind}");
        assert!(
            store.delete_thread(&alice, &thread).await.unwrap(),
            "{kind}"
        );
        assert!(
            store.thread(&alice, &thread).await.unwrap().is_none(),
            "{kind}"
        );
        assert!(store.run(&alice, &run).await.unwrap().is_none(), "{kind}");
        assert!(
            !store.delete_thread(&alice, &thread).await.unwrap(),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_newest_first_and_stable_while_threads_arrive() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let carol = user("carol");
        let mut expected = Vec::new();
        for i in 0..25_i64 {
            let thread = ThreadId::generate();
            // Two threads share each millisecond: the id breaks the tie.
            store
                .apply(&[started(
                    &carol,
                    &RunId::generate(),
                    &thread,
                    "t",
                    100 + i / 2,
                )])
                .await
                .unwrap();
            expected.push((100 + i / 2, thread.as_str().to_owned()));
        }
        expected.sort();
        expected.reverse();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store.threads(&carol, 10, cursor.as_deref()).await.unwrap();
            seen.extend(
                page.items
                    .iter()
                    .map(|t| (t.created_ms, t.thread_id.clone())),
            );
            // A thread that arrives meanwhile is newer: it shows on the first page, not here.
            store
                .apply(&[started(
                    &carol,
                    &RunId::generate(),
                    &ThreadId::generate(),
                    "new",
                    10_000,
                )])
                .await
                .unwrap();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{kind}");
        assert!(matches!(
            store.threads(&carol, 10, Some("not-a-cursor")).await,
            Err(history::HistoryError::Cursor(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_nodes_that_stopped_are_marked_interrupted() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let dave = user("dave");
        let thread = ThreadId::generate();
        let on_node = |node: &str| {
            let run = RunId::generate();
            let write = Write::RunStarted {
                user: dave.clone(),
                run_id: run.clone(),
                thread_id: thread.clone(),
                agent: "assistant".into(),
                message: "m".into(),
                node: node.into(),
                at_ms: 5,
            };
            (run, write)
        };
        let (gone, w1) = on_node("gone");
        let (alive, w2) = on_node("alive");
        let (mine, w3) = on_node("me");
        let (done, w4) = on_node("gone");
        store.apply(&[w1, w2, w3, w4]).await.unwrap();
        store
            .apply(&[on(
                &done,
                EventKind::AgentCancelled { reason: "x".into() },
                6,
            )])
            .await
            .unwrap();
        store.heartbeat("gone", 1_000).await.unwrap();
        store.heartbeat("alive", 50_000).await.unwrap();
        let marked = store.interrupt_orphans(40_000, "me", 60_000).await.unwrap();
        assert_eq!(marked, 1, "{kind}");
        let status = |run: RunId| {
            let store = Arc::clone(store);
            let dave = dave.clone();
            async move { store.run(&dave, &run).await.unwrap().unwrap().run.status }
        };
        assert_eq!(status(gone).await, RunStatus::Interrupted, "{kind}");
        assert_eq!(status(alive).await, RunStatus::Running, "{kind}");
        assert_eq!(status(mine).await, RunStatus::Running, "{kind}");
        assert_eq!(status(done).await, RunStatus::Cancelled, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_old_threads_and_each_users_oldest_past_the_cap() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (gina, hugo) = (user("gina"), user("hugo"));
        let mut ginas = Vec::new();
        for at in [10, 20, 30, 40, 50] {
            let (thread, run) = (ThreadId::generate(), RunId::generate());
            store
                .apply(&[
                    started(&gina, &run, &thread, "q", at),
                    on(&run, thinking(1), at),
                ])
                .await
                .unwrap();
            ginas.push((thread, run));
        }
        let hugos = ThreadId::generate();
        store
            .apply(&[started(&hugo, &RunId::generate(), &hugos, "q", 5)])
            .await
            .unwrap();
        // Older than 15 ms: gina's first (10) and hugo's (5); past a cap of 2: gina's 20 and 30.
        let erased = store.prune(15, 2).await.unwrap();
        assert_eq!(erased, 4, "{kind}");
        let left: Vec<String> = store
            .threads(&gina, 10, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|t| t.thread_id)
            .collect();
        let expected: Vec<String> = [&ginas[4].0, &ginas[3].0]
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(left, expected, "{kind}");
        assert!(
            store.run(&gina, &ginas[0].1).await.unwrap().is_none(),
            "{kind}: a pruned run stays"
        );
        assert!(
            store.run(&gina, &ginas[2].1).await.unwrap().is_none(),
            "{kind}"
        );
        let kept = store
            .run(&gina, &ginas[4].1)
            .await
            .unwrap()
            .expect("the newest run");
        assert_eq!(kept.events.len(), 1, "{kind}");
        assert!(
            store
                .threads(&hugo, 10, None)
                .await
                .unwrap()
                .items
                .is_empty(),
            "{kind}"
        );
        assert_eq!(
            store.prune(15, 2).await.unwrap(),
            0,
            "{kind}: nothing more to erase"
        );
    }
}
