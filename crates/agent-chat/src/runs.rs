//! The runs of the conversation's thread that it shows ([`Runs`]): the one running, whose
//! events are printed; the ones the server accepted behind it (a line typed while it runs,
//! `/interrupt`), shown in turn when they start; and the messages steered into a running run
//! (`/steer`) that it has not taken yet.
//!
//! A thread runs one run at a time, and in the user's stream the next run's `agent_started`
//! comes after the previous run's terminal event; so whichever of the awaited runs starts next
//! is the one shown next. That is not always the order they were sent in: an `interrupt` starts
//! ahead of the runs queued before it. A steered message the run ends without taking
//! (no `message_received`) starts a run of its own in the thread, with that message, which is
//! shown like a queued one.
//!
//! A run shown that waits for its user's budget (`budget_exhausted`) is no longer the run
//! shown: it is kept among the runs that wait ([`Runs::waiting`]), which do not keep the
//! conversation from reading on. It holds its thread on the server (messages sent into it are
//! queued behind it). When it goes on (more events of the same run, no second
//! `agent_started`) it is the run shown again if none is; if another thread's run is shown,
//! only what becomes of it is said, and the history has its events.

use agent_client::{RunAccepted, StreamItem};
use agent_protocol::{AgentEvent, EventKind};
use core_context::approval::PendingCall;
use core_context::multitask::Multitask;
use core_context::{RunId, ThreadId};

use crate::error::ChatError;
use crate::follow::{Followed, RunView};
use crate::terminal::{Output, escape_controls};
use crate::timeline::Look;

/// The run whose events are printed.
pub(crate) struct Current {
    pub(crate) run: RunId,
    pub(crate) view: RunView,
}

/// A message handed to a running run, not taken by it yet.
#[derive(Debug)]
struct Steered {
    thread: ThreadId,
    message: String,
}

/// What an item of the stream did to the run shown.
#[derive(Debug, PartialEq)]
pub(crate) enum Shown {
    /// It ended; the timeline said how.
    Ended,
    /// It asks for approval of this call.
    Paused(PendingCall),
    /// It waits for its user's budget: it is one of the runs that wait now, no longer shown.
    WaitsForBudget(RunId),
}

/// A run that waits for its user's budget.
struct BudgetWait {
    run: Current,
    /// It went on while another run was shown, and that was said.
    noted: bool,
}

/// The runs the conversation shows, and the ones it waits for.
pub(crate) struct Runs {
    look: Look,
    current: Option<Current>,
    /// Runs accepted behind the running one, not started yet, in the order they were accepted.
    queued: Vec<RunId>,
    steered: Vec<Steered>,
    /// Runs that wait for their user's budget, in the order they began to.
    waiting: Vec<BudgetWait>,
}

