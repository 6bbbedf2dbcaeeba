//! [`EngineInner`]: what one engine holds (its context, registry, sink, settings, run slots,
//! counters and table of active runs), shared by the engine's handles and its runs' tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use agent_registry::{AgentRegistry, ApprovalPolicy, UsageMeter};
use core_context::event::EventKind;
use core_context::{EventSink, RunId, RunScope, UserExecutionContext};
use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

use crate::admission::RunSettle;
use crate::approvals::PausedRuns;
use crate::config::EngineConfig;
use crate::run::RunControl;
use crate::slots::RunSlots;
use crate::stats::Counters;

pub(crate) struct EngineInner {
    pub(crate) id: u64,
    pub(crate) context: UserExecutionContext,
    pub(crate) registry: Arc<AgentRegistry>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) slots: Arc<dyn RunSlots>,
    /// `config.approve_tools`, shared with every run's dispatcher.
    pub(crate) approve_tools: Arc<ApprovalPolicy>,
    /// Where runs that pause for approval are saved; without it no run can pause.
    pub(crate) paused: Option<Arc<dyn PausedRuns>>,
    /// Awaited between a run's terminal event and its slot going back.
    pub(crate) settle: Option<Arc<dyn RunSettle>>,
    /// Where runs report their model calls' usage.
    pub(crate) meter: Option<Arc<dyn UsageMeter>>,
    pub(crate) counters: Counters,
    pub(crate) runs: Mutex<RunTable>,
    pub(crate) tasks: TaskTracker,
    pub(crate) last_active_ms: AtomicU64,
}

#[derive(Default)]
pub(crate) struct RunTable {
    pub(crate) closed: bool,
    pub(crate) context_run_id_used: bool,
    pub(crate) active: HashMap<RunId, Arc<RunControl>>,
}

/// Milliseconds since the first call, on the monotonic clock (for idle tracking).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
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

    pub(crate) fn touch(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Emits `kind` for the run `scope`; whether the sink took it (a refusal is logged and
    /// counted).
    pub(crate) fn emit(&self, scope: &RunScope, kind: EventKind) -> bool {
        let user = self.context.user_id();
        if let Err(error) = self.sink.emit(user, scope.event(kind)) {
            self.counters.emit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(run_id = %scope.run_id, %error, "a run event could not be emitted");
            return false;
        }
        true
    }

    /// [`emit`](Self::emit) for a run that is going on: a refused event stops it
    /// ([`RunControl::refused_event`]).
    pub(crate) fn emit_in_run(&self, control: &RunControl, scope: &RunScope, kind: EventKind) {
        if !self.emit(scope, kind) {
            control.refused_event();
        }
    }
}
