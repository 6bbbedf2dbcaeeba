//! The `cargo xtask` binary: parses the command line and sets the exit code.
//!
//! Exit codes: 0 when the command succeeded, 1 when it ran and found problems (ssot-check
//! findings, a failed CI step), 2 when it could not run (bad usage, unreadable configuration).
//! The work itself lives in the `xtask` library so that tests can drive it.

use std::process::ExitCode;

use xtask::{Error, bench, chaos, ci, fuzz, ssot, workspace};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ssot-check   check that the workspace has exactly one execution engine type
               (rules in [workspace.metadata.ssot-check] of the root Cargo.toml)
  ci           run the CI gate in order, stopping at the first failure:
               fmt, fetch, deny (cargo-deny: licenses, bans, sources; deny.toml),
               clippy, test, ssot-check, doc
  bench        build agent-server and loadgen in release mode, load agent-server and
               the bare baseline in every scenario, write docs/benchmarks.md
               [--quick] a one-minute version (written under the target directory)
               [--only NAME,...] some scenarios  [--out PATH] another file
  chaos        build agent-server and loadgen in release mode; under a cross-node load
               verified frame by frame, kill a node, restart Redis, restart PostgreSQL,
               fill the SQLite volume (root), and print what each fault cost
               [--quick] a small load  [--only NAME,...] some faults
               [--sequencer] the nodes in the Redis broker's sequencer mode
  fuzz         run each fuzz target in fuzz/ (cargo-fuzz, libFuzzer, stable: no sanitizer)
               [SECONDS] per target (default 60)
  ts-types     write clients/typescript/src/protocol.ts and history.ts again from the
               Rust types (tests/it/ts_types.rs fails while they differ)
  help         print this message";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !rest.is_empty() && !matches!(command, "help" | "bench" | "chaos" | "fuzz") {
        eprintln!(
            "error: `{command}` takes no arguments, got `{}`\n\n{USAGE}",
            rest.join(" ")
        );
        return ExitCode::from(2);
    }
    let result = match command {
        "ssot-check" => ssot_check(),
        "ci" => workspace::root()
            .and_then(|root| ci::run(&root))
            .map(|()| true),
        "bench" => match bench::Options::parse(rest) {
            Ok(options) => workspace::root().and_then(|root| bench::run(&root, &options)),
            Err(message) => {
                eprintln!("error: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        "chaos" => match chaos::Options::parse(rest) {
            Ok(options) => workspace::root().and_then(|root| chaos::run(&root, &options)),
            Err(message) => {
                eprintln!("error: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        "fuzz" => match rest {
            [] => workspace::root().and_then(|root| fuzz::run(&root, 60)),
            [seconds] if seconds.parse::<u64>().is_ok_and(|s| s > 0) => {
                workspace::root().and_then(|root| fuzz::run(&root, seconds.parse().unwrap_or(60)))
            }
            _ => {
                eprintln!("error: `fuzz` takes one number of seconds per target\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        "ts-types" => workspace::root().and_then(|root| ts_types(&root)),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // CI step errors already start with `ci:`, which says where they come from.
        Err(error @ Error::StepFailed { .. }) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(error @ (Error::Spawn { .. } | Error::MissingTool { .. })) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Writes the TypeScript declarations of the protocol and of the history API: the drift test
/// (`tests/it/ts_types.rs`), run with `AGENT_ENGINE_WRITE_TS=1`, writes the files instead of
/// comparing them.
fn ts_types(root: &std::path::Path) -> Result<bool, Error> {
    let args = [
        "test",
        "-p",
        "tests-integration",
        "--test",
        "it",
        "--",
        "--exact",
        "ts_types::the_committed_typescript_types_are_what_the_rust_types_give",
    ];
    let command = format!("AGENT_ENGINE_WRITE_TS=1 cargo {}", args.join(" "));
    println!("ts-types: {command}");
    let status =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(args)
            .env("AGENT_ENGINE_WRITE_TS", "1")
            .current_dir(root)
            .status()
            .map_err(|source| Error::Spawn {
                step: "ts-types",
                command,
                source,
            })?;
    if status.success() {
        println!("ts-types: wrote clients/typescript/src/protocol.ts and history.ts");
    }
    Ok(status.success())
}

/// Runs the ssot-check on the workspace and says whether it is clean; the check prints the
/// findings and the summary line itself.
fn ssot_check() -> Result<bool, Error> {
    let root = workspace::root()?;
    Ok(ssot::run(&root)?.is_clean())
}
