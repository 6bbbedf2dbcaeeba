//! Settings that need more than clap's parsers: each reads `ServeArgs` and says what is
//! wrong in a [`ConfigError`].

use std::time::Duration;

use secrets::url::{Scheme, redacted};

use super::{ConfigError, NO_OTLP, Otlp, ServeArgs};

/// What `--broker` takes besides `in-process`: Redis over TCP, over TLS, or a Unix socket.
pub(super) const BROKER_SCHEMES: &[Scheme] = &[
    Scheme::with_host("redis"),
    Scheme::with_host("rediss"),
    Scheme::with_host_or_path("redis+unix"),
];
/// What `--store` takes besides `none`. A Postgres URL may leave its host to libpq's
/// default (`postgres:///agents`, a local socket).
const STORE_SCHEMES: &[Scheme] = &[
    Scheme::with_host_or_path("sqlite"),
    Scheme::with_host_or_path("postgres"),
    Scheme::with_host_or_path("postgresql"),
];
/// What `--otlp-endpoint` and `--llm-base-url` take.
const HTTP_SCHEMES: &[Scheme] = &[Scheme::with_host("http"), Scheme::with_host("https")];

/// The `llm` agent's settings, when both its URL and its model are given.
pub(super) fn llm(args: &ServeArgs) -> Result<Option<llm_agent::LlmConfig>, ConfigError> {
    match (&args.llm_base_url, &args.llm_model) {
        (None, None) => Ok(None),
        (Some(url), Some(model)) => {
            secrets::url::check(url, HTTP_SCHEMES).map_err(|why| {
                ConfigError::Llm(format!(
                    "--llm-base-url (LLM_BASE_URL) {:?} is not a model API's root ({why}): use \
                     http://host:port/v1 or https://host/v1",
                    redacted(url)
                ))
            })?;
            let mut llm = llm_agent::LlmConfig::new(url.clone(), model.clone());
            llm.api_key = args.llm_api_key.clone().map(llm_agent::Secret::new);
            llm.max_turns = args.llm_max_turns;
            llm.max_tokens = args.llm_max_tokens;
            let prompt = llm_agent::read_system_prompt(args.llm_system_prompt.as_deref());
            llm.system_prompt = prompt.map_err(ConfigError::Llm)?;
            llm.validate()
                .map_err(|e| ConfigError::Llm(e.to_string()))?;
            Ok(Some(llm))
        }
        _ => Err(ConfigError::Llm(
            "the llm agent needs both --llm-base-url (LLM_BASE_URL) and --llm-model (LLM_MODEL)"
                .into(),
        )),
    }
}

/// Reads each `--mcp-server`, with the bearer token of a server over HTTP from its
/// `AGENT_SERVER_MCP_TOKEN_NAME` (an environment variable only: a secret on the command line
/// or in a file is easier to leak), and the environment and working directory of a server
/// that runs a command (`--mcp-env`, `--mcp-pass-env`, `--mcp-cwd`).
pub(super) fn mcp_servers(args: &ServeArgs) -> Result<Vec<mcp_tools::McpServerSpec>, ConfigError> {
    let read = |value: &String| {
        let spec = mcp_tools::McpServerSpec::parse(value)?;
        let variable = mcp_tools::token_variable(&spec.name);
        match std::env::var(&variable) {
            Ok(token) => spec.with_token(&variable, &token),
            Err(std::env::VarError::NotPresent) => Ok(spec),
            Err(std::env::VarError::NotUnicode(_)) => Err(mcp_tools::SpecError::Token {
                variable,
                reason: "the token is not UTF-8",
            }),
        }
    };
    let mut specs = args
        .mcp_server
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Mcp(e.to_string()))?;
    mcp_processes(args, &mut specs)?;
    Ok(specs)
}

/// Gives the servers of `specs` what `--mcp-env`, `--mcp-pass-env` and `--mcp-cwd` say. An
/// error never shows a `--mcp-env` entry's text, which holds a secret (or part of one, when a
/// `;` in it split it).
fn mcp_processes(
    args: &ServeArgs,
    specs: &mut [mcp_tools::McpServerSpec],
) -> Result<(), ConfigError> {
    for (index, entry) in args.mcp_env.iter().enumerate() {
        let read = entry
            .split_once(':')
            .and_then(|(name, rest)| Some((name.trim(), rest.split_once('=')?)));
        let Some((name, (var, value))) = read else {
            return Err(ConfigError::Mcp(format!(
                "--mcp-env (AGENT_SERVER_MCP_ENV): entry {} of {} is not NAME:VAR=VALUE (the entry \
                 is not shown, as it may hold a secret; a `;` in a value splits it: give such a \
                 value with --mcp-pass-env)",
                index + 1,
                args.mcp_env.len()
            )));
        };
        let var = var.trim();
        server(specs, "--mcp-env", name, var)?
            .set_env(var, value)
            .map_err(|e| ConfigError::Mcp(e.to_string()))?;
    }
    for entry in &args.mcp_pass_env {
        let Some((name, var)) = entry.split_once(':') else {
            return Err(ConfigError::Mcp(format!(
                "--mcp-pass-env (AGENT_SERVER_MCP_PASS_ENV) {entry:?} is not NAME:VAR, for \
                 example github:GITHUB_PERSONAL_ACCESS_TOKEN"
            )));
        };
        let (name, var) = (name.trim(), var.trim());
        server(specs, "--mcp-pass-env", name, var)?
            .pass_env(var)
            .map_err(|e| ConfigError::Mcp(e.to_string()))?;
    }
    for entry in &args.mcp_cwd {
        let Some((name, dir)) = entry.split_once('=') else {
            return Err(ConfigError::Mcp(format!(
                "--mcp-cwd (AGENT_SERVER_MCP_CWD) {entry:?} is not NAME=PATH, for example \
                 fs=/srv/files"
            )));
        };
        let name = name.trim();
        server(specs, "--mcp-cwd", name, dir)?
            .set_cwd(std::path::Path::new(dir.trim()))
            .map_err(|e| ConfigError::Mcp(e.to_string()))?;
    }
    Ok(())
}

