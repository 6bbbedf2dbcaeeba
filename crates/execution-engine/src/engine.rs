//! [`UserExecutionEngine`] and the task that drives one run.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use agent_registry::{
    Agent, AgentContext, AgentContextParts, AgentError, AgentInput, AgentOutput, AgentRegistry,
    SubRunner, panic_message,
};
use core_context::event::{EventKind, error_code};
use core_context::{EventSink, RunId, RunScope, UserExecutionContext};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::limits::{Slot, UserLimits};
use crate::run::{RunControl, RunHandle, RunOutcome};
use crate::stats::{Counters, EngineStats};

/// The engine that runs agents for one request of one user. The only engine type.
///
/// Made only by its factories (see the crate documentation). Cloning gives another handle to
/// the same engine. Runs are tasks of their own: dropping every handle does not stop them
/// (use [`shutdown`](Self::shutdown), or a [`ScopedEngine`](crate::ScopedEngine)).
#[derive(Clone)]
pub struct UserExecutionEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) id: u64,
    context: UserExecutionContext,
    registry: Arc<AgentRegistry>,
    sink: Arc<dyn EventSink>,
    config: Arc<EngineConfig>,
    limits: Arc<UserLimits>,
    counters: Counters,
    runs: Mutex<RunTable>,
    tasks: TaskTracker,
    last_active_ms: AtomicU64,
}

#[derive(Default)]
struct RunTable {
    closed: bool,
    context_run_id_used: bool,
    active: HashMap<RunId, Arc<RunControl>>,
}

/// Milliseconds since the first call, on the monotonic clock (for idle tracking).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

impl UserExecutionEngine {
    /// The primary factory: an engine for the request `user_context` describes, running
    /// agents from `registry` and emitting through `bridge`, with default limits.
    ///
    /// The engine has limits of its own; to share limits between all requests of a user,
    /// make engines with an [`ExecutionEngineFactory`](crate::ExecutionEngineFactory).
    pub fn create_execution_engine(
        user_context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        bridge: Arc<dyn EventSink>,
    ) -> Self {
        Self::create_with_config(user_context, registry, bridge, EngineConfig::default())
    }

    /// [`create_execution_engine`](Self::create_execution_engine) with explicit settings.
    pub fn create_with_config(
        user_context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        bridge: Arc<dyn EventSink>,
        config: EngineConfig,
    ) -> Self {
        let limits = UserLimits::new(&config);
        Self::assemble(user_context, registry, bridge, Arc::new(config), limits)
    }

    pub(crate) fn assemble(
        context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        sink: Arc<dyn EventSink>,
        config: Arc<EngineConfig>,
        limits: Arc<UserLimits>,
    ) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                context,
                registry,
                sink,
                config,
                limits,
                counters: Counters::default(),
                runs: Mutex::new(RunTable::default()),
                tasks: TaskTracker::new(),
                last_active_ms: AtomicU64::new(now_ms()),
            }),
        }
    }

    /// The context this engine serves.
    pub fn context(&self) -> &UserExecutionContext {
        &self.inner.context
    }

    /// The registry agents come from.
    pub fn registry(&self) -> &Arc<AgentRegistry> {
        &self.inner.registry
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Starts agent `agent` on `input` and returns at once with the run's handle.
    ///
    /// Refused (nothing emitted) when the agent is unknown, the user has the maximum of
    /// running and queued runs, or the engine is shut down. An accepted run that must wait
    /// for a slot emits `agent_started` when it gets one.
    ///
    /// The first run of an engine takes the context's run id; later runs (pipeline steps,
    /// retries) get fresh ones. Each run's agent sees a context with its own run id.
    pub fn execute_agent(&self, agent: &str, input: AgentInput) -> Result<RunHandle, EngineError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let created = self.inner.registry.create_agent(agent)?;
        let slot = self.inner.limits.claim()?;
        let run_context = {
            let mut table = self.inner.runs.lock();
            if table.closed {
                return Err(EngineError::EngineClosed);
            }
            let run_id = if table.context_run_id_used {
                RunId::generate()
            } else {
                table.context_run_id_used = true;
                self.inner.context.run_id().clone()
            };
            let run_context = self.inner.context.for_run(run_id);
            let control = RunControl::new(run_context.cancellation().clone());
            table
                .active
                .insert(run_context.run_id().clone(), Arc::clone(&control));
            (run_context, control)
        };
        let (run_context, control) = run_context;
        let counters = &self.inner.counters;
        counters.total.fetch_add(1, Ordering::Relaxed);
        if matches!(slot, Slot::Queued(_)) {
            counters.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.touch();

        let (outcome_tx, outcome_rx) = oneshot::channel();
        let handle = RunHandle {
            run_id: run_context.run_id().clone(),
            thread_id: run_context.thread_id().clone(),
            control: Arc::clone(&control),
            outcome: outcome_rx,
        };
        let task = RunTask {
            engine: Arc::clone(&self.inner),
            scope: RunScope {
                run_id: run_context.run_id().clone(),
                parent_run_id: None,
                thread_id: run_context.thread_id().clone(),
                agent_name: created.name,
            },
            agent: created.agent,
            input,
            run_context,
            control,
            slot,
            timeout: created.timeout.unwrap_or(self.inner.config.run_timeout),
            outcome_tx,
        };
        // A span per run, within the caller's (the server's connection, naming the user).
        let span = info_span!("run", run_id = %task.scope.run_id, agent = %task.scope.agent_name);
        self.inner
            .tasks
            .spawn_on(task.run().instrument(span), &runtime);
        Ok(handle)
    }

    /// Cancels run `run_id` of this engine with `reason`. Returns whether such a run was
    /// active. A run of another engine (or another user) is never found here.
    pub fn cancel_run(&self, run_id: &RunId, reason: &str) -> bool {
        let control = self.inner.runs.lock().active.get(run_id).cloned();
        match control {
            Some(control) => {
                control.cancel(reason);
                true
            }
            None => false,
        }
    }

    /// The ids of runs accepted and not yet ended.
    pub fn active_runs(&self) -> Vec<RunId> {
        self.inner.runs.lock().active.keys().cloned().collect()
    }

    /// A snapshot of this engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.inner.counters.snapshot()
    }

    /// Whether the engine was shut down.
    pub fn is_closed(&self) -> bool {
        self.inner.runs.lock().closed
    }

    /// Stops accepting runs, cancels every active run (queued ones included), and waits until
    /// each has emitted its terminal event.
    pub async fn shutdown(&self) {
        self.inner.close("the engine is shutting down");
        self.inner.tasks.wait().await;
    }
}

