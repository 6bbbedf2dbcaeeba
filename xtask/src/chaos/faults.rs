//! The faults: what each strikes, how long until the system is whole again, and what else
//! must hold beyond loadgen's verdict.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Load;
use super::cluster::RedisCluster;
use super::services::{self, Postgres, SmallVolume};
use crate::bench::cluster::{Nodes, Redis};
use crate::bench::probe::{get, metric_sum, metrics};

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// One node killed with SIGKILL.
    NodeKill,
    /// Redis killed with SIGKILL and started again a second later (its append-only file
    /// keeps what it acknowledged).
    RedisRestart,
    /// Redis without persistence killed and started again a second later, empty: nothing
    /// can be replayed, so every connection's resume must fail explicitly (`epoch_changed`).
    RedisRestartEmpty,
    /// The nodes on a Redis Cluster (three masters, a replica each); one master killed with
    /// SIGKILL: its replica takes over, the streams it held start a new epoch (their
    /// connections' resumes fail explicitly), the others lose nothing.
    ClusterFailover,
    /// The history's PostgreSQL stopped (fast shutdown) and started again 2 s later: within
    /// the history writer's retries (3 to 6 s), so it must catch up without dropping a write.
    PostgresRestart,
    /// Each node's SQLite history on a small volume that fills up for 8 s (longer than the
    /// writer's retries): writes fail and are dropped and counted, `/readyz` says so, live
    /// delivery goes on; once space is freed the writer goes on.
    SqliteFull,
}

impl Fault {
    /// Every fault, in the order they run.
    pub(crate) const ALL: [Fault; 6] = [
        Fault::NodeKill,
        Fault::RedisRestart,
        Fault::RedisRestartEmpty,
        Fault::ClusterFailover,
        Fault::PostgresRestart,
        Fault::SqliteFull,
    ];

