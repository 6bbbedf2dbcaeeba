//! [`ServeArgs`]: the flags of `agent-server serve`, the one list of settings. Each field's
//! clap attributes give its flag, `AGENT_SERVER_*` variable, `--config` key (the field's name),
//! default and range; `ServerConfig::from_args` checks what clap cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use core_context::multitask::Multitask;
use redis_broker::PublishMode;
use run_service::usage::Period;

use super::{LogFormat, OtlpProtocol};

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
    /// Runs of one user executing at once (all nodes together with a Redis broker).
    #[arg(long, env = "AGENT_SERVER_MAX_RUNS_PER_USER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_runs_per_user: u32,
    /// Runs of one user waiting for a slot before `too_many_runs` (one queue across the
    /// nodes with a Redis broker, first come first served).
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
    #[arg(long, env = "AGENT_SERVER_MAX_THREADS_PER_USER", default_value_t = run_service::sessions::MAX_THREADS_PER_USER as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
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
    /// Bytes all users' replay logs may hold together (in-process broker); past it the oldest
    /// frames across users go first. Default: an eighth of the memory, 64 MiB to 16 GiB.
    #[arg(long, env = "AGENT_SERVER_REPLAY_MAX_BYTES", value_parser = clap::value_parser!(u64).range(1_048_576..))]
    pub replay_max_bytes: Option<u64>,
    /// Threads running the server's work (its async runtime's workers). Default: one per CPU
    /// the process may use. Nodes sharing a machine should each get their share of its CPUs:
    /// two nodes on 2 CPUs with one thread each deliver more than with two each, which only
    /// switch between each other (docs/operations.md, "Running several nodes").
    #[arg(long, env = "AGENT_SERVER_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
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
    /// The `llm` agent's system prompt: its text, or `@path` to read it from a file.
    #[arg(long, env = "LLM_SYSTEM_PROMPT")]
    pub llm_system_prompt: Option<String>,
    /// Model calls per `llm` run before it fails with `max_turns`.
    #[arg(long, env = "LLM_MAX_TURNS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub llm_max_turns: u32,
    /// The longest answer of one `llm` model call in tokens, when a budget bounds the user:
    /// the call reserves it, and asks for it or what remains of the budget, whichever is less.
    #[arg(long, env = "LLM_MAX_TOKENS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub llm_max_tokens: u32,
    /// Seconds runs may go on after a shutdown signal before they are cancelled.
    #[arg(long, env = "AGENT_SERVER_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_grace_secs: u64,
    /// Seconds a run whose AG-UI response was cut (the client left, or lost its connection)
    /// waits for `GET /agui/runs/{run_id}` to take it up before it is cancelled.
    #[arg(long, env = "AGENT_SERVER_AGUI_REATTACH_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub agui_reattach_secs: u64,
    /// Where users' streams live: `in-process` (one node, the default) or
    /// `redis://[:password@]host:port[/db]` (several nodes share users through Redis;
    /// `rediss://` for TLS, verifying Redis's certificate against the machine's roots), or
    /// `redis-cluster://[:password@]host:port,host:port,...` (a Redis Cluster, users sharded
    /// over its masters; `rediss-cluster://` for TLS).
    #[arg(
        long,
        env = "AGENT_SERVER_BROKER",
        default_value = "in-process",
        hide_env_values = true
    )]
    pub broker: String,
    /// With a `rediss://` broker: a PEM file of the CA certificates Redis's certificate must
    /// chain to, trusted instead of the machine's roots (for a Redis with a private CA).
    #[arg(long, env = "AGENT_SERVER_BROKER_CA_FILE", value_name = "PATH")]
    pub broker_ca_file: Option<PathBuf>,
    /// With a `rediss://` broker that asks its clients for a certificate: this node's
    /// certificate (PEM), with `--broker-client-key`.
    #[arg(long, env = "AGENT_SERVER_BROKER_CLIENT_CERT", value_name = "PATH")]
    pub broker_client_cert: Option<PathBuf>,
    /// The private key (PEM) of `--broker-client-cert`.
    #[arg(long, env = "AGENT_SERVER_BROKER_CLIENT_KEY", value_name = "PATH")]
    pub broker_client_key: Option<PathBuf>,
    /// With a Redis broker: how this node publishes. `sequencer` (docs/sequencer.md): one
    /// node per user gives the seqs and the others forward to it; `script`: every batch
    /// through the publish script, which gives them in Redis; `auto`: the mode the nodes
    /// already on the Redis run (so a node joins a running deployment without being told
    /// which), the publish script's where none runs. Every node on one Redis (or Redis Cluster) runs the same
    /// mode: a node set to the other one's refuses to start.
    #[arg(
        long,
        env = "AGENT_SERVER_BROKER_MODE",
        default_value = "auto",
        value_name = "auto|script|sequencer"
    )]
    pub broker_mode: PublishMode,
    /// The same as `--broker-mode sequencer`, from before that flag (kept for the command
    /// lines and files that use it).
    #[arg(long, env = "AGENT_SERVER_BROKER_SEQUENCER")]
    pub broker_sequencer: bool,
    /// With a Redis broker: seconds a node's claim on a running run lasts unrenewed; a node
    /// that dies has its runs ended (`agent_error` `node_lost`) this long after, and a node
    /// that cannot reach Redis for longer than two thirds of it loses its runs the same way.
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
    /// Tools whose calls wait for a person's approval before they run: a tool name with `*`
    /// and `?` wildcards (`calculator`, `mcp_*`); repeat the flag or separate with `,`. A
    /// paused run is kept in the history store (`--store`), so it needs one.
    #[arg(
        long,
        env = "AGENT_SERVER_APPROVE_TOOLS",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub approve_tools: Vec<String>,
    /// How long a call waits for a decision before it is rejected as expired and its run goes
    /// on (`24h`, `30m`, ...).
    #[arg(long, env = "AGENT_SERVER_APPROVAL_TIMEOUT", default_value = "24h", value_parser = parse_approval_timeout)]
    pub approval_timeout: Duration,
    /// What a new message into a thread whose run is still going does when it does not say
    /// (`payload.multitask`): `enqueue` (run after it), `reject` (`thread_busy`), `interrupt`
    /// (end it, keep its partial answer, run next), `rollback` (end and erase it, run next),
    /// or `steer` (the running run takes it, when its agent can; else `enqueue`).
    #[arg(long, env = "AGENT_SERVER_MULTITASK_DEFAULT", default_value = "enqueue", value_parser = parse_multitask)]
    pub multitask_default: Multitask,
    /// Prompt and answer tokens each user's runs may spend per `--budget-period` (all models
    /// together); past it a new run is refused with `budget_exceeded`. Needs a store.
    #[arg(long, env = "AGENT_SERVER_TOKEN_BUDGET_PER_USER", value_parser = clap::value_parser!(u64).range(1..))]
    pub token_budget_per_user: Option<u64>,
    /// US dollars each user's runs may spend per `--budget-period` (priced by
    /// `--model-price`); past it a new run is refused with `budget_exceeded`. Needs a store.
    #[arg(long, env = "AGENT_SERVER_COST_BUDGET_PER_USER", value_name = "USD", value_parser = parse_usd)]
    pub cost_budget_per_user: Option<f64>,
    /// The calendar period in UTC a budget counts over: `day`, `week` (from Monday) or
    /// `month`.
    #[arg(long, env = "AGENT_SERVER_BUDGET_PERIOD", default_value = "month", value_parser = parse_period)]
    pub budget_period: Period,
    /// A model's price, `MODEL=INPUT/OUTPUT` in US dollars per million prompt and answer
    /// tokens (`gpt-4o=2.5/10`); repeat the flag or separate with `,`. A model without a price
    /// counts in tokens only.
    #[arg(
        long,
        env = "AGENT_SERVER_MODEL_PRICE",
        value_name = "MODEL=IN/OUT",
        value_delimiter = ','
    )]
    pub model_price: Vec<String>,
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
    #[arg(long, env = "AGENT_SERVER_HTTP_RATE_PER_USER_PER_MINUTE", default_value_t = super::HttpRates::default().per_user_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_rate_per_user_per_minute: u32,
    /// Requests per minute one client address (the TCP peer: behind a proxy, the proxy) may
    /// make to the HTTP API (/v1 and /agui together).
    #[arg(long, env = "AGENT_SERVER_HTTP_RATE_PER_ADDRESS_PER_MINUTE", default_value_t = super::HttpRates::default().per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_rate_per_address_per_minute: u32,
    /// POST /dev/token requests per minute from one client address.
    #[arg(long, env = "AGENT_SERVER_DEV_TOKEN_RATE_PER_ADDRESS_PER_MINUTE", default_value_t = super::HttpRates::default().dev_token_per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub dev_token_rate_per_address_per_minute: u32,
    /// Frames a connection may send in a burst before it is closed as flooding (1008).
    #[arg(long, env = "AGENT_SERVER_FLOOD_BURST", default_value_t = super::FLOOD_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub flood_burst: u32,
    /// Seconds over which the flood burst refills.
    #[arg(long, env = "AGENT_SERVER_FLOOD_WINDOW_SECS", default_value_t = super::FLOOD_WINDOW.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3_600))]
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

/// `--cost-budget-per-user`: dollars, more than 0.
fn parse_usd(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|usd| usd.is_finite() && *usd > 0.0 && *usd <= 1e9)
        .ok_or_else(|| format!("{raw:?} is not an amount of US dollars above 0 (like 5 or 0.50)"))
}

/// `--budget-period`: `day`, `week` or `month`.
fn parse_period(raw: &str) -> Result<Period, String> {
    Period::parse(raw).ok_or_else(|| format!("{raw:?} is not a period; use day, week or month"))
}

/// `--multitask-default`: one of the strategies.
fn parse_multitask(raw: &str) -> Result<Multitask, String> {
    Multitask::parse(raw).ok_or_else(|| {
        format!(
            "{raw:?} is not a strategy; use one of {}",
            Multitask::NAMES.join(", ")
        )
    })
}

/// `--approval-timeout`: a duration from one second to a year.
fn parse_approval_timeout(raw: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("{raw:?} is outside 1s to 366d"));
    }
    Ok(timeout)
}
