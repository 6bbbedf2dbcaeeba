//! OpenTelemetry export (feature `otlp`, on in the test build): with an OTLP endpoint the
//! server's spans reach a collector (here one served by the test), in either encoding: the
//! connection, the run with its id and agent, and the tool call as the run's child, under
//! the `agent-server` service; and, as in the logs, no token, no raw user id and no secret
//! of the server (one logged inside a span is scrubbed before export).

use std::net::SocketAddr;
use std::sync::Arc;

use agent_server::config::Otlp;
use agent_server::config::{LogFormat, OtlpProtocol};
use axum::http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::server_support::{Client, start_server, token};

const USER: &str = "otlp-user-5150";

/// What the collector received: each request's content type and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP collector on its own runtime (the exporter flushes while the server's
/// runtime is no longer driven).
struct Collector {
    addr: SocketAddr,
    received: Received,
    _runtime: tokio::runtime::Runtime,
}

fn collector() -> Collector {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let received = Received::default();
    let store = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let kind = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            store.lock().push((kind, body.to_vec()));
            async { "" }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    Collector {
        addr,
        received,
        _runtime: runtime,
    }
}

/// A run of the synthetic agent with one tool call; its run id.
/// A secret of the server's that a bug logs inside a span: scrubbed before export.
const LEAKED: &str = "otlp-leaked-secret-value-31337";

async fn session() -> String {
    tracing::info_span!("leak_check", detail = LEAKED).in_scope(|| {
        tracing::warn!(leaked = LEAKED, "a secret logged inside a span");
    });
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), USER).await;
    let payload = json!({"agent": "synthetic", "message": "trace me", "input": {"tools": 1}});
    client
        .send(json!({"type": "start_agent", "payload": payload}))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    client.events_until_terminals(1).await;
    drop(client);
    server.shutdown().await;
    accepted["run_id"].as_str().unwrap().to_owned()
}

/// A span's string attribute `key` (OTLP/JSON).
fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// The spans of OTLP/JSON export requests, and their resources' `service.name`s.
fn spans_of(bodies: &[Vec<u8>]) -> (Vec<Value>, Vec<String>) {
    let (mut spans, mut services) = (Vec::new(), Vec::new());
    for body in bodies {
        let request: Value = serde_json::from_slice(body).unwrap();
        for resource in request["resourceSpans"].as_array().unwrap() {
            services.extend(attribute(&resource["resource"], "service.name").map(str::to_owned));
            for scope in resource["scopeSpans"].as_array().unwrap() {
                spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    (spans, services)
}

fn check_json(bodies: &[Vec<u8>], run_id: &str) {
    let (spans, services) = spans_of(bodies);
    assert!(
        services.iter().all(|s| s == "agent-server") && !services.is_empty(),
        "{services:?}"
    );
    let named = |name: &'static str| spans.iter().filter(move |s| s["name"] == name);
    let run = named("run")
        .find(|s| attribute(s, "run_id") == Some(run_id))
        .unwrap_or_else(|| panic!("no run span for {run_id} in {spans:#?}"));
    assert_eq!(attribute(run, "agent"), Some("synthetic"));
    let tool = named("tool")
        .find(|s| s["parentSpanId"] == run["spanId"])
        .unwrap_or_else(|| panic!("no tool span under the run in {spans:#?}"));
    assert_eq!(attribute(tool, "tool"), Some("synthetic_echo"));
    assert_eq!(tool["traceId"], run["traceId"]);
    let tag = agent_server::auth::user_tag(&core_context::UserId::parse(USER).unwrap());
    assert!(
        named("connection").any(|s| attribute(s, "user") == Some(tag.as_str())),
        "no connection span of {tag} in {spans:#?}"
    );
}

#[test]
fn spans_reach_an_otlp_collector_in_either_encoding() {
    let cases = [
        (OtlpProtocol::Json, "application/json"),
        (OtlpProtocol::Protobuf, "application/x-protobuf"),
    ];
    for (protocol, content_type) in cases {
        let collector = collector();
        let otlp = Otlp {
            traces_url: format!("http://{}/v1/traces", collector.addr),
            protocol,
        };
        let mut secrets = secrets::Secrets::new();
        secrets.add("test", LEAKED).unwrap();
        let scrubber = Arc::new(secrets::Scrubber::new(&secrets));
        let (subscriber, telemetry) = server_telemetry::subscriber(
            LogFormat::Text,
            std::io::sink,
            false,
            Some(&otlp),
            &scrubber,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run_id = tracing::subscriber::with_default(subscriber, || runtime.block_on(session()));
        drop(runtime);
        telemetry.shutdown();
        let received = collector.received.lock().clone();
        assert!(!received.is_empty(), "{protocol:?}: nothing exported");
        let token = token(USER);
        for (kind, body) in &received {
            assert_eq!(kind, content_type, "{protocol:?}");
            let text = String::from_utf8_lossy(body);
            assert!(text.contains(run_id.as_str()), "{protocol:?}: no {run_id}");
            for secret in [USER, token.as_str(), LEAKED] {
                assert!(
                    !text.contains(secret),
                    "{protocol:?}: `{secret}` was exported"
                );
            }
        }
        assert!(
            received
                .iter()
                .any(|(_, body)| String::from_utf8_lossy(body).contains(secrets::MARKER)),
            "{protocol:?}: the scrubbed secret's span was not exported"
        );
        assert!(scrubber.scrubbed(secrets::Site::Telemetry) > 0);
        if protocol == OtlpProtocol::Json {
            let bodies: Vec<Vec<u8>> = received.into_iter().map(|(_, body)| body).collect();
            check_json(&bodies, &run_id);
        }
    }
}
