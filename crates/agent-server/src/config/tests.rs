//! Flags alone: types, ranges and the checks of `ServerConfig::from_args`.

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

/// Parses `argv` (after the program name) and validates it; `Err` holds the message.
fn check(argv: &[&str], expected: Result<(), &str>) {
    let got = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
        .map_err(|e| e.to_string())
        .and_then(|cli| ServerConfig::from_args(cli.args).map_err(|e| e.to_string()))
        .map(|_| ());
    match (&got, expected) {
        (Ok(()), Ok(())) => {}
        (Err(m), Err(f)) => assert!(m.contains(f), "{argv:?}: {m:?} lacks {f:?}"),
        _ => panic!("{argv:?}: expected {expected:?}, got {got:?}"),
    }
}

#[test]
fn flag_table() {
    let secret = "s".repeat(32);
    let table: &[(&[&str], Result<(), &str>)] = &[
        (&[], Ok(())),
        (
            &[
                "--addr",
                "127.0.0.1:0",
                "--jwt-secret",
                &secret,
                "--synthetic-agent",
            ],
            Ok(()),
        ),
        (
            &["--addr", "localhost"],
            Err("invalid value 'localhost' for '--addr <ADDR>'"),
        ),
        (
            &["--jwt-secret", "short"],
            Err("is 5 bytes; use at least 32"),
        ),
        (&["--max-runs-per-user", "0"], Err("--max-runs-per-user")),
        (&["--max-frame-bytes", "lots"], Err("--max-frame-bytes")),
        (
            &["--default-agent", "Bad Agent"],
            Err("--default-agent \"Bad Agent\" is not a valid agent name"),
        ),
        (&["--broker", "in-process"], Ok(())),
        (&["--broker", "redis://127.0.0.1:6379"], Ok(())),
        (&["--broker", "redis://:pw@10.0.0.5:6379/2"], Ok(())),
        (
            &["--broker", "redis://"],
            Err("--broker (AGENT_SERVER_BROKER) \"redis://\" is neither"),
        ),
        (
            &["--broker", "http://user:secret@cache:6379"],
            Err("\"http://<credentials>@cache:6379\" is neither"),
        ),
        (&["--broker", "memory"], Err("is neither `in-process` nor")),
        (&["--store", "none"], Ok(())),
        (&["--store", "sqlite://data/history.db"], Ok(())),
        (&["--store", "postgres://app:pw@db:5432/agents"], Ok(())),
        (
            &["--store", "mysql://root:secret@db/agents"],
            Err("--store (AGENT_SERVER_STORE) \"mysql://<credentials>@db/agents\" is not a store"),
        ),
        (&["--store", "sqlite://"], Err("is not a store")),
        (&["--history-max-age", "30d"], Ok(())),
        (
            &["--addr", "0.0.0.0:8080"],
            Err("--addr 0.0.0.0:8080 is not a loopback address and no --jwt-secret"),
        ),
        (
            &["--addr", "0.0.0.0:8080", "--dev-tokens-on-network"],
            Ok(()),
        ),
        (&["--addr", "0.0.0.0:8080", "--jwt-secret", &secret], Ok(())),
        (&["--addr", "[::1]:8080"], Ok(())),
        (
            &["--flood-burst", "500", "--flood-window-secs", "60"],
            Ok(()),
        ),
        (&["--flood-burst", "0"], Err("--flood-burst")),
        (&["--history-max-age", "soon"], Err("--history-max-age")),
        (
            &["--history-max-threads-per-user", "0"],
            Err("--history-max-threads-per-user"),
        ),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}

#[test]
fn limit_and_log_flag_table() {
    let table: &[(&[&str], Result<(), &str>)] = &[
        (&["--max-threads-per-user", "1"], Ok(())),
        (
            &["--max-threads-per-user", "0"],
            Err("0 is not in 1..=1000000"),
        ),
        (
            &["--max-engines-per-user", "0"],
            Err("--max-engines-per-user"),
        ),
        (&["--tool-timeout-secs", "0"], Err("--tool-timeout-secs")),
        (&["--log-format", "json"], Ok(())),
        (
            &["--log-format", "xml"],
            Err("[possible values: text, json]"),
        ),
        (&["--max-engines-per-user", "40"], Ok(())),
        (&["--tool-timeout-secs", "5"], Ok(())),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}

/// The flags' defaults are the defaults of the config the library starts from (the store
/// aside: the binary keeps a history by default, a library user opts in).
#[test]
fn flag_defaults_are_the_config_defaults() {
    let args = Cli::try_parse_from(["serve"]).unwrap().args;
    let from_flags = ServerConfig::from_args(args).unwrap();
    let defaults = ServerConfig::default();
    let shown = |config: &ServerConfig| {
        format!(
            "{:?}",
            ServerConfig {
                store: None,
                ..config.clone()
            }
        )
    };
    assert_eq!(shown(&from_flags), shown(&defaults));
}

/// With the settings on the root command (no subcommand), the file is read as well.
#[test]
fn a_file_under_a_flat_command() {
    let dir = std::env::temp_dir().join(format!("agent-config-flat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, "max_runs_per_user = 4\nstart_rate_per_minute = 9\n").unwrap();
    let argv: Vec<std::ffi::OsString> = ["serve", "--config", path.to_str().unwrap()]
        .into_iter()
        .chain(["--start-rate-per-minute", "11"])
        .map(Into::into)
        .collect();
    let command = || <Cli as clap::CommandFactory>::command();
    let matches = command().try_get_matches_from(&argv).unwrap();
    let parsed = with_file(command(), &argv, matches).unwrap();
    let args = <Cli as clap::FromArgMatches>::from_arg_matches(&parsed.matches)
        .unwrap()
        .args;
    assert_eq!(
        (args.max_runs_per_user, args.start_rate_per_minute),
        (4, 11)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "otlp")]
#[test]
fn spans_go_to_the_collectors_traces_url() {
    let cases = [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        (
            "https://otel.example/base",
            "https://otel.example/base/v1/traces",
        ),
        (
            "http://collector:4318/v1/traces",
            "http://collector:4318/v1/traces",
        ),
    ];
    for (endpoint, url) in cases {
        let cli = Cli::try_parse_from(["serve", "--otlp-endpoint", endpoint]).unwrap();
        let config = ServerConfig::from_args(cli.args).unwrap();
        assert_eq!(config.otlp.unwrap().traces_url, url, "{endpoint}");
    }
}

#[test]
fn otlp_flag_table() {
    // A good endpoint works only where the exporter is built in.
    let exports = if cfg!(feature = "otlp") {
        Ok(())
    } else {
        Err("built without OpenTelemetry export")
    };
    let table: &[(&[&str], Result<(), &str>)] = &[
        (&["--otlp-endpoint", "http://collector:4318"], exports),
        (
            &[
                "--otlp-endpoint",
                "https://otel.example.com/",
                "--otlp-protocol",
                "json",
            ],
            exports,
        ),
        (
            &["--otlp-endpoint", "collector:4318"],
            Err("\"collector:4318\" is not an http:// or https:// URL"),
        ),
        (&["--otlp-endpoint", "http://"], Err("names no host")),
        (&["--otlp-endpoint", "http://:4318"], Err("names no host")),
        (
            &["--otlp-endpoint", "http://c:4318/v1/traces?x=1"],
            Err("holds a query"),
        ),
        (
            &[
                "--otlp-endpoint",
                "http://c:4318",
                "--otlp-protocol",
                "grpc",
            ],
            Err("invalid value 'grpc' for '--otlp-protocol"),
        ),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}

#[test]
fn mcp_servers_are_checked_at_start() {
    let table: &[(&[&str], Result<(), &str>)] = &[
        (
            &[
                "--mcp-server",
                "everything=npx -y @modelcontextprotocol/server-everything",
            ],
            Ok(()),
        ),
        (
            &["--mcp-server", "a=node a.js", "--mcp-server", "b=node b.js"],
            Ok(()),
        ),
        (
            &["--mcp-server", "Bad=node x.js"],
            Err("--mcp-server name \"Bad\" must be"),
        ),
        (&["--mcp-server", "node x.js"], Err("must be NAME=COMMAND")),
        (&["--mcp-server", "web=https://mcp.example/mcp"], Ok(())),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}

#[test]
fn every_secret_setting_reaches_the_scrubber() {
    let secret = "jwt-secret-for-the-scrubber-test-0123456789";
    let parse = |argv: &[&str]| {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(|cli| ServerConfig::from_args(cli.args).map_err(|e| e.to_string()))
    };
    let config = parse(&[
        "--jwt-secret",
        secret,
        "--llm-base-url",
        "http://127.0.0.1:9/v1",
        "--llm-model",
        "m",
        "--llm-api-key",
        "sk-model-key-0123",
        "--broker",
        "redis://:broker-password-1@127.0.0.1:6379",
        "--store",
        "postgres://app@db/app?password=store%2Fpassword-2",
        "--secret-env",
        "PATH",
    ])
    .unwrap();
    let path = std::env::var("PATH").unwrap();
    let scrubbed = |text: &str| {
        config
            .scrubber
            .scrub(::secrets::Site::Logs, text)
            .into_owned()
    };
    for value in [
        secret,
        "sk-model-key-0123",
        "broker-password-1",
        "store/password-2",
        path.as_str(),
    ] {
        let said = format!("before {value} after");
        assert_eq!(
            scrubbed(&said),
            format!("before {} after", ::secrets::MARKER)
        );
    }
    // The llm agent scrubs with the same scrubber.
    let llm = config.llm.as_ref().unwrap();
    assert!(Arc::ptr_eq(&llm.scrubber, &config.scrubber));
    // A short URL password is not scrubbed, and said so; an unset --secret-env is refused.
    let short = parse(&["--store", "postgres://app:pw@db/app"]).unwrap();
    assert_eq!(short.unscrubbed.len(), 1);
    assert!(short.unscrubbed[0].to_string().contains("--store"));
    let unset = parse(&["--secret-env", "AGENT_SERVER_TEST_NEVER_SET_4242"]).unwrap_err();
    assert!(
        unset.contains("--secret-env") && unset.contains("AGENT_SERVER_TEST_NEVER_SET_4242"),
        "{unset}"
    );
}