/// The server of `specs` named `name`, which `flag`'s entry `name` + `what` (a variable's name
/// or a directory, never a value) refers to.
fn server<'a>(
    specs: &'a mut [mcp_tools::McpServerSpec],
    flag: &str,
    name: &str,
    what: &str,
) -> Result<&'a mut mcp_tools::McpServerSpec, ConfigError> {
    let names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
    let servers = if names.is_empty() {
        "there are none".to_owned()
    } else {
        format!("the servers are: {}", names.join(", "))
    };
    let separator = if flag == "--mcp-cwd" { '=' } else { ':' };
    let refused = ConfigError::Mcp(format!(
        "{flag} {name}{separator}{what}: no --mcp-server is named {name:?} ({servers})"
    ));
    specs
        .iter_mut()
        .find(|spec| spec.name == name)
        .ok_or(refused)
}

/// Reads `--otlp-endpoint`: an `http://` or `https://` URL with a host; spans go to its
/// `/v1/traces` (as with OpenTelemetry's own `OTEL_EXPORTER_OTLP_ENDPOINT`), or to the URL
/// itself when it already ends so.
pub(super) fn otlp(args: &ServeArgs) -> Result<Option<Otlp>, ConfigError> {
    let Some(endpoint) = &args.otlp_endpoint else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        ConfigError::Otlp(format!(
            "--otlp-endpoint (AGENT_SERVER_OTLP_ENDPOINT) {:?} {why}",
            redacted(endpoint)
        ))
    };
    if let Err(why) = secrets::url::check(endpoint, HTTP_SCHEMES) {
        return Err(refuse(&format!(
            "is not a collector's address ({why}): give its OTLP/HTTP address, http://collector:4318"
        )));
    }
    if endpoint.contains(['?', '#', ' ']) {
        return Err(refuse(
            "holds a query, a fragment or a space; give the collector's address only",
        ));
    }
    if !cfg!(feature = "otlp") {
        return Err(ConfigError::Otlp(NO_OTLP.to_owned()));
    }
    let base = endpoint.trim_end_matches('/');
    // The collector's address, or (as people often paste) its traces URL itself.
    let traces_url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    Ok(Some(Otlp {
        traces_url,
        protocol: args.otlp_protocol,
    }))
}

/// The broker's client certificate and key: both or neither.
pub(super) fn client_identity(
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Result<Option<redis_broker::ClientIdentity>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert_file), Some(key_file)) => Ok(Some(redis_broker::ClientIdentity {
            cert_file,
            key_file,
        })),
        (Some(_), None) => Err(ConfigError::HalfClientIdentity("--broker-client-key")),
        (None, Some(_)) => Err(ConfigError::HalfClientIdentity("--broker-client-cert")),
    }
}

/// Reads a `--store` value: `None` for `none`.
pub(super) fn store_url(value: &str) -> Result<Option<String>, ConfigError> {
    if value == "none" {
        return Ok(None);
    }
    let refused = |why| ConfigError::Store {
        url: redacted(value),
        why,
    };
    // sqlx reads what follows `sqlite:` as a file path, not a URL host (`sqlite://my data.db`
    // is a file with a space in its name), so only its emptiness is checked here.
    if let Some(path) = value.strip_prefix("sqlite:") {
        if path.trim_matches('/').is_empty() {
            return Err(refused(secrets::url::UrlError::Empty("sqlite".into())));
        }
        return Ok(Some(value.to_owned()));
    }
    secrets::url::check(value, STORE_SCHEMES).map_err(refused)?;
    Ok(Some(value.to_owned()))
}

/// The identity provider's settings of `args` (the public key file read now).
pub(super) fn identity(args: &ServeArgs) -> Result<crate::auth::Identity, ConfigError> {
    let public_key_pem = match &args.jwt_public_key {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            ConfigError::Identity(format!(
                "cannot read --jwt-public-key (AGENT_SERVER_JWT_PUBLIC_KEY) {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let identity = crate::auth::Identity {
        secret: None,
        public_key_pem,
        jwks_url: args.jwks_url.clone(),
        jwks_min_refresh: Duration::from_secs(args.jwks_min_refresh_secs),
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
    };
    if identity.is_configured() {
        // Refuses a key file that is no key, or a JWKS URL that is no URL, at start.
        crate::auth::Auth::from_identity(&identity)
            .map_err(|e| ConfigError::Identity(e.to_string()))?;
    }
    Ok(identity)
}
