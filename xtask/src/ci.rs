//! `cargo xtask ci`: the whole CI gate, one step after another, stopping at the first failure.
//!
//! The steps are the README's test command: formatting, the dependency policy (`cargo deny`:
//! licenses, banned and duplicate crates, sources; rules in `deny.toml`), clippy with warnings
//! denied, the tests, the ssot-check (run in-process, it needs no build) and the documentation
//! build with rustdoc warnings denied. Running them from one place means CI and a developer's
//! machine run the same thing; each step prints its name, its command and how long it took.
//!
//! The dependency policy runs second because it takes seconds and its failures (a new
//! dependency under a refused license, a second version of a crate) are cheaper to see before
//! the long build than after it. It runs offline, so it needs every crate of the lock file on
//! disk: the `fetch` step before it downloads what is missing from crates.io, as a build would.
//! Tools a step needs beyond cargo itself (cargo-deny) are looked for before the first step
//! runs, so a machine without them fails at once, with the command that installs them.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::{Error, StepOutcome, ssot};

/// The cargo-deny release CI installs (`.ci/run`) and `deny.toml` is written for.
pub const CARGO_DENY_VERSION: &str = "0.20.2";

/// One step of the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// A short name, used in progress lines and error messages.
    pub name: &'static str,
    /// What the step does.
    pub action: Action,
    /// A cargo subcommand the step needs that does not come with cargo.
    pub requires: Option<Tool>,
    /// How long the step may run before it is killed and fails: a test that hangs fails the
    /// gate, naming itself, instead of holding CI until the runner's own limit.
    pub limit: Option<Duration>,
}

/// The test step's limit: builds and runs every test; about 25 minutes on a cold two-core
/// machine, under 10 warm.
pub const TEST_LIMIT: Duration = Duration::from_secs(45 * 60);

/// A cargo subcommand installed separately (`cargo-NAME` on `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The subcommand, as in `cargo deny`.
    pub subcommand: &'static str,
    /// The release the gate is written for.
    pub version: &'static str,
    /// The command that installs that release.
    pub install: String,
}

