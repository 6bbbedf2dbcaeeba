//! `agent-server chat`: a terminal client that starts one run and prints it as a live timeline.
//!
//! It is a newcomer's first look at the server and a worked example of wire protocol v1
//! (`docs/protocol.md`): get a token (a dev token from `POST /dev/token`, or a JWT the caller
//! already has), open `/ws?token=...`, read `connection_established`, send `start_agent`, wait
//! for `run_accepted`, then print the events of that run (and of its sub-runs, indented) until
//! the run's terminal event. Ctrl-C sends `cancel_run` once and keeps printing until the run
//! says it was cancelled; a second Ctrl-C quits without waiting.
//!
//! The client speaks plain `http://` and `ws://` only: the server binary has no TLS either, and
//! a TLS stack is a large dependency for a tool meant to run next to the server.
//!
//! Formatting is kept apart from IO (`Timeline`, `RunFilter`) so that the timeline is tested
//! against the frames of `docs/protocol-examples.json` without a server.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use crate::protocol::json_kind;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::CloseFrame};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The `request_id` of the one `start_agent` this client sends.
const START_REQUEST_ID: &str = "chat-1";
/// The `request_id` of the `cancel_run` sent on Ctrl-C, so a refusal can be told apart.
const CANCEL_REQUEST_ID: &str = "chat-cancel";
/// How long to wait for the server to accept a TCP connection, a WebSocket upgrade, an HTTP
/// answer or a first frame. Generous: only a dead or wedged server takes this long.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for `run_accepted`. A queued run is still accepted at once, so only a
/// wedged server hits this.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the server to answer our close frame before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest HTTP response body read (dev token answers and refused upgrades are tiny).
const MAX_HTTP_BODY: usize = 64 * 1024;
/// Event frames kept while waiting for `run_accepted`, in case the run's first events arrive
/// before the acceptance (the protocol does not order the two).
const MAX_EARLY_FRAMES: usize = 1_024;
/// Width of the event label column of the timeline (the longest label is `tool failed`).
const LABEL_WIDTH: usize = 11;

/// Arguments of `agent-server chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The server's base URL (plain http:// only; the WebSocket is ws://HOST:PORT/ws).
    #[arg(
        long,
        value_name = "URL",
        env = "AGENT_SERVER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Get a development token for this user from the server (POST /dev/token). Works only
    /// when the server generated its own secret. Takes precedence over --token.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// A JWT (HS256, `sub` = your user id) to connect with.
    #[arg(
        long,
        value_name = "JWT",
        env = "AGENT_SERVER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The agent to run.
    #[arg(long, value_name = "NAME", default_value = "assistant")]
    pub agent: String,
    /// Continue this thread (the thread id printed by an earlier run).
    #[arg(long, value_name = "THREAD_ID")]
    pub thread: Option<String>,
    /// Agent-specific options: a JSON object handed to the agent as is.
    #[arg(long, value_name = "JSON", value_parser = parse_input)]
    pub input: Option<Map<String, Value>>,
    /// Print the raw protocol frames (one JSON object per line) instead of the timeline.
    #[arg(long)]
    pub json: bool,
    /// The message to send to the agent.
    #[arg(value_name = "MESSAGE")]
    pub message: String,
}