impl Runs {
    pub(crate) fn new(look: Look) -> Self {
        Self {
            look,
            current: None,
            queued: Vec::new(),
            steered: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Nothing runs or is awaited: the thread is the user's to change, and in a pipe the next
    /// line is read. A run that waits for the budget, which may wait for weeks, is not awaited
    /// until it is being cancelled (so a script's next line comes after its end).
    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none()
            && self.queued.is_empty()
            && self.steered.is_empty()
            && self.waiting.iter().all(|w| !w.run.view.cancel_sent())
    }

    /// The run shown, if one is.
    pub(crate) fn current(&mut self) -> Option<&mut Current> {
        self.current.as_mut()
    }

    /// Stops showing the run shown (the user stopped waiting for it); returns it.
    pub(crate) fn drop_current(&mut self) -> Option<RunId> {
        self.current.take().map(|current| current.run)
    }

    /// The runs that wait for their user's budget and are not being cancelled, oldest first.
    pub(crate) fn waiting(&self) -> Vec<RunId> {
        self.waiting
            .iter()
            .filter(|w| !w.run.view.cancel_sent())
            .map(|w| w.run.run.clone())
            .collect()
    }

    /// `cancel_run` was sent for `run`, which waits for its budget: its end is not news.
    pub(crate) fn cancel_sent(&mut self, run: &RunId) {
        if let Some(wait) = self.waiting.iter_mut().find(|w| &w.run.run == run) {
            wait.run.view.set_cancel_sent();
        }
    }

    /// Stops keeping `run` among the runs that wait (the server no longer knows it as active).
    pub(crate) fn let_go(&mut self, run: &RunId) {
        self.waiting.retain(|w| &w.run.run != run);
    }

    /// Stops waiting for the runs not started yet; returns how many there were.
    pub(crate) fn forget(&mut self) -> usize {
        let forgotten = self.queued.len() + self.steered.len();
        self.queued.clear();
        self.steered.clear();
        forgotten
    }

    /// The server accepted `message`, sent with `multitask`: shown at once when nothing else
    /// is, otherwise awaited. Returns what to tell the user about it, if anything.
    pub(crate) fn accepted(
        &mut self,
        accepted: &RunAccepted,
        message: &str,
        multitask: Multitask,
    ) -> Option<String> {
        let text = escape_controls(message);
        if accepted.steered {
            self.steered.push(Steered {
                thread: accepted.thread_id.clone(),
                message: message.to_owned(),
            });
            return Some(format!("added to the running answer: {text}"));
        }
        if self.is_idle() && accepted.queued.is_none() {
            self.current = Some(Current {
                run: accepted.run_id.clone(),
                view: RunView::new(&accepted.run_id, self.look),
            });
            return None;
        }
        self.queued.push(accepted.run_id.clone());
        // Not queued, though another run is shown: that run has ended on the server and its
        // end is on its way; this one is said when it starts.
        let position = accepted.queued?;
        Some(match multitask {
            Multitask::Interrupt | Multitask::Rollback => {
                format!("interrupting the running answer; next: {text}")
            }
            Multitask::Steer => format!(
                "queued (#{position}): {text} (this agent takes no messages while it answers)"
            ),
            Multitask::Enqueue | Multitask::Reject => format!("queued (#{position}): {text}"),
        })
    }

    /// Shows one item of the stream: through the run shown, or, for the start of a run
    /// awaited, as the run shown from now on. Returns what it did to the run shown.
    pub(crate) fn show(
        &mut self,
        item: &StreamItem,
        out: &mut Output,
    ) -> Result<Option<Shown>, ChatError> {
        if let StreamItem::Event(event) = item {
            if let Some(message) = self.track(&event.event) {
                out.note(&format!("answering: {}", escape_controls(&message)));
            }
            if self.went_on(&event.event, out) {
                return Ok(None);
            }
        }
        let Some(current) = &mut self.current else {
            return Ok(None);
        };
        let Some(outcome) = current.view.show(item, out)? else {
            return Ok(None);
        };
        out.text(&current.view.timeline.flush())?;
        out.clear_status();
        match outcome {
            Ok(Followed::Paused(call)) => Ok(Some(Shown::Paused(call))),
            Ok(Followed::WaitingForBudget(_)) => {
                let Some(run) = self.current.take() else {
                    return Ok(None);
                };
                let id = run.run.clone();
                self.waiting.push(BudgetWait { run, noted: false });
                Ok(Some(Shown::WaitsForBudget(id)))
            }
            Ok(Followed::Completed)
            | Err(ChatError::RunFailed { .. } | ChatError::RunCancelled { .. }) => {
                self.current = None;
                Ok(Some(Shown::Ended))
            }
            Err(e) => Err(e),
        }
    }

    /// An event of a run that waits for its budget: it goes on (or ends). With no run shown it
    /// is the run shown again (which is said, unless it ends because it was cancelled), and the
    /// event is left to it; with another shown, only its going on and its end are said, and
    /// the event is taken (returns true).
    fn went_on(&mut self, event: &AgentEvent, out: &mut Output) -> bool {
        let Some(at) = self.waiting.iter_mut().position(|w| w.run.view.owns(event)) else {
            return false;
        };
        let run = self.waiting[at].run.run.clone();
        if self.current.is_none() {
            let wait = self.waiting.remove(at);
            if !wait.run.view.cancel_sent() {
                out.note(&format!("run {run} goes on: your budget allows it again"));
            }
            self.current = Some(wait.run);
            return false;
        }
        let end = match &event.kind {
            _ if event.run_id != run => None,
            EventKind::AgentCompleted { .. } => Some("completed"),
            EventKind::AgentError { .. } => Some("failed"),
            EventKind::AgentCancelled { .. } => Some("was cancelled"),
            _ => None,
        };
        if let Some(end) = end {
            self.waiting.remove(at);
            out.note(&format!(
                "run {run}, which waited for your budget, {end}; GET /v1/runs/{run} has its events"
            ));
        } else if !self.waiting[at].noted {
            self.waiting[at].noted = true;
            out.note(&format!(
                "run {run} goes on: your budget allows it again; its events are not shown while \
                 another answer is (GET /v1/runs/{run} has them)"
            ));
        }
        true
    }

    /// Keeps track of what `event` says about the runs awaited: a steered message taken, or
    /// the start of an awaited run, which becomes the run shown (its message is returned).
    fn track(&mut self, event: &AgentEvent) -> Option<String> {
        if event.parent_run_id.is_some() {
            return None;
        }
        let thread = &event.thread_id;
        match &event.kind {
            EventKind::MessageReceived { message } => {
                if let Some(at) = self.steered_at(thread, message) {
                    self.steered.remove(at);
                }
                None
            }
            // Runs of one thread never overlap: the run shown has ended before another starts.
            EventKind::AgentStarted { message } if self.current.is_none() => {
                if let Some(at) = self.queued.iter().position(|run| run == &event.run_id) {
                    self.queued.remove(at);
                } else {
                    let at = self.steered_at(thread, message)?;
                    self.steered.remove(at);
                }
                self.current = Some(Current {
                    run: event.run_id.clone(),
                    view: RunView::new(&event.run_id, self.look),
                });
                Some(message.clone())
            }
            _ => None,
        }
    }

    /// Where `message`, steered into a run of `thread`, is among those not taken yet.
    fn steered_at(&self, thread: &ThreadId, message: &str) -> Option<usize> {
        self.steered
            .iter()
            .position(|s| &s.thread == thread && s.message == message)
    }
}

#[cfg(test)]
mod tests {
    use agent_protocol::SequencedEvent;
    use serde_json::{Value, json};

