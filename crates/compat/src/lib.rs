//! Deprecated legacy paths to the one engine, for callers that have not migrated yet.
//!
//! The system this workspace replaces had several engines under several paths. They are now
//! one type, [`execution_engine::UserExecutionEngine`], and this crate keeps the old paths
//! compiling so that a legacy caller can upgrade first and migrate second:
//! - [`supervisor::execution_engine::ExecutionEngine`] and
//!   [`execution_engine_consolidated::ExecutionEngine`] are deprecated aliases of the engine;
//! - [`create_from_legacy`] is the old constructor, which took an optional user context.
//!
//! Every item is `#[deprecated]`, and each warning names the new API, so the compiler lists
//! what is left to migrate. `docs/migration.md` shows each move, before and after.
//!
//! **Architecture Invariant:** this crate is a facade and nothing else. It defines no engine,
//! holds no state and adds no behaviour: every path here ends in the primary factory,
//! [`UserExecutionEngine::create_execution_engine`]. It is the only crate allowed to alias
//! the engine (`cargo xtask ssot-check`), and it will be removed once no caller needs it.

use std::sync::Arc;

use agent_registry::AgentRegistry;
use core_context::{EventSink, UserExecutionContext};
use execution_engine::UserExecutionEngine;

pub mod supervisor {
    //! The old `supervisor` tree; only its engine path is kept.

    pub mod execution_engine {
        //! The old `supervisor::execution_engine` module; only its engine name is kept.

        /// The engine under its old `supervisor` path: the same type as
        /// [`execution_engine::UserExecutionEngine`].
        #[deprecated(
            since = "0.1.0",
            note = "use execution_engine::UserExecutionEngine (built by UserExecutionEngine::create_execution_engine or ExecutionEngineFactory); see docs/migration.md"
        )]
        pub type ExecutionEngine = ::execution_engine::UserExecutionEngine;
    }
}

pub mod execution_engine_consolidated {
    //! The old `execution_engine_consolidated` module; only its engine name is kept.

    /// The engine under its old "consolidated" path: the same type as
    /// [`execution_engine::UserExecutionEngine`].
    #[deprecated(
        since = "0.1.0",
        note = "use execution_engine::UserExecutionEngine (built by UserExecutionEngine::create_execution_engine or ExecutionEngineFactory); see docs/migration.md"
    )]
    pub type ExecutionEngine = ::execution_engine::UserExecutionEngine;
}

/// Why a legacy constructor could not make an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// [`create_from_legacy`] was called without a user context.
    #[error(
        "create_from_legacy was called without a user context, and an engine now requires one: \
         an engine with no user is the isolation bug of the old system, where the events of one \
         user could reach another user's connection. Build the context from the id your \
         authentication produced and call the primary factory:\n    \
         let ctx = UserExecutionContext::builder(UserId::parse(<authenticated user id>)?)\
         .thread_id(ThreadId::parse(<thread id>)?).build()?;\n    \
         let engine = UserExecutionEngine::create_execution_engine(ctx, registry, bridge);\n\
         (see docs/migration.md)"
    )]
    MissingUserContext,
}

/// The old constructor: an engine for `user_context`, running agents from `registry` and
/// emitting through `bridge`.
///
/// With a context this is exactly
/// [`UserExecutionEngine::create_execution_engine`]. Without one it fails with
/// [`LegacyError::MissingUserContext`]: the old constructor made an engine with no user, and
/// such an engine is how events of one user reached another, so there is nothing safe to
/// fall back to.
#[deprecated(
    since = "0.1.0",
    note = "use execution_engine::UserExecutionEngine::create_execution_engine with a UserExecutionContext of the authenticated user; see docs/migration.md"
)]
pub fn create_from_legacy(
    registry: Arc<AgentRegistry>,
    bridge: Arc<dyn EventSink>,
    user_context: Option<UserExecutionContext>,
) -> Result<UserExecutionEngine, LegacyError> {
    let user_context = user_context.ok_or(LegacyError::MissingUserContext)?;
    Ok(UserExecutionEngine::create_execution_engine(
        user_context,
        registry,
        bridge,
    ))
}

#[cfg(test)]
// These tests call the deprecated paths on purpose: proving they still work is their job.
#[allow(deprecated)]
mod tests {
    use std::error::Error;

