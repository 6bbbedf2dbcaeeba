//! Approvals in the engine, with an in-memory store of paused runs: a call that needs a
//! person holds its run (saved, `approval_requested`, no terminal event, no slot held), and
//! the run resumes from what was saved with each decision; a decided call runs once; runs
//! that cannot pause refuse such calls without running the tool.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
    ApprovalPolicy, DecidedCall, ResultLog, Tool, ToolError,
};
use async_trait::async_trait;
use core_context::approval::{Decision, PendingCall};
use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use core_context::{RecordingSink, RunId, UserExecutionContext};
use execution_engine::{
    EngineConfig, ExecutionEngineFactory, PausedRun, PausedRuns, Resume, RunOutcome,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::{types, user_id};

/// Paused runs and recorded results, in memory.
#[derive(Default)]
pub struct MemoryPaused {
    pub runs: Mutex<Vec<PausedRun>>,
    pub results: Mutex<HashMap<(String, String), Value>>,
}

#[async_trait]
impl ResultLog for MemoryPaused {
    async fn record(&self, run: &RunId, tool_call_id: &str, result: &Value) {
        self.results
            .lock()
            .insert((run.to_string(), tool_call_id.to_owned()), result.clone());
    }
}

#[async_trait]
impl PausedRuns for MemoryPaused {
    async fn save(&self, run: &PausedRun) -> Result<(), String> {
        self.runs.lock().push(run.clone());
        Ok(())
    }
}

/// Counts its calls; asks for approval itself when its arguments say `risky`.
pub struct Tally(pub Arc<AtomicU32>);

#[async_trait]
impl Tool for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    fn description(&self) -> &str {
        "counts its calls"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"risky": {"type": "boolean"}}})
    }
    fn needs_approval(&self, args: &Value) -> bool {
        args["risky"] == true
    }
    async fn call(&self, _: &UserExecutionContext, _: Value) -> Result<Value, ToolError> {
        Ok(json!({"count": self.0.fetch_add(1, Ordering::SeqCst) + 1}))
    }
}

/// Calls `input.tool` with `input.args` once under the id `c1`, pausing when it is held.
struct OneCall;

impl OneCall {
    async fn call(ctx: &AgentContext, input: &AgentInput) -> Result<AgentOutput, AgentError> {
        let tool = input.input["tool"].as_str().unwrap_or("tally");
        match ctx
            .call_tool_with_id("c1", tool, input.input["args"].clone())
            .await
        {
            Err(ToolError::AwaitingApproval) => Err(ctx.pause(json!({"at": "c1"}))),
            Ok(value) => Ok(value.into()),
            Err(error) => Ok(json!({"error": error.code()}).into()),
        }
    }
}

#[async_trait]
impl Agent for OneCall {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        Self::call(ctx, &input).await
    }
    fn can_pause(&self) -> bool {
        true
    }
    async fn resume(
        &self,
        ctx: &AgentContext,
        input: AgentInput,
        state: Value,
    ) -> Result<AgentOutput, AgentError> {
        assert_eq!(state, json!({"at": "c1"}), "the state comes back as saved");
        Self::call(ctx, &input).await
    }
}

/// Runs `one_call` as a sub-run.
struct Parent;

#[async_trait]
impl Agent for Parent {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        ctx.run_sub_agent("one_call", input).await
    }
}

struct World {
    factory: ExecutionEngineFactory,
    sink: Arc<RecordingSink>,
    store: Arc<MemoryPaused>,
    tallies: Arc<AtomicU32>,
}

fn world(patterns: &[&str], keep_paused: bool) -> World {
    let tallies = Arc::new(AtomicU32::new(0));
    let mut registry = AgentRegistry::new();
    agents::register_local(&mut registry).unwrap();
    registry.register_tool(Tally(Arc::clone(&tallies))).unwrap();
    registry
        .register_agent(AgentSpec::new("one_call", || OneCall))
        .unwrap();
    registry
        .register_agent(AgentSpec::new("parent", || Parent))
        .unwrap();
    let sink = Arc::new(RecordingSink::new());
    let config = EngineConfig {
        max_concurrent_runs: 1,
        approve_tools: ApprovalPolicy::new(patterns.iter().copied()).unwrap(),
        ..EngineConfig::default()
    };
    let store = Arc::new(MemoryPaused::default());
    let mut factory = ExecutionEngineFactory::new(Arc::new(registry), sink.clone(), config);
    if keep_paused {
        factory = factory.with_paused_runs(store.clone());
    }
    World {
        factory,
        sink,
        store,
        tallies,
    }
}

impl World {
    /// Starts `agent` for `user` and waits for it to end or pause.
    async fn start(&self, user: &str, agent: &str, input: AgentInput) -> (RunId, RunOutcome) {
        let context = UserExecutionContext::builder(user_id(user))
            .build()
            .unwrap();
        let engine = self.factory.create_for_user(context).unwrap();
        let handle = engine.execute_agent(agent, input).await.unwrap();
        let run = handle.run_id().clone();
        let outcome = handle.wait().await;
        self.factory.release(&engine);
        (run, outcome)
    }

