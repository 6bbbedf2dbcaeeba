//! Server settings: `agent-server serve` flags, each with an `AGENT_SERVER_*` variable, and
//! the same settings in a TOML file named by `--config`.
//!
//! Precedence: flags > environment > file > defaults. [`ServeArgs`] is the one list of
//! settings: its clap attributes give each setting's flag, variable, file key (the field's
//! name), default and range, and the file's values go through the same parsers as flags do
//! ([`with_file`]). clap validates types and ranges (a zero limit or a non-number names the
//! flag, or the file's key, in its error); [`ServerConfig::from_args`] checks what clap cannot
//! (the secret's length, URLs, settings that only make sense together).
//! [`Parsed::effective_toml`] prints the settings in effect, secrets masked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use execution_engine::EngineConfig;
use ws_bridge::BridgeConfig;

mod file;
mod read;
mod secrets;
mod show;
#[cfg(test)]
mod tests;

pub use file::{Parsed, with_file};
use read::{identity, llm, mcp_servers, otlp, store_url};

/// The shortest JWT secret accepted, in bytes (HS256 wants at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How spans are encoded for an OpenTelemetry collector (OTLP/HTTP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// Protocol buffers (`application/x-protobuf`), OTLP's default.
    #[default]
    Protobuf,
    /// JSON (`application/json`).
    Json,
}

/// Tools a server registers beside the built-in ones.
#[derive(Clone, Default)]
pub struct ExtraTools {
    /// Tools registered as they are.
    pub tools: Vec<std::sync::Arc<dyn agent_registry::Tool>>,
    /// The MCP servers' tools, which come and go with their servers (filled at start from
    /// `mcp_servers`).
    pub mcp: Option<std::sync::Arc<mcp_tools::McpTools>>,
}

impl std::fmt::Debug for ExtraTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraTools")
            .field(
                "tools",
                &self.tools.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("mcp", &self.mcp)
            .finish()
    }
}

/// Why `--otlp-endpoint` cannot be used in a build without the `otlp` feature.
pub const NO_OTLP: &str = "this agent-server was built without OpenTelemetry export; build it with \
     `cargo build --release -p agent-server --features otlp`, or leave --otlp-endpoint unset";

