//! The check's configuration: the `[workspace.metadata.ssot-check]` table of the root
//! manifest read into a [`Config`], with an error that names the offending key and says what
//! to write ([`ConfigError`]), and the `*` globs its patterns are written in.
//!
//! It knows nothing of Rust sources; `scan` applies it to them.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The manifest table the configuration lives in, as users see it in messages.
pub const TABLE: &str = "[workspace.metadata.ssot-check]";

/// The keys of [`TABLE`], all required.
const KEYS: [&str; 5] = [
    "engine-crate",
    "engine-type",
    "alias-allowed-in",
    "patterns",
    "exclude",
];

/// The rules of the check, read from [`TABLE`] in the root manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The only crate (by directory name) allowed to define an engine type.
    pub engine_crate: String,
    /// The one engine type, e.g. `UserExecutionEngine`.
    pub engine_type: String,
    /// Crates (by directory name) allowed to rename the engine, e.g. `compat`.
    pub alias_allowed_in: Vec<String>,
    /// Glob patterns for names that denote an engine; only `*` is special, and a pattern
    /// must match the whole identifier, case-sensitively.
    pub patterns: Vec<String>,
    /// Paths relative to the workspace root that are not checked.
    pub exclude: Vec<PathBuf>,
}

/// What is wrong with the configuration; every message names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration from the workspace manifest, `<root>/Cargo.toml`.
    pub fn load(root: &Path) -> Result<Config, Error> {
        Config::load_from(&root.join("Cargo.toml"))
    }

    /// Reads the configuration from the manifest at `manifest`.
    pub fn load_from(manifest: &Path) -> Result<Config, Error> {
        let manifest = manifest.to_path_buf();
        let text = fs::read_to_string(&manifest).map_err(|source| Error::Io {
            path: manifest.clone(),
            source,
        })?;
        Config::parse(&text).map_err(|problem| Error::Config { manifest, problem })
    }

    /// Parses the configuration out of the text of a root manifest.
    pub fn parse(manifest: &str) -> Result<Config, ConfigError> {
        let manifest: toml::Table = manifest
            .parse()
            .map_err(|e| ConfigError(format!("the manifest is not valid TOML: {e}")))?;
        let table = manifest
            .get("workspace")
            .and_then(|w| w.get("metadata"))
            .and_then(|m| m.get("ssot-check"))
            .ok_or_else(|| {
                ConfigError(format!(
                    "missing table {TABLE}; add it with the keys {}",
                    KEYS.join(", ")
                ))
            })?;
        let table = table.as_table().ok_or_else(|| {
            ConfigError(format!(
                "{TABLE} must be a table, found {}",
                article(table.type_str())
            ))
        })?;
        if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ConfigError(format!(
                "unknown key `{unknown}` in {TABLE}; expected only {}",
                KEYS.join(", ")
            )));
        }

        let patterns = string_list(table, "patterns")?;
        if patterns.is_empty() {
            return Err(ConfigError(format!(
                "key `patterns` in {TABLE} is empty, so the check would find nothing; list at \
                 least one pattern such as \"*ExecutionEngine*\""
            )));
        }
        let exclude = string_list(table, "exclude")?;
        if let Some(bad) = exclude.iter().find(|p| !is_plain_relative(Path::new(p))) {
            return Err(ConfigError(format!(
                "key `exclude` in {TABLE} has `{bad}`, which is not a path relative to the \
                 workspace root (no leading `/`, no `..`)"
            )));
        }
        Ok(Config {
            engine_crate: string(table, "engine-crate")?,
            engine_type: string(table, "engine-type")?,
            alias_allowed_in: string_list(table, "alias-allowed-in")?,
            patterns,
            exclude: exclude.into_iter().map(PathBuf::from).collect(),
        })
    }

    /// Whether `name` denotes an engine: it is the engine type or matches a pattern.
    pub fn is_engine_name(&self, name: &str) -> bool {
        name == self.engine_type || self.patterns.iter().any(|p| glob_matches(p, name))
    }

    /// The Rust path of the engine type, e.g. `execution_engine::UserExecutionEngine`.
    pub(super) fn engine_path(&self) -> String {
        format!(
            "{}::{}",
            self.engine_crate.replace('-', "_"),
            self.engine_type
        )
    }

    /// The crates allowed to rename the engine, for messages: "`compat`" or "no crate".
    pub(super) fn alias_crates(&self) -> String {
        if self.alias_allowed_in.is_empty() {
            "no crate".to_owned()
        } else {
            let names: Vec<String> = self
                .alias_allowed_in
                .iter()
                .map(|c| format!("`{c}`"))
                .collect();
            names.join(", ")
        }
    }
}

/// Reads a required, non-empty string key.
fn string(table: &toml::Table, key: &str) -> Result<String, ConfigError> {
    match table.get(key) {
        None => Err(missing(key)),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(toml::Value::String(_)) => Err(ConfigError(format!(
            "key `{key}` in {TABLE} is empty; it must name {}",
            meaning(key)
        ))),
        Some(other) => Err(ConfigError(format!(
            "key `{key}` in {TABLE} must be a string naming {}, found {}",
            meaning(key),
            article(other.type_str())
        ))),
    }
}

/// Reads a required list of strings (the list itself may be empty).
fn string_list(table: &toml::Table, key: &str) -> Result<Vec<String>, ConfigError> {
    let value = table.get(key).ok_or_else(|| missing(key))?;
    let items = value.as_array().ok_or_else(|| {
        ConfigError(format!(
            "key `{key}` in {TABLE} must be a list of strings, found {}",
            article(value.type_str())
        ))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
            Some(_) => Err(ConfigError(format!(
                "key `{key}` in {TABLE} has an empty string at position {}",
                i + 1
            ))),
            None => Err(ConfigError(format!(
                "key `{key}` in {TABLE} must be a list of strings, but item {} is {}",
                i + 1,
                article(item.type_str())
            ))),
        })
        .collect()
}

/// The error of a required key that is absent.
fn missing(key: &str) -> ConfigError {
    ConfigError(format!(
        "missing key `{key}` in {TABLE}; it must name {}",
        meaning(key)
    ))
}

/// What each key means, so that an error about it says what to write.
fn meaning(key: &str) -> &'static str {
    match key {
        "engine-crate" => "the only crate allowed to define the engine, e.g. \"execution-engine\"",
        "engine-type" => "the one engine type, e.g. \"UserExecutionEngine\"",
        "alias-allowed-in" => "the crates allowed to rename the engine, e.g. [\"compat\"]",
        "patterns" => "the glob patterns of engine names, e.g. [\"*ExecutionEngine*\"]",
        "exclude" => "the paths to skip, relative to the workspace root, e.g. [\"xtask/fixtures\"]",
        _ => "a value",
    }
}

/// "an array", "a string": TOML type names with their article.
fn article(type_str: &str) -> String {
    let an = type_str.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_str}", if an { "an" } else { "a" })
}

/// Whether `path` stays under the directory it is relative to: no root, no `..`.
fn is_plain_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Whether `name` matches `pattern` as a whole, where `*` matches any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let middle_and_last: Vec<&str> = pieces.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        // No `*` at all: the pattern is a plain name.
        return rest.is_empty();
    };
    // Taking the leftmost match of each middle piece leaves the most room for the rest, so
    // a greedy scan is exact for patterns whose only special character is `*`.
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}
