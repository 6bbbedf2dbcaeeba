//! The dispatcher's bounds: arguments checked against the tool's schema before the call
//! (built-in tools and a tool set's), results bounded in size after it, both counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use core_context::event::EventKind;
use core_context::{
    CancellationToken, EventSink, RecordingSink, RunId, RunScope, ThreadId, UserExecutionContext,
    UserId,
};
use serde_json::{Value, json};

use crate::{
    AgentContext, AgentContextParts, AgentRegistry, DispatchConfig, Tool, ToolCounts, ToolError,
    ToolSet,
};

/// A tool with a given schema that counts its calls and answers `{"text": "x" * len}`
/// (`len` from its arguments, 0 when absent).
struct Counting {
    name: &'static str,
    schema: Value,
    calls: AtomicU32,
}

impl Counting {
    fn new(name: &'static str, schema: Value) -> Arc<Self> {
        Arc::new(Self {
            name,
            schema,
            calls: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl Tool for Counting {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "counts its calls"
    }
    fn parameters(&self) -> Value {
        self.schema.clone()
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let len = args["len"].as_u64().unwrap_or(0) as usize;
        if args["fail"] == true {
            return Err(ToolError::Failed("e".repeat(len)));
        }
        Ok(json!({ "text": "x".repeat(len) }))
    }
}

/// A tool set holding one tool, as an MCP server's would.
struct OneSet(Arc<Counting>);

impl ToolSet for OneSet {
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        vec![Arc::clone(&self.0) as Arc<dyn Tool>]
    }
    fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        (name == self.0.name).then(|| Arc::clone(&self.0) as Arc<dyn Tool>)
    }
}

fn strict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"len": {"type": "integer", "minimum": 0}, "fail": {"type": "boolean"}},
        "required": ["len"],
        "additionalProperties": false,
    })
}

struct Fixture {
    ctx: AgentContext,
    sink: Arc<RecordingSink>,
    registry: Arc<AgentRegistry>,
    builtin: Arc<Counting>,
    remote: Arc<Counting>,
    broken: Arc<Counting>,
}

fn fixture(max_result_bytes: usize) -> Fixture {
    let builtin = Counting::new("strict", strict_schema());
    let remote = Counting::new("remote", strict_schema());
    // Not a schema (`type` names no type): the tool stays callable, unchecked.
    let broken = Counting::new("broken", json!({"type": "integr"}));
    let mut registry = AgentRegistry::new();
    registry
        .register_shared_tool(Arc::clone(&builtin) as Arc<dyn Tool>)
        .expect("register");
    registry
        .register_shared_tool(Arc::clone(&broken) as Arc<dyn Tool>)
        .expect("register");
    registry.register_tool_set(Arc::new(OneSet(Arc::clone(&remote))));
    let registry = Arc::new(registry);
    let sink = Arc::new(RecordingSink::new());
    let user = UserId::parse("alice").expect("valid");
    let ctx = AgentContext::new(AgentContextParts {
        user_context: UserExecutionContext::builder(user).build().expect("valid"),
        scope: RunScope {
            run_id: RunId::parse("run_b").expect("valid"),
            parent_run_id: None,
            thread_id: ThreadId::parse("thr_b").expect("valid"),
            agent_name: Arc::from("tester"),
        },
        sink: Arc::clone(&sink) as Arc<dyn EventSink>,
        registry: Arc::clone(&registry),
        cancellation: CancellationToken::new(),
        dispatch: DispatchConfig {
            max_result_bytes,
            ..DispatchConfig::default()
        },
        sub_runner: None,
        deadline: None,
        approvals: Default::default(),
        steps_taken: 0,
        inbox: None,
        meter: None,
    });
    Fixture {
        ctx,
        sink,
        registry,
        builtin,
        remote,
        broken,
    }
}

/// The `tool_completed` result of the last call.
fn last_completion(sink: &RecordingSink) -> (Value, bool) {
    sink.events()
        .into_iter()
        .rev()
        .find_map(|(_, e)| match e.kind {
            EventKind::ToolCompleted {
                result, is_error, ..
            } => Some((result, is_error)),
            _ => None,
        })
        .expect("a tool_completed")
}