    use super::*;

    const THREAD: &str = "thr_1";

    fn accepted(run: &str, queued: Option<u64>, steered: bool) -> RunAccepted {
        RunAccepted {
            run_id: RunId::parse(run).unwrap(),
            thread_id: ThreadId::parse(THREAD).unwrap(),
            queued,
            steered,
        }
    }

    fn event(run: &str, kind: &str, data: Value) -> StreamItem {
        let event: SequencedEvent = serde_json::from_value(json!({
            "seq": 1,
            "type": kind,
            "run_id": run,
            "thread_id": THREAD,
            "agent_name": "synthetic",
            "timestamp": "2025-01-01T00:00:00.000Z",
            "data": data,
        }))
        .unwrap();
        StreamItem::Event(event)
    }

    fn started(run: &str, message: &str) -> StreamItem {
        event(run, "agent_started", json!({ "message": message }))
    }

    fn completed(run: &str) -> StreamItem {
        event(
            run,
            "agent_completed",
            json!({ "result": "ok", "duration_ms": 1 }),
        )
    }

    fn cancelled(run: &str, reason: &str) -> StreamItem {
        event(run, "agent_cancelled", json!({ "reason": reason }))
    }

    fn shown(runs: &mut Runs) -> Option<String> {
        runs.current().map(|c| c.run.to_string())
    }

    fn feed(runs: &mut Runs, item: &StreamItem) -> Option<Shown> {
        runs.show(item, &mut Output::plain(false)).unwrap()
    }

    #[test]
    fn lines_typed_while_an_answer_runs_are_shown_in_turn() {
        let mut runs = Runs::new(Look::default());
        assert!(runs.is_idle());
        let said = runs.accepted(&accepted("run_a", None, false), "first", Multitask::Enqueue);
        assert_eq!(said, None);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_a"));
        let said = runs.accepted(
            &accepted("run_b", Some(1), false),
            "second",
            Multitask::Enqueue,
        );
        assert_eq!(said.as_deref(), Some("queued (#1): second"));
        let said = runs.accepted(
            &accepted("run_c", Some(2), false),
            "third",
            Multitask::Enqueue,
        );
        assert_eq!(said.as_deref(), Some("queued (#2): third"));
        // The queued runs' events are not the run shown's; another run's are not shown at all.
        assert_eq!(feed(&mut runs, &started("run_a", "first")), None);
        assert_eq!(feed(&mut runs, &started("run_x", "elsewhere")), None);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_a"));
        assert_eq!(feed(&mut runs, &completed("run_a")), Some(Shown::Ended));
        assert_eq!(shown(&mut runs), None);
        assert!(!runs.is_idle());
        assert_eq!(feed(&mut runs, &started("run_b", "second")), None);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
        assert_eq!(feed(&mut runs, &completed("run_b")), Some(Shown::Ended));
        assert_eq!(feed(&mut runs, &started("run_c", "third")), None);
        assert_eq!(feed(&mut runs, &completed("run_c")), Some(Shown::Ended));
        assert!(runs.is_idle());
    }

