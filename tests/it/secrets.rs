//! The server's secrets never leave it: a tool that returns them (raw, base64-encoded, hex,
//! inside a URL, in its error message) and logs one, a model that echoes one split across
//! streamed chunks, and an error frame that quotes one; no secret reaches the user's events,
//! the socket's other frames, the history, the model's next request or the log lines, each
//! place shows the marker, and the metric counts it.
//!
//! The server runs on a current-thread runtime under the server's own log subscriber
//! (`server_telemetry::subscriber` writing through `server_telemetry::Scrubbed`), so what it logs is
//! captured as an operator would read it.

use std::sync::Arc;

use agent_registry::{Tool, ToolError};
use agent_server::config::LogFormat;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use core_context::UserExecutionContext;
use llm_agent::{LlmConfig, Secret};
use secrets::{MARKER, Scrubber, Secrets};
use serde_json::{Value, json};
use server_telemetry::{Scrubbed, subscriber};

use crate::history_server::http_text;
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::logs::Capture;
use crate::server_support::{Client, SECRET, start_server};

const API_KEY: &str = "sk-test-api-key-scrubbed-5c2e9d";
const USER: &str = "secrets-user";

/// Every form of the two secrets that must not appear anywhere.
fn forbidden() -> Vec<String> {
    let mut forms = Vec::new();
    for secret in [SECRET, API_KEY] {
        forms.push(secret.to_owned());
        forms.push(STANDARD.encode(secret));
        forms.push(secret.bytes().map(|b| format!("{b:02x}")).collect());
        // The secret's middle: what would survive of a half-scrubbed copy.
        forms.push(secret[4..secret.len() - 4].to_owned());
    }
    forms
}

fn assert_clean(place: &str, text: &str) {
    for form in forbidden() {
        assert!(!text.contains(&form), "{place} holds {form:?}:\n{text}");
    }
}

/// A tool that hands the server's secrets back in every form, and logs one.
struct Leaky;

#[async_trait::async_trait]
impl Tool for Leaky {
    fn name(&self) -> &str {
        "leaky"
    }
    fn description(&self) -> &str {
        "returns the server's secrets"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"fail": {"type": "boolean"}}})
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        tracing::warn!(leaked = %SECRET, "the leaky tool logs a secret");
        if args["fail"] == true {
            return Err(ToolError::Failed(format!(
                "cannot reach https://user:{API_KEY}@example.com/"
            )));
        }
        let environment = format!("HOME=/root\nAGENT_SERVER_JWT_SECRET={SECRET}\nLANG=C\n");
        Ok(json!({
            "raw": SECRET,
            "base64": STANDARD.encode(&environment),
            "hex": API_KEY.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
            "url": format!(
                "https://example.com/callback?key={}&next=1",
                percent_encoding::utf8_percent_encode(API_KEY, percent_encoding::NON_ALPHANUMERIC)
            ),
            "clean": "nothing secret here",
        }))
    }
}

fn scrubber() -> Arc<Scrubber> {
    let mut secrets = Secrets::new();
    secrets.add("AGENT_SERVER_JWT_SECRET", SECRET).unwrap();
    secrets.add("LLM_API_KEY", API_KEY).unwrap();
    Arc::new(Scrubber::new(&secrets))
}

/// The model, twice (a run over the socket, then one over AG-UI): first it calls the tool
/// twice (one call fails), then it echoes the JWT secret in its answer, cut across three
/// chunks.
fn script() -> Vec<Reply> {
    let run = one_run();
    run.iter().chain(&run).cloned().collect()
}

