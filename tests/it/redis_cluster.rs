//! Nodes on a Redis Cluster (`--broker redis-cluster://`) when a master dies mid-stream:
//! its replica takes over, and every client either goes on with nothing missing or is told
//! its resume failed. Never a silent gap, never another user's event.
//!
//! And when a master stalls (its replica with it, so none takes over): the runs whose users'
//! slots are on the other masters keep their leases.
//!
//! In both modes: the publish script's and the sequencer's (`--broker-sequencer`).
//!
//! The rest of the multi-node suite runs on a cluster too (`multinode`, `multinode_runs`:
//! each test's `cluster` case; `multinode` and `lost_runs` also in the sequencer mode,
//! `sequencer_cluster`).

use std::time::Duration;

use agent_server::server::RunningServer;
use serde_json::json;

use crate::redis_cluster_support::{RedisCluster, SharedRedis};
use crate::server_support::{Client, token};

/// What one user's client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Events received, every one the next seq of its epoch.
    events: usize,
    /// Connections the server closed (each resumed).
    closes: usize,
    /// Resumes that said `failed` (`epoch_changed`, `too_old` or `seq_ahead`).
    failed_resumes: Vec<String>,
    /// Whether the run's terminal event arrived.
    ended: bool,
}

/// Follows `user`'s run `run` on `nodes[first]`, resuming on the other node whenever the
/// server closes the connection. Panics on a gap, a repeat or another run's event. Stops
/// at the run's terminal event, or (after a failed resume, which may skip it) when nothing
/// came for 5 s.
async fn follow(
    nodes: &[std::net::SocketAddr],
    first: usize,
    mut client: Client,
    user: &str,
    run: &str,
) -> Seen {
    let mut seen = Seen::default();
    let mut node = first;
    let mut epoch = client.established["epoch"].as_str().unwrap().to_owned();
    let mut last = client.established["last_seq"].as_u64().unwrap();
    let quiet = Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout(quiet, client.next_or_close()).await;
        match next {
            Err(_) if !seen.failed_resumes.is_empty() => return seen,
            Err(_) => panic!("{user}: nothing for {quiet:?} and no failed resume ({seen:?})"),
            Ok(Ok(frame)) => {
                let Some(seq) = frame["seq"].as_u64() else {
                    continue;
                };
                assert_eq!(
                    seq,
                    last + 1,
                    "{user}: a silent gap or repeat in epoch {epoch}: {frame}"
                );
                assert_eq!(
                    frame["run_id"], run,
                    "{user} got another run's event: {frame}"
                );
                last = seq;
                seen.events += 1;
                let kind = frame["type"].as_str().unwrap_or_default();
                if matches!(kind, "agent_completed" | "agent_error" | "agent_cancelled") {
                    seen.ended = true;
                    return seen;
                }
            }
            Ok(Err(code)) => {
                seen.closes += 1;
                assert!(seen.closes < 20, "{user}: closed again and again ({code})");
                node = 1 - node;
                client = reconnect(nodes[node], user, (&epoch, last)).await;
                let resume = &client.established["resume"];
                if resume["status"] != "ok" {
                    assert_eq!(resume["status"], "failed", "{user}: {}", client.established);
                    let reason = resume["reason"].as_str().unwrap().to_owned();
                    assert!(
                        ["epoch_changed", "too_old", "seq_ahead"].contains(&reason.as_str()),
                        "{user}: {reason}"
                    );
                    seen.failed_resumes.push(reason);
                    epoch = client.established["epoch"].as_str().unwrap().to_owned();
                    last = client.established["last_seq"].as_u64().unwrap();
                }
            }
        }
    }
}

