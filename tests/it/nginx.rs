//! A real load balancer: Debian's nginx with the configuration `docs/operations.md` gives (see
//! `nginx_support`), in front of two nodes sharing a private Redis. Through it: a socket runs
//! an agent to its end; the node a socket went through dies, and the socket resumes through
//! nginx on the other node with no gap, and the node, back, gets connections again; a drained
//! node's new sockets go to the other node and its open ones end with 1001 and resume there;
//! AG-UI events come through one by one (a run that never ends still shows its first events)
//! and a client that leaves cancels its run; the browser's `Host` reaches the node for its
//! origin check; `/metrics` is not served through it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent_server::config::{BrokerChoice, ServerConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::agui::{events, post, run_input};
use crate::history_server::http_text;
use crate::nginx_support::Nginx;
use crate::redis_support::RedisServer;
use crate::server_support::{
    Client, ConnectError, KillableServer, assert_contiguous, start_server, token,
};

/// A node on the Redis at `url`, on `addr` when given (a node that comes back on its own).
fn tune(url: &str, addr: Option<SocketAddr>) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let url = url.to_owned();
    move |config| {
        config.broker = BrokerChoice::Redis(url);
        config.start_rate_per_minute = 1_000;
        // An AG-UI response that ends cancels its run after this grace.
        config.agui_reattach = std::time::Duration::from_secs(1);
        if let Some(addr) = addr {
            config.addr = addr;
        }
    }
}

