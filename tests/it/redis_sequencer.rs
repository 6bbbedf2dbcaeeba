//! The Redis broker's sequencer mode (`docs/sequencer.md`), node against node on a private
//! Redis: one node per user gives the seqs and the others forward to it; a holder whose lease
//! was taken is fenced by the log; a dead holder's users get a new one without a lost event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use core_context::{EventKind, EventSink, RunId, RunScope, SequencedEvent, ThreadId, UserId};
use redis_broker::{PublishMode, RedisBroker, RedisBrokerConfig};
use ws_bridge::{AgentWebSocketBridge, BridgeConfig, Broker, Subscription};

use crate::redis_support::RedisServer;
use crate::support::{user_id, wait_until};

/// One node: its broker (sequencer mode) and a bridge over it.
struct Node {
    broker: Arc<RedisBroker>,
    bridge: AgentWebSocketBridge,
    name: &'static str,
}

impl Node {
    async fn start(redis: &RedisServer, name: &'static str) -> Self {
        let config = BridgeConfig::default();
        let broker = Arc::new(
            RedisBroker::connect(RedisBrokerConfig {
                mode: PublishMode::Sequencer,
                ..RedisBrokerConfig::new(redis.url(), config.replay_bounds())
            })
            .await
            .unwrap(),
        );
        let bridge = AgentWebSocketBridge::with_broker(config, broker.clone());
        Self {
            broker,
            bridge,
            name,
        }
    }

    /// Emits a chunk `<node>:<step>` of this node's run for `user`.
    fn emit(&self, user: &UserId, step: u64) {
        let run = RunScope {
            run_id: RunId::parse(&format!("run_{}{}", self.name, user.as_str())).unwrap(),
            parent_run_id: None,
            thread_id: ThreadId::parse(&format!("thr_{}", user.as_str())).unwrap(),
            agent_name: Arc::from("synthetic"),
        };
        let delta = format!("{}:{step}", self.name);
        let event = run.event(EventKind::AgentResponseChunk { delta });
        self.bridge.emit(user, event).unwrap();
    }
}

/// The next `n` frames of `sub`: their seqs and chunks.
async fn chunks(sub: &Subscription, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("frames stopped coming after {out:?}"))
            .expect("the subscription closed");
        out.push(chunk_of(&frame.text));
    }
    out
}

/// A chunk frame's seq and chunk.
fn chunk_of(text: &str) -> (u64, String) {
    let event: SequencedEvent = serde_json::from_str(text).unwrap();
    let EventKind::AgentResponseChunk { delta } = event.event.kind else {
        panic!("another kind of event: {text}");
    };
    (event.seq, delta)
}

/// `seen` (a user's frames) holds each of nodes `a` and `b`'s chunks 1 to `steps` once, in
/// the order each node emitted them, with seqs 1 to `2 × steps`.
fn both_nodes_in_order(user: &UserId, seen: &[(u64, String)], steps: u64) {
    let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=2 * steps).collect::<Vec<_>>(), "{user}");
    let mut per_node: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (_, chunk) in seen {
        let (node, step) = chunk.split_once(':').unwrap();
        per_node
            .entry(node)
            .or_default()
            .push(step.parse().unwrap());
    }
    for node in ["a", "b"] {
        assert_eq!(
            per_node[node],
            (1..=steps).collect::<Vec<_>>(),
            "{user}: node {node}'s chunks once each, in order"
        );
    }
}

/// Nothing more arrives on `sub` within 300 ms.
async fn nothing_more(sub: &Subscription) {
    if let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
        panic!("an unexpected frame: {:?}", frame.map(|f| f.text.clone()));
    }
}

/// Commands Redis refused with a plain `ERR` (an append below the stream's last id is one).
fn refused_appends(redis: &RedisServer) -> u64 {
    let count = redis.command(&[
        "EVAL",
        "return tonumber(string.match(redis.call('INFO', 'errorstats'), 'errorstat_ERR:count=(%d+)')) or 0",
        "0",
    ]);
    count
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("{count}"))
}

