//! The `llm` agent against a scripted OpenAI-compatible server started in the test: real
//! HTTP, real server-sent events.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_registry::AgentRegistry;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use execution_engine::{RunOutcome, UserExecutionEngine};
use llm_agent::{LlmConfig, Secret};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::{Harness, context, types, wait_until};

/// One scripted piece of a streamed response.
#[derive(Clone)]
pub(crate) enum Piece {
    /// An SSE `data:` event with this JSON.
    Data(Value),
    /// Bytes sent as they are.
    Raw(&'static str),
    /// A pause.
    Sleep(u64),
    /// The connection is cut (the body fails mid-stream).
    Cut,
    /// Keeps the response open, sending SSE comments, until the client goes away.
    HangUntilDropped,
    /// The usage chunk of a call that used this many prompt tokens and every answer token the
    /// request allowed (its `max_tokens`, 0 without one): a model that spends all it may.
    UsageOfAllowed(u64),
}

/// One scripted response.
#[derive(Clone)]
pub(crate) enum Reply {
    Stream(Vec<Piece>),
    Status(u16, &'static str),
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
    dropped: AtomicBool,
}

pub(crate) fn content(text: &str) -> Piece {
    Piece::Data(json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}
fn reasoning(text: &str) -> Piece {
    Piece::Data(json!({"choices": [{"index": 0, "delta": {"reasoning_content": text}}]}))
}
pub(crate) fn tool_piece(
    index: u64,
    id: Option<&str>,
    name: Option<&str>,
    arguments: &str,
) -> Piece {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    Piece::Data(json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
}
pub(crate) fn usage(prompt: u64, completion: u64) -> Piece {
    Piece::Data(
        json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}),
    )
}
pub(crate) const DONE: Piece = Piece::Raw("data: [DONE]\n\n");

async fn completions(
    axum::extract::State(script): axum::extract::State<Arc<Script>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let allowed = body["max_tokens"].as_u64().unwrap_or(0);
    script.requests.lock().push((auth, body));
    let reply = script.replies.lock().pop_front();
    match reply {
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the script has no more replies",
        )
            .into_response(),
        Some(Reply::Status(code, text)) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), text).into_response();
            if code == 429 {
                response
                    .headers_mut()
                    .insert("retry-after", "0".parse().unwrap());
            }
            response
        }
        Some(Reply::Stream(pieces)) => {
            let pieces: Vec<Piece> = pieces
                .into_iter()
                .map(|piece| match piece {
                    Piece::UsageOfAllowed(prompt) => usage(prompt, allowed),
                    other => other,
                })
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                for piece in pieces {
                    let sent = match piece {
                        Piece::Data(v) => tx.send(Ok(format!("data: {v}\n\n").into())).await,
                        Piece::Raw(r) => tx.send(Ok(r.into())).await,
                        Piece::Sleep(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(())
                        }
                        Piece::Cut => {
                            let _ = tx
                                .send(Err(std::io::Error::other("cut by the script")))
                                .await;
                            return;
                        }
                        Piece::UsageOfAllowed(_) => unreachable!("replaced above"),
                        Piece::HangUntilDropped => loop {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if tx.send(Ok(": still here\n\n".into())).await.is_err() {
                                script.dropped.store(true, Ordering::SeqCst);
                                return;
                            }
                        },
                    };
                    if sent.is_err() {
                        script.dropped.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

pub(crate) struct Model {
    pub(crate) addr: SocketAddr,
    script: Arc<Script>,
}

impl Model {
    pub(crate) async fn start(replies: Vec<Reply>) -> Model {
        let script = Arc::new(Script::default());
        script.replies.lock().extend(replies);
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Model { addr, script }
    }

    pub(crate) fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.script.requests.lock().clone()
    }
}

const KEY: &str = "sk-test-secret-123";

fn engine(h: &Harness, model: &Model, tune: impl FnOnce(&mut LlmConfig)) -> UserExecutionEngine {
    let mut registry = AgentRegistry::new();
    agents::register_local(&mut registry).unwrap();
    let mut config = LlmConfig::new(format!("http://{}/v1", model.addr), "test-model");
    config.api_key = Some(Secret::new(KEY));
    config.initial_backoff = Duration::from_millis(5);
    config.max_retries = 2;
    tune(&mut config);
    llm_agent::register(&mut registry, config).unwrap();
    UserExecutionEngine::create_execution_engine(context("alice"), Arc::new(registry), h.sink())
}

async fn run(engine: &UserExecutionEngine, message: &str) -> RunOutcome {
    engine
        .execute_agent("llm", agent_registry::AgentInput::message(message))
        .await
        .unwrap()
        .wait()
        .await
}

#[tokio::test]
async fn a_plain_answer_streams_in_batched_chunks_with_usage() {
    let h = Harness::new();
    let mut pieces = vec![
        reasoning("The user greets me. "),
        reasoning("I greet back."),
    ];
    for word in ["Hel", "lo", " there", ",", " Alice", "!"] {
        pieces.push(content(word));
    }
    pieces.extend([usage(12, 6), DONE]);
    let model = Model::start(vec![Reply::Stream(pieces)]).await;
    let engine = engine(&h, &model, |_| {});
    let RunOutcome::Completed { output, .. } = run(&engine, "hi").await else {
        panic!("not completed")
    };
    assert_eq!(output.result, json!("Hello there, Alice!"));
    assert_eq!(
        output.usage,
        Some(json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}))
    );

    let events = h.events("alice");
    check_lifecycle(&events).unwrap();
    let chunks: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResponseChunk { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks.concat(), "Hello there, Alice!");
    assert!(
        chunks.len() < 6,
        "six deltas arriving at once must be batched, got {chunks:?}"
    );
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::AgentThinking { reasoning, .. } if reasoning == "The user greets me. I greet back.")));
    let Some(EventKind::AgentCompleted { usage, .. }) = events.last().map(|e| &e.kind) else {
        panic!()
    };
    assert_eq!(usage.as_ref().unwrap()["total_tokens"], 18);

    let requests = model.requests();
    assert_eq!(
        requests[0].0.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(requests[0].1["stream"], true);
    assert_eq!(requests[0].1["model"], "test-model");
    let offered: Vec<&str> = requests[0].1["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["calculator", "current_time", "search_docs", "text_stats"]
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(KEY));
}

