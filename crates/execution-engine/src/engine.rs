//! [`UserExecutionEngine`] and the task that drives one run.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_registry::{
    Agent, AgentInput, AgentRegistry, ApprovalGate, DecidedCall, Inbox, ResultLog, UsageMeter,
};
use core_context::event::EventKind;
use core_context::{EventSink, RunId, RunScope, UserExecutionContext};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::admission::{Admission, Prelude, QueuedAt, RunSettle};
use crate::approvals::{PausedRuns, Resume};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::execute::{RunRules, TimeLimit, Work, execute, finish};
use crate::inner::{EngineInner, RunTable, now_ms};
use crate::local_slots::LocalSlots;
use crate::pause::pause_if_waiting;
use crate::run::{RunControl, RunHandle, RunOutcome};
use crate::slots::{Claim, RunSlots, ThreadRule};
use crate::stats::{Counters, EngineStats};

/// What an engine shares with the user's other engines and the server: their run slots,
/// where runs that pause for approval are saved, how a run is settled before its slot goes
/// back, and where model usage goes.
#[derive(Clone)]
pub(crate) struct Seams {
    pub(crate) slots: Arc<dyn RunSlots>,
    pub(crate) paused: Option<Arc<dyn PausedRuns>>,
    pub(crate) settle: Option<Arc<dyn RunSettle>>,
    pub(crate) meter: Option<Arc<dyn UsageMeter>>,
}

