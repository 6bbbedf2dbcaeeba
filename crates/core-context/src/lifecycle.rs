//! The run lifecycle guarantees, as one checker.
//!
//! Every test that claims the guarantees (engine, bridge, server, agents) runs its events
//! through [`check_lifecycle`], so the guarantees are stated once:
//! - every run's first event is its one `agent_started`;
//! - every run has exactly one terminal event (`agent_completed`, `agent_error`,
//!   `agent_cancelled`) and it is the run's last event;
//! - every `tool_executing` is followed by exactly one `tool_completed` with the same
//!   `tool_call_id` and tool name, before the terminal event, and no `tool_completed` comes
//!   without its `tool_executing`;
//! - `thinking` steps of a run increase;
//! - an `approval_requested` is resolved at most once (`approval_resolved`, same
//!   `tool_call_id`), and that call's `tool_executing` comes only after it is resolved; a run
//!   whose stream ends while it waits on approvals is paused (counted, not a violation), and
//!   only a cancel ends a run that still waits;
//! - a `budget_exhausted` comes with no tool call open; a run whose stream ends right after
//!   it waits for its budget (counted as paused, not a violation);
//! - a run keeps one thread, agent name and parent;
//! - a sub-run starts after its parent started and ends before its parent ends.
//!
//! The events passed in must be one user's stream in the order it was emitted (or
//! delivered); events of different runs may interleave freely.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::event::{AgentEvent, EventKind};
use crate::id::RunId;

/// A broken guarantee: which run, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run {run_id}: {problem}")]
pub struct LifecycleViolation {
    /// The run whose events break a guarantee.
    pub run_id: String,
    /// What is wrong, in words.
    pub problem: String,
}

/// What a stream that satisfies the guarantees held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleSummary {
    /// Runs seen.
    pub runs: usize,
    /// Runs that ended in `agent_completed`.
    pub completed: usize,
    /// Runs that ended in `agent_error`, by code.
    pub errors: BTreeMap<String, usize>,
    /// Runs that ended in `agent_cancelled`.
    pub cancelled: usize,
    /// Tool calls seen (pairs).
    pub tool_calls: usize,
    /// Runs that are sub-runs.
    pub sub_runs: usize,
    /// Runs whose stream ends while they wait for approvals or for their budget (no
    /// terminal event yet).
    pub paused: usize,
    /// Approvals requested.
    pub approvals: usize,
    /// Events seen.
    pub events: usize,
}

#[derive(Default)]
struct RunState<'a> {
    first: Option<&'a AgentEvent>,
    started_at: Option<usize>,
    terminal_at: Option<usize>,
    open_tools: HashMap<&'a str, &'a str>,
    closed_tools: usize,
    last_step: u32,
    /// Approvals requested and not yet resolved.
    waiting: HashSet<&'a str>,
    /// Every approval requested.
    requested: HashSet<&'a str>,
    /// Its last event was `budget_exhausted`: it waits for its user's budget.
    waits_for_budget: bool,
}

/// Checks the guarantees listed in the module documentation over `events`.
pub fn check_lifecycle<'a>(
    events: impl IntoIterator<Item = &'a AgentEvent>,
) -> Result<LifecycleSummary, LifecycleViolation> {
    let mut runs: HashMap<&'a RunId, RunState<'a>> = HashMap::new();
    let mut order: Vec<&'a RunId> = Vec::new();
    let mut summary = LifecycleSummary::default();
    for (index, event) in events.into_iter().enumerate() {
        summary.events += 1;
        let state = runs.entry(&event.run_id).or_insert_with(|| {
            order.push(&event.run_id);
            RunState::default()
        });
        state
            .observe(index, event, &mut summary)
            .map_err(|problem| LifecycleViolation {
                run_id: event.run_id.to_string(),
                problem: format!("{problem} (event #{index}, {})", event.kind.type_name()),
            })?;
    }
    for run_id in &order {
        check_ended(run_id, &runs, &mut summary).map_err(|problem| LifecycleViolation {
            run_id: run_id.to_string(),
            problem,
        })?;
    }
    Ok(summary)
}