#[tokio::test]
async fn tool_calls_run_through_the_dispatcher_over_several_turns_and_in_parallel() {
    let h = Harness::new();
    let model = Model::start(vec![
        // Turn 1: one tool call, its arguments streamed in pieces.
        Reply::Stream(vec![
            tool_piece(0, Some("call_1"), Some("calculator"), "{\"expres"),
            tool_piece(0, None, None, "sion\": \"12*7\"}"),
            usage(20, 5),
            DONE,
        ]),
        // Turn 2: two tool calls at once.
        Reply::Stream(vec![
            tool_piece(
                0,
                Some("call_2"),
                Some("current_time"),
                "{\"timezone\": \"Asia/Tokyo\"}",
            ),
            tool_piece(
                1,
                Some("call_3"),
                Some("text_stats"),
                "{\"text\": \"a b c\"}",
            ),
            DONE,
        ]),
        // Turn 3: the answer.
        Reply::Stream(vec![content("12*7 is 84."), usage(40, 8), DONE]),
    ])
    .await;
    let engine = engine(&h, &model, |_| {});
    let RunOutcome::Completed { output, .. } = run(&engine, "12*7 and the time in Tokyo?").await
    else {
        panic!()
    };
    assert_eq!(output.result, json!("12*7 is 84."));
    assert_eq!(output.usage.unwrap()["total_tokens"], 73);

    let events = h.events("alice");
    let summary = check_lifecycle(&events).unwrap();
    assert_eq!(summary.tool_calls, 3);
    let completed: Vec<(String, Value)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCompleted {
                tool_call_id,
                result,
                is_error: false,
                ..
            } => Some((tool_call_id.clone(), result.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        completed[0],
        (
            "call_1".to_owned(),
            json!({"expression": "12*7", "value": 84})
        )
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let turn2 = requests[1].1["messages"].as_array().unwrap();
    assert_eq!(turn2[1]["tool_calls"][0]["function"]["name"], "calculator");
    assert_eq!(turn2[2]["role"], "tool");
    assert_eq!(turn2[2]["tool_call_id"], "call_1");
    assert!(turn2[2]["content"].as_str().unwrap().contains("84"));
    let turn3 = requests[2].1["messages"].as_array().unwrap();
    let tool_ids: Vec<&str> = turn3
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(tool_ids, ["call_1", "call_2", "call_3"]);
}

#[tokio::test]
async fn max_turns_ends_the_run_with_an_error() {
    let h = Harness::new();
    let forever = Reply::Stream(vec![
        tool_piece(0, Some("c"), Some("text_stats"), "{\"text\": \"x\"}"),
        DONE,
    ]);
    let model = Model::start(vec![forever; 5]).await;
    let engine = engine(&h, &model, |c| c.max_turns = 3);
    assert_eq!(run(&engine, "loop").await.error_code(), Some("max_turns"));
    assert_eq!(model.requests().len(), 3);
    check_lifecycle(&h.events("alice")).unwrap();
}

/// Runs the agent against `replies`; returns the outcome's error code (or `ok`) and how many
/// requests the server saw.
async fn outcome_of(replies: Vec<Reply>) -> (String, usize, Vec<core_context::AgentEvent>) {
    let h = Harness::new();
    let model = Model::start(replies).await;
    let engine = engine(&h, &model, |_| {});
    let outcome = run(&engine, "hi").await;
    let code = outcome.error_code().unwrap_or("ok").to_owned();
    let events = h.events("alice");
    check_lifecycle(&events).unwrap();
    (code, model.requests().len(), events)
}

#[tokio::test]
async fn failures_table() {
    let answer = || Reply::Stream(vec![content("fine"), DONE]);
    let table: Vec<(&str, Vec<Reply>, &str, usize)> = vec![
        ("401", vec![Reply::Status(401, "bad key")], "bad_api_key", 1),
        (
            "403",
            vec![Reply::Status(403, "forbidden")],
            "bad_api_key",
            1,
        ),
        (
            "429 then success",
            vec![Reply::Status(429, "slow down"), answer()],
            "ok",
            2,
        ),
        (
            "429 forever",
            vec![Reply::Status(429, "slow down"); 3],
            "rate_limited",
            3,
        ),
        (
            "500 then success",
            vec![Reply::Status(500, "oops"), answer()],
            "ok",
            2,
        ),
        (
            "500 forever",
            vec![Reply::Status(503, "down"); 3],
            "server_error",
            3,
        ),
        (
            "400",
            vec![Reply::Status(400, "no such model")],
            "model_request_rejected",
            1,
        ),
        (
            "404 for a model the server lacks",
            vec![Reply::Status(
                404,
                r#"{"error":"model \"test-model\" not found"}"#,
            )],
            "model_not_found",
            1,
        ),
        (
            "cut mid-stream",
            vec![Reply::Stream(vec![
                content("Hal"),
                Piece::Sleep(80),
                content("f"),
                Piece::Cut,
            ])],
            "stream_interrupted",
            1,
        ),
        (
            "no [DONE]",
            vec![Reply::Stream(vec![content("Half")])],
            "stream_interrupted",
            1,
        ),
        (
            "malformed chunk",
            vec![Reply::Stream(vec![Piece::Raw("data: {not json\n\n"), DONE])],
            "malformed_stream",
            1,
        ),
        (
            "error chunk",
            vec![Reply::Stream(vec![
                Piece::Data(json!({"error": {"message": "overloaded"}})),
                DONE,
            ])],
            "server_error",
            1,
        ),
        (
            "nameless tool call",
            vec![Reply::Stream(vec![
                tool_piece(0, Some("c"), None, "{}"),
                DONE,
            ])],
            "malformed_stream",
            1,
        ),
    ];
    for (name, replies, expected, requests) in table {
        let (code, seen, events) = outcome_of(replies).await;
        assert_eq!((code.as_str(), seen), (expected, requests), "{name}");
        if name == "cut mid-stream" {
            // What streamed before the cut reached the user; then the run failed.
            assert!(
                types(&events).contains(&"agent_response_chunk"),
                "{name}: {:?}",
                types(&events)
            );
        }
    }
}

#[tokio::test]
async fn unreachable_servers_are_retried_then_reported() {
    let h = Harness::new();
    // A port with nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let model = Model {
        addr: closed,
        script: Arc::new(Script::default()),
    };
    let engine = engine(&h, &model, |_| {});
    let outcome = run(&engine, "hi").await;
    assert_eq!(outcome.error_code(), Some("model_unreachable"));
    let RunOutcome::Failed(error) = outcome else {
        unreachable!()
    };
    // The message names the server it could not reach.
    let at = format!("cannot reach the model server at http://{closed}/v1 (");
    assert!(error.message.starts_with(&at), "{}", error.message);
    assert!(
        error.message.contains("gave up after 2 retries"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(KEY));
}

#[tokio::test]
async fn cancelling_mid_stream_drops_the_request() {
    let h = Harness::new();
    let model = Model::start(vec![Reply::Stream(vec![
        content("Thinking about it"),
        Piece::HangUntilDropped,
    ])])
    .await;
    let engine = engine(&h, &model, |_| {});
    let handle = engine
        .execute_agent("llm", agent_registry::AgentInput::message("hi"))
        .await
        .unwrap();
    wait_until("the first chunk arrives", || {
        types(&h.events("alice")).contains(&"agent_response_chunk")
    })
    .await;
    handle.cancel("stop");
    assert_eq!(handle.wait().await, RunOutcome::Cancelled("stop".into()));
    wait_until("the model server sees the request dropped", || {
        model.script.dropped.load(Ordering::SeqCst)
    })
    .await;
    check_lifecycle(&h.events("alice")).unwrap();
}

#[tokio::test]
async fn a_model_slower_than_the_request_timeout_is_reported_as_a_timeout() {
    let h = Harness::new();
    let model = Model::start(vec![Reply::Stream(vec![
        content("I am"),
        Piece::HangUntilDropped,
    ])])
    .await;
    let engine = engine(&h, &model, |c| {
        c.request_timeout = Duration::from_millis(300)
    });
    let outcome = run(&engine, "hi").await;
    assert_eq!(outcome.error_code(), Some("model_timeout"), "{outcome:?}");
    check_lifecycle(&h.events("alice")).unwrap();
}

/// The start banner names the model and where it is served from.
#[test]
fn the_start_banner_names_the_model_and_its_base_url() {
    let argv = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--store",
        "none",
        "--llm-base-url",
        "http://user:hunter2@127.0.0.1:9/v1/",
        "--llm-model",
        "llama3",
    ];
    let banner = crate::process_support::ServerProcess::banner(&argv, 3);
    assert_eq!(
        banner.get(2).map(String::as_str),
        Some("model: llama3 at http://<credentials>@127.0.0.1:9/v1 (the llm agent)"),
        "{banner:?}"
    );
}
