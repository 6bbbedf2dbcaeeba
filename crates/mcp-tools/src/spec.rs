//! `--mcp-server NAME=COMMAND [ARGS...]`, read and checked, and the bearer token of a server
//! over HTTP (`AGENT_SERVER_MCP_TOKEN_NAME`).

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
            },
            token: None,
        })
    }

    /// The spec with `token` (read from `variable`, named in errors) as its bearer token:
    /// 1 to 4096 characters of visible ASCII, for a server over HTTP only (a command's
    /// secrets go in its own environment, which it inherits).
    pub fn with_token(mut self, variable: &str, token: &str) -> Result<Self, SpecError> {
        let refuse = |reason| SpecError::Token {
            variable: variable.to_owned(),
            reason,
        };
        if matches!(self.target, Target::Stdio { .. }) {
            return Err(refuse(
                "a bearer token is for a server over HTTP; this server runs a command (give it \
                 its secrets in its environment)",
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
}
