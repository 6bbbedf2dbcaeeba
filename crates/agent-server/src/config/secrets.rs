//! The server's secrets, gathered from its settings and its environment, for the scrubber
//! that removes them from everything the server sends out (see the `secrets` crate).
//!
//! A secret is: the JWT secret; the `llm` agent's API key; each MCP server's bearer token
//! and each variable the configuration hands an MCP server (`--mcp-env`, `--mcp-pass-env`)
//! whose name says it is sensitive or that `--secret-env` names; the password
//! in the broker's and the store's URL (user-info or a `password` query parameter); the
//! value of each variable named by `--secret-env`; and the value of every variable of the
//! server's own environment whose name marks it as sensitive (`*_TOKEN`, `*_SECRET`,
//! `*PASSWORD*`, `*API_KEY*`, ...: the key list the event redaction uses).

use secrets::{Secrets, TooShort};

use super::{ConfigError, ServeArgs};

/// What was gathered: the secrets, and those too short to scrub (the server warns of each).
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub(crate) secrets: Secrets,
    pub(crate) too_short: Vec<TooShort>,
}

impl Gathered {
    fn add(&mut self, source: &str, value: &str) {
        if let Err(short) = self.secrets.add(source, value) {
            self.too_short.push(short);
        }
    }

    /// The secrets of `url`, if it holds any: its user-info's password and the value of
    /// each secret query parameter, as written and decoded; the same parts that
    /// `agent-server config` and error messages hide (`secrets::url` owns the list).
    fn add_url_passwords(&mut self, source: &str, url: &str) {
        let source = format!("the password in {source}");
        for secret in secrets::url::secrets_in(url) {
            self.add(&source, &secret);
        }
    }
}

/// The secrets of the settings `args` (with the MCP servers already read from them) and of
/// the process's environment. Fails when `--secret-env` names a variable that is not set.
pub(crate) fn gather(
    args: &ServeArgs,
    mcp: &[mcp_tools::McpServerSpec],
) -> Result<Gathered, ConfigError> {
    let mut gathered = Gathered::default();
    if let Some(secret) = &args.jwt_secret {
        gathered.add("the JWT secret (--jwt-secret)", secret);
    }
    if let Some(key) = &args.llm_api_key {
        gathered.add("the llm agent's API key (--llm-api-key)", key);
    }
    let marked = |name: &str| args.secret_env.iter().any(|marked| marked.trim() == name);
    let is_secret = |name: &str| core_context::redact::is_sensitive_key(name) || marked(name);
    for spec in mcp {
        for value in spec.secret_values(is_secret) {
            gathered.add(&format!("the MCP server {}'s settings", spec.name), value);
        }
    }
    let given_to_mcp = |name: &str| {
        mcp.iter().any(|spec| match &spec.target {
            mcp_tools::Target::Stdio { env, .. } => env.iter().any(|var| var.name() == name),
            mcp_tools::Target::Http { .. } => false,
        })
    };
    gathered.add_url_passwords("--broker", &args.broker);
    gathered.add_url_passwords("--store", &args.store);
    for name in &args.secret_env {
        let name = name.trim();
        match std::env::var(name) {
            Ok(value) => gathered.add(name, &value),
            // A variable only an MCP server's configuration sets was gathered above.
            Err(_) if given_to_mcp(name) => {}
            Err(_) => {
                return Err(ConfigError::SecretEnv(format!(
                    "--secret-env (AGENT_SERVER_SECRET_ENV) names {name:?}, which is neither set \
                     in the server's environment (as UTF-8) nor given to an MCP server with \
                     --mcp-env; set it or leave it out"
                )));
            }
        }
    }
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if core_context::redact::is_sensitive_key(name) {
            gathered.add(name, value);
        }
    }
    Ok(gathered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_found_in_user_info_and_query() {
        let table: &[(&str, &[&str])] = &[
            ("redis://:hunter2-long@127.0.0.1:6379", &["hunter2-long"]),
            (
                "postgres://app:p%40ss%2Fword-1@db/app",
                &["p@ss/word-1", "p%40ss%2Fword-1"],
            ),
            (
                "postgres://app@db/app?sslmode=require&password=from-the-query",
                &["from-the-query"],
            ),
            ("sqlite://agent-history.db", &[]),
            ("in-process", &[]),
            ("none", &[]),
        ];
        for (url, expected) in table {
            let mut gathered = Gathered::default();
            gathered.add_url_passwords("--store", url);
            let scrubber = secrets::Scrubber::new(&gathered.secrets);
            for password in *expected {
                let said = format!("connect failed for {password}");
                assert!(
                    !scrubber
                        .scrub(secrets::Site::Logs, &said)
                        .contains(password),
                    "{url}: {password} not a secret"
                );
            }
            assert_eq!(gathered.secrets.is_empty(), expected.is_empty(), "{url}");
        }
        let mut gathered = Gathered::default();
        gathered.add_url_passwords("--store", "postgres://u:pw@h/db");
        assert_eq!(gathered.too_short.len(), 1);
        assert!(gathered.too_short[0].to_string().contains("--store"));
    }
}
