//! Server settings: `agent-server serve` flags, each with an `AGENT_SERVER_*` variable, and
//! the same settings in a TOML file named by `--config`.
//!
//! Precedence: flags > environment > file > defaults. [`ServeArgs`] (`config/args.rs`) is the
//! one list of settings: its clap attributes give each setting's flag, variable, file key (the
//! field's name), default and range, and the file's values go through the same parsers as
//! flags do ([`with_file`]). clap validates types and ranges (a zero limit or a non-number names the
//! flag, or the file's key, in its error); [`ServerConfig::from_args`] checks what clap cannot
//! (the secret's length, URLs, settings that only make sense together).
//! [`Parsed::effective_toml`] prints the settings in effect, secrets masked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use core_context::multitask::Multitask;
use execution_engine::EngineConfig;
use run_service::usage::{Budget, Prices};
use ws_bridge::BridgeConfig;

mod args;
mod file;
mod read;
mod secrets;
mod settings;
mod show;

pub use args::ServeArgs;
pub use file::{Parsed, with_file};
pub use http_guard::{AllowedOrigins, HttpRates, OriginError};
use read::{client_identity, identity, llm, mcp_servers, otlp, store_url};
pub use server_telemetry::{LogFormat, NO_OTLP, Otlp, OtlpProtocol};

/// The shortest JWT secret accepted, in bytes (HS256 wants at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// The default of `--flood-burst`: frames one connection may send in a burst, refilled over
/// [`FLOOD_WINDOW`]; more closes it (1008).
pub const FLOOD_LIMIT: u32 = 100;
/// The default of `--flood-window-secs`: the window of [`FLOOD_LIMIT`].
pub const FLOOD_WINDOW: Duration = Duration::from_secs(10);

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
        match redis_broker::cluster_seeds(value) {
            Ok(Some(seeds)) => {
                for seed in &seeds {
                    ::secrets::url::check(seed, read::BROKER_SCHEMES).map_err(|why| {
                        ConfigError::BrokerCluster {
                            url: ::secrets::url::redacted(value),
                            why: why.to_string(),
                        }
                    })?;
                }
                return Ok(Self::Redis(value.to_owned()));
            }
            Ok(None) => {}
            Err(why) => {
                return Err(ConfigError::BrokerCluster {
                    url: ::secrets::url::redacted(value),
                    why,
                });
            }
        }
        match ::secrets::url::check(value, read::BROKER_SCHEMES) {
            Ok(_) => Ok(Self::Redis(value.to_owned())),
            Err(why) => Err(ConfigError::Broker {
                url: ::secrets::url::redacted(value),
                why,
            }),
        }
    }
}

impl std::fmt::Debug for BrokerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess => f.write_str("InProcess"),
            Self::Redis(url) => write!(f, "Redis({})", ::secrets::url::redacted(url)),
        }
    }
}

