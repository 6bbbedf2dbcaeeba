//! How `agent-server chat` prints a run: one line per event, sub-runs indented, the streamed
//! answer on one line as its chunks arrive. Kept apart from IO, so it is tested against the
//! frames of `docs/protocol-examples.json` without a server.
//!
//! Two layouts ([`Look`]): the one-shot command's timeline, where the answer is one more line,
//! and the conversation's, where the run's own answer is a message of its own (rendered from
//! markdown on a terminal, see `markdown`), the steps around it are dimmed, and the run's end
//! is said in plain words.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use agent_protocol::{AgentEvent, EventKind};
use serde_json::Value;

use crate::markdown::MarkdownLines;
use crate::terminal::continued;
use crate::usage::{grouped, when};

/// `text` on one line of at most `room` characters, cut with `…` when longer.
fn one_line(text: &str, room: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= room {
        return flat;
    }
    let mut cut: String = flat.chars().take(room.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Width of the event label column of the timeline (the longest label is `tool failed`).
const LABEL_WIDTH: usize = 11;

/// Picks out the events of one run and of its sub-runs (at any depth). Other runs' events
/// arrive too when the same user has other tabs or clients open; they are not ours to show.
#[derive(Debug)]
pub(crate) struct RunFilter {
    /// Every run of this tree seen so far, with its depth (0 for the run itself). Bounded by
    /// the tree's own size, which the server bounds.
    depths: HashMap<String, usize>,
}

impl RunFilter {
    pub(crate) fn new(run_id: &str) -> Self {
        Self {
            depths: HashMap::from([(run_id.to_owned(), 0)]),
        }
    }

    /// The depth of the event's run in the tree, or `None` when it is not of the tree.
    pub(crate) fn depth_of(&mut self, run_id: &str, parent_run_id: Option<&str>) -> Option<usize> {
        if let Some(depth) = self.depths.get(run_id) {
            return Some(*depth);
        }
        let depth = self.depths.get(parent_run_id?)? + 1;
        self.depths.insert(run_id.to_owned(), depth);
        Some(depth)
    }
}

/// ANSI: dim on, and back to normal intensity.
const DIM: &str = "\x1b[2m";
const UNDIM: &str = "\x1b[22m";

/// How a run is laid out and styled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Look {
    /// The conversation's layout: the run's own answer is a message without a prefix, its
    /// `started` line is left out (the prompt shows the message), and its end is said in plain
    /// words. Otherwise every event is a line of the timeline.
    pub(crate) conversation: bool,
    /// ANSI styles: in the conversation, the steps dimmed and the answer rendered from
    /// markdown.
    pub(crate) ansi: bool,
    /// With ANSI styles, the terminal's width: the answer is wrapped at it and shown as it
    /// streams within a line (`markdown`); 0 for whole lines only.
    pub(crate) width: usize,
}

/// Renders events as a readable timeline, one line per event, with the answer streamed onto
/// a single line as its chunks arrive.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    look: Look,
    /// The run whose answer line is still open (no newline written yet).
    open_answer: Option<String>,
    /// The answer text streamed so far per run, so `completed` does not repeat it.
    answers: HashMap<String, String>,
    /// Conversation with ANSI: the run's own answer, rendered a complete line at a time.
    message: MarkdownLines,
}

impl Timeline {
    pub(crate) fn new(look: Look) -> Self {
        Self {
            look,
            message: MarkdownLines::live(look.width),
            ..Self::default()
        }
    }

    /// The text to print for `event`, seen `elapsed` after the run was accepted, for a run at
    /// `depth` in the run tree (sub-runs are indented).
    pub(crate) fn render(&mut self, event: &AgentEvent, elapsed: Duration, depth: usize) -> String {
        if self.look.conversation
            && depth == 0
            && let Some(text) = self.message_event(event, elapsed)
        {
            return text;
        }
        let run_id = event.run_id.as_str();
        let steps = self.look.conversation;
        if let EventKind::AgentResponseChunk { delta } = &event.kind {
            let text = self.answer_chunk(run_id, delta, elapsed, depth);
            return self.dim(text, steps);
        }
        let (label, mut body) = self.describe(event, depth);
        if steps && self.look.width > 0 && label.starts_with("tool") {
            // A tool's arguments and result can be pages of JSON: in the conversation their
            // step is one screen line (`--json` has them whole).
            let room = self
                .look
                .width
                .saturating_sub(prefix(elapsed, depth, label).chars().count() + 1);
            body = one_line(&body, room);
        }
        self.line(elapsed, depth, label, &body, steps)
    }