impl EngineInner {
    /// Stops accepting runs and cancels the active ones; does not wait.
    pub(crate) fn close(&self, reason: &str) {
        let controls: Vec<_> = {
            let mut table = self.runs.lock();
            table.closed = true;
            table.active.values().cloned().collect()
        };
        for control in controls {
            control.cancel(reason);
        }
        self.tasks.close();
    }

    /// Stops accepting runs; the active ones go on to their end.
    pub(crate) fn seal(&self) {
        self.runs.lock().closed = true;
        self.tasks.close();
    }

    pub(crate) fn is_idle_for(&self, idle: Duration) -> bool {
        let quiet_ms = now_ms().saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        self.runs.lock().active.is_empty() && Duration::from_millis(quiet_ms) >= idle
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.runs.lock().closed
    }

    fn touch(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn emit(&self, scope: &RunScope, kind: EventKind) {
        let user = self.context.user_id();
        if let Err(error) = self.sink.emit(user, scope.event(kind)) {
            self.counters.emit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(run_id = %scope.run_id, %error, "a run event could not be emitted");
        }
    }
}

impl fmt::Debug for UserExecutionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserExecutionEngine")
            .field("id", &self.inner.id)
            .field("user_id", self.inner.context.user_id())
            .field("request_id", self.inner.context.request_id())
            .field("active_runs", &self.inner.runs.lock().active.len())
            .finish()
    }
}

/// How long a run may take: its timeout, and a point it may not outlive (a sub-run's
/// parent's deadline).
#[derive(Clone, Copy)]
struct TimeLimit {
    timeout: Duration,
    not_after: Option<Instant>,
}

