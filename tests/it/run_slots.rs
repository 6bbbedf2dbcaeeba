//! The run slots conformance tests: each runs against every [`RunSlots`] implementation, the
//! in-process one and the cluster's Redis leases (two nodes on a private `redis-server`),
//! because a user's run limit and queue must mean the same on one node and across nodes
//! (`execution_engine::slots` states the contract).
//!
//! For the in-process slots both "nodes" are the same slots; for the cluster each node is a
//! `Cluster` of its own with its own Redis connection, and claims alternate between them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use core_context::{RunId, RunScope, ThreadId, UserId};
use execution_engine::LocalSlots;
use execution_engine::slots::{Claim, QueuedSlot, RunSlots, SlotError, SlotPermit, ThreadRule};
use parking_lot::Mutex;
use redis_broker::{ClaimState, ClusterRuns, Lease, RedisBroker, RedisBrokerConfig, SlotLimits};
use run_service::cluster::Cluster;
use ws_bridge::BridgeConfig;

use crate::redis_support::RedisServer;
use crate::support::user_id;

/// Two nodes' slots over one implementation, named for failure messages.
pub(crate) struct Nodes {
    pub(crate) name: &'static str,
    pub(crate) a: Arc<dyn RunSlots>,
    pub(crate) b: Arc<dyn RunSlots>,
    _keep: Vec<Cluster>,
}

/// Each implementation with `max_running` and `max_queued` per user, and the private Redis
/// behind the cluster's (stopped when dropped).
pub(crate) async fn implementations(
    max_running: usize,
    max_queued: usize,
) -> (Vec<Nodes>, RedisServer) {
    let local: Arc<dyn RunSlots> = Arc::new(LocalSlots::new(max_running, max_queued));
    let redis = RedisServer::start();
    let limits = SlotLimits {
        max_running,
        max_queued,
    };
    let clusters = vec![node(&redis).await.1, node(&redis).await.1];
    let (a, b): (Arc<dyn RunSlots>, Arc<dyn RunSlots>) = (
        Arc::new(clusters[0].slots(limits)),
        Arc::new(clusters[1].slots(limits)),
    );
    let nodes = vec![
        Nodes {
            name: "in-process",
            a: Arc::clone(&local),
            b: local,
            _keep: Vec::new(),
        },
        Nodes {
            name: "redis",
            a,
            b,
            _keep: clusters,
        },
    ];
    (nodes, redis)
}

/// One node on `redis`: its broker, and its part in the cluster's runs (5 s leases).
async fn node(redis: &RedisServer) -> (Arc<RedisBroker>, Cluster) {
    let bounds = BridgeConfig::default().replay_bounds();
    let broker = Arc::new(
        RedisBroker::connect(RedisBrokerConfig::new(redis.url(), bounds))
            .await
            .unwrap(),
    );
    let cluster = Cluster::new(Arc::clone(&broker), Duration::from_secs(5));
    (broker, cluster)
}

fn scope() -> RunScope {
    RunScope {
        run_id: RunId::generate(),
        parent_run_id: None,
        thread_id: ThreadId::generate(),
        agent_name: Arc::from("synthetic"),
    }
}

async fn claim(slots: &Arc<dyn RunSlots>, user: &UserId) -> Result<Claim, SlotError> {
    slots
        .claim(user, &scope(), "go", ThreadRule::Parallel)
        .await
}

pub(crate) fn running(claim: Result<Claim, SlotError>, what: &str) -> SlotPermit {
    match claim {
        Ok(Claim::Running(permit)) => permit,
        other => panic!("{what}: expected a slot at once, got {other:?}"),
    }
}

pub(crate) fn queued(claim: Result<Claim, SlotError>, what: &str) -> QueuedSlot {
    match claim {
        Ok(Claim::Queued(place)) => place,
        other => panic!("{what}: expected a place in the queue, got {other:?}"),
    }
}