    /// The text to print for an event of a type newer than this client: still shown, raw,
    /// rather than hidden.
    pub(crate) fn render_unknown(
        &mut self,
        kind: &str,
        data: &Value,
        elapsed: Duration,
        depth: usize,
    ) -> String {
        let steps = self.look.conversation;
        self.line(elapsed, depth, "event", &format!("{kind} {data}"), steps)
    }

    /// Ends an open answer line; returns what to print for that (a newline, or nothing).
    pub(crate) fn finish(&mut self) -> String {
        match self.open_answer.take() {
            Some(_) => "\n".to_owned(),
            None => String::new(),
        }
    }

    /// Ends everything the run left unfinished, when the run is no longer followed: an open
    /// line, and the last line of the answer not yet rendered.
    pub(crate) fn flush(&mut self) -> String {
        let mut text = self.finish();
        text.push_str(&self.message.finish());
        text
    }

    /// One line of the timeline; dimmed when it is a `step` and styles are on.
    fn line(
        &mut self,
        elapsed: Duration,
        depth: usize,
        label: &str,
        body: &str,
        step: bool,
    ) -> String {
        let mut text = self.finish();
        let head = prefix(elapsed, depth, label);
        let pad = " ".repeat(head.chars().count());
        let mut line = head;
        line.push_str(&continued(body, &pad));
        text.push_str(&self.dim(line, step));
        text.push('\n');
        text
    }

    /// `text` dimmed, when it is a `step` and styles are on.
    fn dim(&self, text: String, step: bool) -> String {
        if self.look.ansi && step && !text.is_empty() {
            format!("{DIM}{text}{UNDIM}")
        } else {
            text
        }
    }

    /// Conversation layout: the run's own events that are not lines of the timeline (its
    /// start, its answer, its end), or `None` for its steps.
    fn message_event(&mut self, event: &AgentEvent, elapsed: Duration) -> Option<String> {
        let run_id = event.run_id.as_str();
        let (label, body) = match &event.kind {
            EventKind::AgentStarted { .. } => return Some(String::new()),
            EventKind::AgentResponseChunk { delta } => return Some(self.message(run_id, delta)),
            EventKind::AgentCompleted {
                result,
                duration_ms,
                usage,
            } => {
                return Some(self.message_completed(
                    event,
                    result,
                    *duration_ms,
                    usage.as_ref(),
                    elapsed,
                ));
            }
            EventKind::AgentError { code, message } => ("failed", format!("{message} ({code})")),
            EventKind::AgentCancelled { reason } => ("cancelled", reason.clone()),
            _ => return None,
        };
        self.answers.remove(run_id);
        let mut text = self.flush();
        text.push_str(&self.line(elapsed, 0, label, &body, false));
        Some(text)
    }

    /// Conversation layout: answer text of the run itself, as a message without a prefix.
    fn message(&mut self, run_id: &str, delta: &str) -> String {
        self.answers
            .entry(run_id.to_owned())
            .or_default()
            .push_str(delta);
        if self.look.ansi {
            let mut text = self.finish();
            text.push_str(&self.message.push(delta));
            return text;
        }
        let mut text = if self.open_answer.as_deref() == Some(run_id) {
            String::new()
        } else {
            self.finish()
        };
        text.push_str(&continued(delta, ""));
        if !delta.is_empty() {
            self.open_answer = (!delta.ends_with('\n')).then(|| run_id.to_owned());
        }
        text
    }

    /// Conversation layout: the run completed. A result that was not streamed is the message
    /// when it is text (or `{"answer": text}`); the `completed` line says how long it took,
    /// and shows only a result that is neither streamed nor text.
    fn message_completed(
        &mut self,
        event: &AgentEvent,
        result: &Value,
        duration_ms: u64,
        usage: Option<&Value>,
        elapsed: Duration,
    ) -> String {
        let run_id = event.run_id.as_str();
        let null = Value::Null;
        let mut shown = &null;
        let mut text = String::new();
        if self.answers.remove(run_id).is_none() {
            match result.as_str().or_else(|| result["answer"].as_str()) {
                Some(answer) => text.push_str(&self.message(run_id, answer)),
                None => shown = result,
            }
        }
        text.push_str(&self.flush());
        let body = self.completed(run_id, shown, duration_ms, usage);
        text.push_str(&self.line(elapsed, 0, "completed", &body, true));
        text
    }