/// Why the settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A publish mode without a Redis broker.
    #[error(
        "{0} is a mode of the Redis broker, and --broker is in-process: use --broker redis://host:port, or leave the mode out"
    )]
    ModeWithoutRedis(&'static str),
    /// `--broker-sequencer` with `--broker-mode script`.
    #[error(
        "--broker-sequencer (AGENT_SERVER_BROKER_SEQUENCER, broker_sequencer in --config) is --broker-mode sequencer, and --broker-mode is script: give one of them"
    )]
    ModesDisagree,
    /// Half of a client certificate.
    #[error(
        "--broker-client-cert and --broker-client-key go together (AGENT_SERVER_BROKER_CLIENT_CERT/KEY, broker_client_cert/key in --config): {0} is missing"
    )]
    HalfClientIdentity(&'static str),
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
    /// An `--approve-tools` pattern is not one.
    #[error("{0} (--approve-tools / AGENT_SERVER_APPROVE_TOOLS / approve_tools in --config)")]
    ApproveTools(#[from] agent_registry::PolicyError),
    /// Approvals without a store to keep paused runs in.
    #[error(
        "--approve-tools needs a history store to keep paused runs in, and --store is none: use the default SQLite store or --store postgres://…"
    )]
    ApprovalsWithoutStore,
    /// Budgets are counted in the history store, and there is none.
    #[error(
        "--token-budget-per-user and --cost-budget-per-user count usage in the history store, and --store is none: use the default SQLite store or --store postgres://…"
    )]
    BudgetWithoutStore,
    /// A `--model-price` entry is wrong.
    #[error("{0} (--model-price / AGENT_SERVER_MODEL_PRICE / model_price in --config)")]
    ModelPrice(String),
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
        "--store (AGENT_SERVER_STORE) {url:?} is not a store ({why}): use sqlite://path/to/file.db, postgres://user@host/db, or none"
    )]
    Store {
        /// The value given, credentials hidden.
        url: String,
        /// What is wrong with it.
        why: ::secrets::url::UrlError,
    },
    /// A `redis-cluster://` broker URL that names no usable node.
    #[error(
        "--broker (AGENT_SERVER_BROKER) {url:?} is not a Redis Cluster URL ({why}): use redis-cluster://host:port,host:port,... (rediss-cluster:// for TLS)"
    )]
    BrokerCluster {
        /// The value given, credentials hidden.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// An `--mcp-server`, `--mcp-env`, `--mcp-pass-env` or `--mcp-cwd` value cannot be used.
    #[error("{0}")]
    Mcp(String),
    /// The OpenTelemetry export cannot be set up as configured.
    #[error("{0}")]
    Otlp(String),
    /// The broker is neither `in-process` nor a Redis URL.
    #[error(
        "--broker (AGENT_SERVER_BROKER) {url:?} is neither `in-process` nor a Redis URL ({why}): use redis://host:port, rediss://host:port (TLS), redis+unix:///path/to/socket or redis-cluster://host:port,host:port,..."
    )]
    Broker {
        /// The value given, credentials hidden.
        url: String,
        /// What is wrong with it.
        why: ::secrets::url::UrlError,
    },
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
    AllowedOrigins(#[from] OriginError),
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
    /// How long a run whose AG-UI response was cut waits for a continuation
    /// (`GET /agui/runs/{run_id}`) before it is cancelled.
    pub agui_reattach: Duration,
    /// The `llm` agent's settings, when it is served.
    pub llm: Option<llm_agent::LlmConfig>,
    /// Where spans are exported (`--otlp-endpoint`), if anywhere.
    pub otlp: Option<Otlp>,
    /// The MCP servers to start (`--mcp-server`), with their environments and working
    /// directories (`--mcp-env`, `--mcp-pass-env`, `--mcp-cwd`).
    pub mcp_servers: Vec<mcp_tools::McpServerSpec>,
    /// Tools registered beside the built-in ones: the MCP servers' tools, filled in by
    /// `RunningServer::start` (`server.rs`; tests add their own).
    pub tools: ExtraTools,
    /// Where users' streams live.
    pub broker: BrokerChoice,
    /// The CA certificates a `rediss://` broker's certificate must chain to, instead of the
    /// machine's roots (`--broker-ca-file`).
    pub broker_ca_file: Option<std::path::PathBuf>,
    /// The certificate and key a `rediss://` broker that asks for one is shown
    /// (`--broker-client-cert`, `--broker-client-key`).
    pub broker_client_identity: Option<redis_broker::ClientIdentity>,
    /// How the Redis broker publishes (`--broker-mode`).
    pub broker_mode: redis_broker::PublishMode,
    /// How long a node's claim on a run lasts unrenewed (with a Redis broker).
    pub run_lease_ttl: Duration,
    /// The history store's URL; `None` keeps no history.
    pub store: Option<String>,
    /// What a message into a busy thread does when it does not say (`--multitask-default`).
    pub multitask_default: Multitask,
    /// Model prices (`--model-price`).
    pub prices: Prices,
    /// What each user's runs may spend per period (`--token-budget-per-user`, ...).
    pub budget: Budget,
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
    pub allowed_origins: AllowedOrigins,
    /// The HTTP API's rate limits.
    pub http_rates: HttpRates,
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
            agui_reattach: Duration::from_secs(10),
            llm: None,
            otlp: None,
            mcp_servers: Vec::new(),
            tools: ExtraTools::default(),
            broker: BrokerChoice::InProcess,
            broker_ca_file: None,
            broker_mode: redis_broker::PublishMode::Auto,
            broker_client_identity: None,
            run_lease_ttl: Duration::from_secs(15),
            store: None,
            multitask_default: Multitask::Enqueue,
            prices: Prices::default(),
            budget: Budget::default(),
            history_max_age: Duration::from_secs(90 * 86_400),
            history_max_threads_per_user: 1_000,
            flood_burst: FLOOD_LIMIT,
            flood_window: FLOOD_WINDOW,
            max_threads_per_user: run_service::sessions::MAX_THREADS_PER_USER,
            scrubber: Arc::default(),
            unscrubbed: Vec::new(),
            allowed_origins: AllowedOrigins::default(),
            http_rates: HttpRates::default(),
        }
    }
}

/// The bridge's bounds from `args` (the replay logs' byte bound derived from the machine's
/// memory unless set).
fn bridge(args: &ServeArgs) -> BridgeConfig {
    BridgeConfig {
        replay_max_events: args.replay_max_events as usize,
        replay_max_age: Duration::from_secs(args.replay_max_age_secs),
        replay_max_bytes: ws_bridge::replay_max_bytes(args.replay_max_bytes),
        max_connections_per_user: args.max_connections_per_user as usize,
        send_queue_events: args.send_queue_events as usize,
        send_queue_bytes: args.send_queue_bytes as usize,
    }
}

