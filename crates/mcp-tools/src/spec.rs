//! `--mcp-server NAME=COMMAND [ARGS...]`, read and checked, with the bearer token of a server
//! over HTTP (`AGENT_SERVER_MCP_TOKEN_NAME`) and the environment and working directory of a
//! server that runs a command (`--mcp-env`, `--mcp-pass-env`, `--mcp-cwd`).

use std::path::{Path, PathBuf};

use crate::env::{EnvSource, EnvVar, is_variable_name};

/// A server to use: its name (in its tools' names) and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerSpec {
    /// 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `_` and `-`.
    pub name: String,
    /// How to reach it.
    pub target: Target,
    /// The bearer token sent to a server over HTTP (`Authorization: Bearer …`), if it needs one.
    pub token: Option<Token>,
}

/// A bearer token: visible ASCII, never shown (its `Debug` says `<hidden>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// The environment variable that holds the bearer token of the server `name`:
/// `AGENT_SERVER_MCP_TOKEN_` and the name in capitals, `-` as `_`.
pub fn token_variable(name: &str) -> String {
    format!(
        "AGENT_SERVER_MCP_TOKEN_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// How a server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A command run by the server, speaking MCP over its stdio.
    Stdio {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// The variables its configuration sets, over the few it inherits
        /// ([`INHERITED_VARIABLES`](crate::INHERITED_VARIABLES)); in the order given.
        env: Vec<EnvVar>,
        /// Its working directory (absolute); `None`: the agent-server's.
        cwd: Option<PathBuf>,
    },
    /// A server already running, over MCP's streamable HTTP at this URL.
    Http {
        /// `http://` or `https://`.
        url: String,
    },
}

/// A server's name at most, so that `mcp_NAME_TOOL` has room for the tool in 64 characters.
pub const MAX_NAME_LEN: usize = 24;

/// Why a `--mcp-server` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not `NAME=COMMAND`.
    #[error(
        "--mcp-server {0:?} must be NAME=COMMAND [ARGS...], for example \
         everything=npx -y @modelcontextprotocol/server-everything"
    )]
    Shape(String),
    /// The name breaks the rules.
    #[error("--mcp-server name {0:?} must be 1 to 24 of a-z, 0-9, _ and -")]
    Name(String),
    /// The command cannot be split into words.
    #[error(
        "--mcp-server {name}: the command {command:?} cannot be split into words (an unclosed quote?)"
    )]
    Words {
        /// The server.
        name: String,
        /// Its command.
        command: String,
    },
    /// A token that cannot be sent, or one for a server that is not reached over HTTP.
    #[error("{variable}: {reason}")]
    Token {
        /// The variable that held it.
        variable: String,
        /// What is wrong (never the token itself).
        reason: &'static str,
    },
    /// A `--mcp-env`, `--mcp-pass-env` or `--mcp-cwd` that cannot be used.
    #[error("{flag} {entry}: {reason}")]
    Setting {
        /// The flag.
        flag: &'static str,
        /// `NAME:VAR` or `NAME=PATH` (never a variable's value).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A URL that names no host or holds a space.
    #[error(
        "--mcp-server {name}: {url:?} is not a URL of an MCP server (http(s)://host[:port]/path)"
    )]
    Url {
        /// The server.
        name: String,
        /// Its URL.
        url: String,
    },
}

