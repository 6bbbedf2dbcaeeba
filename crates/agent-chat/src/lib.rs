//! `agent-server chat`: a terminal client. With a message it starts one run and prints it as
//! a live timeline; without one it opens a conversation in one thread (`conversation`).
//!
//! It is a newcomer's first look at the server and a worked example of the Rust client
//! (`agent-client`): get a token (a dev token from `POST /dev/token`, or a JWT the caller
//! already has), connect, start the run, then print the events of that run (and of its
//! sub-runs, indented) until the run's terminal event (`follow`). A dropped connection is
//! resumed by the client, so the timeline has no gap. Ctrl-C sends `cancel_run` once and keeps
//! printing until the run says it was cancelled; a second Ctrl-C quits without waiting.
//!
//! How events are printed is the `timeline` module (and `markdown` for a conversation's answer
//! on a terminal), kept apart from IO and tested without a server; `terminal` decides what
//! the terminal gets, `prompt` reads the conversation's lines.

mod conversation;
mod follow;
mod markdown;
mod prompt;
mod terminal;
mod timeline;

use std::io;

use agent_client::{Backoff, Client, ClientConfig, ClientError, RunAccepted};
use agent_protocol::{EventKind, ServerFrame, StartAgent, json_kind};
use core_context::ThreadId;
use serde_json::{Map, Value};

use self::follow::{RunView, follow};
use self::terminal::Output;
use self::timeline::Look;

/// Reconnect attempts before the command gives up on a server that went away.
const RECONNECT_ATTEMPTS: u32 = 5;

/// Arguments of `agent-server chat`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without MESSAGE: a conversation in one thread. Each line typed is a \
message; Ctrl-C cancels a running answer, Ctrl-D quits, /help lists the commands \
(/agent, /input, /new, /quit). On a terminal the answer is rendered from markdown and the \
steps are dimmed (NO_COLOR turns the colours off); from a pipe, lines are read plainly."
)]
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
    /// The message to send to the agent. Without one, a conversation starts: every line
    /// typed is a message in the same thread.
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,
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
    /// Reading the conversation's next line failed.
    #[error("cannot read the next message: {0}")]
    Input(#[source] io::Error),
}

/// Runs `agent-server chat`: one run, printed until it ends; or, without a message, a
/// conversation until Ctrl-D.
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
    let mut out = Output::plain(args.json);
    out.note(&format!(
        "connected to {} as {}",
        args.server,
        client.user_id()
    ));
    let outcome = match &args.message {
        Some(message) => one_run(&mut client, &args, message, &mut out).await,
        None => conversation::converse(&mut client, &args).await,
    };
    client.close().await;
    outcome
}

/// The one-shot command: starts the run and follows it until it ends.
async fn one_run(
    client: &mut Client,
    args: &ChatArgs,
    message: &str,
    out: &mut Output,
) -> Result<(), ChatError> {
    let accepted = start(client, args, message, out).await?;
    let mut view = RunView::new(&accepted, Look::default());
    follow(client, &accepted, &mut view, out, "quit without waiting").await
}

/// Sends `start_agent` and reports its acceptance.
async fn start(
    client: &Client,
    args: &ChatArgs,
    message: &str,
    out: &mut Output,
) -> Result<RunAccepted, ChatError> {
    let request = StartAgent {
        agent: args.agent.clone(),
        message: message.to_owned(),
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
    out.raw(&accepted_frame(&accepted))?;
    out.note(&format!(
        "run {run} accepted on thread {thread} (continue it with --thread {thread}); Ctrl-C cancels",
        run = accepted.run_id,
        thread = accepted.thread_id,
    ));
    Ok(accepted)
}

/// The `run_accepted` frame of `accepted`, as `--json` prints it.
fn accepted_frame(accepted: &RunAccepted) -> String {
    ServerFrame::RunAccepted {
        request_id: None,
        run_id: accepted.run_id.clone(),
        thread_id: accepted.thread_id.clone(),
    }
    .to_text()
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

#[cfg(test)]
mod tests {
    use agent_protocol::SequencedEvent;
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
