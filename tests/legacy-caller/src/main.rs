//! A legacy caller: code written against the engine paths of the old system, unchanged.
//!
//! It must compile, with a deprecation warning at every legacy path that names the new API,
//! and run: that is what `compat` promises a team that upgrades before it migrates. It has no
//! `#[allow(deprecated)]` on purpose; `tests/it/compat.rs` builds it, checks the warnings and
//! runs it. Do not migrate this file: it is the old way, kept as a test.

use std::error::Error;
use std::sync::Arc;

use agent_registry::{AgentInput, AgentRegistry};
use core_context::lifecycle::check_lifecycle;
use core_context::{EventSink, RecordingSink, UserExecutionContext, UserId};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut registry = AgentRegistry::new();
    agents::synthetic::register(&mut registry)?;
    let registry = Arc::new(registry);

    // The old constructor without a user context: refused, with a message that says how to
    // build one.
    let recorder = Arc::new(RecordingSink::new());
    let bridge: Arc<dyn EventSink> = recorder.clone();
    match compat::create_from_legacy(Arc::clone(&registry), Arc::clone(&bridge), None) {
        Ok(_) => return Err("create_from_legacy made an engine without a user context".into()),
        Err(error) => println!("legacy caller: create_from_legacy(None) refused: {error}"),
    }

    // The engine under its old `supervisor` path.
    let context = UserExecutionContext::builder(UserId::parse("alice")?).build()?;
    let engine = compat::supervisor::execution_engine::ExecutionEngine::create_execution_engine(
        context,
        Arc::clone(&registry),
        Arc::clone(&bridge),
    );
    run(&engine, &recorder).await?;

    // The engine under its old "consolidated" path, from the old constructor with a context.
    let recorder = Arc::new(RecordingSink::new());
    let bridge: Arc<dyn EventSink> = recorder.clone();
    let context = UserExecutionContext::builder(UserId::parse("alice")?).build()?;
    let engine: compat::execution_engine_consolidated::ExecutionEngine =
        compat::create_from_legacy(registry, bridge, Some(context))?;
    run(&engine, &recorder).await?;
    Ok(())
}

/// Runs the synthetic agent on `engine`, checks the events `recorder` got, and prints a
/// summary line.
async fn run(
    engine: &compat::execution_engine_consolidated::ExecutionEngine,
    recorder: &RecordingSink,
) -> Result<(), Box<dyn Error>> {
    let input =
        AgentInput::message("hi").with_input(json!({"thinking": 1, "tools": 1, "chunks": 1}));
    let outcome = engine.execute_agent("synthetic", input).await?.wait().await;
    if !outcome.is_completed() {
        return Err(format!("the run did not complete: {outcome:?}").into());
    }
    let events = recorder.events();
    let summary = check_lifecycle(events.iter().map(|(_, event)| event))?;
    println!(
        "legacy caller: run completed with {} events",
        summary.events
    );
    Ok(())
}