/// Waits for a queued claim's slot, failing the test after a few seconds.
pub(crate) async fn slot_of(place: QueuedSlot, what: &str) -> SlotPermit {
    tokio::time::timeout(Duration::from_secs(5), place.wait())
        .await
        .unwrap_or_else(|_| panic!("{what}: the queued claim never got its slot"))
        .unwrap_or_else(|lost| panic!("{what}: {lost}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_a_run_queues_up_to_the_bound_then_is_refused() {
    let (impls, _redis) = implementations(2, 2).await;
    for nodes in impls {
        let n = nodes.name;
        let alice = user_id("alice");
        let first = running(claim(&nodes.a, &alice).await, n);
        let second = running(claim(&nodes.b, &alice).await, n);
        let third = queued(claim(&nodes.a, &alice).await, n);
        let fourth = queued(claim(&nodes.b, &alice).await, n);
        assert_eq!((third.position(), fourth.position()), (0, 1), "{n}");
        match claim(&nodes.a, &alice).await {
            Err(SlotError::Full {
                running,
                queued,
                max_running,
                max_queued,
            }) => assert_eq!(
                (running, queued, max_running, max_queued),
                (2, 2, 2, 2),
                "{n}"
            ),
            other => panic!("{n}: past the queue bound, expected Full, got {other:?}"),
        }
        // Another user is not limited by alice's runs.
        let bob = user_id("bob");
        let his = running(claim(&nodes.b, &bob).await, n);
        drop((first, second, third, fourth, his));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_get_slots_first_come_first_served_whichever_node() {
    let (impls, _redis) = implementations(1, 4).await;
    for nodes in impls {
        let n = nodes.name;
        let carol = user_id("carol");
        let holder = running(claim(&nodes.a, &carol).await, n);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, node) in [&nodes.b, &nodes.a, &nodes.b].into_iter().enumerate() {
            let place = queued(claim(node, &carol).await, n);
            assert_eq!(place.position(), i, "{n}");
            let order = Arc::clone(&order);
            waiters.push(tokio::spawn(async move {
                let permit = slot_of(place, n).await;
                order.lock().push(i);
                // Hold the slot a moment, so the next waiter's turn is clearly after.
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(permit);
            }));
        }
        // A newcomer never jumps the queue, even when a slot is about to free.
        drop(holder);
        let newcomer = claim(&nodes.a, &carol).await;
        assert!(
            matches!(newcomer, Ok(Claim::Queued(_))),
            "{n}: a new claim took a slot ahead of the queue: {newcomer:?}"
        );
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock(), [0, 1, 2], "{n}: slots went out of order");
        let last = match newcomer {
            Ok(Claim::Queued(place)) => slot_of(place, n).await,
            other => panic!("{n}: {other:?}"),
        };
        drop(last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_place_or_permit_is_given_back() {
    let (impls, _redis) = implementations(1, 1).await;
    for nodes in impls {
        let n = nodes.name;
        let dan = user_id("dan");
        let holder = running(claim(&nodes.a, &dan).await, n);
        let place = queued(claim(&nodes.b, &dan).await, n);
        // A queued run cancelled: its place is free for another claim.
        drop(place);
        let again = claim_until(
            n,
            "the dropped place to be given back",
            &nodes.a,
            &dan,
            |c| match c {
                Ok(Claim::Queued(place)) => Some(place),
                _ => None,
            },
        )
        .await;
        // A run ended: its slot goes to the queued claim.
        drop(holder);
        let permit = slot_of(again, n).await;
        drop(permit);
        // Everything given back: a new claim runs at once.
        let fresh = claim_until(
            n,
            "the last slot to be given back",
            &nodes.b,
            &dan,
            |c| match c {
                Ok(Claim::Running(permit)) => Some(permit),
                _ => None,
            },
        )
        .await;
        drop(fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_on_two_nodes_never_pass_their_limit_and_every_accepted_run_runs() {
    const USERS: usize = 12;
    const CLAIMS: usize = 8;
    let (impls, _redis) = implementations(2, 4).await;
    for nodes in impls {
        let n = nodes.name;
        let held: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
        let most = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
        let (ran, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for u in 0..USERS {
            for c in 0..CLAIMS {
                let node = Arc::clone(if c % 2 == 0 { &nodes.a } else { &nodes.b });
                let (held, most) = (Arc::clone(&held), Arc::clone(&most));
                let (ran, refused) = (Arc::clone(&ran), Arc::clone(&refused));
                tasks.push(tokio::spawn(async move {
                    let user = user_id(&format!("user{u}"));
                    let permit = match claim(&node, &user).await {
                        Ok(Claim::Running(permit)) => permit,
                        Ok(Claim::Queued(place)) => slot_of(place, n).await,
                        Err(SlotError::Full { .. }) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Err(other) => panic!("{n}: {other}"),
                    };
                    {
                        let mut held = held.lock();
                        let now = held.entry(u).or_default();
                        *now += 1;
                        let mut most = most.lock();
                        let top = most.entry(u).or_default();
                        *top = (*top).max(*now);
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    *held.lock().get_mut(&u).unwrap() -= 1;
                    drop(permit);
                    ran.fetch_add(1, Ordering::SeqCst);
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let most = most.lock();
        assert!(
            most.values().all(|&m| m <= 2),
            "{n}: a user ran more than 2 at once: {most:?}"
        );
        let (ran, refused) = (ran.load(Ordering::SeqCst), refused.load(Ordering::SeqCst));
        assert_eq!(ran + refused, USERS * CLAIMS, "{n}: a claim was lost");
        // Each user's 8 claims arrive together: at least 2 run and 4 queue.
        assert!(ran >= USERS * 6, "{n}: only {ran} ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_this_process_holders() {
    let (impls, _redis) = implementations(1, 1).await;
    for nodes in impls {
        let n = nodes.name;
        let erin = user_id("erin");
        let permit = running(claim(&nodes.a, &erin).await, n);
        let place = queued(claim(&nodes.a, &erin).await, n);
        let load = nodes.a.load();
        assert_eq!((load.running, load.queued), (1, 1), "{n}");
        drop(place);
        drop(permit);
        let load = nodes.a.load();
        assert_eq!((load.running, load.queued), (0, 0), "{n}");
    }
}

/// Claims for `user` until `pick` takes the answer, for a few seconds (a networked
/// implementation gives back in the background); answers `pick` passes over are dropped.
async fn claim_until<T>(
    n: &str,
    what: &str,
    slots: &Arc<dyn RunSlots>,
    user: &UserId,
    pick: impl Fn(Result<Claim, SlotError>) -> Option<T>,
) -> T {
    for _ in 0..100 {
        if let Some(found) = pick(claim(slots, user).await) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n}: waited in vain for {what}");
}

/// Across nodes only (the in-process slots cannot lose a place): a queued claim whose place a
/// reaper took, as when its node could not renew it for a whole lease TTL, is told so and
/// never gets a slot; the reaper ended its run for its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_a_reaper_took_is_lost() {
    let redis = RedisServer::start();
    let (broker, cluster) = node(&redis).await;
    let slots: Arc<dyn RunSlots> = Arc::new(cluster.slots(SlotLimits {
        max_running: 1,
        max_queued: 1,
    }));
    let fay = user_id("fay");
    let holder = running(claim(&slots, &fay).await, "redis");
    let place = queued(claim(&slots, &fay).await, "redis");
    // Expire every lease and place now, and reap them as a surviving node would.
    redis.expire_run_leases();
    let reaped = broker.runs(Duration::from_secs(5)).reap().await.unwrap();
    assert_eq!(
        reaped.len(),
        2,
        "the held slot's run and the queued one: {reaped:?}"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), place.wait())
        .await
        .expect("the waiter never heard");
    assert!(answer.is_err(), "a reaped place still got a slot");
    drop(holder);
}

/// Two nodes' runs on `redis` (5 s leases), with the brokers to keep while they are used:
/// their subscribers hear the node channels.
async fn two_nodes_runs(redis: &RedisServer) -> (Vec<Arc<RedisBroker>>, ClusterRuns, ClusterRuns) {
    let ttl = Duration::from_secs(5);
    let (a, b) = (node(redis).await.0, node(redis).await.0);
    let runs = (a.runs(ttl), b.runs(ttl));
    (vec![a, b], runs.0, runs.1)
}

/// Across nodes only: a slot given back wakes the queued claims that may take it, on its
/// node and on the others, and nobody else's: the release script names the queue's first
/// places (as many as the user has slots free, and two more), sends the other nodes holding
/// them `slot\n<user>\n<lease>…` on their node channels and wakes the releasing node's
/// itself. Before, a release woke every queued claim of its node and other nodes heard of it
/// only at their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_given_back_wakes_the_claims_that_may_take_it_on_every_node() {
    let redis = RedisServer::start();
    let limits = SlotLimits {
        max_running: 1,
        max_queued: 4,
    };
    let (_brokers, a, b) = two_nodes_runs(&redis).await;
    let (gus, hal) = (user_id("gus"), user_id("hal"));
    let claim_on = |runs: &ClusterRuns, user: &UserId| {
        let (runs, lease) = (runs.clone(), Lease::new(user.clone(), RunId::generate()));
        async move {
            let state = runs
                .claim(&lease, &scope(), limits, "go", false, ThreadRule::Parallel)
                .await
                .expect("Redis answers");
            (lease, state)
        }
    };
    let (gus_holder, state) = claim_on(&a, &gus).await;
    assert_eq!(state, ClaimState::Running);
    // Gus's queue, in order: one place on node a, three on node b.
    let mut places = Vec::new();
    for runs in [&a, &b, &b, &b] {
        let (lease, state) = claim_on(runs, &gus).await;
        assert!(matches!(state, ClaimState::Queued { .. }), "{state:?}");
        places.push((runs.slot_waiting(&lease), lease));
    }
    let (hal_holder, _) = claim_on(&b, &hal).await;
    let (hal_place, state) = claim_on(&b, &hal).await;
    assert!(matches!(state, ClaimState::Queued { .. }), "{state:?}");
    let hal_waits = b.slot_waiting(&hal_place);

    a.release(&gus_holder, limits.max_running).await.unwrap();
    // One slot free: the first three places may take it (the first, or the next ones if a
    // thread held it up); the fourth is not told, nor is hal.
    for (i, (waiting, _)) in places.iter().take(3).enumerate() {
        tokio::time::timeout(Duration::from_secs(10), waiting.freed())
            .await
            .unwrap_or_else(|_| panic!("gus's place {i} never heard that a slot was free"));
    }
    let not_woken = |waiting: &redis_broker::SlotWaiting| {
        futures::FutureExt::now_or_never(waiting.freed()).is_none()
    };
    assert!(not_woken(&places[3].0), "the fourth place was woken too");
    assert!(not_woken(&hal_waits), "gus's slot woke hal's claim");
    b.release(&hal_holder, limits.max_running).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), hal_waits.freed())
        .await
        .expect("hal's own slot wakes him");
}

/// Across nodes only: a thread freed from its paused run on one node wakes the user's claims
/// queued on another node, the thread's next run among them (the unhold script names the
/// queue's first places to the nodes holding them, `slot\n<user>\n<lease>…`), rather than
/// at their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_freed_on_one_node_wakes_its_claim_queued_on_another() {
    let redis = RedisServer::start();
    let limits = SlotLimits {
        max_running: 2,
        max_queued: 2,
    };
    let (_brokers, a, b) = two_nodes_runs(&redis).await;
    let ivy = user_id("ivy");
    let thread = ThreadId::generate();
    let in_thread = || RunScope {
        run_id: RunId::generate(),
        parent_run_id: None,
        thread_id: thread.clone(),
        agent_name: Arc::from("synthetic"),
    };
    let claim_in = |runs: &ClusterRuns, scope: &RunScope, again: bool, lease| {
        let (runs, scope) = (runs.clone(), scope.clone());
        async move {
            runs.claim(&lease, &scope, limits, "go", again, ThreadRule::Queue)
                .await
                .expect("Redis answers")
        }
    };
    // The thread's first run, on node a, pauses for approvals: its slot goes back, and the
    // thread stays its own.
    let first = in_thread();
    let first_lease = Lease::new(ivy.clone(), first.run_id.clone());
    let state = claim_in(&a, &first, false, first_lease.clone()).await;
    assert_eq!(state, ClaimState::Running);
    a.hold_thread(&ivy, &thread, &first.run_id, true)
        .await
        .unwrap();
    a.release(&first_lease, limits.max_running).await.unwrap();
    // The thread's next run, on node b, waits for the thread though slots are free.
    let next = in_thread();
    let next_lease = Lease::new(ivy.clone(), next.run_id.clone());
    let state = claim_in(&b, &next, false, next_lease.clone()).await;
    assert!(matches!(state, ClaimState::Queued { .. }), "{state:?}");
    let waiting = b.slot_waiting(&next_lease);

    a.hold_thread(&ivy, &thread, &first.run_id, false)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting.freed())
        .await
        .expect("node b never heard that ivy's thread was freed on node a");
    let state = claim_in(&b, &next, true, next_lease).await;
    assert_eq!(state, ClaimState::Running, "the thread is free now");
}
