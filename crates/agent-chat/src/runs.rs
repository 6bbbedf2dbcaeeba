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
}

/// The runs the conversation shows, and the ones it waits for.
pub(crate) struct Runs {
    look: Look,
    current: Option<Current>,
    /// Runs accepted behind the running one, not started yet, in the order they were accepted.
    queued: Vec<RunId>,
    steered: Vec<Steered>,
}

impl Runs {
    pub(crate) fn new(look: Look) -> Self {
        Self {
            look,
            current: None,
            queued: Vec::new(),
            steered: Vec::new(),
        }
    }

    /// Nothing runs or waits: the thread is the user's to change, and in a pipe the next line
    /// is read.
    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none() && self.queued.is_empty() && self.steered.is_empty()
    }

    /// The run shown, if one is.
    pub(crate) fn current(&mut self) -> Option<&mut Current> {
        self.current.as_mut()
    }

    /// Stops showing the run shown (the user stopped waiting for it); returns it.
    pub(crate) fn drop_current(&mut self) -> Option<RunId> {
        self.current.take().map(|current| current.run)
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
            Ok(Followed::Completed)
            | Err(ChatError::RunFailed { .. } | ChatError::RunCancelled { .. }) => {
                self.current = None;
                Ok(Some(Shown::Ended))
            }
            Err(e) => Err(e),
        }
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
}
