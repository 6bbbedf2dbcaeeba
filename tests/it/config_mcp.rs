//! The MCP server settings (`--mcp-*`) and the secrets they and the other settings hand the
//! scrubber, as `ServerConfig::from_args` checks them.

use std::sync::Arc;

use agent_server::config::*;
use clap::Parser;

use crate::config_flags::{Cli, check};

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

#[test]
fn mcp_process_settings_are_checked_at_start() {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().unwrap();
    let fs_cwd = format!("fs={tmp}");
    let fs = ["--mcp-server", "fs=node fs.js"];
    let web = ["--mcp-server", "web=https://mcp.example/mcp"];
    let with = |server: [&'static str; 2], rest: &[&'static str]| -> Vec<&'static str> {
        server.iter().chain(rest).copied().collect()
    };
    let table: Vec<(Vec<&str>, Result<(), &str>)> = vec![
        (
            [
                &fs[..],
                &["--mcp-env", "fs:API_KEY=s3cret=with=equals"],
                &["--mcp-env", "fs:EMPTY="],
                &["--mcp-pass-env", "fs:PATH", "--mcp-cwd", &fs_cwd],
            ]
            .concat(),
            Ok(()),
        ),
        (
            with(fs, &["--mcp-env", "gh:TOKEN=s3cret"]),
            Err("--mcp-env gh:TOKEN: no --mcp-server is named \"gh\" (the servers are: fs)"),
        ),
        (
            vec!["--mcp-pass-env", "gh:PATH"],
            Err("--mcp-pass-env gh:PATH: no --mcp-server is named \"gh\" (there are none)"),
        ),
        (
            with(fs, &["--mcp-env", "fs:1X=s3cret"]),
            Err("--mcp-env fs:1X: \"1X\" is not a variable name"),
        ),
        (
            with(fs, &["--mcp-env", "fs:s3cret"]),
            Err("--mcp-env (AGENT_SERVER_MCP_ENV): entry 1 of 1 is not NAME:VAR=VALUE"),
        ),
        (
            with(fs, &["--mcp-env", "fs:A=1;s3cret"]),
            Err("entry 2 of 2 is not NAME:VAR=VALUE (the entry is not shown"),
        ),
        (
            with(web, &["--mcp-env", "web:KEY=s3cret"]),
            Err("--mcp-env web:KEY: the MCP server web is reached over HTTP"),
        ),
        (
            with(
                fs,
                &["--mcp-env", "fs:KEY=s3cret", "--mcp-env", "fs:KEY=s3cret"],
            ),
            Err("--mcp-env fs:KEY: KEY is already given to this server by --mcp-env"),
        ),
        (
            with(
                fs,
                &["--mcp-pass-env", "fs:AGENT_ENGINE_TEST_SURELY_UNSET_4711"],
            ),
            Err("AGENT_ENGINE_TEST_SURELY_UNSET_4711 is not set in the agent-server's environment"),
        ),
        (
            with(fs, &["--mcp-pass-env", "fs"]),
            Err("--mcp-pass-env (AGENT_SERVER_MCP_PASS_ENV) \"fs\" is not NAME:VAR"),
        ),
        (
            with(web, &["--mcp-pass-env", "web:PATH"]),
            Err("--mcp-pass-env web:PATH: the MCP server web is reached over HTTP"),
        ),
    ];
    for (argv, expected) in &table {
        check_unshown(argv, *expected);
    }
}

/// [`check`], and no value `s3cret` shown, in an error or in the settings' `Debug`.
fn check_unshown(argv: &[&str], expected: Result<(), &str>) {
    check(argv, expected);
    let got = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
        .map_err(|e| e.to_string())
        .and_then(|cli| ServerConfig::from_args(cli.args).map_err(|e| e.to_string()));
    match got {
        Err(message) => assert!(!message.contains("s3cret"), "{argv:?}: {message}"),
        Ok(config) => assert!(!format!("{config:?}").contains("s3cret")),
    }
}

#[test]
fn mcp_working_directories_are_checked_at_start() {
    let tmp = std::env::temp_dir();
    let web_cwd = format!("web={}", tmp.display());
    let fs = ["--mcp-server", "fs=node fs.js"];
    let web = ["--mcp-server", "web=https://mcp.example/mcp"];
    let with = |server: [&'static str; 2], rest: &[&'static str]| -> Vec<&'static str> {
        server.iter().chain(rest).copied().collect()
    };
    let table: Vec<(Vec<&str>, Result<(), &str>)> = vec![
        (
            with(fs, &["--mcp-cwd", "fs=/nonexistent/agent-engine"]),
            Err("--mcp-cwd fs=/nonexistent/agent-engine: the directory cannot be used"),
        ),
        (
            with(fs, &["--mcp-cwd", "fs"]),
            Err("--mcp-cwd (AGENT_SERVER_MCP_CWD) \"fs\" is not NAME=PATH"),
        ),
        (
            [&web[..], &["--mcp-cwd", &web_cwd]].concat(),
            Err("the MCP server web is reached over HTTP"),
        ),
    ];
    for (argv, expected) in &table {
        check(argv, *expected);
    }
}

/// What the MCP settings give a server: its variables (by name and value) and directory.
#[test]
fn mcp_process_settings_reach_the_server_spec() {
    let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    let cwd = format!("fs={}", tmp.display());
    let argv = [
        "serve",
        "--mcp-server",
        "fs=node fs.js",
        "--mcp-server",
        "other=node other.js",
        "--mcp-env",
        "fs:API_KEY=k=1",
        "--mcp-pass-env",
        "fs:PATH",
        "--mcp-cwd",
        &cwd,
    ];
    let config = ServerConfig::from_args(Cli::try_parse_from(argv).unwrap().args).unwrap();
    let [fs, other] = config.mcp_servers.as_slice() else {
        panic!("two servers: {:?}", config.mcp_servers);
    };
    let mcp_tools::Target::Stdio { env, cwd, .. } = &fs.target else {
        panic!("{fs:?}");
    };
    let env: Vec<(&str, &str)> = env.iter().map(|v| (v.name(), v.expose())).collect();
    let path = std::env::var("PATH").unwrap();
    assert_eq!(env, [("API_KEY", "k=1"), ("PATH", path.as_str())]);
    assert_eq!(cwd.as_deref(), Some(tmp.as_path()));
    assert_eq!(fs.secret_values(|_| true), ["k=1", path.as_str()]);
    assert!(other.secret_values(|_| true).is_empty());
    // API_KEY says it is a secret; a too-short value is not scrubbed, and said so.
    assert_eq!(config.unscrubbed.len(), 1, "{:?}", config.unscrubbed);
    assert!(config.unscrubbed[0].source.contains("MCP server fs"));
}
