//! The node's connections to Redis, one Redis or a Redis Cluster behind one [`Conn`]:
//! - `redis://` (`rediss://`, `redis+unix://`): a reconnecting [`ConnectionManager`];
//! - `redis-cluster://host:port,host:port,...` (`rediss-cluster://` for TLS): a
//!   [`ClusterConnection`] that learns the cluster's slots from those seeds, sends each
//!   command to the master of its keys' slot, and follows the cluster when a master fails
//!   over to its replica.
//!
//! A cluster connection that stops answering altogether (every request timing out, seen
//! under load after a master was killed) is replaced by a new one from the same client,
//! which learns the cluster's slots afresh ([`ClusterHandle`]).
//!
//! Every script's keys share one user's hash tag, so each runs on one slot; the publisher
//! groups a batch by slot on a cluster ([`Conn::is_cluster`]). The live connection
//! subscribes on one node at a time, taking the next seed when one is unreachable (a
//! `PUBLISH` reaches every node of a cluster).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

use tokio::runtime::Handle;

use crate::runtime::Home;
use crate::{RedisBrokerConfig, RedisBrokerError, tls};

/// The commands' connection: to one Redis, or to a Redis Cluster; its calls are made on the
/// broker's thread, those made off it sent there (`runtime`: what reconnects a dropped
/// connection must run there).
#[derive(Clone)]
pub(crate) struct Conn {
    link: Link,
    /// The broker's thread.
    home: Home,
    /// On a Redis Cluster, the slot its pipelines go to ([`Conn::on_slot_of`]); `None`: the
    /// slot of their first key.
    slot: Option<Slot>,
}

#[derive(Clone)]
enum Link {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(Arc<ClusterHandle>),
}

/// Requests timed out in a row (none answered between them) after which the cluster
/// connection is replaced.
const REPLACE_AFTER_TIMEOUTS: u32 = 4;

/// The cluster connection in use, and what replaces it when it stops answering.
pub(crate) struct ClusterHandle {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    /// Requests timed out since the last answer.
    timeouts: AtomicU32,
    /// Whether a new connection is being opened.
    replacing: AtomicBool,
}

impl ClusterHandle {
    /// Notes how a request went: an answer resets the count of timeouts; past
    /// [`REPLACE_AFTER_TIMEOUTS`] of them in a row a new connection is opened and used.
    fn observe<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        match result {
            Err(error) if error.is_timeout() => {
                let timeouts = self.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if timeouts >= REPLACE_AFTER_TIMEOUTS
                    && !self.replacing.swap(true, Ordering::AcqRel)
                {
                    let handle = Arc::clone(self);
                    tokio::spawn(async move {
                        match handle.client.get_async_connection().await {
                            Ok(fresh) => {
                                *handle.current.write() = fresh;
                                handle.timeouts.store(0, Ordering::Relaxed);
                                tracing::warn!(
                                    timeouts,
                                    "redis broker: the cluster connection stopped answering; replaced it with a new one"
                                );
                            }
                            Err(error) => {
                                tracing::warn!(%error, "redis broker: the cluster connection stopped answering and a new one cannot be opened yet");
                            }
                        }
                        handle.replacing.store(false, Ordering::Release);
                    });
                }
            }
            Err(_) => {}
            Ok(_) => self.timeouts.store(0, Ordering::Relaxed),
        }
    }
}

impl Conn {
    /// Whether this is a Redis Cluster (a script's keys must then share one slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// This connection with its pipelines sent to the master of `user`'s slot on a Redis
    /// Cluster, whatever their commands' first arguments. The client routes a pipeline by
    /// each command's first argument, a `PUBLISH`'s channel included, and refuses one whose
    /// commands name two slots; Redis itself takes a `PUBLISH` on any node (a channel is no
    /// key), so a user's appends and their frames can go in one transaction.
    pub(crate) fn on_slot_of(&self, user: &str) -> Conn {
        Conn {
            slot: self.is_cluster().then(|| Slot::for_key(user)),
            ..self.clone()
        }
    }

