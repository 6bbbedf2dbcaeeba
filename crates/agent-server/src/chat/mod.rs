//! `agent-server chat`: a terminal client that starts one run and prints it as a live timeline.
//!
//! It is a newcomer's first look at the server and a worked example of the Rust client
//! (`agent-client`): get a token (a dev token from `POST /dev/token`, or a JWT the caller
//! already has), connect, start the run, then print the events of that run (and of its
//! sub-runs, indented) until the run's terminal event. A dropped connection is resumed by the
//! client, so the timeline has no gap. Ctrl-C sends `cancel_run` once and keeps printing until
//! the run says it was cancelled; a second Ctrl-C quits without waiting.
//!
//! How events are printed is the `timeline` module, kept apart from IO and tested without a
//! server.

mod timeline;

use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use agent_client::{Backoff, Client, ClientConfig, ClientError, Notice, RunAccepted, StreamItem};
use agent_protocol::{EventKind, SequencedEvent, ServerFrame, StartAgent, UnknownFrame, json_kind};
use core_context::ThreadId;
use serde_json::{Map, Value};

use self::timeline::{RunFilter, Timeline};

/// Reconnect attempts before the command gives up on a server that went away.
const RECONNECT_ATTEMPTS: u32 = 5;

/// Arguments of `agent-server chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The server's base URL (http:// or ws://; the WebSocket is at /ws).
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
    #[arg(long, value_name = "THREAD_ID", value_parser = parse_thread)]
    pub thread: Option<ThreadId>,
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
    /// Connecting, a request, or the stream failed.
    #[error(transparent)]
    Client(#[from] ClientError),
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
    /// The stream ended before the run did.
    #[error("the connection ended before run {run_id} did; it may still be running on the server")]
    Ended {
        /// The run.
        run_id: String,
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
    let token = match (&args.user, &args.token) {
        (Some(user), _) => agent_client::get_dev_token(&args.server, user).await?.token,
        (None, Some(token)) => token.clone(),
        (None, None) => return Err(ChatError::NoCredentials),
    };
    let config = ClientConfig {
        backoff: Backoff {
            max_attempts: Some(RECONNECT_ATTEMPTS),
            ..Backoff::default()
        },
        ..ClientConfig::default()
    };
    let mut client = Client::connect_with(&args.server, &token, config).await?;
    status(&format!(
        "connected to {} as {}",
        args.server,
        client.user_id()
    ));
    let mut out = Output { json: args.json };
    let accepted = start(&client, &args, &mut out).await?;
    let mut view = RunView {
        filter: RunFilter::new(accepted.run_id.as_str()),
        timeline: Timeline::default(),
        accepted_at: Instant::now(),
    };
    let outcome = follow(&mut client, &accepted, &mut view, &mut out).await;
    client.close().await;
    outcome
}

/// Sends `start_agent` and reports its acceptance.
async fn start(
    client: &Client,
    args: &ChatArgs,
    out: &mut Output,
) -> Result<RunAccepted, ChatError> {
    let request = StartAgent {
        agent: args.agent.clone(),
        message: args.message.clone(),
        thread_id: args.thread.clone(),
        input: args.input.clone(),
    };
    let accepted = client.start(request).await.map_err(|e| match e {
        ClientError::Server { code, message } => ChatError::RunRefused {
            code: code.to_string(),
            message,
        },
        other => ChatError::Client(other),
    })?;
    out.raw(
        &ServerFrame::RunAccepted {
            request_id: None,
            run_id: accepted.run_id.clone(),
            thread_id: accepted.thread_id.clone(),
        }
        .to_text(),
    )?;
    status(&format!(
        "run {run} accepted on thread {thread} (continue it with --thread {thread}); Ctrl-C cancels",
        run = accepted.run_id,
        thread = accepted.thread_id,
    ));
    Ok(accepted)
}

/// Prints the run's events until its terminal event; Ctrl-C cancels it (twice: quits).
async fn follow(
    client: &mut Client,
    accepted: &RunAccepted,
    view: &mut RunView,
    out: &mut Output,
) -> Result<(), ChatError> {
    let run_id = accepted.run_id.to_string();
    // The handler is installed only once the run is accepted: before that there is nothing to
    // cancel, and the default Ctrl-C (end the process) is the right thing.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut ctrl_c_works = true;
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            item = client.next_item() => match item {
                None => return Err(ChatError::Ended { run_id }),
                Some(Err(e)) => {
                    out.text(&view.timeline.finish())?;
                    return Err(e.into());
                }
                Some(Ok(item)) => {
                    if let Some(outcome) = view.show(&item, out)? {
                        return outcome;
                    }
                }
            },
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
                cancel_sent = true;
                status(&format!("cancelling run {run_id}; press Ctrl-C again to quit without waiting"));
                if let Err(e) = client.cancel_run(&accepted.run_id).await {
                    status(&format!("the server refused to cancel: {e}"));
                }
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

/// Parses `--thread`: a thread id as the server prints it.
fn parse_thread(raw: &str) -> Result<ThreadId, String> {
    ThreadId::parse(raw).map_err(|e| e.to_string())
}

/// The outcome a terminal event of the run means for the command, or `None` if `kind` does
/// not end a run.
fn terminal_outcome(kind: &EventKind) -> Option<Result<(), ChatError>> {
    match kind {
        EventKind::AgentCompleted { .. } => Some(Ok(())),
        EventKind::AgentError { code, message } => Some(Err(ChatError::RunFailed {
            code: code.clone(),
            message: message.clone(),
        })),
        EventKind::AgentCancelled { reason } => Some(Err(ChatError::RunCancelled {
            reason: reason.clone(),
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
    fn raw(&mut self, frame: &str) -> Result<(), ChatError> {
        if self.json {
            self.text(&format!("{frame}\n"))?;
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

/// The run being shown: which events belong to it, and how they are printed.
struct RunView {
    filter: RunFilter,
    timeline: Timeline,
    /// The timeline's origin: when `run_accepted` arrived. Local time, not the events'
    /// timestamps, so that a server clock that differs from ours does not skew the figures.
    accepted_at: Instant,
}

impl RunView {
    /// Shows one item of the stream. Returns the command's outcome when it ends the run
    /// itself (a sub-run's end is just another line).
    fn show(
        &mut self,
        item: &StreamItem,
        out: &mut Output,
    ) -> Result<Option<Result<(), ChatError>>, ChatError> {
        match item {
            StreamItem::Event(event) => self.event(event, out),
            StreamItem::Notice(Notice::NewerFrame(frame)) => {
                self.unknown(frame, out)?;
                Ok(None)
            }
            StreamItem::Notice(notice) => {
                out.text(&self.timeline.finish())?;
                status(&notice.to_string());
                Ok(None)
            }
        }
    }

    fn event(
        &mut self,
        event: &SequencedEvent,
        out: &mut Output,
    ) -> Result<Option<Result<(), ChatError>>, ChatError> {
        let inner = &event.event;
        let parent = inner.parent_run_id.as_ref().map(|p| p.as_str());
        let Some(depth) = self.filter.depth_of(inner.run_id.as_str(), parent) else {
            return Ok(None);
        };
        if out.json {
            out.raw(&serde_json::to_string(event).unwrap_or_default())?;
        } else {
            out.text(&self.timeline.render(inner, self.elapsed(), depth))?;
        }
        let outcome = if depth == 0 {
            terminal_outcome(&inner.kind)
        } else {
            None
        };
        if outcome.is_some() {
            out.text(&self.timeline.finish())?;
        }
        Ok(outcome)
    }

    /// An event of a type newer than this client, shown raw if it is of the run's tree.
    fn unknown(&mut self, frame: &UnknownFrame, out: &mut Output) -> Result<(), ChatError> {
        let run_id = frame.value["run_id"].as_str().unwrap_or("");
        let parent = frame.value["parent_run_id"].as_str();
        let Some(depth) = self.filter.depth_of(run_id, parent) else {
            return Ok(());
        };
        if out.json {
            return out.raw(&frame.value.to_string());
        }
        let text =
            self.timeline
                .render_unknown(&frame.kind, &frame.value["data"], self.elapsed(), depth);
        out.text(&text)
    }

    fn elapsed(&self) -> Duration {
        self.accepted_at.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::timeline::tests::example;
    use super::*;

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
            let event: SequencedEvent = serde_json::from_value(example(kind)).unwrap();
            let got = terminal_outcome(&event.event.kind).map(|r| r.map_err(|e| e.to_string()));
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
    fn a_thread_must_be_a_valid_id() {
        assert!(parse_thread("thr_01JD6Q9V3K8Z4X2M7N5P0R1S2T").is_ok());
        let err = parse_thread("bad id").unwrap_err();
        assert!(err.contains("thread id contains ' '"), "{err}");
    }
}