    /// Its name, for `--only` and the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::NodeKill => "node-kill",
            Fault::RedisRestart => "redis-restart",
            Fault::RedisRestartEmpty => "redis-restart-empty",
            Fault::ClusterFailover => "cluster-failover",
            Fault::PostgresRestart => "postgres-restart",
            Fault::SqliteFull => "sqlite-full",
        }
    }

    /// What it does, in words.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Fault::NodeKill => {
                "kill -9 of one node: its connections resume on the other, its runs end node_lost once"
            }
            Fault::RedisRestart => {
                "Redis killed and started again after 1 s: the nodes wait, reconnect and deliver everything"
            }
            Fault::RedisRestartEmpty => {
                "Redis without persistence killed and started again empty after 1 s: every resume fails explicitly, nothing is lost silently"
            }
            Fault::ClusterFailover => {
                "a Redis Cluster master killed: its replica takes over; its users' resumes fail explicitly, the others lose nothing"
            }
            Fault::PostgresRestart => {
                "the history's PostgreSQL down for 2 s: live delivery unaffected, the writer retries and catches up"
            }
            Fault::SqliteFull => {
                "each node's SQLite volume full for 8 s: writes fail and are counted, /readyz says so, live delivery unaffected"
            }
        }
    }

    /// The services beside Redis this fault's nodes use.
    pub(crate) fn services(self, log_dir: &Path) -> Result<Services, String> {
        Ok(Services {
            postgres: match self {
                Fault::PostgresRestart => Some(Postgres::start(log_dir)?),
                _ => None,
            },
            volume: match self {
                Fault::SqliteFull => Some(SmallVolume::mount(log_dir)?),
                _ => None,
            },
        })
    }

    /// Whether explicit failed resumes are what this fault must cause (loadgen
    /// `--tolerate-failed-resumes`); for the others a failed resume fails the load.
    pub(crate) fn fails_resumes(self) -> bool {
        matches!(self, Fault::RedisRestartEmpty | Fault::ClusterFailover)
    }

    /// Strikes, and measures the recovery it can see from outside.
    pub(crate) fn strike(
        self,
        nodes: &mut Nodes,
        broker: &mut Broker,
        services: &mut Services,
    ) -> Struck {
        let mut struck = Struck::default();
        let addrs = nodes.addrs();
        match self {
            Fault::NodeKill => {
                nodes.kill(1);
            }
            Fault::RedisRestart | Fault::RedisRestartEmpty | Fault::ClusterFailover => {
                strike_broker(self, broker, &addrs, &mut struck);
            }
            Fault::PostgresRestart => {
                let began = Instant::now();
                let restarted = services
                    .postgres
                    .as_mut()
                    .map(|pg| pg.restart(Duration::from_secs(2)));
                match restarted {
                    Some(Ok(())) => struck.readiness = services::until_ready(&addrs, began, false),
                    Some(Err(e)) => struck.problems.push(e),
                    None => struck.problems.push("no PostgreSQL to restart".into()),
                }
            }
            Fault::SqliteFull => match services.volume.as_mut() {
                Some(volume) => fill_for_a_while(volume, &addrs, &mut struck),
                None => struck.problems.push("no volume to fill".into()),
            },
        }
        match self {
            Fault::NodeKill => {}
            Fault::RedisRestart | Fault::RedisRestartEmpty | Fault::ClusterFailover => {
                struck.recovery = struck.readiness.after;
                if struck.recovery.is_none() {
                    struck
                        .problems
                        .push("the nodes' /readyz did not answer 200 again within 60 s".into());
                } else if !struck.readiness.saw_unready {
                    struck.problems.push(
                        "no node's /readyz said it was not ready: the fault did not reach them"
                            .into(),
                    );
                }
            }
            Fault::SqliteFull => {
                struck.recovery = struck.readiness.after;
                if struck.recovery.is_none() {
                    struck.problems.push(
                        "the nodes' /readyz did not answer 200 again within 60 s of freeing space"
                            .into(),
                    );
                } else if !struck.readiness.saw_unready {
                    struck
                        .problems
                        .push("no node's /readyz said the store was failing".into());
                }
            }
            // A writer that waits for a connection instead of failing its batch stays ready:
            // then there is nothing to recover from, and the history's completeness (judged
            // after the load) says whether the restart cost anything.
            Fault::PostgresRestart => {
                struck.recovery = struck
                    .readiness
                    .after
                    .filter(|_| struck.readiness.saw_unready);
            }
        }
        struck
    }

    /// What must hold beyond loadgen's verdict, given its report: the problems found.
    pub(crate) fn judge(self, report: Option<&Value>, load: Load, struck: &Struck) -> Vec<String> {
        let figure = |pointer: &str| {
            report
                .and_then(|r| r.pointer(pointer)?.as_f64())
                .unwrap_or(0.0)
        };
        let mut problems = Vec::new();
        match self {
            Fault::NodeKill => {
                let reconnects = figure("/faults/reconnects");
                if reconnects < load.users as f64 {
                    problems.push(format!(
                        "{reconnects:.0} connections resumed; the killed node held {}",
                        load.users
                    ));
                }
                if figure("/faults/node_lost_runs") == 0.0 {
                    problems.push("no run ended node_lost: the kill found no run in flight".into());
                }
            }
            Fault::RedisRestartEmpty | Fault::ClusterFailover => {
                if figure("/faults/failed_resumes") == 0.0 {
                    problems.push(
                        "no resume failed: the fault lost no stream, so it was not tested".into(),
                    );
                }
            }
            Fault::RedisRestart => {
                if struck.lost_by_redis > 0.0 {
                    problems.push(format!(
                        "the nodes counted {:.0} events Redis refused or lost",
                        struck.lost_by_redis
                    ));
                }
            }
            Fault::SqliteFull => {}
            Fault::PostgresRestart => {
                // One write per run start and per event (the terminal one included); each
                // event reached both of its user's connections.
                let expected = figure("/load/events") / 2.0 + figure("/load/runs_finished");
                if (struck.writes - expected).abs() > 0.5 {
                    problems.push(format!(
                        "the history holds {:.0} writes; the load made {expected:.0}",
                        struck.writes
                    ));
                }
                if struck.dropped != Some(0) {
                    problems.push(format!(
                        "history writes dropped: {}",
                        struck
                            .dropped
                            .map_or_else(|| "unknown".into(), |d| d.to_string())
                    ));
                }
            }
        }
        if self == Fault::SqliteFull {
            if struck.failed_batches == 0.0 {
                problems.push("no history batch failed while the volume was full".into());
            }
            // Every write is stored or counted as dropped: none is lost unseen.
            let expected = figure("/load/events") / 2.0 + figure("/load/runs_finished");
            let accounted = struck.writes + struck.dropped.unwrap_or(0) as f64;
            if (accounted - expected).abs() > 0.5 {
                problems.push(format!(
                    "the history holds {:.0} writes and dropped {}; the load made {expected:.0}",
                    struck.writes,
                    struck.dropped.unwrap_or(0)
                ));
            }
        }
        problems
    }
}

