//! The layering of `docs/ARCHITECTURE.md`, checked on the manifests: arrows point down only,
//! `agent-registry` and `ws-bridge` do not know each other, `core-context` and
//! `agent-protocol` do no IO; and the rooms stay small: no `.rs` file of the repository over
//! 600 lines, and the server's own sources (`crates/agent-server/src`) under 5,500 lines in
//! all.

use std::collections::BTreeSet;
use std::path::Path;

/// The workspace crates (by package name) each crate may depend on (normal dependencies, not
/// dev ones).
const ALLOWED: &[(&str, &[&str])] = &[
    ("core-context", &[]),
    // The secret scrubber, and which parts of a URL are secret: text in, text out, beside
    // core-context; knows no other crate.
    ("secrets", &[]),
    ("agent-registry", &["core-context"]),
    ("ws-bridge", &["core-context"]),
    // The history store: data and SQL, knows nothing of streams, engines or the wire.
    ("history", &["core-context"]),
    // A networked broker: implements ws-bridge's Broker, knows nothing above it.
    ("redis-broker", &["core-context", "ws-bridge", "secrets"]),
    ("agents", &["core-context", "agent-registry"]),
    ("execution-engine", &["core-context", "agent-registry"]),
    (
        "compat",
        &["core-context", "agent-registry", "execution-engine"],
    ),
    ("llm-agent", &["core-context", "agent-registry", "secrets"]),
    // Tools from MCP servers: the registry's Tool over rmcp, nothing above it.
    ("mcp-tools", &["core-context", "agent-registry"]),
    // The wire, and the client that speaks it: below the server, above nothing but the ids
    // and events; no crate below the server may use them.
    ("agent-protocol", &["core-context"]),
    ("agent-client", &["core-context", "agent-protocol"]),
    // AG-UI as the server speaks it: the engine's events (the wire's types) as AG-UI events,
    // interrupts and resume answers; no transport, nothing above it. Only the server uses it.
    ("agui-protocol", &["core-context", "agent-protocol"]),
    // Tokens into user ids: below the server, beside the client; the ids only.
    ("agent-auth", &["core-context"]),
    // The HTTP edge: headers, origins, bearer tokens, rate limits; what it reads (the token
    // verifier, the counters) from the crates below it, never the server.
    (
        "http-guard",
        &[
            "core-context",
            "agent-protocol",
            "agent-auth",
            "server-metrics",
        ],
    ),
    // The terminal client (`agent-server chat`): a client of the server like any other, on
    // agent-client; it knows nothing of the server's code. Only the server's binary uses it,
    // for its `chat` subcommand (no other row lists it).
    (
        "agent-chat",
        &["core-context", "agent-protocol", "agent-client"],
    ),
    // The load generator measures the server from outside: it speaks the wire through the
    // protocol's types and nothing else of the workspace. No crate may use it (no other row
    // lists it).
    ("loadgen", &["core-context", "agent-protocol"]),
    // The run service: starting and cancelling runs with their rules, on the engine, the
    // history and the Redis broker; no transport (no wire, no HTTP), and only the server uses
    // it.
    (
        "run-service",
        &[
            "core-context",
            "agent-registry",
            "ws-bridge",
            "redis-broker",
            "history",
            "execution-engine",
        ],
    ),
    // The server's metrics: one Prometheus registry per server and the states read at scrape
    // time from a snapshot the server fills; it reads the parts it counts (protocol codes for
    // labels, the bridge's resumes, the counts other crates keep) and knows nothing of the
    // server. Only the server uses it.
    (
        "server-metrics",
        &[
            "core-context",
            "agent-registry",
            "ws-bridge",
            "redis-broker",
            "history",
            "run-service",
            "llm-agent",
            "mcp-tools",
            "agent-protocol",
            "secrets",
        ],
    ),
    // The server's log lines and exported spans: the scrubber and tracing's crates, nothing
    // of the server (its settings' types are this crate's, re-exported by the server's
    // config). Only the server uses it.
    ("server-telemetry", &["secrets"]),
    // The composition root: it may use every library crate but the client (the terminal
    // client is agent-chat's), and no crate may use it.
    (
        "agent-server",
        &[
            "core-context",
            "agent-registry",
            "ws-bridge",
            "redis-broker",
            "history",
            "execution-engine",
            "run-service",
            "server-metrics",
            "server-telemetry",
            "agents",
            "llm-agent",
            "mcp-tools",
            "agent-protocol",
            "agui-protocol",
            "agent-chat",
            "agent-auth",
            "http-guard",
            "secrets",
        ],
    ),
];

