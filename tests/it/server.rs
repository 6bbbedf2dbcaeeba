//! The server over real sockets: auth, protocol, isolation under load, resume, slow
//! consumers, shutdown.
//!
//! Tests of what an application sees (lifecycles, isolation, resume) use the typed client,
//! `agent_client::Client`; tests of the wire itself (bad frames, floods, close codes, the
//! auth table, idle timeouts) use the raw socket client of `server_support`.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_client::{ClientConfig, Notice, StreamItem};
use agent_protocol::{Epoch, ErrorCode, ResumeParams, StartAgent};
use core_context::lifecycle::check_lifecycle;
use futures::FutureExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::server_support::{
    Client, ConnectError, SECRET, assert_contiguous, events, next_event, next_item, now_secs,
    start_server, synthetic, terminals, token, token_with, typed, url,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_table_refuses_with_401_and_no_socket() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let unsigned = {
        // `alg: none`, no signature: what an attacker would send.
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, now_secs() + 600);
        format!("{}.{}.", enc(r#"{"alg":"none","typ":"JWT"}"#), enc(&claims))
    };
    let table: Vec<(&str, String, &str)> = vec![
        ("garbage", "garbage".into(), "not a well-formed JWT"),
        (
            "expired",
            token_with(json!({"sub": "alice", "exp": now_secs() - 3600}), SECRET),
            "expired",
        ),
        (
            "wrong key",
            token_with(
                json!({"sub": "alice", "exp": now_secs() + 600}),
                "another-secret-another-secret-xxxxxxxx",
            ),
            "signature is invalid",
        ),
        ("alg none", unsigned, "never `none`"),
        (
            "no sub",
            token_with(json!({"exp": now_secs() + 600}), SECRET),
            "no `sub` claim",
        ),
        (
            "no exp",
            token_with(json!({"sub": "alice"}), SECRET),
            "no `exp` claim",
        ),
        (
            "placeholder sub",
            token_with(json!({"sub": "test", "exp": now_secs() + 600}), SECRET),
            "not a valid user id",
        ),
    ];
    for (name, token, fragment) in table {
        match Client::connect(addr, &token, None).await {
            Err(ConnectError::Http(401, body)) => {
                assert!(body.contains(fragment), "{name}: {body}")
            }
            Err(other) => panic!("{name}: expected 401, got {other:?}"),
            Ok(_) => panic!("{name}: a socket was opened"),
        }
    }
    // No token at all.
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    assert!(
        matches!(Client::connect_request(request).await, Err(ConnectError::Http(401, b)) if b.contains("no token"))
    );
    // A bearer header works; a wrong scheme does not.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("alice")).parse().unwrap(),
    );
    let client = Client::connect_request(request).await.unwrap();
    assert_eq!(client.established["user_id"], "alice");
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Basic {}", token("alice")).parse().unwrap(),
    );
    assert!(matches!(
        Client::connect_request(request).await,
        Err(ConnectError::Http(401, _))
    ));
    // Bad resume parameters are a 400 before any socket.
    match Client::connect(addr, &token("alice"), Some(("ep_x", 1))).await {
        Ok(c) => assert_eq!(c.established["resume"]["reason"], "epoch_changed"),
        Err(e) => panic!("{e:?}"),
    }
    let url = format!("ws://{addr}/ws?token={}&epoch=ep_x", token("alice"));
    assert!(
        matches!(Client::connect_request(url.into_client_request().unwrap()).await, Err(ConnectError::Http(400, b)) if b.contains("both epoch and after_seq"))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_whole_lifecycle_to_the_user() {
    let server = start_server(|_| {}).await;
    let mut alice = typed(server.addr(), "alice").await;
    assert_eq!(alice.position().after_seq, 0);
    let accepted = alice
        .start_agent("assistant", "What is 12*7?")
        .await
        .unwrap();
    let frames = terminals(&mut alice, 1).await;
    assert_contiguous(&frames, 0);
    assert!(frames.iter().all(|f| f.event.run_id == accepted.run_id));
    let summary = check_lifecycle(&events(&frames)).unwrap();
    assert_eq!((summary.completed, summary.tool_calls), (1, 1));
    let Some(last) = frames.last() else {
        unreachable!()
    };
    let result = serde_json::to_value(&last.event.kind).unwrap();
    assert_eq!(result["data"]["result"], "`12*7` = 84.", "{result}");
    server.shutdown().await;
}

/// Answers echo the request's `request_id` (what clients match answers by), and legacy
/// `user_message` frames start the default agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_echo_request_ids_and_legacy_frames_start_the_default_agent() {
    let server = start_server(|_| {}).await;
    let mut alice = Client::user(server.addr(), "alice").await;
    let accepted = alice.start("r1", "assistant", Value::Null).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    assert_eq!(accepted["request_id"], "r1");
    let frames = alice.events_until_terminals(1).await;
    assert_contiguous(&frames, 0);
    alice
        .send(json!({"type": "cancel_run", "request_id": "x", "payload": {"run_id": accepted["run_id"]}}))
        .await;
    let refused = alice.reply().await;
    assert_eq!(
        (refused["code"].as_str(), refused["request_id"].as_str()),
        (Some("run_not_found"), Some("x"))
    );

    // Legacy frames start the default agent.
    alice
        .send(json!({"type": "user_message", "payload": {"content": "hello from an older client"}}))
        .await;
    assert_eq!(alice.reply().await["type"], "run_accepted");
    let more = alice.events_until_terminals(1).await;
    assert_contiguous(&more, frames.len() as u64);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_codes_and_the_connection_stays_open() {
    let server = start_server(|c| c.max_frame_bytes = 2_048).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let big = "x".repeat(3_000);
    // Each bad frame, the code of the error that answers it, and a fragment of its message.
    let text = |frame: &str| Message::Text(frame.into());
    let empty = "the message is empty: type something for the agent";
    let table: Vec<(Message, &str, &str)> = vec![
        (text("{not json"), "invalid_json", "not valid JSON"),
        (text("[]"), "invalid_frame", "must be a JSON object"),
        (text(r#"{"type":"fly"}"#), "unknown_type", "\"fly\""),
        (
            text(r#"{"type":"start_agent","payload":{"agent":"assistant"}}"#),
            "missing_field",
            "payload.message is required",
        ),
        (
            text(r#"{"type":"start_agent","payload":{"agent":1,"message":"m"}}"#),
            "invalid_field",
            "payload.agent must be a string",
        ),
        (
            text(r#"{"type":"start_agent","payload":{"agent":"assistant","message":""}}"#),
            "invalid_field",
            empty,
        ),
        (
            text(r#"{"type":"start_agent","payload":{"agent":"assistant","message":" \n "}}"#),
            "invalid_field",
            empty,
        ),
        (
            text(r#"{"type":"user_message","payload":{"content":" "}}"#),
            "invalid_field",
            empty,
        ),
        (
            text(r#"{"type":"start_agent","payload":{"agent":"nope","message":"m"}}"#),
            "unknown_agent",
            "no agent named",
        ),
        (
            text(r#"{"type":"cancel_run","payload":{"run_id":"bad id"}}"#),
            "invalid_field",
            "payload.run_id",
        ),
        (
            text(&format!(r#"{{"type":"ping","pad":"{big}"}}"#)),
            "frame_too_large",
            "the limit is 2048",
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            "binary_not_supported",
            "binary frames are not part of the protocol",
        ),
    ];
    for (message, expected, fragment) in table {
        let shown = format!("{message:?}");
        client.send_raw(message).await;
        let reply = client.next().await;
        assert_eq!(reply["type"], "error", "{shown}: {reply}");
        assert_eq!(reply["code"], expected, "{shown}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(fragment),
            "{shown}: {reply} lacks {fragment:?}"
        );
    }
    let unknown = client.start("r7", "summarizer", Value::Null).await;
    assert_eq!(unknown["request_id"], "r7");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("available: assistant, synthetic"),
        "{unknown}"
    );
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.next().await["type"], "pong");
    // A frame over 4x the limit is abusive: the socket is closed with 1009.
    client
        .send_raw(Message::Text("y".repeat(9_000).into()))
        .await;
    assert_eq!(client.closed().await.0, 1009);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_cancel_each_others_runs_or_use_each_others_threads() {
    let server = start_server(|_| {}).await;
    let mut alice = typed(server.addr(), "alice").await;
    let mut bob = typed(server.addr(), "bob").await;
    let hang = json!({"thinking": 0, "tools": 0, "chunks": 0, "hang": true});
    let run = alice.start(synthetic(hang)).await.unwrap();
    let in_thread = |message: &str| StartAgent {
        agent: "assistant".into(),
        message: message.into(),
        thread_id: Some(run.thread_id.clone()),
        input: None,
        multitask: None,
    };

    let refused = bob.cancel_run(&run.run_id).await.unwrap_err();
    assert_eq!(refused.code(), Some(&ErrorCode::RunNotFound), "{refused}");
    let stolen = bob.start(in_thread("m")).await.unwrap_err();
    assert_eq!(stolen.code(), Some(&ErrorCode::ThreadNotFound), "{stolen}");

    // Alice's run is untouched: started, still running; her own cancel ends it.
    alice.cancel_run(&run.run_id).await.unwrap();
    let frames = terminals(&mut alice, 1).await;
    let kinds: Vec<_> = frames.iter().map(|f| f.event.kind.type_name()).collect();
    assert_eq!(kinds, ["agent_started", "agent_cancelled"]);
    // Alice may continue her own thread.
    let again = alice.start(in_thread("again")).await.unwrap();
    assert_eq!(again.thread_id, run.thread_id);
    // Bob saw nothing of Alice's: whatever reached him before his pong has been read, and
    // there is nothing.
    bob.ping().await.unwrap();
    assert!(
        bob.next_item().now_or_never().is_none(),
        "bob received an item"
    );
    server.shutdown().await;
}

/// 100 users with 2 connections each (200 sockets), 10 runs per user (1,000 runs): every
/// frame belongs to its user, the lifecycle holds, seq is contiguous, both connections of a
/// user see the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_users_and_connections_each_see_exactly_their_stream() {
    const USERS: usize = 100;
    const RUNS: usize = 10;
    let server = start_server(|c| c.engine.max_concurrent_runs = 10).await;
    let addr = server.addr();
    let mut tasks = Vec::new();
    for u in 0..USERS {
        tasks.push(tokio::spawn(async move {
            let user = format!("load{u:03}");
            let mut main = typed(addr, &user).await;
            let mut second = typed(addr, &user).await;
            let shape = json!({"thinking": 1, "tools": 2, "chunks": 2, "sleep_ms": 1});
            let mut runs = BTreeSet::new();
            for _ in 0..RUNS {
                let accepted = main.start(synthetic(shape.clone())).await;
                let accepted = accepted.unwrap_or_else(|e| panic!("{user}: {e}"));
                runs.insert(accepted.run_id);
            }
            let seen = terminals(&mut second, RUNS).await;
            assert_contiguous(&seen, 0);
            let owned: BTreeSet<_> = seen.iter().map(|f| f.event.run_id.clone()).collect();
            assert_eq!(owned, runs, "{user} saw a foreign run or missed one");
            let summary = check_lifecycle(&events(&seen)).unwrap_or_else(|v| panic!("{user}: {v}"));
            assert_eq!((summary.completed, summary.tool_calls), (RUNS, 2 * RUNS));
            let on_main = terminals(&mut main, RUNS).await;
            assert!(
                on_main == seen,
                "{user}: the two connections saw different streams"
            );
            seen.len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, USERS * RUNS * (1 + 1 + 4 + 2 + 1));
    server.shutdown().await;
}

/// A client that drops its socket at random moments mid-run and resumes from its saved
/// position gets every event exactly once, in order; stale epochs and too-old seqs get a
/// failed resume that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_resume_at_random_moments() {
    let server = start_server(|c| c.bridge.replay_max_events = 200).await;
    let addr = server.addr();
    let resume_from = |epoch: &Epoch, after_seq| ClientConfig {
        resume_from: Some(ResumeParams {
            epoch: epoch.clone(),
            after_seq,
        }),
        ..ClientConfig::default()
    };
    let mut client = typed(addr, "alice").await;
    let epoch = client.position().epoch.clone();
    let runs = 8;
    for _ in 0..runs {
        let shape = json!({"thinking": 2, "tools": 3, "chunks": 4, "sleep_ms": 3});
        client.start(synthetic(shape)).await.unwrap();
    }
    let total = runs * (1 + 2 + 6 + 4 + 1);
    let mut received: Vec<core_context::SequencedEvent> = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut reconnects = 0;
    while received.len() < total {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let take = 1 + (rng % 15) as usize;
        for _ in 0..take {
            if received.len() == total {
                break;
            }
            // A notice (a failed resume) fails the test here.
            received.push(next_event(&mut client).await);
        }
        let saved = client.position().clone();
        drop(client);
        reconnects += 1;
        let config = resume_from(&saved.epoch, saved.after_seq);
        client = agent_client::Client::connect_with(&url(addr), &token("alice"), config)
            .await
            .unwrap();
        // A failed resume would have moved the position (and queued a notice).
        assert_eq!(client.position(), &saved, "the resume failed");
    }
    assert!(reconnects >= 5, "only {reconnects} reconnects");
    assert_contiguous(&received, 0);
    assert_eq!(check_lifecycle(&events(&received)).unwrap().completed, runs);

    let stale_epoch = Epoch::new("ep_stale");
    let config = resume_from(&stale_epoch, 3);
    let mut stale = agent_client::Client::connect_with(&url(addr), &token("alice"), config)
        .await
        .unwrap();
    let expected = Notice::EpochChanged {
        previous: stale_epoch,
        epoch: epoch.clone(),
        oldest_seq: 1,
        last_seq: total as u64,
    };
    assert_eq!(next_item(&mut stale).await, StreamItem::Notice(expected));
    // Push the first events out of the 200-event log, then ask for them.
    for _ in 0..3 {
        let shape = json!({"thinking": 30, "tools": 0, "chunks": 30});
        client.start(synthetic(shape)).await.unwrap();
    }
    terminals(&mut client, 3).await;
    let config = resume_from(&epoch, 1);
    let mut old = agent_client::Client::connect_with(&url(addr), &token("alice"), config)
        .await
        .unwrap();
    match next_item(&mut old).await {
        StreamItem::Notice(Notice::TooOld { after_seq: 1, .. }) => {}
        other => panic!("expected too_old, got {other:?}"),
    }
    server.shutdown().await;
}

/// A client that stops reading is closed with 4008; its queue never exceeds the bound; other
/// users' runs complete normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_others_are_unaffected() {
    let server = start_server(|c| {
        c.bridge.send_queue_events = 4_096;
        c.bridge.send_queue_bytes = 8 << 20;
    })
    .await;
    let addr = server.addr();
    let mut stalled = Client::user(addr, "stalled").await;
    let mut busy = Client::user(addr, "stalled").await;
    let mut other = Client::user(addr, "other").await;
    // 6 runs x 1,000 tool calls whose arguments and results carry a 1.9 KB message: about
    // 24 MB, paced at 1 ms a step so a reading client keeps up, and far more than the
    // kernel's socket buffers plus the 8 MiB queue hold for a client that never reads.
    let flood = json!({"thinking": 0, "tools": 1000, "chunks": 0, "sleep_ms": 1});
    for r in 0..6 {
        busy.send(json!({"type": "start_agent", "request_id": format!("f{r}"),
                         "payload": {"agent": "synthetic", "message": "x".repeat(1_900), "input": flood}}))
            .await;
    }
    let accepted = other.start("o1", "synthetic", json!({"tools": 3})).await;
    assert_eq!(accepted["type"], "run_accepted");
    let frames = other.events_until_terminals(1).await;
    assert_eq!(check_lifecycle(&events(&frames)).unwrap().completed, 1);
    // `busy` keeps reading and gets everything; `stalled` never reads and is cut off.
    let seen = busy.events_until_terminals(6).await;
    assert_contiguous(&seen, 0);
    assert_eq!(stalled.closed().await.0, 4008);
    server.shutdown().await;
}

/// Shutdown: clients get 1001 after every event; a resume against a new server instance says
/// `epoch_changed` instead of silently missing events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_with_1001_and_a_new_instance_reports_epoch_changed() {
    // The grace period is long enough for the quick run on a loaded machine; the hanging run
    // outlasts any grace period and is cancelled.
    let server = start_server(|c| c.shutdown_grace = Duration::from_secs(2)).await;
    let addr = server.addr();
    let mut client = Client::user(addr, "alice").await;
    let epoch = client.established["epoch"].as_str().unwrap().to_owned();
    client
        .start("quick", "synthetic", json!({"tools": 1}))
        .await;
    client
        .start("hang", "synthetic", json!({"tools": 0, "hang": true}))
        .await;
    let shutdown = tokio::spawn(server.shutdown());
    // Both runs end (the hanging one cancelled after the grace period), then the close.
    let frames = client.events_until_terminals(2).await;
    let summary = check_lifecycle(&events(&frames)).unwrap();
    assert_eq!((summary.completed, summary.cancelled), (1, 1));
    let (code, reason) = client.closed().await;
    assert_eq!(code, 1001);
    assert!(reason.contains("resume"), "{reason}");
    shutdown.await.unwrap();

    let again = start_server(|_| {}).await;
    let last = frames.last().unwrap().seq;
    let resumed = Client::connect(again.addr(), &token("alice"), Some((&epoch, last)))
        .await
        .unwrap();
    assert_eq!(resumed.established["resume"]["status"], "failed");
    assert_eq!(resumed.established["resume"]["reason"], "epoch_changed");
    let _ = addr;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rate_limit_and_flooding_are_refused() {
    let server = start_server(|c| c.start_rate_per_minute = 5).await;
    let mut client = Client::user(server.addr(), "alice").await;
    for r in 0..5 {
        let reply = client
            .start(&format!("r{r}"), "assistant", Value::Null)
            .await;
        assert_eq!(reply["type"], "run_accepted", "{reply}");
    }
    let limited = client.start("r5", "assistant", Value::Null).await;
    assert_eq!(limited["code"], "rate_limited");
    assert!(
        limited["message"]
            .as_str()
            .unwrap()
            .contains("5 per minute per user"),
        "{limited}"
    );
    // The limit is per user: a second connection of the same user is limited too.
    let mut second = Client::user(server.addr(), "alice").await;
    assert_eq!(
        second.start("s1", "assistant", Value::Null).await["code"],
        "rate_limited"
    );
    // The connection stays usable.
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.reply().await["type"], "pong");

    // More than 100 frames in 10 s is abusive: the socket is closed with 1008.
    let mut flooder = Client::user(server.addr(), "mallory").await;
    for _ in 0..150 {
        flooder.send(json!({"type": "ping"})).await;
    }
    let (code, reason) = flooder.closed().await;
    assert_eq!(code, 1008, "{reason}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_answering_pings_keeps_them_open() {
    let server = start_server(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut silent = Client::user(server.addr(), "alice").await;
    let mut lively = Client::user(server.addr(), "bob").await;
    // `lively` keeps reading, so its WebSocket layer answers the server's pings, but sends
    // nothing of its own; `silent` reads nothing.
    let keep_reading = tokio::spawn(async move {
        lively.pump(Duration::from_millis(1_800)).await;
        lively.send(json!({"type": "ping"})).await;
        lively.reply().await
    });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (code, _) = silent.closed().await;
    assert_eq!(code, 4000);
    assert_eq!(keep_reading.await.unwrap()["type"], "pong");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_exist_only_without_a_configured_secret() {
    let post = |addr: std::net::SocketAddr, body: &str| {
        let request = crate::support::http_client()
            .post(format!("http://{addr}/dev/token"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let configured = start_server(|_| {}).await;
    assert_eq!(post(configured.addr(), r#"{"user":"alice"}"#).await.0, 404);
    configured.shutdown().await;

    let embedded = start_server(|c| c.jwt_secret = None).await;
    let (status, body) = post(embedded.addr(), r#"{"user":"alice"}"#).await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let client = Client::connect(embedded.addr(), token["token"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(client.established["user_id"], "alice");
    // A name as a person types it: its user id is derived, and said.
    let (status, body) = post(embedded.addr(), r#"{"user":"Alice Smith"}"#).await;
    assert_eq!(status, 200, "{body}");
    let named: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(named["user_id"], "alice-smith");
    // A placeholder is refused with the names that work.
    for name in ["default", "test"] {
        let (status, body) = post(embedded.addr(), &format!(r#"{{"user":"{name}"}}"#)).await;
        assert_eq!(status, 400);
        assert!(
            body.contains("placeholder") && body.contains("any other name works"),
            "{body}"
        );
    }
    let (status, _) = post(embedded.addr(), "not json").await;
    assert_eq!(status, 400);
    embedded.shutdown().await;
}
