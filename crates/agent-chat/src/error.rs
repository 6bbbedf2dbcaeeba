//! [`ChatError`]: why `agent-server chat` failed, the one error type of this crate.

use std::io;

use agent_client::ClientError;

use crate::args::{EXIT_WAITING_FOR_APPROVAL, EXIT_WAITING_FOR_BUDGET};

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
    /// The run paused for a person's approval; the commands that decide were printed.
    #[error(
        "run {run_id} waits for your approval of {}; decide with the commands above (exit code {EXIT_WAITING_FOR_APPROVAL})",
        tool_calls(*calls)
    )]
    WaitingForApproval {
        /// The paused run.
        run_id: String,
        /// How many of its calls wait.
        calls: usize,
    },
    /// The run waits for its user's budget; how to see it later and cancel it was printed.
    #[error(
        "run {run_id} waits for your budget; it goes on by itself on the server when the budget \
         resets at {resets_at} or your limit is raised (exit code {EXIT_WAITING_FOR_BUDGET})"
    )]
    WaitingForBudget {
        /// The waiting run.
        run_id: String,
        /// When the budget resets, as the chat prints times (`2026-12-01 00:00 UTC`).
        resets_at: String,
    },
    /// The server refused `--cancel`.
    #[error("the server refused to cancel run {run_id} ({code}): {message}")]
    CancelRefused {
        /// The run.
        run_id: String,
        /// The error code (`run_not_found` for a run that ended, or is not the user's).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server refused `--approve`, `--reject` or `--edit`.
    #[error("the server refused the decision about {call} ({code}): {message}")]
    DecisionRefused {
        /// The call, as `RUN_ID/TOOL_CALL_ID`.
        call: String,
        /// The error code (`approval_not_found`, `approval_already_decided`,
        /// `approval_expired`, `invalid_field`).
        code: String,
        /// The server's explanation.
        message: String,
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

impl ChatError {
    /// The process's exit code for this outcome: [`EXIT_WAITING_FOR_APPROVAL`] for a run that
    /// waits for approval and [`EXIT_WAITING_FOR_BUDGET`] for one that waits for its budget (a
    /// script can tell them apart), 1 for every failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ChatError::WaitingForApproval { .. } => EXIT_WAITING_FOR_APPROVAL,
            ChatError::WaitingForBudget { .. } => EXIT_WAITING_FOR_BUDGET,
            _ => 1,
        }
    }
}

/// `n` tool calls, in words: "1 tool call", "2 tool calls".
pub(crate) fn tool_calls(n: usize) -> String {
    if n == 1 {
        "1 tool call".to_owned()
    } else {
        format!("{n} tool calls")
    }
}