/// Flags of `agent-server serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings, keyed by the flag's name with `_` for `-`
    /// (`max_runs_per_user = 5`); flags and environment variables override it.
    #[arg(long, env = "AGENT_SERVER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "AGENT_SERVER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// HS256 secret for JWTs (at least 32 bytes). Without it the server generates one and
    /// serves POST /dev/token for local use.
    #[arg(long, env = "AGENT_SERVER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// An identity provider's public key (PEM file: RSA for RS256 tokens, EC P-256 for
    /// ES256). With it (or --jwks-url) the server needs no secret and serves no dev tokens.
    #[arg(long, env = "AGENT_SERVER_JWT_PUBLIC_KEY", value_name = "PATH")]
    pub jwt_public_key: Option<PathBuf>,
    /// An identity provider's JWKS URL: tokens name their key with `kid`; the key set is
    /// cached and fetched again for an unknown `kid`, at most once per --jwks-min-refresh-secs.
    #[arg(long, env = "AGENT_SERVER_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Seconds between two fetches of the JWKS at the least.
    #[arg(long, env = "AGENT_SERVER_JWKS_MIN_REFRESH_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub jwks_min_refresh_secs: u64,
    /// Tokens must carry this issuer (`iss`).
    #[arg(long, env = "AGENT_SERVER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Tokens' audience (`aud`) must name this.
    #[arg(long, env = "AGENT_SERVER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Register the `synthetic` test and load agent.
    #[arg(long, env = "AGENT_SERVER_SYNTHETIC_AGENT")]
    pub synthetic_agent: bool,
    /// The agent legacy `user_message` / `chat` frames start.
    #[arg(long, env = "AGENT_SERVER_DEFAULT_AGENT", default_value = "assistant")]
    pub default_agent: String,
    /// Runs of one user executing at once.
    #[arg(long, env = "AGENT_SERVER_MAX_RUNS_PER_USER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_runs_per_user: u32,
    /// Runs of one user waiting for a slot before `too_many_runs`.
    #[arg(long, env = "AGENT_SERVER_MAX_QUEUED_RUNS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub max_queued_runs_per_user: u32,
    /// Engines (one per run, queued or running) one user may hold; more starts are refused
    /// with `too_many_engines`, so keep it at least runs + queued runs.
    #[arg(long, env = "AGENT_SERVER_MAX_ENGINES_PER_USER", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_engines_per_user: u32,
    /// Run time limit in seconds.
    #[arg(long, env = "AGENT_SERVER_RUN_TIMEOUT_SECS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_timeout_secs: u64,
    /// Time limit in seconds of a tool call whose tool sets none.
    #[arg(long, env = "AGENT_SERVER_TOOL_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub tool_timeout_secs: u64,
    /// Largest tool result in bytes (of its JSON text) that agents, models and clients get
    /// whole; a larger one is replaced by `{"truncated": true, "bytes": N, "preview": ...}`.
    #[arg(long, env = "AGENT_SERVER_TOOL_RESULT_MAX_BYTES", default_value_t = agent_registry::DEFAULT_MAX_RESULT_BYTES as u64, value_parser = clap::value_parser!(u64).range(1_024..=67_108_864))]
    pub tool_result_max_bytes: u64,
    /// Threads per user whose owner this node remembers (the oldest are forgotten first;
    /// with a store, the history still knows whose they are).
    #[arg(long, env = "AGENT_SERVER_MAX_THREADS_PER_USER", default_value_t = crate::sessions::MAX_THREADS_PER_USER as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_threads_per_user: u32,
    /// Open WebSocket connections per user.
    #[arg(long, env = "AGENT_SERVER_MAX_CONNECTIONS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_connections_per_user: u32,
    /// Largest client frame in bytes; bigger ones get `frame_too_large` (4x closes the socket).
    #[arg(long, env = "AGENT_SERVER_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1_024..=16_777_216))]
    pub max_frame_bytes: u32,
    /// `start_agent` requests per user per minute.
    #[arg(long, env = "AGENT_SERVER_START_RATE_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub start_rate_per_minute: u32,
    /// Events a connection may have queued before it is closed as a slow consumer.
    #[arg(long, env = "AGENT_SERVER_SEND_QUEUE_EVENTS", default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub send_queue_events: u32,
    /// Bytes a connection may have queued before it is closed as a slow consumer.
    #[arg(long, env = "AGENT_SERVER_SEND_QUEUE_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1_024..))]
    pub send_queue_bytes: u32,
    /// Events kept per user for resume.
    #[arg(long, env = "AGENT_SERVER_REPLAY_MAX_EVENTS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub replay_max_events: u32,
    /// Seconds an event is kept for resume.
    #[arg(long, env = "AGENT_SERVER_REPLAY_MAX_AGE_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub replay_max_age_secs: u64,
    /// Seconds without any frame from the client before the connection is closed.
    #[arg(long, env = "AGENT_SERVER_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub idle_timeout_secs: u64,
    /// Seconds between server pings.
    #[arg(long, env = "AGENT_SERVER_PING_INTERVAL_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub ping_interval_secs: u64,
    /// OpenAI-compatible API root for the `llm` agent (e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1`). The agent is served only when this and --llm-model are set.
    #[arg(long, env = "LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// API key for the `llm` agent (never logged).
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Model name for the `llm` agent.
    #[arg(long, env = "LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Model calls per `llm` run before it fails with `max_turns`.
    #[arg(long, env = "LLM_MAX_TURNS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub llm_max_turns: u32,
    /// Seconds runs may go on after a shutdown signal before they are cancelled.
    #[arg(long, env = "AGENT_SERVER_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_grace_secs: u64,
    /// Where users' streams live: `in-process` (one node, the default) or
    /// `redis://[:password@]host:port[/db]` (several nodes share users through Redis).
    #[arg(
        long,
        env = "AGENT_SERVER_BROKER",
        default_value = "in-process",
        hide_env_values = true
    )]
    pub broker: String,
    /// With a Redis broker: seconds a node's claim on a running run lasts unrenewed; a node
    /// that dies has its runs ended (`agent_error` `node_lost`) this long after.
    #[arg(long, env = "AGENT_SERVER_RUN_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub run_lease_secs: u64,
    /// Where threads, runs and their events are kept: `sqlite://file.db` (created if
    /// missing), `postgres://user@host/db` (many nodes share it), or `none`.
    #[arg(
        long,
        env = "AGENT_SERVER_STORE",
        default_value = "sqlite://agent-history.db",
        hide_env_values = true
    )]
    pub store: String,
    /// Threads not updated for this long are erased with their runs (`90d`, `12h`, ...).
    #[arg(long, env = "AGENT_SERVER_HISTORY_MAX_AGE", default_value = "90d", value_parser = humantime::parse_duration)]
    pub history_max_age: Duration,
    /// Threads kept per user; past it the oldest are erased.
    #[arg(long, env = "AGENT_SERVER_HISTORY_MAX_THREADS_PER_USER", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub history_max_threads_per_user: u64,
    /// Without --jwt-secret, serve POST /dev/token (a token for ANY user, to anyone who asks)
    /// on a non-loopback address too. Refused without this flag: only for trusted networks.
    #[arg(long, env = "AGENT_SERVER_DEV_TOKENS_ON_NETWORK")]
    pub dev_tokens_on_network: bool,
    /// Origins (`scheme://host[:port]`) whose pages may open sockets and call the HTTP API
    /// besides the server's own (`http://` + the Host the browser used), e.g.
    /// `https://chat.example.com` behind a proxy that terminates TLS; repeat the flag or separate
    /// with `,` or `;`. `*` allows every origin: unsafe, for development only. Requests without
    /// an Origin header (clients that are not browsers) are not affected.
    #[arg(
        long,
        env = "AGENT_SERVER_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Requests per minute one user may make to the HTTP API (/v1 and /agui together);
    /// beyond it 429 `rate_limited` with Retry-After.
    #[arg(long, env = "AGENT_SERVER_HTTP_RATE_PER_USER_PER_MINUTE", default_value_t = crate::http_guard::HttpRates::default().per_user_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_rate_per_user_per_minute: u32,
    /// Requests per minute one client address (the TCP peer: behind a proxy, the proxy) may
    /// make to the HTTP API (/v1 and /agui together).
    #[arg(long, env = "AGENT_SERVER_HTTP_RATE_PER_ADDRESS_PER_MINUTE", default_value_t = crate::http_guard::HttpRates::default().per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_rate_per_address_per_minute: u32,
    /// POST /dev/token requests per minute from one client address.
    #[arg(long, env = "AGENT_SERVER_DEV_TOKEN_RATE_PER_ADDRESS_PER_MINUTE", default_value_t = crate::http_guard::HttpRates::default().dev_token_per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub dev_token_rate_per_address_per_minute: u32,
    /// Frames a connection may send in a burst before it is closed as flooding (1008).
    #[arg(long, env = "AGENT_SERVER_FLOOD_BURST", default_value_t = crate::connection::FLOOD_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub flood_burst: u32,
    /// Seconds over which the flood burst refills.
    #[arg(long, env = "AGENT_SERVER_FLOOD_WINDOW_SECS", default_value_t = crate::connection::FLOOD_WINDOW.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub flood_window_secs: u64,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors);
    /// `RUST_LOG` sets the level (`info` by default).
    #[arg(long, env = "AGENT_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP address (`http://collector:4318`): the
    /// server's spans (connections, runs, sub-runs, tool calls) are exported to its
    /// `/v1/traces`. Off by default; needs a build with the `otlp` feature.
    #[arg(long, env = "AGENT_SERVER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// How spans are encoded for the collector: `protobuf` (OTLP's default) or `json`.
    #[arg(long, env = "AGENT_SERVER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::Protobuf)]
    pub otlp_protocol: OtlpProtocol,
    /// An MCP server whose tools the agents may call: NAME=COMMAND [ARGS...], run over its
    /// stdio (`everything=npx -y @modelcontextprotocol/server-everything`), or NAME=URL of one
    /// running over streamable HTTP (`search=https://mcp.example.com/mcp`); repeat the flag for
    /// more (in the variable, separate them with `;`). Its tools are named `mcp_NAME_TOOL`.
    /// A server over HTTP that needs a bearer token gets it from AGENT_SERVER_MCP_TOKEN_NAME
    /// (NAME in capitals, `-` as `_`).
    #[arg(
        long = "mcp-server",
        value_name = "NAME=COMMAND",
        env = "AGENT_SERVER_MCP_SERVERS",
        value_delimiter = ';'
    )]
    pub mcp_server: Vec<String>,
    /// A variable of the server's environment whose value is a secret (repeatable; in the
    /// variable, separate names with `;`). Like the JWT secret, the model's API key, MCP
    /// tokens, URL passwords and every variable whose name says it is sensitive (`*_TOKEN`,
    /// `*SECRET*`, `*PASSWORD*`, `*API_KEY*`, ...), its value (raw, base64, hex or
    /// URL-encoded) is removed from everything the server sends out: events, history, model
    /// requests, logs, error messages.
    #[arg(
        long = "secret-env",
        value_name = "VAR",
        env = "AGENT_SERVER_SECRET_ENV",
        value_delimiter = ';'
    )]
    pub secret_env: Vec<String>,
    /// Sets VAR to VALUE in the environment of the MCP server NAME (one that runs a command):
    /// NAME:VAR=VALUE, repeat for more (in the variable, separate them with `;`). A command
    /// starts with a minimal environment (HOME, LOGNAME, PATH, SHELL, TERM, USER, LANG,
    /// LC_ALL, TMPDIR, TZ when set), never the agent-server's own, so this is how it gets an
    /// API key of its own. Values are never shown.
    #[arg(
        long = "mcp-env",
        value_name = "NAME:VAR=VALUE",
        env = "AGENT_SERVER_MCP_ENV",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub mcp_env: Vec<String>,
    /// Passes the agent-server's own variable VAR (which must be set) to the MCP server NAME
    /// (one that runs a command): NAME:VAR, repeat for more (in the variable, separate them
    /// with `;`).
    #[arg(
        long = "mcp-pass-env",
        value_name = "NAME:VAR",
        env = "AGENT_SERVER_MCP_PASS_ENV",
        value_delimiter = ';'
    )]
    pub mcp_pass_env: Vec<String>,
    /// The working directory (which must exist) of the MCP server NAME (one that runs a
    /// command): NAME=PATH, repeat for more servers (in the variable, separate them with
    /// `;`). By default it is the agent-server's.
    #[arg(
        long = "mcp-cwd",
        value_name = "NAME=PATH",
        env = "AGENT_SERVER_MCP_CWD",
        value_delimiter = ';'
    )]
    pub mcp_cwd: Vec<String>,
}