/// Strikes the broker (`fault` is one of Redis's): restarts the Redis, or fails a Redis
/// Cluster master over; watches the nodes' `/readyz` meanwhile (a node may be ready again
/// before the cluster is whole) and then until they are ready again.
fn strike_broker(fault: Fault, broker: &mut Broker, addrs: &[String], struck: &mut Struck) {
    let began = Instant::now();
    let striking = std::sync::atomic::AtomicBool::new(true);
    let (struck_at, saw_unready) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut saw_unready = false;
            while striking.load(std::sync::atomic::Ordering::Relaxed) {
                saw_unready |= addrs
                    .iter()
                    .any(|a| !matches!(get(a, "/readyz"), Some((200, _))));
                std::thread::sleep(Duration::from_millis(20));
            }
            saw_unready
        });
        let struck_at = strike(fault, broker);
        striking.store(false, std::sync::atomic::Ordering::Relaxed);
        (struck_at, watcher.join().unwrap_or(false))
    });
    match struck_at {
        Ok(()) => struck.readiness = services::until_ready(addrs, began, saw_unready),
        Err(e) => struck.problems.push(e),
    }
}

/// Kills and restarts Redis, or fails a Redis Cluster master over.
fn strike(fault: Fault, broker: &mut Broker) -> Result<(), String> {
    match (fault, broker) {
        (Fault::ClusterFailover, Broker::Cluster(cluster)) => cluster.fail_over().map(|took| {
            println!(
                "  the cluster was whole again {:.2} s after the kill",
                took.as_secs_f64()
            );
        }),
        (Fault::RedisRestart | Fault::RedisRestartEmpty, Broker::One(redis)) => {
            redis.crash_and_restart(Duration::from_secs(1))
        }
        (fault, _) => Err(format!("{} needs another broker", fault.name())),
    }
}

/// Fills `volume`, keeps it full for 8 s (past the writer's retries, 3 to 6 s), frees it, and
/// measures how long the nodes take to be ready again from then.
fn fill_for_a_while(volume: &mut SmallVolume, addrs: &[String], struck: &mut Struck) {
    if let Err(e) = volume.fill() {
        struck.problems.push(e);
        return;
    }
    let full = Instant::now();
    let mut saw_unready = false;
    while full.elapsed() < Duration::from_secs(8) {
        // SQLite gives space back after a failed write (its journal): take it again, so the
        // volume stays full.
        if let Err(e) = volume.fill() {
            struck.problems.push(e);
        }
        saw_unready |= addrs
            .iter()
            .any(|a| !matches!(get(a, "/readyz"), Some((200, _))));
        std::thread::sleep(Duration::from_millis(100));
    }
    volume.free();
    struck.readiness = services::until_ready(addrs, Instant::now(), saw_unready);
}

/// Where the nodes' users' streams live: one Redis, or a Redis Cluster.
pub(crate) enum Broker {
    /// One Redis.
    One(Redis),
    /// A Redis Cluster.
    Cluster(RedisCluster),
}

