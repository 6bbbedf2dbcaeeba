//! Shared harness: a registry with the synthetic agent and a few test agents, a recording
//! sink, and helpers to build contexts and read a user's events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec,
};
use async_trait::async_trait;
use core_context::event::EventKind;
use core_context::{AgentEvent, EventSink, RecordingSink, UserExecutionContext, UserId};
use serde_json::json;

/// Returns its message and input, so pipelines can see what they were handed.
pub struct InputEcho;

#[async_trait]
impl Agent for InputEcho {
    async fn run(&self, ctx: &AgentContext, input: AgentInput) -> Result<AgentOutput, AgentError> {
        ctx.think("echoing");
        Ok(json!({
            "message": input.message,
            "input": input.input,
            "previous_result": input.previous_result,
            "run_id": ctx.scope().run_id,
        })
        .into())
    }
}

/// Counts up every 10 ms forever; proves a cancelled run's task really stops.
pub struct Ticker(pub Arc<AtomicU32>);

#[async_trait]
impl Agent for Ticker {
    async fn run(
        &self,
        _ctx: &AgentContext,
        _input: AgentInput,
    ) -> Result<AgentOutput, AgentError> {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub struct Harness {
    pub registry: Arc<AgentRegistry>,
    pub sink: Arc<RecordingSink>,
    pub ticks: Arc<AtomicU32>,
}

impl Harness {
    pub fn new() -> Self {
        let mut registry = AgentRegistry::new();
        agents::synthetic::register(&mut registry).unwrap();
        registry
            .register_agent(AgentSpec::new("echo", || InputEcho))
            .unwrap();
        let ticks = Arc::new(AtomicU32::new(0));
        let t = Arc::clone(&ticks);
        registry
            .register_agent(AgentSpec::new("ticker", move || Ticker(Arc::clone(&t))))
            .unwrap();
        registry
            .register_agent(
                AgentSpec::new("quick_timeout", || agents::synthetic::SyntheticAgent)
                    .timeout(Duration::from_millis(50)),
            )
            .unwrap();
        Self {
            registry: Arc::new(registry),
            sink: Arc::new(RecordingSink::new()),
            ticks,
        }
    }

    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::clone(&self.sink) as Arc<dyn EventSink>
    }

    pub fn events(&self, user: &str) -> Vec<AgentEvent> {
        self.sink.events_for(&user_id(user))
    }
}

pub fn user_id(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub fn context(user: &str) -> UserExecutionContext {
    UserExecutionContext::builder(user_id(user))
        .build()
        .unwrap()
}

/// A synthetic input.
pub fn shape(v: serde_json::Value) -> AgentInput {
    AgentInput::message("go").with_input(v)
}

/// The wire types of `events`, in order.
pub fn types(events: &[AgentEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.type_name()).collect()
}

/// The terminal event's kind of the run `run_id`.
pub fn terminal_of<'a>(events: &'a [AgentEvent], run_id: &core_context::RunId) -> &'a EventKind {
    &events
        .iter()
        .rfind(|e| &e.run_id == run_id)
        .expect("the run has events")
        .kind
}

/// Polls `condition` until it holds, failing the test after 10 s with `what`. For waiting on
/// something that must happen, without a fixed sleep that a loaded machine could outlast.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An HTTP client for the tests. reqwest's rustls takes the process's crypto provider, which
/// the server's own clients install (ring) when they are first made; a test may make its
/// client before any of them, so it installs ring too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The server's `/metrics` at `addr`, as text.
pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
