//! Project automation behind `cargo xtask` (matklad's xtask pattern: automation written in
//! Rust, run with nothing but cargo).
//!
//! - [`ssot`]: `cargo xtask ssot-check`, which keeps the execution engine single: exactly one
//!   engine type, defined in one crate, aliased only in the crates allowed to alias it.
//! - [`ci`]: `cargo xtask ci`, the whole CI gate (fmt, cargo deny, clippy, tests, ssot-check,
//!   docs) in order.
//! - [`mod@bench`]: `cargo xtask bench`, which runs loadgen against agent-server and the bare
//!   baseline in release mode and writes `docs/benchmarks.md`.
//! - [`chaos`]: `cargo xtask chaos`, faults (a node killed, Redis and PostgreSQL restarted,
//!   the SQLite volume full) under a cross-node load verified frame by frame, and the table
//!   of what each cost.
//! - [`workspace`]: finding the workspace root that the commands work on.
//!
//! The binary (`src/main.rs`) only parses arguments and sets the exit code; everything it
//! runs lives here so that tests can drive it directly.

pub mod bench;
pub mod chaos;
pub mod ci;
pub mod fuzz;
pub mod ssot;
pub mod workspace;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can stop an xtask command before it reaches a verdict.
///
/// Findings of `ssot-check` are not errors: they are the check's result (see [`ssot::Report`]).
#[derive(Debug)]
pub enum Error {
    /// A file or directory could not be read.
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Walking a source directory failed (a permission problem or a symlink loop, say).
    Walk(walkdir::Error),
    /// The `[workspace.metadata.ssot-check]` configuration is missing or invalid.
    Config {
        /// The manifest the configuration was read from.
        manifest: PathBuf,
        /// What is wrong with it; names the offending key.
        problem: ssot::ConfigError,
    },
    /// No directory from the search start upwards has a `Cargo.toml` with a `[workspace]` table.
    NoWorkspaceRoot {
        /// Where the search started.
        start: PathBuf,
    },
    /// A CI step's command could not be started at all.
    Spawn {
        /// The CI step, e.g. `clippy`.
        step: &'static str,
        /// The command line that was tried.
        command: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// A CI step needs a cargo subcommand that is not installed (`cargo deny`, say).
    MissingTool {
        /// The CI step, e.g. `deny`.
        step: &'static str,
        /// The subcommand, e.g. `deny` for cargo-deny.
        subcommand: &'static str,
        /// The command that installs the release CI pins.
        install: String,
    },
    /// The benchmark could not run (a build failed, cargo printed no metadata).
    Bench(String),
    /// A CI step ran and failed.
    StepFailed {
        /// The CI step, e.g. `clippy`.
        step: &'static str,
        /// The command line to rerun to see the failure again.
        command: String,
        /// How the step ended: an exit status, or the number of ssot-check findings.
        outcome: StepOutcome,
        /// How long the step ran before it failed.
        elapsed: Duration,
    },
}

/// How a failed CI step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// A child process exited unsuccessfully.
    Exit(ExitStatus),
    /// The in-process ssot-check reported this many findings.
    Findings(usize),
    /// The step ran past its time limit, and its processes were killed.
    TimedOut(Duration),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "cannot read `{}`: {source}", path.display()),
            Error::Walk(source) => write!(f, "cannot walk the source tree: {source}"),
            Error::Config { manifest, problem } => write!(
                f,
                "invalid ssot-check configuration in `{}`: {problem}",
                manifest.display()
            ),
            Error::NoWorkspaceRoot { start } => write!(
                f,
                "no workspace root found from `{}` upwards (looked for a Cargo.toml with a \
                 [workspace] table); run cargo xtask from inside the workspace",
                start.display()
            ),
            Error::Bench(problem) => write!(f, "bench: {problem}"),
            Error::MissingTool {
                step,
                subcommand,
                install,
            } => write!(
                f,
                "ci: step `{step}` needs cargo-{subcommand}, which is not installed (`cargo \
                 {subcommand} --version` failed); install it with `{install}` (.ci/run installs it \
                 into /var/tmp/agent-engine-ci-tools/bin and puts that on PATH)"
            ),
            Error::Spawn {
                step,
                command,
                source,
            } => write!(
                f,
                "ci: step `{step}` could not start `{command}`: {source}; is cargo on PATH \
                 (or the CARGO environment variable set)?"
            ),
            Error::StepFailed {
                step,
                command,
                outcome,
                elapsed,
            } => {
                let how = match outcome {
                    StepOutcome::Exit(status) => format!("{status}"),
                    StepOutcome::Findings(n) => format!("{n} finding(s)"),
                    StepOutcome::TimedOut(limit) => format!(
                        "still running at its limit of {} min, so it was killed: a test \
                         that hangs is named above as running for over 60 seconds",
                        limit.as_secs() / 60
                    ),
                };
                write!(
                    f,
                    "ci: step `{step}` failed ({how}) after {:.1}s; rerun `{command}` to see \
                     the problem again",
                    elapsed.as_secs_f64()
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Spawn { source, .. } => Some(source),
            Error::Walk(source) => Some(source),
            Error::Config { problem, .. } => Some(problem),
            Error::NoWorkspaceRoot { .. }
            | Error::StepFailed { .. }
            | Error::MissingTool { .. }
            | Error::Bench(_) => None,
        }
    }
}