    /// Resumes `user`'s paused run with `decision` for each held call.
    async fn resume(&self, user: &str, decide: impl Fn(&PendingCall) -> Decision) -> RunOutcome {
        let paused = self.store.runs.lock().pop().expect("a paused run");
        assert_eq!(paused.user, user_id(user));
        resume_paused(&self.factory, paused, decide, None).await
    }

    fn events(&self, user: &str, run: &RunId) -> Vec<core_context::AgentEvent> {
        self.sink
            .events_for(&user_id(user))
            .into_iter()
            .filter(|e| &e.run_id == run)
            .collect()
    }
}

/// Resumes `paused` on an engine of `factory` whose context names the run, as the server
/// does: `decide`'s decision for each held call announced, then the run resumed with them
/// (each with `recorded` as its recorded result); its outcome.
pub async fn resume_paused(
    factory: &ExecutionEngineFactory,
    paused: PausedRun,
    decide: impl Fn(&PendingCall) -> Decision,
    recorded: Option<Value>,
) -> RunOutcome {
    let context = UserExecutionContext::builder(paused.user.clone())
        .thread_id(paused.scope.thread_id.clone())
        .run_id(paused.scope.run_id.clone())
        .build()
        .unwrap();
    let engine = factory.create_for_user(context).unwrap();
    let agent = paused.scope.agent_name.clone();
    let decided: Vec<DecidedCall> = paused
        .calls
        .iter()
        .map(|(call, _)| DecidedCall {
            call: call.clone(),
            decision: decide(call),
            result: recorded.clone(),
        })
        .collect();
    for call in &decided {
        engine.announce_decision(&agent, &call.call.tool_call_id, call.decision.name());
    }
    let resume = Resume {
        message: paused.message,
        input: paused.input,
        state: paused.state,
        decided,
    };
    let outcome = engine
        .resume_agent(&agent, resume)
        .await
        .unwrap()
        .wait()
        .await;
    factory.release(&engine);
    outcome
}

fn answer(outcome: &RunOutcome) -> String {
    match outcome {
        RunOutcome::Completed { output, .. } => output.result.as_str().unwrap_or("").to_owned(),
        other => panic!("the run did not complete: {other:?}"),
    }
}

/// The assistant pauses at `calculator` and each decision resumes it to the answer it
/// implies; the whole stream of the run keeps the lifecycle, with no second start.
#[tokio::test]
async fn the_assistant_pauses_for_calculator_and_each_decision_resumes_it() {
    let table: [(Decision, &str); 5] = [
        (Decision::Approve, "`12*7` = 84."),
        (
            Decision::Edit {
                arguments: json!({"expression": "12*8"}),
            },
            "`12*8` = 96.",
        ),
        (
            Decision::Reject {
                message: Some("not now".into()),
            },
            "I could not use calculator: a person rejected this call: not now.",
        ),
        (
            Decision::Respond {
                message: "about 84".into(),
            },
            "A person answered for calculator: about 84",
        ),
        (
            Decision::Expired,
            "I could not use calculator: nobody approved this call in time; the tool was not called.",
        ),
    ];
    for (decision, expected) in table {
        let w = world(&["calculator"], true);
        let (run, outcome) = w
            .start("alice", "assistant", AgentInput::message("What is 12*7?"))
            .await;
        let RunOutcome::Paused(calls) = &outcome else {
            panic!("expected a pause, got {outcome:?}");
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].tool_name, "calculator");
        assert_eq!(calls[0].arguments, json!({"expression": "12*7"}));
        let paused = w.events("alice", &run);
        assert_eq!(
            types(&paused),
            [
                "agent_started",
                "agent_thinking",
                "agent_thinking",
                "agent_thinking",
                "approval_requested"
            ]
        );
        let summary = check_lifecycle(&paused).unwrap();
        assert_eq!(summary.paused, 1);
        {
            let saved = w.store.runs.lock();
            assert_eq!(saved[0].message, "What is 12*7?");
            assert_eq!(saved[0].scope.run_id, run);
        }
        let name = decision.name();
        let resumed = w.resume("alice", move |_| decision.clone()).await;
        assert_eq!(answer(&resumed), expected, "{name}");
        let all = w.events("alice", &run);
        let summary = check_lifecycle(&all).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((summary.completed, summary.paused), (1, 0), "{name}");
        let after: Vec<_> = types(&all).split_off(paused.len());
        assert_eq!(
            after[..3],
            ["approval_resolved", "tool_executing", "tool_completed"],
            "{name}"
        );
        assert_eq!(after.last(), Some(&"agent_completed"));
        assert_eq!(
            all.iter()
                .filter(|e| e.kind.type_name() == "agent_started")
                .count(),
            1
        );
        // Thinking steps go on counting across the pause.
        let steps: Vec<u32> = all
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::AgentThinking { step, .. } => Some(step),
                _ => None,
            })
            .collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    }
}

