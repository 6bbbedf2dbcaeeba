//! One run's execution, shared by top-level runs and sub-runs so both keep exactly the same
//! guarantees: [`execute`] races the agent against cancellation and its deadline, [`finish`]
//! emits the one terminal event; and sub-runs, an agent starting another agent within its
//! run ([`SubRunner`]), with a lifecycle of their own (started, one terminal event, before
//! their parent's), a child context and the parent's deadline. A sub-run holds no run slot
//! (the parent's covers it), so a parent waiting for its sub-runs cannot deadlock the user's
//! limit.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent_registry::{
    Agent, AgentContext, AgentContextParts, AgentError, AgentInput, AgentOutput, ApprovalGate,
    Pause, SubRunner, panic_message,
};
use core_context::event::{EventKind, error_code};
use core_context::{RunId, RunScope, UserExecutionContext};
use futures::FutureExt;
use serde_json::Value;
use tracing::{Instrument, info_span};

use crate::inner::EngineInner;
use crate::run::{RunControl, RunOutcome};

/// What the agent is asked to do: start on its input, or go on from a paused state.
pub(crate) enum Work {
    Start(AgentInput),
    Resume {
        input: AgentInput,
        /// The agent's own state, as it paused.
        state: Value,
    },
}

/// What a run goes by: its time limit, how its tool calls meet approvals, and the thinking
/// steps it took before (a resumed run counts on).
pub(crate) struct RunRules {
    pub(crate) limit: TimeLimit,
    pub(crate) gate: ApprovalGate,
    pub(crate) steps_taken: u32,
}

impl Work {
    /// The run's input (its message and options).
    pub(crate) fn input(&self) -> &AgentInput {
        match self {
            Work::Start(input) | Work::Resume { input, .. } => input,
        }
    }

    /// The run's input, to fill in (its earlier turns, read when it starts).
    pub(crate) fn input_mut(&mut self) -> &mut AgentInput {
        match self {
            Work::Start(input) | Work::Resume { input, .. } => input,
        }
    }
}

/// How long a run may take: its timeout, and a point it may not outlive (a sub-run's
/// parent's deadline).
#[derive(Clone, Copy)]
pub(crate) struct TimeLimit {
    pub(crate) timeout: Duration,
    pub(crate) not_after: Option<Instant>,
}