/// The WebSocket connections the node at `addr` has accepted so far.
async fn opened(addr: SocketAddr) -> u64 {
    let (_, text) = http_text(addr, "GET", "/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix("agent_server_connections_opened_total "))
        .expect("the connection counter is served")
        .parse()
        .unwrap()
}

async fn opened_by_each(nodes: [SocketAddr; 2]) -> [u64; 2] {
    [opened(nodes[0]).await, opened(nodes[1]).await]
}

/// Waits until nothing takes connections at `addr` any more (the node is gone).
async fn until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still takes connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(seq, type)` of each event, to compare two streams.
fn shape(events: &[core_context::SequencedEvent]) -> Vec<(u64, &'static str)> {
    events
        .iter()
        .map(|e| (e.seq, e.event.kind.type_name()))
        .collect()
}

/// A socket through nginx runs an agent to its end. Then the node it went through dies: nginx
/// ends the socket, alice's other tab (on the other node) runs another agent meanwhile, and
/// the socket reconnects through nginx, which takes it to the live node: it resumes there with
/// exactly what it missed. Every new socket through nginx reaches the live node, and the dead
/// one, started again on its address, gets sockets through nginx again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_through_nginx_resumes_on_the_other_node_when_its_node_dies() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut nodes = [
        KillableServer::start(tune(&url, None)),
        KillableServer::start(tune(&url, None)),
    ];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let nginx = Nginx::start(addrs);

    let before = opened_by_each(addrs).await;
    let mut through = Client::user(nginx.addr, "alice").await;
    let epoch = through.established["epoch"].as_str().unwrap().to_owned();
    let accepted = through
        .start(
            "r1",
            "synthetic",
            json!({"thinking": 2, "tools": 1, "chunks": 3}),
        )
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let first = through.events_until_terminals(1).await;
    assert_contiguous(&first, 0);
    let last = first.last().unwrap();
    assert_eq!(last.event.kind.type_name(), "agent_completed", "{last:?}");
    let last = last.seq;
    let after = opened_by_each(addrs).await;
    let via: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        via.len(),
        1,
        "one node took the socket: {before:?} -> {after:?}"
    );
    let (dead, live) = (via[0], 1 - via[0]);

    nodes[dead].kill();
    assert_eq!(
        through.ended().await,
        None,
        "a node that died sends no close frame"
    );
    until_refused(addrs[dead]).await;
    let mut other_tab = Client::user(addrs[live], "alice").await;
    let accepted = other_tab
        .start(
            "r2",
            "synthetic",
            json!({"thinking": 3, "tools": 0, "chunks": 2}),
        )
        .await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let missed = other_tab.events_until_terminals(1).await;
    assert_contiguous(&missed, last);

    let mut resumed = Client::resuming(nginx.addr, "alice", Some((&epoch, last))).await;
    assert_eq!(
        resumed.established["resume"],
        json!({"status": "ok", "replayed": missed.len()}),
        "{}",
        resumed.established
    );
    let replayed = resumed.events_until_terminals(1).await;
    assert_contiguous(&replayed, last);
    assert_eq!(shape(&replayed), shape(&missed));
    assert_eq!(replayed, missed);

    // Round robin or not, every new socket through nginx reaches the live node.
    let before = opened(addrs[live]).await;
    for i in 0..4 {
        let client = Client::user(nginx.addr, &format!("later{i}")).await;
        assert!(client.established["epoch"].is_string());
    }
    assert_eq!(opened(addrs[live]).await, before + 4);

    // The node comes back on its address. Alice's stream is in Redis: it resumes there too.
    nodes[dead] = KillableServer::start(tune(&url, Some(addrs[dead])));
    let back = Client::resuming(addrs[dead], "alice", Some((&epoch, last))).await;
    assert_eq!(back.established["resume"]["status"], "ok");
    // nginx left it out after it refused a connection; within fail_timeout (10 s) and a
    // margin, sockets through nginx reach it again.
    let base = opened(addrs[dead]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        drop(Client::user(nginx.addr, &format!("probe{i}")).await);
        if opened(addrs[dead]).await > base {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no socket through nginx reached the node that came back within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A node drained behind nginx (SIGTERM's shutdown) while a socket through nginx has a run on
/// it: during its grace it answers new upgrades 503, and nginx takes each to the other node
/// instead; the socket gets its run's end (cancelled when the grace ran out), then 1001, and
/// resumes through nginx on the other node with nothing missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_sockets_move_through_nginx_to_the_other_node() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let tune = tune(&redis.url(), None);
        nodes.push(
            start_server(move |config| {
                tune(config);
                config.shutdown_grace = Duration::from_secs(4);
            })
            .await,
        );
    }
    let addrs = [nodes[0].addr(), nodes[1].addr()];
    let nginx = Nginx::start(addrs);

    let before = opened_by_each(addrs).await;
    let mut through = Client::user(nginx.addr, "bob").await;
    let epoch = through.established["epoch"].as_str().unwrap().to_owned();
    let hang = json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true});
    let accepted = through.start("r1", "synthetic", hang).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let kinds = ["agent_thinking", "agent_cancelled"];
    assert_eq!(
        until_run(&mut through, &run, &kinds).await["type"],
        "agent_thinking"
    );
    let after = opened_by_each(addrs).await;
    let via: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        via.len(),
        1,
        "one node took the socket: {before:?} -> {after:?}"
    );
    let drained = nodes.remove(via[0]);
    let (drained_addr, live) = (drained.addr(), nodes.remove(0));
    let draining = tokio::spawn(drained.shutdown());
    let deadline = Instant::now() + Duration::from_secs(3);
    while http_text(drained_addr, "GET", "/readyz", None).await.0 != 503 {
        assert!(Instant::now() < deadline, "the node did not start draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let base = opened(live.addr()).await;
    for i in 0..4 {
        let client = Client::user(nginx.addr, &format!("new{i}")).await;
        assert!(client.established["epoch"].is_string());
    }
    assert_eq!(
        opened(live.addr()).await,
        base + 4,
        "every new socket on the live node"
    );

    let end = until_run(&mut through, &run, &kinds[1..]).await;
    assert_eq!(end["type"], "agent_cancelled", "{end}");
    let last = end["seq"].as_u64().unwrap();
    assert_eq!(
        through.ended().await,
        Some(1001),
        "the drained node's close, through nginx"
    );
    draining.await.unwrap();
    let mut resumed = Client::resuming(nginx.addr, "bob", Some((&epoch, last))).await;
    assert_eq!(
        resumed.established["resume"],
        json!({"status": "ok", "replayed": 0}),
        "{}",
        resumed.established
    );
    let accepted = resumed.start("r2", "synthetic", json!({})).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let next = resumed.events_until_terminals(1).await;
    assert_contiguous(&next, last);
}

/// The AG-UI types of `events`, in order.
fn types<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `response`'s events to the end of the stream, each with when it arrived.
async fn timed_events(response: &mut reqwest::Response) -> Vec<(Instant, Value)> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(15), response.chunk())
        .await
        .expect("a chunk within 15 s")
        .unwrap()
    {
        let now = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for data in block.lines().filter_map(|l| l.strip_prefix("data: ")) {
                out.push((now, serde_json::from_str(data).unwrap()));
            }
        }
    }
    out
}

/// Reads `client`'s events until one of `run` whose type is one of `kinds`; returns it.
async fn until_run(client: &mut Client, run: &str, kinds: &[&str]) -> Value {
    loop {
        let frame = client.next().await;
        if frame["run_id"] == run && kinds.iter().any(|k| frame["type"] == *k) {
            return frame;
        }
    }
}

/// AG-UI through nginx: a run that never ends shows its first events (nginx buffers nothing),
/// and ends cancelled when its client leaves; a run of several steps arrives event by event,
/// the same events as straight from a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agui_events_come_through_nginx_as_the_run_makes_them() {
    let redis = RedisServer::start();
    let nodes = [
        start_server(tune(&redis.url(), None)).await,
        start_server(tune(&redis.url(), None)).await,
    ];
    let nginx = Nginx::start([nodes[0].addr(), nodes[1].addr()]);
    let mut socket = Client::user(nodes[0].addr(), "alice").await;

    // A run that never ends: its first events reach the client only if nothing holds them.
    let hang = json!({"thinking": 1, "tools": 0, "chunks": 1, "hang": true});
    let body = run_input("t-hang", "wait", hang).to_string();
    let mut response = post(nginx.addr, "synthetic", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let got = events(&mut response, |e| {
        e.iter().any(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
    })
    .await;
    assert_eq!(
        types(&got),
        [
            "RUN_STARTED",
            "CUSTOM",
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
        ]
    );
    let run = got[1]["value"]["run_id"].as_str().unwrap().to_owned();
    // On alice's stream, the run's chunk with no end before it; it ends when the client leaves
    // (after the grace a continuation would have had).
    let kinds = [
        "agent_response_chunk",
        "agent_completed",
        "agent_error",
        "agent_cancelled",
    ];
    assert_eq!(
        until_run(&mut socket, &run, &kinds).await["type"],
        "agent_response_chunk"
    );
    drop(response);
    assert_eq!(
        until_run(&mut socket, &run, &kinds[1..]).await["type"],
        "agent_cancelled",
        "nginx closed the node's side when the client left"
    );

    // Six steps 200 ms apart: the first event comes about 1.2 s before the last.
    let steps = json!({"thinking": 2, "tools": 1, "chunks": 3, "sleep_ms": 200});
    let body = run_input("t-steps", "go", steps).to_string();
    let mut direct = post(nodes[1].addr(), "synthetic", Some("alice"), &body).await;
    let direct = timed_events(&mut direct).await;
    let mut response = post(nginx.addr, "synthetic", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    let through = timed_events(&mut response).await;
    let through_types = types(through.iter().map(|(_, event)| event));
    assert_eq!(through_types, types(direct.iter().map(|(_, event)| event)));
    assert_eq!(through_types.last().unwrap(), "RUN_FINISHED");
    let spread = through.last().unwrap().0 - through[0].0;
    assert!(
        spread >= Duration::from_millis(600),
        "the events came {spread:?} apart: nginx held them back"
    );

    // A body over the node's limit (1 MiB) is refused by nginx itself (the guide sets its
    // limit to the node's), never half sent to a node that stops reading it.
    let huge = run_input("t-huge", &"x".repeat(1536 * 1024), json!({})).to_string();
    let response = post(nginx.addr, "synthetic", Some("alice"), &huge).await;
    assert_eq!(response.status(), 413);
    let text = response.text().await.unwrap();
    assert!(text.contains("413 Request Entity Too Large"), "{text}");
}

/// What a browser sends through nginx: its `Origin` is the site's (`http://` and nginx's host
/// and port), which the node takes for its own because nginx passes the `Host` the browser
/// sent; the same `Origin` straight to a node is another site's. Another origin is refused
/// through nginx too. The page and the API answer through nginx; `/metrics` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browsers_host_reaches_the_node_and_metrics_stay_inside() {
    let redis = RedisServer::start();
    let nodes = [
        start_server(tune(&redis.url(), None)).await,
        start_server(tune(&redis.url(), None)).await,
    ];
    let addrs = [nodes[0].addr(), nodes[1].addr()];
    let nginx = Nginx::start(addrs);
    let site = format!("http://{}", nginx.addr);
    let upgrade = |addr: SocketAddr, origin: &str| {
        let mut request = format!("ws://{addr}/ws?token={}", token("alice"))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        Client::connect_request(request)
    };
    // Twice: round robin takes one to each node, and both take the site's origin.
    let before = opened_by_each(addrs).await;
    for _ in 0..2 {
        let client = upgrade(nginx.addr, &site).await;
        assert!(
            client.is_ok(),
            "the site's own page through nginx: {client:?}",
            client = client.as_ref().err()
        );
    }
    let after = opened_by_each(addrs).await;
    assert_eq!([after[0] - before[0], after[1] - before[1]], [1, 1]);
    for (addr, origin) in [
        (nodes[0].addr(), site.as_str()),
        (nginx.addr, "http://evil.example"),
    ] {
        match upgrade(addr, origin).await {
            Err(ConnectError::Http(403, body)) => {
                assert!(body.contains("origin_not_allowed"), "{body}");
            }
            other => panic!("{origin} to {addr}: {:?}", other.err()),
        }
    }

    let (status, page) = http_text(nginx.addr, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert_eq!(page, agent_server::routes::CHAT_PAGE);
    let (status, me) = http_text(nginx.addr, "GET", "/v1/me", Some("alice")).await;
    assert_eq!((status, me.as_str()), (200, r#"{"user_id":"alice"}"#));
    let (status, _) = http_text(nginx.addr, "GET", "/metrics", None).await;
    assert_eq!(status, 403, "/metrics through nginx");
    let (status, _) = http_text(nodes[0].addr(), "GET", "/metrics", None).await;
    assert_eq!(status, 200, "/metrics on the node");
}
