//! Per-user limits, timeouts, cancellation, panics, pipelines, shutdown and the factories.

use std::sync::atomic::Ordering;
use std::time::Duration;

use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use core_context::{ThreadId, UserExecutionContext};
use execution_engine::{
    EngineConfig, EngineError, ExecutionEngineFactory, PipelineStep, RunOutcome,
    UserExecutionEngine,
};
use serde_json::json;

use crate::support::{Harness, context, shape, terminal_of, types, user_id, wait_until};

fn hang() -> agent_registry::AgentInput {
    shape(json!({"tools": 0, "chunks": 0, "thinking": 0, "hang": true}))
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

#[tokio::test]
async fn concurrency_limit_queues_then_refuses_and_is_per_user() {
    let h = Harness::new();
    let factory =
        ExecutionEngineFactory::new(h.registry.clone(), h.sink(), EngineConfig::default());
    let alice = factory.create_for_user(context("alice")).unwrap();

    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(alice.execute_agent("synthetic", hang()).await.unwrap());
    }
    // A second engine of the same user shares the limits.
    let other = factory.create_for_user(context("alice")).unwrap();
    let mut queued = Vec::new();
    for _ in 0..10 {
        queued.push(other.execute_agent("synthetic", hang()).await.unwrap());
    }
    wait_until("three runs start", || h.events("alice").len() >= 3).await;
    // Give a queued run every chance to start wrongly.
    settle().await;
    assert_eq!(
        types(&h.events("alice")),
        vec!["agent_started"; 3],
        "queued runs must not start"
    );
    assert_eq!(other.stats().queued, 10);
    assert_eq!(alice.stats().running, 3);

    let refused = alice.execute_agent("synthetic", hang()).await.unwrap_err();
    assert_eq!(refused.code(), "too_many_runs");
    assert_eq!(
        refused.to_string(),
        "too many runs: 3 running and 10 queued (limits 3 and 10); wait for one to finish or cancel one"
    );

    // Bob is not affected by Alice's full queue.
    let bob = factory.create_for_user(context("bob")).unwrap();
    let bob_run = bob
        .execute_agent("synthetic", shape(json!({})))
        .await
        .unwrap();
    assert!(bob_run.wait().await.is_completed());

    // Freeing a slot starts the first queued run (fair order).
    running[0].cancel("make room");
    wait_until("a queued run starts", || h.events("alice").len() >= 5).await;
    let events = h.events("alice");
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.kind.type_name() == "agent_started")
        .collect();
    assert_eq!(
        types(&events),
        [
            "agent_started",
            "agent_started",
            "agent_started",
            "agent_cancelled",
            "agent_started"
        ]
    );
    assert_eq!(&started[3].run_id, queued[0].run_id());

    for handle in running.iter().chain(&queued) {
        handle.cancel("cleanup");
    }
    for handle in running.into_iter().chain(queued) {
        assert!(matches!(handle.wait().await, RunOutcome::Cancelled(_)));
    }
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(summary.cancelled, 13);
    assert!(factory.stats().running == 0 && factory.stats().queued == 0);
}