impl Broker {
    /// The one this fault strikes: a Redis Cluster for `cluster-failover`, a Redis without
    /// persistence for `redis-restart-empty`, else a Redis with an append-only file.
    pub(crate) fn start(fault: Fault, log_dir: &Path) -> Result<Self, String> {
        match fault {
            Fault::ClusterFailover => RedisCluster::start(log_dir).map(Broker::Cluster),
            Fault::RedisRestartEmpty => Redis::start(log_dir).map(Broker::One),
            _ => Redis::start_persistent(log_dir).map(Broker::One),
        }
    }

    /// The nodes' `--broker`.
    pub(crate) fn url(&self) -> String {
        match self {
            Broker::One(redis) => redis.url(),
            Broker::Cluster(cluster) => cluster.url(),
        }
    }

    /// Stops it.
    pub(crate) fn stop(&mut self) {
        match self {
            Broker::One(redis) => redis.stop(),
            Broker::Cluster(cluster) => cluster.stop(),
        }
    }
}

/// The services besides Redis.
pub(crate) struct Services {
    postgres: Option<Postgres>,
    volume: Option<SmallVolume>,
}

impl Services {
    /// Node `n`'s `--store` flag: the shared PostgreSQL, its own SQLite file on the small
    /// volume, or none.
    pub(crate) fn store_args(&self, n: usize) -> Vec<String> {
        let store = match (&self.postgres, &self.volume) {
            (Some(postgres), _) => postgres.url(),
            (None, Some(volume)) => format!("sqlite://{}/node{n}.db", volume.path().display()),
            (None, None) => "none".to_owned(),
        };
        vec!["--store".into(), store]
    }

    /// Whether the nodes keep a history.
    fn has_store(&self) -> bool {
        self.postgres.is_some() || self.volume.is_some()
    }

    /// Stops them.
    pub(crate) fn stop(&mut self) {
        if let Some(postgres) = &mut self.postgres {
            postgres.stop();
        }
        if let Some(volume) = &mut self.volume {
            volume.unmount();
        }
    }
}

/// What a fault measured.
#[derive(Debug, Default)]
pub(crate) struct Struck {
    /// From the fault to the nodes ready again (`/readyz` 200 on both), when it applies.
    pub(crate) recovery: Option<Duration>,
    /// What `/readyz` said after the fault.
    pub(crate) readiness: services::Readiness,
    /// History writes the nodes dropped (`history_dropped_total`), with a store.
    pub(crate) dropped: Option<u64>,
    /// History batch attempts that failed (`history_failed_batches_total`): a writer that
    /// waits for its connection instead of failing has none.
    pub(crate) failed_batches: f64,
    /// History writes stored (`history_writes_total`), with a store.
    pub(crate) writes: f64,
    /// Events the nodes counted as refused or lost by Redis.
    pub(crate) lost_by_redis: f64,
    /// What went wrong besides loadgen's verdict.
    pub(crate) problems: Vec<String>,
}

impl Struck {
    /// After the load: waits for the history to catch up (its writes stop changing) and
    /// reads the nodes' counters.
    pub(crate) fn after_load(&mut self, addrs: &[String], services: &Services) {
        let live: Vec<String> = addrs
            .iter()
            .filter(|a| metrics(a).is_some())
            .cloned()
            .collect();
        let sum = |name: &str| -> f64 {
            live.iter()
                .filter_map(|a| metrics(a))
                .map(|body| metric_sum(&body, name))
                .sum()
        };
        self.lost_by_redis = sum("agent_server_redis_events_rejected_total")
            + sum("agent_server_redis_events_lost_total");
        if services.has_store() {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut last = -1.0;
            loop {
                let writes = sum("agent_server_history_writes_total");
                if writes == last || Instant::now() > deadline {
                    break;
                }
                last = writes;
                std::thread::sleep(Duration::from_secs(2));
            }
            self.writes = last;
            self.dropped = Some(sum("agent_server_history_dropped_total") as u64);
            self.failed_batches = sum("agent_server_history_failed_batches_total");
        }
    }
}
