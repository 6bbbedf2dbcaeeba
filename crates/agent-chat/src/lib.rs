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
//! the terminal gets, `prompt` reads the conversation's lines. The command line is `args`
//! ([`ChatArgs`], which the server's binary shows as its `chat` subcommand), the one error type
//! `error` ([`ChatError`]).
//!
//! The crate knows nothing of the server's code: it speaks to a server over the wire, through
//! `agent-client`, like any other client. Its modules use each other downwards only; this root
//! uses them, and none uses the root:
//! - `conversation` uses `args`, `error`, `follow`, `prompt`, `terminal`, `timeline`;
//! - `follow` uses `error`, `terminal`, `timeline`;
//! - `timeline` uses `markdown` and `terminal`; `markdown` uses `terminal`, which makes agent
//!   text safe to print;
//! - `terminal` and `prompt` use `error`; `args` and `error` use nothing of the crate.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod conversation;
mod error;
mod follow;
mod markdown;
mod prompt;
mod terminal;
mod timeline;

use agent_client::{Backoff, Client, ClientConfig, ClientError, RunAccepted};
use agent_protocol::StartAgent;

pub use crate::args::ChatArgs;
pub use crate::error::ChatError;
use crate::follow::{RunView, accepted_frame, follow};
use crate::terminal::Output;
use crate::timeline::Look;

/// Reconnect attempts before the command gives up on a server that went away.
const RECONNECT_ATTEMPTS: u32 = 5;

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