/// The engine that runs agents for one request of one user. The only engine type.
///
/// Made only by its factories (see the crate documentation). Cloning gives another handle to
/// the same engine. Runs are tasks of their own: dropping every handle does not stop them
/// (use [`shutdown`](Self::shutdown), or a [`ScopedEngine`](crate::ScopedEngine)).
#[derive(Clone)]
pub struct UserExecutionEngine {
    pub(crate) inner: Arc<EngineInner>,
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
        let slots = Arc::new(LocalSlots::new(
            config.max_concurrent_runs,
            config.max_queued_runs,
        ));
        Self::assemble(
            user_context,
            registry,
            bridge,
            Arc::new(config),
            Seams {
                slots,
                paused: None,
                settle: None,
                meter: None,
            },
        )
    }

    pub(crate) fn assemble(
        context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        sink: Arc<dyn EventSink>,
        config: Arc<EngineConfig>,
        seams: Seams,
    ) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                context,
                registry,
                sink,
                approve_tools: Arc::new(config.approve_tools.clone()),
                config,
                slots: seams.slots,
                paused: seams.paused,
                settle: seams.settle,
                meter: seams.meter,
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

    /// Starts agent `agent` on `input` and returns with the run's handle once the run has a
    /// slot or a place in the user's queue (it does not wait for the run).
    ///
    /// Refused (nothing emitted) when the agent is unknown, the user has the maximum of
    /// running and queued runs, the run slots cannot be reached, or the engine is shut down.
    /// An accepted run that must wait for a slot emits `agent_started` when it gets one.
    ///
    /// The first run of an engine takes the context's run id; later runs (pipeline steps,
    /// retries) get fresh ones. Each run's agent sees a context with its own run id.
    pub async fn execute_agent(
        &self,
        agent: &str,
        input: AgentInput,
    ) -> Result<RunHandle, EngineError> {
        self.start(agent, Work::Start(input), None, Admission::default())
            .await
    }

    /// [`execute_agent`](Self::execute_agent), entering the run's thread by `admission`: one
    /// run per thread at a time (the run queues behind its thread's run, or is refused with
    /// `thread_busy`, by [`ThreadRule`]), and with the thread's earlier turns read by the
    /// admission's prelude once the run holds its slot. [`RunHandle::queued`] says where it
    /// queued.
    pub async fn execute_agent_with(
        &self,
        agent: &str,
        input: AgentInput,
        admission: Admission,
    ) -> Result<RunHandle, EngineError> {
        self.start(agent, Work::Start(input), None, admission).await
    }

    /// Resumes the paused run this engine's context names (its run id and thread, which
    /// must be the engine's first run) with agent `agent`, from what
    /// [`PausedRuns::save`] kept and the decisions of its held calls. Like
    /// [`execute_agent`](Self::execute_agent) it claims a slot (or a place in the queue) and
    /// returns the run's handle; the run emits no second `agent_started`: it goes on with
    /// the decided calls' `tool_executing` / `tool_completed` and ends with one terminal
    /// event (or pauses again).
    pub async fn resume_agent(
        &self,
        agent: &str,
        resume: Resume,
    ) -> Result<RunHandle, EngineError> {
        let (state, steps) = crate::approvals::open_envelope(resume.state);
        let input = AgentInput {
            message: resume.message,
            input: resume.input,
            previous_result: None,
            history: Vec::new(),
        };
        let decided = resume
            .decided
            .into_iter()
            .map(|d| (d.call.tool_call_id.clone(), d))
            .collect();
        let resumed = Resumed {
            decided: Arc::new(decided),
            steps,
        };
        // A resumed run goes on in its thread after whatever runs there now.
        let admission = Admission {
            thread: ThreadRule::Queue,
            prelude: None,
        };
        self.start(
            agent,
            Work::Resume { input, state },
            Some(resumed),
            admission,
        )
        .await
    }

    async fn start(
        &self,
        agent: &str,
        work: Work,
        resumed: Option<Resumed>,
        admission: Admission,
    ) -> Result<RunHandle, EngineError> {
        let message = work.input().message.clone();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let created = self.inner.registry.create_agent(agent)?;
        let (run_id, took_context_id) = {
            let mut table = self.inner.runs.lock();
            if table.closed {
                return Err(EngineError::EngineClosed);
            }
            if table.context_run_id_used {
                (RunId::generate(), false)
            } else {
                table.context_run_id_used = true;
                (self.inner.context.run_id().clone(), true)
            }
        };
        let run_context = self.inner.context.for_run(run_id);
        let scope = RunScope {
            run_id: run_context.run_id().clone(),
            parent_run_id: None,
            thread_id: run_context.thread_id().clone(),
            agent_name: created.name,
        };
        let user = self.inner.context.user_id();
        let claimed = self
            .inner
            .slots
            .claim(user, &scope, &message, admission.thread)
            .await;
        let inbox = created.agent.can_steer().then(Inbox::new);
        let (control, slot) =
            self.register(claimed, &scope, &run_context, took_context_id, inbox)?;
        let counters = &self.inner.counters;
        counters.total.fetch_add(1, Ordering::Relaxed);
        let queued = match &slot {
            Claim::Queued(place) => {
                counters.queued.fetch_add(1, Ordering::Relaxed);
                Some(QueuedAt {
                    position: place.position(),
                    behind: place.thread_active().cloned(),
                })
            }
            Claim::Running(_) => None,
        };
        self.inner.touch();

        let (outcome_tx, outcome_rx) = oneshot::channel();
        let handle = RunHandle {
            run_id: run_context.run_id().clone(),
            thread_id: run_context.thread_id().clone(),
            control: Arc::clone(&control),
            queued,
            outcome: outcome_rx,
        };
        let task = RunTask {
            engine: Arc::clone(&self.inner),
            scope,
            agent: created.agent,
            work,
            resumed,
            run_context,
            control,
            slot,
            prelude: admission.prelude,
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

    /// Registers a run whose slot was `claimed` as active (its cancel switch), or gives the
    /// claim back: refused, or the engine shut down meanwhile (then the context's run id is
    /// free again if the run took it).
    fn register(
        &self,
        claimed: Result<Claim, crate::slots::SlotError>,
        scope: &RunScope,
        run_context: &UserExecutionContext,
        took_context_id: bool,
        inbox: Option<Inbox>,
    ) -> Result<(Arc<RunControl>, Claim), EngineError> {
        let mut table = self.inner.runs.lock();
        let refused = match claimed {
            Err(error) => Err(EngineError::from(error)),
            // Shut down while the claim was made: the claim goes back.
            Ok(_) if table.closed => Err(EngineError::EngineClosed),
            Ok(claim) => Ok(claim),
        };
        match refused {
            Ok(claim) => {
                let control = RunControl::new(run_context.cancellation().clone(), inbox);
                table
                    .active
                    .insert(scope.run_id.clone(), Arc::clone(&control));
                Ok((control, claim))
            }
            Err(error) => {
                if took_context_id {
                    table.context_run_id_used = false;
                }
                Err(error)
            }
        }
    }

    /// Emits `approval_resolved` for a call of the paused run this engine's context names
    /// (run `agent`): a person decided it, or it expired (`decision` is the wire name).
    pub fn announce_decision(&self, agent: &str, tool_call_id: &str, decision: &str) {
        self.inner.emit(
            &self.context_scope(agent),
            EventKind::ApprovalResolved {
                tool_call_id: tool_call_id.to_owned(),
                decision: decision.to_owned(),
            },
        );
    }

    /// Ends the paused run this engine's context names (run `agent`) with its terminal
    /// event: `agent_cancelled` with `reason` (the run was cancelled while it waited), or
    /// `agent_error` (it could not be resumed). Its store has already marked it ended.
    pub fn end_paused_run(&self, agent: &str, outcome: &RunOutcome) {
        finish(
            &self.inner,
            &self.context_scope(agent),
            outcome,
            Duration::ZERO,
        );
    }

    /// The scope of the run this engine's context names.
    fn context_scope(&self, agent: &str) -> RunScope {
        let context = &self.inner.context;
        RunScope {
            run_id: context.run_id().clone(),
            parent_run_id: None,
            thread_id: context.thread_id().clone(),
            agent_name: Arc::from(agent),
        }
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

    /// Leaves `message` (sent by the user into the run's thread, `multitask` `steer`) for
    /// run `run_id` of this engine, whose agent takes it at its next safe point
    /// (`message_received`). Gives the message back when the run cannot take it: not active
    /// here, its agent takes no messages, or its work has ended.
    pub fn steer_run(&self, run_id: &RunId, message: String) -> Result<(), String> {
        let control = self.inner.runs.lock().active.get(run_id).cloned();
        match control.as_ref().and_then(|c| c.inbox.as_ref()) {
            Some(inbox) => inbox.push(message),
            None => Err(message),
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

/// A resumed run's decisions, by call id, and the thinking steps it took before it paused.
struct Resumed {
    decided: Arc<HashMap<String, DecidedCall>>,
    steps: u32,
}

/// Everything one run's task owns.
struct RunTask {
    engine: Arc<EngineInner>,
    scope: RunScope,
    agent: Box<dyn Agent>,
    work: Work,
    resumed: Option<Resumed>,
    run_context: UserExecutionContext,
    control: Arc<RunControl>,
    slot: Claim,
    prelude: Option<Prelude>,
    timeout: Duration,
    outcome_tx: oneshot::Sender<RunOutcome>,
}

/// What a top-level run goes by: its timeout, the server's approval policy, whether it can
/// pause (its agent can, and the engine keeps paused runs), and a resumed run's decisions and
/// steps.
fn rules(
    engine: &EngineInner,
    agent: &dyn Agent,
    resumed: Option<Resumed>,
    timeout: Duration,
) -> RunRules {
    let (decided, steps_taken) = resumed.map(|r| (r.decided, r.steps)).unwrap_or_default();
    RunRules {
        limit: TimeLimit {
            timeout,
            not_after: None,
        },
        gate: ApprovalGate {
            policy: Arc::clone(&engine.approve_tools),
            can_pause: engine.paused.is_some() && agent.can_pause(),
            decided,
            results: engine
                .paused
                .clone()
                .map(|store| store as Arc<dyn ResultLog>),
        },
        steps_taken,
    }
}

impl RunTask {
    async fn run(self) {
        let RunTask {
            engine,
            scope,
            agent,
            mut work,
            resumed,
            run_context,
            control,
            slot,
            prelude,
            timeout,
            outcome_tx,
        } = self;
        let counters = &engine.counters;

        let queued_at = Instant::now();
        let behind = match &slot {
            Claim::Queued(place) => place.thread_active().cloned(),
            Claim::Running(_) => None,
        };
        let mut permit = match slot {
            Claim::Running(permit) => Some(permit),
            Claim::Queued(place) => {
                let permit = tokio::select! {
                    biased;
                    () = control.token.cancelled() => None,
                    permit = place.wait() => match permit {
                        Ok(permit) => Some(permit),
                        // Ended for its user elsewhere: what it emits now is dropped.
                        Err(lost) => {
                            control.cancel(&lost.to_string());
                            None
                        }
                    },
                };
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                permit
            }
        };
        // Read when the run starts: the runs of its thread ahead of it have ended.
        let starts = permit.is_some();
        if let Some(prelude) = prelude.filter(|_| starts) {
            work.input_mut().history = prelude(behind).await;
        }
        let (message, options) = (work.input().message.clone(), work.input().input.clone());
        // A resumed run started before it paused.
        if resumed.is_none() {
            engine.emit_in_run(
                &control,
                &scope,
                EventKind::AgentStarted {
                    message: message.clone(),
                },
            );
        }
        let started = Instant::now();
        let outcome = if permit.is_none() {
            // Cancelled while queued: the run still gets its start and its end, so a client
            // that saw `run_accepted` sees the run close.
            crate::run::lost_events(control.refused(), RunOutcome::Cancelled(control.reason()))
        } else {
            counters.record_queue_wait(started - queued_at);
            let rules = rules(&engine, &*agent, resumed, timeout);
            let (outcome, state) =
                execute(&engine, &scope, &*agent, work, run_context, &control, rules).await;
            // The agent's work is over: a message it did not take goes back to the caller.
            control.close_inbox();
            let run = (message, options);
            pause_if_waiting(&engine, &scope, run, (outcome, state), &mut permit).await
        };
        finish(&engine, &scope, &outcome, started.elapsed());
        if let Some(settle) = &engine.settle {
            settle.settle(engine.context.user_id(), &scope).await;
        }
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
