//! One configuration: flags > environment > `--config` file > defaults, `agent-server
//! config`'s output (masked, and read back the same), the per-user thread cap reaching the
//! sessions, and `--log-format json`. The file's keys and values checked like flags:
//! `config_checks.rs`, on this file's helpers.
//!
//! The command line is parsed the way `main` parses it (`serve` and `config` subcommands over
//! `ServeArgs`, then `config::with_file`). The environment is the process's own, so the
//! tests that set variables run this test binary again as a child with its own environment
//! (see `child_process`); no test here changes the environment of another.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_protocol::{ErrorCode, StartAgent};
use agent_server::config::{self, LogFormat, Parsed, ServeArgs, ServerConfig};
use clap::{Args, Command, FromArgMatches};
use serde_json::{Value, json};

use crate::server_support::{Client, SECRET as SERVER_SECRET, start_server, synthetic, typed};

/// A secret long enough for `ServerConfig::from_args`.
const SECRET: &str = "config-test-secret-0123456789abcdef-xyz";

/// The command line as `main` builds it: the settings under `serve` and `config`.
fn command() -> Command {
    Command::new("agent-server")
        .subcommand(ServeArgs::augment_args(Command::new("serve")))
        .subcommand(ServeArgs::augment_args(Command::new("config")))
}

/// What `argv` (after the program's name) yields: the parsed settings and the validated
/// config, or the message the process would exit with.
pub fn load(argv: &[&str]) -> Result<(ServerConfig, ServeArgs, Parsed), String> {
    let argv: Vec<OsString> = std::iter::once("agent-server")
        .chain(argv.iter().copied())
        .map(OsString::from)
        .collect();
    let matches = command()
        .try_get_matches_from(&argv)
        .map_err(|e| e.to_string())?;
    let parsed = config::with_file(command(), &argv, matches).map_err(|e| e.to_string())?;
    let settings = parsed
        .settings()
        .expect("serve and config hold the settings");
    let args = ServeArgs::from_arg_matches(settings).map_err(|e| e.to_string())?;
    let config = ServerConfig::from_args(args.clone()).map_err(|e| e.to_string())?;
    Ok((config, args, parsed))
}

/// A fresh directory for this test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "agent-it-config-{name}-{}",
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path as a string for argv.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The line of `key` in `agent-server config`'s output, after `key = `.
fn line<'a>(toml: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    toml.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{key}` in\n{toml}"))
}

const FILE: &str = "max_runs_per_user = 5\nflood_burst = 200\nflood_window_secs = 60\n\
                    max_threads_per_user = 50\nsynthetic_agent = true\n\
                    history_max_age = \"30d\"\nlog_format = \"json\"\n";

