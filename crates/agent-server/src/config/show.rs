//! `agent-server config`: the settings in effect as a TOML file that `--config` reads back,
//! each line saying where its value came from, secrets masked.
//!
//! A masked value cannot be read back, so its line is a comment: a file made from the output
//! leaves that setting to the environment or a flag (or to the operator, who writes it in).
//! Settings without a value (no `--llm-model`) are comments too, since TOML has no null.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches};

use super::settings::{Kind, repeats, setting_args, settings};

/// Settings whose values are secret: never shown.
pub(super) const SECRETS: &[&str] = &["jwt_secret", "llm_api_key"];
/// Settings whose entries are `NAME:VAR=VALUE` with a secret VALUE (`--mcp-env`): shown as
/// `NAME:VAR=****`.
pub(super) const ENTRY_SECRETS: &[&str] = &["mcp_env"];
/// Settings that are URLs, whose credentials (`redis://:password@host`) are never shown.
pub(super) const URLS: &[&str] = &["broker", "store", "llm_base_url", "otlp_endpoint"];

const HEADER: &str = "\
# agent-server settings in effect (flags > environment > --config file > defaults).
# Read back with `agent-server serve --config FILE`. Secrets, and URLs with credentials,
# are masked and so commented out: give those by flag or environment variable.
";

/// `value` of setting `key` as it may be shown, or `None` when it may be shown as it is.
fn masked(key: &str, value: &str) -> Option<String> {
    if SECRETS.contains(&key) {
        return Some("<hidden>".into());
    }
    if ENTRY_SECRETS.contains(&key) {
        // An entry without `=` is no entry, but may still be a piece of a secret.
        return Some(match value.split_once('=') {
            Some((head, _)) => format!("{head}=****"),
            None => "****".into(),
        });
    }
    if URLS.contains(&key) {
        return secrets::url::has_credentials(value).then(|| secrets::url::redacted(value));
    }
    None
}

/// `value` of setting `key` as an error message may show it (TOML syntax, masked).
pub(super) fn masked_value(key: &str, value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => match masked(key, text) {
            Some(shown) => toml::Value::String(shown).to_string(),
            None => value.to_string(),
        },
        _ if SECRETS.contains(&key) || ENTRY_SECRETS.contains(&key) => "<hidden>".into(),
        _ => value.to_string(),
    }
}

