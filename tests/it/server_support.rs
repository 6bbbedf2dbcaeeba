//! A real server on a free port and a real WebSocket client, for the socket-level tests.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_server::config::ServerConfig;
use agent_server::server::RunningServer;
use core_context::{AgentEvent, SequencedEvent};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A server with the synthetic agent and a known secret; `tune` adjusts the config.
pub async fn start_server(tune: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        jwt_secret: Some(SECRET.as_bytes().to_vec()),
        synthetic_agent: true,
        ..ServerConfig::default()
    };
    tune(&mut config);
    sequencer_from_url(&mut config);
    RunningServer::start(config).await.expect("server starts")
}

/// A Redis broker URL ending in [`SEQUENCER`] (see `redis_cluster_support::Sequenced`) stands
/// for that URL with `--broker-mode sequencer`; any other runs `--broker-mode script` (what
/// the default, `auto`, runs on a fresh Redis, named so the tests say which mode they run),
/// unless the test chose a mode.
fn sequencer_from_url(config: &mut ServerConfig) {
    use redis_broker::PublishMode;
    if let agent_server::config::BrokerChoice::Redis(url) = &mut config.broker {
        if let Some(plain) = url.strip_suffix(SEQUENCER) {
            *url = plain.to_owned();
            config.broker_mode = PublishMode::Sequencer;
        } else if config.broker_mode == PublishMode::Auto {
            config.broker_mode = PublishMode::Script;
        }
    }
}

/// See [`sequencer_from_url`].
pub const SEQUENCER: &str = "#sequencer";

/// A server on its own runtime, so a test can kill it the way a crash does: every task (its
/// runs, its sockets, its broker and store tasks) stops at once and nothing is flushed.
pub struct KillableServer {
    runtime: Option<tokio::runtime::Runtime>,
    /// Where it listens.
    pub addr: SocketAddr,
    _server: RunningServer,
}

impl KillableServer {
    /// Starts a server as [`start_server`] does, on a runtime of its own.
    pub fn start(tune: impl FnOnce(&mut ServerConfig) + Send + 'static) -> Self {
        Self::start_named("killable-node", tune)
    }

    /// Starts it on a runtime whose threads are called `threads` (at most 15 bytes, as
    /// Linux keeps them), so [`thread_cpu`] can measure what it spends.
    pub fn start_named(
        threads: &'static str,
        tune: impl FnOnce(&mut ServerConfig) + Send + 'static,
    ) -> Self {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(threads)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime.block_on(start_server(tune));
            KillableServer {
                addr: server.addr(),
                runtime: Some(runtime),
                _server: server,
            }
        })
        .join()
        .unwrap()
    }

    /// Stops it the way a crash does.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The CPU time (user and system) this process's live threads called `name` have used.
