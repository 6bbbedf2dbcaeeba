//! Which publish mode a Redis broker runs (`--broker-mode`): every node on one Redis runs the
//! same one. `auto`, the default, joins the mode of the nodes already there (so a node of a new
//! version joins a running deployment, a rolling upgrade) and starts a new deployment in the
//! sequencer's; a node set to one mode is refused beside nodes of the other.

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

/// The default, on a Redis where no node runs: the sequencer's, announced for the next nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_starts_a_new_deployment_in_the_sequencer_mode() {
    let redis = RedisServer::start();
    assert_eq!(
        RedisBrokerConfig::new(redis.url(), BridgeConfig::default().replay_bounds()).mode,
        PublishMode::Auto
    );
    let first = connect(&redis, "agentws", PublishMode::Auto).await.unwrap();
    assert_eq!(first.mode(), PublishMode::Sequencer);
    assert_eq!(redis.command(&["EXISTS", "agentws:{mode}:sequencer"]), ":1");
    assert_eq!(redis.command(&["EXISTS", "agentws:{mode}:script"]), ":0");
    refused(&redis, "agentws", PublishMode::Script, "sequencer").await;
    let second = connect(&redis, "agentws", PublishMode::Auto).await.unwrap();
    assert_eq!(second.mode(), PublishMode::Sequencer);
}

/// A deployment in the publish script's mode, upgraded node by node to a version whose
/// default is `auto`: each new node joins it in the script's mode, and a node set to the
/// sequencer's is refused until no node of the script's runs (its announcement expired, as it
/// does 30 s after the last one stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_joins_the_mode_of_the_nodes_already_running() {
    let redis = RedisServer::start();
    let old = connect(&redis, "upgrading", PublishMode::Script)
        .await
        .unwrap();
    let new = connect(&redis, "upgrading", PublishMode::Auto)
        .await
        .unwrap();
    assert_eq!(new.mode(), PublishMode::Script);
    assert_eq!(
        redis.command(&["EXISTS", "upgrading:{mode}:sequencer"]),
        ":0"
    );
    let refusal = refused(&redis, "upgrading", PublishMode::Sequencer, "script").await;
    assert!(
        refusal.contains("or use that mode (or auto, which joins it)"),
        "{refusal}"
    );
    // The old node stops; the new one keeps the mode announced.
    drop(old);
    let another = connect(&redis, "upgrading", PublishMode::Auto)
        .await
        .unwrap();
    assert_eq!(another.mode(), PublishMode::Script);
    drop((new, another));
    assert_eq!(redis.command(&["DEL", "upgrading:{mode}:script"]), ":1");
    let switched = connect(&redis, "upgrading", PublishMode::Sequencer)
        .await
        .expect("the other mode, once none of the first runs");
    assert_eq!(switched.mode(), PublishMode::Sequencer);
    refused(&redis, "upgrading", PublishMode::Script, "sequencer").await;
    let joined = connect(&redis, "upgrading", PublishMode::Auto)
        .await
        .unwrap();
    assert_eq!(joined.mode(), PublishMode::Sequencer);
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
        Err("\"fast\" is not a publish mode: use auto (the mode the nodes on this Redis run, the sequencer where none runs), script or sequencer".to_owned())
    );
}

/// A server left to the default on a fresh Redis, and one joining nodes of the publish
/// script's mode: `/metrics` says which mode each runs.
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
    assert_eq!(mode_of(&fresh).await.as_deref(), Some("1"));
    let upgrading = RedisServer::start();
    let _old = connect(&upgrading, "agentws", PublishMode::Script)
        .await
        .unwrap();
    assert_eq!(mode_of(&upgrading).await.as_deref(), Some("0"));
}