/// `value` of setting `key` as it may be shown (each string of an array masked on its own),
/// or `None` when it may be shown as it is.
fn masked_toml(key: &str, value: &toml::Value) -> Option<toml::Value> {
    match value {
        toml::Value::String(text) => masked(key, text).map(toml::Value::String),
        toml::Value::Array(items) => {
            let shown: Vec<Option<toml::Value>> =
                items.iter().map(|item| masked_toml(key, item)).collect();
            if shown.iter().all(Option::is_none) {
                return None;
            }
            let items = items.iter().zip(shown);
            Some(toml::Value::Array(
                items
                    .map(|(item, shown)| shown.unwrap_or_else(|| item.clone()))
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// The settings of `matches` as TOML; `file` is the `--config` file and the keys it set.
pub(super) fn render(matches: &ArgMatches, file: Option<&(PathBuf, BTreeSet<String>)>) -> String {
    let cmd = settings();
    let mut out = String::from(HEADER);
    if let Some((path, _)) = file {
        let _ = writeln!(out, "# --config {}", path.display());
    }
    for arg in setting_args(&cmd) {
        let key = arg.get_id().as_str();
        let from_file = file.is_some_and(|(_, keys)| keys.contains(key));
        let Some(value) = value(matches, key, Kind::of(arg), repeats(arg)) else {
            let _ = writeln!(out, "# {key} is not set");
            continue;
        };
        let source = source(arg, matches, from_file);
        let _ = match masked_toml(key, &value) {
            None => writeln!(out, "{key} = {value}  # {source}"),
            Some(shown) => writeln!(out, "# {key} = {shown}  # {source}, masked"),
        };
    }
    out
}

/// The value of setting `key`, typed for TOML (an array of strings for a setting that
/// `repeats`); `None` when it has none.
fn value(matches: &ArgMatches, key: &str, kind: Kind, repeats: bool) -> Option<toml::Value> {
    if kind == Kind::Bool {
        let flag = matches.try_get_one::<bool>(key).ok().flatten()?;
        return Some(toml::Value::Boolean(*flag));
    }
    if repeats {
        let values: Vec<toml::Value> = matches
            .get_raw(key)?
            .map(|raw| toml::Value::String(raw.to_string_lossy().into_owned()))
            .collect();
        return (!values.is_empty()).then_some(toml::Value::Array(values));
    }
    // The raw text is what was given (`90d`, not a `Duration`), so it reads back the same.
    let raw = matches.get_raw(key)?.next()?.to_string_lossy().into_owned();
    match (kind, raw.parse::<i64>()) {
        (Kind::Integer, Ok(number)) => Some(toml::Value::Integer(number)),
        _ => Some(toml::Value::String(raw)),
    }
}

/// Where the value of `arg` came from.
fn source(arg: &Arg, matches: &ArgMatches, from_file: bool) -> String {
    let key = arg.get_id().as_str();
    match matches.value_source(key) {
        Some(ValueSource::CommandLine) => format!("flag --{}", arg.get_long().unwrap_or(key)),
        Some(ValueSource::EnvVariable) => match arg.get_env() {
            Some(name) => format!("environment {}", name.to_string_lossy()),
            None => "environment".into(),
        },
        Some(ValueSource::DefaultValue) if from_file => "file".into(),
        _ => "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting whose environment value `--help` hides is masked here too.
    #[test]
    fn every_hidden_setting_is_masked() {
        let cmd = settings();
        for arg in setting_args(&cmd) {
            let key = arg.get_id().as_str();
            if arg.is_hide_env_values_set() {
                assert!(
                    SECRETS.contains(&key) || ENTRY_SECRETS.contains(&key) || URLS.contains(&key),
                    "{key} hides its environment value but `agent-server config` would show it"
                );
            }
        }
        for key in SECRETS.iter().chain(ENTRY_SECRETS).chain(URLS) {
            assert!(
                setting_args(&cmd).any(|arg| arg.get_id() == *key),
                "{key} is no setting"
            );
        }
    }

    #[test]
    fn masks() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("jwt_secret", "s3cret-s3cret", Some("<hidden>")),
            ("llm_api_key", "sk-1", Some("<hidden>")),
            (
                "broker",
                "redis://:pw@cache:6379/2",
                Some("redis://<credentials>@cache:6379/2"),
            ),
            ("broker", "redis://cache:6379", None),
            ("broker", "in-process", None),
            (
                "store",
                "postgres://app:pw@db/agents",
                Some("postgres://<credentials>@db/agents"),
            ),
            ("store", "sqlite://agent-history.db", None),
            // A password in the query (as libpq reads it) is hidden, the other parameters kept.
            (
                "store",
                "postgres://u@h/db?sslmode=require&password=pw",
                Some("postgres://<credentials>@h/db?sslmode=require&password=<hidden>"),
            ),
            ("store", "postgres://h/db?sslmode=require", None),
            // An `@` in a path is no user-info.
            ("llm_base_url", "https://llm.example/@team/v1", None),
            (
                "otlp_endpoint",
                "https://collector.example/?token=t",
                Some("https://collector.example/?token=<hidden>"),
            ),
            (
                "llm_base_url",
                "https://user:key@llm.example/v1",
                Some("https://<credentials>@llm.example/v1"),
            ),
            ("default_agent", "assistant", None),
            (
                "mcp_env",
                "github:GITHUB_TOKEN=ghp_s3cret=with=equals",
                Some("github:GITHUB_TOKEN=****"),
            ),
            ("mcp_env", "s3cret-piece", Some("****")),
            ("mcp_pass_env", "github:GITHUB_TOKEN", None),
            ("mcp_cwd", "fs=/srv/files", None),
        ];
        for (key, value, expected) in table {
            assert_eq!(masked(key, value).as_deref(), *expected, "{key} = {value}");
        }
        assert_eq!(
            masked_value("jwt_secret", &toml::Value::Integer(42)),
            "<hidden>"
        );
        let nested = toml::Value::Array(vec![toml::Value::String("a:B=s3cret".into())]);
        assert_eq!(masked_value("mcp_env", &nested), "<hidden>");
    }

    /// `agent-server config` with `argv`: the lines of the MCP settings.
    fn mcp_lines(argv: &[&str]) -> Vec<String> {
        let matches = settings()
            .no_binary_name(true)
            .try_get_matches_from(argv)
            .unwrap();
        render(&matches, None)
            .lines()
            .filter(|line| line.contains("mcp_"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn mcp_environments_are_shown_with_their_values_masked() {
        let lines = mcp_lines(&[
            "--mcp-server",
            "github=npx -y @modelcontextprotocol/server-github",
            "--mcp-env",
            "github:GITHUB_TOKEN=ghp_s3cret",
            "--mcp-env",
            "github:LOG_LEVEL=debug=loud",
            "--mcp-pass-env",
            "github:HTTPS_PROXY",
            "--mcp-cwd",
            "github=/srv/github",
        ]);
        let expected = [
            "mcp_server = [\"github=npx -y @modelcontextprotocol/server-github\"]  # flag --mcp-server",
            "# mcp_env = [\"github:GITHUB_TOKEN=****\", \"github:LOG_LEVEL=****\"]  # flag --mcp-env, masked",
            "mcp_pass_env = [\"github:HTTPS_PROXY\"]  # flag --mcp-pass-env",
            "mcp_cwd = [\"github=/srv/github\"]  # flag --mcp-cwd",
        ];
        assert_eq!(lines, expected);
        assert_eq!(
            mcp_lines(&[]),
            [
                "# mcp_server is not set",
                "# mcp_env is not set",
                "# mcp_pass_env is not set",
                "# mcp_cwd is not set"
            ]
        );
    }
}
