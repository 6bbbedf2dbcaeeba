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

/// Script calls in flight at once on a Redis Cluster (one per slot of a batch: the
/// publisher's, the followed users' renewals). Run-lease renewals go all at once instead
/// ([`answers_by`]).
pub(crate) const CALLS_AT_ONCE: usize = 32;

/// What [`answers_by`] heard by its deadline.
#[derive(Debug)]
pub(crate) struct Heard<T> {
    /// The answers of the calls that went through, in the order they came.
    pub(crate) answers: Vec<T>,
    /// How many calls failed, and the last error.
    pub(crate) failed: usize,
    pub(crate) error: Option<redis::RedisError>,
    /// How many calls were still out at the deadline: they go on, each on its task.
    pub(crate) late: usize,
}

impl<T> Heard<T> {
    /// The answers, `Err` only when none came: the last error, or a timeout when every call
    /// was late. Calls that failed or were late beside answers are logged as `what`.
    pub(crate) fn answers(self, what: &str) -> RedisResult<Vec<T>> {
        let (failed, late) = (self.failed, self.late);
        if failed + late == 0 {
            return Ok(self.answers);
        }
        if self.answers.is_empty() {
            return Err(self.error.unwrap_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer by the deadline",
                    format!("{late} calls"),
                ))
            }));
        }
        let through = self.answers.len();
        let error = self.error.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(through, failed, late, %error, "redis broker: part of the {what} did not go through by its deadline (part of the cluster does not answer); the others did");
        Ok(self.answers)
    }
}

/// Makes `calls` all at once, each on a task of its own, and returns what was heard by
/// `deadline`. For calls that stand alone (renewals, one per slot on a Redis Cluster): a
/// master that does not answer holds up neither the other masters' calls nor the caller past
/// its deadline, and a call is never dropped once sent (a late answer is still handled by
/// its call: a renewal's taken runs are ended all the same).
pub(crate) async fn answers_by<T, F>(
    calls: impl IntoIterator<Item = F>,
    deadline: tokio::time::Instant,
) -> Heard<T>
where
    T: Send + 'static,
    F: Future<Output = RedisResult<T>> + Send + 'static,
{
    use futures::StreamExt;
    let mut out: futures::stream::FuturesUnordered<_> =
        calls.into_iter().map(tokio::spawn).collect();
    let mut heard = Heard {
        answers: Vec::with_capacity(out.len()),
        failed: 0,
        error: None,
        late: 0,
    };
    loop {
        match tokio::time::timeout_at(deadline, out.next()).await {
            Ok(None) => return heard,
            Err(_) => {
                heard.late = out.len();
                return heard;
            }
            Ok(Some(Ok(Ok(answer)))) => heard.answers.push(answer),
            Ok(Some(Ok(Err(error)))) => {
                heard.failed += 1;
                heard.error = Some(error);
            }
            Ok(Some(Err(panicked))) => {
                heard.failed += 1;
                heard.error = Some(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a call's task failed",
                    panicked.to_string(),
                )));
            }
        }
    }
}