/// Command-line words.
type Words<'a> = &'a [&'a str];
/// Pairs of names and values: environment variables, or lines of `agent-server config`.
type Pairs<'a> = &'a [(&'a str, &'a str)];
/// Words after the subcommand, and the `agent-server config` lines (key, rest) they give.
type Case<'a> = (Words<'a>, Pairs<'a>);

#[test]
fn settings_come_from_flags_then_file_then_defaults() {
    let dir = scratch("precedence");
    let file = write(&dir, "agent.toml", FILE);
    let table: &[Case<'_>] = &[
        (
            &[],
            &[
                ("max_runs_per_user", "3  # default"),
                ("max_threads_per_user", "1000  # default"),
                ("log_format", "\"text\"  # default"),
                ("synthetic_agent", "false  # default"),
            ],
        ),
        (
            &["--config", &file],
            &[
                ("max_runs_per_user", "5  # file"),
                ("flood_burst", "200  # file"),
                ("flood_window_secs", "60  # file"),
                ("max_threads_per_user", "50  # file"),
                ("synthetic_agent", "true  # file"),
                ("history_max_age", "\"30d\"  # file"),
                ("log_format", "\"json\"  # file"),
                ("max_queued_runs_per_user", "10  # default"),
            ],
        ),
        (
            &[
                "--config",
                &file,
                "--max-runs-per-user",
                "9",
                "--flood-burst=300",
                "--log-format",
                "text",
            ],
            &[
                ("max_runs_per_user", "9  # flag --max-runs-per-user"),
                ("flood_burst", "300  # flag --flood-burst"),
                ("log_format", "\"text\"  # flag --log-format"),
                ("flood_window_secs", "60  # file"),
            ],
        ),
    ];
    for subcommand in ["serve", "config"] {
        for (flags, expected) in table {
            let argv: Vec<&str> = std::iter::once(subcommand)
                .chain(flags.iter().copied())
                .collect();
            let (_, _, parsed) = load(&argv).unwrap();
            let toml = parsed.effective_toml().unwrap();
            for (key, shown) in *expected {
                assert_eq!(line(&toml, key), *shown, "{argv:?}: {key}");
            }
        }
    }
    // The file's values reach the server's config, not only the printout.
    let (config, args, _) = load(&["serve", "--config", &file, "--flood-burst", "300"]).unwrap();
    assert_eq!(config.engine.max_concurrent_runs, 5);
    assert_eq!(config.flood_burst, 300);
    assert_eq!(config.flood_window, Duration::from_secs(60));
    assert_eq!(config.max_threads_per_user, 50);
    assert!(config.synthetic_agent);
    assert_eq!(config.history_max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(args.log_format, LogFormat::Json);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The marker lines around a child's answer on its stdout (libtest prints there too).
const BEGIN: &str = "<<<child";
const END: &str = "child>>>";
/// The child's command line, one word a line; set only in a child.
const CHILD_ARGV: &str = "AGENT_IT_CONFIG_CHILD_ARGV";

/// Not a test of its own: the body of the child that `in_child` starts (this binary again,
/// this test only). For `config …` it prints the settings its command line and environment
/// yield; for `serve …` it sets up logging as `agent-server serve` does and runs a session
/// that logs. Without [`CHILD_ARGV`] (a normal run) it has nothing to do.
#[test]
fn child_process() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv: Vec<&str> = argv.lines().collect();
    let answer = match load(&argv) {
        Ok((config, args, _)) if argv[0] == "serve" => {
            agent_server::server::init_logging(args.log_format);
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(logged_session(config));
            String::new()
        }
        Ok((_, _, parsed)) => parsed.effective_toml().unwrap(),
        Err(message) => format!("error: {message}\n"),
    };
    println!("{BEGIN}\n{answer}{END}");
}

/// What `argv` yields in a child process whose environment has `env` (and no other
/// `AGENT_SERVER_*`, `LLM_*` or `RUST_LOG` variable): its answer, and its stderr.
fn in_child(argv: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "config::child_process",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars() {
        if name.starts_with("AGENT_SERVER_") || name.starts_with("LLM_") || name == "RUST_LOG" {
            child.env_remove(name);
        }
    }
    child
        .env(CHILD_ARGV, argv.join("\n"))
        .envs(env.iter().copied());
    let output = child.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "child failed: {stdout}\n{stderr}");
    let start = stdout.find(BEGIN).expect("the child answers") + BEGIN.len() + 1;
    let end = stdout.find(END).expect("the child ends its answer");
    (stdout[start..end].to_owned(), stderr)
}

/// Words after `config`, the child's environment, and the line (key, rest) it gives or the
/// error it exits with.
type EnvCase<'a> = (Words<'a>, Pairs<'a>, Result<(&'a str, &'a str), &'a str>);