/// Why `agent-server chat` failed; every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Neither `--user` nor `--token` was given.
    #[error(
        "no credentials: pass --user NAME (a dev token from a server without a configured \
         secret) or --token JWT (or set AGENT_SERVER_TOKEN)"
    )]
    NoCredentials,
    /// `--server` is not a usable `http://host:port` URL.
    #[error("--server {url:?} is not usable: {reason}")]
    InvalidServerUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--server` names an `https://` or `wss://` URL.
    #[error(
        "--server {url:?} uses TLS, but `agent-server chat` speaks plain http:// and ws:// only; \
         connect to the server's own http:// address (for example through an SSH tunnel)"
    )]
    TlsNotSupported {
        /// The URL as given.
        url: String,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {address}: {source}; is `agent-server serve` running there?")]
    Connect {
        /// `host:port`.
        address: String,
        /// The IO error.
        source: io::Error,
    },
    /// The server did not answer in time.
    #[error("timed out after {} s waiting for {what}", timeout.as_secs())]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// The HTTP request for a dev token failed below the HTTP level.
    #[error("the request to {url} failed: {message}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// `POST /dev/token` answered 404: the server has a configured secret.
    #[error("this server has a configured JWT secret and no dev tokens; pass --token")]
    DevTokensDisabled,
    /// `POST /dev/token` answered something other than 200 or 404.
    #[error("POST {url} answered HTTP {status}: {message}")]
    DevTokenRefused {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The WebSocket upgrade was refused with HTTP 401.
    #[error("the server refused the token: {message}")]
    TokenRefused {
        /// The server's explanation (missing, malformed, expired, bad signature, ...).
        message: String,
    },
    /// The WebSocket upgrade was refused with another HTTP status.
    #[error("the server refused the WebSocket connection with HTTP {status}: {message}")]
    UpgradeRefused {
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The WebSocket failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server sent something the protocol does not allow here.
    #[error(
        "unexpected answer from the server: {0}; is this an agent-server speaking protocol v1?"
    )]
    Protocol(String),
    /// The server answered `start_agent` with an `error` frame.
    #[error("the server refused the run ({code}): {message}")]
    RunRefused {
        /// The error code (`unknown_agent`, `rate_limited`, `too_many_runs`, ...).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The run ended with `agent_error`.
    #[error("the run failed ({code}): {message}")]
    RunFailed {
        /// The error code (`timeout`, `panic`, `agent_failed`, ...).
        code: String,
        /// The agent's or engine's explanation.
        message: String,
    },
    /// The run ended with `agent_cancelled`.
    #[error("the run was cancelled: {reason}")]
    RunCancelled {
        /// Why.
        reason: String,
    },
    /// The server closed the WebSocket before the run ended.
    #[error("the server closed the connection before the run ended: {code} {reason}")]
    Closed {
        /// The close code (1001 shutting down, 4008 slow consumer, ...).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The user pressed Ctrl-C twice.
    #[error("interrupted before run {run_id} ended; it may still be running on the server")]
    Interrupted {
        /// The run.
        run_id: String,
    },
    /// Writing to the terminal failed (for example, a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
}

/// Runs `agent-server chat`: one run, printed until it ends.
pub async fn run(args: ChatArgs) -> Result<(), ChatError> {
    let server = ServerUrl::parse(&args.server)?;
    let token = match (&args.user, &args.token) {
        (Some(user), _) => fetch_dev_token(&server, user).await?,
        (None, Some(token)) => token.clone(),
        (None, None) => return Err(ChatError::NoCredentials),
    };
    let mut out = Output { json: args.json };
    let mut conn = Connection::open(&server, &token).await?;

    let established = within(NETWORK_TIMEOUT, "connection_established", conn.next()).await?;
    if established.kind() != "connection_established" {
        return Err(ChatError::Protocol(format!(
            "the first frame should be connection_established, got {:?}",
            established.kind()
        )));
    }
    out.raw(&established)?;
    status(&format!(
        "connected to {} as {}",
        server.ws_url_for_display(),
        established.str_field("user_id").unwrap_or("?")
    ));

    conn.send(&start_agent_frame(&args)).await?;
    let (run_id, early) = within(
        ACCEPT_TIMEOUT,
        "run_accepted",
        wait_for_acceptance(&mut conn, &mut out),
    )
    .await?;

    let mut view = RunView {
        filter: RunFilter::new(&run_id),
        timeline: Timeline::default(),
        accepted_at: Instant::now(),
    };
    for frame in &early {
        if let Some(outcome) = view.show(frame, &mut out)? {
            conn.close().await;
            return outcome;
        }
    }

    // The handler is installed only once the run is accepted: before that there is nothing to
    // cancel, and the default Ctrl-C (end the process) is the right thing.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut ctrl_c_works = true;
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            frame = conn.next() => {
                let frame = frame?;
                if frame.kind() == "error" {
                    out.text(&view.timeline.finish())?;
                    report_error_frame(&frame, &mut out)?;
                    continue;
                }
                if let Some(outcome) = view.show(&frame, &mut out)? {
                    conn.close().await;
                    return outcome;
                }
            }
            signal = &mut ctrl_c, if ctrl_c_works => {
                if signal.is_err() {
                    // Without a signal handler Ctrl-C keeps its default meaning; keep waiting.
                    ctrl_c_works = false;
                    continue;
                }
                out.text(&view.timeline.finish())?;
                if cancel_sent {
                    return Err(ChatError::Interrupted { run_id });
                }
                conn.send(&cancel_frame(&run_id)).await?;
                cancel_sent = true;
                status(&format!("cancelling run {run_id}; press Ctrl-C again to quit without waiting"));
                ctrl_c = Box::pin(tokio::signal::ctrl_c());
            }
        }
    }
}

/// Parses `--input`: it must be a JSON object, because the server hands it to the agent as its
/// options and refuses anything else.
fn parse_input(raw: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "must be a JSON object such as '{{\"thinking\":2}}', got {}",
            json_kind(&other)
        )),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