/// Runs `agent` for the run `scope` until it ends, and says how. Emits nothing of the run's
/// own lifecycle (the caller emits `agent_started` and, through [`finish`], the terminal
/// event); the agent's own events go through its context. Shared by top-level runs and
/// sub-runs, so both keep exactly the same guarantees.
///
/// A run that paused for approvals ends [`RunOutcome::Paused`], with the state to save
/// (the agent's and its steps, `approvals::envelope`) next to it.
pub(crate) async fn execute(
    engine: &Arc<EngineInner>,
    scope: &RunScope,
    agent: &dyn Agent,
    work: Work,
    run_context: UserExecutionContext,
    control: &RunControl,
    rules: RunRules,
) -> (RunOutcome, Option<Value>) {
    let RunRules {
        limit,
        gate,
        steps_taken,
    } = rules;
    let counters = &engine.counters;
    counters.running.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = [run_context.deadline(), limit.not_after]
        .into_iter()
        .flatten()
        .fold(started + limit.timeout, Instant::min);
    let limit = deadline.saturating_duration_since(started);
    let ctx = AgentContext::new(AgentContextParts {
        user_context: run_context,
        scope: scope.clone(),
        sink: Arc::clone(&engine.sink),
        registry: Arc::clone(&engine.registry),
        cancellation: control.token.clone(),
        dispatch: engine.config.dispatch.clone(),
        sub_runner: Some(Arc::new(SubRuns {
            engine: Arc::clone(engine),
        })),
        deadline: Some(deadline),
        approvals: gate,
        steps_taken,
        inbox: control.inbox.clone(),
        meter: engine.meter.clone(),
    });
    let mut paused = None;
    let run = match work {
        Work::Start(input) => agent.run(&ctx, input),
        Work::Resume { input, state } => agent.resume(&ctx, input, state),
    };
    let mut work = AssertUnwindSafe(run).catch_unwind();
    // The guards (cancellation, then the deadline) are polled before the work whenever one
    // of them woke the task: once its time is up a run timed out, even if the agent returns
    // in the same instant (for example with the error of a sub-run that hit the same
    // deadline). A cancel whose wake has not come yet is caught after the select.
    let guards = guards(control, deadline, limit);
    let outcome = tokio::select! {
        biased;
        guarded = guards => guarded,
        finished = &mut work => match finished {
            Ok(Ok(output)) => RunOutcome::Completed { output, duration: started.elapsed() },
            Ok(Err(error)) => match ctx.take_pause() {
                Some(Pause::Approval { state, calls, steps }) => {
                    paused = Some(crate::approvals::envelope(state, steps));
                    RunOutcome::Paused(calls)
                }
                Some(Pause::Budget { state, exhausted, steps }) => {
                    paused = Some(crate::approvals::envelope(state, steps));
                    RunOutcome::WaitingForBudget(exhausted)
                }
                None => RunOutcome::Failed(error),
            },
            Err(panic) => RunOutcome::Failed(AgentError::new(
                error_code::PANIC,
                format!("the agent panicked: {}", panic_message(&*panic)),
            )),
        },
    };
    // A cancel can land between the select's look at the token and the agent's next step
    // (on another worker thread), so the agent may return the cancellation as an error of
    // its own (a tool call saying "cancelled"), or as a result (a parent whose sub-runs
    // ended cancelled). The guards look at the token only once its wake came, and a
    // parent's cancel wakes its sub-runs first. So a run whose token is cancelled when its
    // agent returns was cancelled, whatever the agent returned.
    // A run whose time was up timed out, even if a cancel came in the same instant.
    let timed_out = matches!(&outcome, RunOutcome::Failed(e) if e.code == error_code::TIMEOUT);
    let outcome = if control.token.is_cancelled()
        && !timed_out
        && !matches!(outcome, RunOutcome::Cancelled(_))
    {
        // Cancelled as it paused, too: the cancel wins (its held calls never ran).
        paused = None;
        RunOutcome::Cancelled(control.reason())
    } else {
        outcome
    };
    // A run one of whose events the sink refused was stopped at once (its token cancelled):
    // it ends `events_lost`, and does not pause.
    let refused = ctx.emit_failures() + control.refused();
    if refused > 0 {
        paused = None;
    }
    let outcome = crate::run::lost_events(refused, outcome);
    // Stop whatever the agent left running (sub-runs, tools) and drop its work now, before
    // the terminal event: dropping closes any open tool call and ends any open sub-run.
    control.token.cancel();
    drop(work);
    drop(ctx);
    counters.running.fetch_sub(1, Ordering::Relaxed);
    (outcome, paused)
}

/// What ends a run before its agent does: a cancel, or its deadline (`limit` after its start),
/// polled only when one of them woke the run's task, not at each of its agent's steps
/// ([`agent_registry::wake_gated`]).
fn guards<'a>(
    control: &'a RunControl,
    deadline: Instant,
    limit: Duration,
) -> impl Future<Output = RunOutcome> + 'a {
    agent_registry::wake_gated(async move {
        tokio::select! {
            biased;
            () = control.token.cancelled() => RunOutcome::Cancelled(control.reason()),
            () = tokio::time::sleep_until(deadline.into()) => RunOutcome::Failed(AgentError::new(
                error_code::TIMEOUT,
                format!("the run took longer than its {} limit", crate::run::describe_limit(limit)),
            )),
        }
    })
}

/// Counts the run's outcome and emits its one terminal event.
pub(crate) fn finish(
    engine: &EngineInner,
    scope: &RunScope,
    outcome: &RunOutcome,
    duration: Duration,
) {
    tracing::debug!(code = outcome.error_code(), ?duration, "run finished");
    let counters = &engine.counters;
    let terminal = match outcome {
        RunOutcome::Completed { output, .. } => {
            counters.completed.fetch_add(1, Ordering::Relaxed);
            EventKind::AgentCompleted {
                result: output.result.clone(),
                duration_ms: duration.as_millis() as u64,
                usage: output.usage.clone(),
            }
        }
        RunOutcome::Failed(error) => {
            match error.code.as_str() {
                error_code::TIMEOUT => &counters.timed_out,
                error_code::PANIC => {
                    counters.panicked.fetch_add(1, Ordering::Relaxed);
                    &counters.failed
                }
                _ => &counters.failed,
            }
            .fetch_add(1, Ordering::Relaxed);
            EventKind::AgentError {
                code: error.code.clone(),
                message: error.message.clone(),
            }
        }
        RunOutcome::Cancelled(reason) => {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            EventKind::AgentCancelled {
                reason: reason.clone(),
            }
        }
        // Not an end: the engine saved the run and emitted its `approval_requested`s (or
        // its `budget_exhausted`).
        RunOutcome::Paused(_) | RunOutcome::WaitingForBudget(_) => return,
    };
    counters.record_duration(duration);
    engine.emit(scope, terminal);
}