fn stat(
    node: &Node,
    read: impl Fn(&redis_broker::BrokerStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    read(node.broker.stats()).load(Ordering::Relaxed)
}

/// 30 users, each with a tab on both of two nodes, and a run on each node emitting 40 chunks
/// at once: each user's lease is taken by one node and the other forwards to it. Both tabs of
/// each user get one stream, seqs 1 to 80 without a gap, each node's chunks once each and in
/// the order they were emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_publishing_for_the_same_users_give_each_one_gapless_stream() {
    const USERS: usize = 30;
    const STEPS: u64 = 40;
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a").await;
    let b = Node::start(&redis, "b").await;
    let users: Vec<UserId> = (0..USERS)
        .map(|u| user_id(&format!("both-{u:02}")))
        .collect();
    let mut tabs = Vec::new();
    for user in &users {
        tabs.push((
            a.bridge.subscribe(user, None).await.unwrap(),
            b.bridge.subscribe(user, None).await.unwrap(),
        ));
    }
    for step in 1..=STEPS {
        for user in &users {
            a.emit(user, step);
            b.emit(user, step);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (user, (on_a, on_b)) in users.iter().zip(&tabs) {
        let seen = chunks(on_a, 2 * STEPS as usize).await;
        assert_eq!(
            seen,
            chunks(on_b, 2 * STEPS as usize).await,
            "{user}: two tabs differ"
        );
        both_nodes_in_order(user, &seen, STEPS);
    }
    let taken = stat(&a, |s| &s.leases_taken) + stat(&b, |s| &s.leases_taken);
    assert!(
        taken >= USERS as u64,
        "every user's lease was taken: {taken}"
    );
    let forwarded = stat(&a, |s| &s.events_forwarded) + stat(&b, |s| &s.events_forwarded);
    assert!(
        forwarded > 0,
        "a user's events on the node without the lease were forwarded"
    );
    for node in [&a, &b] {
        assert_eq!(stat(node, |s| &s.events_lost), 0);
    }
}

/// A holder whose lease another node took while it did not know (its expiry set back in Redis,
/// as a pause past the lease would) writes again: Redis refuses its appends (the new holder's
/// barrier is above them), no frame of them goes out, and its events reach the new holder,
/// which appends them after its own. A third node's tab sees each event once, in order; the
/// log replays the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_whose_lease_was_taken_is_fenced_and_its_events_go_to_the_new_one() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        Node::start(&redis, "a").await,
        Node::start(&redis, "b").await,
        Node::start(&redis, "c").await,
    );
    let user = user_id("fenced");
    let tab = c.bridge.subscribe(&user, None).await.unwrap();
    a.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(1, "a:1".to_owned())]);
    // The lease expires in Redis; `a` still holds it by its own clock (4 s) until its next
    // renewal (within a second) finds it gone: it writes before that, or learns it there;
    // either way its events must end up after `b`'s, once each.
    let meta = format!("agentws:{{{}}}:meta", user.as_str());
    assert_eq!(redis.command(&["HSET", &meta, "sqx", "0"]), ":0");
    let refusals_before = refused_appends(&redis);
    b.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(2, "b:1".to_owned())]);
    a.emit(&user, 2);
    a.emit(&user, 3);
    assert_eq!(
        chunks(&tab, 2).await,
        [(3, "a:2".to_owned()), (4, "a:3".to_owned())]
    );
    nothing_more(&tab).await;
    eprintln!(
        "appends Redis refused: {} (0 when a's renewal found the lease gone first)",
        refused_appends(&redis) - refusals_before
    );
    assert_eq!(stat(&a, |s| &s.leases_taken), 1, "a took it once");
    assert!(
        stat(&a, |s| &s.events_forwarded) >= 2,
        "a's refused events went to b"
    );
    assert_eq!(stat(&b, |s| &s.leases_taken), 1);
    // The log holds the same four, after the barriers.
    let replayed = c
        .broker
        .replay(&user, tab.epoch(), 0)
        .await
        .unwrap()
        .expect("the log replays from the start");
    let texts: Vec<(u64, String)> = replayed.iter().map(|frame| chunk_of(&frame.text)).collect();
    let expected: Vec<(u64, String)> = [(1, "a:1"), (2, "b:1"), (3, "a:2"), (4, "a:3")]
        .into_iter()
        .map(|(seq, chunk)| (seq, chunk.to_owned()))
        .collect();
    assert_eq!(texts, expected);
}

