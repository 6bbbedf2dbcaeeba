//! The dispatcher and the context: events around every call, errors as results, redaction,
//! cancellation, abandoned calls, thinking steps, fresh agents, registration errors.

use async_trait::async_trait;
use core_context::lifecycle::check_lifecycle;
use core_context::{RecordingSink, RunId, ThreadId, UserId};
use serde_json::json;

use super::*;
use crate::{Agent, AgentContextParts, AgentRegistry, AgentSpec, Tool, parse_args};

struct Echo;
#[async_trait]
impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "returns its arguments"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        Ok(args)
    }
}

struct Sleepy;
#[async_trait]
impl Tool for Sleepy {
    fn name(&self) -> &str {
        "sleepy"
    }
    fn description(&self) -> &str {
        "sleeps for `ms` milliseconds"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]})
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        #[derive(serde::Deserialize)]
        struct Args {
            ms: u64,
        }
        let Args { ms } = parse_args(args)?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(json!({"slept_ms": ms}))
    }
}

struct Panicky;
#[async_trait]
impl Tool for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "panics"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, _: &UserExecutionContext, _: Value) -> Result<Value, ToolError> {
        panic!("boom")
    }
}

fn context(sink: &Arc<RecordingSink>) -> AgentContext {
    let mut registry = AgentRegistry::new();
    registry.register_tool(Echo).expect("register");
    registry.register_tool(Sleepy).expect("register");
    registry.register_tool(Panicky).expect("register");
    let user = UserId::parse("alice").expect("valid");
    AgentContext::new(AgentContextParts {
        user_context: UserExecutionContext::builder(user).build().expect("valid"),
        scope: RunScope {
            run_id: RunId::parse("run_t").expect("valid"),
            parent_run_id: None,
            thread_id: ThreadId::parse("thr_t").expect("valid"),
            agent_name: Arc::from("tester"),
        },
        sink: Arc::clone(sink) as Arc<dyn EventSink>,
        registry: Arc::new(registry),
        cancellation: CancellationToken::new(),
        dispatch: DispatchConfig::default(),
        sub_runner: None,
        deadline: None,
        approvals: Default::default(),
        steps_taken: 0,
        inbox: None,
        meter: None,
    })
}

/// The `tool_completed` data of the only tool call in `sink`.
fn completion(sink: &RecordingSink) -> (Value, bool) {
    let events: Vec<_> = sink.events().into_iter().map(|(_, e)| e.kind).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let EventKind::ToolExecuting {
        tool_call_id: a, ..
    } = &events[0]
    else {
        panic!("first is {:?}", events[0]);
    };
    let EventKind::ToolCompleted {
        tool_call_id: b,
        result,
        is_error,
        ..
    } = &events[1]
    else {
        panic!("second is {:?}", events[1]);
    };
    assert_eq!(a, b);
    (result.clone(), *is_error)
}

/// Calls `tool` with `args` and compares the completion's error code (`None` = success).
async fn check(tool: &str, args: Value, expected_error: Option<&str>) {
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    let outcome = ctx.call_tool(tool, args).await;
    let (result, is_error) = completion(&sink);
    assert_eq!(is_error, outcome.is_err());
    match expected_error {
        None => assert!(outcome.is_ok(), "{tool}: {outcome:?}"),
        Some(code) => assert_eq!(result["code"], code, "{tool}: {result}"),
    }
}

#[tokio::test]
async fn dispatch_table() {
    check("echo", json!({"a": 1}), None).await;
    check("nope", json!({}), Some("unknown_tool")).await;
    check("sleepy", json!({"ms": "x"}), Some("invalid_arguments")).await;
    check("sleepy", json!({"ms": 1}), None).await;
    check("sleepy", json!({"ms": 5_000}), Some("timeout")).await;
    check("panicky", json!({}), Some("panic")).await;
}

#[tokio::test]
async fn unknown_tool_lists_the_available_ones() {
    let sink = Arc::new(RecordingSink::new());
    let err = context(&sink)
        .call_tool("nope", json!({}))
        .await
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no tool named \"nope\"; available: echo, panicky, sleepy"
    );
}

#[tokio::test]
async fn events_redact_but_the_agent_sees_real_values() {
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    let args = json!({"query": "q", "api_key": "sk-live-123"});
    let result = ctx.call_tool("echo", args.clone()).await.expect("ok");
    assert_eq!(result, args);
    let events = sink.events();
    let text =
        serde_json::to_string(&events.iter().map(|(_, e)| e).collect::<Vec<_>>()).expect("encode");
    assert!(!text.contains("sk-live-123"), "{text}");
    assert!(text.contains("[REDACTED]"));
}