/// Starts sub-runs for the agents of one engine's runs.
pub(crate) struct SubRuns {
    pub(crate) engine: Arc<EngineInner>,
}

/// Ends a sub-run whose parent dropped it half-way (the parent was cancelled, timed out or
/// failed): emits its `agent_cancelled`. The parent drops its work before its own terminal
/// event, so the sub-run still ends first; its open tool calls close before this runs,
/// because they live in the sub-run's work, which is dropped before this guard.
struct OpenSubRun<'a> {
    engine: &'a EngineInner,
    scope: &'a RunScope,
    started: Instant,
    open: bool,
}

impl Drop for OpenSubRun<'_> {
    fn drop(&mut self) {
        if self.open {
            let outcome = RunOutcome::Cancelled("the parent run ended".to_owned());
            finish(self.engine, self.scope, &outcome, self.started.elapsed());
        }
    }
}

#[async_trait::async_trait]
impl SubRunner for SubRuns {
    async fn run_sub_agent(
        &self,
        parent: &AgentContext,
        agent: &str,
        input: AgentInput,
    ) -> Result<AgentOutput, AgentError> {
        let engine = &self.engine;
        let created = engine
            .registry
            .create_agent(agent)
            .map_err(|e| AgentError::new("unknown_agent", e.to_string()))?;
        let child = parent
            .user_context()
            .create_child_context(&format!("sub_run:{agent}"))
            .map_err(|e| AgentError::new("too_deep", e.to_string()))?;
        let run_context = child.for_run(RunId::generate());
        let control = RunControl::new(run_context.cancellation().clone(), None);
        let scope = RunScope {
            run_id: run_context.run_id().clone(),
            parent_run_id: Some(parent.scope().run_id.clone()),
            thread_id: run_context.thread_id().clone(),
            agent_name: created.name,
        };
        engine.counters.total.fetch_add(1, Ordering::Relaxed);
        engine.emit_in_run(
            &control,
            &scope,
            EventKind::AgentStarted {
                message: input.message.clone(),
            },
        );
        let mut open = OpenSubRun {
            engine,
            scope: &scope,
            started: Instant::now(),
            open: true,
        };
        let timeout = created.timeout.unwrap_or(engine.config.run_timeout);
        let span = info_span!("sub_run", run_id = %scope.run_id, agent = %scope.agent_name);
        let limit = TimeLimit {
            timeout,
            not_after: parent.deadline(),
        };
        // A sub-run cannot pause (its parent would have to pause with it): a call of its
        // that needs approval is refused.
        let rules = RunRules {
            limit,
            gate: ApprovalGate {
                policy: Arc::clone(&engine.approve_tools),
                ..ApprovalGate::default()
            },
            steps_taken: 0,
        };
        let (outcome, _) = execute(
            engine,
            &scope,
            &*created.agent,
            Work::Start(input),
            run_context,
            &control,
            rules,
        )
        .instrument(span)
        .await;
        open.open = false;
        finish(engine, &scope, &outcome, open.started.elapsed());
        match outcome {
            RunOutcome::Completed { output, .. } => Ok(output),
            RunOutcome::Failed(error) => Err(error),
            RunOutcome::Cancelled(reason) => Err(AgentError::new("cancelled", reason)),
            RunOutcome::Paused(_) => Err(AgentError::new(
                "cannot_pause",
                "a sub-run cannot pause for approval",
            )),
            // Its parent's next model call waits for the budget instead.
            RunOutcome::WaitingForBudget(exhausted) => Err(AgentError::new(
                agent_registry::BUDGET_EXCEEDED,
                format!(
                    "the sub-run stopped: its user's {} budget is used up until {}",
                    exhausted.budget.name(),
                    exhausted.resets_at
                ),
            )),
        }
    }
}
