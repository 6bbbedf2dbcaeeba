//! Following one run until it ends: its events (and its sub-runs', indented) printed through
//! the `timeline`, Ctrl-C sent as `cancel_run`, and while waiting, a status line that counts
//! the time. The one-shot command and each turn of the conversation use the same loop; they
//! differ only in what they do with its outcome. A run that asks for approval (its own
//! `approval_requested`, not a sub-run's) stops the loop too ([`Followed::Paused`]): the
//! conversation asks the person and follows on; the one-shot command says how to decide. So
//! does a run that waits for its user's budget (its own `budget_exhausted`,
//! [`Followed::WaitingForBudget`]), which may wait for weeks: the one-shot command says how to
//! see it later and exits, the conversation keeps it among the runs that wait and reads on.
//!
//! A dropped connection is resumed by the client, so the timeline has no gap. Ctrl-C sends
//! `cancel_run` once and keeps printing until the run says it was cancelled; a second Ctrl-C
//! stops waiting ([`ChatError::Interrupted`]).

use std::time::{Duration, Instant};

use agent_client::{Client, Notice, RunAccepted, StreamItem};
use agent_protocol::{AgentEvent, EventKind, SequencedEvent, ServerFrame, UnknownFrame};
use core_context::RunId;
use core_context::approval::PendingCall;
use core_context::budget::Exhausted;
use tokio::time::MissedTickBehavior;

use crate::error::ChatError;
use crate::terminal::{Output, status_text};
use crate::timeline::{Look, RunFilter, Timeline};

/// How often the status line is redrawn: often enough that its tenths of a second move.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Where following a run stopped, short of a failure (an error).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Followed {
    /// The run completed.
    Completed,
    /// The run asks for approval of this call (the first of its calls that wait, when
    /// several do: following again gives the next).
    Paused(PendingCall),
    /// The run waits for its user's budget: it goes on by itself (more events of the same
    /// run, no second `agent_started`) when a new period begins or the limit is raised.
    WaitingForBudget(Exhausted),
}

/// Prints the run's events until its terminal event, or until it asks for approval; Ctrl-C
/// cancels it, and a second Ctrl-C stops waiting: `again` says what that means to the user
/// ("quit without waiting"). Called again after a pause, it goes on where it stopped.
pub(crate) async fn follow(
    client: &mut Client,
    run: &RunId,
    view: &mut RunView,
    out: &mut Output,
    again: &str,
) -> Result<Followed, ChatError> {
    let run_id = run.to_string();
    // The handler is installed only once the run is accepted: before that there is nothing to
    // cancel, and the default Ctrl-C (end the process) is the right thing.
    let mut ctrl_c = CtrlC::listen();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let outcome = loop {
        tokio::select! {
            item = client.next_item() => match item {
                None => break Err(ChatError::Ended { run_id }),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(item)) => {
                    if let Some(outcome) = view.show(&item, out)? {
                        break outcome;
                    }
                }
            },
            () = ctrl_c.pressed() => {
                if view.cancel_sent {
                    out.text(&view.timeline.finish())?;
                    break Err(ChatError::Interrupted { run_id });
                }
                cancel(client, run, view, out, again).await?;
            }
            _ = ticker.tick(), if out.has_status() => out.show_status(&view.status()),
        }
    };
    out.text(&view.timeline.flush())?;
    out.clear_status();
    outcome
}

/// Sends `cancel_run` for the run, saying so: its `agent_cancelled` follows in the stream,
/// and a second Ctrl-C stops waiting for it (`again`).
pub(crate) async fn cancel(
    client: &Client,
    run: &RunId,
    view: &mut RunView,
    out: &mut Output,
    again: &str,
) -> Result<(), ChatError> {
    out.text(&view.timeline.finish())?;
    view.cancel_sent = true;
    out.note(&format!(
        "cancelling run {run}; press Ctrl-C again to {again}"
    ));
    if let Err(e) = client.cancel_run(run).await {
        out.note(&format!("the server refused to cancel: {e}"));
    }
    Ok(())
}

