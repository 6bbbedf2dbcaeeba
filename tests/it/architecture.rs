//! The layering of `docs/ARCHITECTURE.md`, checked on the manifests: arrows point down only,
//! `agent-registry` and `ws-bridge` do not know each other, and `core-context` does no IO.

use std::collections::BTreeSet;
use std::path::Path;

/// The workspace crates each crate may depend on (normal dependencies, not dev ones).
const ALLOWED: &[(&str, &[&str])] = &[
    ("core-context", &[]),
    ("agent-registry", &["core-context"]),
    ("ws-bridge", &["core-context"]),
    ("agents", &["core-context", "agent-registry"]),
    ("execution-engine", &["core-context", "agent-registry"]),
    (
        "compat",
        &["core-context", "agent-registry", "execution-engine"],
    ),
    // The composition root: it may use every library crate, and no crate may use it.
    ("llm-agent", &["core-context", "agent-registry"]),
    (
        "agent-server",
        &[
            "core-context",
            "agent-registry",
            "ws-bridge",
            "execution-engine",
            "agents",
            "llm-agent",
        ],
    ),
];

/// External crates `core-context` may use: data and sync primitives, nothing that does IO.
const CORE_CONTEXT_EXTERNAL: &[&str] = &[
    "humantime",
    "parking_lot",
    "serde",
    "serde_json",
    "thiserror",
    "tokio-util",
    "ulid",
];

fn dependencies(krate: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("crates").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn crates_depend_only_downwards() {
    let local: BTreeSet<&str> = ALLOWED.iter().map(|(k, _)| *k).collect();
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    for krate in &on_disk {
        let Some((_, allowed)) = ALLOWED.iter().find(|(k, _)| k == krate) else {
            panic!(
                "crate {krate} has no place in the layering table of tests/it/architecture.rs; add it"
            );
        };
        for dep in dependencies(krate) {
            if local.contains(dep.as_str()) || on_disk.contains(&dep) {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "{krate} depends on {dep}: an arrow pointing up or sideways"
                );
            }
        }
    }
}

#[test]
fn core_context_does_no_io() {
    for dep in dependencies("core-context") {
        assert!(
            CORE_CONTEXT_EXTERNAL.contains(&dep.as_str()),
            "core-context depends on {dep}; it holds data and traits only (see docs/ARCHITECTURE.md)"
        );
    }
}