impl<'a> RunState<'a> {
    /// Checks the run's event at `index` against what the run did so far.
    fn observe(
        &mut self,
        index: usize,
        event: &'a AgentEvent,
        summary: &mut LifecycleSummary,
    ) -> Result<(), String> {
        self.check_same_run(event)?;
        if self.terminal_at.is_some() {
            return Err("event after the terminal event".into());
        }
        // A run that waited for its budget went on (or ended) with this event.
        self.waits_for_budget = false;
        match &event.kind {
            EventKind::AgentStarted { .. } => {
                if self.started_at.is_some() {
                    return Err("second agent_started".into());
                }
                self.started_at = Some(index);
            }
            _ if self.started_at.is_none() => {
                return Err("first event is not agent_started".into());
            }
            EventKind::AgentThinking { step, .. } => {
                if *step <= self.last_step {
                    return Err(format!(
                        "thinking step {step} after step {}",
                        self.last_step
                    ));
                }
                self.last_step = *step;
            }
            EventKind::ToolExecuting {
                tool_call_id,
                tool_name,
                ..
            } => self.tool_executing(tool_call_id, tool_name)?,
            EventKind::ToolCompleted {
                tool_call_id,
                tool_name,
                ..
            } => self.tool_completed(tool_call_id, tool_name)?,
            EventKind::AgentResponseChunk { .. } | EventKind::MessageReceived { .. } => {}
            EventKind::BudgetExhausted { .. } => {
                if let Some(open) = self.open_tools.keys().next() {
                    return Err(format!(
                        "budget_exhausted while tool call {open} is still open"
                    ));
                }
                self.waits_for_budget = true;
            }
            EventKind::ApprovalRequested { tool_call_id, .. } => {
                if !self.requested.insert(tool_call_id) {
                    return Err(format!("approval for {tool_call_id} requested twice"));
                }
                if self.open_tools.contains_key(tool_call_id.as_str()) {
                    return Err(format!(
                        "approval for {tool_call_id} requested while it executes"
                    ));
                }
                self.waiting.insert(tool_call_id);
                summary.approvals += 1;
            }
            EventKind::ApprovalResolved { tool_call_id, .. } => {
                if !self.waiting.remove(tool_call_id.as_str()) {
                    return Err(format!(
                        "approval_resolved {tool_call_id} without a waiting approval_requested"
                    ));
                }
            }
            terminal => self.terminal(index, terminal, summary)?,
        }
        Ok(())
    }

    /// A run keeps the thread, agent name and parent of its first event.
    fn check_same_run(&mut self, event: &'a AgentEvent) -> Result<(), String> {
        match self.first {
            None => self.first = Some(event),
            Some(first) => {
                if first.thread_id != event.thread_id
                    || first.agent_name != event.agent_name
                    || first.parent_run_id != event.parent_run_id
                {
                    return Err(
                        "thread, agent name or parent differs from the run's first event".into(),
                    );
                }
            }
        }
        Ok(())
    }

    fn tool_executing(&mut self, tool_call_id: &'a str, tool_name: &'a str) -> Result<(), String> {
        if self.waiting.contains(tool_call_id) {
            return Err(format!(
                "tool_call_id {tool_call_id} executing before its approval was resolved"
            ));
        }
        if self.open_tools.insert(tool_call_id, tool_name).is_some() {
            return Err(format!("tool_call_id {tool_call_id} executing twice"));
        }
        Ok(())
    }

    fn tool_completed(&mut self, tool_call_id: &str, tool_name: &str) -> Result<(), String> {
        match self.open_tools.remove(tool_call_id) {
            None => Err(format!(
                "tool_completed {tool_call_id} without an open tool_executing"
            )),
            Some(name) if name != tool_name => Err(format!(
                "tool_completed {tool_call_id} names {tool_name}, executing named {name}"
            )),
            Some(_) => {
                self.closed_tools += 1;
                Ok(())
            }
        }
    }

    fn terminal(
        &mut self,
        index: usize,
        terminal: &EventKind,
        summary: &mut LifecycleSummary,
    ) -> Result<(), String> {
        if let Some(open) = self.open_tools.keys().next() {
            return Err(format!(
                "terminal event while tool call {open} is still open"
            ));
        }
        if !self.waiting.is_empty() && !matches!(terminal, EventKind::AgentCancelled { .. }) {
            return Err("a run that waits for approvals ended other than by a cancel".into());
        }
        self.terminal_at = Some(index);
        match terminal {
            EventKind::AgentCompleted { .. } => summary.completed += 1,
            EventKind::AgentError { code, .. } => {
                *summary.errors.entry(code.clone()).or_default() += 1;
            }
            _ => summary.cancelled += 1,
        }
        Ok(())
    }
}

