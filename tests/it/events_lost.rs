//! A run one of whose events the sink refused (a node's publish queue full while Redis is out
//! of reach) is stopped and ends `agent_error` `events_lost`, rather than going on with a
//! hole in its stream that its client cannot see; other runs and users go on untouched.

use std::sync::Arc;

use agent_registry::{Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentSpec};
use async_trait::async_trait;
use core_context::event::{EventKind, error_code};
use core_context::lifecycle::check_lifecycle;
use core_context::{AgentEvent, EmitError, EventSink, RecordingSink, UserId};
use execution_engine::{EngineConfig, ExecutionEngineFactory, RunOutcome};
use parking_lot::Mutex;
use serde_json::json;

use crate::support::{Harness, context, shape, types};

/// Which events a [`Refusing`] sink refuses.
type Rule = Box<dyn Fn(&UserId, &AgentEvent) -> bool + Send + Sync>;

/// Records the events it takes; refuses those its rule picks, as a broker short of room
/// would, and keeps them apart.
pub struct Refusing {
    pub taken: RecordingSink,
    pub refused: Mutex<Vec<AgentEvent>>,
    rule: Rule,
}

impl Refusing {
    pub fn new(rule: impl Fn(&UserId, &AgentEvent) -> bool + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            taken: RecordingSink::new(),
            refused: Mutex::new(Vec::new()),
            rule: Box::new(rule),
        })
    }
}

impl EventSink for Refusing {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        if (self.rule)(user_id, &event) {
            self.refused.lock().push(event);
            return Err(EmitError::Rejected("no room".into()));
        }
        self.taken.emit(user_id, event)
    }
}

/// The step of an `agent_thinking`.
pub(crate) fn thinking_step(event: &AgentEvent) -> Option<u32> {
    match event.kind {
        EventKind::AgentThinking { step, .. } => Some(step),
        _ => None,
    }
}

fn error_code_of(outcome: &RunOutcome) -> &str {
    outcome.error_code().unwrap_or("(not failed)")
}

/// Alice's third thinking step is refused while 20 other users run the same agent on the same
/// sink: her run stops there (its agent takes no further step) and ends `events_lost`, its
/// start and its end seen; every other run completes with all its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_event_was_refused_stops_and_ends_events_lost() {
    let h = Harness::new();
    let sink =
        Refusing::new(|user, event| user.as_str() == "alice" && thinking_step(event) == Some(3));
    let factory =
        ExecutionEngineFactory::new(h.registry.clone(), sink.clone(), EngineConfig::default());
    let input = || shape(json!({"thinking": 10, "tools": 0, "chunks": 2, "sleep_ms": 2}));
    let mut runs = Vec::new();
    for user in std::iter::once("alice".to_owned()).chain((0..20).map(|u| format!("user{u:02}"))) {
        let engine = factory.create_for_user(context(&user)).unwrap();
        runs.push((
            user,
            engine.execute_agent("synthetic", input()).await.unwrap(),
        ));
    }
    for (user, run) in runs {
        let outcome = run.wait().await;
        let events = sink.taken.events_for(&crate::support::user_id(&user));
        check_lifecycle(&events).unwrap_or_else(|v| panic!("{user}: {v}"));
        if user != "alice" {
            assert!(outcome.is_completed(), "{user}: {outcome:?}");
            assert_eq!(events.len(), 1 + 10 + 2 + 1, "{user}: {:?}", types(&events));
            continue;
        }
        assert_eq!(
            error_code_of(&outcome),
            error_code::EVENTS_LOST,
            "{outcome:?}"
        );
        assert_eq!(
            types(&events),
            [
                "agent_started",
                "agent_thinking",
                "agent_thinking",
                "agent_error"
            ],
            "alice's run stopped at the refused step and said so"
        );
        let EventKind::AgentError { code, message } = &events[3].kind else {
            unreachable!()
        };
        assert_eq!(code, error_code::EVENTS_LOST);
        assert!(message.contains("one of its events"), "{message}");
    }
    let refused = sink.refused.lock();
    assert_eq!(
        refused.len(),
        1,
        "only the one event was refused: {refused:?}"
    );
}

/// A run whose `agent_started` was refused never runs its agent: it ends `events_lost` at
/// once, and the sink sees nothing else of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_start_was_refused_never_runs_its_agent() {
    let h = Harness::new();
    let sink = Refusing::new(|_, event| matches!(event.kind, EventKind::AgentStarted { .. }));
    let factory =
        ExecutionEngineFactory::new(h.registry.clone(), sink.clone(), EngineConfig::default());
    let engine = factory.create_for_user(context("alice")).unwrap();
    let input = shape(json!({"thinking": 3, "tools": 0, "sleep_ms": 2}));
    let run = engine.execute_agent("synthetic", input).await.unwrap();
    let outcome = run.wait().await;
    assert_eq!(
        error_code_of(&outcome),
        error_code::EVENTS_LOST,
        "{outcome:?}"
    );
    let taken = sink.taken.events_for(&crate::support::user_id("alice"));
    assert_eq!(types(&taken), ["agent_error"]);
    assert_eq!(
        types(&sink.refused.lock()),
        ["agent_started"],
        "the agent never ran, so it emitted nothing"
    );
}

/// Runs one sub-run of the agent and input it is given, and reports the sub-run's error code.
struct Delegate;

#[async_trait]
impl Agent for Delegate {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let sub = AgentInput::message("part").with_input(input.input.clone());
        let result = match ctx.run_sub_agent("synthetic", sub).await {
            Ok(_) => json!({"sub": "completed"}),
            Err(error) => json!({"sub": error.code}),
        };
        ctx.respond_chunk("done");
        Ok(result.into())
    }
}

/// A sub-run whose event was refused ends `events_lost` itself; its parent, whose own events
/// were taken, hears of it as the sub-run's error and goes on to complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_run_whose_event_was_refused_ends_events_lost_and_its_parent_goes_on() {
    let h = Harness::new();
    let mut registry = agent_registry::AgentRegistry::clone(&h.registry);
    registry
        .register_agent(AgentSpec::new("delegate", || Delegate))
        .unwrap();
    let sink =
        Refusing::new(|_, event| event.parent_run_id.is_some() && thinking_step(event) == Some(2));
    let factory =
        ExecutionEngineFactory::new(Arc::new(registry), sink.clone(), EngineConfig::default());
    let engine = factory.create_for_user(context("alice")).unwrap();
    let input = shape(json!({"thinking": 5, "tools": 0, "sleep_ms": 2}));
    let run = engine.execute_agent("delegate", input).await.unwrap();
    let parent = run.run_id().clone();
    let RunOutcome::Completed { output, .. } = run.wait().await else {
        panic!("the parent did not complete")
    };
    assert_eq!(output.result, json!({"sub": error_code::EVENTS_LOST}));
    let events = sink.taken.events();
    let events: Vec<AgentEvent> = events.into_iter().map(|(_, e)| e).collect();
    let summary = check_lifecycle(&events).unwrap();
    assert_eq!(
        (summary.runs, summary.sub_runs, summary.completed),
        (2, 1, 1)
    );
    assert_eq!(summary.errors.get(error_code::EVENTS_LOST), Some(&1));
    let sub: Vec<_> = events.iter().filter(|e| e.run_id != parent).collect();
    assert_eq!(
        sub.iter().map(|e| e.kind.type_name()).collect::<Vec<_>>(),
        ["agent_started", "agent_thinking", "agent_error"],
        "the sub-run stopped at its refused step"
    );
}