fn start_agent_frame(args: &ChatArgs) -> Value {
    let mut payload = Map::new();
    payload.insert("agent".into(), Value::String(args.agent.clone()));
    payload.insert("message".into(), Value::String(args.message.clone()));
    if let Some(thread) = &args.thread {
        payload.insert("thread_id".into(), Value::String(thread.clone()));
    }
    if let Some(input) = &args.input {
        payload.insert("input".into(), Value::Object(input.clone()));
    }
    json!({"type": "start_agent", "request_id": START_REQUEST_ID, "payload": payload})
}

fn cancel_frame(run_id: &str) -> Value {
    json!({"type": "cancel_run", "request_id": CANCEL_REQUEST_ID, "payload": {"run_id": run_id}})
}

/// Reads until the server accepts or refuses our `start_agent`. Event frames read meanwhile are
/// returned, since the run's first events may overtake its acceptance.
async fn wait_for_acceptance(
    conn: &mut Connection,
    out: &mut Output,
) -> Result<(String, VecDeque<Incoming>), ChatError> {
    let mut early = VecDeque::new();
    loop {
        let frame = conn.next().await?;
        let ours = frame.str_field("request_id") == Some(START_REQUEST_ID);
        match frame.kind() {
            "run_accepted" if ours => {
                out.raw(&frame)?;
                let run_id = frame
                    .str_field("run_id")
                    .ok_or_else(|| ChatError::Protocol("run_accepted has no run_id".into()))?
                    .to_owned();
                status(&format!(
                    "run {run_id} accepted on thread {thread} (continue it with --thread {thread}); \
                     Ctrl-C cancels",
                    thread = frame.str_field("thread_id").unwrap_or("?"),
                ));
                return Ok((run_id, early));
            }
            "error" if ours => {
                out.raw(&frame)?;
                return Err(ChatError::RunRefused {
                    code: frame.str_field("code").unwrap_or("?").to_owned(),
                    message: frame.str_field("message").unwrap_or("").to_owned(),
                });
            }
            "error" => report_error_frame(&frame, out)?,
            _ if frame.value.get("seq").is_some() => {
                if early.len() == MAX_EARLY_FRAMES {
                    early.pop_front();
                }
                early.push_back(frame);
            }
            _ => {}
        }
    }
}

/// An `error` frame that does not answer `start_agent` (a refused cancel, or a problem with a
/// frame): worth showing, not worth ending the run's timeline for.
fn report_error_frame(frame: &Incoming, out: &mut Output) -> Result<(), ChatError> {
    out.raw(frame)?;
    let code = frame.str_field("code").unwrap_or("?");
    let message = frame.str_field("message").unwrap_or("");
    if frame.str_field("request_id") == Some(CANCEL_REQUEST_ID) {
        status(&format!("the server refused to cancel ({code}): {message}"));
    } else {
        status(&format!("the server reported an error ({code}): {message}"));
    }
    Ok(())
}

/// The outcome a terminal event of the run means for the command, or `None` if `frame` does
/// not end a run.
fn terminal_outcome(frame: &Value) -> Option<Result<(), ChatError>> {
    let data = &frame["data"];
    let text = |key: &str| data[key].as_str().unwrap_or("").to_owned();
    match frame["type"].as_str()? {
        "agent_completed" => Some(Ok(())),
        "agent_error" => Some(Err(ChatError::RunFailed {
            code: text("code"),
            message: text("message"),
        })),
        "agent_cancelled" => Some(Err(ChatError::RunCancelled {
            reason: text("reason"),
        })),
        _ => None,
    }
}

/// A status line for the human, on stderr so that stdout holds only the timeline (or, with
/// `--json`, only frames).
fn status(line: &str) {
    eprintln!("{line}");
}

/// Where the timeline or the raw frames go.
struct Output {
    json: bool,
}

impl Output {
    /// Writes a raw frame, in `--json` mode only.
    fn raw(&mut self, frame: &Incoming) -> Result<(), ChatError> {
        if self.json {
            self.text(&format!("{}\n", frame.text))?;
        }
        Ok(())
    }

    /// Writes text and flushes it at once: answer chunks must appear as they stream.
    fn text(&mut self, text: &str) -> Result<(), ChatError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(ChatError::Output)
    }
}

/// The run being shown: which frames belong to it, and how they are printed.
struct RunView {
    filter: RunFilter,
    timeline: Timeline,
    /// The timeline's origin: when `run_accepted` arrived. Local time, not the events'
    /// timestamps, so that a server clock that differs from ours does not skew the figures.
    accepted_at: Instant,
}