    #[test]
    fn an_interrupt_is_shown_next_even_ahead_of_earlier_queued_runs() {
        let mut runs = Runs::new(Look::default());
        runs.accepted(&accepted("run_a", None, false), "long", Multitask::Enqueue);
        runs.accepted(
            &accepted("run_b", Some(1), false),
            "later",
            Multitask::Enqueue,
        );
        let said = runs.accepted(
            &accepted("run_c", Some(1), false),
            "now",
            Multitask::Interrupt,
        );
        assert_eq!(
            said.as_deref(),
            Some("interrupting the running answer; next: now")
        );
        assert_eq!(
            feed(&mut runs, &cancelled("run_a", "interrupted")),
            Some(Shown::Ended)
        );
        feed(&mut runs, &started("run_c", "now"));
        assert_eq!(shown(&mut runs).as_deref(), Some("run_c"));
        feed(&mut runs, &completed("run_c"));
        feed(&mut runs, &started("run_b", "later"));
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
    }

    #[test]
    fn a_steered_message_is_awaited_until_taken_or_run_on_its_own() {
        let mut runs = Runs::new(Look::default());
        runs.accepted(&accepted("run_a", None, false), "warm?", Multitask::Enqueue);
        // Taken by the running run: nothing more to wait for once it ends.
        let said = runs.accepted(&accepted("run_a", None, true), "in °F", Multitask::Steer);
        assert_eq!(said.as_deref(), Some("added to the running answer: in °F"));
        let taken = event("run_a", "message_received", json!({ "message": "in °F" }));
        assert_eq!(feed(&mut runs, &taken), None);
        feed(&mut runs, &completed("run_a"));
        assert!(runs.is_idle());

        // Not taken: the message's own run is shown when it starts.
        runs.accepted(&accepted("run_b", None, false), "warm?", Multitask::Enqueue);
        runs.accepted(&accepted("run_b", None, true), "in °F", Multitask::Steer);
        feed(&mut runs, &completed("run_b"));
        assert!(!runs.is_idle());
        feed(&mut runs, &started("run_x", "something else"));
        assert_eq!(shown(&mut runs), None);
        feed(&mut runs, &started("run_c", "in °F"));
        assert_eq!(shown(&mut runs).as_deref(), Some("run_c"));
        feed(&mut runs, &completed("run_c"));
        assert!(runs.is_idle());

        // An agent that takes no messages: queued as a run of its own.
        runs.accepted(&accepted("run_d", None, false), "warm?", Multitask::Enqueue);
        let said = runs.accepted(
            &accepted("run_e", Some(1), false),
            "in °F",
            Multitask::Steer,
        );
        assert_eq!(
            said.as_deref(),
            Some("queued (#1): in °F (this agent takes no messages while it answers)")
        );
    }

    #[test]
    fn a_run_shown_stays_shown_through_its_pause_and_can_be_let_go() {
        let mut runs = Runs::new(Look::default());
        runs.accepted(&accepted("run_a", None, false), "12*7?", Multitask::Enqueue);
        let asks = event(
            "run_a",
            "approval_requested",
            json!({
                "tool_call_id": "call_1",
                "tool_name": "calculator",
                "arguments": {"expression": "12*7"},
                "expires_at": "2025-01-01T00:05:00.000Z",
            }),
        );
        assert!(matches!(feed(&mut runs, &asks), Some(Shown::Paused(_))));
        assert_eq!(shown(&mut runs).as_deref(), Some("run_a"));
        runs.accepted(
            &accepted("run_b", Some(1), false),
            "next",
            Multitask::Enqueue,
        );
        assert_eq!(
            runs.drop_current().map(|r| r.to_string()).as_deref(),
            Some("run_a")
        );
        assert_eq!(runs.forget(), 1);
        assert!(runs.is_idle());
        // A line sent into a thread busy elsewhere is awaited, not shown at once.
        let said = runs.accepted(&accepted("run_c", Some(1), false), "x", Multitask::Enqueue);
        assert_eq!(said.as_deref(), Some("queued (#1): x"));
        assert_eq!(shown(&mut runs), None);
    }

