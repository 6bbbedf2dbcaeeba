//! The commands that follow one run and end with it: `agent-server chat MESSAGE`, and
//! `--approve`, `--reject`, `--edit`, which decide a waiting call and then follow its run;
//! `--cancel`, which cancels a run and follows it to its end; and `--approvals`, which lists
//! the waiting calls.
//!
//! A run that pauses for approval ends the command with
//! [`ChatError::WaitingForApproval`] (exit code 3) after printing the calls that wait (as the
//! server lists them) and the commands that decide them. A run that waits for its user's
//! budget, which may take weeks, ends it with [`ChatError::WaitingForBudget`] (exit code 4)
//! after saying when it goes on by itself, where to see it later and how to cancel it.

use agent_client::{Client, ClientError, RunAccepted};
use agent_protocol::StartAgent;
use core_context::RunId;
use core_context::approval::{Decision, PendingCall};

use crate::approval::{Invocation, Waiting, budget_wait_text, listing, waiting_text};
use crate::args::{CallRef, ChatArgs};
use crate::error::ChatError;
use crate::follow::{Followed, RunView, accepted_frame, follow};
use crate::terminal::Output;
use crate::timeline::Look;
use crate::usage::when;

/// What a second Ctrl-C does.
const AGAIN: &str = "quit without waiting";

/// What the commands run with: the command line, the token, and where output goes.
pub(crate) struct OneShot<'a> {
    pub(crate) args: &'a ChatArgs,
    pub(crate) token: &'a str,
    pub(crate) out: Output,
}

impl OneShot<'_> {
    /// `agent-server chat MESSAGE`: starts the run and follows it until it ends or pauses.
    pub(crate) async fn run(
        &mut self,
        client: &mut Client,
        message: &str,
    ) -> Result<(), ChatError> {
        let accepted = self.start(client, message).await?;
        self.follow_to_end(client, &accepted.run_id).await
    }

    /// `--approve`, `--reject`, `--edit`: decides `call`; then, unless other calls of its run
    /// still wait, follows the run like [`run`](OneShot::run).
    pub(crate) async fn decide(
        &mut self,
        client: &mut Client,
        call: &CallRef,
        decision: Decision,
    ) -> Result<(), ChatError> {
        let name = decision.name();
        client
            .resolve_approval(&call.run_id, &call.tool_call_id, decision)
            .await
            .map_err(|e| match e {
                ClientError::Server { code, message } => ChatError::DecisionRefused {
                    call: call.to_string(),
                    code: code.to_string(),
                    message,
                },
                other => ChatError::Client(other),
            })?;
        self.out.note(&format!(
            "decided {call}: {name}; following run {} (Ctrl-C cancels it)",
            call.run_id
        ));
        match agent_client::pending_approvals(&self.args.server, self.token).await {
            Ok(all) => {
                let others: Vec<Waiting> = all
                    .iter()
                    .filter(|a| a.run_id == call.run_id)
                    .map(Waiting::from)
                    .collect();
                if !others.is_empty() {
                    return Err(self.report(&call.run_id, &others)?);
                }
            }
            Err(e) => self.out.note(&format!(
                "cannot tell whether other calls of run {} wait ({e}); following it",
                call.run_id
            )),
        }
        self.follow_to_end(client, &call.run_id).await
    }

    /// `--cancel`: cancels `run` and follows it to its end; its `agent_cancelled` is success.
    pub(crate) async fn cancel(
        &mut self,
        client: &mut Client,
        run: &RunId,
    ) -> Result<(), ChatError> {
        client.cancel_run(run).await.map_err(|e| match e {
            ClientError::Server { code, message } => ChatError::CancelRefused {
                run_id: run.to_string(),
                code: code.to_string(),
                message,
            },
            other => ChatError::Client(other),
        })?;
        self.out
            .note(&format!("cancelling run {run}; following it to its end"));
        match self.follow_to_end(client, run).await {
            Err(ChatError::RunCancelled { .. }) => Ok(()),
            other => other,
        }
    }

    /// `--approvals`: the user's waiting calls.
    pub(crate) async fn list(&mut self) -> Result<(), ChatError> {
        let all = agent_client::pending_approvals(&self.args.server, self.token).await?;
        self.out.text(&listing(&all, &Invocation::of(self.args)))
    }

    /// Sends `start_agent` and reports its acceptance.
    async fn start(&mut self, client: &Client, message: &str) -> Result<RunAccepted, ChatError> {
        let args = self.args;
        let request = StartAgent {
            agent: args.agent.clone(),
            message: message.to_owned(),
            thread_id: args.thread.clone(),
            input: args.input.clone(),
            multitask: None,
        };
        let accepted = client.start(request).await.map_err(|e| match e {
            ClientError::Server { code, message } => ChatError::RunRefused {
                code: code.to_string(),
                message,
            },
            other => ChatError::Client(other),
        })?;
        self.out.raw(&accepted_frame(&accepted))?;
        self.out.note(&format!(
            "run {run} accepted on thread {thread} (continue it with --thread {thread}); Ctrl-C cancels",
            run = accepted.run_id,
            thread = accepted.thread_id,
        ));
        Ok(accepted)
    }

    /// Follows `run` until it ends, or pauses: then reports what waits.
    async fn follow_to_end(&mut self, client: &mut Client, run: &RunId) -> Result<(), ChatError> {
        let mut view = RunView::new(run, Look::default());
        match follow(client, run, &mut view, &mut self.out, AGAIN).await? {
            Followed::Completed => Ok(()),
            Followed::Paused(call) => Err(self.paused(run, call).await?),
            Followed::WaitingForBudget(exhausted) => {
                let resets_at = when(&exhausted.resets_at.to_string());
                let text = budget_wait_text(run, &resets_at, &Invocation::of(self.args));
                if self.out.json {
                    self.out.note(text.trim_end());
                } else {
                    self.out.text(&text)?;
                }
                Err(ChatError::WaitingForBudget {
                    run_id: run.to_string(),
                    resets_at,
                })
            }
        }
    }

    /// The run paused at `seen`: the calls that wait, as the server lists them (all of them
    /// when several wait together), or `seen` alone when the list cannot be had.
    async fn paused(&mut self, run: &RunId, seen: PendingCall) -> Result<ChatError, ChatError> {
        let listed: Vec<Waiting> =
            match agent_client::pending_approvals(&self.args.server, self.token).await {
                Ok(all) => all
                    .iter()
                    .filter(|a| &a.run_id == run)
                    .map(Waiting::from)
                    .collect(),
                Err(e) => {
                    self.out
                        .note(&format!("cannot list the calls that wait: {e}"));
                    Vec::new()
                }
            };
        let calls = if listed.is_empty() {
            vec![Waiting {
                call: seen,
                expires: None,
            }]
        } else {
            listed
        };
        self.report(run, &calls)
    }

    /// Prints the calls of `run` that wait and the commands that decide them (on stdout,
    /// unless it holds only frames); the error that ends the command.
    fn report(&mut self, run: &RunId, calls: &[Waiting]) -> Result<ChatError, ChatError> {
        let text = waiting_text(run, calls, &Invocation::of(self.args));
        if self.out.json {
            self.out.note(text.trim_end());
        } else {
            self.out.text(&text)?;
        }
        Ok(ChatError::WaitingForApproval {
            run_id: run.to_string(),
            calls: calls.len(),
        })
    }
}
