//! The environment a server's command starts with: a minimal one, never the agent-server's
//! own.
//!
//! The agent-server's environment holds its secrets (the JWT secret, the model's key), and a
//! server's tools can read their process's environment and hand it to the model (the
//! reference "everything" server's `get-env` does exactly that). So a command starts with
//! `env_clear()` and then only what a program needs to run ([`INHERITED_VARIABLES`], those
//! that are set), then what its configuration gives it: `--mcp-env NAME:VAR=VALUE` and
//! `--mcp-pass-env NAME:VAR` ([`EnvVar`]), and `--mcp-cwd NAME=PATH` as its working
//! directory. The MCP SDKs start their servers the same way (the TypeScript SDK's
//! `getDefaultEnvironment`).

use std::path::Path;

/// The agent-server's variables a server's command inherits, when they are set: what the
/// MCP SDKs pass (`HOME`, `LOGNAME`, `PATH`, `SHELL`, `TERM`, `USER` on Unix), the locale
/// and time zone (`LANG`, `LC_ALL`, `TZ`), and where temporary files go (`TMPDIR`). That is
/// enough for `npx -y @modelcontextprotocol/server-everything` to fetch and run a server (npm
/// keeps its cache under `HOME`); anything more (a proxy, a private CA's
/// `NODE_EXTRA_CA_CERTS`, `npm_config_*`) is passed by name with `--mcp-pass-env`.
#[cfg(not(windows))]
pub const INHERITED_VARIABLES: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ",
];

/// The agent-server's variables a server's command inherits, when they are set: the MCP
/// SDKs' list for Windows, and the time zone.
#[cfg(windows)]
pub const INHERITED_VARIABLES: &[&str] = &[
    "APPDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "LOCALAPPDATA",
    "PATH",
    "PROCESSOR_ARCHITECTURE",
    "SYSTEMDRIVE",
    "SYSTEMROOT",
    "TEMP",
    "USERNAME",
    "USERPROFILE",
    "PROGRAMFILES",
    "TZ",
];

/// Where a variable of a server's environment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource {
    /// Given with its value: `--mcp-env NAME:VAR=VALUE`.
    Set,
    /// The agent-server's own variable, passed through: `--mcp-pass-env NAME:VAR`.
    Passed,
}

impl EnvSource {
    /// The flag that gives such a variable, for messages.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Set => "--mcp-env",
            Self::Passed => "--mcp-pass-env",
        }
    }
}

/// A variable a server's configuration puts in its environment. Its value is treated as a
/// secret (an API key, most often): its `Debug` says `<hidden>`.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    name: String,
    value: String,
    source: EnvSource,
}

impl EnvVar {
    /// The variable `name` (checked by [`is_variable_name`]) with `value`.
    pub(crate) fn new(name: &str, value: String, source: EnvSource) -> Self {
        Self {
            name: name.to_owned(),
            value,
            source,
        }
    }

    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it came from.
    pub fn source(&self) -> EnvSource {
        self.source
    }

    /// The value, to set.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("value", &format_args!("<hidden>"))
            .finish()
    }
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Gives `command` the environment of a server's command: the inherited variables that are
/// set, then `env` (which may override them: `--mcp-env fs:PATH=/opt/bin`), and `cwd`.
pub(crate) fn prepare(command: &mut tokio::process::Command, env: &[EnvVar], cwd: Option<&Path>) {
    command.env_clear();
    for name in INHERITED_VARIABLES {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env.iter().map(|var| (var.name(), var.expose())));
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names() {
        let table = [
            ("GITHUB_TOKEN", true),
            ("_x1", true),
            ("a", true),
            ("", false),
            ("1X", false),
            ("MY-VAR", false),
            ("A=B", false),
            ("A B", false),
            ("caf\u{e9}", false),
        ];
        for (name, valid) in table {
            assert_eq!(is_variable_name(name), valid, "{name:?}");
        }
    }

    #[test]
    fn values_are_never_shown() {
        let var = EnvVar::new("API_KEY", "sk-s3cret".into(), EnvSource::Set);
        let shown = format!("{var:?}");
        assert!(
            shown.contains("API_KEY") && shown.contains("<hidden>") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
