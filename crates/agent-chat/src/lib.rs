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
//! Without a message, each line typed is a message in the conversation's thread
//! (`conversation`). On a terminal a line can be typed while an answer runs: it is sent at once
//! and the server queues it ("queued (#1): ..."), and its answer is shown after the running
//! one's; `/interrupt MESSAGE` stops the running answer and answers MESSAGE instead, and
//! `/steer MESSAGE` adds MESSAGE to the running answer when its agent takes messages while it
//! answers (the `multitask` of `start_agent`: `enqueue`, `interrupt`, `steer`). `runs` keeps
//! track of the run shown and the ones awaited. From a pipe the lines are a script, each read
//! once the answers before it have ended.
//!
//! A run that pauses for a person's approval of a tool call is asked about in a conversation
//! (`ask`: y, n or e); the one-shot command prints the waiting calls and the commands that
//! decide them (`--approve`, `--reject`, `--edit`, which then follow the run) and exits with
//! [`EXIT_WAITING_FOR_APPROVAL`] (`oneshot`).
//!
//! A run that waits for its user's budget (`budget_exhausted`) goes on by itself when the
//! budget resets or the limit is raised, which may be weeks away: the one-shot command says
//! so, where to see the run later and how to cancel it (`--cancel RUN_ID`), and exits with
//! [`EXIT_WAITING_FOR_BUDGET`]; a conversation reads on, keeps the run among those that wait
//! (`runs`), shows it again if it goes on while the session is open, and `/cancel` ends it.
//!
//! How events are printed is the `timeline` module (and `markdown` for a conversation's answer
//! on a terminal), kept apart from IO and tested without a server, like `approval`, what is
//! said and read about waiting calls, `command`, what a line typed means, and `usage`, what
//! `/usage` prints of `GET /v1/me/usage` (and a message refused for a spent budget); `terminal`
//! decides what the terminal gets (on a terminal, printed above the line editor's prompt),
//! `prompt` reads the conversation's lines. The command line is `args` ([`ChatArgs`], which
//! the server's binary shows as its `chat` subcommand), the one error type `error`
//! ([`ChatError`]).
//!
//! The crate knows nothing of the server's code: it speaks to a server over the wire, through
//! `agent-client`, like any other client. Its modules use each other downwards only; this root
//! uses them, and none uses the root:
//! - `conversation` uses `approval`, `args`, `ask`, `command`, `error`, `follow`, `prompt`,
//!   `runs`, `terminal`, `timeline`, `usage`;
//! - `oneshot` uses `approval`, `args`, `error`, `follow`, `terminal`, `timeline`, `usage`;
//! - `ask` uses `approval`, `args`, `error`, `follow`, `prompt`, `terminal`;
//! - `runs` uses `error`, `follow`, `terminal`, `timeline`;
//! - `approval` uses `args`, `error` and `terminal`; `command` uses `args`;
//! - `follow` uses `error`, `terminal`, `timeline`;
//! - `timeline` uses `markdown`, `terminal` and `usage` (for times); `markdown` uses
//!   `terminal`, which makes agent text safe to print;
//! - `prompt` uses `error` and `terminal`; `terminal` uses `error`, `error` uses `args`;
//!   `args` and `usage` use nothing of the crate.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod approval;
mod args;
mod ask;
mod command;
mod conversation;
mod error;
mod follow;
mod markdown;
mod oneshot;
mod prompt;
mod runs;
mod terminal;
mod timeline;
mod usage;

use agent_client::{Backoff, Client, ClientConfig};

pub use crate::args::{CallRef, ChatArgs, EXIT_WAITING_FOR_APPROVAL, EXIT_WAITING_FOR_BUDGET};
pub use crate::error::ChatError;
use crate::oneshot::OneShot;
use crate::terminal::Output;

/// Reconnect attempts before the command gives up on a server that went away.
const RECONNECT_ATTEMPTS: u32 = 5;

/// Runs `agent-server chat`: one run, printed until it ends; a decision about a waiting tool
/// call, then its run; a cancel, then the run's end; the list of waiting calls; or, without
/// a message, a conversation until Ctrl-D. [`ChatError::exit_code`] is the process's exit
/// code for a failure.
pub async fn run(args: ChatArgs) -> Result<(), ChatError> {
    let token = match (&args.user, &args.token) {
        (Some(user), _) => agent_client::get_dev_token(&args.server, user).await?.token,
        (None, Some(token)) => token.clone(),
        (None, None) => return Err(ChatError::NoCredentials),
    };
    let mut one_shot = OneShot {
        args: &args,
        token: &token,
        out: Output::plain(args.json),
    };
    if args.approvals {
        return one_shot.list().await;
    }
    let config = ClientConfig {
        backoff: Backoff {
            max_attempts: Some(RECONNECT_ATTEMPTS),
            ..Backoff::default()
        },
        ..ClientConfig::default()
    };
    let mut client = Client::connect_with(&args.server, &token, config).await?;
    one_shot.out.note(&format!(
        "connected to {} as {}",
        args.server,
        client.user_id()
    ));
    let outcome = match (&args.cancel, args.decision(), &args.message) {
        (Some(run), _, _) => one_shot.cancel(&mut client, run).await,
        (None, Some((call, decision)), _) => one_shot.decide(&mut client, call, decision).await,
        (None, None, Some(message)) => one_shot.run(&mut client, message).await,
        (None, None, None) => conversation::converse(&mut client, &args, &token).await,
    };
    client.close().await;
    outcome
}