#[tokio::test]
async fn cancellation_stops_a_running_tool() {
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    ctx.cancellation().cancel();
    let err = ctx
        .call_tool("sleepy", json!({"ms": 50}))
        .await
        .expect_err("cancelled");
    assert_eq!(err, ToolError::Cancelled);
    assert_eq!(completion(&sink).0["code"], "cancelled");
}

#[tokio::test]
async fn an_abandoned_call_is_still_closed() {
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    {
        let call = ctx.call_tool("sleepy", json!({"ms": 50}));
        let polled = tokio::time::timeout(Duration::from_millis(5), call).await;
        assert!(polled.is_err(), "the call should still be running");
    }
    let (result, is_error) = completion(&sink);
    assert!(is_error);
    assert_eq!(result["code"], "abandoned");
}

#[tokio::test]
async fn thinking_steps_count_up_and_the_stream_is_a_valid_lifecycle() {
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    // The engine emits start and end; emulate them around the agent's own events.
    let scope = ctx.scope().clone();
    let user = ctx.user_context().user_id().clone();
    sink.emit(
        &user,
        scope.event(EventKind::AgentStarted {
            message: "m".into(),
        }),
    )
    .expect("emit");
    ctx.think("one");
    ctx.call_tool("echo", json!({})).await.expect("ok");
    ctx.think("two");
    ctx.respond_chunk("done");
    sink.emit(
        &user,
        scope.event(EventKind::AgentCompleted {
            result: json!("done"),
            duration_ms: 0,
            usage: None,
        }),
    )
    .expect("emit");
    let events: Vec<_> = sink.events_for(&user);
    let summary = check_lifecycle(&events).expect("valid lifecycle");
    assert_eq!(summary.tool_calls, 1);
    let steps: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::AgentThinking { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2]);
}

struct Counter {
    runs: AtomicU32,
}
#[async_trait]
impl Agent for Counter {
    async fn run(&self, _: &AgentContext, _: AgentInput) -> Result<AgentOutput, AgentError> {
        Ok(json!(self.runs.fetch_add(1, Ordering::Relaxed) + 1).into())
    }
}

#[tokio::test]
async fn every_run_gets_a_fresh_agent() {
    let mut registry = AgentRegistry::new();
    registry
        .register_agent(AgentSpec::new("counter", || Counter {
            runs: AtomicU32::new(0),
        }))
        .expect("register");
    let sink = Arc::new(RecordingSink::new());
    let ctx = context(&sink);
    for _ in 0..3 {
        let created = registry.create_agent("counter").expect("registered");
        assert_eq!(&*created.name, "counter");
        let out = created
            .agent
            .run(&ctx, AgentInput::message("hi"))
            .await
            .expect("ok");
        assert_eq!(out.result, json!(1), "state leaked from an earlier run");
    }
}

#[test]
fn registration_errors_are_clear() {
    let mut registry = AgentRegistry::new();
    let spec = || {
        AgentSpec::new("counter", || Counter {
            runs: AtomicU32::new(0),
        })
    };
    registry
        .register_agent(spec().description("counts").timeout(Duration::from_secs(2)))
        .expect("first");
    assert_eq!(
        registry.register_agent(spec()).map_err(|e| e.to_string()),
        Err("an agent named \"counter\" is already registered".into())
    );
    assert_eq!(
        registry
            .register_agent(AgentSpec::new("Bad Name", || Counter {
                runs: AtomicU32::new(0)
            }))
            .map_err(|e| e.to_string()),
        Err(
            "agent name \"Bad Name\" is invalid: use 1 to 64 characters of a-z, 0-9, _ and -"
                .into()
        )
    );
    registry.register_tool(Echo).expect("first");
    assert!(matches!(
        registry.register_tool(Echo),
        Err(RegistryError::Duplicate { kind: "tool", .. })
    ));
    let err = registry
        .create_agent("nope")
        .map(|_| ())
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no agent named \"nope\"; available: counter"
    );
    let listed = registry.list_agents();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].timeout_ms, Some(2_000));
    assert_eq!(registry.list_tools()[0].name, "echo");
}

use crate::RegistryError;
