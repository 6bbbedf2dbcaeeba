//! [`ExecutionEngineFactory`]: per-user run slots shared by all of a user's engines, a cap
//! on engines per user, and cleanup of idle ones; and [`ScopedEngine`].
//!
//! The factory keeps one small entry per user (the user's live engines) and drops it once
//! the user has no engine, so its map is bounded by the users that are active, never by
//! every user ever seen. The run slots keep their own per-user state ([`RunSlots`]).

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use agent_registry::{AgentRegistry, UsageMeter};
use core_context::{EventSink, UserExecutionContext, UserId};
use parking_lot::Mutex;

use crate::admission::RunSettle;
use crate::approvals::PausedRuns;
use crate::config::EngineConfig;
use crate::engine::{Seams, UserExecutionEngine};
use crate::error::EngineError;
use crate::local_slots::LocalSlots;
use crate::slots::RunSlots;

/// Makes engines that share per-user run slots. Cloning gives another handle to the same factory.
#[derive(Clone)]
pub struct ExecutionEngineFactory {
    inner: Arc<FactoryInner>,
}

struct FactoryInner {
    registry: Arc<AgentRegistry>,
    sink: Arc<dyn EventSink>,
    config: Arc<EngineConfig>,
    seams: Seams,
    users: Mutex<HashMap<UserId, UserEntry>>,
}

struct UserEntry {
    engines: Vec<UserExecutionEngine>,
}

impl UserEntry {
    fn is_unused(&self) -> bool {
        self.engines.is_empty()
    }
}

/// What [`ExecutionEngineFactory::cleanup_idle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Idle engines closed.
    pub engines_closed: usize,
    /// Users whose entry was dropped (no engines).
    pub users_dropped: usize,
}

/// A snapshot of the factory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactoryStats {
    /// Users with a live engine.
    pub users: usize,
    /// Live engines, all users together.
    pub engines: usize,
    /// Runs executing in this process, all users together.
    pub running: usize,
    /// Runs of this process waiting for a slot, all users together.
    pub queued: usize,
}

impl ExecutionEngineFactory {
    /// A factory running agents from `registry`, emitting through `bridge`, with `config`;
    /// its users' run slots are in this process ([`LocalSlots`] with `config`'s limits).
    pub fn new(
        registry: Arc<AgentRegistry>,
        bridge: Arc<dyn EventSink>,
        config: EngineConfig,
    ) -> Self {
        let slots = Arc::new(LocalSlots::new(
            config.max_concurrent_runs,
            config.max_queued_runs,
        ));
        Self::with_slots(registry, bridge, config, slots)
    }