/// A lease idle for 2 s is given back, and the next node to publish for the user takes it
/// (the old holder refuses events forwarded for a user whose lease it no longer holds,
/// rather than take it for them): a user's next run, on another node, is appended there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_lease_goes_to_the_node_where_the_users_next_events_start() {
    let redis = RedisServer::start();
    let (a, b) = (
        Node::start(&redis, "a").await,
        Node::start(&redis, "b").await,
    );
    let user = user_id("moving");
    let tab = b.bridge.subscribe(&user, None).await.unwrap();
    a.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(1, "a:1".to_owned())]);
    b.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(2, "b:1".to_owned())]);
    assert_eq!(stat(&b, |s| &s.leases_taken), 0, "b forwarded to a");
    let meta = format!("agentws:{{{}}}:meta", user.as_str());
    let held = || redis.command(&["HEXISTS", &meta, "sq"]) == ":1";
    for _ in 0..80 {
        if !held() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!held(), "a gave it back within 8 s");
    b.emit(&user, 2);
    b.emit(&user, 3);
    let next = chunks(&tab, 2).await;
    assert_eq!(next, [(3, "b:2".to_owned()), (4, "b:3".to_owned())]);
    a.emit(&user, 2);
    assert_eq!(chunks(&tab, 1).await, [(5, "a:2".to_owned())]);
    assert_eq!(stat(&b, |s| &s.leases_taken), 1, "b took it");
    assert_eq!(stat(&a, |s| &s.leases_taken), 1, "a did not take it again");
    nothing_more(&tab).await;
}

/// The node holding a user's lease dies (its tasks stop at once; its lease is not given
/// back). The other node's events for that user wait unconfirmed until the lease expires,
/// then that node takes it: its tab gets every event once, in order, seqs without a gap after
/// the dead node's, and `flush` returns once they are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_holders_users_get_a_new_one_and_lose_nothing() {
    const STEPS: u64 = 30;
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a").await;
    let b = Node::start(&redis, "b").await;
    let user = user_id("orphan");
    let tab = b.bridge.subscribe(&user, None).await.unwrap();
    a.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(1, "a:1".to_owned())]);
    drop(a);
    for step in 1..=STEPS {
        b.emit(&user, step);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = chunks(&tab, STEPS as usize).await;
    let expected: Vec<(u64, String)> = (1..=STEPS)
        .map(|step| (step + 1, format!("b:{step}")))
        .collect();
    assert_eq!(seen, expected);
    tokio::time::timeout(Duration::from_secs(10), b.broker.flush())
        .await
        .expect("flush returns once the events are in")
        .unwrap();
    nothing_more(&tab).await;
    assert_eq!(
        stat(&b, |s| &s.leases_taken),
        1,
        "b took the lease once it expired"
    );
    assert!(
        stat(&b, |s| &s.events_forwarded) >= 1,
        "b first sent to the dead holder"
    );
}

/// Expires every user's lease (as if each holder had paused past it).
const EXPIRE_LEASES: &str = "for _, key in ipairs(redis.call('KEYS', 'agentws:{*}:meta')) do \
    if redis.call('HEXISTS', key, 'sqx') == 1 then redis.call('HSET', key, 'sqx', 0) end end \
    return 1";

