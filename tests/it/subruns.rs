//! Sub-runs: an agent handing part of its work to other agents.

use std::sync::Arc;
use std::time::Duration;

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
};
use async_trait::async_trait;
use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use execution_engine::{EngineConfig, RunOutcome, UserExecutionEngine};
use serde_json::{Value, json};

use crate::support::{Harness, context, shape, types, wait_until};

/// Runs the sub-agents named in `input.subs` (each `[agent, input]`) at once, then one more
/// after them if `input.then` names one; returns their results (errors as `{"error": ..}`).
struct Fanout;

#[async_trait]
impl Agent for Fanout {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let subs = input.input["subs"].as_array().cloned().unwrap_or_default();
        ctx.think(format!("handing {} parts to other agents", subs.len()));
        let calls = subs.iter().map(|sub| {
            let agent = sub[0].as_str().unwrap_or("").to_owned();
            let sub_input =
                AgentInput::message(format!("part for {agent}")).with_input(sub[1].clone());
            async move { ctx.run_sub_agent(&agent, sub_input).await }
        });
        let mut results: Vec<Value> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(out) => out.result,
                Err(e) => json!({"error": e.code}),
            })
            .collect();
        if let Some(then) = input.input["then"].as_str() {
            let out = ctx
                .run_sub_agent(then, AgentInput::message("last part"))
                .await?;
            results.push(out.result);
        }
        Ok(Value::Array(results).into())
    }
}

/// Calls itself as a sub-run until the engine refuses, and reports how deep it got.
struct Recursive;

#[async_trait]
impl Agent for Recursive {
    async fn run(&self, ctx: &AgentContext, _: AgentInput) -> Result<AgentOutput, AgentError> {
        let depth = ctx.user_context().operation_depth();
        match ctx
            .run_sub_agent("recursive", AgentInput::message("deeper"))
            .await
        {
            Ok(out) => Ok(out),
            Err(e) if e.code == "too_deep" => {
                Ok(json!({"deepest": depth, "refused": e.message}).into())
            }
            Err(e) => Err(e),
        }
    }
}

fn engine(h: &Harness, config: EngineConfig) -> UserExecutionEngine {
    let mut registry = AgentRegistry::clone(&h.registry);
    registry
        .register_agent(AgentSpec::new("fanout", || Fanout))
        .unwrap();
    registry
        .register_agent(AgentSpec::new("recursive", || Recursive))
        .unwrap();
    UserExecutionEngine::create_with_config(context("alice"), Arc::new(registry), h.sink(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_runs_have_their_own_lifecycle_and_end_before_their_parent() {
    let h = Harness::new();
    let engine = engine(&h, EngineConfig::default());
    let input = json!({
        "subs": [["synthetic", {"tools": 2, "sleep_ms": 2}], ["echo", {"n": 1}], ["synthetic", {"fail": "broken part"}]],
        "then": "echo",
    });
    let run = engine.execute_agent("fanout", shape(input)).await.unwrap();
    let parent = run.run_id().clone();
    let RunOutcome::Completed { output, .. } = run.wait().await else {
        panic!("the parent failed")
    };
    assert_eq!(output.result[2], json!({"error": "synthetic_failure"}));
    assert_eq!(output.result[1]["input"]["n"], 1);

    let events = h.events("alice");
    let summary = check_lifecycle(&events).unwrap();
    assert_eq!(
        (summary.runs, summary.sub_runs, summary.completed),
        (5, 4, 4)
    );
    assert_eq!(summary.errors.get("synthetic_failure"), Some(&1));
    let subs: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| e.run_id != parent)
        .map(|e| {
            assert_eq!(
                e.parent_run_id.as_ref(),
                Some(&parent),
                "a sub-run event without its parent"
            );
            e.run_id.clone()
        })
        .collect();
    assert_eq!(subs.len(), 4);
    assert!(
        events
            .iter()
            .filter(|e| e.run_id == parent)
            .all(|e| e.parent_run_id.is_none())
    );
    assert_eq!(
        events.last().unwrap().run_id,
        parent,
        "the parent's terminal event must be last"
    );
    assert_eq!(engine.stats().total_runs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_its_sub_runs_first() {
    let h = Harness::new();
    let engine = engine(&h, EngineConfig::default());
    let input = json!({"subs": [["synthetic", {"tools": 1, "hang": true}], ["ticker", null]]});
    let run = engine.execute_agent("fanout", shape(input)).await.unwrap();
    wait_until("both sub-runs started", || {
        h.events("alice")
            .iter()
            .filter(|e| matches!(e.kind, EventKind::AgentStarted { .. }))
            .count()
            == 3
    })
    .await;
    run.cancel("stop everything");
    assert_eq!(
        run.wait().await,
        RunOutcome::Cancelled("stop everything".into())
    );
    let events = h.events("alice");
    let summary = check_lifecycle(&events).unwrap();
    assert_eq!((summary.sub_runs, summary.cancelled), (2, 3));
    assert_eq!(types(&events).last(), Some(&"agent_cancelled"));
    let ticks = h.ticks.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.ticks.load(std::sync::atomic::Ordering::SeqCst),
        ticks,
        "a cancelled sub-run kept running"
    );
}

#[tokio::test]
async fn a_parent_timeout_ends_the_sub_run_before_the_parent() {
    let h = Harness::new();
    let config = EngineConfig {
        run_timeout: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let engine = engine(&h, config);
    let input = json!({"subs": [["synthetic", {"tools": 0, "hang": true}]]});
    let outcome = engine
        .execute_agent("fanout", shape(input))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(outcome.error_code(), Some("timeout"));
    let events = h.events("alice");
    check_lifecycle(&events).unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.parent_run_id.is_some(), e.kind.type_name()))
        .collect();
    let n = kinds.len();
    // The sub-run's own 100 ms timeout and the parent's race; either way the sub-run ends
    // first and the parent ends in a timeout.
    assert!(
        kinds[n - 2].0 && kinds[n - 2].1 != "agent_started",
        "{kinds:?}"
    );
    assert_eq!(kinds[n - 1], (false, "agent_error"));
}

#[tokio::test]
async fn sub_runs_nest_to_the_depth_limit_and_unknown_agents_are_refused() {
    let h = Harness::new();
    let engine = engine(&h, EngineConfig::default());
    let RunOutcome::Completed { output, .. } = engine
        .execute_agent("recursive", shape(Value::Null))
        .await
        .unwrap()
        .wait()
        .await
    else {
        panic!("the recursion failed")
    };
    assert_eq!(output.result["deepest"], 10);
    assert!(
        output.result["refused"]
            .as_str()
            .unwrap()
            .contains("the limit is 10")
    );
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(
        (summary.runs, summary.sub_runs, summary.completed),
        (11, 10, 11)
    );

    let input = json!({"subs": [["nope", null]]});
    let RunOutcome::Completed { output, .. } = engine
        .execute_agent("fanout", shape(input))
        .await
        .unwrap()
        .wait()
        .await
    else {
        panic!()
    };
    assert_eq!(output.result[0], json!({"error": "unknown_agent"}));
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(summary.runs, 12, "a refused sub-run must emit nothing");
}
