//! The `--config` file: a TOML table of settings, under the environment and the flags.
//!
//! The file's keys are [`ServeArgs`]'s argument ids (the long flag with `_` for `-`), so the
//! list of settings exists once. Each value is checked against the TOML type its setting
//! takes and then run through that setting's own clap value parser: the file refuses exactly
//! what the flag refuses, and says which key, which value, and what is allowed. The checked
//! values then become the arguments' defaults and the same command line is parsed again, so
//! clap's own order (command line > environment > default) gives flags > environment >
//! file > built-in defaults.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{ArgMatches, Command};

use super::ConfigError;
use super::settings::{CONFIG, Kind, repeats, setting_args, settings};
use super::show;

/// Which command of the command line holds the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    /// The root command is `serve`-like itself.
    Root,
    /// This subcommand (`serve`, `config`).
    Sub(String),
}

/// A command line parsed with its `--config` file in.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The matches of the whole command line (for `FromArgMatches`).
    pub matches: ArgMatches,
    holder: Option<Holder>,
    /// The file, and the keys it set.
    file: Option<(PathBuf, BTreeSet<String>)>,
}

impl Parsed {
    /// The matches of the command that holds the settings; `None` when the command line chose
    /// one without them (`token`, `chat`).
    pub fn settings(&self) -> Option<&ArgMatches> {
        match self.holder.as_ref()? {
            Holder::Root => Some(&self.matches),
            Holder::Sub(name) => self.matches.subcommand_matches(name),
        }
    }

    /// The settings in effect as TOML that `--config` reads back, each with where it came from,
    /// secrets and URL credentials masked; `None` as for [`Parsed::settings`].
    pub fn effective_toml(&self) -> Option<String> {
        Some(show::render(self.settings()?, self.file.as_ref()))
    }
}

/// Layers the `--config` file (or `AGENT_SERVER_CONFIG`) of `matches` under the environment:
/// `matches` is `cmd` parsed from `argv` (the caller parses first, so `--help` and usage
/// errors stay clap's). Without a file, `matches` is returned as it is; with one, its
/// settings are checked and `argv` is parsed again with them as the defaults.
pub fn with_file(
    cmd: Command,
    argv: &[OsString],
    matches: ArgMatches,
) -> Result<Parsed, ConfigError> {
    let holder = holder(&cmd, &matches);
    let path = match &holder {
        Some(Holder::Root) => matches.get_one::<PathBuf>(CONFIG),
        Some(Holder::Sub(name)) => matches
            .subcommand_matches(name)
            .and_then(|sub| sub.get_one::<PathBuf>(CONFIG)),
        None => None,
    }
    .cloned();
    let (Some(path), Some(at)) = (path, &holder) else {
        return Ok(Parsed {
            matches,
            holder,
            file: None,
        });
    };
    let values = read(&path)?;
    let cmd = match at {
        Holder::Root => as_defaults(cmd, &values),
        Holder::Sub(name) => cmd.mut_subcommand(name, |sub| as_defaults(sub, &values)),
    };
    // The values were checked by the same parsers, so only the unforeseen fails here.
    let matches = cmd
        .try_get_matches_from(argv)
        .map_err(|e| ConfigError::Args(e.to_string().trim_end().to_owned()))?;
    let keys = values.into_iter().map(|(key, _)| key).collect();
    Ok(Parsed {
        matches,
        holder,
        file: Some((path, keys)),
    })
}

/// The command that `matches` chose, if it takes `--config`.
fn holder(cmd: &Command, matches: &ArgMatches) -> Option<Holder> {
    let has_config = |cmd: &Command| cmd.get_arguments().any(|arg| arg.get_id() == CONFIG);
    if has_config(cmd) {
        return Some(Holder::Root);
    }
    let (name, _) = matches.subcommand()?;
    has_config(cmd.find_subcommand(name)?).then(|| Holder::Sub(name.to_owned()))
}