#[tokio::test]
async fn run_timeout_default_per_agent_override_and_context_deadline() {
    let h = Harness::new();
    let config = EngineConfig {
        run_timeout: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let engine = UserExecutionEngine::create_with_config(
        context("alice"),
        h.registry.clone(),
        h.sink(),
        config.clone(),
    );

    let by_default = engine.execute_agent("synthetic", hang()).await.unwrap();
    let outcome = by_default.wait().await;
    assert_eq!(outcome.error_code(), Some("timeout"));
    let RunOutcome::Failed(error) = outcome else {
        unreachable!()
    };
    assert_eq!(error.message, "the run took longer than its 100 ms limit");

    // The agent's own timeout (50 ms) wins over the engine's.
    let overridden = engine.execute_agent("quick_timeout", hang()).await.unwrap();
    let id = overridden.run_id().clone();
    assert_eq!(overridden.wait().await.error_code(), Some("timeout"));
    assert!(matches!(
        terminal_of(&h.events("alice"), &id),
        EventKind::AgentError { code, message } if code == "timeout" && message.contains("50 ms")
    ));

    // A context deadline earlier than the run timeout ends the run at the deadline.
    let ctx = UserExecutionContext::builder(user_id("carol"))
        .timeout(Duration::from_millis(40))
        .build()
        .unwrap();
    let engine = UserExecutionEngine::create_with_config(ctx, h.registry.clone(), h.sink(), config);
    assert_eq!(
        engine
            .execute_agent("synthetic", hang())
            .await
            .unwrap()
            .wait()
            .await
            .error_code(),
        Some("timeout")
    );
    check_lifecycle(&h.events("alice")).unwrap();
    check_lifecycle(&h.events("carol")).unwrap();
}

#[tokio::test]
async fn cancel_really_stops_the_agent_and_closes_open_tool_calls() {
    let h = Harness::new();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let run = engine
        .execute_agent("ticker", shape(json!(null)))
        .await
        .unwrap();
    wait_until("the ticker ticks", || h.ticks.load(Ordering::SeqCst) > 0).await;
    run.cancel("stop it");
    assert_eq!(run.wait().await, RunOutcome::Cancelled("stop it".into()));
    let ticks = h.ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        h.ticks.load(Ordering::SeqCst),
        ticks,
        "the cancelled agent kept running"
    );

    // Cancelled in the middle of a tool call: the call is closed before the terminal event.
    let mut registry = agent_registry::AgentRegistry::new();
    agents::synthetic::register(&mut registry).unwrap();
    registry.register_tool(SlowTool).unwrap();
    registry
        .register_agent(agent_registry::AgentSpec::new("slow_tool_user", || {
            SlowToolUser
        }))
        .unwrap();
    let engine = UserExecutionEngine::create_execution_engine(
        context("bob"),
        std::sync::Arc::new(registry),
        h.sink(),
    );
    let run = engine
        .execute_agent("slow_tool_user", shape(json!(null)))
        .await
        .unwrap();
    wait_until("the tool call starts", || h.events("bob").len() == 2).await;
    assert!(engine.cancel_run(run.run_id(), "user pressed stop"));
    assert!(matches!(run.wait().await, RunOutcome::Cancelled(_)));
    let events = h.events("bob");
    assert_eq!(
        types(&events),
        [
            "agent_started",
            "tool_executing",
            "tool_completed",
            "agent_cancelled"
        ]
    );
    assert!(matches!(
        &events[2].kind,
        EventKind::ToolCompleted { is_error: true, .. }
    ));
    check_lifecycle(&events).unwrap();
}

struct SlowTool;
#[async_trait::async_trait]
impl agent_registry::Tool for SlowTool {
    fn name(&self) -> &str {
        "slow"
    }
    fn description(&self) -> &str {
        "sleeps 10 s"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn call(
        &self,
        _: &UserExecutionContext,
        _: serde_json::Value,
    ) -> Result<serde_json::Value, agent_registry::ToolError> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(json!("late"))
    }
}

struct SlowToolUser;
#[async_trait::async_trait]
impl agent_registry::Agent for SlowToolUser {
    async fn run(
        &self,
        ctx: &agent_registry::AgentContext,
        _: agent_registry::AgentInput,
    ) -> Result<agent_registry::AgentOutput, agent_registry::AgentError> {
        let r = ctx.call_tool("slow", json!({})).await;
        Ok(json!(format!("{r:?}")).into())
    }
}

