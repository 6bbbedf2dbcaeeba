//! Isolation and lifecycle under load: many users, many concurrent runs, real engines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use core_context::RunId;
use core_context::lifecycle::check_lifecycle;
use execution_engine::{EngineConfig, ExecutionEngineFactory, RunOutcome};
use serde_json::json;

use crate::support::{Harness, context, shape};

const USERS: usize = 200;
const RUNS_PER_USER: usize = 5;

/// 200 users x 5 concurrent runs, each run on its own engine from one factory (as a server
/// makes them). Every user's stream holds exactly that user's runs, and every run keeps the
/// lifecycle guarantees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_users_many_runs_each_user_sees_only_their_runs() {
    let h = Harness::new();
    let config = EngineConfig {
        max_concurrent_runs: 5,
        ..EngineConfig::default()
    };
    let factory = ExecutionEngineFactory::new(h.registry.clone(), h.sink(), config);

    let mut handles = Vec::new();
    for u in 0..USERS {
        let user = format!("user{u:03}");
        for r in 0..RUNS_PER_USER {
            let engine = factory.create_for_user(context(&user)).unwrap();
            let input =
                shape(json!({"thinking": 2, "tools": 3, "chunks": 2, "sleep_ms": (u + r) % 3}));
            let handle = engine.execute_agent("synthetic", input).await.unwrap();
            handles.push((user.clone(), handle.run_id().clone(), handle));
        }
    }
    let mut expected: BTreeMap<String, BTreeSet<RunId>> = BTreeMap::new();
    for (user, run_id, handle) in handles {
        let outcome = handle.wait().await;
        assert!(outcome.is_completed(), "{user} {run_id}: {outcome:?}");
        expected.entry(user).or_default().insert(run_id);
    }

    let all = h.sink.events();
    assert_eq!(all.len(), USERS * RUNS_PER_USER * (1 + 2 + 6 + 2 + 1));
    for (user, runs) in &expected {
        let events = h.events(user);
        let seen: BTreeSet<RunId> = events.iter().map(|e| e.run_id.clone()).collect();
        assert_eq!(
            &seen, runs,
            "{user} saw runs that are not theirs, or missed some"
        );
        let summary = check_lifecycle(&events).unwrap_or_else(|v| panic!("{user}: {v}"));
        assert_eq!(
            (summary.runs, summary.completed, summary.tool_calls),
            (5, 5, 15),
            "{user}"
        );
    }
    // No run id appears under two users.
    let mut owner: BTreeMap<&RunId, &str> = BTreeMap::new();
    for (user, event) in &all {
        let first = owner.entry(&event.run_id).or_insert(user.as_str());
        assert_eq!(
            *first,
            user.as_str(),
            "run {} emitted for two users",
            event.run_id
        );
    }
}

/// Many users at once, runs ending every possible way (complete, fail, panic, timeout,
/// cancel while running, cancel while queued): every run still has exactly one start and one
/// terminal event, matching its outcome, and no user sees another's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_outcomes_keep_the_lifecycle_for_every_run() {
    let h = Harness::new();
    // The default 25 s run timeout: only the `timeout` mode may time out, through the agent
    // `quick_timeout` and its own 50 ms limit, so a loaded machine cannot turn an `ok` run
    // into a timeout.
    let config = EngineConfig {
        max_concurrent_runs: 3,
        max_queued_runs: 10,
        ..EngineConfig::default()
    };
    let factory = ExecutionEngineFactory::new(h.registry.clone(), h.sink(), config);
    let modes = [
        "ok",
        "fail",
        "panic",
        "timeout",
        "cancel",
        "ok",
        "cancel_queued",
    ];

    let mut runs = Vec::new();
    for u in 0..100 {
        let user = format!("mixed{u:03}");
        for (i, mode) in modes.iter().enumerate() {
            let input = match *mode {
                "ok" => json!({"tools": 2, "sleep_ms": 1}),
                "fail" => json!({"tools": 1, "fail": "scripted failure"}),
                "panic" => json!({"tools": 1, "panic": true}),
                "timeout" | "cancel" | "cancel_queued" => json!({"tools": 1, "hang": true}),
                _ => unreachable!(),
            };
            let agent = if *mode == "timeout" {
                "quick_timeout"
            } else {
                "synthetic"
            };
            let engine = factory.create_for_user(context(&user)).unwrap();
            let handle = engine.execute_agent(agent, shape(input)).await.unwrap();
            runs.push((user.clone(), i, *mode, handle));
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (_, _, mode, handle) in &runs {
        if mode.starts_with("cancel") {
            handle.cancel("stopped by the test");
        }
    }
    let mut per_user: BTreeMap<String, BTreeSet<RunId>> = BTreeMap::new();
    for (user, _, mode, handle) in runs {
        let run_id = handle.run_id().clone();
        let outcome = handle.wait().await;
        let ok = match mode {
            "ok" => outcome.is_completed(),
            "fail" => outcome.error_code() == Some("synthetic_failure"),
            "panic" => outcome.error_code() == Some("panic"),
            "timeout" => outcome.error_code() == Some("timeout"),
            _ => outcome == RunOutcome::Cancelled("stopped by the test".into()),
        };
        assert!(ok, "{user} {mode}: {outcome:?}");
        per_user.entry(user).or_default().insert(run_id);
    }
    for (user, runs) in per_user {
        let events = h.events(&user);
        let seen: BTreeSet<RunId> = events.iter().map(|e| e.run_id.clone()).collect();
        assert_eq!(seen, runs, "{user}");
        let summary = check_lifecycle(&events).unwrap_or_else(|v| panic!("{user}: {v}"));
        assert_eq!(summary.runs, modes.len());
        assert_eq!(summary.completed, 2);
        assert_eq!(summary.cancelled, 2);
        assert_eq!(
            summary.errors.values().sum::<usize>(),
            3,
            "{:?}",
            summary.errors
        );
    }
    assert_eq!(factory.stats().running, 0);
    assert_eq!(factory.stats().queued, 0);
}