/// Where users' streams live.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// In this process's memory: one node.
    InProcess,
    /// In Redis at this URL: several nodes share users.
    Redis(String),
}

impl BrokerChoice {
    /// Reads a `--broker` value.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if value == "in-process" {
            return Ok(Self::InProcess);
        }
        let valid = ["redis://", "redis+unix://"].iter().any(|scheme| {
            value
                .strip_prefix(scheme)
                .is_some_and(|rest| !rest.is_empty())
        });
        if valid {
            Ok(Self::Redis(value.to_owned()))
        } else {
            Err(ConfigError::Broker(redis_broker::redacted_url(value)))
        }
    }
}

impl std::fmt::Debug for BrokerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess => f.write_str("InProcess"),
            Self::Redis(url) => write!(f, "Redis({})", redis_broker::redacted_url(url)),
        }
    }
}

/// Why the settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The JWT secret is too short to be safe.
    #[error(
        "the JWT secret (--jwt-secret / AGENT_SERVER_JWT_SECRET / jwt_secret in --config) is {len} bytes; use at least {MIN_SECRET_LEN} random bytes"
    )]
    SecretTooShort {
        /// Its length.
        len: usize,
    },
    /// The `llm` agent is half configured.
    #[error("{0}")]
    Llm(String),
    /// The default agent name is not a valid agent name.
    #[error("--default-agent {0:?} is not a valid agent name (1 to 64 of a-z, 0-9, _ and -)")]
    DefaultAgent(String),
    /// Dev tokens would be served to the network.
    #[error(
        "--addr {0} is not a loopback address and no --jwt-secret (AGENT_SERVER_JWT_SECRET) is set: \
         the server would hand a token for any user to anyone on the network. Set a secret, listen on \
         127.0.0.1, or pass --dev-tokens-on-network (AGENT_SERVER_DEV_TOKENS_ON_NETWORK) on a trusted network"
    )]
    DevTokensOnNetwork(SocketAddr),
    /// The identity provider's settings cannot be used.
    #[error("{0}")]
    Identity(String),
    /// The store is none of the kinds the server knows.
    #[error(
        "--store (AGENT_SERVER_STORE) {0:?} is not a store: use sqlite://path/to/file.db, postgres://user@host/db, or none"
    )]
    Store(String),
    /// An `--mcp-server`, `--mcp-env`, `--mcp-pass-env` or `--mcp-cwd` value cannot be used.
    #[error("{0}")]
    Mcp(String),
    /// The OpenTelemetry export cannot be set up as configured.
    #[error("{0}")]
    Otlp(String),
    /// The broker is neither `in-process` nor a Redis URL.
    #[error(
        "--broker (AGENT_SERVER_BROKER) {0:?} is neither `in-process` nor a Redis URL (redis://host:port)"
    )]
    Broker(String),
    /// The `--config` file cannot be read, or is not TOML.
    #[error("--config {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (from the OS, or the TOML parser with line and column).
        reason: String,
    },
    /// The `--config` file holds a key that is no setting (a typo, most likely).
    #[error("--config {path}: unknown setting `{key}`{hint} (the settings are: {allowed})")]
    UnknownKey {
        /// The file.
        path: String,
        /// The unknown key.
        key: String,
        /// `; did you mean `…`?` when a setting is close, else empty.
        hint: String,
        /// Every setting a file may hold.
        allowed: String,
    },
    /// A value in the `--config` file has the wrong type or is out of range.
    #[error("--config {path}: `{key} = {value}` is refused: {allowed}")]
    BadValue {
        /// The file.
        path: String,
        /// The setting.
        key: String,
        /// The value as written (secrets and URL credentials masked).
        value: String,
        /// What the setting takes.
        allowed: String,
    },
    /// An `--allowed-origins` value is not an origin.
    #[error(transparent)]
    AllowedOrigins(#[from] crate::http_guard::OriginError),
    /// The command line, with the file's settings in, does not parse (clap's message).
    #[error("{0}")]
    Args(String),
    /// A `--secret-env` variable is not set.
    #[error("{0}")]
    SecretEnv(String),
}

