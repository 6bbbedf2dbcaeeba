//! `compat`: a legacy caller keeps compiling, with deprecation warnings that name the new API,
//! and keeps working, with the same isolation and lifecycle guarantees as a migrated one.
//!
//! Two tests: one builds the real legacy caller (`tests/legacy-caller`, a package outside the
//! workspace so that its warnings stay warnings) with cargo and runs it; the other drives the
//! same legacy paths in-process, for two users at once.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use agent_registry::{AgentInput, AgentRegistry};
use core_context::lifecycle::check_lifecycle;
use core_context::{EventSink, RecordingSink, UserExecutionContext, UserId};
use serde_json::json;

type TestResult = Result<(), Box<dyn Error>>;

/// The workspace root: this package lives in `<root>/tests`.
fn workspace_root() -> Result<PathBuf, Box<dyn Error>> {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = tests_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", tests_dir.display()))?;
    Ok(root.to_path_buf())
}

/// The workspace's target directory: cargo gives integration tests `<target>/tmp`.
fn target_dir() -> Result<PathBuf, Box<dyn Error>> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", tmp.display()))?;
    Ok(target.to_path_buf())
}

/// Copies the legacy caller to `<target>/tmp/legacy-caller` with its path dependencies made
/// absolute, and puts the workspace's `Cargo.lock` next to it.
///
/// Building the package where it lives would write a `Cargo.lock` into the source tree. The
/// copy keeps the tree clean, and the workspace's lock file pins every crate to the version
/// the workspace build already downloaded, so the build works `--offline` on a fresh clone
/// (cargo trims the entries the caller does not use).
fn copy_legacy_caller(root: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let source = root.join("tests").join("legacy-caller");
    let copy = Path::new(env!("CARGO_TARGET_TMPDIR")).join("legacy-caller");
    if copy.exists() {
        fs::remove_dir_all(&copy)?;
    }
    fs::create_dir_all(copy.join("src"))?;
    fs::copy(source.join("src/main.rs"), copy.join("src/main.rs"))?;
    fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock"))?;

    // Forward slashes: TOML strings treat `\` as an escape, and cargo accepts `/` everywhere.
    let crates = root.join("crates").display().to_string().replace('\\', "/");
    let manifest = fs::read_to_string(source.join("Cargo.toml"))?;
    let relative = "path = \"../../crates/";
    let rewritten = manifest.replace(relative, &format!("path = \"{crates}/"));
    let expected = 4;
    let found = manifest.matches(relative).count();
    if found != expected {
        return Err(format!(
            "tests/legacy-caller/Cargo.toml has {found} dependencies written as `{relative}...\"`, \
             expected {expected} (agent-registry, agents, compat, core-context); keep that form, \
             this test rewrites it to absolute paths"
        )
        .into());
    }
    fs::write(copy.join("Cargo.toml"), rewritten)?;
    Ok(copy)
}