#[test]
fn environment_sits_between_flags_and_file() {
    let dir = scratch("environment");
    let file = write(&dir, "agent.toml", FILE);
    let env_runs = ("AGENT_SERVER_MAX_RUNS_PER_USER", "7");
    let table: &[EnvCase<'_>] = &[
        (
            &["--config", &file],
            &[],
            Ok(("max_runs_per_user", "5  # file")),
        ),
        (
            &["--config", &file],
            &[env_runs],
            Ok((
                "max_runs_per_user",
                "7  # environment AGENT_SERVER_MAX_RUNS_PER_USER",
            )),
        ),
        (
            &["--config", &file, "--max-runs-per-user", "9"],
            &[env_runs],
            Ok(("max_runs_per_user", "9  # flag --max-runs-per-user")),
        ),
        (
            &[],
            &[("AGENT_SERVER_CONFIG", &file)],
            Ok(("flood_burst", "200  # file")),
        ),
        (
            &["--config", &file],
            &[("AGENT_SERVER_LOG_FORMAT", "text")],
            Ok((
                "log_format",
                "\"text\"  # environment AGENT_SERVER_LOG_FORMAT",
            )),
        ),
        (
            &["--config", &file],
            &[("AGENT_SERVER_MAX_THREADS_PER_USER", "0")],
            Err("'--max-threads-per-user <MAX_THREADS_PER_USER>': 0 is not in 1..=1000000"),
        ),
        // An MCP server's bearer token comes from its own variable, checked, never echoed.
        (
            &["--mcp-server", "fs=node fs.js"],
            &[("AGENT_SERVER_MCP_TOKEN_FS", "tok-123")],
            Err("AGENT_SERVER_MCP_TOKEN_FS: a bearer token is for a server over HTTP"),
        ),
        (
            &["--mcp-server", "my-web=https://mcp.example/mcp"],
            &[("AGENT_SERVER_MCP_TOKEN_MY_WEB", "leaked secret")],
            Err("AGENT_SERVER_MCP_TOKEN_MY_WEB: the token holds a space"),
        ),
        // A server's own environment: values given with --mcp-env are masked, passed ones
        // must be set.
        (
            &[],
            &[
                ("AGENT_SERVER_MCP_SERVERS", "gh=node gh.js"),
                (
                    "AGENT_SERVER_MCP_ENV",
                    "gh:TOKEN=leaked secret;gh:LEVEL=debug",
                ),
                ("GH_PROXY", "http://proxy:3128"),
                ("AGENT_SERVER_MCP_PASS_ENV", "gh:GH_PROXY"),
            ],
            Ok((
                "# mcp_env",
                "[\"gh:TOKEN=****\", \"gh:LEVEL=****\"]  # environment AGENT_SERVER_MCP_ENV, masked",
            )),
        ),
        (
            &[
                "--mcp-server",
                "gh=node gh.js",
                "--mcp-pass-env",
                "gh:GH_PROXY",
            ],
            &[],
            Err(
                "--mcp-pass-env gh:GH_PROXY: GH_PROXY is not set in the agent-server's environment",
            ),
        ),
    ];
    for (flags, env, expected) in table {
        let argv: Vec<&str> = std::iter::once("config")
            .chain(flags.iter().copied())
            .collect();
        let (answer, _) = in_child(&argv, env);
        assert!(!answer.contains("leaked secret"), "{answer}");
        match expected {
            Ok((key, shown)) => assert_eq!(line(&answer, key), *shown, "{argv:?} {env:?}"),
            Err(message) => assert!(
                answer.starts_with("error: ") && answer.contains(message),
                "{argv:?} {env:?}: {answer}"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_output_masks_secrets_and_reads_back() {
    let dir = scratch("output");
    let file = write(
        &dir,
        "agent.toml",
        &format!(
            "{FILE}llm_api_key = \"sk-file-key-31337\"\nllm_base_url = \"https://user:llmpass@llm.example/v1\"\nllm_model = \"m\"\n"
        ),
    );
    let secrets = [
        "--jwt-secret",
        SECRET,
        "--broker",
        "redis://:redispass@cache:6379/2",
        "--store",
        "postgres://app:pgpass@db:5432/agents",
    ];
    let argv: Vec<&str> = ["config", "--config", &file]
        .into_iter()
        .chain(secrets)
        .collect();
    let (_, first, parsed) = load(&argv).unwrap();
    let printed = parsed.effective_toml().unwrap();
    for secret in [
        SECRET,
        "redispass",
        "pgpass",
        "sk-file-key-31337",
        "llmpass",
    ] {
        assert!(!printed.contains(secret), "`{secret}` is shown:\n{printed}");
    }
    for masked in [
        "# jwt_secret = \"<hidden>\"  # flag --jwt-secret, masked",
        "# llm_api_key = \"<hidden>\"  # file, masked",
        "# broker = \"redis://<credentials>@cache:6379/2\"  # flag --broker, masked",
        "# store = \"postgres://<credentials>@db:5432/agents\"  # flag --store, masked",
        "# llm_base_url = \"https://<credentials>@llm.example/v1\"  # file, masked",
    ] {
        assert!(printed.contains(masked), "no `{masked}` in\n{printed}");
    }
    // Every setting is listed (unset ones as comments).
    let cmd = ServeArgs::augment_args(Command::new("settings"));
    for arg in cmd.get_arguments().filter(|arg| arg.get_id() != "config") {
        let key = arg.get_id().as_str();
        assert!(
            printed.contains(&format!("{key} = "))
                || printed.contains(&format!("# {key} is not set")),
            "`{key}` is missing from\n{printed}"
        );
    }
    // Read back: the output as the file, the masked settings given again as flags, is the
    // same configuration.
    let reread = write(&dir, "printed.toml", &printed);
    let argv: Vec<&str> = ["config", "--config", &reread]
        .into_iter()
        .chain(secrets)
        .chain(["--llm-api-key", "sk-file-key-31337", "--llm-base-url"])
        .chain(["https://user:llmpass@llm.example/v1"])
        .collect();
    let (_, second, parsed_again) = load(&argv).unwrap();
    let settings = |args: &ServeArgs| {
        format!(
            "{:?}",
            ServeArgs {
                config: None,
                ..args.clone()
            }
        )
    };
    assert_eq!(settings(&second), settings(&first));
    let table = |text: &str| text.parse::<toml::Table>().unwrap();
    assert_eq!(
        table(&parsed_again.effective_toml().unwrap()),
        table(&printed)
    );
    // Without secrets the output alone is the configuration.
    let plain_source = write(&dir, "plain-source.toml", FILE);
    let (_, plain, parsed) =
        load(&["config", "--config", &plain_source, "--flood-burst", "7"]).unwrap();
    let plain_file = write(&dir, "plain.toml", &parsed.effective_toml().unwrap());
    let (_, again, _) = load(&["config", "--config", &plain_file]).unwrap();
    assert_eq!(settings(&again), settings(&plain));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_cap_reaches_the_sessions() {
    // With a cap of 1, Alice's first thread is forgotten once she starts a second, so Bob may
    // take it; with the default cap it stays hers.
    for (cap, bob_takes_it) in [(Some(1), true), (None, false)] {
        let server = start_server(|config| {
            if let Some(cap) = cap {
                config.max_threads_per_user = cap;
            }
        })
        .await;
        let alice = typed(server.addr(), "alice").await;
        let bob = typed(server.addr(), "bob").await;
        let quick = json!({"thinking": 0, "tools": 0, "chunks": 0});
        let first = alice.start(synthetic(quick.clone())).await.unwrap();
        alice.start(synthetic(quick)).await.unwrap();
        let in_first = StartAgent {
            thread_id: Some(first.thread_id.clone()),
            ..synthetic(json!({"thinking": 0, "tools": 0, "chunks": 0}))
        };
        match bob.start(in_first).await {
            Ok(run) => assert!(bob_takes_it, "cap {cap:?}: {run:?}"),
            Err(refused) => {
                assert!(!bob_takes_it, "cap {cap:?}: {refused}");
                assert_eq!(refused.code(), Some(&ErrorCode::ThreadNotFound));
            }
        }
        server.shutdown().await;
    }
}

/// A session that logs: a connection, a run, a refused token.
async fn logged_session(config: ServerConfig) {
    let server = agent_server::server::RunningServer::start(config)
        .await
        .unwrap();
    let mut client = Client::user(server.addr(), "log-format-user").await;
    let reply = client.start("r1", "synthetic", json!({"tools": 1})).await;
    assert_eq!(reply["type"], "run_accepted");
    client.events_until_terminals(1).await;
    assert!(
        Client::connect(server.addr(), "not-a-token", None)
            .await
            .is_err()
    );
    drop(client);
    server.shutdown().await;
}

#[test]
fn log_format_json_writes_one_json_object_a_line() {
    let dir = scratch("logs");
    let file = write(&dir, "agent.toml", "log_format = \"json\"\n");
    let serve = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--store",
        "none",
        "--synthetic-agent",
        "--jwt-secret",
        SERVER_SECRET,
    ];
    let table: &[(Words<'_>, Pairs<'_>, LogFormat)] = &[
        (&[], &[], LogFormat::Text),
        (&["--log-format", "json"], &[], LogFormat::Json),
        (&[], &[("AGENT_SERVER_LOG_FORMAT", "json")], LogFormat::Json),
        (&["--config", &file], &[], LogFormat::Json),
        (
            &["--config", &file, "--log-format", "text"],
            &[],
            LogFormat::Text,
        ),
    ];
    for (flags, env, format) in table {
        let argv: Vec<&str> = serve.iter().chain(flags.iter()).copied().collect();
        let (_, logs) = in_child(&argv, env);
        // At the default level (`info`, no RUST_LOG) the session's lines are there.
        for needed in ["connection opened", "run started", "refused a connection"] {
            assert!(
                logs.contains(needed),
                "{flags:?} {env:?}: no `{needed}` in\n{logs}"
            );
        }
        // Piped, not a terminal: no colour codes in either format.
        assert!(
            !logs.contains('\u{1b}'),
            "{flags:?} {env:?}: ANSI codes in\n{logs}"
        );
        for line in logs.lines() {
            let parsed = serde_json::from_str::<Value>(line);
            match format {
                LogFormat::Json => {
                    let object = parsed.unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    for key in ["timestamp", "level", "target"] {
                        assert!(object[key].is_string(), "no {key}: {line}");
                    }
                    assert!(object["fields"]["message"].is_string(), "{line}");
                }
                LogFormat::Text => assert!(parsed.is_err(), "JSON in text format: {line}"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