/// Validated settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// The configured JWT secret; with no [`identity`](Self::identity) key either, the
    /// server generates one and serves dev tokens.
    pub jwt_secret: Option<Vec<u8>>,
    /// An identity provider's keys and the claims tokens must carry (its `secret` is unused:
    /// the secret is [`jwt_secret`](Self::jwt_secret)).
    pub identity: crate::auth::Identity,
    /// Whether the synthetic agent is registered.
    pub synthetic_agent: bool,
    /// The agent of legacy frames.
    pub default_agent: String,
    /// Engine limits (per user).
    pub engine: EngineConfig,
    /// Bridge bounds.
    pub bridge: BridgeConfig,
    /// Largest client frame accepted.
    pub max_frame_bytes: usize,
    /// `start_agent` per user per minute.
    pub start_rate_per_minute: u32,
    /// Idle timeout of a connection.
    pub idle_timeout: Duration,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// How long runs may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The `llm` agent's settings, when it is served.
    pub llm: Option<llm_agent::LlmConfig>,
    /// Where spans are exported (`--otlp-endpoint`), if anywhere.
    pub otlp: Option<crate::telemetry::Otlp>,
    /// The MCP servers to start (`--mcp-server`), with their environments and working
    /// directories (`--mcp-env`, `--mcp-pass-env`, `--mcp-cwd`).
    pub mcp_servers: Vec<mcp_tools::McpServerSpec>,
    /// Tools registered beside the built-in ones: the MCP servers' tools, filled in by
    /// [`RunningServer::start`](crate::server::RunningServer::start) (tests add their own).
    pub tools: ExtraTools,
    /// Where users' streams live.
    pub broker: BrokerChoice,
    /// How long a node's claim on a run lasts unrenewed (with a Redis broker).
    pub run_lease_ttl: Duration,
    /// The history store's URL; `None` keeps no history.
    pub store: Option<String>,
    /// How long a thread is kept after its last update.
    pub history_max_age: Duration,
    /// Threads kept per user.
    pub history_max_threads_per_user: u64,
    /// Frames a connection may send in a burst.
    pub flood_burst: u32,
    /// The window over which the burst refills.
    pub flood_window: Duration,
    /// Threads per user whose owner the sessions remember.
    pub max_threads_per_user: usize,
    /// Removes the server's secrets from everything it sends out.
    pub scrubber: Arc<::secrets::Scrubber>,
    /// Secrets too short to be scrubbed (the server warns of each at start).
    pub unscrubbed: Vec<::secrets::TooShort>,
    /// Browser origins allowed besides the server's own (`--allowed-origins`).
    pub allowed_origins: crate::http_guard::AllowedOrigins,
    /// The HTTP API's rate limits.
    pub http_rates: crate::http_guard::HttpRates,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret: None,
            identity: crate::auth::Identity {
                jwks_min_refresh: Duration::from_secs(30),
                ..crate::auth::Identity::default()
            },
            synthetic_agent: false,
            default_agent: "assistant".into(),
            engine: EngineConfig::default(),
            bridge: BridgeConfig::default(),
            max_frame_bytes: 65_536,
            start_rate_per_minute: 30,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
            llm: None,
            otlp: None,
            mcp_servers: Vec::new(),
            tools: ExtraTools::default(),
            broker: BrokerChoice::InProcess,
            run_lease_ttl: Duration::from_secs(15),
            store: None,
            history_max_age: Duration::from_secs(90 * 86_400),
            history_max_threads_per_user: 1_000,
            flood_burst: crate::connection::FLOOD_LIMIT,
            flood_window: crate::connection::FLOOD_WINDOW,
            max_threads_per_user: crate::sessions::MAX_THREADS_PER_USER,
            scrubber: Arc::default(),
            unscrubbed: Vec::new(),
            allowed_origins: crate::http_guard::AllowedOrigins::default(),
            http_rates: crate::http_guard::HttpRates::default(),
        }
    }
}