impl McpServerSpec {
    /// Reads `NAME=COMMAND [ARGS...]`; the command's words are split as a POSIX shell would
    /// (quotes group, nothing is expanded).
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let Some((name, command)) = value.split_once('=') else {
            return Err(SpecError::Shape(value.to_owned()));
        };
        let (name, command) = (name.trim(), command.trim());
        let valid = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(SpecError::Name(name.to_owned()));
        }
        if let Some(rest) = ["http://", "https://"]
            .iter()
            .find_map(|scheme| command.strip_prefix(scheme))
        {
            if rest.is_empty()
                || rest.starts_with(['/', ':'])
                || command.contains(char::is_whitespace)
            {
                return Err(SpecError::Url {
                    name: name.to_owned(),
                    url: command.to_owned(),
                });
            }
            return Ok(Self {
                name: name.to_owned(),
                target: Target::Http {
                    url: command.to_owned(),
                },
                token: None,
            });
        }
        let words = shlex::split(command).ok_or_else(|| SpecError::Words {
            name: name.to_owned(),
            command: command.to_owned(),
        })?;
        let Some((program, args)) = words.split_first() else {
            return Err(SpecError::Shape(value.to_owned()));
        };
        Ok(Self {
            name: name.to_owned(),
            target: Target::Stdio {
                program: program.clone(),
                args: args.to_vec(),
                env: Vec::new(),
                cwd: None,
            },
            token: None,
        })
    }

    /// The spec with `token` (read from `variable`, named in errors) as its bearer token:
    /// 1 to 4096 characters of visible ASCII, for a server over HTTP only (a command gets
    /// its secrets in its environment: `--mcp-env NAME:VAR=VALUE` or `--mcp-pass-env NAME:VAR`).
    pub fn with_token(mut self, variable: &str, token: &str) -> Result<Self, SpecError> {
        let refuse = |reason| SpecError::Token {
            variable: variable.to_owned(),
            reason,
        };
        if matches!(self.target, Target::Stdio { .. }) {
            return Err(refuse(
                "a bearer token is for a server over HTTP; this server runs a command (give it \
                 its secrets in its environment with --mcp-env NAME:VAR=VALUE or \
                 --mcp-pass-env NAME:VAR)",
            ));
        }
        if !(1..=4096).contains(&token.len()) {
            return Err(refuse("the token must be 1 to 4096 characters"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                "the token holds a space, a control character or a non-ASCII character",
            ));
        }
        self.token = Some(Token(token.to_owned()));
        Ok(self)
    }

    /// Sets the variable `var` to `value` in the environment of this server's command
    /// (`--mcp-env NAME:VAR=VALUE`; errors name `var`, never `value`).
    pub fn set_env(&mut self, var: &str, value: &str) -> Result<(), SpecError> {
        let env = self.env_of(var, EnvSource::Set)?;
        env.push(EnvVar::new(var, value.to_owned(), EnvSource::Set));
        Ok(())
    }

    /// Passes the agent-server's own variable `var`, which must be set, to this server's
    /// command (`--mcp-pass-env NAME:VAR`). Its value is read now: the command gets the same
    /// value at every start.
    pub fn pass_env(&mut self, var: &str) -> Result<(), SpecError> {
        let entry = format!("{}:{var}", self.name);
        let env = self.env_of(var, EnvSource::Passed)?;
        let value = std::env::var(var).map_err(|e| SpecError::Setting {
            flag: EnvSource::Passed.flag(),
            entry,
            reason: match e {
                std::env::VarError::NotPresent => {
                    format!("{var} is not set in the agent-server's environment")
                }
                std::env::VarError::NotUnicode(_) => format!("the value of {var} is not UTF-8"),
            },
        })?;
        env.push(EnvVar::new(var, value, EnvSource::Passed));
        Ok(())
    }

    /// The variables of this server's command, to which `var` (given by `source`'s flag) may
    /// be added: `var` is a variable name (`[A-Za-z_][A-Za-z0-9_]*`) not given yet, and the
    /// server runs a command.
    fn env_of(&mut self, var: &str, source: EnvSource) -> Result<&mut Vec<EnvVar>, SpecError> {
        let name = &self.name;
        let refuse = |reason: String| SpecError::Setting {
            flag: source.flag(),
            entry: format!("{name}:{var}"),
            reason,
        };
        if !is_variable_name(var) {
            return Err(refuse(format!(
                "{var:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        let Target::Stdio { env, .. } = &mut self.target else {
            return Err(refuse(reached_over_http(name)));
        };
        if let Some(given) = env.iter().find(|given| given.name() == var) {
            return Err(refuse(format!(
                "{var} is already given to this server by {}",
                given.source().flag()
            )));
        }
        Ok(env)
    }

    /// Makes `dir` (an existing directory, made absolute) this server's working directory;
    /// the server must run a command, and be given one directory.
    pub fn set_cwd(&mut self, dir: &Path) -> Result<(), SpecError> {
        let name = &self.name;
        let refuse = |reason: String| SpecError::Setting {
            flag: "--mcp-cwd",
            entry: format!("{name}={}", dir.display()),
            reason,
        };
        let Target::Stdio { cwd, .. } = &mut self.target else {
            return Err(refuse(reached_over_http(name)));
        };
        if cwd.is_some() {
            return Err(refuse(
                "this server is given a working directory twice".into(),
            ));
        }
        let absolute = std::fs::canonicalize(dir)
            .map_err(|e| refuse(format!("the directory cannot be used: {e}")))?;
        if !absolute.is_dir() {
            return Err(refuse("it is not a directory".into()));
        }
        *cwd = Some(absolute);
        Ok(())
    }

    /// The values this spec holds that must never leave the process: its bearer token, and
    /// the value of each variable its configuration puts in its command's environment (given
    /// with `--mcp-env` or passed with `--mcp-pass-env`) whose name `is_secret` picks (the
    /// server picks names that say they are sensitive, and those the operator marks).
    pub fn secret_values(&self, is_secret: impl Fn(&str) -> bool) -> Vec<&str> {
        let env = match &self.target {
            Target::Stdio { env, .. } => env.as_slice(),
            Target::Http { .. } => &[],
        };
        self.token
            .iter()
            .map(Token::expose)
            .chain(
                env.iter()
                    .filter(|var| is_secret(var.name()))
                    .map(EnvVar::expose),
            )
            .collect()
    }
}

/// Why a setting of a command's process does not apply to the server `name`.
fn reached_over_http(name: &str) -> String {
    format!(
        "the MCP server {name} is reached over HTTP, and this setting is for a server that \
         runs a command (a server over HTTP gets a bearer token from {variable})",
        variable = token_variable(name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_or_refused_with_the_reason() {
        let spec = |name: &str, program: &str, args: &[&str]| McpServerSpec {
            name: name.into(),
            target: Target::Stdio {
                program: program.into(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                env: Vec::new(),
                cwd: None,
            },
            token: None,
        };
        let http = |name: &str, url: &str| McpServerSpec {
            name: name.into(),
            target: Target::Http { url: url.into() },
            token: None,
        };
        let long = format!("{}=node x.js", "n".repeat(25));
        let table: &[(&str, Result<McpServerSpec, &str>)] = &[
            (
                "everything=npx -y @modelcontextprotocol/server-everything",
                Ok(spec(
                    "everything",
                    "npx",
                    &["-y", "@modelcontextprotocol/server-everything"],
                )),
            ),
            (
                "fs = node 'my server.js' --root \"/tmp/a b\"",
                Ok(spec("fs", "node", &["my server.js", "--root", "/tmp/a b"])),
            ),
            ("no-equals-sign", Err("must be NAME=COMMAND")),
            ("=node x.js", Err("name \"\" must be 1 to 24")),
            ("Big=node x.js", Err("name \"Big\" must be")),
            (&long, Err("must be 1 to 24")),
            ("x=", Err("must be NAME=COMMAND")),
            ("x=node 'unclosed", Err("cannot be split into words")),
            (
                "web=https://mcp.example/mcp",
                Ok(http("web", "https://mcp.example/mcp")),
            ),
            (
                "local = http://127.0.0.1:3001/mcp",
                Ok(http("local", "http://127.0.0.1:3001/mcp")),
            ),
            ("web=https://", Err("is not a URL of an MCP server")),
            ("web=http://:80/mcp", Err("is not a URL of an MCP server")),
            ("web=https://a b/mcp", Err("is not a URL of an MCP server")),
        ];
        for (value, expected) in table {
            match (McpServerSpec::parse(value), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{value}"),
                (Err(e), Err(says)) => assert!(e.to_string().contains(says), "{value}: {e}"),
                (got, _) => panic!("{value}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let web = || McpServerSpec::parse("web=https://mcp.example/mcp").unwrap();
        let command = || McpServerSpec::parse("fs=node fs.js").unwrap();
        let variable = token_variable("my-web");
        assert_eq!(variable, "AGENT_SERVER_MCP_TOKEN_MY_WEB");
        let long = "t".repeat(4097);
        let table: &[(McpServerSpec, &str, Result<(), &str>)] = &[
            (web(), "ghp_s3cret-token.value", Ok(())),
            (web(), "", Err("1 to 4096 characters")),
            (web(), &long, Err("1 to 4096 characters")),
            (web(), "two words", Err("holds a space")),
            (web(), "line\nbreak", Err("control character")),
            (web(), "caf\u{e9}", Err("non-ASCII")),
            (command(), "ghp_s3cret", Err("is for a server over HTTP")),
        ];
        for (spec, token, expected) in table {
            match (spec.clone().with_token(&variable, token), expected) {
                (Ok(spec), Ok(())) => {
                    assert_eq!(spec.token.as_ref().unwrap().expose(), *token);
                    let shown = format!("{spec:?}");
                    assert!(
                        !shown.contains(token) && shown.contains("<hidden>"),
                        "{shown}"
                    );
                }
                (Err(e), Err(says)) => {
                    let said = e.to_string();
                    assert!(said.starts_with(&variable) && said.contains(says), "{said}");
                    assert!(token.is_empty() || !said.contains(token), "{said}");
                }
                (got, _) => panic!("{token:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    /// What a spec's settings do: `Ok` with the names of its variables, or `Err` with how the
    /// error begins.
    type Outcome<'a> = Result<&'a [&'a str], &'a str>;

    /// A spec, the variables given to it (name, passed with `--mcp-pass-env`), the outcome.
    type EnvCase<'a> = (McpServerSpec, &'a [(&'a str, bool)], Outcome<'a>);

    /// A variable no test environment sets.
    const UNSET: &str = "AGENT_ENGINE_TEST_SURELY_UNSET_4711";

    #[test]
    fn environment_settings_are_checked_and_their_values_never_shown() {
        let command = || McpServerSpec::parse("fs=node fs.js").unwrap();
        let web = || McpServerSpec::parse("web=https://mcp.example/mcp").unwrap();
        // (variable, passed): set with `--mcp-env` to a secret-looking value, or passed.
        let table: &[EnvCase<'_>] = &[
            (command(), &[("API_KEY", false)], Ok(&["API_KEY"])),
            (
                command(),
                &[("API_KEY", false), ("PATH", true), ("_OTHER1", false)],
                Ok(&["API_KEY", "PATH", "_OTHER1"]),
            ),
            (
                command(),
                &[("1KEY", false)],
                Err("--mcp-env fs:1KEY: \"1KEY\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ),
            (
                command(),
                &[("MY-KEY", true)],
                Err("--mcp-pass-env fs:MY-KEY: \"MY-KEY\" is not a variable name"),
            ),
            (
                command(),
                &[("", false)],
                Err("--mcp-env fs:: \"\" is not a variable name"),
            ),
            (
                command(),
                &[(UNSET, true)],
                Err("--mcp-pass-env fs:AGENT_ENGINE_TEST_SURELY_UNSET_4711: \
                     AGENT_ENGINE_TEST_SURELY_UNSET_4711 is not set in the agent-server's environment"),
            ),
            (
                command(),
                &[("PATH", false), ("PATH", true)],
                Err("--mcp-pass-env fs:PATH: PATH is already given to this server by --mcp-env"),
            ),
            (
                web(),
                &[("API_KEY", false)],
                Err(
                    "--mcp-env web:API_KEY: the MCP server web is reached over HTTP, and this \
                     setting is for a server that runs a command (a server over HTTP gets a \
                     bearer token from AGENT_SERVER_MCP_TOKEN_WEB)",
                ),
            ),
            (
                web(),
                &[("PATH", true)],
                Err("--mcp-pass-env web:PATH: the MCP server web"),
            ),
        ];
        for (spec, vars, expected) in table {
            check_env(spec.clone(), vars, *expected);
        }
    }

    /// The value a test gives `var` with `--mcp-env`.
    fn given(var: &str) -> String {
        format!("value-of-{var}-s3cret")
    }

    /// Gives `spec` each of `vars` (name, passed) and checks the outcome: the variables and
    /// their values as its secrets, or the error; never a value shown.
    fn check_env(mut spec: McpServerSpec, vars: &[(&str, bool)], expected: Outcome<'_>) {
        let got = vars.iter().try_for_each(|(var, passed)| {
            if *passed {
                spec.pass_env(var)
            } else {
                spec.set_env(var, &given(var))
            }
        });
        match (got, expected) {
            (Ok(()), Ok(names)) => {
                let Target::Stdio { env, .. } = &spec.target else {
                    panic!("{spec:?} runs no command");
                };
                let got: Vec<&str> = env.iter().map(EnvVar::name).collect();
                assert_eq!(got, names);
                let values: Vec<String> = vars
                    .iter()
                    .map(|(var, passed)| match passed {
                        true => std::env::var(var).unwrap(),
                        false => given(var),
                    })
                    .collect();
                assert_eq!(spec.secret_values(|_| true), values);
                assert_eq!(spec.secret_values(|_| false), Vec::<&str>::new());
                assert!(!format!("{spec:?}").contains("s3cret"), "{spec:?}");
            }
            (Err(e), Err(says)) => {
                let said = e.to_string();
                assert!(
                    said.starts_with(says),
                    "{said:?} does not start with {says:?}"
                );
                assert!(!said.contains("s3cret"), "{said}");
            }
            (got, _) => panic!("{vars:?}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn working_directories_must_exist() {
        let dir = std::env::temp_dir();
        let absolute = std::fs::canonicalize(&dir).unwrap();
        let file = std::env::current_exe().unwrap();
        let missing = dir.join("agent-engine-no-such-directory");
        let command = || McpServerSpec::parse("fs=node fs.js").unwrap();
        let web = McpServerSpec::parse("web=https://mcp.example/mcp").unwrap();
        let table: &[(McpServerSpec, &[&Path], Result<(), &str>)] = &[
            (command(), &[&dir], Ok(())),
            (
                command(),
                &[&missing],
                Err("the directory cannot be used: "),
            ),
            (command(), &[&file], Err("it is not a directory")),
            (
                command(),
                &[&dir, &dir],
                Err("given a working directory twice"),
            ),
            (web, &[&dir], Err("the MCP server web is reached over HTTP")),
        ];
        for (spec, dirs, expected) in table {
            let mut spec = spec.clone();
            let got = dirs.iter().try_for_each(|dir| spec.set_cwd(dir));
            match (got, expected) {
                (Ok(()), Ok(())) => {
                    let Target::Stdio { cwd, .. } = &spec.target else {
                        panic!("{spec:?} runs no command");
                    };
                    assert_eq!(cwd.as_deref(), Some(absolute.as_path()));
                }
                (Err(e), Err(says)) => {
                    let said = e.to_string();
                    let entry = format!(
                        "--mcp-cwd {}={}: ",
                        spec.name,
                        dirs.last().unwrap().display()
                    );
                    assert!(said.starts_with(&entry) && said.contains(says), "{said}");
                }
                (got, _) => panic!("{dirs:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn secret_values_hold_the_token_too() {
        let web = McpServerSpec::parse("web=https://mcp.example/mcp")
            .unwrap()
            .with_token("AGENT_SERVER_MCP_TOKEN_WEB", "tok-1")
            .unwrap();
        assert_eq!(web.secret_values(|_| true), ["tok-1"]);
        let plain = McpServerSpec::parse("fs=node fs.js").unwrap();
        assert!(plain.secret_values(|_| true).is_empty());
    }
}