/// `cmd` with `values` (setting id, checked values) as its arguments' defaults.
fn as_defaults(cmd: Command, values: &[(String, Vec<String>)]) -> Command {
    values.iter().fold(cmd, |cmd, (key, values)| {
        cmd.mut_arg(key, |arg| arg.default_values(values.clone()))
    })
}

/// Reads the file: each key a setting, each value one its parser accepts, as clap's text (an
/// array for a setting that repeats).
fn read(path: &Path) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let shown = path.display().to_string();
    let file_error = |reason: String| ConfigError::File {
        path: shown.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().to_owned()))?;
    let cmd = settings();
    table
        .iter()
        .map(|(key, value)| settings_of(&cmd, &shown, key, value))
        .collect()
}

/// One entry of the file: a setting that repeats takes an array of strings (or one string),
/// each checked as the flag would be; any other setting, one value.
fn settings_of(
    cmd: &Command,
    path: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(String, Vec<String>), ConfigError> {
    let repeated = setting_args(cmd).any(|arg| arg.get_id() == key && repeats(arg));
    match (repeated, value) {
        (true, toml::Value::Array(items)) => {
            let mut values = Vec::new();
            for item in items {
                values.push(setting(cmd, path, key, item)?.1);
            }
            Ok((key.to_owned(), values))
        }
        _ => setting(cmd, path, key, value).map(|(key, value)| (key, vec![value])),
    }
}

/// One entry of the file, checked: its setting's id and its value as clap reads it.
fn setting(
    cmd: &Command,
    path: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(String, String), ConfigError> {
    let Some(arg) = setting_args(cmd).find(|arg| arg.get_id() == key) else {
        return Err(unknown(cmd, path, key));
    };
    let refused = |allowed: String| ConfigError::BadValue {
        path: path.to_owned(),
        key: key.to_owned(),
        value: show::masked_value(key, value),
        allowed,
    };
    let kind = Kind::of(arg);
    let text = match (kind, value) {
        (Kind::Bool, toml::Value::Boolean(flag)) => return Ok((key.to_owned(), flag.to_string())),
        (Kind::Integer, toml::Value::Integer(number)) => number.to_string(),
        (Kind::String, toml::Value::String(text)) => text.clone(),
        (Kind::Integer, toml::Value::String(text)) if text.trim().parse::<i64>().is_ok() => {
            return Err(refused(format!(
                "expected an integer, not a string (write it without quotes: {key} = {})",
                text.trim()
            )));
        }
        _ => {
            let article = if value.is_integer() || value.is_array() {
                "an"
            } else {
                "a"
            };
            return Err(refused(format!(
                "expected {}, not {article} {}",
                kind.name(),
                value.type_str()
            )));
        }
    };
    // The setting alone, given the value as a flag: its own parser and range decide.
    let long = arg.get_long().unwrap_or(key);
    let alone = Command::new("check").no_binary_name(true).arg(arg.clone());
    match alone.try_get_matches_from([format!("--{long}={text}")]) {
        Ok(_) => Ok((key.to_owned(), text)),
        Err(error) => Err(refused(match arg.get_help() {
            Some(help) => format!("{} ({key}: {help})", reason(&error)),
            None => reason(&error),
        })),
    }
}

/// What a value parser's error says is allowed: the range (`0 is not in 1..=1000`), the
/// choices, or why the text does not parse.
fn reason(error: &clap::Error) -> String {
    if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        return format!("use one of {}", valid.join(", "));
    }
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.kind().to_string(),
    }
}

/// The error of a key that is no setting, with the closest setting when one is close.
fn unknown(cmd: &Command, path: &str, key: &str) -> ConfigError {
    let names: Vec<&str> = setting_args(cmd).map(|arg| arg.get_id().as_str()).collect();
    let spelled = key.replace('-', "_");
    let closest = names
        .iter()
        .map(|name| (strsim::jaro_winkler(&spelled, name), *name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    ConfigError::UnknownKey {
        path: path.to_owned(),
        key: key.to_owned(),
        hint: closest
            .map(|(_, name)| format!("; did you mean `{name}`?"))
            .unwrap_or_default(),
        allowed: names.join(", "),
    }
}