/// What cargo printed, for failure messages.
fn describe(what: &str, output: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Checks that `stderr` holds a deprecation warning for `legacy_path` that names the new API.
fn check_warning(stderr: &str, legacy_path: &str) {
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning: use of deprecated"))
        .filter(|line| line.contains(&format!("`{legacy_path}`")))
        .collect();
    assert!(
        !warnings.is_empty(),
        "no deprecation warning for `{legacy_path}` in the legacy caller's build:\n{stderr}"
    );
    for warning in warnings {
        assert!(
            warning.contains("execution_engine::UserExecutionEngine")
                && warning.contains("docs/migration.md"),
            "the warning for `{legacy_path}` does not name the new API and the guide: {warning}"
        );
    }
}

#[test]
fn legacy_caller_compiles_with_deprecation_warnings_and_runs() -> TestResult {
    let root = workspace_root()?;
    let copy = copy_legacy_caller(&root)?;
    // A target directory of its own, next to the workspace's: the caller is not a workspace
    // member, and a shared one would make the two builds wait on each other's lock.
    let target = target_dir()?.join("legacy-caller");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let build = Command::new(&cargo)
        .args([
            "build",
            "--offline",
            "--message-format",
            "short",
            "--color",
            "never",
        ])
        .arg("--manifest-path")
        .arg(copy.join("Cargo.toml"))
        .current_dir(&copy)
        .env("CARGO_TARGET_DIR", &target)
        // Flags meant for the workspace (say `-D warnings`) would turn the warnings this test
        // looks for into errors.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .map_err(|e| format!("could not run `{cargo} build`: {e}"))?;
    assert!(
        build.status.success(),
        "{}",
        describe("building tests/legacy-caller", &build)
    );

    // Cargo replays the warnings of a build that is up to date, so they show on every run.
    let stderr = String::from_utf8_lossy(&build.stderr);
    for legacy_path in [
        "compat::supervisor::execution_engine::ExecutionEngine",
        "compat::execution_engine_consolidated::ExecutionEngine",
        "compat::create_from_legacy",
    ] {
        check_warning(&stderr, legacy_path);
    }

    let binary = target
        .join("debug")
        .join(format!("legacy-caller{}", std::env::consts::EXE_SUFFIX));
    let run = Command::new(&binary)
        .output()
        .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
    assert!(
        run.status.success(),
        "{}",
        describe("the legacy caller", &run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("legacy caller: create_from_legacy(None) refused:")
            && stdout.contains("requires one"),
        "the legacy caller did not report the refused context-less engine:\n{stdout}"
    );
    // One run through the `supervisor` alias, one through `create_from_legacy(Some(..))`.
    let runs: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("legacy caller: run completed with "))
        .collect();
    assert_eq!(runs.len(), 2, "expected two completed runs:\n{stdout}");
    for run in runs {
        let events: usize = run
            .strip_suffix(" events")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected summary line {run:?} in:\n{stdout}"))?;
        assert!(events >= 2, "a run with fewer than two events:\n{stdout}");
    }
    Ok(())
}

/// The legacy paths a caller may take to an engine.
#[derive(Debug, Clone, Copy)]
enum LegacyPath {
    Supervisor,
    Consolidated,
    CreateFromLegacy,
}

/// Builds an engine for `context` through `path`. The paths are deprecated; testing that they
/// still work is the point.
#[allow(deprecated)]
fn legacy_engine(
    path: LegacyPath,
    context: UserExecutionContext,
    registry: Arc<AgentRegistry>,
    bridge: Arc<dyn EventSink>,
) -> Result<execution_engine::UserExecutionEngine, compat::LegacyError> {
    Ok(match path {
        LegacyPath::Supervisor => {
            compat::supervisor::execution_engine::ExecutionEngine::create_execution_engine(
                context, registry, bridge,
            )
        }
        LegacyPath::Consolidated => {
            compat::execution_engine_consolidated::ExecutionEngine::create_execution_engine(
                context, registry, bridge,
            )
        }
        LegacyPath::CreateFromLegacy => {
            compat::create_from_legacy(registry, bridge, Some(context))?
        }
    })
}

/// Runs the synthetic agent with `tools` tool calls for each of `users` at once, each on an
/// engine built through `path`, all emitting to one sink; checks that every user's stream
/// holds exactly that user's one run, complete and with its lifecycle kept.
async fn check_legacy_path(path: LegacyPath, users: &[&str], tools: usize) -> TestResult {
    let mut registry = AgentRegistry::new();
    agents::synthetic::register(&mut registry)?;
    let registry = Arc::new(registry);
    let sink = Arc::new(RecordingSink::new());

    let mut runs = Vec::new();
    for user in users {
        let user_id = UserId::parse(user)?;
        let context = UserExecutionContext::builder(user_id.clone()).build()?;
        let bridge: Arc<dyn EventSink> = sink.clone();
        let engine = legacy_engine(path, context, Arc::clone(&registry), bridge)?;
        let input = AgentInput::message(format!("hi from {user}"))
            .with_input(json!({"thinking": 2, "tools": tools, "chunks": 2, "sleep_ms": 1}));
        let handle = engine.execute_agent("synthetic", input).await?;
        runs.push((user_id, handle.run_id().clone(), handle));
    }
    for (user_id, run_id, handle) in runs {
        let outcome = handle.wait().await;
        assert!(outcome.is_completed(), "{path:?} {user_id}: {outcome:?}");
        let events = sink.events_for(&user_id);
        assert!(
            events.iter().all(|event| event.run_id == run_id),
            "{path:?}: {user_id}'s stream holds another run's events: {events:?}"
        );
        let summary = check_lifecycle(&events)
            .map_err(|violation| format!("{path:?} {user_id}: {violation}"))?;
        assert_eq!(
            (summary.runs, summary.completed, summary.tool_calls),
            (1, 1, tools),
            "{path:?} {user_id}: {summary:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_paths_keep_isolation_and_lifecycle() -> TestResult {
    let users = ["alice", "bob", "carol"];
    for (path, tools) in [
        (LegacyPath::Supervisor, 1),
        (LegacyPath::Consolidated, 2),
        (LegacyPath::CreateFromLegacy, 3),
    ] {
        check_legacy_path(path, &users, tools).await?;
    }
    Ok(())
}

#[test]
#[allow(deprecated)]
fn legacy_constructor_without_a_user_is_refused() -> TestResult {
    let registry = Arc::new(AgentRegistry::new());
    let sink = Arc::new(RecordingSink::new());
    let bridge: Arc<dyn EventSink> = sink.clone();
    match compat::create_from_legacy(registry, bridge, None) {
        Ok(engine) => Err(format!(
            "an engine with no user context was made (it serves {})",
            engine.context().user_id()
        )
        .into()),
        Err(error) => {
            let message = error.to_string();
            for fragment in [
                "requires one",
                "UserExecutionContext::builder",
                "UserExecutionEngine::create_execution_engine",
                "docs/migration.md",
            ] {
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
            assert!(sink.is_empty(), "a refused engine emitted events");
            Ok(())
        }
    }
}