impl RunView {
    /// Prints `frame` if it belongs to the run's tree. Returns the command's outcome when the
    /// frame ends the run itself (a sub-run's end is just another line).
    fn show(
        &mut self,
        frame: &Incoming,
        out: &mut Output,
    ) -> Result<Option<Result<(), ChatError>>, ChatError> {
        let Some(depth) = self.filter.depth_of(&frame.value) else {
            return Ok(None);
        };
        if out.json {
            out.raw(frame)?;
        } else {
            let elapsed = self.accepted_at.elapsed();
            out.text(&self.timeline.render(&frame.value, elapsed, depth))?;
        }
        let outcome = if depth == 0 {
            terminal_outcome(&frame.value)
        } else {
            None
        };
        if outcome.is_some() {
            out.text(&self.timeline.finish())?;
        }
        Ok(outcome)
    }
}

/// Picks out the frames of one run and of its sub-runs (at any depth). Other runs' events
/// arrive too when the same user has other tabs or clients open; they are not ours to show.
#[derive(Debug)]
struct RunFilter {
    /// Every run of this tree seen so far, with its depth (0 for the run itself). Bounded by
    /// the tree's own size, which the server bounds.
    depths: HashMap<String, usize>,
}

impl RunFilter {
    fn new(run_id: &str) -> Self {
        Self {
            depths: HashMap::from([(run_id.to_owned(), 0)]),
        }
    }

    /// The depth of `frame`'s run in the tree, or `None` when it is not an event of the tree.
    fn depth_of(&mut self, frame: &Value) -> Option<usize> {
        frame.get("seq")?;
        let run_id = frame.get("run_id")?.as_str()?;
        if let Some(depth) = self.depths.get(run_id) {
            return Some(*depth);
        }
        let parent = frame.get("parent_run_id")?.as_str()?;
        let depth = self.depths.get(parent)? + 1;
        self.depths.insert(run_id.to_owned(), depth);
        Some(depth)
    }
}

/// Renders event frames as a readable timeline, one line per event, with the answer streamed
/// onto a single line as its chunks arrive.
#[derive(Debug, Default)]
struct Timeline {
    /// The run whose answer line is still open (no newline written yet).
    open_answer: Option<String>,
    /// The answer text streamed so far per run, so `completed` does not repeat it.
    answers: HashMap<String, String>,
}

impl Timeline {
    /// The text to print for `frame`, seen `elapsed` after the run was accepted, for a run at
    /// `depth` in the run tree (sub-runs are indented).
    fn render(&mut self, frame: &Value, elapsed: Duration, depth: usize) -> String {
        let kind = frame["type"].as_str().unwrap_or("?");
        let run_id = frame["run_id"].as_str().unwrap_or("");
        let data = &frame["data"];
        if kind == "agent_response_chunk" {
            let delta = data["delta"].as_str().unwrap_or("");
            self.answers
                .entry(run_id.to_owned())
                .or_default()
                .push_str(delta);
            if self.open_answer.as_deref() == Some(run_id) {
                // The line's prefix is not known here any more; continuation lines of a
                // multi-line answer are indented like those of a fresh line of this depth.
                let pad = " ".repeat(prefix(elapsed, depth, "answer").chars().count());
                return continued(delta, &pad);
            }
            let mut text = self.finish();
            let head = prefix(elapsed, depth, "answer");
            let pad = " ".repeat(head.chars().count());
            text.push_str(&head);
            text.push_str(&continued(delta, &pad));
            self.open_answer = Some(run_id.to_owned());
            return text;
        }
        let (label, body) = self.describe(kind, run_id, data, frame, depth);
        let mut text = self.finish();
        let head = prefix(elapsed, depth, label);
        let pad = " ".repeat(head.chars().count());
        text.push_str(&head);
        text.push_str(&continued(&body, &pad));
        text.push('\n');
        text
    }

    /// Ends an open answer line; returns what to print for that (a newline, or nothing).
    fn finish(&mut self) -> String {
        match self.open_answer.take() {
            Some(_) => "\n".to_owned(),
            None => String::new(),
        }
    }