/// `items` in groups whose scripts can run as one call: one group on one Redis; on a Redis
/// Cluster (`cluster`), one per slot of the item's user, each in `items`' order. Every key of
/// a user has the user's id as its hash tag, and an id holds no braces, so the id alone names
/// the slot: no key is built for it.
pub(crate) fn by_slot<T>(cluster: bool, items: &[T], user: impl Fn(&T) -> &str) -> Vec<Vec<&T>> {
    if !cluster {
        return vec![items.iter().collect()];
    }
    let mut groups: Vec<(redis::cluster_routing::Slot, Vec<&T>)> = Vec::new();
    for item in items {
        let slot = redis::cluster_routing::Slot::for_key(user(item));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Items renewed in one script call at most (followed users' keys, run leases).
pub(crate) const RENEWED_PER_CALL: usize = 256;

/// `items` in calls of at most `max` items: grouped by slot as [`by_slot`], each group cut in
/// turn. For work whose calls need no order between them (renewals): Redis runs one script at
/// a time, and one call renewing a node's 20,000 followed users held it for 93 to 97 ms
/// (measured on the 2-core box; in calls of 256 the longest took 2 ms), every other node's
/// publishes waiting behind it.
pub(crate) fn in_calls<T>(
    cluster: bool,
    items: &[T],
    user: impl Fn(&T) -> &str,
    max: usize,
) -> Vec<Vec<&T>> {
    let groups = by_slot(cluster, items, user);
    groups
        .iter()
        .flat_map(|group| group.chunks(max.max(1)).map(<[&T]>::to_vec))
        .collect()
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
    use super::{answers_by, by_slot, cluster_seeds, in_calls};

    #[test]
    fn a_batch_is_one_call_on_one_redis_and_one_per_slot_in_order_on_a_cluster() {
        let users = ["ann", "bob", "ann", "cy", "bob", "ann"];
        fn user<'a>(id: &'a &str) -> &'a str {
            id
        }
        assert_eq!(
            by_slot(false, &users, user),
            vec![users.iter().collect::<Vec<_>>()]
        );
        // An id's slot is that of every key tagged with it.
        for id in ["ann", "lg-00042", "a.b@c+d|e_f"] {
            assert_eq!(
                redis::cluster_routing::Slot::for_key(id),
                redis::cluster_routing::Slot::for_key(format!("agentws:{{{id}}}:meta"))
            );
        }
        let groups: Vec<Vec<&str>> = by_slot(true, &users, user)
            .into_iter()
            .map(|group| group.into_iter().copied().collect())
            .collect();
        // Each user's keys share a slot (the hash tag); a user's items keep their order.
        assert!(groups.contains(&vec!["ann", "ann", "ann"]), "{groups:?}");
        assert!(groups.contains(&vec!["bob", "bob"]), "{groups:?}");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), users.len());
    }

    #[test]
    fn renewals_are_cut_in_calls_of_at_most_the_maximum_each_of_one_slot() {
        let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        fn user(id: &String) -> &str {
            id
        }
        let single = in_calls(false, &users, user, 256);
        assert_eq!(
            single.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 256, 232]
        );
        let flat: Vec<&String> = single.into_iter().flatten().collect();
        assert_eq!(flat, users.iter().collect::<Vec<_>>());
        let calls = in_calls(true, &users, user, 3);
        assert!(calls.iter().all(|call| (1..=3).contains(&call.len())));
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), users.len());
        for call in &calls {
            let slot = redis::cluster_routing::Slot::for_key(call[0].as_str());
            assert!(
                call.iter()
                    .all(|u| redis::cluster_routing::Slot::for_key(u.as_str()) == slot)
            );
        }
    }

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

    #[tokio::test(start_paused = true)]
    async fn answers_by_a_deadline_leave_the_late_calls_running_and_fail_only_when_none_came() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(1);
        let handled = Arc::new(AtomicUsize::new(0));
        // A call that answers in 5 s (a master that does not answer), one that fails, two
        // that answer at once.
        let call = |answer: redis::RedisResult<u32>, after: u64| {
            let handled = Arc::clone(&handled);
            async move {
                tokio::time::sleep(Duration::from_secs(after)).await;
                handled.fetch_add(1, Ordering::SeqCst);
                answer
            }
        };
        let failure = || Err(redis::RedisError::from((redis::ErrorKind::Io, "gone")));
        let heard = answers_by(
            [
                call(Ok(1), 5),
                call(failure(), 0),
                call(Ok(2), 0),
                call(Ok(3), 0),
            ],
            deadline(),
        )
        .await;
        assert_eq!((heard.failed, heard.late), (1, 1));
        let mut answers = heard.answers("leases").expect("answers");
        answers.sort_unstable();
        assert_eq!(answers, [2, 3]);
        // The late call was not dropped: it goes on and is handled when its answer comes.
        assert_eq!(handled.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(handled.load(Ordering::SeqCst), 4);
        // None through: the last error, or a timeout when every call was late.
        let error = answers_by([call(failure(), 0), call(Ok(4), 9)], deadline())
            .await
            .answers("leases")
            .expect_err("none through");
        assert!(error.to_string().contains("gone"), "{error}");
        let error = answers_by([call(Ok(5), 9)], deadline())
            .await
            .answers("leases")
            .expect_err("none through");
        assert!(
            error.to_string().contains("no answer by the deadline"),
            "{error}"
        );
        assert_eq!(
            answers_by(
                Vec::<std::future::Ready<redis::RedisResult<u32>>>::new(),
                deadline()
            )
            .await
            .answers("leases")
            .expect("no calls, no error"),
            Vec::<u32>::new()
        );
    }
}
