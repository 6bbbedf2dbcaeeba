//! Tools inside bounds, as a model meets them: arguments that do not fit a tool's JSON Schema
//! are refused before the call with a message the model reads in its next request (built-in
//! tools, and an MCP server's tools against their `inputSchema`, the request never reaching the
//! server), and a result over the size bound reaches the model and the user's events
//! truncated, with a marker. Both are counted in the server's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_registry::{AgentRegistry, DispatchConfig, Tool, ToolError};
use async_trait::async_trait;
use core_context::UserExecutionContext;
use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use execution_engine::{EngineConfig, RunOutcome, UserExecutionEngine};
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::history_server::http_text;
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::mcp::scripted;
use crate::server_support::{Client, start_server};
use crate::support::{Harness, context};

/// A test tool with a strict schema that counts its calls and answers `len` bytes of text.
struct Blob {
    calls: AtomicU32,
}

#[async_trait]
impl Tool for Blob {
    fn name(&self) -> &str {
        "blob"
    }
    fn description(&self) -> &str {
        "Answers `len` bytes of text."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"len": {"type": "integer", "minimum": 0}},
            "required": ["len"],
            "additionalProperties": false,
        })
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let len = args["len"].as_u64().unwrap_or(0) as usize;
        Ok(json!({"text": "x".repeat(len)}))
    }
}

/// One model turn that makes `calls` (id, tool, arguments) at once.
fn turn(calls: &[(&str, &str, Value)]) -> Reply {
    let mut pieces: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, (id, tool, args))| tool_piece(i as u64, Some(id), Some(tool), &args.to_string()))
        .collect();
    pieces.push(DONE);
    Reply::Stream(pieces)
}