    fn describe(
        &mut self,
        kind: &str,
        run_id: &str,
        data: &Value,
        frame: &Value,
        depth: usize,
    ) -> (&'static str, String) {
        let text = |key: &str| data[key].as_str().unwrap_or("").to_owned();
        match kind {
            "agent_started" => {
                let message = format!("{:?}", data["message"].as_str().unwrap_or(""));
                if depth == 0 {
                    ("started", message)
                } else {
                    let agent = frame["agent_name"].as_str().unwrap_or("?");
                    ("started", format!("sub-run {agent}: {message}"))
                }
            }
            "agent_thinking" => (
                "thinking",
                format!("({}) {}", data["step"], text("reasoning")),
            ),
            "tool_executing" => (
                "tool",
                format!("{} {}", text("tool_name"), data["arguments"]),
            ),
            "tool_completed" => {
                let label = if data["is_error"].as_bool() == Some(true) {
                    "tool failed"
                } else {
                    "tool done"
                };
                let body = format!(
                    "{} -> {} ({} ms)",
                    text("tool_name"),
                    data["result"],
                    data["duration_ms"]
                );
                (label, body)
            }
            "agent_completed" => {
                let mut body = format!("in {} ms", data["duration_ms"]);
                let streamed = self.answers.remove(run_id);
                let result = &data["result"];
                // The streamed answer is usually the result; printing it twice helps nobody.
                let repeated = result.as_str().is_some() && result.as_str() == streamed.as_deref();
                match result {
                    Value::Null => {}
                    _ if repeated => {}
                    Value::String(s) => {
                        let _ = write!(body, ": {s}");
                    }
                    other => {
                        let _ = write!(body, ": {other}");
                    }
                }
                if let Some(usage) = data.get("usage").filter(|u| !u.is_null()) {
                    let _ = write!(body, " (usage {usage})");
                }
                ("completed", body)
            }
            "agent_error" => {
                self.answers.remove(run_id);
                ("error", format!("{}: {}", text("code"), text("message")))
            }
            "agent_cancelled" => {
                self.answers.remove(run_id);
                ("cancelled", text("reason"))
            }
            // An event type newer than this client: still shown, raw, rather than hidden.
            _ => ("event", format!("{kind} {data}")),
        }
    }
}

/// `+0.012s  ` then the indentation of a sub-run, then the label padded to its column.
fn prefix(elapsed: Duration, depth: usize, label: &str) -> String {
    format!(
        "+{}.{:03}s  {}{label:<LABEL_WIDTH$} ",
        elapsed.as_secs(),
        elapsed.subsec_millis(),
        "  ".repeat(depth)
    )
}

/// `text` made safe for a terminal, with continuation lines indented by `pad`.
///
/// Agent output is untrusted: control characters (ANSI escapes among them) could rewrite the
/// user's terminal, so they are printed escaped. Newlines stay, aligned under the first line.
fn continued(text: &str, pad: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(pad);
            }
            '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// A text frame as received: its exact text (for `--json`) and its parsed value.
#[derive(Debug)]
struct Incoming {
    text: String,
    value: Value,
}

impl Incoming {
    fn kind(&self) -> &str {
        self.str_field("type").unwrap_or("")
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.value.get(key)?.as_str()
    }
}

/// Awaits `future` for at most `timeout`.
async fn within<T>(
    timeout: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, ChatError>>,
) -> Result<T, ChatError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| ChatError::Timeout { what, timeout })?
}