    /// Where a call made here must go: the broker's thread, when this is not it.
    fn away(&self) -> Option<Handle> {
        self.home.away().cloned()
    }
}

/// Runs `call` on the broker's thread (`home`) and answers what it answers.
async fn at_home<T: Send + 'static>(
    home: Handle,
    call: impl Future<Output = RedisResult<T>> + Send + 'static,
) -> RedisResult<T> {
    home.spawn(call).await.unwrap_or_else(|_| {
        Err((
            redis::ErrorKind::Client,
            "the Redis broker's thread has stopped",
        )
            .into())
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Some(home) = self.away() {
            let (mut conn, cmd) = (self.clone(), cmd.clone());
            return Box::pin(at_home(
                home,
                async move { conn.req_packed_command(&cmd).await },
            ));
        }
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(handle) => {
                let handle = Arc::clone(handle);
                Box::pin(async move {
                    let mut conn = handle.current.read().clone();
                    let result = conn.req_packed_command(cmd).await;
                    handle.observe(&result);
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if let Some(home) = self.away() {
            let (mut conn, cmd) = (self.clone(), cmd.clone());
            return Box::pin(at_home(home, async move {
                conn.req_packed_commands(&cmd, offset, count).await
            }));
        }
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Link::Cluster(handle) => {
                let handle = Arc::clone(handle);
                let slot = self.slot;
                Box::pin(async move {
                    let mut conn = handle.current.read().clone();
                    let result = match slot {
                        Some(slot) => {
                            let master = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
                                slot,
                                SlotAddr::Master,
                            ));
                            conn.route_pipeline(cmd.clone(), offset, count, master)
                                .await
                        }
                        None => conn.req_packed_commands(cmd, offset, count).await,
                    };
                    handle.observe(&result);
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(handle) => handle.current.read().get_db(),
        }
    }
}

/// What the broker connects with: the commands' connection, the run leases' connection,
/// and the clients the live connection may subscribe through (one Redis's, or each cluster
/// seed's).
pub(crate) struct Endpoint {
    pub(crate) conn: Conn,
    /// For the renewal and the reaping of run leases only (`runs::leases`): a connection of
    /// their own, so that neither a burst of publishes queued ahead of them nor the
    /// recoveries of a cluster connection that publishes to a master gone down (during which
    /// the client sends none of its requests: measured, every renewal of a node went
    /// unanswered for 4 s in a failover) delays them past their leases.
    pub(crate) leases: Conn,
    pub(crate) live: Vec<redis::Client>,
}

/// Connects to `config.url`: one Redis or a Redis Cluster. Called on `home`, the broker's
/// thread, so that the connections' own tasks run there.
pub(crate) async fn connect(
    config: &RedisBrokerConfig,
    home: Home,
) -> Result<Endpoint, RedisBrokerError> {
    let shown = secrets::url::redacted(&config.url);
    let connect_error = |source| RedisBrokerError::Connect {
        url: shown.clone(),
        source,
    };
    let Some(seeds) = cluster_seeds(&config.url).map_err(|why| RedisBrokerError::Cluster {
        url: shown.clone(),
        why,
    })?
    else {
        return connect_single(config, home).await;
    };
    let live = seeds
        .iter()
        .map(|seed| tls::client(config, seed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(
        seeds
            .iter()
            .map(|seed| seed.as_str().into_connection_info())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| RedisBrokerError::Url {
                url: shown.clone(),
                source,
            })?,
    )
    .tcp_settings(tls::tcp_settings())
    .connection_timeout(Duration::from_secs(2))
    .response_timeout(Duration::from_secs(5))
    .retries(5)
    .min_retry_wait(50)
    .max_retry_wait(1_000);
    let tls = config.url.starts_with("rediss-cluster://");
    if let Some(certificates) = tls::certificates(config, tls, &shown)? {
        builder = builder.certs(certificates);
    }
    let client = builder.build().map_err(|source| {
        if config.ca_file.is_some() || config.client_identity.is_some() {
            tls::use_error(config, source)
        } else {
            RedisBrokerError::Url {
                url: shown.clone(),
                source,
            }
        }
    })?;
    let conn = client.get_async_connection().await.map_err(connect_error)?;
    let leases = client.get_async_connection().await.map_err(connect_error)?;
    let cluster = |conn: ClusterConnection| Conn {
        link: Link::Cluster(Arc::new(ClusterHandle {
            client: client.clone(),
            current: RwLock::new(conn),
            timeouts: AtomicU32::new(0),
            replacing: AtomicBool::new(false),
        })),
        home: home.clone(),
        slot: None,
    };
    Ok(Endpoint {
        conn: cluster(conn),
        leases: cluster(leases),
        live,
    })
}

/// [`connect`] to one Redis.
async fn connect_single(
    config: &RedisBrokerConfig,
    home: Home,
) -> Result<Endpoint, RedisBrokerError> {
    let connect_error = |source| RedisBrokerError::Connect {
        url: secrets::url::redacted(&config.url),
        source,
    };
    let client = tls::client(config, &config.url)?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let single = |manager: ConnectionManager| Conn {
        link: Link::Single(manager),
        home: home.clone(),
        slot: None,
    };
    let conn = ConnectionManager::new_with_config(client.clone(), manager.clone())
        .await
        .map_err(connect_error)?;
    let leases = ConnectionManager::new_with_config(client.clone(), manager)
        .await
        .map_err(connect_error)?;
    Ok(Endpoint {
        conn: single(conn),
        leases: single(leases),
        live: vec![client],
    })
}

/// The seeds of a Redis Cluster URL, `redis-cluster://[user:password@]host:port,host:port,...`
/// (or `rediss-cluster://` for TLS), each as a `redis://` (`rediss://`) URL with the same
/// credentials; `Ok(None)` for a URL of one Redis; `Err` says what is wrong with a cluster URL.
/// Each seed is a URL of its own to check (its host and port), as `--broker` does.
pub fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis-cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss-cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    if rest.contains(['?', '#']) {
        return Err("a cluster URL takes no query or fragment".into());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("a cluster has one database: the URL takes no /db path".into());
    }
    let (credentials, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let mut seeds = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err("it names no host (or an empty one between commas)".into());
        }
        if !host.contains(':') || host.ends_with(':') || host.ends_with(']') {
            return Err(format!("{host:?} has no port (each node is host:port)"));
        }
        seeds.push(format!("{scheme}://{credentials}{host}"));
    }
    Ok(Some(seeds))
}

#[cfg(test)]
mod tests {
    use super::cluster_seeds;

    #[test]
    fn cluster_urls_name_their_seeds_or_say_what_is_wrong() {
        let seeds = |url| cluster_seeds(url);
        assert_eq!(seeds("redis://cache:6379"), Ok(None));
        assert_eq!(
            seeds("redis-cluster://10.0.0.1:7000,10.0.0.2:7001/"),
            Ok(Some(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7001".to_owned()
            ]))
        );
        assert_eq!(
            seeds("rediss-cluster://app:pw@a:1,[::1]:2"),
            Ok(Some(vec![
                "rediss://app:pw@a:1".to_owned(),
                "rediss://app:pw@[::1]:2".to_owned()
            ]))
        );
        let refused = [
            ("redis-cluster://", "names no host"),
            ("redis-cluster://a:1,,b:2", "empty one between commas"),
            ("redis-cluster://a,b:2", "\"a\" has no port"),
            ("redis-cluster://a:1/2", "no /db path"),
            ("redis-cluster://a:1?protocol=3", "no query"),
        ];
        for (url, why) in refused {
            let error = seeds(url).expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
        }
    }
}
