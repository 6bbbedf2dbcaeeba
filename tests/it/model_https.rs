//! The `llm` agent's model over HTTPS with a private CA: the scripted model behind a TLS
//! front whose certificate a CA made by the test signed is trusted through `SSL_CERT_FILE`
//! (the one trust policy of every outgoing HTTPS client: the machine's roots, or that file),
//! and refused without it, with the certificate named.
//!
//! The agent runs in a child process (this test binary again) so each run has its own
//! `SSL_CERT_FILE`, read when its first TLS client is made.

use std::path::Path;
use std::sync::Arc;

use agent_registry::{AgentInput, AgentRegistry};
use execution_engine::{RunOutcome, UserExecutionEngine};
use llm_agent::LlmConfig;

use crate::llm::{DONE, Model, Reply, content};
use crate::mcp_https::{BEGIN, END, answer_in_child, tls_front};
use crate::support::{Harness, context};

/// The model's base URL in the child; without it the child test has nothing to do.
const CHILD_BASE: &str = "AGENT_IT_MODEL_HTTPS_BASE";

/// Not a test of its own: the body of the child [`in_child`] starts.
#[test]
fn child_process() {
    let Ok(base) = std::env::var(CHILD_BASE) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(async {
        let harness = Harness::new();
        let mut registry = AgentRegistry::new();
        let mut config = LlmConfig::new(base, "test-model");
        config.max_retries = 0;
        llm_agent::register(&mut registry, config).unwrap();
        let engine = UserExecutionEngine::create_execution_engine(
            context("alice"),
            Arc::new(registry),
            harness.sink(),
        );
        let run = engine
            .execute_agent("llm", AgentInput::message("hello over https"))
            .await
            .unwrap();
        match run.wait().await {
            RunOutcome::Completed { output, .. } => format!("ok: {}", output.result),
            RunOutcome::Failed(error) => format!("error: {error}"),
            RunOutcome::Cancelled(reason) => format!("cancelled: {reason}"),
            RunOutcome::Paused(calls) => format!("paused: {} call(s)", calls.len()),
            RunOutcome::WaitingForBudget(why) => format!("waiting for budget: {why:?}"),
        }
    });
    println!("{BEGIN}\n{answer}\n{END}");
}

/// What the child answers for the model at `base`, with `SSL_CERT_FILE` set to `roots` or
/// unset.
fn in_child(base: &str, roots: Option<&Path>) -> String {
    answer_in_child("model_https::child_process", (CHILD_BASE, base), roots)
}

#[test]
fn the_model_over_https_is_trusted_through_ssl_cert_file_and_refused_without_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model = runtime.block_on(Model::start(vec![Reply::Stream(vec![
        content("answered over https"),
        DONE,
    ])]));
    let front = tls_front(&format!("http://{}/mcp", model.addr));
    let base = front.url.replace("/mcp", "/v1");

    let trusted = in_child(&base, Some(&front.dir.join("ca.pem")));
    assert_eq!(trusted, "ok: \"answered over https\"");
    assert_eq!(model.requests().len(), 1);

    let refused = in_child(&base, None);
    assert!(
        refused.starts_with("error: ") && refused.contains("certificate"),
        "{refused}"
    );
    assert_eq!(
        model.requests().len(),
        1,
        "the refused client reached the model"
    );
}