pub fn thread_cpu(name: &str) -> Duration {
    // utime and stime are in clock ticks: 100 per second on Linux (USER_HZ).
    const TICK: Duration = Duration::from_millis(10);
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("Linux /proc") {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // The fields after the command's closing parenthesis: state is field 3, utime 14.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    TICK * ticks as u32
}

/// A token for `user` signed with `secret`, expiring in `ttl_secs` (negative: expired).
pub fn token_with(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn token(user: &str) -> String {
    token_with(json!({"sub": user, "exp": now_secs() + 3600}), SECRET)
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub established: Value,
    /// Event frames read while waiting for a reply, handed out by `next` first.
    pub(crate) pending: std::collections::VecDeque<Value>,
}

/// Why a connection attempt failed: the HTTP status and body, or a transport error.
#[derive(Debug)]
pub enum ConnectError {
    Http(u16, String),
    Other(#[allow(dead_code)] String),
}

impl Client {
    /// Connects with `?token=` (and resume parameters, if any).
    pub async fn connect(
        addr: SocketAddr,
        token: &str,
        resume: Option<(&str, u64)>,
    ) -> Result<Client, ConnectError> {
        let mut url = format!("ws://{addr}/ws?token={token}");
        if let Some((epoch, seq)) = resume {
            url.push_str(&format!("&epoch={epoch}&after_seq={seq}"));
        }
        Self::connect_request(url.into_client_request().unwrap()).await
    }

    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Client, ConnectError> {
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                let mut client = Client {
                    ws,
                    established: Value::Null,
                    pending: Default::default(),
                };
                client.established = client.next().await;
                assert_eq!(
                    client.established["type"], "connection_established",
                    "{}",
                    client.established
                );
                Ok(client)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ConnectError::Http(status, body))
            }
            Err(e) => Err(ConnectError::Other(e.to_string())),
        }
    }

    pub async fn user(addr: SocketAddr, user: &str) -> Client {
        Self::resuming(addr, user, None).await
    }

    /// `user`'s connection to `addr`, resuming from `(epoch, after_seq)` if given.
    pub async fn resuming(addr: SocketAddr, user: &str, resume: Option<(&str, u64)>) -> Client {
        Client::connect(addr, &token(user), resume)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect to {addr}: {e:?}"))
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next JSON frame (pings and pongs of the WebSocket layer skipped).
    pub async fn next(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.next_from_socket().await
    }

    async fn next_from_socket(&mut self) -> Value {
        match self.next_message().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next message that is not a ping or pong, within 10 s.
    pub async fn next_message(&mut self) -> Message {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s")
                .expect("the stream ended")
                .expect("a WebSocket error");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    /// The next JSON frame, or the close code when the server closed the socket.
    pub async fn next_or_close(&mut self) -> Result<Value, u16> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        match self.next_message().await {
            Message::Text(text) => Ok(serde_json::from_str(&text).unwrap()),
            Message::Close(frame) => Err(frame.map_or(1005, |f| f.code.into())),
            other => panic!("expected a text or close frame, got {other:?}"),
        }
    }

    /// The close frame's code and reason, reading past any frames before it.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("no close within 15 s")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close: {e}"),
            }
        }
    }

    /// Reads until the connection ends, within 15 s: the close frame's code, or `None` when
    /// it just ended (a peer that died, or a proxy in front of one, sends no close frame).
    pub async fn ended(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("the connection did not end within 15 s")
            {
                Some(Ok(Message::Close(frame))) => {
                    return Some(frame.map_or(1005, |f| f.code.into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Sends `start_agent` and returns the `run_accepted` (or `error`) reply; event frames
    /// that arrive first are kept for `next`.
    pub async fn start(&mut self, request_id: &str, agent: &str, input: Value) -> Value {
        self.send(json!({"type": "start_agent", "request_id": request_id,
                         "payload": {"agent": agent, "message": "go", "input": input}}))
            .await;
        self.reply().await
    }

    /// Starts `agent` with `message` in `thread` (a new thread when `None`, which is then set
    /// to it) and returns the run's id once it is accepted.
    pub async fn start_in_thread(
        &mut self,
        agent: &str,
        message: &str,
        thread: &mut Option<String>,
    ) -> String {
        let mut payload = json!({"agent": agent, "message": message});
        if let Some(thread) = thread.as_ref() {
            payload["thread_id"] = json!(thread);
        }
        self.send(json!({"type": "start_agent", "request_id": "r", "payload": payload}))
            .await;
        let accepted = self.reply().await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
        *thread = accepted["thread_id"].as_str().map(str::to_owned);
        accepted["run_id"].as_str().unwrap().to_owned()
    }

    /// Keeps reading for `duration` (so the WebSocket layer answers pings), keeping frames.
    pub async fn pump(&mut self, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, self.ws.next()).await {
            if let Message::Text(text) = message {
                self.pending.push_back(serde_json::from_str(&text).unwrap());
            }
        }
    }

    /// The next frame that is not an event; events before it are kept for `next`.
    pub async fn reply(&mut self) -> Value {
        loop {
            let frame = self.next_from_socket().await;
            if frame.get("seq").is_none() {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Reads event frames until `runs` terminal events arrived; returns them in order.
    /// `run_accepted` replies (to this connection's own requests) are skipped.
    pub async fn events_until_terminals(&mut self, runs: usize) -> Vec<SequencedEvent> {
        let mut out = Vec::new();
        let mut ended = 0;
        while ended < runs {
            let frame = self.next().await;
            if frame["type"] == "run_accepted" {
                continue;
            }
            assert!(frame.get("seq").is_some(), "expected an event, got {frame}");
            let event: SequencedEvent = serde_json::from_value(frame).unwrap();
            if event.event.kind.is_terminal() {
                ended += 1;
            }
            out.push(event);
        }
        out
    }
}

pub fn events(frames: &[SequencedEvent]) -> Vec<AgentEvent> {
    frames.iter().map(|f| f.event.clone()).collect()
}

/// Asserts the seqs are contiguous, starting after `after`.
pub fn assert_contiguous(frames: &[SequencedEvent], after: u64) {
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(
            frame.seq,
            after + 1 + i as u64,
            "seq gap or repeat at index {i}"
        );
    }
}

// The typed client (`agent_client`), for tests that use the server as an application would.

/// The server's URL as an application passes it to `agent_client`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A `start_agent` of the synthetic agent shaped by `input`.
pub fn synthetic(input: Value) -> agent_protocol::StartAgent {
    agent_protocol::StartAgent {
        agent: "synthetic".into(),
        message: "go".into(),
        thread_id: None,
        input: input.as_object().cloned(),
        multitask: None,
    }
}

/// A typed client of `user` with the default settings.
pub async fn typed(addr: SocketAddr, user: &str) -> agent_client::Client {
    agent_client::Client::connect(&url(addr), &token(user))
        .await
        .expect("connects")
}

/// The next item of `client`'s stream within 10 s.
pub async fn next_item(client: &mut agent_client::Client) -> agent_client::StreamItem {
    tokio::time::timeout(Duration::from_secs(10), client.next_item())
        .await
        .expect("no item within 10 s")
        .expect("the stream ended")
        .expect("the stream failed")
}

/// The next event of `client`'s stream; a notice fails the test.
pub async fn next_event(client: &mut agent_client::Client) -> SequencedEvent {
    match next_item(client).await {
        agent_client::StreamItem::Event(event) => event,
        agent_client::StreamItem::Notice(notice) => panic!("expected an event, got {notice:?}"),
    }
}

/// Reads `client`'s events until `runs` terminal events arrived; a notice fails the test.
pub async fn terminals(client: &mut agent_client::Client, runs: usize) -> Vec<SequencedEvent> {
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < runs {
        let event = next_event(client).await;
        if event.event.kind.is_terminal() {
            ended += 1;
        }
        out.push(event);
    }
    out
}