/// Runs `agent` for the run `scope` until it ends, and says how. Emits nothing of the run's
/// own lifecycle (the caller emits `agent_started` and, through [`finish`], the terminal
/// event); the agent's own events go through its context. Shared by top-level runs and
/// sub-runs, so both keep exactly the same guarantees.
async fn execute(
    engine: &Arc<EngineInner>,
    scope: &RunScope,
    agent: &dyn Agent,
    input: AgentInput,
    run_context: UserExecutionContext,
    control: &RunControl,
    limit: TimeLimit,
) -> RunOutcome {
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
    });
    let mut work = AssertUnwindSafe(agent.run(&ctx, input)).catch_unwind();
    // Cancellation is polled first, then the deadline, then the work: once a run is
    // cancelled it ends cancelled, and once its time is up it timed out, even if the agent
    // returns in the same instant (for example with the error of a sub-run that hit the same
    // deadline).
    let outcome = tokio::select! {
        biased;
        () = control.token.cancelled() => RunOutcome::Cancelled(control.reason()),
        () = tokio::time::sleep_until(deadline.into()) => RunOutcome::Failed(AgentError::new(
            error_code::TIMEOUT,
            format!("the run took longer than its {} limit", crate::run::describe_limit(limit)),
        )),
        finished = &mut work => match finished {
            Ok(Ok(output)) => RunOutcome::Completed { output, duration: started.elapsed() },
            Ok(Err(error)) => RunOutcome::Failed(error),
            Err(panic) => RunOutcome::Failed(AgentError::new(
                error_code::PANIC,
                format!("the agent panicked: {}", panic_message(&*panic)),
            )),
        },
    };
    // A cancel can land between the select's look at the token and the agent's next step
    // (on another worker thread), so the agent may return the cancellation as an error of
    // its own (a tool call saying "cancelled"). A run whose token is cancelled when its agent
    // fails was cancelled.
    let outcome = match outcome {
        RunOutcome::Failed(error)
            if control.token.is_cancelled() && error.code != error_code::TIMEOUT =>
        {
            RunOutcome::Cancelled(control.reason())
        }
        other => other,
    };
    // Stop whatever the agent left running (sub-runs, tools) and drop its work now, before
    // the terminal event: dropping closes any open tool call and ends any open sub-run.
    control.token.cancel();
    drop(work);
    drop(ctx);
    counters.running.fetch_sub(1, Ordering::Relaxed);
    outcome
}

/// Counts the run's outcome and emits its one terminal event.
fn finish(engine: &EngineInner, scope: &RunScope, outcome: &RunOutcome, duration: Duration) {
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
    };
    counters.record_duration(duration);
    engine.emit(scope, terminal);
}

/// Starts sub-runs for the agents of one engine's runs.
struct SubRuns {
    engine: Arc<EngineInner>,
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
        let control = RunControl::new(run_context.cancellation().clone());
        let scope = RunScope {
            run_id: run_context.run_id().clone(),
            parent_run_id: Some(parent.scope().run_id.clone()),
            thread_id: run_context.thread_id().clone(),
            agent_name: created.name,
        };
        engine.counters.total.fetch_add(1, Ordering::Relaxed);
        engine.emit(
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
        let outcome = execute(
            engine,
            &scope,
            &*created.agent,
            input,
            run_context,
            &control,
            limit,
        )
        .instrument(span)
        .await;
        open.open = false;
        finish(engine, &scope, &outcome, open.started.elapsed());
        match outcome {
            RunOutcome::Completed { output, .. } => Ok(output),
            RunOutcome::Failed(error) => Err(error),
            RunOutcome::Cancelled(reason) => Err(AgentError::new("cancelled", reason)),
        }
    }
}

/// Everything one run's task owns.
struct RunTask {
    engine: Arc<EngineInner>,
    scope: RunScope,
    agent: Box<dyn Agent>,
    input: AgentInput,
    run_context: UserExecutionContext,
    control: Arc<RunControl>,
    slot: Slot,
    timeout: Duration,
    outcome_tx: oneshot::Sender<RunOutcome>,
}

impl RunTask {
    async fn run(self) {
        let RunTask {
            engine,
            scope,
            agent,
            input,
            run_context,
            control,
            slot,
            timeout,
            outcome_tx,
        } = self;
        let counters = &engine.counters;

        let queued_at = Instant::now();
        let permit = match slot {
            Slot::Running(permit) => Some(permit),
            Slot::Queued(ticket) => {
                let permit = tokio::select! {
                    biased;
                    () = control.token.cancelled() => None,
                    permit = engine.limits.wait(ticket) => Some(permit),
                };
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                permit
            }
        };
        engine.emit(
            &scope,
            EventKind::AgentStarted {
                message: input.message.clone(),
            },
        );
        let started = Instant::now();
        let outcome = match permit {
            // Cancelled while queued: the run still gets its start and its end, so a client
            // that saw `run_accepted` sees the run close.
            None => RunOutcome::Cancelled(control.reason()),
            Some(_) => {
                counters.record_queue_wait(started - queued_at);
                execute(
                    &engine,
                    &scope,
                    &*agent,
                    input,
                    run_context,
                    &control,
                    TimeLimit {
                        timeout,
                        not_after: None,
                    },
                )
                .await
            }
        };
        finish(&engine, &scope, &outcome, started.elapsed());
        engine.runs.lock().active.remove(&scope.run_id);
        engine.touch();
        // Free the slot before reporting, so a caller that awaited this run can start the
        // next one at once.
        drop(permit);
        drop(agent);
        // The handle may have been dropped; the outcome is then simply not wanted.
        let _unwanted = outcome_tx.send(outcome);
    }
}