/// Ctrl-C, listened to from the moment the listener is made: a Ctrl-C pressed as soon as the
/// run's first line shows is not missed. (`tokio::signal::ctrl_c()` listens only from its
/// first poll.)
pub(crate) struct CtrlC {
    #[cfg(not(unix))]
    listening: bool,
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl CtrlC {
    /// Listens from now on. Once it has, the process no longer ends at a Ctrl-C.
    pub(crate) fn listen() -> Self {
        Self {
            #[cfg(not(unix))]
            listening: true,
            // Without a signal handler Ctrl-C keeps its default meaning (the process ends).
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves at the next Ctrl-C; never, when not listening or there is no handler.
    /// Cancel-safe.
    pub(crate) async fn pressed(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        #[cfg(not(unix))]
        if self.listening && tokio::signal::ctrl_c().await.is_ok() {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// The run being shown: which events belong to it, and how they are printed.
pub(crate) struct RunView {
    filter: RunFilter,
    pub(crate) timeline: Timeline,
    look: Look,
    /// `cancel_run` was sent: a Ctrl-C now stops waiting.
    cancel_sent: bool,
    /// The timeline's origin: when `run_accepted` arrived. Local time, not the events'
    /// timestamps, so that a server clock that differs from ours does not skew the figures.
    accepted_at: Instant,
}

impl RunView {
    /// The view of `run`, started (or decided about) just now, laid out as `look` says.
    pub(crate) fn new(run: &RunId, look: Look) -> Self {
        Self {
            filter: RunFilter::new(run.as_str()),
            timeline: Timeline::new(look),
            look,
            cancel_sent: false,
            accepted_at: Instant::now(),
        }
    }

    /// Whether `cancel_run` was sent for the run (so a Ctrl-C now stops waiting).
    pub(crate) fn cancel_sent(&self) -> bool {
        self.cancel_sent
    }

    /// Notes that `cancel_run` was sent for the run some other way than [`cancel`].
    pub(crate) fn set_cancel_sent(&mut self) {
        self.cancel_sent = true;
    }

    /// Whether `event` is of the run's tree (the run itself, or one of its sub-runs).
    pub(crate) fn owns(&mut self, event: &AgentEvent) -> bool {
        let parent = event.parent_run_id.as_ref().map(|p| p.as_str());
        self.filter
            .depth_of(event.run_id.as_str(), parent)
            .is_some()
    }

    /// The status line's text now.
    pub(crate) fn status(&self) -> String {
        status_text(self.elapsed(), self.cancel_sent, self.look.ansi)
    }

    /// Shows one item of the stream (nothing, when it is not of the run's tree). Returns where
    /// following stops when the item ends or pauses the run itself (a sub-run's end is just
    /// another line).
    pub(crate) fn show(
        &mut self,
        item: &StreamItem,
        out: &mut Output,
    ) -> Result<Option<Result<Followed, ChatError>>, ChatError> {
        match item {
            StreamItem::Event(event) => self.event(event, out),
            StreamItem::Notice(Notice::NewerFrame(frame)) => {
                self.unknown(frame, out)?;
                Ok(None)
            }
            StreamItem::Notice(notice) => {
                out.text(&self.timeline.finish())?;
                out.note(&notice.to_string());
                Ok(None)
            }
        }
    }

    fn event(
        &mut self,
        event: &SequencedEvent,
        out: &mut Output,
    ) -> Result<Option<Result<Followed, ChatError>>, ChatError> {
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
        let outcome = if depth == 0 { stop(&inner.kind) } else { None };
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

/// The `run_accepted` frame of `accepted`, as `--json` prints it before the run's events.
pub(crate) fn accepted_frame(accepted: &RunAccepted) -> String {
    ServerFrame::RunAccepted {
        request_id: None,
        run_id: accepted.run_id.clone(),
        thread_id: accepted.thread_id.clone(),
        queued: accepted.queued.is_some(),
        position: accepted.queued,
        steered: accepted.steered,
    }
    .to_text()
}

/// Where an event of the run itself stops following it: its end (the outcome for the
/// command), its asking for approval, its waiting for the budget, or `None` for an event the
/// run goes on after.
fn stop(kind: &EventKind) -> Option<Result<Followed, ChatError>> {
    match kind {
        EventKind::AgentCompleted { .. } => Some(Ok(Followed::Completed)),
        EventKind::ApprovalRequested {
            tool_call_id,
            tool_name,
            arguments,
            ..
        } => Some(Ok(Followed::Paused(PendingCall {
            tool_call_id: tool_call_id.clone(),
            tool_name: tool_name.clone(),
            arguments: arguments.clone(),
        }))),
        EventKind::BudgetExhausted {
            budget,
            used,
            limit,
            resets_at,
        } => Some(Ok(Followed::WaitingForBudget(Exhausted {
            budget: *budget,
            used: *used,
            limit: *limit,
            resets_at: *resets_at,
        }))),
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
    use core_context::budget::{Amount, BudgetKind};

    use crate::timeline::tests::example;

    use super::*;

    #[test]
    fn terminal_events_decide_the_exit_and_approvals_and_budgets_pause() {
        let paused = Followed::Paused(PendingCall {
            tool_call_id: "call_01JD6QE0C1".into(),
            tool_name: "calculator".into(),
            arguments: serde_json::json!({"expression": "12*7"}),
        });
        // The example's run waits for its token budget until the next month.
        let budget = Followed::WaitingForBudget(Exhausted {
            budget: BudgetKind::Tokens,
            used: Amount::Tokens(99_200),
            limit: Amount::Tokens(100_000),
            resets_at: serde_json::from_value(serde_json::json!("2026-12-01T00:00:00Z")).unwrap(),
        });
        let table: &[(&str, Option<Result<Followed, &str>>)] = &[
            ("agent_started", None),
            ("agent_response_chunk", None),
            ("approval_resolved", None),
            ("approval_requested", Some(Ok(paused))),
            ("message_received", None),
            ("budget_exhausted", Some(Ok(budget))),
            ("agent_completed", Some(Ok(Followed::Completed))),
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
            let got = stop(&event.event.kind).map(|r| r.map_err(|e| e.to_string()));
            let expected = expected.clone().map(|r| r.map_err(str::to_owned));
            assert_eq!(got, expected, "{kind}");
        }
    }
}
