//! Tests of `cargo xtask ssot-check` on whole trees: the fixture workspaces under
//! `xtask/fixtures/` and the real workspace, which must keep the engine single.
//!
//! The rules themselves are tested file by file in `src/ssot/tests_scan.rs` (the configuration
//! in `src/ssot/tests_config.rs`); these tests cover what only a tree has: walking, excluding,
//! crate names from paths, and the engine defined exactly once.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use xtask::ssot::{self, Config, FindingKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The configuration of a fixture tree, from its `manifest.toml` (a stand-in for a root
/// `Cargo.toml`, named so that cargo never takes a fixture for a workspace).
fn fixture_config(name: &str) -> Config {
    Config::load_from(&fixture(name).join("manifest.toml"))
        .expect("the fixture's configuration is valid")
}

/// Checks the fixture tree `name` with the configuration in its `manifest.toml` and compares the
/// findings, one per line as `path:line:col kind name`, and the file count with `expected`.
#[track_caller]
fn check(name: &str, expected_files: usize, expected: &str) {
    let root = &fixture(name);
    let cfg = fixture_config(name);
    let report = ssot::check_tree(root, &cfg).expect("the fixture tree can be read");
    let actual: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            let line = format!("{}:{}:{} {} {}", f.path, f.line, f.column, f.kind, f.name);
            line.trim_end().to_owned()
        })
        .collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(actual, expected, "findings in {}", root.display());
    assert_eq!(
        report.files_checked,
        expected_files,
        "files checked in {}",
        root.display()
    );
}

#[test]
fn a_second_engine_is_found_everywhere_it_hides() {
    check(
        "second_engine",
        5,
        "
        crates/ws-bridge/src/broken.rs:3:19 parse error
        crates/ws-bridge/src/lib.rs:4:46 use rename ExecutionEngine
        crates/ws-bridge/src/lib.rs:6:12 struct ShadowExecutionEngine
        crates/ws-bridge/src/lib.rs:8:11 trait AgentEngine
        crates/ws-bridge/src/lib.rs:10:10 enum RunEngineState
        crates/ws-bridge/src/lib.rs:15:10 type LegacyExecEngine
        crates/ws-bridge/src/lib.rs:17:10 type rename Runner
        crates/ws-bridge/src/lib.rs:20:16 struct NestedExecutionEngine
        crates/ws-bridge/src/lib.rs:24:12 struct LocalExecutionEngine
        tests/it/main.rs:3:46 use rename Engine
        crates/execution-engine/src/shadow.rs:3:12 duplicate engine UserExecutionEngine
        ",
    );
}

#[test]
fn a_tree_that_keeps_the_rules_is_clean() {
    check("clean", 4, "");
}

#[test]
fn the_engine_crate_must_define_the_engine() {
    check(
        "no_engine",
        1,
        "crates/execution-engine:0:0 missing engine UserExecutionEngine",
    );
}

/// The real workspace keeps the engine single: this is the "one engine" invariant of
/// `docs/ARCHITECTURE.md`, checked on every `cargo test`.
#[test]
fn the_workspace_has_one_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace root");
    let cfg = Config::load(root).expect("the root manifest's ssot-check configuration is valid");
    let report = ssot::check_tree(root, &cfg).expect("the workspace can be read");
    let findings: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
    assert!(
        report.is_clean(),
        "cargo xtask ssot-check found:\n{}",
        findings.join("\n")
    );
    assert!(report.files_checked > 0);
}

#[test]
fn findings_say_where_and_how_to_fix() {
    let cfg = fixture_config("clean");
    let findings = ssot::check_source(
        "ws-bridge",
        "crates/ws-bridge/src/lib.rs",
        "\n  pub struct LegacyExecutionEngine;",
        &cfg,
    );
    let rendered: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        rendered,
        [
            "crates/ws-bridge/src/lib.rs:2:14: struct `LegacyExecutionEngine` defines a second \
             execution engine type in crate `ws-bridge`\n  \
             fix: use execution_engine::UserExecutionEngine (built by its factories) instead; if \
             this is not an engine, rename it so it does not match the patterns in \
             [workspace.metadata.ssot-check]"
        ]
    );
    assert_eq!(findings[0].kind, FindingKind::Struct);

    let renamed = ssot::check_source(
        "tests",
        "tests/it/main.rs",
        "use execution_engine::UserExecutionEngine as Engine;",
        &cfg,
    );
    let rendered: Vec<String> = renamed.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        rendered,
        [
            "tests/it/main.rs:1:46: `use ... as Engine` renames `UserExecutionEngine` in crate \
             `tests`, but only `compat` may alias the engine\n  \
             fix: refer to execution_engine::UserExecutionEngine by its own name; if callers \
             need a legacy name, add a deprecated alias in crate `compat` instead"
        ]
    );
}

#[test]
fn summaries() {
    let cfg = fixture_config("clean");
    let clean = ssot::check_tree(&fixture("clean"), &cfg).unwrap();
    assert_eq!(
        clean.summary(&cfg),
        "ssot-check: 4 files checked, one engine type (`UserExecutionEngine` in execution-engine)"
    );
    let cfg = fixture_config("second_engine");
    let broken = ssot::check_tree(&fixture("second_engine"), &cfg).unwrap();
    assert_eq!(broken.summary(&cfg), "ssot-check: 11 finding(s)");
}

/// Build output (`target/`, at any depth) is skipped: generated code is not ours to rename.
/// Git ignores `target/` directories, so this tree is made on the fly instead of kept as a
/// fixture.
#[test]
fn target_directories_are_skipped() {
    let root = std::env::temp_dir().join(format!("xtask-ssot-target-{}", std::process::id()));
    let generated = root.join("crates/ws-bridge/target/debug/build/out");
    fs::create_dir_all(&generated).unwrap();
    fs::create_dir_all(root.join("crates/execution-engine/src")).unwrap();
    fs::write(
        generated.join("generated.rs"),
        "pub struct GeneratedExecutionEngine;",
    )
    .unwrap();
    fs::write(
        root.join("crates/execution-engine/src/lib.rs"),
        "pub struct UserExecutionEngine;",
    )
    .unwrap();
    let cfg = fixture_config("clean");
    let report = ssot::check_tree(&root, &cfg);
    fs::remove_dir_all(&root).unwrap();
    let report = report.unwrap();
    assert_eq!(report.findings, []);
    assert_eq!(report.files_checked, 1);
}
