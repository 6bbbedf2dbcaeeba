//! The server's logs at debug level, from a session that touches every path that handles a
//! secret (tokens in the upgrade and the history API, a refused token, the `llm` agent's API
//! key, the JWT secret itself): no secret, token, key or raw user id appears, and the lines
//! sit in their connection, run and tool spans (the user hashed).
//!
//! The server runs on a current-thread runtime under a capturing subscriber, so what its
//! tasks log is captured; the history writer's own thread is not (it logs no request data).

use std::io::Write;
use std::sync::Arc;

use llm_agent::{LlmConfig, Secret};
use parking_lot::Mutex;
use serde_json::json;

use crate::history_server::http_text;
use crate::llm::{Model, Piece, Reply, content};
use crate::server_support::{Client, SECRET, start_server, token, token_with};

/// A writer into a shared buffer (the log tests capture what a subscriber writes).
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const API_KEY: &str = "sk-test-api-key-never-logged-8f3a";
const USER: &str = "log-user-4711";

async fn session() {
    let model = Model::start(vec![Reply::Stream(vec![
        content("84"),
        Piece::Raw("data: [DONE]\n\n"),
    ])])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let dir =
        std::env::temp_dir().join(format!("agent-it-logs-{}", core_context::RunId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let server = start_server(move |config| {
        let mut llm = LlmConfig::new(base, "test-model");
        llm.api_key = Some(Secret::new(API_KEY));
        config.llm = Some(llm);
        config.store = Some(store);
    })
    .await;
    let addr = server.addr();
    let forged = token_with(
        json!({"sub": USER, "exp": 4_000_000_000u64}),
        "some-other-secret-of-32-bytes-or-more",
    );
    assert!(Client::connect(addr, &forged, None).await.is_err());
    let mut client = Client::user(addr, USER).await;
    for (agent, input) in [("synthetic", json!({"tools": 1})), ("llm", json!({}))] {
        let payload = json!({"agent": agent, "message": "What is 12*7?", "input": input});
        client
            .send(json!({"type": "start_agent", "payload": payload}))
            .await;
        assert_eq!(client.reply().await["type"], "run_accepted");
        client.events_until_terminals(1).await;
    }
    let (status, _) = http_text(addr, "GET", "/v1/threads", Some(USER)).await;
    assert_eq!(status, 200);
    drop(client);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn debug_logs_hold_no_secret_and_carry_the_spans() {
    let captured = Capture::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || runtime.block_on(session()));
    let logs = String::from_utf8(captured.0.lock().clone()).unwrap();
    for secret in [SECRET, API_KEY, USER, token(USER).as_str()] {
        assert!(!logs.contains(secret), "`{secret}` is in the logs:\n{logs}");
    }
    let tag = agent_server::auth::user_tag(&core_context::UserId::parse(USER).unwrap());
    for needed in [
        format!("connection{{user={tag} connection_id="),
        "run{run_id=run_".to_owned(),
        "agent=synthetic".to_owned(),
        "tool{tool=synthetic_echo".to_owned(),
        "connection opened".to_owned(),
        "refused a connection".to_owned(),
    ] {
        assert!(logs.contains(&needed), "no `{needed}` in the logs:\n{logs}");
    }
}
