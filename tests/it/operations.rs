//! What an operator probes: `/healthz`, `/readyz` (draining, and a broker that is down),
//! `/version`, `/metrics`, and the JSON 404 of an unknown route.

use std::time::Duration;

use agent_server::config::BrokerChoice;
use serde_json::json;

use std::collections::HashMap;

use crate::history_server::{http, http_text};
use crate::redis_support::RedisServer;
use crate::server_support::{Client, start_server, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_unknown_routes() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    assert_eq!(
        http(addr, "GET", "/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    let (status, version) = http(addr, "GET", "/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        version["git_revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{version}"
    );
    let (status, ready) = http(addr, "GET", "/readyz", None).await;
    assert_eq!(
        (status, ready),
        (
            200,
            json!({"status": "ready", "checks": {"broker": "ok", "store": "none"}})
        )
    );
    let (status, missing) = http(addr, "GET", "/metricz", None).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains("no route GET /metricz") && message.contains("GET /readyz"),
        "{message}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_draining() {
    let server = start_server(|c| c.shutdown_grace = Duration::from_secs(3)).await;
    let addr = server.addr();
    let mut client = Client::user(addr, "olga").await;
    let accepted = client
        .start("r1", "synthetic", json!({"tools": 0, "hang": true}))
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let draining = tokio::spawn(server.shutdown());
    let mut seen = None;
    for _ in 0..100 {
        let (status, body) = http(addr, "GET", "/readyz", None).await;
        if status == 503 {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.expect("503 while draining")["status"], "draining");
    draining.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_redis_broker() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = start_server(move |c| c.broker = BrokerChoice::Redis(url)).await;
    let addr = server.addr();
    let ready_is = |expected: u16| async move {
        for _ in 0..200 {
            let (status, body) = http(addr, "GET", "/readyz", None).await;
            if status == expected {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("/readyz never answered {expected}");
    };
    assert_eq!(ready_is(200).await["checks"]["broker"], "ok");
    redis.stop();
    let down = ready_is(503).await;
    assert_eq!(
        down,
        json!({"status": "not_ready", "checks": {"broker": "failing", "store": "none"}})
    );
    let broker_metrics = || async move {
        let (_, text) = http_text(addr, "GET", "/metrics", None).await;
        samples(&text)
    };
    let metrics = broker_metrics().await;
    assert_eq!(metrics.get("agent_server_broker_up"), Some(&0.0));
    assert!(
        metrics["agent_server_redis_subscriber_disconnects_total"] >= 1.0,
        "{metrics:?}"
    );
    redis.restart();
    assert_eq!(ready_is(200).await["status"], "ready");
    assert_eq!(
        broker_metrics().await.get("agent_server_broker_up"),
        Some(&1.0)
    );
    server.shutdown().await;
}

/// The samples of a Prometheus text exposition: `name{labels}` to value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("a sample is `name value`");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// `/metrics` counts what happened (connections and how they ended, a resume, refusals, runs
/// by agent and outcome, tool calls, events delivered) and names no user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_name_no_user() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let refused = Client::connect(addr, "not-a-token", None).await;
    assert!(refused.is_err(), "a bad token got a socket");
    let mut client = Client::user(addr, "metrics-user-7").await;
    let epoch = client.established["epoch"].as_str().unwrap().to_owned();
    let shapes = [
        json!({"thinking": 1, "tools": 2, "chunks": 1}),
        json!({"tools": 0, "fail": "on purpose"}),
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let accepted = client
            .start(&format!("r{i}"), "synthetic", shape.clone())
            .await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    }
    let mut events = client.events_until_terminals(2).await;
    let hanging = client
        .start("r2", "synthetic", json!({"tools": 0, "hang": true}))
        .await;
    let run_id = hanging["run_id"].clone();
    client
        .send(json!({"type": "cancel_run", "payload": {"run_id": run_id}}))
        .await;
    events.extend(client.events_until_terminals(1).await);
    let seen = events.len();
    client.send(json!({"type": "no_such_frame"})).await;
    assert_eq!(client.reply().await["type"], "error");
    drop(client);
    let mut resumed = Client::connect(addr, &token("metrics-user-7"), Some((&epoch, 0)))
        .await
        .unwrap();
    assert_eq!(resumed.established["resume"]["status"], "ok");
    assert_eq!(resumed.events_until_terminals(3).await.len(), seen);

    // Every event the runs emitted, by type, as the client saw them.
    let mut by_type: std::collections::BTreeMap<String, f64> = Default::default();
    for event in &events {
        let frame = serde_json::to_value(event).expect("encodes");
        let kind = frame["type"].as_str().expect("a type").to_owned();
        *by_type
            .entry(format!(
                "agent_server_events_emitted_total{{type=\"{kind}\"}}"
            ))
            .or_default() += 1.0;
    }
    assert!(by_type.len() >= 5, "{by_type:?}");
    let expected = [
        ("agent_server_connections_opened_total", 2.0),
        ("agent_server_connections_open", 1.0),
        // The test's runtime: 2 workers.
        ("agent_server_runtime_worker_threads", 2.0),
        (
            "agent_server_connections_closed_total{code=\"client\"}",
            1.0,
        ),
        ("agent_server_resumes_total{outcome=\"ok\"}", 1.0),
        ("agent_server_refusals_total{code=\"unauthorized\"}", 1.0),
        ("agent_server_runs_started_total{agent=\"synthetic\"}", 3.0),
        (
            "agent_server_runs_finished_total{agent=\"synthetic\",outcome=\"completed\"}",
            1.0,
        ),
        (
            "agent_server_runs_finished_total{agent=\"synthetic\",outcome=\"failed\"}",
            1.0,
        ),
        (
            "agent_server_runs_finished_total{agent=\"synthetic\",outcome=\"cancelled\"}",
            1.0,
        ),
        ("agent_server_runs_active", 0.0),
        (
            "agent_server_tool_calls_total{tool=\"synthetic_echo\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "agent_server_run_duration_seconds_count{agent=\"synthetic\"}",
            3.0,
        ),
        ("agent_server_run_queue_wait_seconds_count", 3.0),
        ("agent_server_broker_up", 1.0),
        // The first connection's events, then all of them again as the resume's replay
        // (replayed frames are not live: no emit-to-send latency).
        ("agent_server_events_delivered_total", 2.0 * seen as f64),
        ("agent_server_emit_to_send_seconds_count", seen as f64),
    ];
    // A frame's count follows its write: the client may read it a moment before.
    let expected: Vec<(&str, f64)> = expected
        .into_iter()
        .chain(by_type.iter().map(|(name, v)| (name.as_str(), *v)))
        .collect();
    let mut scraped = String::new();
    for _ in 0..100 {
        let (status, text) = http_text(addr, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        scraped = text;
        let got = samples(&scraped);
        if expected.iter().all(|(name, v)| got.get(*name) == Some(v)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = scraped;
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text:\n{text}");
    assert!(
        !text.contains("metrics-user-7"),
        "a user id in the metrics:\n{text}"
    );
    let got = samples(&text);
    for (name, value) in expected {
        assert_eq!(got.get(name), Some(&value), "{name} in\n{text}");
    }
    let emitted: f64 = got
        .iter()
        .filter(|(name, _)| name.starts_with("agent_server_events_emitted_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(emitted, seen as f64, "every event counted once:\n{text}");
    let error_frames: f64 = got
        .iter()
        .filter(|(name, _)| {
            name.starts_with("agent_server_refusals_total") && !name.contains("unauthorized")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(error_frames, 1.0, "the unknown frame's error:\n{text}");
    drop(resumed);
    server.shutdown().await;
}

/// The metric families of a scrape, from its `# TYPE` lines.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// A sample or family name without its counter or histogram suffix.
fn family_of(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The `agent_server_*` names `text` mentions anywhere.
fn mentioned(text: &str) -> std::collections::BTreeSet<String> {
    text.split("agent_server_")
        .skip(1)
        .filter_map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                .unwrap_or(rest.len());
            (end > 0).then(|| format!("agent_server_{}", family_of(&rest[..end])))
        })
        .collect()
}

/// The metrics `docs/operations.md`'s tables document: each row's first cell, without the
/// prefix.
fn documented(guide: &str) -> std::collections::BTreeSet<String> {
    guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| !name.starts_with('/') && !name.starts_with("GET"))
        .map(|name| format!("agent_server_{}", family_of(name)))
        .collect()
}

/// Every metric the dashboard (`docs/grafana-dashboard.json`) and the operations guide
/// (`docs/operations.md`) name is one the server exposes, and the guide documents every one
/// it exposes (with Redis, a store, the `llm` agent and an MCP server, so every family is
/// there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_guide_name_exactly_the_metrics_served() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = std::env::temp_dir().join(format!(
        "agent-it-dashboard-{}",
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let server = start_server(move |c| {
        c.broker = BrokerChoice::Redis(url);
        c.store = Some(store);
        c.llm = Some(llm_agent::LlmConfig::new("http://127.0.0.1:9/v1", "unused"));
        // An MCP server whose command does not exist: down, but its metrics are served.
        c.mcp_servers = vec![mcp_tools::McpServerSpec::parse("absent=/nonexistent/mcp").unwrap()];
    })
    .await;
    let plain = start_server(|_| {}).await;
    let mut served = std::collections::BTreeSet::new();
    for addr in [server.addr(), plain.addr()] {
        exercise(addr).await;
        let (_, text) = http_text(addr, "GET", "/metrics", None).await;
        served.extend(families(&text));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let guide = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    for (doc, names) in [
        ("the dashboard", mentioned(&dashboard)),
        ("the guide's alerts", mentioned(&guide)),
        ("the guide's tables", documented(&guide)),
    ] {
        let unknown: Vec<_> = names.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{doc} names metrics the server does not serve: {unknown:?}"
        );
    }
    let documented = documented(&guide);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "docs/operations.md does not document {undocumented:?}"
    );
    server.shutdown().await;
    plain.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes the server count something of each kind (a family with no sample is not served): a
/// refused upgrade, a run with a tool call, a connection that ends, a resume.
async fn exercise(addr: std::net::SocketAddr) {
    assert!(Client::connect(addr, "not-a-token", None).await.is_err());
    let mut client = Client::user(addr, "dashboard-user").await;
    let epoch = client.established["epoch"].as_str().unwrap().to_owned();
    let accepted = client.start("r1", "synthetic", json!({"tools": 1})).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    client.events_until_terminals(1).await;
    drop(client);
    let resumed = Client::connect(addr, &token("dashboard-user"), Some((&epoch, 0)))
        .await
        .unwrap();
    drop(resumed);
}

/// A GET with the header `authorization` if given: the status, the content type, the body.
async fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut request = crate::support::http_client().get(format!("http://{addr}{path}"));
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("a body"))
}

/// `GET /v1/me` names the token's user (a browser checks its token with it: it cannot read a
/// refused upgrade's status) and refuses a missing or bad token with the reason; the chat
/// page's vendored scripts are served as JavaScript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_names_the_tokens_user_and_the_page_scripts_are_served() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    assert_eq!(
        http(addr, "GET", "/v1/me", Some("alice")).await,
        (200, json!({"user_id": "alice"}))
    );
    let bad = Some("Bearer not-a-token");
    for (authorization, reason) in [(None, "no token"), (bad, "well-formed")] {
        let (status, _, body) = get_with(addr, "/v1/me", authorization).await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("unauthorized")),
            "{body}"
        );
        let message = body["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(reason), "{reason}: {message}");
    }
    for (path, starts) in [
        ("/static/marked.js", "/**\n * marked v18"),
        ("/static/purify.js", "/*! @license DOMPurify 3"),
    ] {
        let (status, content_type, body) = get_with(addr, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/javascript"),
            "{path}: {content_type}"
        );
        assert!(body.starts_with(starts), "{path}");
    }
    server.shutdown().await;
}

/// `GET /tools` lists every tool agents can call, with its schema and where it comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_their_schema_and_source() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let (status, tools) = http(server.addr(), "GET", "/tools", None).await;
    assert_eq!(status, 200);
    let tools = tools.as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for expected in [
        "calculator",
        "current_time",
        "search_docs",
        "synthetic_echo",
        "text_stats",
    ] {
        assert!(names.contains(&expected), "no {expected} in {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");
    for tool in tools {
        assert_eq!(tool["source"], "built-in", "{tool}");
        assert_eq!(tool["parameters"]["type"], "object", "{tool}");
        assert!(!tool["description"].as_str().unwrap().is_empty(), "{tool}");
    }
    // The local tools' schemas are derived from their argument structs: the fields, the
    // bounds and an example call, without the Rust type's name.
    let calculator = tools.iter().find(|t| t["name"] == "calculator").unwrap();
    let schema = &calculator["parameters"];
    assert_eq!(schema["required"], json!(["expression"]), "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert_eq!(
        schema["properties"]["expression"]["maxLength"], 500,
        "{schema}"
    );
    assert_eq!(
        schema["examples"][0]["expression"], "(12 + 3) * 7",
        "{schema}"
    );
    assert!(
        schema.get("title").is_none() && schema.get("$schema").is_none(),
        "{schema}"
    );
    server.shutdown().await;
}

/// `--worker-threads` sizes the runtime a real `serve` process runs on, as `/metrics` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_threads_flag_sizes_the_runtime() {
    for workers in ["1", "3"] {
        let server = crate::process_support::ServerProcess::start(&[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--jwt-secret",
            crate::server_support::SECRET,
            "--store",
            "none",
            "--worker-threads",
            workers,
        ]);
        let (status, text) = http_text(server.addr, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        let got = samples(&text);
        assert_eq!(
            got.get("agent_server_runtime_worker_threads"),
            Some(&workers.parse::<f64>().unwrap()),
            "{text}"
        );
    }
}
