//! `cargo xtask bench`: builds `agent-server` and `loadgen` in release mode, then for each
//! scenario starts a fresh server (agent-server with the limits the scenario needs, then the
//! bare baseline), runs loadgen against it, and writes the figures to `docs/benchmarks.md`
//! (with `--quick`, a small version of each scenario, written under the target directory so
//! the committed figures stay the full run's).
//!
//! - [`scenarios`]: what each scenario does;
//! - `cluster`: the multi-node runs (a private Redis and two agent-server nodes);
//! - `history`: the store-off / store-on runs, repeated, reported by their medians;
//! - `wide`: the 100,000-connection run (several nodes, one loadgen each, at once);
//! - [`outcome`]: a run's and a scenario's outcome, and the progress line;
//! - [`markdown`]: the document.
//!
//! A run that fails verification is reported in the document and makes the command fail.

pub(crate) mod cluster;
mod cross_path;
mod history;
pub mod markdown;
pub mod outcome;
pub(crate) mod probe;
pub mod scenarios;
mod wide;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outcome::{Outcome, Run, print_line};
use scenarios::Scenario;

use crate::Error;

/// The secret both servers and loadgen share (the server wants at least 32 bytes).
pub(crate) const SECRET: &str = "loadgen-bench-secret-0123456789abcdef";

/// Flags of `cargo xtask bench`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// A small version of each scenario.
    pub quick: bool,
    /// Only these scenarios (by name); all when empty.
    pub only: Vec<String>,
    /// Where to write the document; default `docs/benchmarks.md` (`--quick`: under the
    /// target directory).
    pub out: Option<PathBuf>,
}

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--only" => {
                    let names = args
                        .next()
                        .ok_or("--only needs scenario names, like burst,steady")?;
                    options.only = names.split(',').map(str::to_owned).collect();
                }
                "--out" => {
                    let path = args.next().ok_or("--out needs a file path")?;
                    options.out = Some(PathBuf::from(path));
                }
                other => {
                    return Err(format!(
                        "bench: unknown argument `{other}` (expected --quick, --only NAMES, --out PATH)"
                    ));
                }
            }
        }
        let known: Vec<&str> = scenarios::scenarios(options.quick)
            .iter()
            .map(|s| s.name)
            .collect();
        if let Some(bad) = options.only.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(format!(
                "bench: no scenario `{bad}`; the scenarios are {}",
                known.join(", ")
            ));
        }
        Ok(options)
    }
}

/// The release binaries.
pub(crate) struct Binaries {
    pub(crate) server: PathBuf,
    pub(crate) loadgen: PathBuf,
}

/// Runs the benchmark in the workspace at `root`; `Ok(false)` when a run failed verification.
pub fn run(root: &Path, options: &Options) -> Result<bool, Error> {
    let binaries = build(root)?;
    let log_dir = target_dir(root)?.join("bench");
    std::fs::create_dir_all(&log_dir).map_err(|source| Error::Io {
        path: log_dir.clone(),
        source,
    })?;
    let chosen: Vec<Scenario> = scenarios::scenarios(options.quick)
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|n| n == s.name))
        .collect();
    let total: usize = chosen
        .iter()
        .map(|s| match s.group {
            scenarios::WIDE => 1,
            _ => 2 + usize::from(scenarios::has_floor(s)),
        })
        .sum();
    let mut step = 0;
    let mut next = || {
        step += 1;
        format!("bench [{step}/{total}]")
    };
    let outcomes: Vec<Outcome> = chosen
        .into_iter()
        .map(|scenario| run_scenario(&binaries, scenario, options, &log_dir, &mut next))
        .collect();
    let out = match &options.out {
        Some(path) => path.clone(),
        None if options.quick => log_dir.join("benchmarks-quick.md"),
        None => root.join("docs/benchmarks.md"),
    };
    let doc = markdown::render(&outcomes, &machine(), &today(), options.quick);
    std::fs::write(&out, doc).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    println!("bench: wrote {}", out.display());
    Ok(outcomes
        .iter()
        .all(|o| o.runs().iter().all(|(_, run)| run.ok)))
}