impl ServerConfig {
    /// Validates `args` into settings.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let identity = who_signs(&args)?;
        check_default_agent(&args.default_agent)?;
        let otlp = otlp(&args)?;
        let mcp_servers = mcp_servers(&args)?;
        let gathered = secrets::gather(&args, &mcp_servers)?;
        let scrubber = Arc::new(::secrets::Scrubber::new(&gathered.secrets));
        let llm = llm(&args)?.map(|llm| llm_agent::LlmConfig {
            scrubber: Arc::clone(&scrubber),
            ..llm
        });
        let allowed_origins = AllowedOrigins::parse(&args.allowed_origins)?;
        let store = store_url(&args.store)?;
        let broker = BrokerChoice::parse(&args.broker)?;
        let broker_mode = broker_mode(&args, &broker)?;
        let approve_tools = approve_tools(&args.approve_tools, store.as_deref())?;
        let (prices, budget) = spending(&args, store.as_deref())?;
        let defaults = ServerConfig::default();
        let bridge = bridge(&args);
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
                approve_tools,
                approval_timeout: args.approval_timeout,
                ..defaults.engine
            },
            bridge,
            max_frame_bytes: args.max_frame_bytes as usize,
            start_rate_per_minute: args.start_rate_per_minute,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            ping_interval: Duration::from_secs(args.ping_interval_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            agui_reattach: Duration::from_secs(args.agui_reattach_secs),
            llm,
            broker,
            broker_client_identity: client_identity(
                args.broker_client_cert,
                args.broker_client_key,
            )?,
            broker_ca_file: args.broker_ca_file,
            broker_mode,
            run_lease_ttl: Duration::from_secs(args.run_lease_secs),
            store,
            multitask_default: args.multitask_default,
            prices,
            budget,
            history_max_age: args.history_max_age,
            history_max_threads_per_user: args.history_max_threads_per_user,
            flood_burst: args.flood_burst,
            flood_window: Duration::from_secs(args.flood_window_secs),
            max_threads_per_user: args.max_threads_per_user as usize,
            allowed_origins,
            http_rates: HttpRates {
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

/// The Redis broker's publish mode: `--broker-mode`, or `--broker-sequencer` (its older
/// spelling of `sequencer`). Refused with the in-process broker unless left to `auto`.
fn broker_mode(
    args: &ServeArgs,
    broker: &BrokerChoice,
) -> Result<redis_broker::PublishMode, ConfigError> {
    use redis_broker::PublishMode;
    let mode = match (args.broker_sequencer, args.broker_mode) {
        (true, PublishMode::Script) => return Err(ConfigError::ModesDisagree),
        (true, _) => PublishMode::Sequencer,
        (false, mode) => mode,
    };
    if mode != PublishMode::Auto && !matches!(broker, BrokerChoice::Redis(_)) {
        return Err(ConfigError::ModeWithoutRedis(if args.broker_sequencer {
            "--broker-sequencer (AGENT_SERVER_BROKER_SEQUENCER, broker_sequencer in --config)"
        } else {
            "--broker-mode (AGENT_SERVER_BROKER_MODE, broker_mode in --config)"
        }));
    }
    Ok(mode)
}

/// The `--approve-tools` policy; approvals need a store to keep paused runs in.
fn approve_tools(
    patterns: &[String],
    store: Option<&str>,
) -> Result<agent_registry::ApprovalPolicy, ConfigError> {
    let policy = agent_registry::ApprovalPolicy::new(patterns.iter().map(|p| p.trim()))?;
    if !policy.is_empty() && store.is_none() {
        return Err(ConfigError::ApprovalsWithoutStore);
    }
    Ok(policy)
}

/// `--default-agent` must be a valid agent name.
fn check_default_agent(agent: &str) -> Result<(), ConfigError> {
    let valid = (1..=64).contains(&agent.len())
        && agent
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::DefaultAgent(agent.to_owned()))
    }
}

/// The model prices and the per-user budget; budgets need a store (usage is counted there).
fn spending(args: &ServeArgs, store: Option<&str>) -> Result<(Prices, Budget), ConfigError> {
    let prices = Prices::parse(&args.model_price).map_err(ConfigError::ModelPrice)?;
    let budget = Budget {
        tokens: args.token_budget_per_user,
        cost_micro_usd: args
            .cost_budget_per_user
            .map(|usd| (usd * 1_000_000.0).round() as u64),
        period: args.budget_period,
    };
    if budget.is_set() && store.is_none() {
        return Err(ConfigError::BudgetWithoutStore);
    }
    Ok((prices, budget))
}

/// The identity provider's settings, after checking the secret's length and that dev tokens
/// (no secret, no provider) stay on loopback unless allowed.
fn who_signs(args: &ServeArgs) -> Result<crate::auth::Identity, ConfigError> {
    if let Some(secret) = &args.jwt_secret
        && secret.len() < MIN_SECRET_LEN
    {
        return Err(ConfigError::SecretTooShort { len: secret.len() });
    }
    let identity = identity(args)?;
    if args.jwt_secret.is_none()
        && !identity.is_configured()
        && !args.addr.ip().is_loopback()
        && !args.dev_tokens_on_network
    {
        return Err(ConfigError::DevTokensOnNetwork(args.addr));
    }
    Ok(identity)
}