    fn answer_chunk(
        &mut self,
        run_id: &str,
        delta: &str,
        elapsed: Duration,
        depth: usize,
    ) -> String {
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
        text
    }

    fn describe(&mut self, event: &AgentEvent, depth: usize) -> (&'static str, String) {
        let run_id = event.run_id.as_str();
        match &event.kind {
            EventKind::AgentStarted { message } if depth == 0 => {
                ("started", format!("{message:?}"))
            }
            EventKind::AgentStarted { message } => (
                "started",
                format!("sub-run {}: {message:?}", event.agent_name),
            ),
            EventKind::AgentThinking { reasoning, step } => {
                ("thinking", format!("({step}) {reasoning}"))
            }
            EventKind::ToolExecuting {
                tool_name,
                arguments,
                ..
            } => ("tool", format!("{tool_name} {arguments}")),
            EventKind::ToolCompleted {
                tool_name,
                result,
                is_error,
                duration_ms,
                ..
            } => (
                if *is_error {
                    "tool failed"
                } else {
                    "tool done"
                },
                format!("{tool_name} -> {result} ({duration_ms} ms)"),
            ),
            EventKind::AgentResponseChunk { delta } => ("answer", delta.clone()),
            EventKind::AgentCompleted {
                result,
                duration_ms,
                usage,
            } => (
                "completed",
                self.completed(run_id, result, *duration_ms, usage.as_ref()),
            ),
            EventKind::AgentError { code, message } => {
                self.answers.remove(run_id);
                ("error", format!("{code}: {message}"))
            }
            EventKind::AgentCancelled { reason } => {
                self.answers.remove(run_id);
                ("cancelled", reason.clone())
            }
            EventKind::ApprovalRequested {
                tool_call_id,
                tool_name,
                arguments,
                expires_at,
            } => (
                "approval?",
                format!("{tool_name}({arguments}) [{tool_call_id}, expires {expires_at}]"),
            ),
            EventKind::ApprovalResolved {
                tool_call_id,
                decision,
            } => ("approval", format!("{decision} [{tool_call_id}]")),
            EventKind::MessageReceived { message } => ("you added", format!("{message:?}")),
            EventKind::BudgetExhausted {
                budget,
                used,
                limit,
                resets_at,
            } => ("budget", budget_wait(*budget, *used, *limit, *resets_at)),
        }
    }

    fn completed(
        &mut self,
        run_id: &str,
        result: &Value,
        duration_ms: u64,
        usage: Option<&Value>,
    ) -> String {
        let mut body = format!("in {duration_ms} ms");
        let streamed = self.answers.remove(run_id);
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
        if let Some(usage) = usage.filter(|u| !u.is_null()) {
            let _ = write!(body, " (usage {usage})");
        }
        body
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

#[cfg(test)]
pub(crate) mod tests;

/// A run that waits for its user's budget, in words: what is used of what, and when it goes
/// on by itself. What ends it sooner is the caller's to say (`/cancel`, `--cancel`).
pub(crate) fn budget_wait(
    budget: core_context::budget::BudgetKind,
    used: core_context::budget::Amount,
    limit: core_context::budget::Amount,
    resets_at: core_context::Timestamp,
) -> String {
    use core_context::budget::{Amount, BudgetKind};
    let amount = |a: Amount| match a {
        Amount::Tokens(n) => format!("{} tokens", grouped(n)),
        Amount::Usd(usd) => format!("${usd:.2}"),
    };
    let spent = match (used, limit) {
        (Amount::Tokens(used), Amount::Tokens(limit)) => {
            format!("{} of {} tokens", grouped(used), grouped(limit))
        }
        (used, limit) => format!("{} of {}", amount(used), amount(limit)),
    };
    let what = match budget {
        BudgetKind::Tokens => "token",
        BudgetKind::CostUsd => "cost",
    };
    format!(
        "your {what} budget is used up ({spent}): the run waits, and goes on by itself when \
         the budget resets at {}, or sooner if your limit is raised",
        when(&resets_at.to_string())
    )
}