/// At the end of the stream: the run ended, and a sub-run lies within its parent.
fn check_ended(
    run_id: &RunId,
    runs: &HashMap<&RunId, RunState<'_>>,
    summary: &mut LifecycleSummary,
) -> Result<(), String> {
    let state = &runs[run_id];
    let Some(terminal_at) = state.terminal_at else {
        if (!state.waiting.is_empty() || state.waits_for_budget) && state.open_tools.is_empty() {
            summary.runs += 1;
            summary.paused += 1;
            summary.tool_calls += state.closed_tools;
            return Ok(());
        }
        return Err("no terminal event".into());
    };
    summary.runs += 1;
    summary.tool_calls += state.closed_tools;
    let Some(parent_id) = state.first.and_then(|e| e.parent_run_id.as_ref()) else {
        return Ok(());
    };
    summary.sub_runs += 1;
    let Some(parent) = runs.get(parent_id) else {
        return Ok(());
    };
    let child_started = state.started_at.unwrap_or(0);
    if parent.started_at.is_none_or(|p| p > child_started) {
        return Err(format!(
            "sub-run started before its parent {parent_id} started"
        ));
    }
    if parent.terminal_at.is_none_or(|p| p < terminal_at) {
        return Err(format!("sub-run ended after its parent {parent_id} ended"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::event::RunScope;
    use crate::id::ThreadId;

    fn scope(run: &str, parent: Option<&str>) -> RunScope {
        RunScope {
            run_id: RunId::parse(run).expect("valid"),
            parent_run_id: parent.map(|p| RunId::parse(p).expect("valid")),
            thread_id: ThreadId::parse("thr_x").expect("valid"),
            agent_name: Arc::from("a"),
        }
    }

    /// A compact event list: `S` started, `T` thinking, `X<id>` executing, `C<id>` completed
    /// tool, `A<id>` approval requested, `R<id>` approval resolved, `D` done, `E` error, `K`
    /// cancelled, `B` budget exhausted; each prefixed by its run (`r1:S`).
    fn events(spec: &str) -> Vec<AgentEvent> {
        let mut step = 0;
        spec.split_whitespace()
            .map(|item| {
                let (run, code) = item.split_once(':').expect("run:code");
                let (run, parent) = match run.split_once('<') {
                    Some((r, p)) => (r, Some(p)),
                    None => (run, None),
                };
                let kind = match &code[..1] {
                    "S" => EventKind::AgentStarted {
                        message: "m".into(),
                    },
                    "T" => {
                        step += 1;
                        EventKind::AgentThinking {
                            reasoning: "t".into(),
                            step,
                        }
                    }
                    "X" => EventKind::ToolExecuting {
                        tool_call_id: code[1..].into(),
                        tool_name: "calc".into(),
                        arguments: json!({}),
                    },
                    "C" => EventKind::ToolCompleted {
                        tool_call_id: code[1..].into(),
                        tool_name: "calc".into(),
                        result: json!(1),
                        is_error: false,
                        duration_ms: 0,
                    },
                    "D" => EventKind::AgentCompleted {
                        result: json!("ok"),
                        duration_ms: 1,
                        usage: None,
                    },
                    "E" => EventKind::AgentError {
                        code: "timeout".into(),
                        message: "m".into(),
                    },
                    "K" => EventKind::AgentCancelled { reason: "r".into() },
                    "B" => EventKind::BudgetExhausted {
                        budget: crate::budget::BudgetKind::Tokens,
                        used: crate::budget::Amount::Tokens(10),
                        limit: crate::budget::Amount::Tokens(10),
                        resets_at: crate::Timestamp::now(),
                    },
                    "A" => EventKind::ApprovalRequested {
                        tool_call_id: code[1..].into(),
                        tool_name: "calc".into(),
                        arguments: json!({}),
                        expires_at: crate::Timestamp::now(),
                    },
                    "R" => EventKind::ApprovalResolved {
                        tool_call_id: code[1..].into(),
                        decision: "approve".into(),
                    },
                    other => panic!("unknown code {other}"),
                };
                scope(
                    &format!("run_{run}"),
                    parent.map(|p| format!("run_{p}")).as_deref(),
                )
                .event(kind)
            })
            .collect()
    }

    fn check(spec: &str, expected: Result<(), &str>) {
        let got = check_lifecycle(&events(spec))
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(fragment)) => {
                assert!(msg.contains(fragment), "{spec}: {msg:?} lacks {fragment:?}")
            }
            _ => panic!("{spec}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn lifecycle_table() {
        let table: &[(&str, Result<(), &str>)] = &[
            ("1:S 1:T 1:X1 1:C1 1:D", Ok(())),
            ("1:S 2:S 1:X1 2:X1 2:C1 1:C1 2:E 1:K", Ok(())),
            ("1:S 2<1:S 2<1:D 1:D", Ok(())),
            ("1:T 1:S 1:D", Err("first event is not agent_started")),
            ("1:S 1:S 1:D", Err("second agent_started")),
            ("1:S 1:T", Err("no terminal event")),
            ("1:S 1:D 1:T", Err("event after the terminal event")),
            ("1:S 1:D 1:E", Err("event after the terminal event")),
            ("1:S 1:X1 1:D", Err("still open")),
            ("1:S 1:C1 1:D", Err("without an open tool_executing")),
            ("1:S 1:X1 1:X1 1:C1 1:C1 1:D", Err("executing twice")),
            ("1:S 2<1:S 1:D 2<1:D", Err("ended after its parent")),
            ("2<1:S 1:S 2<1:D 1:D", Err("started before its parent")),
            // Approvals: a paused run may end its stream waiting; a resumed one goes on.
            ("1:S 1:A1 1:A2", Ok(())),
            ("1:S 1:A1 1:R1 1:X1 1:C1 1:D", Ok(())),
            ("1:S 1:A1 1:K", Ok(())),
            ("1:S 1:A1 1:D", Err("ended other than by a cancel")),
            (
                "1:S 1:A1 1:X1 1:C1 1:D",
                Err("before its approval was resolved"),
            ),
            ("1:S 1:R1 1:D", Err("without a waiting approval_requested")),
            (
                "1:S 1:A1 1:R1 1:R1 1:D",
                Err("without a waiting approval_requested"),
            ),
            ("1:S 1:A1 1:R1 1:A1 1:D", Err("requested twice")),
            ("1:S 1:X1 1:A1 1:C1 1:D", Err("requested while it executes")),
            ("1:S 1:A1 1:X2", Err("no terminal event")),
            // Budgets: a run may end its stream waiting for its budget; it goes on after.
            ("1:S 1:T 1:B", Ok(())),
            ("1:S 1:B 1:T 1:D", Ok(())),
            ("1:S 1:B 1:K", Ok(())),
            ("1:S 1:B 1:T", Err("no terminal event")),
            (
                "1:S 1:X1 1:B",
                Err("budget_exhausted while tool call 1 is still open"),
            ),
        ];
        for (spec, expected) in table {
            check(spec, *expected);
        }
    }

    #[test]
    fn summary_counts() {
        let summary = check_lifecycle(&events("1:S 1:X1 1:C1 1:D 2:S 2:E 3<1:S 3<1:K"))
            .map_err(|e| e.to_string());
        // Run 3's parent ended before run 3 did.
        assert!(summary.is_err());
        let summary =
            check_lifecycle(&events("1:S 3<1:S 3<1:K 1:X1 1:C1 1:D 2:S 2:E")).expect("valid");
        assert_eq!(summary.runs, 3);
        assert_eq!(summary.completed, 1);
        assert_eq!(summary.cancelled, 1);
        assert_eq!(summary.errors.get("timeout"), Some(&1));
        assert_eq!(summary.tool_calls, 1);
        assert_eq!(summary.sub_runs, 1);
        assert_eq!(summary.events, 8);
        let paused =
            check_lifecycle(&events("1:S 1:A1 1:A2 2:S 2:A1 2:R1 2:X1 2:C1 2:D")).expect("valid");
        assert_eq!((paused.runs, paused.paused, paused.approvals), (2, 1, 3));
        assert_eq!((paused.completed, paused.tool_calls), (1, 1));
    }
}