/// External crates `agent-protocol` may use: serialisation only.
/// (`ts-rs` describes the types in TypeScript for the TypeScript client; its derives read
/// the types only, and these crates never call its file-writing `export`.)
const PROTOCOL_EXTERNAL: &[&str] = &["serde", "serde_json", "thiserror", "ts-rs"];

/// The longest `.rs` file allowed anywhere in the repository: past it, a file holds two ideas.
const MAX_FILE_LINES: usize = 600;

/// The most lines `crates/agent-server/src` may hold in all its `.rs` files: the composition
/// root wires the crates below it; a concern that grows past this belongs in a crate of its
/// own (as the HTTP edge, the metrics and the telemetry did).
const MAX_SERVER_LINES: usize = 5_500;

/// External crates `core-context` may use: data and sync primitives, nothing that does IO.
const CORE_CONTEXT_EXTERNAL: &[&str] = &[
    "humantime",
    "parking_lot",
    "serde",
    "serde_json",
    "thiserror",
    "tokio-util",
    "ts-rs",
    "ulid",
];

fn crates_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates")
}

/// Every crate under `crates/`: its package name and its normal dependencies.
fn manifests() -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).unwrap() {
        let path = entry.unwrap().path().join("Cargo.toml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let manifest: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = manifest["package"]["name"].as_str().unwrap().to_owned();
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        out.push((name, deps));
    }
    out
}

fn dependencies(krate: &str) -> BTreeSet<String> {
    manifests()
        .into_iter()
        .find(|(name, _)| name == krate)
        .unwrap_or_else(|| panic!("no crate {krate} under crates/"))
        .1
}

/// The client crate speaks WebSocket; its one use of HTTP (dev tokens) is a feature, so an
/// embedder that does not want an HTTP stack leaves it out (`default-features = false`).
#[test]
fn the_clients_http_stack_is_a_feature() {
    let text = std::fs::read_to_string(crates_dir().join("agent-client/Cargo.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    for dependency in ["reqwest", "rustls"] {
        let optional = manifest["dependencies"][dependency].get("optional");
        assert_eq!(
            optional.and_then(toml::Value::as_bool),
            Some(true),
            "agent-client's {dependency} must be optional"
        );
    }
    let feature = manifest["features"]["dev-token"].as_array().unwrap();
    assert!(feature.iter().any(|f| f.as_str() == Some("dep:reqwest")));
}

#[test]
fn crates_depend_only_downwards() {
    let manifests = manifests();
    let local: BTreeSet<&str> = manifests.iter().map(|(name, _)| name.as_str()).collect();
    for (krate, deps) in &manifests {
        let Some((_, allowed)) = ALLOWED.iter().find(|(k, _)| k == krate) else {
            panic!(
                "crate {krate} has no place in the layering table of tests/it/architecture.rs; add it"
            );
        };
        for dep in deps {
            if local.contains(dep.as_str()) {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "{krate} depends on {dep}: an arrow pointing up or sideways"
                );
            }
        }
    }
}

#[test]
fn nothing_depends_on_the_binaries() {
    for (krate, deps) in manifests() {
        for binary in ["agent-server", "loadgen"] {
            assert!(
                !deps.contains(binary),
                "{krate} depends on {binary}: binaries sit at the top and nothing uses them"
            );
        }
    }
}

