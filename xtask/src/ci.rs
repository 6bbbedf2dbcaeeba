//! `cargo xtask ci`: the whole CI gate, one step after another, stopping at the first failure.
//!
//! The steps are the README's test command: formatting, clippy with warnings denied, the
//! tests, the ssot-check (run in-process, it needs no build) and the documentation build with
//! rustdoc warnings denied. Running them from one place means CI and a developer's machine run
//! the same thing; each step prints its name, its command and how long it took.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{Error, StepOutcome, ssot};

/// One step of the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// A short name, used in progress lines and error messages.
    pub name: &'static str,
    /// What the step does.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs cargo with these arguments and extra environment variables, in the workspace root.
    Cargo {
        /// The arguments after `cargo`.
        args: &'static [&'static str],
        /// Environment variables set for this step only.
        env: &'static [(&'static str, &'static str)],
    },
    /// Runs [`ssot::run`] in this process.
    SsotCheck,
}

impl Step {
    /// The command line a developer would type to run this step alone.
    pub fn command_line(&self) -> String {
        match &self.action {
            Action::Cargo { args, env } => {
                let mut words: Vec<String> =
                    env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
                words.push("cargo".to_owned());
                words.extend(args.iter().map(|a| (*a).to_owned()));
                words.join(" ")
            }
            Action::SsotCheck => "cargo xtask ssot-check".to_owned(),
        }
    }
}

/// The steps of the gate, in the order they run.
pub fn steps() -> Vec<Step> {
    let cargo = |name, args, env| Step {
        name,
        action: Action::Cargo { args, env },
    };
    vec![
        cargo("fmt", &["fmt", "--all", "--", "--check"], &[]),
        cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ),
        cargo("test", &["test", "--workspace"], &[]),
        Step {
            name: "ssot-check",
            action: Action::SsotCheck,
        },
        cargo(
            "doc",
            &["doc", "--workspace", "--no-deps"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        ),
    ]
}

/// Runs every step in the workspace at `root`, stopping at the first failure.
pub fn run(root: &Path) -> Result<(), Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let steps = steps();
    let total = steps.len();
    let started = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let command = step.command_line();
        println!("ci [{}/{total}] {}: {command}", i + 1, step.name);
        let step_started = Instant::now();
        let outcome = match &step.action {
            Action::Cargo { args, env } => {
                let status = Command::new(&cargo)
                    .args(*args)
                    .envs(env.iter().copied())
                    .current_dir(root)
                    .status()
                    .map_err(|source| Error::Spawn {
                        step: step.name,
                        command: command.clone(),
                        source,
                    })?;
                (!status.success()).then_some(StepOutcome::Exit(status))
            }
            Action::SsotCheck => {
                let report = ssot::run(root)?;
                (!report.is_clean()).then_some(StepOutcome::Findings(report.findings.len()))
            }
        };
        let elapsed = step_started.elapsed();
        if let Some(outcome) = outcome {
            return Err(Error::StepFailed {
                step: step.name,
                command,
                outcome,
                elapsed,
            });
        }
        println!(
            "ci [{}/{total}] {}: ok in {:.1}s",
            i + 1,
            step.name,
            elapsed.as_secs_f64()
        );
    }
    println!(
        "ci: all {total} steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_the_documented_order() {
        let actual: Vec<String> = steps()
            .iter()
            .map(|s| format!("{}: {}", s.name, s.command_line()))
            .collect();
        let expected = [
            "fmt: cargo fmt --all -- --check",
            "clippy: cargo clippy --workspace --all-targets -- -D warnings",
            "test: cargo test --workspace",
            "ssot-check: cargo xtask ssot-check",
            "doc: RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps",
        ];
        assert_eq!(actual, expected);
    }
}