impl Tool {
    /// cargo-deny, pinned to [`CARGO_DENY_VERSION`].
    pub fn cargo_deny() -> Self {
        Tool {
            subcommand: "deny",
            version: CARGO_DENY_VERSION,
            install: format!("cargo install --locked cargo-deny --version {CARGO_DENY_VERSION}"),
        }
    }
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
        requires: None,
        limit: None,
    };
    vec![
        cargo("fmt", &["fmt", "--all", "--", "--check"], &[]),
        cargo("fetch", &["fetch"], &[]),
        Step {
            requires: Some(Tool::cargo_deny()),
            ..cargo(
                "deny",
                &["deny", "--offline", "check", "licenses", "bans", "sources"],
                &[],
            )
        },
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
        Step {
            limit: Some(TEST_LIMIT),
            ..cargo("test", &["test", "--workspace"], &[])
        },
        Step {
            name: "ssot-check",
            action: Action::SsotCheck,
            requires: None,
            limit: None,
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
    check_tools(&cargo, &steps)?;
    let total = steps.len();
    let started = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let command = step.command_line();
        println!("ci [{}/{total}] {}: {command}", i + 1, step.name);
        let step_started = Instant::now();
        let outcome = match &step.action {
            Action::Cargo { args, env } => {
                let mut child = Command::new(&cargo);
                child
                    .args(*args)
                    .envs(env.iter().copied())
                    .current_dir(root);
                match run_within(child, step.limit).map_err(|source| Error::Spawn {
                    step: step.name,
                    command: command.clone(),
                    source,
                })? {
                    Some(status) => (!status.success()).then_some(StepOutcome::Exit(status)),
                    None => step.limit.map(StepOutcome::TimedOut),
                }
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

/// Runs `command` to its end, or until `limit` has passed: then it and every process it
/// started (its descendants: cargo's test binaries, the servers they start) are killed, and
/// the answer is `None`. The command stays in the caller's process group, so a Ctrl-C in a
/// terminal still reaches it.
pub fn run_within(
    mut command: Command,
    limit: Option<Duration>,
) -> std::io::Result<Option<ExitStatus>> {
    let Some(limit) = limit else {
        return command.status().map(Some);
    };
    let mut child = command.spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_tree(&mut child);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100).min(limit));
    }
}

/// Kills `child` and every process below it (found by their parents in `/proc`), then reaps
/// `child`.
fn kill_tree(child: &mut Child) {
    let mut doomed = descendants(child.id());
    // The deepest first, so none is left to start another.
    doomed.reverse();
    for pid in doomed {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes below `root`, parents before their children (none where `/proc` is not).
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (name) state ppid ...`: the name may hold spaces and parentheses.
            let parent = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, parent))
        })
        .collect();
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        at += 1;
    }
    found.remove(0);
    found
}

/// Makes sure every tool the steps need answers `cargo SUBCOMMAND --version`, before the first
/// step runs; a tool of another release than the pinned one gets a note, not an error (its
/// output may still pass, and the note says what to install if it does not).
pub fn check_tools(cargo: &OsStr, steps: &[Step]) -> Result<(), Error> {
    for step in steps {
        let Some(tool) = &step.requires else {
            continue;
        };
        let command = format!("cargo {} --version", tool.subcommand);
        let output = Command::new(cargo)
            .args([tool.subcommand, "--version"])
            .output()
            .map_err(|source| Error::Spawn {
                step: step.name,
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(Error::MissingTool {
                step: step.name,
                subcommand: tool.subcommand,
                install: tool.install.clone(),
            });
        }
        if let Some(note) = version_note(tool, &String::from_utf8_lossy(&output.stdout)) {
            println!("ci: {note}");
        }
    }
    Ok(())
}

/// What to say when `cargo SUBCOMMAND --version` printed `version_output` and that is not the
/// pinned release; `None` when it is.
pub fn version_note(tool: &Tool, version_output: &str) -> Option<String> {
    let found = version_output
        .split_whitespace()
        .nth(1)
        .unwrap_or("an unknown version");
    (found != tool.version).then(|| {
        format!(
            "cargo-{} {found} found, CI pins {}; if its step fails on its configuration, \
             install the pinned one: `{}`",
            tool.subcommand, tool.version, tool.install
        )
    })
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
            "fetch: cargo fetch",
            "deny: cargo deny --offline check licenses bans sources",
            "clippy: cargo clippy --workspace --all-targets -- -D warnings",
            "test: cargo test --workspace",
            "ssot-check: cargo xtask ssot-check",
            "doc: RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps",
        ];
        assert_eq!(actual, expected);
    }

    #[test]
    fn only_the_test_step_has_a_time_limit() {
        let limited: Vec<(&str, Option<Duration>)> = steps()
            .into_iter()
            .filter(|s| s.limit.is_some())
            .map(|s| (s.name, s.limit))
            .collect();
        assert_eq!(limited, [("test", Some(TEST_LIMIT))]);
    }

    /// Whether process `pid` has gone (or is only waiting to be reaped by whoever adopted it).
    #[cfg(unix)]
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    /// A step past its limit is stopped with every process it started, not only the first.
    #[cfg(unix)]
    #[test]
    fn a_step_past_its_limit_is_killed_with_the_processes_it_started() {
        let dir = std::env::temp_dir().join(format!("xtask-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let pid_file = dir.join("grandchild");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "sleep 300 & echo $! > {}; wait",
            pid_file.display()
        ));
        let started = Instant::now();
        let status = run_within(command, Some(Duration::from_millis(500))).expect("sh runs");
        assert_eq!(
            status, None,
            "a shell waiting for 300 s ended within its limit"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let pid = std::fs::read_to_string(&pid_file).expect("the shell wrote its child's pid");
        let pid = pid.trim();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(pid), "the step's own child {pid} outlived the step");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_step_within_its_limit_gives_its_exit_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let status = run_within(command, Some(Duration::from_secs(60)))
            .expect("sh runs")
            .expect("ended within its limit");
        assert_eq!(status.code(), Some(3));
        let status = run_within(Command::new("true"), None).expect("true runs");
        assert!(status.is_some_and(|s| s.success()));
    }

    #[test]
    fn only_the_deny_step_needs_a_tool_and_it_is_cargo_deny_pinned() {
        let needing: Vec<(&str, Option<Tool>)> = steps()
            .into_iter()
            .filter(|s| s.requires.is_some())
            .map(|s| (s.name, s.requires))
            .collect();
        assert_eq!(needing, [("deny", Some(Tool::cargo_deny()))]);
        assert_eq!(
            Tool::cargo_deny().install,
            "cargo install --locked cargo-deny --version 0.20.2"
        );
    }

    /// `.ci/run` installs cargo-deny itself; it must install the release the gate pins.
    #[test]
    fn ci_run_installs_the_pinned_cargo_deny() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run");
        let text = std::fs::read_to_string(&script).expect("xtask lives next to .ci/run");
        let pin = format!("CARGO_DENY_VERSION={CARGO_DENY_VERSION}");
        assert!(
            text.lines().any(|line| line.trim() == pin),
            "{} should set `{pin}`",
            script.display()
        );
    }

    #[track_caller]
    fn check_note(version_output: &str, expected: Option<&str>) {
        assert_eq!(
            version_note(&Tool::cargo_deny(), version_output).as_deref(),
            expected
        );
    }

    #[test]
    fn a_tool_of_another_release_gets_a_note_naming_both_releases() {
        check_note("cargo-deny 0.20.2\n", None);
        check_note(
            "cargo-deny 0.18.3\n",
            Some(
                "cargo-deny 0.18.3 found, CI pins 0.20.2; if its step fails on its \
                 configuration, install the pinned one: \
                 `cargo install --locked cargo-deny --version 0.20.2`",
            ),
        );
        check_note(
            "",
            Some(
                "cargo-deny an unknown version found, CI pins 0.20.2; if its step fails on \
                 its configuration, install the pinned one: \
                 `cargo install --locked cargo-deny --version 0.20.2`",
            ),
        );
    }

    /// A cargo that does not know the subcommand (here `false`, which fails whatever it is
    /// asked) stops the gate before any step, with the install command in the message.
    #[test]
    fn a_missing_tool_fails_before_the_first_step_and_says_how_to_install_it() {
        let error = check_tools(OsStr::new("false"), &steps()).expect_err("false never succeeds");
        assert!(
            matches!(error, Error::MissingTool { step: "deny", .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "ci: step `deny` needs cargo-deny, which is not installed (`cargo deny --version` \
             failed); install it with `cargo install --locked cargo-deny --version 0.20.2` \
             (.ci/run installs it into /var/tmp/agent-engine-ci-tools/bin and puts that on PATH)"
        );
        check_tools(OsStr::new("true"), &steps()).expect("a cargo that answers is enough");
    }
}