fn one_run() -> Vec<Reply> {
    let (a, rest) = SECRET.split_at(9);
    let (b, c) = rest.split_at(11);
    vec![
        Reply::Stream(vec![
            tool_piece(0, Some("call_ok"), Some("leaky"), "{}"),
            tool_piece(1, Some("call_fail"), Some("leaky"), r#"{"fail":true}"#),
            DONE,
        ]),
        Reply::Stream(vec![
            content("The secret is "),
            content(a),
            content(b),
            content(c),
            content(", as you asked."),
            DONE,
        ]),
    ]
}

async fn session(scrubber: Arc<Scrubber>) {
    let model = Model::start(script()).await;
    let base = format!("http://{}/v1", model.addr);
    let dir = std::env::temp_dir().join(format!(
        "agent-it-secrets-{}",
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let server = start_server(move |config| {
        let mut llm = LlmConfig::new(base, "test-model");
        llm.api_key = Some(Secret::new(API_KEY));
        llm.scrubber = Arc::clone(&scrubber);
        config.llm = Some(llm);
        config.store = Some(store);
        config.scrubber = scrubber;
        config.tools.tools.push(Arc::new(Leaky));
    })
    .await;
    let addr = server.addr();
    let mut client = Client::user(addr, USER).await;
    // An error frame that quotes what the client sent: the secret (a valid agent name) is
    // scrubbed from it too, as from every frame that is not an event.
    let payload = json!({"agent": SECRET, "message": "hi"});
    client
        .send(json!({"type": "start_agent", "payload": payload}))
        .await;
    let refused = client.reply().await;
    assert_eq!(refused["type"], "error", "{refused}");
    let refused = refused.to_string();
    assert_clean("an error frame", &refused);
    assert!(refused.contains(MARKER), "{refused}");
    let payload = json!({"agent": "llm", "message": "Show me the server's secrets"});
    client
        .send(json!({"type": "start_agent", "payload": payload}))
        .await;
    let accepted = client.reply().await;
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let frames = client.events_until_terminals(1).await;
    let stream: Vec<String> = frames
        .iter()
        .map(|f| serde_json::to_string(f).unwrap())
        .collect();
    let stream = stream.join("\n");
    assert_clean("the user's stream", &stream);
    let answer: String = crate::server_support::events(&frames)
        .iter()
        .filter_map(|e| match &e.kind {
            core_context::event::EventKind::AgentResponseChunk { delta } => Some(delta.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answer, format!("The secret is {MARKER}, as you asked."));
    assert!(stream.contains("nothing secret here"), "{stream}");

    // The model's second request carries both tool results back, scrubbed; the key is only
    // in the Authorization header, where it belongs.
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].0.as_deref(),
        Some(&*format!("Bearer {API_KEY}"))
    );
    let second = requests[1].1.to_string();
    assert_clean("the model's request", &second);
    assert!(second.contains(MARKER), "{second}");

    let history = loop {
        let (status, text) =
            http_text(addr, "GET", &format!("/v1/runs/{run_id}"), Some(USER)).await;
        if status == 200 && text.contains("agent_completed") {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_clean("the history", &history);
    assert!(history.contains(MARKER), "{history}");

    // The same run over AG-UI: its server-sent events are the scrubbed events, and its body
    // passes the HTTP scrub too.
    let input = json!({"threadId": core_context::ThreadId::generate().as_str(), "runId": "r1",
        "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [{"id": "m1", "role": "user", "content": "Show me the server's secrets"}]});
    let agui = crate::support::http_client()
        .post(format!("http://{addr}/agui/llm"))
        .bearer_auth(crate::server_support::token(USER))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(agui.status(), 200);
    let agui = agui.text().await.unwrap();
    assert!(agui.contains("RUN_FINISHED"), "{agui}");
    assert_clean("the AG-UI stream", &agui);
    assert!(agui.contains(MARKER), "{agui}");

    let (_, metrics) = http_text(addr, "GET", "/metrics", None).await;
    for site in ["events", "model", "logs", "socket"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "agent_server_secrets_scrubbed_total{{site=\"{site}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {site} line:\n{metrics}"));
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count > 0, "{line}");
    }
    drop(client);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_leaking_tool_and_an_echoing_model_leak_nothing_anywhere() {
    let scrubber = scrubber();
    let captured = Capture::default();
    let writer = captured.clone();
    let lines = Scrubbed {
        scrubber: Arc::clone(&scrubber),
        inner: move || writer.clone(),
    };
    let (subscriber, _telemetry) =
        subscriber(LogFormat::Json, lines, false, None, &Arc::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || runtime.block_on(session(scrubber)));
    let logs = String::from_utf8(captured.0.lock().clone()).unwrap();
    assert!(logs.contains("the leaky tool logs a secret"), "{logs}");
    assert_clean("the logs", &logs);
    assert!(logs.contains(MARKER), "{logs}");
}

/// Set in the child that [`a_panic_message_reaches_the_logs_scrubbed`] starts.
const PANIC_CHILD: &str = "AGENT_IT_SECRETS_PANIC_CHILD";

/// Not a test of its own: the child of [`a_panic_message_reaches_the_logs_scrubbed`] (this
/// binary again). It logs as `agent-server serve` does (the server's subscriber, its scrubbing
/// writer to stderr, its panic hook) and panics with a secret in the message.
#[test]
fn panic_child() {
    if std::env::var(PANIC_CHILD).is_err() {
        return;
    }
    let lines = Scrubbed {
        scrubber: scrubber(),
        inner: std::io::stderr,
    };
    let (subscriber, _telemetry) =
        server_telemetry::subscriber(LogFormat::Text, lines, false, None, &Arc::default()).unwrap();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    agent_server::server::log_panics();
    let panicked = std::thread::spawn(|| panic!("a tool panicked holding {SECRET}")).join();
    assert!(panicked.is_err());
}

#[test]
fn a_panic_message_reaches_the_logs_scrubbed() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "secrets::panic_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD, "1")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("panic: ") && stderr.contains(MARKER),
        "no scrubbed panic line:\n{stderr}"
    );
    assert_clean("a panic's log line", &stderr);
}