impl ServerConfig {
    /// Validates `args` into settings.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        if let Some(secret) = &args.jwt_secret {
            if secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::SecretTooShort { len: secret.len() });
            }
        }
        let identity = identity(&args)?;
        if args.jwt_secret.is_none()
            && !identity.is_configured()
            && !args.addr.ip().is_loopback()
            && !args.dev_tokens_on_network
        {
            return Err(ConfigError::DevTokensOnNetwork(args.addr));
        }
        let agent = &args.default_agent;
        let valid_agent = (1..=64).contains(&agent.len())
            && agent
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_agent {
            return Err(ConfigError::DefaultAgent(agent.clone()));
        }
        let otlp = otlp(&args)?;
        let mcp_servers = mcp_servers(&args)?;
        let gathered = secrets::gather(&args, &mcp_servers)?;
        let scrubber = Arc::new(::secrets::Scrubber::new(&gathered.secrets));
        let llm = llm(&args)?.map(|llm| llm_agent::LlmConfig {
            scrubber: Arc::clone(&scrubber),
            ..llm
        });
        let allowed_origins = crate::http_guard::AllowedOrigins::parse(&args.allowed_origins)?;
        let defaults = ServerConfig::default();
        Ok(Self {
            addr: args.addr,
            jwt_secret: args.jwt_secret.map(String::into_bytes),
            identity,
            synthetic_agent: args.synthetic_agent,
            default_agent: args.default_agent,
            engine: EngineConfig {
                max_concurrent_runs: args.max_runs_per_user as usize,
                max_queued_runs: args.max_queued_runs_per_user as usize,
                run_timeout: Duration::from_secs(args.run_timeout_secs),
                max_engines_per_user: args.max_engines_per_user as usize,
                dispatch: agent_registry::DispatchConfig {
                    default_tool_timeout: Duration::from_secs(args.tool_timeout_secs),
                    max_result_bytes: args.tool_result_max_bytes as usize,
                    ..defaults.engine.dispatch
                },
                ..defaults.engine
            },
            bridge: BridgeConfig {
                replay_max_events: args.replay_max_events as usize,
                replay_max_age: Duration::from_secs(args.replay_max_age_secs),
                max_connections_per_user: args.max_connections_per_user as usize,
                send_queue_events: args.send_queue_events as usize,
                send_queue_bytes: args.send_queue_bytes as usize,
            },
            max_frame_bytes: args.max_frame_bytes as usize,
            start_rate_per_minute: args.start_rate_per_minute,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            ping_interval: Duration::from_secs(args.ping_interval_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            llm,
            broker: BrokerChoice::parse(&args.broker)?,
            run_lease_ttl: Duration::from_secs(args.run_lease_secs),
            store: store_url(&args.store)?,
            history_max_age: args.history_max_age,
            history_max_threads_per_user: args.history_max_threads_per_user,
            flood_burst: args.flood_burst,
            flood_window: Duration::from_secs(args.flood_window_secs),
            max_threads_per_user: args.max_threads_per_user as usize,
            allowed_origins,
            http_rates: crate::http_guard::HttpRates {
                per_user_per_minute: args.http_rate_per_user_per_minute,
                per_address_per_minute: args.http_rate_per_address_per_minute,
                dev_token_per_address_per_minute: args.dev_token_rate_per_address_per_minute,
            },
            otlp,
            mcp_servers,
            tools: ExtraTools::default(),
            scrubber,
            unscrubbed: gathered.too_short,
        })
    }
}