/// A tool that asks for approval itself is held only for the arguments it names; an
/// approved call runs once and its result is recorded under its id; a call whose result is
/// already recorded is answered from the record, never run again.
#[tokio::test]
async fn a_decided_call_runs_once_and_a_recorded_one_never_again() {
    let w = world(&[], true);
    let input = |risky: bool| {
        AgentInput::message("count").with_input(json!({"tool": "tally", "args": {"risky": risky}}))
    };
    let (_, outcome) = w.start("bob", "one_call", input(false)).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(w.tallies.load(Ordering::SeqCst), 1);

    let (run, outcome) = w.start("bob", "one_call", input(true)).await;
    assert!(matches!(outcome, RunOutcome::Paused(_)), "{outcome:?}");
    assert_eq!(w.tallies.load(Ordering::SeqCst), 1, "held, not run");
    let saved = w.store.runs.lock().last().cloned().unwrap();
    let resumed = w.resume("bob", |_| Decision::Approve).await;
    assert_eq!(answer_value(&resumed), json!({"count": 2}));
    assert_eq!(w.tallies.load(Ordering::SeqCst), 2);
    let recorded = w
        .store
        .results
        .lock()
        .get(&(run.to_string(), "c1".to_owned()))
        .cloned();
    assert_eq!(recorded, Some(json!({"count": 2})));

    // The same pause resumed again (a retry) with the recorded result: not run again.
    w.store.runs.lock().push(saved);
    let paused = w.store.runs.lock().pop().unwrap();
    let again = resume_paused(&w.factory, paused, |_| Decision::Approve, recorded).await;
    assert_eq!(answer_value(&again), json!({"count": 2}));
    assert_eq!(w.tallies.load(Ordering::SeqCst), 2, "never run twice");
}

fn answer_value(outcome: &RunOutcome) -> Value {
    match outcome {
        RunOutcome::Completed { output, .. } => output.result.clone(),
        other => panic!("the run did not complete: {other:?}"),
    }
}

/// Where a run cannot pause (a sub-run; a server that keeps no paused runs), a call that
/// needs approval fails with `approval_unavailable` and the tool is not called.
#[tokio::test]
async fn runs_that_cannot_pause_refuse_such_calls_without_running_the_tool() {
    let risky =
        AgentInput::message("count").with_input(json!({"tool": "tally", "args": {"risky": true}}));
    for (agent, keep_paused) in [("parent", true), ("one_call", false)] {
        let w = world(&["calculator"], keep_paused);
        let (_, outcome) = w.start("carol", agent, risky.clone()).await;
        assert_eq!(
            answer_value(&outcome),
            json!({"error": "approval_unavailable"}),
            "{agent}"
        );
        assert_eq!(w.tallies.load(Ordering::SeqCst), 0, "{agent}");
        let events = w.sink.events_for(&user_id("carol"));
        check_lifecycle(&events).unwrap();
        let completed = events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::ToolCompleted {
                    result, is_error, ..
                } => Some((result.clone(), *is_error)),
                _ => None,
            })
            .unwrap();
        assert!(completed.1);
        assert_eq!(completed.0["code"], "approval_unavailable", "{agent}");
        assert!(w.store.runs.lock().is_empty());
    }
}

/// A paused run holds no slot: with one slot per user, a user whose run waits for a person
/// runs the next at once; many users pause and resume at the same time, each seeing only
/// their own runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_runs_hold_no_slot_and_many_users_pause_and_resume_at_once() {
    let w = Arc::new(world(&["calculator"], true));
    let users: Vec<String> = (0..24).map(|i| format!("user{i}")).collect();
    let paused = futures::future::join_all(users.iter().map(|user| {
        let w = Arc::clone(&w);
        async move {
            let (run, outcome) = w
                .start(user, "assistant", AgentInput::message("What is 6*7?"))
                .await;
            assert!(
                matches!(outcome, RunOutcome::Paused(_)),
                "{user}: {outcome:?}"
            );
            // The slot is free: another run of the same user completes meanwhile.
            let (_, other) = w
                .start(
                    user,
                    "assistant",
                    AgentInput::message("What time is it in Tokyo?"),
                )
                .await;
            assert!(other.is_completed(), "{user}: {other:?}");
            run
        }
    }))
    .await;
    assert_eq!(w.store.runs.lock().len(), users.len());
    // Resume each user's own paused run.
    let saved: Vec<PausedRun> = std::mem::take(&mut *w.store.runs.lock());
    let outcomes = futures::future::join_all(saved.into_iter().map(|paused| {
        let w = Arc::clone(&w);
        async move {
            let (user, run) = (paused.user.to_string(), paused.scope.run_id.clone());
            let outcome = resume_paused(&w.factory, paused, |_| Decision::Approve, None).await;
            (user, run, outcome)
        }
    }))
    .await;
    for (user, run, outcome) in outcomes {
        assert_eq!(answer(&outcome), "`6*7` = 42.", "{user}");
        let mine = w.sink.events_for(&user_id(&user));
        assert!(mine.iter().any(|e| e.run_id == run));
        check_lifecycle(&mine).unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(paused.contains(&run));
        // Nobody else saw this user's runs.
        for other in &users {
            if *other != user {
                assert!(
                    !w.sink
                        .events_for(&user_id(other))
                        .iter()
                        .any(|e| e.run_id == run)
                );
            }
        }
    }
}