    use agent_registry::AgentInput;
    use core_context::lifecycle::check_lifecycle;
    use core_context::{RecordingSink, UserId};
    use serde_json::{Value, json};

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    /// The legacy paths a caller may take to an engine.
    #[derive(Debug, Clone, Copy)]
    enum LegacyPath {
        Supervisor,
        Consolidated,
        CreateFromLegacy,
    }

    fn registry() -> Result<Arc<AgentRegistry>, Box<dyn Error>> {
        let mut registry = AgentRegistry::new();
        agents::synthetic::register(&mut registry)?;
        Ok(Arc::new(registry))
    }

    /// Builds an engine for `user` through `path`, runs the synthetic agent with `shape` on
    /// it, and checks that the run completed, its events are all `user`'s and keep the
    /// lifecycle, and it made `tool_calls` tool calls.
    async fn check_run(
        path: LegacyPath,
        user: &str,
        shape: Value,
        tool_calls: usize,
    ) -> TestResult {
        let user_id = UserId::parse(user)?;
        let context = UserExecutionContext::builder(user_id.clone()).build()?;
        let sink = Arc::new(RecordingSink::new());
        let bridge: Arc<dyn EventSink> = sink.clone();
        let engine: UserExecutionEngine = match path {
            LegacyPath::Supervisor => {
                supervisor::execution_engine::ExecutionEngine::create_execution_engine(
                    context,
                    registry()?,
                    bridge,
                )
            }
            LegacyPath::Consolidated => {
                execution_engine_consolidated::ExecutionEngine::create_execution_engine(
                    context,
                    registry()?,
                    bridge,
                )
            }
            LegacyPath::CreateFromLegacy => create_from_legacy(registry()?, bridge, Some(context))?,
        };
        assert_eq!(engine.context().user_id(), &user_id, "{path:?}");

        let outcome = engine
            .execute_agent(
                agents::synthetic::AGENT_NAME,
                AgentInput::message("hi").with_input(shape.clone()),
            )
            .await?
            .wait()
            .await;
        assert!(outcome.is_completed(), "{path:?} {shape}: {outcome:?}");

        let events = sink.events();
        assert!(
            events.iter().all(|(owner, _)| owner == &user_id),
            "{path:?}: an event went to another user: {events:?}"
        );
        let summary = check_lifecycle(events.iter().map(|(_, event)| event))?;
        assert_eq!(
            (summary.runs, summary.completed, summary.tool_calls),
            (1, 1, tool_calls),
            "{path:?} {shape}: {summary:?}"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_legacy_path_runs_an_agent_with_a_full_lifecycle() -> TestResult {
        let cases = [
            (
                LegacyPath::Supervisor,
                json!({"thinking": 1, "tools": 1, "chunks": 1}),
                1,
            ),
            (
                LegacyPath::Consolidated,
                json!({"thinking": 2, "tools": 3, "chunks": 2}),
                3,
            ),
            (
                LegacyPath::CreateFromLegacy,
                json!({"thinking": 1, "tools": 1, "chunks": 1}),
                1,
            ),
            (
                LegacyPath::CreateFromLegacy,
                json!({"thinking": 0, "tools": 0, "chunks": 0}),
                0,
            ),
        ];
        for (path, shape, tool_calls) in cases {
            check_run(path, "alice", shape, tool_calls).await?;
        }
        Ok(())
    }

    /// Checks that `create_from_legacy` without a context fails, with a message that holds
    /// every one of `fragments`.
    fn check_missing_context(fragments: &[&str]) -> TestResult {
        let bridge: Arc<dyn EventSink> = Arc::new(RecordingSink::new());
        match create_from_legacy(registry()?, bridge, None) {
            Ok(engine) => Err(format!(
                "an engine with no user context was made (it serves {:?})",
                engine.context().user_id()
            )
            .into()),
            Err(error) => {
                assert_eq!(error, LegacyError::MissingUserContext);
                let message = error.to_string();
                for fragment in fragments {
                    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
                }
                Ok(())
            }
        }
    }

    #[test]
    fn missing_user_context_says_why_and_how_to_build_one() -> TestResult {
        check_missing_context(&[
            // What is wrong.
            "without a user context",
            "requires one",
            // Why: the isolation bug.
            "isolation",
            "events of one user could reach another",
            // How to fix it.
            "UserExecutionContext::builder(UserId::parse(<authenticated user id>)?)",
            ".thread_id(",
            ".build()?",
            "UserExecutionEngine::create_execution_engine(ctx, registry, bridge)",
            "docs/migration.md",
        ])
    }
}
