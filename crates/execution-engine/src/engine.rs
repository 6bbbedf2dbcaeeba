//! [`UserExecutionEngine`] and the task that drives one run.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_registry::{Agent, AgentInput, AgentRegistry};
use core_context::event::EventKind;
use core_context::{EventSink, RunId, RunScope, UserExecutionContext};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::execute::{TimeLimit, execute, finish};
use crate::inner::{EngineInner, RunTable, now_ms};
use crate::local_slots::LocalSlots;
use crate::run::{RunControl, RunHandle, RunOutcome};
use crate::slots::{Claim, RunSlots};
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
        Self::assemble(user_context, registry, bridge, Arc::new(config), slots)
    }

    pub(crate) fn assemble(
        context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        sink: Arc<dyn EventSink>,
        config: Arc<EngineConfig>,
        slots: Arc<dyn RunSlots>,
    ) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                context,
                registry,
                sink,
                config,
                slots,
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
        let claimed = self.inner.slots.claim(user, &scope, &input.message).await;
        let control = {
            let mut table = self.inner.runs.lock();
            let refused = match claimed {
                Err(error) => Err(EngineError::from(error)),
                // Shut down while the claim was made: the claim goes back.
                Ok(_) if table.closed => Err(EngineError::EngineClosed),
                Ok(claim) => Ok(claim),
            };
            match refused {
                Ok(claim) => {
                    let control = RunControl::new(run_context.cancellation().clone());
                    table
                        .active
                        .insert(scope.run_id.clone(), Arc::clone(&control));
                    (control, claim)
                }
                Err(error) => {
                    if took_context_id {
                        table.context_run_id_used = false;
                    }
                    return Err(error);
                }
            }
        };
        let (control, slot) = control;
        let counters = &self.inner.counters;
        counters.total.fetch_add(1, Ordering::Relaxed);
        if matches!(slot, Claim::Queued(_)) {
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
            scope,
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

/// Everything one run's task owns.
struct RunTask {
    engine: Arc<EngineInner>,
    scope: RunScope,
    agent: Box<dyn Agent>,
    input: AgentInput,
    run_context: UserExecutionContext,
    control: Arc<RunControl>,
    slot: Claim,
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