/// Runs one scenario: on agent-server and its second side (the baseline, two nodes, or the
/// store on), and on the floor where it has one; `next` numbers the progress lines.
fn run_scenario(
    binaries: &Binaries,
    scenario: Scenario,
    options: &Options,
    log_dir: &Path,
    next: &mut dyn FnMut() -> String,
) -> Outcome {
    if scenario.group == scenarios::HISTORY {
        let (first, second) = (next(), next());
        println!(
            "{first} and {second} {}: store off and on, in turns: {}",
            scenario.name, scenario.what
        );
        let repeats = if options.quick { 1 } else { history::REPEATS };
        let (server, baseline) = history::paired(binaries, &scenario, repeats, log_dir);
        return Outcome {
            scenario,
            server,
            baseline,
            floor: None,
        };
    }
    if scenario.group == scenarios::WIDE {
        println!("{} {}: {}", next(), scenario.name, scenario.what);
        let server = wide::run(binaries, &scenario, log_dir);
        print_line(&server);
        return Outcome {
            scenario,
            server,
            baseline: Run::default(),
            floor: None,
        };
    }
    let (first, second) = outcome::labels(&scenario);
    println!("{} {} on {first}: {}", next(), scenario.name, scenario.what);
    let multi_node = scenario.group == scenarios::MULTI_NODE;
    let after_load: Option<AfterLoad<'_>> = multi_node.then_some(&cross_path::one_node);
    let server = run_one(
        binaries,
        &scenario,
        Kind::AgentServer,
        &[],
        log_dir,
        after_load,
    );
    print_line(&server);
    println!("{} {} on {second}", next(), scenario.name);
    let baseline = if multi_node {
        cluster::run(binaries, &scenario, log_dir)
    } else {
        run_one(binaries, &scenario, Kind::Baseline, &[], log_dir, None)
    };
    print_line(&baseline);
    let floor = scenarios::has_floor(&scenario).then(|| {
        println!("{} {} on the floor", next(), scenario.name);
        let floor = run_one(binaries, &scenario, Kind::Floor, &[], log_dir, None);
        print_line(&floor);
        floor
    });
    Outcome {
        scenario,
        server,
        baseline,
        floor,
    }
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo build --release` of the two binaries, and where they are.
pub(crate) fn build(root: &Path) -> Result<Binaries, Error> {
    let command = "cargo build --release -p agent-server -p loadgen";
    println!("bench: {command}");
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", "agent-server", "-p", "loadgen"])
        .current_dir(root)
        .status()
        .map_err(|source| Error::Spawn {
            step: "bench",
            command: command.into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Bench(format!("`{command}` failed ({status})")));
    }
    let release = target_dir(root)?.join("release");
    Ok(Binaries {
        server: release.join("agent-server"),
        loadgen: release.join("loadgen"),
    })
}

/// The target directory, as cargo reports it (it honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir(root: &Path) -> Result<PathBuf, Error> {
    let command = "cargo metadata --format-version 1 --no-deps";
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|source| Error::Spawn {
            step: "bench",
            command: command.into(),
            source,
        })?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Bench(format!("`{command}` printed no JSON: {e}")))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Bench(format!("`{command}` has no target_directory")))
}

/// Which server a run loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    AgentServer,
    Baseline,
    /// `loadgen floor-server`: the least a server can do per event.
    Floor,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::AgentServer => "agent-server",
            Kind::Baseline => "baseline",
            Kind::Floor => "floor",
        }
    }
}

/// The server's command line for `scenario`, with `extra` flags; agent-server keeps no
/// history unless `extra` names a store.
pub(crate) fn server_command(
    binaries: &Binaries,
    scenario: &Scenario,
    kind: Kind,
    extra: &[String],
) -> (PathBuf, Vec<String>) {
    let mut args: Vec<String> = Vec::new();
    let program = match kind {
        Kind::AgentServer => {
            args.extend(
                [
                    "serve",
                    "--addr",
                    "127.0.0.1:0",
                    "--synthetic-agent",
                    "--jwt-secret",
                    SECRET,
                ]
                .map(String::from),
            );
            args.extend(scenario.server.iter().map(|s| (*s).to_owned()));
            if !extra.iter().any(|a| a == "--store") {
                args.extend(["--store".to_owned(), "none".to_owned()]);
            }
            args.extend(extra.iter().cloned());
            binaries.server.clone()
        }
        Kind::Baseline | Kind::Floor => {
            let command = if kind == Kind::Floor {
                "floor-server"
            } else {
                "baseline-server"
            };
            args.extend(
                [command, "--addr", "127.0.0.1:0", "--jwt-secret", SECRET].map(String::from),
            );
            binaries.loadgen.clone()
        }
    };
    (program, args)
}

/// The address a server printed on its first line (`http://ADDR` or `ws://ADDR/ws`).
pub fn listen_address(line: &str) -> Option<&str> {
    let rest = line.split("://").nth(1)?;
    rest.split(['/', ' ', ')']).next().filter(|a| !a.is_empty())
}

/// `program`'s name and `args` as one line a POSIX shell reads back into exactly those words
/// (quoted by shlex: a JSON shape, a space, a `$` or a quote in an argument survive pasting).
pub(crate) fn shell_line(program: &Path, args: &[String]) -> String {
    let name = program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // Quoting fails only for an argument with a NUL byte, which no command line can carry.
    let quoted =
        shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "));
    format!("{name} {quoted}")
}

#[cfg(test)]
mod shell_line_tests {
    use super::*;

    #[test]
    fn reproduce_lines_read_back_into_the_same_words() {
        let args: Vec<String> = [
            "burst",
            "--shape",
            r#"{"thinking":4,"tools":3}"#,
            "--jwt-secret",
            "it's a $ecret with spaces",
            "--url",
            "ws://127.0.0.1:8080/ws",
            "",
        ]
        .map(str::to_owned)
        .to_vec();
        let line = shell_line(Path::new("/x/target/release/loadgen"), &args);
        let words = shlex::split(&line).expect("a shell reads it");
        assert_eq!(words[0], "loadgen");
        assert_eq!(&words[1..], args.as_slice(), "{line}");
    }
}

/// What a run does after the load, before its server stops: given the server's pid, its
/// address, its log, and the run so far.
pub(crate) type AfterLoad<'a> = &'a dyn Fn(u32, &str, &Path, &mut Run);

/// Starts the server (with `extra` flags), runs loadgen against it, calls `after_load`,
/// stops the server.
pub(crate) fn run_one(
    binaries: &Binaries,
    scenario: &Scenario,
    kind: Kind,
    extra: &[String],
    log_dir: &Path,
    after_load: Option<AfterLoad<'_>>,
) -> Run {
    let (program, args) = server_command(binaries, scenario, kind, extra);
    let mut run = Run {
        server_command: shell_line(&program, &args),
        ..Run::default()
    };
    let label = if extra.is_empty() {
        kind.label()
    } else {
        "with-store"
    };
    let log = log_dir.join(format!("{}-{label}.log", scenario.name));
    let (mut child, addr) = match start_server(&program, &args, &log) {
        Ok(started) => started,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    load(
        binaries,
        scenario,
        std::slice::from_ref(&addr),
        child.id(),
        &mut run,
    );
    if let Some(after_load) = after_load {
        after_load(child.id(), &addr, &log, &mut run);
    }
    let _killed = child.kill();
    let _reaped = child.wait();
    // Let the closed sockets' TIME_WAIT and the server's memory go before the next run.
    std::thread::sleep(Duration::from_secs(1));
    run
}

/// Runs loadgen against the servers at `addrs` (one URL each; `pid` is the one whose
/// `/proc` it reads), filling `run`'s command, report, and verdict.
pub(crate) fn load(
    binaries: &Binaries,
    scenario: &Scenario,
    addrs: &[String],
    pid: u32,
    run: &mut Run,
) {
    let urls: Vec<String> = addrs.iter().map(|a| format!("ws://{a}/ws")).collect();
    let mut loadgen_args = scenario.loadgen.clone();
    loadgen_args.extend([
        "--url".into(),
        urls.join(","),
        "--jwt-secret".into(),
        SECRET.into(),
        "--server-pid".into(),
        pid.to_string(),
        "--json".into(),
    ]);
    let mut command = shell_line(&binaries.loadgen, &loadgen_args)
        .replace(&format!("--server-pid {pid}"), "--server-pid $SERVER_PID");
    for (i, addr) in addrs.iter().enumerate() {
        let name = if addrs.len() == 1 {
            "$ADDR".to_owned()
        } else {
            format!("$ADDR{}", i + 1)
        };
        command = command.replace(addr.as_str(), &name);
    }
    run.loadgen_command = command;
    match Command::new(&binaries.loadgen)
        .args(&loadgen_args)
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) => {
            run.ok = output.status.success();
            run.report = serde_json::from_slice(&output.stdout).ok();
            let stderr = String::from_utf8_lossy(&output.stderr);
            run.error = (!run.ok).then(|| {
                stderr
                    .lines()
                    .rfind(|l| l.starts_with("loadgen:"))
                    .unwrap_or("loadgen failed without a message")
                    .to_owned()
            });
        }
        Err(e) => run.error = Some(format!("cannot start loadgen: {e}")),
    }
}