/// The terminal's crates (a line editor, a markdown parser) belong to the chat client, not
/// to the server: `agent-server chat` is `agent-chat`, and the server itself never draws on a
/// terminal.
#[test]
fn the_server_leaves_the_terminal_to_agent_chat() {
    let server = dependencies("agent-server");
    for terminal_only in ["rustyline", "pulldown-cmark"] {
        assert!(
            !server.contains(terminal_only),
            "agent-server depends on {terminal_only}; the terminal client is agent-chat's"
        );
    }
    assert!(
        server.contains("agent-chat"),
        "`agent-server chat` runs agent-chat"
    );
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

#[test]
fn the_protocol_does_no_io() {
    for dep in dependencies("agent-protocol") {
        assert!(
            dep == "core-context" || PROTOCOL_EXTERNAL.contains(&dep.as_str()),
            "agent-protocol depends on {dep}; it holds the wire's types and parsing only"
        );
    }
}

/// Directories no repository file of ours lives in: build output, npm packages, git's own.
const NOT_OURS: &[&str] = &["target", "node_modules", ".git"];

/// Every `.rs` file of the repository (crates, xtask, tests, fuzz, fixtures), walked from its
/// root, past the directories of [`NOT_OURS`].
fn rust_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                if !NOT_OURS.iter().any(|name| entry.file_name() == *name) {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_source_file_is_over_the_limit() {
    let files = rust_files();
    // The walk reaches every part of the repository, not only the crates.
    for part in ["crates", "xtask", "tests", "fuzz"] {
        assert!(
            files
                .iter()
                .any(|path| path.components().any(|c| c.as_os_str() == part)),
            "no .rs file found under {part}/"
        );
    }
    let mut too_long = Vec::new();
    for path in files {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        if lines > MAX_FILE_LINES {
            too_long.push(format!("{} ({lines} lines)", path.display()));
        }
    }
    too_long.sort();
    assert!(
        too_long.is_empty(),
        "split these by concern (limit {MAX_FILE_LINES} lines): {too_long:#?}"
    );
}

/// The source files of `krate` (under `crates/<krate>/src`), with their text.
fn crate_sources(krate: &str) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![crates_dir().join(krate).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

/// The server stays a composition root: its sources, counted as the per-file limit counts
/// them (lines of each `.rs` file under `crates/agent-server/src`), total under
/// [`MAX_SERVER_LINES`].
#[test]
fn the_server_stays_under_its_line_budget() {
    let sources = crate_sources("agent-server");
    assert!(
        sources.iter().any(|(path, _)| path.ends_with("routes.rs")),
        "the walk found no routes.rs under crates/agent-server/src"
    );
    let mut files: Vec<(usize, String)> = sources
        .iter()
        .map(|(path, text)| (text.lines().count(), path.display().to_string()))
        .collect();
    let total: usize = files.iter().map(|(lines, _)| lines).sum();
    files.sort_by(|a, b| b.cmp(a));
    assert!(
        total < MAX_SERVER_LINES,
        "crates/agent-server/src holds {total} lines, over its budget of {MAX_SERVER_LINES}: \
         move a concern into a crate of its own below the server (as http-guard, \
         server-metrics and server-telemetry are) rather than raising the budget; the largest \
         files: {:#?}",
        &files[..files.len().min(5)]
    );
}

/// Starting and cancelling runs knows no transport: the run service (the `run-service`
/// crate) depends on no wire and no HTTP crate, answers with its own types, and each
/// transport (socket, AG-UI, history API) renders them.
#[test]
fn the_run_service_has_no_transport() {
    let dependencies = dependencies("run-service");
    for transport in ["agent-protocol", "axum", "agent-server"] {
        assert!(
            !dependencies.contains(transport),
            "run-service depends on {transport}: the run service has no transport"
        );
    }
    let sources = crate_sources("run-service");
    assert!(
        sources.iter().any(|(path, _)| path.ends_with("service.rs")),
        "run-service has no service.rs"
    );
    let mut codes = 0;
    for (path, text) in &sources {
        for transport in ["agent_protocol", "ServerFrame", "axum", "StatusCode", "Sse"] {
            assert!(
                !text.contains(transport),
                "{} names {transport}: the run service has no transport",
                path.display()
            );
        }
        // Its refusals' codes are the protocol's: each one the transports render is known.
        for piece in text.split("Refusal::new(").skip(1) {
            let Some(code) = piece.trim_start().strip_prefix('"') else {
                continue; // a code passed through from the engine, whose codes have their own test
            };
            let code = &code[..code.find('"').unwrap()];
            assert!(
                !matches!(
                    agent_protocol::ErrorCode::from_wire(code),
                    agent_protocol::ErrorCode::Other(_)
                ),
                "{} refuses with {code:?}, which is no code of the protocol",
                path.display()
            );
            codes += 1;
        }
    }
    // The service's own refusals (draining, threads, cancel); the run limit's codes come
    // from the engine's run slots.
    assert!(
        codes >= 4,
        "found only {codes} refusal codes in run-service"
    );
}

/// Wire frames are the WebSocket code's (the socket loop, `connection.rs`, and its adapters,
/// `wire.rs`): no other module of the server names `ServerFrame`.
#[test]
fn only_the_socket_code_names_server_frames() {
    for (path, text) in crate_sources("agent-server") {
        if path.ends_with("connection.rs") || path.ends_with("wire.rs") {
            continue;
        }
        assert!(
            !text.contains("ServerFrame"),
            "{} names ServerFrame; only the WebSocket code (connection.rs, wire.rs) frames answers",
            path.display()
        );
    }
}