/// The WebSocket to the server.
struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    async fn open(server: &ServerUrl, token: &str) -> Result<Self, ChatError> {
        let url = format!(
            "ws://{}{}/ws?token={}",
            server.authority,
            server.base_path,
            percent_encode(token)
        );
        // Nagle's algorithm would hold a `cancel_run` back behind an unacknowledged frame; the
        // frames are tiny and should leave at once.
        let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
        let outcome = tokio::time::timeout(NETWORK_TIMEOUT, connecting)
            .await
            .map_err(|_| ChatError::Timeout {
                what: "the WebSocket upgrade",
                timeout: NETWORK_TIMEOUT,
            })?;
        match outcome {
            Ok((ws, _response)) => Ok(Self { ws }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let message = explain_body(response.body().as_deref().unwrap_or(&[]));
                Err(if status == 401 {
                    ChatError::TokenRefused { message }
                } else {
                    ChatError::UpgradeRefused { status, message }
                })
            }
            Err(tungstenite::Error::Io(source)) => Err(ChatError::Connect {
                address: server.address(),
                source,
            }),
            Err(e) => Err(ChatError::WebSocket(e)),
        }
    }

    async fn send(&mut self, frame: &Value) -> Result<(), ChatError> {
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    /// The next text frame. A close frame, or the end of the stream, is an error: this client
    /// only reads while a run it waits for is still going.
    async fn next(&mut self) -> Result<Incoming, ChatError> {
        loop {
            let message = match self.ws.next().await {
                Some(message) => message?,
                None => {
                    return Err(ChatError::Closed {
                        code: 1006,
                        reason: "the connection ended without a close frame".into(),
                    });
                }
            };
            match message {
                Message::Text(text) => {
                    let text = text.as_str().to_owned();
                    match serde_json::from_str(&text) {
                        Ok(value) => return Ok(Incoming { text, value }),
                        Err(e) => status(&format!("ignoring a frame that is not JSON ({e})")),
                    }
                }
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(CloseFrame { code, reason }) => (u16::from(code), reason.to_string()),
                        None => (1005, "no close code".to_owned()),
                    };
                    return Err(ChatError::Closed { code, reason });
                }
                Message::Binary(_) => status("ignoring a binary frame (protocol v1 has none)"),
                // Pings are answered by tungstenite itself; the rest carries nothing for us.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes politely: a normal close frame, then a short wait for the server's answer so the
    /// server logs a clean close rather than a dropped connection.
    async fn close(mut self) {
        let frame = CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "run finished".into(),
        };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let drain = async {
            while let Some(Ok(message)) = self.ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    }
}

/// The message of a refusal body: the `message` of the server's JSON error body, else the
/// body as text, shortened.
fn explain_body(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(message) = value.get("message").and_then(Value::as_str) {
            return message.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no explanation in the body)".to_owned();
    }
    let short: String = text.chars().take(500).collect();
    continued(&short, "")
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query value.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The `--server` URL, checked and split.
#[derive(Debug, PartialEq, Eq)]
struct ServerUrl {
    /// The host to connect to (IPv6 addresses without brackets).
    host: String,
    /// The port (80 when the URL has none).
    port: u16,
    /// `host[:port]` as written, for the `Host` header and the WebSocket URL.
    authority: String,
    /// A path prefix the server is mounted under, without a trailing `/` (usually empty).
    base_path: String,
}

impl ServerUrl {
    fn parse(url: &str) -> Result<Self, ChatError> {
        let invalid = |reason: &str| ChatError::InvalidServerUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        match uri.scheme_str() {
            // ws:// names the same server as http://; accepting it spares a confusing error.
            Some("http" | "ws") => {}
            Some("https" | "wss") => {
                return Err(ChatError::TlsNotSupported {
                    url: url.to_owned(),
                });
            }
            Some(other) => {
                return Err(invalid(&format!(
                    "the scheme {other}:// is not supported; use http://HOST:PORT"
                )));
            }
            None => return Err(invalid("it needs a scheme; use http://HOST:PORT")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("it has no host; use http://HOST:PORT"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "credentials in the URL are not used; pass --user or --token",
            ));
        }
        if uri.query().is_some() {
            return Err(invalid("it must not have a query; use http://HOST:PORT"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` for messages.
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The WebSocket URL without the token, which must never be printed.
    fn ws_url_for_display(&self) -> String {
        format!("ws://{}{}/ws", self.authority, self.base_path)
    }
}

/// Gets a dev token for `user` from `POST /dev/token`.
async fn fetch_dev_token(server: &ServerUrl, user: &str) -> Result<String, ChatError> {
    let url = format!("http://{}{}/dev/token", server.authority, server.base_path);
    let body = json!({ "user": user }).to_string();
    let (status, body) = within(
        NETWORK_TIMEOUT,
        "the dev token",
        post_json(server, &url, body),
    )
    .await?;
    match status {
        200 => {
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                ChatError::Protocol(format!("POST {url} answered 200 without JSON ({e})"))
            })?;
            value
                .get("token")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ChatError::Protocol(format!("POST {url} answered without a token")))
        }
        404 => Err(ChatError::DevTokensDisabled),
        _ => Err(ChatError::DevTokenRefused {
            url,
            status,
            message: explain_body(&body),
        }),
    }
}

/// One HTTP/1.1 `POST` with a JSON body over a fresh connection; returns the status and body.
async fn post_json(
    server: &ServerUrl,
    url: &str,
    body: String,
) -> Result<(u16, Vec<u8>), ChatError> {
    let http_error = |e: &dyn std::fmt::Display| ChatError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let stream = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|source| ChatError::Connect {
            address: server.address(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_error(&e))?;
    // The connection future does the actual IO; it ends when `sender` is dropped.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::post(format!("{}/dev/token", server.base_path))
        .header(hyper::header::HOST, server.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(io::Cursor::new(body.into_bytes())))
        .map_err(|e| http_error(&e))?;
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_error(&e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_HTTP_BODY)
            .collect()
            .await
            .map_err(|e| http_error(&e))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }
    .await;
    driver.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: &str = include_str!("../../../docs/protocol-examples.json");

    /// The first server-to-client example frame that `matches`.
    fn example_where(matches: impl Fn(&Value) -> bool) -> Value {
        let examples: Value = serde_json::from_str(EXAMPLES).unwrap();
        examples["server_to_client"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| matches(f))
            .unwrap()
            .clone()
    }

    /// The first server-to-client example frame of type `kind`.
    fn example(kind: &str) -> Value {
        example_where(|f| f["type"] == kind)
    }

    /// Renders `frames` (each seen at its elapsed milliseconds, at depth 0) with one timeline
    /// and compares the whole output.
    fn check(frames: &[(Value, u64)], expected: &str) {
        let mut timeline = Timeline::default();
        let mut got = String::new();
        for (frame, ms) in frames {
            got.push_str(&timeline.render(frame, Duration::from_millis(*ms), 0));
        }
        got.push_str(&timeline.finish());
        assert_eq!(
            got, expected,
            "\n--- got ---\n{got}\n--- expected ---\n{expected}"
        );
    }

    fn with_data(kind: &str, data: Value) -> Value {
        let mut frame = example(kind);
        frame["data"] = data;
        frame
    }

    #[test]
    fn each_event_of_the_examples_renders_as_one_line() {
        let table: &[(&str, u64, &str)] = &[
            (
                "agent_started",
                0,
                "+0.000s  started     \"What is 12*7?\"\n",
            ),
            (
                "agent_thinking",
                1,
                "+0.001s  thinking    (1) This is arithmetic; I will use the calculator.\n",
            ),
            (
                "tool_executing",
                2,
                "+0.002s  tool        calculator {\"expression\":\"12*7\"}\n",
            ),
            (
                "tool_completed",
                3,
                "+0.003s  tool done   calculator -> {\"value\":84} (0 ms)\n",
            ),
            (
                "agent_response_chunk",
                3,
                "+0.003s  answer      12*7 = 84\n",
            ),
            (
                "agent_completed",
                12,
                "+0.012s  completed   in 1 ms: 12*7 = 84\n",
            ),
            (
                "agent_error",
                25_001,
                "+25.001s  error       timeout: the run took longer than its 25 s limit\n",
            ),
            (
                "agent_cancelled",
                900,
                "+0.900s  cancelled   cancelled by the user\n",
            ),
        ];
        for (kind, ms, expected) in table {
            check(&[(example(kind), *ms)], expected);
        }
    }

    #[test]
    fn a_whole_run_reads_as_a_timeline() {
        let chunk = |delta: &str| with_data("agent_response_chunk", json!({ "delta": delta }));
        check(
            &[
                (example("agent_started"), 0),
                (example("tool_executing"), 1),
                (chunk("12*7"), 2),
                (chunk(" = 84"), 3),
                (example("agent_completed"), 4),
            ],
            "+0.000s  started     \"What is 12*7?\"\n\
             +0.001s  tool        calculator {\"expression\":\"12*7\"}\n\
             +0.002s  answer      12*7 = 84\n\
             +0.004s  completed   in 1 ms\n",
        );
    }

    #[test]
    fn variants_of_events_render_readably() {
        let table: Vec<(Value, &str)> = vec![
            (
                with_data(
                    "tool_completed",
                    json!({"tool_call_id":"c1","tool_name":"clock","result":{"error":"no zone"},
                           "is_error":true,"duration_ms":3}),
                ),
                "+0.000s  tool failed clock -> {\"error\":\"no zone\"} (3 ms)\n",
            ),
            (
                with_data(
                    "agent_completed",
                    json!({"result":{"n":1},"duration_ms":7,"usage":{"input_tokens":5}}),
                ),
                "+0.000s  completed   in 7 ms: {\"n\":1} (usage {\"input_tokens\":5})\n",
            ),
            (
                with_data(
                    "agent_thinking",
                    json!({"reasoning":"one\ntwo\u{1b}[2J","step":2}),
                ),
                "+0.000s  thinking    (2) one\n                     two\\u{1b}[2J\n",
            ),
            (
                with_data("agent_completed", json!({"result":null,"duration_ms":0})),
                "+0.000s  completed   in 0 ms\n",
            ),
            (
                json!({"type":"agent_dreaming","seq":1,"run_id":"r","data":{"x":1}}),
                "+0.000s  event       agent_dreaming {\"x\":1}\n",
            ),
        ];
        for (frame, expected) in table {
            check(&[(frame, 0)], expected);
        }
    }

    #[test]
    fn sub_runs_are_indented_and_other_runs_ignored() {
        let mut sub_run = example("agent_started");
        sub_run["run_id"] = json!("run_sub");
        sub_run["parent_run_id"] = json!("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
        let mut grandchild = sub_run.clone();
        grandchild["run_id"] = json!("run_grandchild");
        grandchild["parent_run_id"] = json!("run_sub");

        // (frame, depth it is shown at, or None when ignored), for the run of the examples.
        let table: Vec<(Value, Option<usize>)> = vec![
            (example("agent_started"), Some(0)),
            (sub_run.clone(), Some(1)),
            (grandchild, Some(2)),
            // The example's sub-run belongs to another parent: another tab's run.
            (example_where(|f| f.get("parent_run_id").is_some()), None),
            (example("agent_error"), None),
            (example("run_accepted"), None),
        ];
        let mut filter = RunFilter::new("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
        for (frame, expected) in table {
            assert_eq!(filter.depth_of(&frame), expected, "{frame}");
        }

        let mut timeline = Timeline::default();
        assert_eq!(
            timeline.render(&sub_run, Duration::from_millis(5), 1),
            "+0.005s    started     sub-run assistant: \"What is 12*7?\"\n"
        );
    }

    #[test]
    fn terminal_events_decide_the_exit() {
        let table: &[(&str, Option<Result<(), &str>>)] = &[
            ("agent_started", None),
            ("agent_response_chunk", None),
            ("agent_completed", Some(Ok(()))),
            (
                "agent_error",
                Some(Err(
                    "the run failed (timeout): the run took longer than its 25 s limit",
                )),
            ),
            (
                "agent_cancelled",
                Some(Err("the run was cancelled: cancelled by the user")),
            ),
        ];
        for (kind, expected) in table {
            let got = terminal_outcome(&example(kind)).map(|r| r.map_err(|e| e.to_string()));
            let expected = expected.map(|r| r.map_err(str::to_owned));
            assert_eq!(got, expected, "{kind}");
        }
    }

    #[test]
    fn input_must_be_a_json_object() {
        let table: &[(&str, Result<Value, &str>)] = &[
            (r#"{"thinking":2}"#, Ok(json!({"thinking":2}))),
            ("{}", Ok(json!({}))),
            (
                "[1]",
                Err("must be a JSON object such as '{\"thinking\":2}', got an array"),
            ),
            ("\"x\"", Err("got a string")),
            ("{oops", Err("is not valid JSON")),
        ];
        for (raw, expected) in table {
            match (parse_input(raw), expected) {
                (Ok(map), Ok(value)) => assert_eq!(&Value::Object(map), value, "{raw}"),
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{raw}: {e}"),
                (got, _) => panic!("{raw}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn server_urls() {
        let ok = |host: &str, port, authority: &str, base: &str| {
            Ok(ServerUrl {
                host: host.into(),
                port,
                authority: authority.into(),
                base_path: base.into(),
            })
        };
        let table: Vec<(&str, Result<ServerUrl, &str>)> = vec![
            (
                "http://127.0.0.1:8080",
                ok("127.0.0.1", 8080, "127.0.0.1:8080", ""),
            ),
            (
                "http://localhost:8080/",
                ok("localhost", 8080, "localhost:8080", ""),
            ),
            (
                "http://example.org",
                ok("example.org", 80, "example.org", ""),
            ),
            (
                "ws://[::1]:9000/agents/",
                ok("::1", 9000, "[::1]:9000", "/agents"),
            ),
            (
                "https://example.org",
                Err("speaks plain http:// and ws:// only"),
            ),
            ("wss://example.org", Err("uses TLS")),
            (
                "ftp://example.org",
                Err("the scheme ftp:// is not supported"),
            ),
            ("127.0.0.1:8080", Err("use http://HOST:PORT")),
            ("http://u:p@example.org", Err("credentials in the URL")),
            ("http://example.org/?x=1", Err("must not have a query")),
            ("http://exa mple.org", Err("is not usable")),
        ];
        for (url, expected) in table {
            match (ServerUrl::parse(url), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{url}"),
                (Err(e), Err(fragment)) => {
                    assert!(e.to_string().contains(fragment), "{url}: {e}");
                }
                (got, want) => panic!("{url}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn refusal_bodies_and_tokens_are_made_printable() {
        let table: &[(&[u8], &str)] = &[
            (
                br#"{"error":"unauthorized","message":"the token has expired"}"#,
                "the token has expired",
            ),
            (b"plain text\n", "plain text"),
            (b"", "(no explanation in the body)"),
            (b"\x1b[31mred", "\\u{1b}[31mred"),
        ];
        for (body, expected) in table {
            assert_eq!(explain_body(body), *expected);
        }
        assert_eq!(percent_encode("eyJ.a-b_c~"), "eyJ.a-b_c~");
        assert_eq!(percent_encode("a b/+="), "a%20b%2F%2B%3D");
    }

    #[test]
    fn the_frames_sent_have_the_protocol_shape() {
        let args = ChatArgs {
            server: String::new(),
            user: None,
            token: None,
            agent: "synthetic".into(),
            thread: Some("thr_1".into()),
            input: Some(parse_input(r#"{"chunks":5}"#).unwrap()),
            json: false,
            message: "load".into(),
        };
        assert_eq!(
            start_agent_frame(&args),
            json!({"type":"start_agent","request_id":"chat-1",
                   "payload":{"agent":"synthetic","message":"load","thread_id":"thr_1",
                              "input":{"chunks":5}}})
        );
        assert_eq!(
            cancel_frame("run_1"),
            json!({"type":"cancel_run","request_id":"chat-cancel","payload":{"run_id":"run_1"}})
        );
    }
}