#[tokio::test]
async fn a_user_cannot_cancel_another_users_run() {
    let h = Harness::new();
    let factory =
        ExecutionEngineFactory::new(h.registry.clone(), h.sink(), EngineConfig::default());
    let alice = factory.create_for_user(context("alice")).unwrap();
    let bob = factory.create_for_user(context("bob")).unwrap();
    let run = alice.execute_agent("synthetic", hang()).await.unwrap();
    assert!(!bob.cancel_run(run.run_id(), "not yours"));
    wait_until("alice's run starts", || !h.events("alice").is_empty()).await;
    settle().await;
    assert_eq!(types(&h.events("alice")), ["agent_started"]);
    assert!(alice.cancel_run(run.run_id(), "mine"));
    assert_eq!(run.wait().await, RunOutcome::Cancelled("mine".into()));
    assert!(h.events("bob").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_agent_ends_in_agent_error_and_harms_no_other_run() {
    let h = Harness::new();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let calm = engine
        .execute_agent("synthetic", shape(json!({"tools": 3, "sleep_ms": 20})))
        .await
        .unwrap();
    let panicky = engine
        .execute_agent("synthetic", shape(json!({"tools": 1, "panic": true})))
        .await
        .unwrap();
    let outcome = panicky.wait().await;
    let RunOutcome::Failed(error) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.code, "panic");
    assert!(
        error.message.contains("synthetic panic requested"),
        "{}",
        error.message
    );
    assert!(calm.wait().await.is_completed());
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(
        (summary.completed, summary.errors.get("panic").copied()),
        (1, Some(1))
    );
    let stats = engine.stats();
    assert_eq!(
        (
            stats.total_runs,
            stats.completed,
            stats.failed,
            stats.panicked
        ),
        (2, 1, 1, 1)
    );
}

#[tokio::test]
async fn unknown_agent_is_refused_with_the_list_and_emits_nothing() {
    let h = Harness::new();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let err = engine
        .execute_agent("summarizer", hang())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_agent");
    assert_eq!(
        err.to_string(),
        "no agent named \"summarizer\"; available: echo, quick_timeout, synthetic, ticker"
    );
    assert!(h.sink.is_empty());
    assert_eq!(engine.stats().total_runs, 0);
}

#[tokio::test]
async fn pipeline_stops_at_first_failure_unless_told_to_continue() {
    let h = Harness::new();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let fail = || PipelineStep::new("synthetic", shape(json!({"fail": "step two broke"})));
    let steps = vec![
        PipelineStep::new("echo", shape(json!({"n": 1}))),
        fail(),
        PipelineStep::new("echo", shape(json!({"n": 3}))),
    ];
    let report = engine.execute_pipeline(steps.clone()).await;
    assert!(!report.succeeded());
    assert_eq!(report.steps.len(), 2);
    assert_eq!(report.skipped, ["echo"]);
    assert_eq!(
        report.steps[1].outcome.as_ref().unwrap().error_code(),
        Some("synthetic_failure")
    );
    // The first step's run took the context's run id; later steps got their own.
    assert_eq!(
        report.steps[0].run_id.as_ref(),
        Some(engine.context().run_id())
    );
    assert_ne!(report.steps[1].run_id, report.steps[0].run_id);

    let mut steps = steps;
    steps[1] = fail().continue_on_failure();
    let report = engine.execute_pipeline(steps).await;
    assert_eq!(report.steps.len(), 3);
    assert!(report.skipped.is_empty());
    assert!(
        !report.succeeded(),
        "a failed step is not success, even when continued past"
    );

    // Results flow into the next step under `previous_result`.
    let report = engine
        .execute_pipeline(vec![
            PipelineStep::new("echo", shape(json!({"n": 1}))),
            PipelineStep::new("echo", shape(json!({"n": 2}))),
        ])
        .await;
    assert!(report.succeeded());
    let Ok(RunOutcome::Completed { output, .. }) = &report.steps[1].outcome else {
        panic!()
    };
    assert_eq!(output.result["input"]["n"], 2);
    assert_eq!(output.result["previous_result"]["input"]["n"], 1);
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(summary.runs, 2 + 3 + 2);
}

#[tokio::test]
async fn shutdown_cancels_running_and_queued_runs_and_waits_for_their_end() {
    let h = Harness::new();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let mut handles = Vec::new();
    for _ in 0..5 {
        handles.push(engine.execute_agent("synthetic", hang()).await.unwrap());
    }
    settle().await;
    engine.shutdown().await;
    // Every terminal event is out when shutdown returns.
    let summary = check_lifecycle(&h.events("alice")).unwrap();
    assert_eq!(summary.cancelled, 5);
    assert!(engine.active_runs().is_empty());
    for handle in handles {
        assert_eq!(
            handle.wait().await,
            RunOutcome::Cancelled("the engine is shutting down".into())
        );
    }
    let err = engine.execute_agent("synthetic", hang()).await.unwrap_err();
    assert_eq!(err, EngineError::EngineClosed);
}

#[tokio::test]
async fn scoped_engines_clean_up_on_close_and_on_drop() {
    let h = Harness::new();
    let scoped = UserExecutionEngine::create_request_scoped_engine(
        context("alice"),
        h.registry.clone(),
        h.sink(),
    );
    let run = scoped.execute_agent("synthetic", hang()).await.unwrap();
    settle().await;
    scoped.close().await;
    assert!(matches!(run.wait().await, RunOutcome::Cancelled(_)));

    let factory =
        ExecutionEngineFactory::new(h.registry.clone(), h.sink(), EngineConfig::default());
    let run = {
        let scoped = factory.create_scoped(context("bob")).unwrap();
        assert_eq!(factory.stats().engines, 1);
        scoped.execute_agent("synthetic", hang()).await.unwrap()
    };
    assert_eq!(
        run.wait().await,
        RunOutcome::Cancelled("the request ended".into())
    );
    assert_eq!(factory.stats().engines, 0);
    check_lifecycle(&h.events("alice")).unwrap();
    check_lifecycle(&h.events("bob")).unwrap();
}

#[tokio::test]
async fn factory_caps_engines_per_user_and_cleans_up_idle_ones() {
    let h = Harness::new();
    let config = EngineConfig {
        max_engines_per_user: 2,
        engine_idle_timeout: Duration::from_millis(40),
        ..EngineConfig::default()
    };
    let factory = ExecutionEngineFactory::new(h.registry.clone(), h.sink(), config);
    let a = factory.create_for_user(context("alice")).unwrap();
    let b = factory.create_for_user(context("alice")).unwrap();
    let busy = b.execute_agent("synthetic", hang()).await.unwrap();
    let err = factory.create_for_user(context("alice")).unwrap_err();
    assert_eq!(err, EngineError::TooManyEngines { max: 2 });
    factory.create_for_user(context("bob")).unwrap();
    assert_eq!(factory.stats().users, 2);

    tokio::time::sleep(Duration::from_millis(60)).await;
    // Idle engines (a, and bob's) are closed; the busy one stays; bob's entry goes.
    let report = factory.cleanup_idle();
    assert_eq!((report.engines_closed, report.users_dropped), (2, 1));
    assert!(a.is_closed() && !b.is_closed());
    assert_eq!(factory.stats().users, 1);
    // At the cap, an idle engine makes room for a new one.
    factory.create_for_user(context("alice")).unwrap();

    busy.cancel("done");
    busy.wait().await;
    factory.release(&b);
    tokio::time::sleep(Duration::from_millis(60)).await;
    factory.cleanup_idle();
    assert_eq!(factory.stats().users, 0, "{:?}", factory.stats());
}

#[tokio::test]
async fn runs_see_their_own_context_and_events_carry_the_thread() {
    let h = Harness::new();
    let thread = ThreadId::parse("thr_conversation1").unwrap();
    let ctx = UserExecutionContext::builder(user_id("alice"))
        .thread_id(thread.clone())
        .build()
        .unwrap();
    let engine = UserExecutionEngine::create_execution_engine(ctx, h.registry.clone(), h.sink());
    let first = engine
        .execute_agent("echo", shape(json!({})))
        .await
        .unwrap();
    let second = engine
        .execute_agent("echo", shape(json!({})))
        .await
        .unwrap();
    for run in [first, second] {
        let id = run.run_id().clone();
        let RunOutcome::Completed { output, .. } = run.wait().await else {
            panic!()
        };
        assert_eq!(
            output.result["run_id"],
            id.as_str(),
            "the agent saw another run's id"
        );
    }
    assert!(h.events("alice").iter().all(|e| e.thread_id == thread));
    let stats = engine.stats();
    assert_eq!((stats.total_runs, stats.completed), (2, 2));
}

/// Cancels its own run and fails in the same poll: the exact interleaving of a cancel that
/// lands while the engine is polling the agent.
struct CancelledMidPoll;
#[async_trait::async_trait]
impl agent_registry::Agent for CancelledMidPoll {
    async fn run(
        &self,
        ctx: &agent_registry::AgentContext,
        _: agent_registry::AgentInput,
    ) -> Result<agent_registry::AgentOutput, agent_registry::AgentError> {
        ctx.cancellation().cancel();
        Err(agent_registry::AgentError::new(
            "tool_failed",
            "the tool call was cancelled",
        ))
    }
}

#[tokio::test]
async fn a_failure_caused_by_a_cancel_is_reported_as_the_cancel() {
    let h = Harness::new();
    let mut registry = agent_registry::AgentRegistry::new();
    registry
        .register_agent(agent_registry::AgentSpec::new("mid_poll", || {
            CancelledMidPoll
        }))
        .unwrap();
    let engine = UserExecutionEngine::create_execution_engine(
        context("alice"),
        std::sync::Arc::new(registry),
        h.sink(),
    );
    let outcome = engine
        .execute_agent("mid_poll", hang())
        .await
        .unwrap()
        .wait()
        .await;
    assert!(matches!(outcome, RunOutcome::Cancelled(_)), "{outcome:?}");
    let events = h.events("alice");
    assert_eq!(types(&events), ["agent_started", "agent_cancelled"]);
}
