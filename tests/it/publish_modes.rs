//! Which publish mode a Redis broker runs (`--broker-mode`): every node on one Redis runs the
//! same one. `auto`, the default, joins the mode of the nodes already there (so a node joins a
//! running deployment, in a rolling upgrade or when added, without being told which mode it
//! runs) and starts a new deployment in the publish script's; a node set to one mode is
//! refused beside nodes of the other.

use agent_server::config::{BrokerChoice, ServerConfig};
use redis_broker::{PublishMode, RedisBroker, RedisBrokerConfig, RedisBrokerError};
use ws_bridge::BridgeConfig;

use crate::history_server::http_text;
use crate::redis_support::RedisServer;
use crate::server_support::SECRET;

async fn connect(
    redis: &RedisServer,
    prefix: &str,
    mode: PublishMode,
) -> Result<RedisBroker, RedisBrokerError> {
    RedisBroker::connect(RedisBrokerConfig {
        key_prefix: prefix.into(),
        mode,
        ..RedisBrokerConfig::new(redis.url(), BridgeConfig::default().replay_bounds())
    })
    .await
}

/// Asserts that a node set to `mode` is refused, naming `running` as the mode that runs;
/// returns the refusal.
async fn refused(redis: &RedisServer, prefix: &str, mode: PublishMode, running: &str) -> String {
    let refused = connect(redis, prefix, mode).await.unwrap_err();
    assert!(
        matches!(&refused, RedisBrokerError::ModeConflict { other, .. } if *other == running),
        "{refused}"
    );
    let refused = refused.to_string();
    assert!(
        refused.contains(&format!("nodes in the {running} mode run on this Redis")),
        "{refused}"
    );
    refused
}

/// The default, on a Redis where no node runs: the publish script's, announced for the next
/// nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_starts_a_new_deployment_in_the_publish_script_mode() {
    let redis = RedisServer::start();
    let bounds = BridgeConfig::default().replay_bounds();
    assert_eq!(
        RedisBrokerConfig::new(redis.url(), bounds).mode,
        PublishMode::Auto
    );
    let first = connect(&redis, "agentws", PublishMode::Auto).await.unwrap();
    assert_eq!(first.mode(), PublishMode::Script);
    assert_eq!(redis.command(&["EXISTS", "agentws:{mode}:script"]), ":1");
    assert_eq!(redis.command(&["EXISTS", "agentws:{mode}:sequencer"]), ":0");
    refused(&redis, "agentws", PublishMode::Sequencer, "script").await;
    let second = connect(&redis, "agentws", PublishMode::Auto).await.unwrap();
    assert_eq!(second.mode(), PublishMode::Script);
}

/// A deployment started in the sequencer mode: a node left to the default joins it in that
/// mode (added, or of a new version in a rolling upgrade), a node set to the publish script's
/// is refused until no node of the sequencer's runs (its announcement expired, as it does
/// 30 s after the last one stopped); then the default starts the script's again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_joins_the_mode_of_the_nodes_already_running() {
    let redis = RedisServer::start();
    let first = connect(&redis, "joining", PublishMode::Sequencer)
        .await
        .unwrap();
    let added = connect(&redis, "joining", PublishMode::Auto).await.unwrap();
    assert_eq!(added.mode(), PublishMode::Sequencer);
    assert_eq!(redis.command(&["EXISTS", "joining:{mode}:script"]), ":0");
    let refusal = refused(&redis, "joining", PublishMode::Script, "sequencer").await;
    assert!(
        refusal.contains("or use that mode (or auto, which joins it)"),
        "{refusal}"
    );
    // The first node stops; the added one keeps the mode announced.
    drop(first);
    let another = connect(&redis, "joining", PublishMode::Auto).await.unwrap();
    assert_eq!(another.mode(), PublishMode::Sequencer);
    drop((added, another));
    assert_eq!(redis.command(&["DEL", "joining:{mode}:sequencer"]), ":1");
    let switched = connect(&redis, "joining", PublishMode::Auto)
        .await
        .expect("the default's mode, once none of the other runs");
    assert_eq!(switched.mode(), PublishMode::Script);
    refused(&redis, "joining", PublishMode::Sequencer, "script").await;
}

/// The modes' names, as `--broker-mode` takes them.
#[test]
fn modes_parse_from_their_names_only() {
    for mode in [
        PublishMode::Auto,
        PublishMode::Script,
        PublishMode::Sequencer,
    ] {
        assert_eq!(mode.as_str().parse::<PublishMode>(), Ok(mode));
    }
    assert_eq!(
        "fast".parse::<PublishMode>(),
        Err("\"fast\" is not a publish mode: use auto (the mode the nodes on this Redis run, the publish script where none runs), script or sequencer".to_owned())
    );
}

/// A server left to the default on a fresh Redis, and one joining nodes of the sequencer
/// mode: `/metrics` says which mode each runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_says_which_mode_it_resolved() {
    let mode_of = |redis: &RedisServer| {
        let url = redis.url();
        async move {
            let server = agent_server::server::RunningServer::start(ServerConfig {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                jwt_secret: Some(SECRET.as_bytes().to_vec()),
                broker: BrokerChoice::Redis(url),
                ..ServerConfig::default()
            })
            .await
            .expect("server starts");
            let (_, text) = http_text(server.addr(), "GET", "/metrics", None).await;
            server.shutdown().await;
            text.lines()
                .find_map(|line| line.strip_prefix("agent_server_redis_sequencer_mode "))
                .map(str::to_owned)
        }
    };
    let fresh = RedisServer::start();
    assert_eq!(mode_of(&fresh).await.as_deref(), Some("0"));
    let sequenced = RedisServer::start();
    let _running = connect(&sequenced, "agentws", PublishMode::Sequencer)
        .await
        .unwrap();
    assert_eq!(mode_of(&sequenced).await.as_deref(), Some("1"));
}
