//! `docs/ARCHITECTURE.md` is the code map a newcomer reads first: it must name every crate
//! (in its crate list) and every top-level module of the server, and every Architecture
//! Invariant in it must name the test that holds it. A crate or a module added without its
//! line fails here.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap()
}

/// The package name in `manifest`'s `[package]`.
fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["package"]["name"].as_str().unwrap().to_owned()
}

/// The crate list: the fenced block of the document that lists `core-context`, one crate a
/// line (its first word).
fn crate_list(document: &str) -> Vec<String> {
    let block = document
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|block| block.lines().any(|line| line.starts_with("core-context")))
        .unwrap_or_default();
    block
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_crate_has_its_line_in_the_crate_list() {
    let document = architecture();
    let listed = crate_list(&document);
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        let name = package_name(&manifest);
        if !listed.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's crate list lacks {missing:?}: give each a line"
    );
}

#[test]
fn every_server_module_is_on_the_map() {
    let document = architecture();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("crates/agent-server/src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let named = if path.is_dir() {
            format!("`{name}/`")
        } else if name == "lib.rs" {
            continue;
        } else {
            format!("`{name}`")
        };
        if !document.contains(&named) {
            missing.push(named);
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name the server modules {missing:?}"
    );
}

#[test]
fn every_invariant_names_its_test() {
    let document = architecture();
    let marker = "**Architecture Invariant:**";
    let mut count = 0;
    for (i, piece) in document.split(marker).enumerate().skip(1) {
        count += 1;
        // The invariant runs to the end of its paragraph.
        let paragraph = piece.split("\n\n").next().unwrap_or_default();
        assert!(
            paragraph.contains("tests/") || paragraph.contains("test"),
            "invariant {i} names no test: {}",
            paragraph.trim()
        );
    }
    assert!(count >= 10, "only {count} invariants found");
}