    /// [`new`](Self::new) with the users' run slots in `slots` (for example across nodes).
    /// `slots` enforces its own limits; `config`'s run limits are for `slots` to follow.
    pub fn with_slots(
        registry: Arc<AgentRegistry>,
        bridge: Arc<dyn EventSink>,
        config: EngineConfig,
        slots: Arc<dyn RunSlots>,
    ) -> Self {
        Self {
            inner: Arc::new(FactoryInner {
                registry,
                sink: bridge,
                config: Arc::new(config),
                seams: Seams {
                    slots,
                    paused: None,
                    settle: None,
                    meter: None,
                },
                users: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// This factory with its seams changed by `change` (a fresh factory: engines made
    /// earlier keep the seams they were made with).
    fn with_seams(self, change: impl FnOnce(&mut Seams)) -> Self {
        let inner = &self.inner;
        let mut seams = inner.seams.clone();
        change(&mut seams);
        Self {
            inner: Arc::new(FactoryInner {
                registry: Arc::clone(&inner.registry),
                sink: Arc::clone(&inner.sink),
                config: Arc::clone(&inner.config),
                seams,
                users: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// This factory with runs that pause for approval saved in `store` (the server's
    /// history). Without one, no run can pause: a call that needs approval is refused. Call
    /// it before making engines: engines made earlier keep no paused runs.
    #[must_use]
    pub fn with_paused_runs(self, store: Arc<dyn PausedRuns>) -> Self {
        self.with_seams(|seams| seams.paused = Some(store))
    }

    /// This factory with runs settled by `settle` between their terminal event and their
    /// slot going back (see [`RunSettle`]). Call it before making engines.
    #[must_use]
    pub fn with_settle(self, settle: Arc<dyn RunSettle>) -> Self {
        self.with_seams(|seams| seams.settle = Some(settle))
    }

    /// This factory with every run's model usage reported to `meter` (see
    /// [`UsageMeter`]). Call it before making engines.
    #[must_use]
    pub fn with_meter(self, meter: Arc<dyn UsageMeter>) -> Self {
        self.with_seams(|seams| seams.meter = Some(meter))
    }

    /// Whether runs can pause for approval ([`with_paused_runs`](Self::with_paused_runs)).
    pub fn keeps_paused_runs(&self) -> bool {
        self.inner.seams.paused.is_some()
    }

    /// The users' run slots.
    pub fn slots(&self) -> &Arc<dyn RunSlots> {
        &self.inner.seams.slots
    }

    /// The factory's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The registry engines run agents from.
    pub fn registry(&self) -> &Arc<AgentRegistry> {
        &self.inner.registry
    }

    /// An engine for `user_context`, sharing run limits with the user's other engines.
    ///
    /// When the user holds the maximum of live engines, idle ones are closed first; if none
    /// is idle the request is refused with `too_many_engines`.
    pub fn create_for_user(
        &self,
        user_context: UserExecutionContext,
    ) -> Result<UserExecutionEngine, EngineError> {
        let config = &self.inner.config;
        let mut users = self.inner.users.lock();
        let entry = users
            .entry(user_context.user_id().clone())
            .or_insert_with(|| UserEntry {
                engines: Vec::new(),
            });
        entry.engines.retain(|e| !e.inner.is_closed());
        if entry.engines.len() >= config.max_engines_per_user {
            entry.engines.retain(|e| {
                let idle = e.inner.is_idle_for(config.engine_idle_timeout);
                if idle {
                    e.inner.close("the engine was idle");
                }
                !idle
            });
        }
        if entry.engines.len() >= config.max_engines_per_user {
            return Err(EngineError::TooManyEngines {
                max: config.max_engines_per_user,
            });
        }
        let engine = UserExecutionEngine::assemble(
            user_context,
            Arc::clone(&self.inner.registry),
            Arc::clone(&self.inner.sink),
            Arc::clone(config),
            self.inner.seams.clone(),
        );
        entry.engines.push(engine.clone());
        Ok(engine)
    }

    /// [`create_for_user`](Self::create_for_user), wrapped so that the engine is closed and
    /// released when the scope ends.
    pub fn create_scoped(
        &self,
        user_context: UserExecutionContext,
    ) -> Result<ScopedEngine, EngineError> {
        let engine = self.create_for_user(user_context)?;
        Ok(ScopedEngine {
            engine,
            factory: Some(Arc::downgrade(&self.inner)),
            closed: false,
        })
    }

    /// Stops tracking `engine` and closes it to new runs; runs it already accepted go on to
    /// their end. For callers that made the engine for one run and are done with it.
    pub fn release(&self, engine: &UserExecutionEngine) {
        engine.inner.seal();
        self.inner.forget(engine);
    }

    /// Closes engines idle for longer than the configured idle timeout and drops users with
    /// no engine left.
    pub fn cleanup_idle(&self) -> CleanupReport {
        let idle_after = self.inner.config.engine_idle_timeout;
        let mut report = CleanupReport::default();
        let mut users = self.inner.users.lock();
        users.retain(|_, entry| {
            entry.engines.retain(|e| {
                if e.inner.is_closed() {
                    return false;
                }
                let idle = e.inner.is_idle_for(idle_after);
                if idle {
                    e.inner.close("the engine was idle");
                    report.engines_closed += 1;
                }
                !idle
            });
            let keep = !entry.is_unused();
            if !keep {
                report.users_dropped += 1;
            }
            keep
        });
        report
    }

    /// Runs [`cleanup_idle`](Self::cleanup_idle) every `every` on the current runtime, until
    /// the factory is dropped.
    pub fn spawn_cleanup(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let factory = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = factory.upgrade() else {
                    return;
                };
                let report = ExecutionEngineFactory { inner }.cleanup_idle();
                if report != CleanupReport::default() {
                    tracing::debug!(?report, "engine cleanup");
                }
            }
        })
    }

    /// Counts of users, engines and runs.
    pub fn stats(&self) -> FactoryStats {
        let load = self.inner.seams.slots.load();
        let users = self.inner.users.lock();
        let mut stats = FactoryStats {
            users: users.len(),
            running: load.running,
            queued: load.queued,
            ..FactoryStats::default()
        };
        for entry in users.values() {
            stats.engines += entry
                .engines
                .iter()
                .filter(|e| !e.inner.is_closed())
                .count();
        }
        stats
    }

    /// Closes every engine (cancelling their runs) and waits for every run's terminal event.
    pub async fn shutdown(&self) {
        let engines: Vec<UserExecutionEngine> = self
            .inner
            .users
            .lock()
            .values()
            .flat_map(|e| e.engines.iter().cloned())
            .collect();
        for engine in &engines {
            engine.inner.close("the server is shutting down");
        }
        for engine in &engines {
            engine.shutdown().await;
        }
        self.cleanup_idle();
    }
}

impl FactoryInner {
    fn forget(&self, engine: &UserExecutionEngine) {
        let mut users = self.users.lock();
        let user = engine.context().user_id();
        if let Some(entry) = users.get_mut(user) {
            entry.engines.retain(|e| e.inner.id != engine.inner.id);
            if entry.is_unused() {
                users.remove(user);
            }
        }
    }
}

impl fmt::Debug for ExecutionEngineFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionEngineFactory")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// An engine whose cleanup is guaranteed: [`close`](Self::close) shuts it down and waits for
/// its runs' terminal events; dropping it without closing cancels its runs (they still emit
/// their terminal events) and releases it from its factory.
#[must_use = "dropping a ScopedEngine at once cancels its runs"]
pub struct ScopedEngine {
    engine: UserExecutionEngine,
    factory: Option<Weak<FactoryInner>>,
    closed: bool,
}

// With the scoped engine it makes (not in engine.rs, which knows nothing of scopes).
impl UserExecutionEngine {
    /// A [`ScopedEngine`] for one request: closed on [`close`](ScopedEngine::close), or on
    /// drop (its runs are cancelled).
    pub fn create_request_scoped_engine(
        user_context: UserExecutionContext,
        registry: Arc<AgentRegistry>,
        bridge: Arc<dyn EventSink>,
    ) -> ScopedEngine {
        ScopedEngine::standalone(Self::create_execution_engine(
            user_context,
            registry,
            bridge,
        ))
    }
}

impl ScopedEngine {
    fn standalone(engine: UserExecutionEngine) -> Self {
        Self {
            engine,
            factory: None,
            closed: false,
        }
    }

    /// Shuts the engine down (cancelling active runs) and waits for their terminal events.
    pub async fn close(mut self) {
        self.closed = true;
        self.engine.shutdown().await;
    }
}

impl Deref for ScopedEngine {
    type Target = UserExecutionEngine;
    fn deref(&self) -> &UserExecutionEngine {
        &self.engine
    }
}

impl Drop for ScopedEngine {
    fn drop(&mut self) {
        if !self.closed {
            self.engine.inner.close("the request ended");
        }
        if let Some(factory) = self.factory.as_ref().and_then(Weak::upgrade) {
            factory.forget(&self.engine);
        }
    }
}

impl fmt::Debug for ScopedEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ScopedEngine").field(&self.engine).finish()
    }
}