/// `user`'s connection resuming after `resume`, tried for up to 10 s (a node may refuse
/// while the cluster elects a new master).
async fn reconnect(addr: std::net::SocketAddr, user: &str, resume: (&str, u64)) -> Client {
    let mut tries = 0;
    loop {
        match Client::connect(addr, &token(user), Some(resume)).await {
            Ok(client) => return client,
            Err(error) => {
                tries += 1;
                assert!(tries < 40, "{user} cannot resume on {addr}: {error:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// 24 users on two nodes, each running a 5-second stream; the master serving the first
/// user's slot is killed a moment in. Users whose streams that master held are told their
/// resume failed (their stream restarts in a new epoch: the replica may lack the last writes,
/// and a seq must never name two events); every other user gets the whole run, in order,
/// on a connection that may have been moved but lost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failing_over_mid_stream_loses_nothing_silently() {
    failing_over_mid_stream(false).await;
}

/// The same in the sequencer mode (`--broker-sequencer`): the node holding a user's lease
/// writes their log in one transaction per slot, and takes the lease anew on the promoted
/// replica, whose stream then starts a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failing_over_mid_stream_loses_nothing_silently_in_the_sequencer_mode() {
    failing_over_mid_stream(true).await;
}

async fn failing_over_mid_stream(sequencer: bool) {
    let mut cluster = RedisCluster::start();
    let url = if sequencer {
        format!("{}{}", cluster.url(), crate::server_support::SEQUENCER)
    } else {
        cluster.url()
    };
    let nodes = crate::redis_support::nodes_on(&url, 2, |_| {}).await;
    let addrs: Vec<_> = nodes.iter().map(RunningServer::addr).collect();
    let users: Vec<String> = (0..24).map(|u| format!("failover{u:02}")).collect();
    let doomed = cluster.master_of(&format!("agentws:{{{}}}:meta", users[0]));
    let on_doomed: Vec<bool> = users
        .iter()
        .map(|user| cluster.master_of(&format!("agentws:{{{user}}}:meta")) == doomed)
        .collect();
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let user = user.clone();
        let addrs = addrs.clone();
        let first = u % 2;
        let mut client = Client::user(addrs[first], &user).await;
        let accepted = client
            .start(
                "r1",
                "synthetic",
                json!({"thinking": 500, "tools": 0, "chunks": 0, "sleep_ms": 10}),
            )
            .await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
        let run = accepted["run_id"].as_str().unwrap().to_owned();
        tasks.push(tokio::spawn(async move {
            follow(&addrs, first, client, &user, &run).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill_master_of(&format!("agentws:{{{}}}:meta", users[0]));
    let killed_at = std::time::Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_failed_over();
        eprintln!("failed over after {:?}", killed_at.elapsed());
        cluster
    })
    .await
    .unwrap();
    let mut told = 0;
    for ((task, user), doomed) in tasks.into_iter().zip(&users).zip(&on_doomed) {
        let seen = task.await.unwrap();
        eprintln!("{user} (on the killed master: {doomed}): {seen:?}");
        if *doomed {
            assert!(
                !seen.failed_resumes.is_empty(),
                "{user}'s stream was on the killed master, yet no resume failed: {seen:?}"
            );
            told += 1;
        } else {
            assert!(
                seen.failed_resumes.is_empty() && seen.ended && seen.events == 502,
                "{user}'s stream was on a master that lived: it must be whole: {seen:?}"
            );
        }
    }
    assert!(
        told > 0 && told < users.len(),
        "{told} users on the killed master"
    );
    // The cluster serves new streams on the promoted replica.
    let mut fresh = Client::user(addrs[0], &users[0]).await;
    let accepted = fresh.start("r2", "synthetic", json!({})).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let frames = fresh.events_until_terminals(1).await;
    assert!(frames.len() >= 2, "{frames:?}");
    drop(cluster);
    for node in nodes {
        node.shutdown().await;
    }
}

/// A master that stops answering altogether for several lease TTLs (its machine stalls, its
/// replica with it, so none takes over): each node's lease renewals go to every master at
/// once and wait for none past half their interval, so the runs whose users' slots are on
/// the other masters keep their leases and run on, and end only when cancelled: never
/// `node_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_master_holds_up_no_other_masters_run_leases() {
    stalled_master(false).await;
}

/// The same in the sequencer mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_master_holds_up_no_other_masters_run_leases_in_the_sequencer_mode() {
    stalled_master(true).await;
}

/// [`stalled_master_steps`], failed when it has not ended within four minutes (it takes
/// about twenty seconds): each step it reached is printed, so a hang names its place.
async fn stalled_master(sequencer: bool) {
    let limit = Duration::from_secs(240);
    tokio::time::timeout(limit, stalled_master_steps(sequencer))
        .await
        .unwrap_or_else(|_| panic!("not done within {limit:?}: the last step printed hung"));
}

async fn stalled_master_steps(sequencer: bool) {
    const LEASE: Duration = Duration::from_millis(1500);
    let cluster = RedisCluster::start();
    let url = if sequencer {
        format!("{}{}", cluster.url(), crate::server_support::SEQUENCER)
    } else {
        cluster.url()
    };
    let nodes = crate::redis_support::nodes_on(&url, 2, |config| {
        config.run_lease_ttl = LEASE;
        config.start_rate_per_minute = 100_000;
        config.shutdown_grace = Duration::from_millis(50);
    })
    .await;
    // Enough users that the renewal calls for the stalled master's slots outnumber those a
    // node made at once before (32), and a master that does not hold the reapers' index.
    eprintln!("step: two nodes up on the cluster");
    let users: Vec<String> = (0..150).map(|u| format!("stall{u:03}")).collect();
    let masters: Vec<u16> = users
        .iter()
        .map(|user| cluster.master_of(&format!("agentws:{{{user}}}:meta")))
        .collect();
    let index = cluster.master_of("agentws:reap");
    let doomed = users
        .iter()
        .zip(&masters)
        .find(|(_, master)| **master != index)
        .map(|(user, master)| (user.clone(), *master))
        .expect("a master without the reapers' index");
    // Each user's run, on the first node, hangs until cancelled.
    let mut clients = Vec::new();
    for user in &users {
        let mut client = Client::user(nodes[0].addr(), user).await;
        let hang = json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true});
        let accepted = client.start("r1", "synthetic", hang).await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
        let run = accepted["run_id"].as_str().unwrap().to_owned();
        clients.push((client, run));
    }
    eprintln!("step: {} runs hang", clients.len());
    let stalled = cluster.stall_master_of(&format!("agentws:{{{}}}:meta", doomed.0));
    eprintln!("step: master {stalled:?} stalled");
    tokio::time::sleep(LEASE * 4).await;
    cluster.resume(&stalled);
    eprintln!("step: resumed; cancelling the runs on the other masters");
    let mut kept = 0;
    for ((mut client, run), (user, master)) in clients.into_iter().zip(users.iter().zip(&masters)) {
        if *master == doomed.1 {
            continue;
        }
        client
            .send(json!({"type": "cancel_run", "request_id": "c1", "payload": {"run_id": run}}))
            .await;
        let end = loop {
            let frame = client.next().await;
            let ends = ["agent_completed", "agent_error", "agent_cancelled"];
            if frame["run_id"] == run.as_str() && ends.iter().any(|t| frame["type"] == *t) {
                break frame;
            }
        };
        assert_eq!(
            end["type"], "agent_cancelled",
            "{user}'s run, its slot on a master that answered, was ended: {end}"
        );
        kept += 1;
    }
    assert!(
        kept > 0 && kept < users.len(),
        "{kept} runs on live masters"
    );
    eprintln!("step: {kept} runs cancelled; stopping the cluster and the nodes");
    drop(cluster);
    for node in nodes {
        node.shutdown().await;
    }
    eprintln!("step: done");
}
