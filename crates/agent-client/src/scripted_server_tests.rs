//! The client against a scripted WebSocket server on a local port: the paths a real server
//! takes only under failure (a socket that drops while a request waits, a gap in `seq`, a
//! refused reconnect, a policy close, a server that is gone), played out exactly.
//!
//! Each test scripts the server's side connection by connection; the tests against the real
//! server are in the workspace's integration tests (`tests/it/client.rs`).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use agent_protocol::ErrorCode;
use core_context::approval::Decision;

use crate::{Backoff, Client, ClientConfig, ClientError, Notice, StreamItem};

/// A scripted server's listening socket.
struct Script {
    listener: TcpListener,
}

/// One accepted connection: the socket, and what the upgrade request carried.
struct Accepted {
    socket: WebSocketStream<TcpStream>,
    /// Path and query.
    target: String,
    authorization: Option<String>,
}

impl Script {
    async fn start() -> (Script, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (Script { listener }, url)
    }

    /// Accepts the next connection; `refuse` answers its upgrade with that status and body.
    async fn next(&self, refuse: Option<(u16, &str)>) -> Option<Accepted> {
        let (tcp, _) = within(self.listener.accept()).await.unwrap();
        let mut seen = (String::new(), None);
        // The error type is tungstenite's, fixed by its `Callback` trait.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| {
            seen.0 = request.uri().to_string();
            seen.1 = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            match refuse {
                None => Ok(response),
                Some((status, body)) => {
                    let mut refusal = ErrorResponse::new(Some(body.to_owned()));
                    *refusal.status_mut() = status.try_into().unwrap();
                    Err(refusal)
                }
            }
        };
        let socket = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .ok()?;
        Some(Accepted {
            socket,
            target: seen.0,
            authorization: seen.1,
        })
    }
}

impl Accepted {
    async fn send(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Greets the client: a fresh connection at `last_seq`, or a resume outcome.
    async fn greet(&mut self, epoch: &str, last_seq: u64, resume: Option<&str>) {
        let resume = resume.map_or(String::new(), |r| format!(r#","resume":{r}"#));
        self.send(format!(
            r#"{{"type":"connection_established","connection_id":"conn_1","user_id":"alice","epoch":"{epoch}","last_seq":{last_seq},"server_time":"2026-11-24T10:00:00.000120Z"{resume}}}"#
        ))
        .await;
    }

    async fn events(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.send(event(*seq)).await;
        }
    }

    /// Reads until the client closes the connection.
    async fn until_closed(&mut self) {
        while let Some(Ok(message)) = within(self.socket.next()).await {
            if message.is_close() {
                break;
            }
        }
    }

    /// The next text frame from the client, as JSON.
    async fn frame(&mut self) -> serde_json::Value {
        loop {
            match within(self.socket.next()).await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }
}

fn event(seq: u64) -> String {
    format!(
        r#"{{"type":"agent_thinking","seq":{seq},"run_id":"run_x1","thread_id":"thr_x1","agent_name":"synthetic","timestamp":"2026-11-24T10:00:00.001803Z","data":{{"reasoning":"step","step":{seq}}}}}"#
    )
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the scripted exchange took over 10 s")
}

fn quick() -> ClientConfig {
    ClientConfig {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            max_attempts: Some(5),
        },
        ..ClientConfig::default()
    }
}

/// Reads the stream until `count` events arrived; returns their seqs and the notices.
async fn read(client: &mut Client, count: usize) -> (Vec<u64>, Vec<Notice>) {
    let (mut seqs, mut notices) = (Vec::new(), Vec::new());
    while seqs.len() < count {
        match within(client.next_item()).await {
            Some(Ok(StreamItem::Event(event))) => seqs.push(event.seq),
            Some(Ok(StreamItem::Notice(notice))) => notices.push(notice),
            other => panic!("expected an item, got {other:?}"),
        }
    }
    (seqs, notices)
}

#[tokio::test]
async fn the_token_travels_in_the_header_and_never_in_the_url() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut conn = script.next(None).await.unwrap();
        conn.greet("ep_1", 7, None).await;
        (conn.target, conn.authorization)
    });
    let client = Client::connect(&url, "header.payload.sig").await.unwrap();
    assert_eq!(client.user_id().as_str(), "alice");
    assert_eq!(client.position().after_seq, 7);
    let (target, authorization) = server.await.unwrap();
    assert_eq!(target, "/ws");
    assert_eq!(authorization.as_deref(), Some("Bearer header.payload.sig"));
}