/// Two nodes emit for the same 10 users at once while every lease is expired every 15 ms and
/// the nodes' connections are dropped every 30 ms: pipelines fail and go again, leases are
/// taken anew (by whichever node asks first after its failure) under forwarded events in
/// flight, and the old holder's appends are refused (40 to 250 of them in the runs I looked
/// at). A third node's tab of each user gets both nodes' events once each, in the order each
/// node emitted them, seqs without a gap, and nothing is counted lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_changing_hands_under_load_lose_repeat_and_reorder_nothing() {
    const USERS: usize = 10;
    const STEPS: u64 = 150;
    let redis = RedisServer::start();
    let (a, b, c) = (
        Node::start(&redis, "a").await,
        Node::start(&redis, "b").await,
        Node::start(&redis, "c").await,
    );
    let users: Vec<UserId> = (0..USERS)
        .map(|u| user_id(&format!("moving-{u:02}")))
        .collect();
    let mut tabs = Vec::new();
    for user in &users {
        tabs.push(c.bridge.subscribe(user, None).await.unwrap());
    }
    let port = redis.port();
    let chaos = tokio::spawn(async move {
        for round in 0..100u32 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            tokio::task::spawn_blocking(move || {
                crate::redis_support::query(port, &["EVAL", EXPIRE_LEASES, "0"]);
                if round % 2 == 1 {
                    crate::redis_support::query(port, &["CLIENT", "KILL", "TYPE", "normal"]);
                }
            })
            .await
            .unwrap();
        }
    });
    for step in 1..=STEPS {
        for user in &users {
            a.emit(user, step);
            b.emit(user, step);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    chaos.await.unwrap();
    for (user, tab) in users.iter().zip(&tabs) {
        let seen = chunks(tab, 2 * STEPS as usize).await;
        both_nodes_in_order(user, &seen, STEPS);
        nothing_more(tab).await;
    }
    let taken = stat(&a, |s| &s.leases_taken) + stat(&b, |s| &s.leases_taken);
    eprintln!(
        "leases taken: {taken}; appends Redis refused: {}; retries: {}",
        refused_appends(&redis),
        stat(&a, |s| &s.publish_retries) + stat(&b, |s| &s.publish_retries)
    );
    assert!(
        taken > USERS as u64,
        "leases were taken again: {taken} taken"
    );
    for node in [&a, &b] {
        assert_eq!(stat(node, |s| &s.events_lost), 0);
    }
}

/// A user's stream is lost under its holder (its keys evicted, say) and opened anew by
/// another node, which takes the lease of the new stream: the old holder's next append is
/// refused (the new lease numbers start above every lease of the old stream), so the new log
/// holds the new holder's event and then the old holder's, forwarded, and nothing of the old
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_of_a_stream_opened_anew_cannot_append_to_the_new_one() {
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a").await;
    let b = Node::start(&redis, "b").await;
    let user = user_id("reopened");
    for step in 1..=3 {
        a.emit(&user, step);
    }
    a.broker.flush().await.unwrap();
    let (meta, log) = (
        format!("agentws:{{{}}}:meta", user.as_str()),
        format!("agentws:{{{}}}:log", user.as_str()),
    );
    assert_eq!(redis.command(&["DEL", &meta, &log]), ":2");
    b.emit(&user, 1);
    b.broker.flush().await.unwrap();
    a.emit(&user, 4);
    a.broker.flush().await.unwrap();
    let entries = crate::redis_support::query_all(
        &redis,
        &[
            "EVAL",
            "local out = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
             local f = e[2] for j = 1, #f, 2 do if f[j] == 'b' then \
             out[#out + 1] = string.match(e[1], '-(%d+)$') .. ' ' .. f[j + 1] end end end \
             return out",
            "1",
            &log,
        ],
    );
    let chunks: Vec<String> = entries
        .iter()
        .map(|entry| {
            let (seq, body) = entry.split_once(' ').unwrap();
            let event: serde_json::Value = serde_json::from_str(&format!("{{{body}")).unwrap();
            format!("{seq} {}", event["data"]["delta"].as_str().unwrap())
        })
        .collect();
    assert_eq!(chunks, ["1 b:1", "2 a:4"]);
}

/// Redis runs a node's pipeline of appends but its answer never reaches the node (a proxy
/// drops the connection as the answer comes): the node takes the user's lease anew, finds in
/// the log that the event went in, and does not append it again; the follower gets it from
/// the log (the new lease's announcement says what it missed). Each event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_whose_answer_was_lost_are_not_appended_twice() {
    let redis = RedisServer::start();
    let proxy = LosingProxy::start(redis.port()).await;
    let config = BridgeConfig::default();
    let behind_proxy = Arc::new(
        RedisBroker::connect(RedisBrokerConfig {
            mode: PublishMode::Sequencer,
            ..RedisBrokerConfig::new(proxy.url(), config.replay_bounds())
        })
        .await
        .unwrap(),
    );
    let a = Node {
        bridge: AgentWebSocketBridge::with_broker(config, behind_proxy.clone()),
        broker: behind_proxy,
        name: "a",
    };
    let b = Node::start(&redis, "b").await;
    let user = user_id("unanswered");
    let tab = b.bridge.subscribe(&user, None).await.unwrap();
    // A tab on the holder's node: the holder hands it its frames itself, and Redis sends it
    // none, so the one whose answer was lost it must fetch from the log.
    let own = a.bridge.subscribe(&user, None).await.unwrap();
    a.emit(&user, 1);
    assert_eq!(chunks(&tab, 1).await, [(1, "a:1".to_owned())]);
    assert_eq!(chunks(&own, 1).await, [(1, "a:1".to_owned())]);
    proxy.lose_next_answer_to(b"XADD");
    a.emit(&user, 2);
    assert_eq!(chunks(&tab, 1).await, [(2, "a:2".to_owned())]);
    assert_eq!(chunks(&own, 1).await, [(2, "a:2".to_owned())]);
    // Redis sends the frame to the follower as it runs the transaction, which can be before
    // the proxy reads (and drops) the answer: wait for the drop rather than look once.
    wait_until("the proxy dropped an answer", || proxy.lost()).await;
    a.emit(&user, 3);
    for tab in [&tab, &own] {
        assert_eq!(chunks(tab, 1).await, [(3, "a:3".to_owned())]);
        nothing_more(tab).await;
    }
    assert!(
        stat(&a, |s| &s.publish_retries) >= 1,
        "the batch was sent again"
    );
    assert_eq!(
        stat(&a, |s| &s.leases_taken),
        2,
        "taken, then taken anew after the failure"
    );
}

/// A TCP proxy in front of Redis that, once armed, drops the connection that sent a request
/// containing given bytes as soon as Redis answers it, without passing the answer on.
struct LosingProxy {
    port: u16,
    armed: Arc<parking_lot::Mutex<Option<&'static [u8]>>>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl LosingProxy {
    async fn start(redis_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed: Arc<parking_lot::Mutex<Option<&'static [u8]>>> = Arc::default();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (armed_in, lost_in) = (Arc::clone(&armed), Arc::clone(&lost));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", redis_port))
                    .await
                    .unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let doomed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (armed, doomed_up) = (Arc::clone(&armed_in), Arc::clone(&doomed));
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 65_536];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        let request = &buffer[..n];
                        {
                            let mut armed = armed.lock();
                            if armed.is_some_and(|needle| {
                                request.windows(needle.len()).any(|w| w == needle)
                            }) {
                                *armed = None;
                                doomed_up.store(true, Ordering::SeqCst);
                            }
                        }
                        if server_write.write_all(request).await.is_err() {
                            return;
                        }
                    }
                });
                let lost = Arc::clone(&lost_in);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 65_536];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        if doomed.load(Ordering::SeqCst) {
                            lost.store(true, Ordering::SeqCst);
                            // Dropping both halves closes the client's connection.
                            return;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, armed, lost }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn lose_next_answer_to(&self, request: &'static [u8]) {
        *self.armed.lock() = Some(request);
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}