    fn waits(run: &str) -> StreamItem {
        event(
            run,
            "budget_exhausted",
            json!({"budget": "tokens", "used": 4_000, "limit": 4_010,
                   "resets_at": "2026-12-01T00:00:00.000000Z"}),
        )
    }

    fn tool(run: &str) -> StreamItem {
        event(
            run,
            "tool_executing",
            json!({"tool_call_id": "call_3", "tool_name": "calculator",
                   "arguments": {"expression": "2+2"}}),
        )
    }

    fn waiting(runs: &Runs) -> Vec<String> {
        runs.waiting().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_run_that_waits_for_its_budget_lets_the_conversation_go_on_and_is_shown_when_it_does() {
        let mut runs = Runs::new(Look::default());
        runs.accepted(&accepted("run_a", None, false), "add", Multitask::Enqueue);
        let waits_a = feed(&mut runs, &waits("run_a"));
        assert_eq!(
            waits_a,
            Some(Shown::WaitsForBudget(RunId::parse("run_a").unwrap()))
        );
        // No longer shown, and nothing keeps the next line from being read.
        assert_eq!(shown(&mut runs), None);
        assert!(runs.is_idle());
        assert_eq!(waiting(&runs), ["run_a"]);
        // The thread is still its: a message sent into it is queued behind it.
        let said = runs.accepted(
            &accepted("run_b", Some(1), false),
            "next",
            Multitask::Enqueue,
        );
        assert_eq!(said.as_deref(), Some("queued (#1): next"));
        // Another run's events do not wake it; its own do, and it is shown again.
        assert_eq!(feed(&mut runs, &tool("run_x")), None);
        assert_eq!(waiting(&runs), ["run_a"]);
        assert_eq!(feed(&mut runs, &tool("run_a")), None);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_a"));
        assert!(waiting(&runs).is_empty());
        assert_eq!(feed(&mut runs, &completed("run_a")), Some(Shown::Ended));
        feed(&mut runs, &started("run_b", "next"));
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
        assert_eq!(feed(&mut runs, &completed("run_b")), Some(Shown::Ended));
        assert!(runs.is_idle());
    }

    #[test]
    fn a_run_waiting_for_its_budget_goes_on_behind_another_thread_or_is_cancelled() {
        let mut runs = Runs::new(Look::default());
        runs.accepted(&accepted("run_a", None, false), "add", Multitask::Enqueue);
        feed(&mut runs, &waits("run_a"));
        // A message in another thread (/new) is shown at once.
        runs.accepted(&accepted("run_b", None, false), "hi", Multitask::Enqueue);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
        // The waiting run goes on meanwhile: said, not shown; its end lets it go.
        assert_eq!(feed(&mut runs, &tool("run_a")), None);
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
        assert_eq!(waiting(&runs), ["run_a"]);
        assert_eq!(feed(&mut runs, &completed("run_a")), None);
        assert!(waiting(&runs).is_empty());
        assert_eq!(shown(&mut runs).as_deref(), Some("run_b"));
        assert_eq!(feed(&mut runs, &completed("run_b")), Some(Shown::Ended));

        // Cancelled while it waits: its end is shown, and it is gone.
        runs.accepted(&accepted("run_c", None, false), "add", Multitask::Enqueue);
        feed(&mut runs, &waits("run_c"));
        let run_c = RunId::parse("run_c").unwrap();
        runs.cancel_sent(&run_c);
        // Its end is awaited now, and it is not cancelled twice.
        assert!(!runs.is_idle() && waiting(&runs).is_empty());
        let end = feed(&mut runs, &cancelled("run_c", "cancelled by the user"));
        assert_eq!(end, Some(Shown::Ended));
        assert!(runs.is_idle());

        // One the server no longer knows is let go.
        runs.accepted(&accepted("run_d", None, false), "add", Multitask::Enqueue);
        feed(&mut runs, &waits("run_d"));
        runs.let_go(&RunId::parse("run_d").unwrap());
        assert!(waiting(&runs).is_empty());
    }
}