#[tokio::test]
async fn a_request_in_flight_when_the_socket_drops_fails_and_is_not_sent_again() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        first.events(&[1, 2]).await;
        let start = first.frame().await;
        assert_eq!(start["type"], "start_agent");
        drop(first);
        let mut second = script.next(None).await.unwrap();
        let target = second.target.clone();
        second
            .greet("ep_1", 3, Some(r#"{"status":"ok","replayed":1}"#))
            .await;
        second.events(&[3]).await;
        // The next frame the client sends on the new connection is the ping it is asked
        // for below, not the start_agent again.
        let next = second.frame().await;
        second
            .send(r#"{"type":"pong","server_time":"2026-11-24T10:00:01.000000Z"}"#.into())
            .await;
        (target, next)
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    let started = client.start_agent("assistant", "hi").await;
    assert_eq!(started, Err(ClientError::ConnectionLost));
    let (seqs, notices) = read(&mut client, 3).await;
    assert_eq!(seqs, [1, 2, 3]);
    assert!(
        matches!(notices[..], [Notice::Reconnected { replayed: 1, .. }]),
        "{notices:?}"
    );
    client.ping().await.unwrap();
    let (target, next) = server.await.unwrap();
    assert_eq!(target, "/ws?epoch=ep_1&after_seq=2");
    assert_eq!(next["type"], "ping", "{next}");
}

#[tokio::test]
async fn a_gap_is_filled_by_a_resume_and_duplicates_are_dropped() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        first.events(&[1, 2, 4]).await;
        let mut second = script.next(None).await.unwrap();
        second
            .greet("ep_1", 5, Some(r#"{"status":"ok","replayed":3}"#))
            .await;
        // A replay that overlaps what the client has: 2 is a duplicate.
        second.events(&[2, 3, 4, 5]).await;
        second.until_closed().await;
        second.target
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    let (seqs, _) = read(&mut client, 5).await;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(client.position().after_seq, 5);
    drop(client);
    assert_eq!(server.await.unwrap(), "/ws?epoch=ep_1&after_seq=2");
}

#[tokio::test]
async fn a_refused_reconnect_ends_the_stream_with_the_servers_reason() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        first.events(&[1]).await;
        drop(first);
        let body = r#"{"error":"unauthorized","message":"the token has expired"}"#;
        assert!(script.next(Some((401, body))).await.is_none());
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    let (seqs, _) = read(&mut client, 1).await;
    assert_eq!(seqs, [1]);
    match within(client.next_item()).await {
        Some(Err(ClientError::Refused { status: 401, error })) => {
            assert_eq!(error.message, "the token has expired");
        }
        other => panic!("expected the 401, got {other:?}"),
    }
    assert!(within(client.next_item()).await.is_none());
    assert_eq!(
        client.start_agent("assistant", "hi").await,
        Err(ClientError::Closed)
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_policy_close_ends_the_stream_and_a_resumable_close_does_not() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        let close = |code: u16, reason: &str| {
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
        };
        first
            .socket
            .send(close(4008, "slow consumer"))
            .await
            .unwrap();
        let mut second = script.next(None).await.unwrap();
        second
            .greet("ep_1", 0, Some(r#"{"status":"ok","replayed":0}"#))
            .await;
        second
            .socket
            .send(close(1008, "too many messages"))
            .await
            .unwrap();
        second.until_closed().await;
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    assert!(matches!(
        within(client.next_item()).await,
        Some(Ok(StreamItem::Notice(Notice::Reconnected { .. })))
    ));
    match within(client.next_item()).await {
        Some(Err(error @ ClientError::ClosedByServer { code: 1008, .. })) => {
            assert!(error.to_string().contains("slow down"), "{error}");
        }
        other => panic!("expected the 1008 close, got {other:?}"),
    }
    assert!(within(client.next_item()).await.is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn reconnecting_gives_up_after_max_attempts() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        // The server goes away for good: nothing listens on the port any more.
        drop(script);
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    server.await.unwrap();
    match within(client.next_item()).await {
        Some(Err(ClientError::ReconnectFailed { attempts: 5, last })) => {
            assert!(matches!(*last, ClientError::Unreachable { .. }), "{last:?}");
        }
        other => panic!("expected ReconnectFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_falls_behind_loses_nothing() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut conn = script.next(None).await.unwrap();
        conn.greet("ep_1", 0, None).await;
        let seqs: Vec<u64> = (1..=200).collect();
        conn.events(&seqs).await;
        conn.until_closed().await;
    });
    let config = ClientConfig {
        max_buffered_items: 4,
        ..quick()
    };
    let mut client = Client::connect_with(&url, "t.t.t", config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (seqs, notices) = read(&mut client, 200).await;
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert!(notices.is_empty(), "{notices:?}");
    drop(client);
    server.await.unwrap();
}

/// With the `tls` feature, `wss://` speaks TLS (here to a server that is not TLS, so the
/// handshake fails cleanly instead of the client sending the upgrade in the clear).
#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_speaks_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut hello)
            .await
            .unwrap();
        hello[0]
    });
    let error = Client::connect(&url, "t.t.t").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    // 0x16: a TLS handshake record, not the `G` of `GET /ws`.
    assert_eq!(server.await.unwrap(), 0x16);
}

#[tokio::test]
async fn frames_of_newer_types_are_handed_on_in_order_with_their_seq() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut first = script.next(None).await.unwrap();
        first.greet("ep_1", 0, None).await;
        first.events(&[1]).await;
        first
            .send(r#"{"type":"agent_dreaming","seq":2,"run_id":"run_x1","data":{"x":1}}"#.into())
            .await;
        first.events(&[3]).await;
        first.until_closed().await;
    });
    let mut client = Client::connect_with(&url, "t.t.t", quick()).await.unwrap();
    let (seqs, notices) = read(&mut client, 2).await;
    assert_eq!(seqs, [1, 3], "the newer frame's seq is not a gap");
    let [Notice::NewerFrame(frame)] = notices.as_slice() else {
        panic!("{notices:?}")
    };
    assert_eq!(
        (frame.kind.as_str(), frame.seq),
        ("agent_dreaming", Some(2))
    );
    assert_eq!(frame.value["data"]["x"], 1);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn a_decision_is_taken_by_silence_and_refused_by_an_error() {
    let (script, url) = Script::start().await;
    let server = tokio::spawn(async move {
        let mut conn = script.next(None).await.unwrap();
        conn.greet("ep_1", 0, None).await;
        // Refused: the error names the request; the ping after it is answered as usual.
        let refused = conn.frame().await;
        assert_eq!(conn.frame().await["type"], "ping");
        conn.send(format!(
            r#"{{"type":"error","request_id":{},"code":"approval_expired","message":"too late"}}"#,
            refused["request_id"]
        ))
        .await;
        conn.send(r#"{"type":"pong","server_time":"2026-11-24T10:00:01.000000Z"}"#.into())
            .await;
        // Taken: nothing but the pong.
        let taken = conn.frame().await;
        assert_eq!(conn.frame().await["type"], "ping");
        conn.send(r#"{"type":"pong","server_time":"2026-11-24T10:00:02.000000Z"}"#.into())
            .await;
        (refused, taken)
    });
    let client = Client::connect(&url, "t.t.t").await.unwrap();
    let run = core_context::RunId::parse("run_x1").unwrap();
    let late = client
        .resolve_approval(&run, "call_1", Decision::Approve)
        .await;
    assert_eq!(
        late,
        Err(ClientError::Server {
            code: ErrorCode::ApprovalExpired,
            message: "too late".into(),
        })
    );
    let edited = Decision::Edit {
        arguments: serde_json::json!({"expression": "12*8"}),
    };
    client
        .resolve_approval(&run, "call_2", edited)
        .await
        .unwrap();
    let (refused, taken) = server.await.unwrap();
    assert_eq!(refused["type"], "resolve_approval");
    assert_eq!(
        refused["payload"],
        serde_json::json!({"run_id": "run_x1", "tool_call_id": "call_1", "decision": "approve"})
    );
    assert_eq!(
        taken["payload"],
        serde_json::json!({"run_id": "run_x1", "tool_call_id": "call_2", "decision": "edit",
            "arguments": {"expression": "12*8"}})
    );
}
