//! `--mcp-server NAME=COMMAND [ARGS...]`, read and checked.

/// A server to use: its name (in its tools' names) and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerSpec {
    /// 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `_` and `-`.
    pub name: String,
    /// How to reach it.
    pub target: Target,
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
        })
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
        };
        let http = |name: &str, url: &str| McpServerSpec {
            name: name.into(),
            target: Target::Http { url: url.into() },
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
}
