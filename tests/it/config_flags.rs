//! Flags alone: types, ranges and the checks of `ServerConfig::from_args` (moved out of the
//! server crate, whose source holds what runs, not its tables of cases).

use agent_server::config::*;
use clap::Parser;
use core_context::multitask::Multitask;

#[derive(Debug, Parser)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) args: ServeArgs,
}

/// Parses `argv` (after the program name) and validates it; `Err` holds the message.
pub(crate) fn check(argv: &[&str], expected: Result<(), &str>) {
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

/// The URL settings: checked with `secrets::url`, shown redacted when refused.
/// A client certificate for the broker is a certificate and its key: both or neither (the
/// files themselves are checked when the broker connects: `tests/it/data_tls.rs`).
#[test]
fn broker_client_certificate_flags_go_together() {
    let cert = ["--broker-client-cert", "c.pem"];
    let key = ["--broker-client-key", "c.key"];
    let broker = ["--broker", "rediss://h:1"];
    check(&[&broker[..], &cert, &key].concat(), Ok(()));
    check(
        &[&broker[..], &cert].concat(),
        Err(
            "--broker-client-cert and --broker-client-key go together (AGENT_SERVER_BROKER_CLIENT_CERT/KEY, broker_client_cert/key in --config): --broker-client-key is missing",
        ),
    );
    check(
        &[&broker[..], &key].concat(),
        Err("--broker-client-cert is missing"),
    );
}

#[test]
fn a_publish_mode_needs_a_redis_broker() {
    let redis = ["--broker", "redis://h:1"];
    for mode in ["auto", "script", "sequencer"] {
        check(&[&redis[..], &["--broker-mode", mode]].concat(), Ok(()));
    }
    check(&[&redis[..], &["--broker-sequencer"]].concat(), Ok(()));
    check(
        &[
            &redis[..],
            &["--broker-sequencer", "--broker-mode", "sequencer"],
        ]
        .concat(),
        Ok(()),
    );
    check(
        &["--broker-sequencer"],
        Err(
            "--broker-sequencer (AGENT_SERVER_BROKER_SEQUENCER, broker_sequencer in --config) is a mode of the Redis broker, and --broker is in-process",
        ),
    );
    check(
        &["--broker-mode", "script"],
        Err(
            "--broker-mode (AGENT_SERVER_BROKER_MODE, broker_mode in --config) is a mode of the Redis broker, and --broker is in-process",
        ),
    );
    // The default is harmless without Redis.
    check(&["--broker-mode", "auto"], Ok(()));
    check(
        &[
            &redis[..],
            &["--broker-sequencer", "--broker-mode", "script"],
        ]
        .concat(),
        Err(
            "--broker-sequencer (AGENT_SERVER_BROKER_SEQUENCER, broker_sequencer in --config) is --broker-mode sequencer, and --broker-mode is script: give one of them",
        ),
    );
    check(
        &[&redis[..], &["--broker-mode", "fast"]].concat(),
        Err("\"fast\" is not a publish mode: use auto"),
    );
}

/// What a node runs with no flag: `auto`, and with `--broker-sequencer` the sequencer's.
#[test]
fn the_publish_mode_defaults_to_auto() {
    use redis_broker::PublishMode;
    let mode = |words: &[&str]| {
        let mut line = vec!["serve", "--broker", "redis://h:1"];
        line.extend_from_slice(words);
        let cli = Cli::try_parse_from(line).expect("valid flags");
        ServerConfig::from_args(cli.args)
            .expect("valid")
            .broker_mode
    };
    assert_eq!(mode(&[]), PublishMode::Auto);
    assert_eq!(mode(&["--broker-sequencer"]), PublishMode::Sequencer);
    assert_eq!(mode(&["--broker-mode", "script"]), PublishMode::Script);
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
        (&["--worker-threads", "1"], Ok(())),
        (&["--worker-threads", "0"], Err("0 is not in 1..=1024")),
        (
            &["--worker-threads", "2000"],
            Err("2000 is not in 1..=1024"),
        ),
        (&["--worker-threads", "some"], Err("--worker-threads")),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}

/// `--multitask-default`: one of the strategies (`enqueue` unless set), by flag or file;
/// anything else is refused naming the strategies.
#[test]
fn the_multitask_default_is_a_strategy() {
    let parse = |argv: &[&str]| {
        let args = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?
            .args;
        ServerConfig::from_args(args)
            .map(|config| config.multitask_default)
            .map_err(|e| e.to_string())
    };
    assert_eq!(parse(&[]), Ok(Multitask::Enqueue));
    for name in Multitask::NAMES {
        assert_eq!(
            parse(&["--multitask-default", name]).map(Multitask::name),
            Ok(*name)
        );
    }
    let refused = parse(&["--multitask-default", "later"]).unwrap_err();
    assert!(
        refused.contains(
            "\"later\" is not a strategy; use one of reject, enqueue, interrupt, rollback, steer"
        ),
        "{refused}"
    );
    let dir = std::env::temp_dir().join(format!("agent-config-multitask-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, "multitask_default = \"reject\"\n").unwrap();
    let argv: Vec<std::ffi::OsString> = ["serve", "--config", path.to_str().unwrap()]
        .into_iter()
        .map(Into::into)
        .collect();
    let command = || <Cli as clap::CommandFactory>::command();
    let matches = command().try_get_matches_from(&argv).unwrap();
    let parsed = with_file(command(), &argv, matches).unwrap();
    let args = <Cli as clap::FromArgMatches>::from_arg_matches(&parsed.matches)
        .unwrap()
        .args;
    assert_eq!(args.multitask_default, Multitask::Reject);
    std::fs::write(&path, "multitask_default = \"sometimes\"\n").unwrap();
    let matches = command().try_get_matches_from(&argv).unwrap();
    let refused = with_file(command(), &argv, matches)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("multitask_default"), "{refused}");
    assert!(refused.contains("is not a strategy"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Budgets and prices: checked by name, and budgets need a store (usage is counted there).
#[test]
fn budget_and_price_flags_are_checked() {
    let table: &[(&[&str], Result<(), &str>)] = &[
        (
            &[
                "--token-budget-per-user",
                "1000",
                "--store",
                "sqlite://x.db",
            ],
            Ok(()),
        ),
        (
            &["--token-budget-per-user", "0"],
            Err("--token-budget-per-user"),
        ),
        (
            &["--cost-budget-per-user=0"],
            Err("\"0\" is not an amount of US dollars above 0"),
        ),
        (
            &["--budget-period", "year"],
            Err("\"year\" is not a period; use day, week or month"),
        ),
        (
            &["--token-budget-per-user", "1000", "--store", "none"],
            Err("count usage in the history store, and --store is none"),
        ),
        (&["--model-price", "gpt-4o=2.5/10,mini=0.15/0.6"], Ok(())),
        (
            &["--model-price", "gpt-4o=2.5"],
            Err("model price \"gpt-4o=2.5\": no `/`"),
        ),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
    let args = Cli::try_parse_from([
        "serve",
        "--cost-budget-per-user",
        "0.5",
        "--budget-period",
        "week",
        "--store",
        "sqlite://x.db",
    ])
    .unwrap()
    .args;
    let config = ServerConfig::from_args(args).unwrap();
    assert_eq!(config.budget.cost_micro_usd, Some(500_000));
    assert_eq!(config.budget.period, run_service::usage::Period::Week);
    assert_eq!(config.budget.tokens, None);
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
    // A good endpoint works (the integration tests build the server with its exporter,
    // feature `otlp`).
    let exports = Ok(());
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
            Err(
                "\"collector:4318\" is not a collector's address (its scheme is `collector`, not http:// or https://)",
            ),
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

/// `--allowed-origins` takes origins (repeated, or separated by `,` or `;`; a file's array),
/// refuses anything else naming the flag, and the HTTP rates take 1 and up.
#[test]
fn origin_and_http_rate_flags() {
    let table: &[(&[&str], Result<(), &str>)] = &[
        (&["--allowed-origins", "https://chat.example.com"], Ok(())),
        (&["--allowed-origins", "*"], Ok(())),
        (
            &["--allowed-origins", "chat.example.com"],
            Err(
                "--allowed-origins (AGENT_SERVER_ALLOWED_ORIGINS) \"chat.example.com\" is not an origin: it has no scheme",
            ),
        ),
        (
            &["--allowed-origins", "https://a.test,https://b.test/app"],
            Err("\"https://b.test/app\" is not an origin: an origin has no path"),
        ),
        (
            &["--http-rate-per-user-per-minute", "0"],
            Err("--http-rate-per-user-per-minute"),
        ),
        (&["--http-rate-per-address-per-minute", "5000"], Ok(())),
        (
            &["--dev-token-rate-per-address-per-minute", "0"],
            Err("--dev-token-rate-per-address-per-minute"),
        ),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
    let argv = [
        "serve",
        "--allowed-origins",
        "https://a.test",
        "--allowed-origins",
        "http://b.test:8080;HTTPS://C.test:443",
        "--http-rate-per-user-per-minute",
        "7",
    ];
    let config = ServerConfig::from_args(Cli::try_parse_from(argv).unwrap().args).unwrap();
    assert_eq!(
        config.allowed_origins.listed(),
        ["https://a.test", "http://b.test:8080", "https://c.test"]
    );
    assert_eq!(config.http_rates.per_user_per_minute, 7);
}

/// A file lists origins as an array.
#[test]
fn a_file_lists_allowed_origins() {
    let dir = std::env::temp_dir().join(format!("agent-config-origins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        "allowed_origins = [\"https://a.test\", \"http://localhost:3000\"]\n",
    )
    .unwrap();
    let argv: Vec<std::ffi::OsString> = ["serve", "--config", path.to_str().unwrap()]
        .into_iter()
        .map(Into::into)
        .collect();
    let command = || <Cli as clap::CommandFactory>::command();
    let matches = command().try_get_matches_from(&argv).unwrap();
    let parsed = with_file(command(), &argv, matches).unwrap();
    let args = <Cli as clap::FromArgMatches>::from_arg_matches(&parsed.matches)
        .unwrap()
        .args;
    let config = ServerConfig::from_args(args).unwrap();
    assert_eq!(
        config.allowed_origins.listed(),
        ["https://a.test", "http://localhost:3000"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
