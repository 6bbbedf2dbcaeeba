//! The server's metrics, served at `GET /metrics` in the Prometheus text format (OpenMetrics).
//!
//! One registry per server, no global recorder: tests run many servers in one process, and
//! each must count only its own. What happens as it happens is counted here (connections,
//! resumes, refusals, deliveries, and every event the engine emits: runs, tools, durations);
//! what is a state is read when scraped ([`Metrics::render`] of a [`Snapshot`]: open
//! connections, users at their run limit, replay logs, broker and store health, the history
//! writer's and the model's counts).
//!
//! Labels never carry a user id or anything a client chooses freely: agents and tools are
//! names from the registry (a start naming an unknown agent is refused before it counts),
//! codes and outcomes are the protocol's own.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use agent_protocol::{CloseCode, ErrorCode};
use core_context::multitask::Multitask;
use core_context::{AgentEvent, EventKind, RunId};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use run_service::RunCounter;
use ws_bridge::{ResumeFailure, ResumeOutcome};

mod scrape;

pub use scrape::Snapshot;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Agent {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunEnd {
    agent: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tool {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolEnd {
    tool: String,
    outcome: &'static str,
}

/// How many event types there are (`EventKind::TYPE_NAMES`).
const EVENT_TYPES: usize = EventKind::TYPE_NAMES.len();

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventType {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimited {
    route: &'static str,
    key: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// When a run was accepted and when it started (left the user's queue).
#[derive(Debug, Clone, Copy, Default)]
struct RunClock {
    accepted: Option<Instant>,
    started: Option<Instant>,
}

/// Seconds buckets from 1 ms to about 9 minutes (×2 each).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Seconds buckets from 50 µs to about 26 s (×2 each): latencies on the live path.
fn fast_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// What the server counts; see the module documentation.
pub struct Metrics {
    registry: Registry,
    connections_opened: Counter,
    connections_closed: Family<Code, Counter>,
    slow_consumers: Counter,
    resumes: Family<Outcome, Counter>,
    refusals: Family<Code, Counter>,
    events_emitted: Family<EventType, Counter>,
    /// `events_emitted`'s counter of each type, by [`EventKind::type_index`], taken from the
    /// family on the type's first event (so no label is hashed, nor the family's lock taken,
    /// per event; and a type never emitted shows no series, as before).
    emitted_by_type: [OnceLock<Counter>; EVENT_TYPES],
    events_delivered: Counter,
    emit_to_send: Histogram,
    runs_started: Family<Agent, Counter>,
    runs_finished: Family<RunEnd, Counter>,
    run_duration: Histograms<Agent>,
    queue_wait: Histogram,
    tool_calls: Family<ToolEnd, Counter>,
    tool_duration: Histograms<Tool>,
    http_rate_limited: Family<RateLimited, Counter>,
    approvals_requested: Counter,
    approvals_resolved: Family<DecisionLabel, Counter>,
    approval_wait: Histogram,
    busy_threads: Family<BusyThread, Counter>,
    budget_waits: Family<BudgetLabel, Counter>,
    usage_tokens: Family<ModelTokens, Counter>,
    usage_cost: Family<ModelLabel, Counter<f64, AtomicU64>>,
    runs: Mutex<HashMap<RunId, RunClock>>,
}

/// A budget (`tokens`, `cost_usd`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: &'static str,
}

/// A model's tokens of one kind (`prompt`, `completion`, `cached`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelTokens {
    model: String,
    kind: &'static str,
}

/// A model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

/// A message into a thread that had a run: its strategy, and whether it was taken.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BusyThread {
    strategy: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

/// Seconds buckets from 1 s to about 36 hours (×2 each): a person's time to decide.
fn human_seconds() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 18))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The run service counts through the metrics: a run's queue wait starts when it is accepted.
impl RunCounter for Metrics {
    /// `run` was accepted (before the engine may start it): its queue wait starts.
    fn run_accepted(&self, run: &RunId) {
        self.runs.lock().entry(run.clone()).or_default().accepted = Some(Instant::now());
    }

    /// `run` was refused after [`RunCounter::run_accepted`].
    fn run_refused(&self, run: &RunId) {
        self.runs.lock().remove(run);
    }

    fn approvals_requested(&self, calls: usize) {
        self.approvals_requested.inc_by(calls as u64);
    }

    fn approval_resolved(&self, decision: &str, waited: std::time::Duration) {
        self.approvals_resolved
            .get_or_create(&DecisionLabel {
                decision: decision.to_owned(),
            })
            .inc();
        self.approval_wait.observe(waited.as_secs_f64());
    }

    fn model_usage(
        &self,
        model: &str,
        (prompt, completion, cached): (u64, u64, u64),
        cost_micro_usd: Option<u64>,
    ) {
        for (kind, tokens) in [
            ("prompt", prompt),
            ("completion", completion),
            ("cached", cached),
        ] {
            self.usage_tokens
                .get_or_create(&ModelTokens {
                    model: model.to_owned(),
                    kind,
                })
                .inc_by(tokens);
        }
        if let Some(cost) = cost_micro_usd {
            self.usage_cost
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .inc_by(cost as f64 / 1_000_000.0);
        }
    }

    fn budget_wait(&self, budget: &'static str) {
        self.budget_waits
            .get_or_create(&BudgetLabel { budget })
            .inc();
    }

    fn busy_thread(&self, strategy: Multitask, accepted: bool) {
        self.busy_threads
            .get_or_create(&BusyThread {
                strategy: strategy.name(),
                outcome: if accepted { "accepted" } else { "refused" },
            })
            .inc();
    }
}

impl Metrics {
    /// Every metric at zero, registered under `agent_server_`.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("agent_server"),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            slow_consumers: Counter::default(),
            resumes: Family::default(),
            refusals: Family::default(),
            events_emitted: Family::default(),
            emitted_by_type: std::array::from_fn(|_| OnceLock::new()),
            events_delivered: Counter::default(),
            emit_to_send: fast_seconds(),
            runs_started: Family::default(),
            runs_finished: Family::default(),
            run_duration: Family::new_with_constructor(seconds),
            queue_wait: seconds(),
            tool_calls: Family::default(),
            tool_duration: Family::new_with_constructor(seconds),
            http_rate_limited: Family::default(),
            approvals_requested: Counter::default(),
            approvals_resolved: Family::default(),
            approval_wait: human_seconds(),
            busy_threads: Family::default(),
            budget_waits: Family::default(),
            usage_tokens: Family::default(),
            usage_cost: Family::default(),
            runs: Mutex::new(HashMap::new()),
        };
        for strategy in Multitask::NAMES {
            if let Some(strategy) = Multitask::parse(strategy) {
                let _ = metrics.busy_threads.get_or_create(&BusyThread {
                    strategy: strategy.name(),
                    outcome: "accepted",
                });
            }
        }
        for budget in ["tokens", "cost_usd"] {
            let _ = metrics.budget_waits.get_or_create(&BudgetLabel { budget });
        }
        for decision in ["approve", "edit", "reject", "respond", "expired"] {
            let _ = metrics.approvals_resolved.get_or_create(&DecisionLabel {
                decision: decision.to_owned(),
            });
        }
        // Every series exists from the start at 0, so `rate()` and `increase()` see the
        // first refusal.
        for (route, key) in [
            ("history", "user"),
            ("history", "address"),
            ("agui", "user"),
            ("agui", "address"),
            ("dev_token", "address"),
        ] {
            let _ = metrics
                .http_rate_limited
                .get_or_create(&RateLimited { route, key });
        }
        metrics.register();
        metrics
    }

    /// What people and messages decide about runs: approvals, and messages into busy threads.
    fn register_decisions(&mut self) {
        let r = &mut self.registry;
        r.register(
            "approvals_requested",
            "Tool calls that waited for a person's approval (each pausing its run)",
            self.approvals_requested.clone(),
        );
        r.register(
            "approvals_resolved",
            "Waiting tool calls decided, by decision (`expired`: nobody decided in time)",
            self.approvals_resolved.clone(),
        );
        r.register(
            "approval_wait_seconds",
            "From a tool call's approval request to its decision (or expiry)",
            self.approval_wait.clone(),
        );
        r.register(
            "model_usage_tokens",
            "Tokens of model calls counted toward users' usage (with a store), by model and kind (`prompt`, `completion`, `cached`: of the prompt, from the provider's cache)",
            self.usage_tokens.clone(),
        );
        r.register(
            "model_cost_usd",
            "US dollars of model calls counted toward users' usage, by model (models with a `--model-price`)",
            self.usage_cost.clone(),
        );
        r.register(
            "budget_waits",
            "Runs that paused because their next model call would pass their user's budget, by budget (`tokens`, `cost_usd`); each goes on when the period resets or the limit is raised",
            self.budget_waits.clone(),
        );
        r.register(
            "busy_thread_messages",
            "Messages into a thread whose run was still going or queued, by multitask strategy (the request's or the server's default) and outcome (`accepted`: queued behind it, taken by it, or ending it; `refused`: `thread_busy` or `thread_waiting_for_approval`)",
            self.busy_threads.clone(),
        );
    }

    fn register(&mut self) {
        self.register_decisions();
        let r = &mut self.registry;
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            self.connections_opened.clone(),
        );
        r.register("connections_closed", "WebSocket connections ended, by close code (`client`: the client left; `write_failed`: a write failed or stalled)", self.connections_closed.clone());
        r.register(
            "slow_consumer_disconnects",
            "Connections (4008) and AG-UI responses closed because the client did not read fast enough",
            self.slow_consumers.clone(),
        );
        r.register(
            "resumes",
            "Connections that asked to resume, by outcome",
            self.resumes.clone(),
        );
        r.register("refusals", "Refusals, by error code: error frames sent to clients (limits, rate limits, bad frames) and refused WebSocket upgrades (401, 429, 503)", self.refusals.clone());
        r.register(
            "events_emitted",
            "Events the engine emitted, by type",
            self.events_emitted.clone(),
        );
        r.register(
            "events_delivered",
            "Event frames written to sockets (each connection counts)",
            self.events_delivered.clone(),
        );
        r.register("emit_to_send_seconds", "From an event's frame reaching this node to its write to a socket (live frames, not replays)", self.emit_to_send.clone());
        r.register(
            "runs_started",
            "Runs started (sub-runs included), by agent",
            self.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "Runs ended, by agent and outcome",
            self.runs_finished.clone(),
        );
        r.register(
            "run_duration_seconds",
            "From a run's start to its end, by agent",
            self.run_duration.clone(),
        );
        r.register(
            "run_queue_wait_seconds",
            "From a run's acceptance to its start (waiting for one of the user's run slots)",
            self.queue_wait.clone(),
        );
        r.register(
            "tool_calls",
            "Tool calls ended, by tool and outcome",
            self.tool_calls.clone(),
        );
        r.register(
            "tool_duration_seconds",
            "Tool call durations, by tool",
            self.tool_duration.clone(),
        );
        r.register(
            "http_rate_limited",
            "HTTP requests refused with 429 by a rate limit, by route (`history`, `agui`, `dev_token`) and key (`user`, `address`)",
            self.http_rate_limited.clone(),
        );
    }

    /// The series of `model`'s usage exist from the start at 0 (the configured model), so
    /// `rate()` and `increase()` see its first call.
    pub fn know_model(&self, model: &str) {
        for kind in ["prompt", "completion", "cached"] {
            let _ = self.usage_tokens.get_or_create(&ModelTokens {
                model: model.to_owned(),
                kind,
            });
        }
        let _ = self.usage_cost.get_or_create(&ModelLabel {
            model: model.to_owned(),
        });
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_opened.inc();
    }

    /// A connection ended: closed by the server with `code`, or `None` when the client
    /// left or a write failed (`write_failed`).
    pub fn connection_closed(&self, code: Option<CloseCode>, write_failed: bool) {
        let code = match code {
            Some(code) => {
                if code == CloseCode::SlowConsumer {
                    self.slow_consumers.inc();
                }
                code.code().to_string()
            }
            None if write_failed => "write_failed".to_owned(),
            None => "client".to_owned(),
        };
        self.connections_closed.get_or_create(&Code { code }).inc();
    }

    /// An AG-UI response fell behind its queue and was ended (a slow consumer that is not a
    /// socket).
    pub fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// A connection asked to resume, with `outcome`.
    pub fn resumed(&self, outcome: &ResumeOutcome) {
        let outcome = match outcome {
            ResumeOutcome::Ok { .. } => "ok",
            ResumeOutcome::Failed { reason, .. } => match reason {
                ResumeFailure::TooOld => "too_old",
                ResumeFailure::EpochChanged => "epoch_changed",
                ResumeFailure::SeqAhead => "seq_ahead",
            },
        };
        self.resumes.get_or_create(&Outcome { outcome }).inc();
    }

    /// An error frame with `code` went to a client.
    pub fn refused(&self, code: &ErrorCode) {
        let code = code.as_str().to_owned();
        self.refusals.get_or_create(&Code { code }).inc();
    }

    /// An HTTP request to `route` was over the limit of its `key` (`user` or `address`).
    pub fn http_rate_limited(&self, route: &'static str, key: &'static str) {
        self.http_rate_limited
            .get_or_create(&RateLimited { route, key })
            .inc();
    }

    /// Frames written to a socket: `live` of them (by when each reached this node) count
    /// towards the emit-to-send latency, all of them as delivered.
    pub fn delivered(&self, count: usize, live: impl IntoIterator<Item = Instant>) {
        self.events_delivered.inc_by(count as u64);
        let now = Instant::now();
        for published in live {
            self.emit_to_send
                .observe(now.saturating_duration_since(published).as_secs_f64());
        }
    }

    /// Runs between their start and their end.
    pub(crate) fn runs_active(&self) -> usize {
        self.runs
            .lock()
            .values()
            .filter(|c| c.started.is_some())
            .count()
    }

    /// Counts what `event` says happened.
    pub fn observe(&self, event: &AgentEvent) {
        self.emitted_by_type[event.kind.type_index()]
            .get_or_init(|| {
                self.events_emitted
                    .get_or_create(&EventType {
                        r#type: event.kind.type_name(),
                    })
                    .clone()
            })
            .inc();
        let agent = || Agent {
            agent: event.agent_name.to_string(),
        };
        match &event.kind {
            EventKind::AgentStarted { .. } => {
                self.runs_started.get_or_create(&agent()).inc();
                let now = Instant::now();
                let mut runs = self.runs.lock();
                let clock = runs.entry(event.run_id.clone()).or_default();
                clock.started = Some(now);
                if let Some(accepted) = clock.accepted {
                    self.queue_wait
                        .observe(now.saturating_duration_since(accepted).as_secs_f64());
                }
            }
            EventKind::ToolCompleted {
                tool_name,
                is_error,
                duration_ms,
                ..
            } => {
                let outcome = if *is_error { "error" } else { "ok" };
                let tool = tool_name.clone();
                self.tool_calls
                    .get_or_create(&ToolEnd { tool, outcome })
                    .inc();
                self.tool_duration
                    .get_or_create(&Tool {
                        tool: tool_name.clone(),
                    })
                    .observe(*duration_ms as f64 / 1000.0);
            }
            kind if kind.is_terminal() => self.run_ended(event, agent()),
            _ => {}
        }
    }

    fn run_ended(&self, event: &AgentEvent, agent: Agent) {
        let outcome = match event.kind {
            EventKind::AgentCompleted { .. } => "completed",
            EventKind::AgentError { .. } => "failed",
            _ => "cancelled",
        };
        let clock = self.runs.lock().remove(&event.run_id);
        if let Some(started) = clock.and_then(|c| c.started) {
            self.run_duration
                .get_or_create(&agent)
                .observe(started.elapsed().as_secs_f64());
        }
        self.runs_finished
            .get_or_create(&RunEnd {
                agent: agent.agent,
                outcome,
            })
            .inc();
    }

    /// The metrics as Prometheus text, with the states of `state` (filled now) read.
    pub fn render(&self, state: &Snapshot<'_>) -> String {
        scrape::render(&self.registry, self.runs_active(), state)
    }
}