/// The `tool` messages of a request the model got, by call id.
fn tool_messages(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `tool_completed` events of `events`, by call id: (is_error, result).
fn completions(events: &[core_context::AgentEvent]) -> Vec<(String, bool, Value)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCompleted {
                tool_call_id,
                is_error,
                result,
                ..
            } => Some((tool_call_id.clone(), *is_error, result.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_model_reads_argument_refusals_and_truncated_results() {
    let h = Harness::new();
    let model = Model::start(vec![
        // Turn 1: the calculator and the blob with arguments their schemas refuse.
        turn(&[
            ("call_1", "calculator", json!({"expression": 12})),
            ("call_2", "blob", json!({"len": "lots", "mode": "fast"})),
        ]),
        // Turn 2: the blob, asked for more than the bound.
        turn(&[("call_3", "blob", json!({"len": 50_000}))]),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await;
    let blob = Arc::new(Blob {
        calls: AtomicU32::new(0),
    });
    let mut registry = AgentRegistry::new();
    agents::register_local(&mut registry).unwrap();
    registry
        .register_shared_tool(Arc::clone(&blob) as Arc<dyn Tool>)
        .unwrap();
    let config = LlmConfig::new(format!("http://{}/v1", model.addr), "test-model");
    llm_agent::register(&mut registry, config).unwrap();
    let registry = Arc::new(registry);
    let max = 2_048;
    let engine = UserExecutionEngine::create_with_config(
        context("alice"),
        Arc::clone(&registry),
        h.sink(),
        EngineConfig {
            dispatch: DispatchConfig {
                max_result_bytes: max,
                ..DispatchConfig::default()
            },
            ..EngineConfig::default()
        },
    );
    let outcome = engine
        .execute_agent("llm", agent_registry::AgentInput::message("go"))
        .await
        .unwrap()
        .wait()
        .await;
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    // The refused call never reached the tool; the one within its schema did.
    assert_eq!(blob.calls.load(Ordering::SeqCst), 1);

    let events = h.events("alice");
    check_lifecycle(&events).unwrap();
    let done = completions(&events);
    let refusal = |id: &str| {
        let (_, is_error, result) = done.iter().find(|(c, ..)| c == id).unwrap();
        assert!(is_error, "{result}");
        assert_eq!(result["code"], "invalid_arguments", "{result}");
        result["error"].as_str().unwrap().to_owned()
    };
    let calculator = "invalid arguments: /expression: want string, but got number";
    let blob_refusal = "invalid arguments: /len: want integer, but got string; \
                        (arguments): additionalProperties 'mode' not allowed";
    assert_eq!(refusal("call_1"), calculator);
    assert_eq!(refusal("call_2"), blob_refusal);
    let (_, is_error, truncated) = done.iter().find(|(c, ..)| c == "call_3").unwrap();
    assert!(!is_error);
    assert_eq!(truncated["truncated"], true, "{truncated}");
    assert_eq!(truncated["bytes"], 50_011);

    // The model read the refusals in its next request, and the truncated result after that.
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let second = tool_messages(&requests[1].1);
    let said = |id: &str| {
        let (_, text) = second.iter().find(|(c, _)| c == id).unwrap();
        serde_json::from_str::<Value>(text).unwrap()["error"].clone()
    };
    assert_eq!(said("call_1"), calculator);
    assert_eq!(said("call_2"), blob_refusal);
    let third = tool_messages(&requests[2].1);
    let (_, text) = third.iter().find(|(c, _)| c == "call_3").unwrap();
    assert!(text.len() <= max, "{} bytes reached the model", text.len());
    let seen: Value = serde_json::from_str(text).expect("the model gets valid JSON");
    assert_eq!(
        (&seen["truncated"], &seen["bytes"]),
        (&json!(true), &json!(50_011))
    );
    assert!(
        seen["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"text\":\"xxxx")
    );

    let counts = registry.tool_counts();
    assert_eq!(counts["calculator"].invalid_arguments, 1);
    assert_eq!(counts["blob"].invalid_arguments, 1);
    assert_eq!(counts["blob"].truncated_results, 1);
}

/// The value of the sample `name` in `addr`'s metrics, 0 when absent.
async fn sample(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (_, text) = http_text(addr, "GET", "/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_arguments_are_checked_against_the_input_schema_before_the_request() {
    let model = Model::start(vec![
        turn(&[("call_1", "mcp_scripted_sleep", json!({"ms": "soon"}))]),
        turn(&[("call_2", "mcp_scripted_sleep", json!({"ms": 1}))]),
        turn(&[("call_3", "mcp_scripted_calls", json!({}))]),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.mcp_servers = vec![scripted()];
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let events: Vec<_> = alice
        .events_until_terminals(1)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    let done = completions(&events);
    assert_eq!(done.len(), 3, "{done:?}");
    let (_, is_error, refused) = &done[0];
    assert!(is_error);
    assert_eq!(refused["code"], "invalid_arguments", "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.starts_with("invalid arguments: /ms: want "),
        "{message}"
    );
    // The server never got that request: `calls` counts the tools/call requests before it,
    // and only the valid sleep reached it.
    let (_, is_error, slept) = &done[1];
    assert!(!is_error, "{slept}");
    let (_, is_error, calls) = &done[2];
    assert!(!is_error, "{calls}");
    assert_eq!(calls["text"], "1", "{calls}");
    // The model read why in its next request.
    let second = tool_messages(&model.requests()[1].1);
    assert!(second[0].1.contains("/ms: want "), "{second:?}");
    let invalid = "agent_server_tool_arguments_invalid_total{tool=\"mcp_scripted_sleep\"}";
    assert_eq!(sample(server.addr(), invalid).await, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_mcp_result_reaches_the_model_and_the_user_truncated() {
    let model = Model::start(vec![
        turn(&[("call_1", "mcp_scripted_big", json!({"bytes": 300_000}))]),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let max = 4_096;
    let server = start_server(move |c| {
        c.mcp_servers = vec![scripted()];
        c.llm = Some(LlmConfig::new(base, "test-model"));
        c.engine.dispatch.max_result_bytes = max;
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let events: Vec<_> = alice
        .events_until_terminals(1)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    let done = completions(&events);
    let (_, is_error, shown) = &done[0];
    assert!(!is_error, "{shown}");
    // `{"text":"xxx…"}`: the text and 11 bytes around it.
    assert_eq!(
        (&shown["truncated"], &shown["bytes"]),
        (&json!(true), &json!(300_011))
    );
    assert_eq!(shown["max_bytes"], max);
    let messages = tool_messages(&model.requests()[1].1);
    let text = &messages[0].1;
    assert!(text.len() <= max, "{} bytes reached the model", text.len());
    let seen: Value = serde_json::from_str(text).expect("valid JSON");
    assert_eq!(seen["truncated"], true);
    assert!(
        seen["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"text\":\"xxxx")
    );
    let truncated = "agent_server_tool_results_truncated_total{tool=\"mcp_scripted_big\"}";
    assert_eq!(sample(server.addr(), truncated).await, 1);
    server.shutdown().await;
}