/// Starts a server with its stderr in `log`, and reads the address from its first line.
pub(crate) fn start_server(
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<(Child, String), String> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("the server's stdout is not piped".into());
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    let read = stdout.read_line(&mut line);
    // Keep draining stdout so the server never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    match (read, listen_address(&line)) {
        (Ok(_), Some(addr)) => Ok((child, addr.to_owned())),
        _ => {
            let _killed = child.kill();
            let _reaped = child.wait();
            Err(format!(
                "the server printed no address (first line {line:?}); see {}",
                log.display()
            ))
        }
    }
}

/// CPU model and cores from `/proc/cpuinfo`, and `uname -srm`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let uname = Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!(
                ", {:.0} GiB of memory",
                kib as f64 / 1024.0 / 1024.0
            ))
        })
        .unwrap_or_default();
    format!("{model}, {cores} cores{memory}, {uname}")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Options, &str>) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        match (Options::parse(&args), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(fragment)) => {
                assert!(got.contains(fragment), "{got:?} lacks {fragment:?}")
            }
            (got, want) => panic!("{args:?}: expected {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn flags() {
        check(&[], Ok(Options::default()));
        check(
            &["--quick"],
            Ok(Options {
                quick: true,
                ..Options::default()
            }),
        );
        check(
            &["--only", "burst,steady", "--out", "/tmp/b.md"],
            Ok(Options {
                only: vec!["burst".into(), "steady".into()],
                out: Some(PathBuf::from("/tmp/b.md")),
                ..Options::default()
            }),
        );
        check(&["--only"], Err("--only needs scenario names"));
        check(
            &["--only", "flood"],
            Err("no scenario `flood`; the scenarios are burst, steady"),
        );
        check(&["--fast"], Err("unknown argument `--fast`"));
    }

    #[test]
    fn servers_print_their_address_first() {
        let cases = [
            (
                "agent-server listening on http://127.0.0.1:40555 (WebSocket at ws://127.0.0.1:40555/ws)",
                Some("127.0.0.1:40555"),
            ),
            (
                "loadgen baseline-server listening on ws://127.0.0.1:32833/ws (pid 18149)",
                Some("127.0.0.1:32833"),
            ),
            ("error: no", None),
        ];
        for (line, expected) in cases {
            assert_eq!(listen_address(line), expected, "{line}");
        }
    }
}