/// Calls `tool` with `args`: `Ok(())` when the tool ran, or the refusal's message, which the
/// caller and the `tool_completed` event must both carry (with code `invalid_arguments`).
async fn check(f: &Fixture, tool: &str, args: Value, expected: Result<(), &str>) {
    let counted = |t: &Counting| t.calls.load(Ordering::SeqCst);
    let before = (counted(&f.builtin), counted(&f.remote), counted(&f.broken));
    let outcome = f.ctx.call_tool(tool, args.clone()).await;
    let after = (counted(&f.builtin), counted(&f.remote), counted(&f.broken));
    let (event, is_error) = last_completion(&f.sink);
    match expected {
        Ok(()) => {
            assert!(outcome.is_ok(), "{tool} {args}: {outcome:?}");
            assert_ne!(before, after, "{tool} {args}: the tool did not run");
        }
        Err(message) => {
            assert_eq!(
                outcome,
                Err(ToolError::InvalidArguments(message.to_owned())),
                "{tool} {args}"
            );
            assert_eq!(before, after, "{tool} {args}: the tool ran");
            assert!(is_error);
            assert_eq!(event["code"], "invalid_arguments");
            assert_eq!(event["error"], format!("invalid arguments: {message}"));
        }
    }
}

#[tokio::test]
async fn arguments_are_checked_against_the_schema_before_the_call() {
    let f = fixture(1_024);
    for tool in ["strict", "remote"] {
        check(&f, tool, json!({"len": 1}), Ok(())).await;
        check(
            &f,
            tool,
            json!({"len": "x"}),
            Err("/len: want integer, but got string"),
        )
        .await;
        check(
            &f,
            tool,
            json!({}),
            Err("(arguments): missing properties 'len'"),
        )
        .await;
        check(
            &f,
            tool,
            json!({"len": 1, "mode": "fast"}),
            Err("(arguments): additionalProperties 'mode' not allowed"),
        )
        .await;
        check(
            &f,
            tool,
            json!("len=1"),
            Err("(arguments): want object, but got string"),
        )
        .await;
    }
    // A schema that does not compile checks nothing: the tool gets what it is given.
    check(&f, "broken", json!("anything"), Ok(())).await;
    let counts = f.registry.tool_counts();
    let refused = |t: &str| counts.get(t).copied().unwrap_or_default();
    assert_eq!(refused("strict").invalid_arguments, 4);
    assert_eq!(refused("remote").invalid_arguments, 4);
    assert_eq!(refused("broken"), ToolCounts::default());
}

#[tokio::test]
async fn results_over_the_bound_are_truncated_for_the_agent_and_the_events() {
    let max = 1_000;
    let f = fixture(max);
    // Under the bound: untouched, not counted.
    let small = f
        .ctx
        .call_tool("strict", json!({"len": 10}))
        .await
        .expect("ok");
    assert_eq!(small, json!({"text": "x".repeat(10)}));
    assert_eq!(last_completion(&f.sink).0, small);
    assert!(f.registry.tool_counts().is_empty());

    // Over it: the agent gets the marked form, valid JSON within the bound.
    for tool in ["strict", "remote"] {
        let big = f
            .ctx
            .call_tool(tool, json!({"len": 100_000}))
            .await
            .expect("ok");
        assert_eq!(big["truncated"], true, "{big}");
        assert_eq!(big["bytes"], 100_011);
        assert_eq!(big["max_bytes"], max);
        let text = big.to_string();
        assert!(text.len() <= max, "{}", text.len());
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        assert!(
            big["preview"]
                .as_str()
                .unwrap()
                .starts_with("{\"text\":\"xxx")
        );
        // The user's event shows the truncated form too (its preview further cut by the
        // event redaction's string bound).
        let (event, is_error) = last_completion(&f.sink);
        assert!(!is_error);
        assert_eq!(
            (&event["truncated"], &event["bytes"]),
            (&json!(true), &json!(100_011))
        );
    }
    // A failure's long message is cut too.
    let failed = f
        .ctx
        .call_tool("strict", json!({"len": 5_000, "fail": true}))
        .await
        .expect_err("failed");
    let ToolError::Failed(message) = &failed else {
        panic!("{failed:?}")
    };
    assert!(message.ends_with("…[truncated 4000 bytes]"), "{message}");
    let counts = f.registry.tool_counts();
    assert_eq!(counts["strict"].truncated_results, 2);
    assert_eq!(counts["remote"].truncated_results, 1);
}
