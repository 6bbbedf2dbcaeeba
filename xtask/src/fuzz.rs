//! `cargo xtask fuzz [SECONDS]`: runs each coverage-guided fuzz target in `fuzz/` (libFuzzer
//! through cargo-fuzz) for SECONDS (default 60) and prints what it did.
//!
//! The machine has only the stable toolchain, so the targets are built without sanitizers
//! (`cargo fuzz build --sanitizer none`): coverage instrumentation and libFuzzer still work
//! on stable; what is lost is AddressSanitizer, which safe Rust needs least. Each run starts
//! from the seed corpus, written here from `docs/protocol-examples.json` (files `seed-*`,
//! committed) plus what earlier runs found (ignored by git). A target that panics, aborts
//! or runs out of its memory limit (2 GiB, libFuzzer's `-rss_limit_mb`) fails the command;
//! libFuzzer saves the input under `fuzz/artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::Error;

/// The targets, in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["client_frame", "resume_params", "jwt"];

/// What one target's run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The target.
    pub target: &'static str,
    /// Inputs libFuzzer ran.
    pub executions: Option<u64>,
    /// Whether it ended without a crash.
    pub clean: bool,
}

/// Writes the seed corpus, runs every target for `seconds`, prints a line each; `Ok(false)`
/// when a target crashed.
pub fn run(root: &Path, seconds: u64) -> Result<bool, Error> {
    let fuzz = root.join("fuzz");
    write_seeds(root, &fuzz)?;
    let mut clean = true;
    for &target in TARGETS {
        let outcome = run_target(&fuzz, target, seconds)?;
        println!(
            "fuzz {target}: {} inputs in {seconds} s, {}",
            outcome
                .executions
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            if outcome.clean {
                "no crash, no panic, no memory blow-up"
            } else {
                "FOUND a failing input (see fuzz/artifacts/)"
            }
        );
        clean &= outcome.clean;
    }
    Ok(clean)
}

fn run_target(fuzz: &Path, target: &'static str, seconds: u64) -> Result<Outcome, Error> {
    let corpus = fuzz.join("corpus").join(target);
    let command = format!(
        "cargo fuzz run --sanitizer none -O {target} corpus/{target} -- -max_total_time={seconds} -rss_limit_mb=2048"
    );
    println!("fuzz: {command}");
    let output = Command::new("cargo")
        .args(["fuzz", "run", "--sanitizer", "none", "-O", target])
        .arg(&corpus)
        .args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048".to_owned(),
        ])
        .current_dir(fuzz)
        .output()
        .map_err(|source| Error::Spawn {
            step: "fuzz",
            command: command.clone(),
            source,
        })?;
    let log = String::from_utf8_lossy(&output.stderr);
    if log.contains("no such command: `fuzz`") || log.contains("no such subcommand") {
        return Err(Error::Bench(
            "cargo-fuzz is not installed: `cargo install cargo-fuzz` (it works on stable)".into(),
        ));
    }
    if !output.status.success() {
        eprintln!("{}", tail(&log, 30));
    }
    Ok(Outcome {
        target,
        executions: executions(&log),
        clean: output.status.success(),
    })
}

/// libFuzzer's `Done N runs in S second(s)`.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.strip_prefix("Done "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The seeds of each target, from the protocol's examples.
pub fn seeds(examples: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let frames = examples["client_to_server"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for frame in frames {
        seeds.push(("client_frame", frame.to_string().into_bytes()));
    }
    let urls = examples["connect_urls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for url in urls.iter().filter_map(Value::as_str) {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        if let (Some(epoch), Some(seq)) = (param("epoch"), param("after_seq")) {
            seeds.push(("resume_params", format!("{epoch}&{seq}").into_bytes()));
        }
    }
    seeds.push(("resume_params", b"ep_7f3a9c2e".to_vec()));
    // Token shapes: HS256 and `none` headers with a claims part, and junk in three parts.
    for token in [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
        "a.b.c",
        // Found by the first run: a token that reads like a refusal's own message.
        "the token is not a well-f",
    ] {
        seeds.push(("jwt", token.as_bytes().to_vec()));
    }
    seeds
}

fn write_seeds(root: &Path, fuzz: &Path) -> Result<(), Error> {
    let path = root.join("docs/protocol-examples.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let examples: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Bench(format!("{} is not JSON: {e}", path.display())))?;
    let mut counts = std::collections::HashMap::new();
    for (target, seed) in seeds(&examples) {
        let n = counts.entry(target).or_insert(0);
        *n += 1;
        let dir: PathBuf = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let file = dir.join(format!("seed-{n:02}"));
        std::fs::write(&file, seed).map_err(|source| Error::Io { path: file, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_come_from_the_protocol_examples_and_done_lines_parse() {
        let examples: Value =
            serde_json::from_str(include_str!("../../docs/protocol-examples.json")).expect("JSON");
        let seeds = seeds(&examples);
        for target in TARGETS {
            assert!(
                seeds.iter().any(|(t, _)| t == target),
                "no seed for {target}"
            );
        }
        assert!(seeds.contains(&("resume_params", b"ep_7f3a9c2e&41".to_vec())));
        let log = "#1 INITED\nDone 18673037 runs in 6 second(s)\n";
        assert_eq!(executions(log), Some(18_673_037));
        assert_eq!(executions("crashed"), None);
    }
}
