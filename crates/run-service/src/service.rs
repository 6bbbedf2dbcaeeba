//! The run service: starting and cancelling a user's runs, with the rules they need (draining,
//! thread ownership, the start rate, the thread's earlier turns; the per-user run limit is the
//! engine's run slots), and no transport. It answers with typed results, [`RunAccepted`] or a [`Refusal`];
//! the WebSocket loop renders them as frames, the AG-UI handler as HTTP statuses and SSE.
//!
//! **Architecture Invariant:** this module names no wire frame and no HTTP type: the three
//! transports (socket, AG-UI, history API) all start and cancel runs here and render the
//! result in their own terms (`tests/it/architecture.rs`, `the_run_service_has_no_transport`).
//! What it counts goes through [`RunCounter`], which the server's metrics implement, so the
//! service knows nothing of Prometheus or the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use agent_registry::AgentInput;
use core_context::multitask::Multitask;
use core_context::{ConnectionId, RunId, ThreadId, UserExecutionContext, UserId};
use execution_engine::slots::SlotError;
use execution_engine::{
    Admission, EngineError, ExecutionEngineFactory, RunHandle, RunOutcome, UserExecutionEngine,
};
use redis_broker::NodeRequest;
use serde_json::{Map, Value, json};

use core_context::budget::Shortfall;

use crate::budgets::Budgets;
use crate::cluster::Cluster;
pub use crate::counter::RunCounter;
use crate::paused_runs::Ending;
use crate::recorder::Recorder;
use crate::sessions::Sessions;
use crate::tag::user_tag;
use crate::usage::{Budget, Plan, Prices};

/// What a client asks to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The agent's name.
    pub agent: String,
    /// The user's message.
    pub message: String,
    /// The thread to continue; a new one when `None`.
    pub thread_id: Option<ThreadId>,
    /// The agent's structured input, if any.
    pub input: Option<Map<String, Value>>,
    /// The client's id for the request (kept in the run's audit trail).
    pub request_id: Option<String>,
    /// What to do with the thread's live run (running, queued, or waiting for approvals);
    /// the server's default when `None`.
    pub multitask: Option<Multitask>,
}

/// A run that started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAccepted {
    /// The run.
    pub run_id: RunId,
    /// Its thread (new, or the one asked for).
    pub thread_id: ThreadId,
    /// The message joined the thread's running run (`run_id`; `multitask` `steer`) instead of
    /// starting a run of its own.
    pub steered: bool,
    /// When it waits (behind its thread's runs, or for one of the user's run slots): how
    /// many runs are ahead of it (0: it is next).
    pub queued: Option<usize>,
}

/// Why a run was not started or not cancelled: a code every transport knows and a message
/// that says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The error code, in the vocabulary the engine's errors use (`too_many_runs`,
    /// `thread_not_found`, …): each transport renders it (`error` frames, AG-UI and history
    /// API bodies, HTTP statuses).
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// For `budget_exceeded`: the budget in the way, what remains and when it resets.
    pub shortfall: Option<Shortfall>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            shortfall: None,
        }
    }
}

impl From<crate::sessions::Refusal> for Refusal {
    fn from(refusal: crate::sessions::Refusal) -> Self {
        Self::new(refusal.code(), refusal.to_string())
    }
}

/// Starts and cancels runs; one per server, shared by every transport.
pub struct RunService {
    factory: ExecutionEngineFactory,
    sessions: Sessions,
    /// Runs across nodes, when the streams live in Redis.
    cluster: Option<Cluster>,
    /// Threads, runs and events kept past the process, with `--store`.
    recorder: Option<Arc<Recorder>>,
    metrics: Arc<dyn RunCounter>,
    /// What a message into a busy thread does when it does not say (`--multitask-default`).
    multitask_default: Multitask,
    /// What each user's runs may spend per period: the server's budget and users' own plans,
    /// from the claim of their latest token that carried one.
    budgets: Arc<Budgets>,
    /// Set by graceful shutdown: no new runs.
    draining: AtomicBool,
    /// The runs this node's clients follow (AG-UI responses).
    followers: crate::followers::Followers,
}

impl RunService {
    /// A service starting runs on `factory`'s engines under `sessions`' rules, across nodes
    /// with `cluster`, recorded by `recorder`, counted by `metrics`.
    pub fn new(
        factory: ExecutionEngineFactory,
        sessions: Sessions,
        cluster: Option<Cluster>,
        recorder: Option<Arc<Recorder>>,
        metrics: Arc<dyn RunCounter>,
    ) -> Self {
        // With a history, runs that wait for approval are kept there (and outlive the process).
        let factory = match &recorder {
            Some(recorder) => factory.with_paused_runs(Arc::new(
                crate::paused_runs::HistoryPausedRuns::new(Arc::clone(recorder)),
            )),
            None => factory,
        };
        Self {
            factory,
            sessions,
            cluster,
            recorder,
            metrics,
            multitask_default: Multitask::Enqueue,
            budgets: Arc::default(),
            draining: AtomicBool::new(false),
            followers: crate::followers::Followers::default(),
        }
    }

    /// This service with each model call's usage counted in the history, priced by
    /// `prices`, and new runs refused (`budget_exceeded`) once a user's `budget` for the
    /// period is used up. Without a history nothing is counted (the server refuses budgets
    /// without a store at start).
    #[must_use]
    pub fn with_usage(mut self, prices: Prices, budget: Budget) -> Self {
        self.budgets = Arc::new(Budgets::new(budget));
        if let Some(recorder) = &self.recorder {
            let book = crate::ledger::UsageBook::new(
                Arc::clone(recorder),
                prices,
                Arc::clone(&self.metrics),
                Arc::clone(&self.budgets),
                self.cluster.as_ref().map(Cluster::budget_ledger),
            );
            self.factory = self.factory.with_meter(Arc::new(book));
        }
        self
    }

    /// What each user's runs may spend per period.
    pub fn budget(&self) -> Budget {
        self.budgets.server()
    }

    /// The server's budget and the plans of the users this node has seen.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// What `user`'s runs may spend per period: the server's budget, or the limits of their
    /// token's plan.
    pub fn budget_for(&self, user: &UserId) -> Budget {
        self.budgets.of(user)
    }

    /// Takes `user`'s plan from the `claims` of the token of a request of theirs (a token
    /// without the claim gives them the server's budget again). Refused, naming the claim,
    /// when the claim is malformed. When it changes their budget, their runs that wait for
    /// it are looked at at once (those it now allows go on).
    pub fn note_plan(self: &Arc<Self>, user: &UserId, claims: &Value) -> Result<(), Refusal> {
        let plan = Plan::from_claims(claims).map_err(|e| Refusal::new("unauthorized", e))?;
        if self.budgets.note(user, plan) && self.recorder.is_some() {
            let service = Arc::clone(self);
            let user = user.clone();
            tokio::spawn(async move { service.resume_budget_waits_of(&user).await });
        }
        Ok(())
    }

    /// This service with `strategy` for messages into a busy thread that do not say
    /// (`enqueue` unless set).
    #[must_use]
    pub fn with_multitask_default(mut self, strategy: Multitask) -> Self {
        self.multitask_default = strategy;
        self
    }

    /// What a message into a busy thread does when it does not say.
    pub fn multitask_default(&self) -> Multitask {
        self.multitask_default
    }

    /// The engines' factory.
    pub fn factory(&self) -> &ExecutionEngineFactory {
        &self.factory
    }

    /// The users' sessions on this node.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The cluster's runs, with a Redis broker.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The history, with `--store`.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    pub(crate) fn metrics(&self) -> &dyn RunCounter {
        &*self.metrics
    }

    /// Whether graceful shutdown began (no new runs).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Refuses new runs from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Starts a run of `user`'s, asked on `connection`: refused while draining, then the
    /// session's rules (thread ownership, start rate), the thread's earlier turns, and the
    /// run on a fresh engine of the user's, which claims its slot (or a place in the queue).
    pub async fn start(
        self: &Arc<Self>,
        user: &UserId,
        connection: &ConnectionId,
        request: RunRequest,
    ) -> Result<RunAccepted, Refusal> {
        if self.is_draining() {
            return Err(Refusal::new(
                "shutting_down",
                "the server is shutting down and starts no new runs; reconnect shortly",
            ));
        }
        self.stored_thread_is_theirs(user, request.thread_id.as_ref())
            .await?;
        self.check_budget(user).await?;
        let strategy = self.strategy(request.multitask);
        if let Some(thread) = &request.thread_id {
            self.settle_waiting_run(user, thread, Some(strategy))
                .await?;
        }
        let thread = self.sessions.admit(user, request.thread_id.clone())?;
        if strategy == Multitask::Steer
            && request.thread_id.is_some()
            && let Some(steered) = self.steer(user, &thread, &request).await?
        {
            return Ok(steered);
        }
        // The thread's earlier turns are read when the run starts (after the runs ahead).
        let admission = self.admission(user, request.thread_id.as_ref(), strategy);
        self.launch(user, connection, thread, request, admission, strategy)
            .await
    }

    /// With a history, a thread named by the request that is stored must be the user's
    /// (threads outlive the process, so the sessions' memory alone does not know them all).
    async fn stored_thread_is_theirs(
        &self,
        user: &UserId,
        thread: Option<&ThreadId>,
    ) -> Result<(), Refusal> {
        let (Some(recorder), Some(thread)) = (&self.recorder, thread) else {
            return Ok(());
        };
        match recorder.store().thread_owner(thread).await {
            Ok(Some(owner)) if owner != *user => Err(Refusal::new(
                "thread_not_found",
                format!("no thread {thread} for this user"),
            )),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "history: cannot check a thread's owner; starting the run anyway");
                Ok(())
            }
        }
    }

    /// Starts the run on an engine made for this request (the engine claims the run's slot:
    /// on this node, or across nodes with a cluster), and tracks it until it ends.
    async fn launch(
        self: &Arc<Self>,
        user: &UserId,
        connection: &ConnectionId,
        thread: ThreadId,
        request: RunRequest,
        admission: Admission,
        strategy: Multitask,
    ) -> Result<RunAccepted, Refusal> {
        // The run's id is chosen here, so its start is recorded before any of its events.
        let run_id = RunId::generate();
        let mut builder = UserExecutionContext::builder(user.clone())
            .thread_id(thread.clone())
            .run_id(run_id.clone())
            .connection_id(connection.clone());
        if let Some(id) = &request.request_id {
            builder = builder.audit("client_request_id", json!(id));
        }
        let context = builder
            .build()
            .map_err(|e| Refusal::new("internal_error", e.to_string()))?;
        let engine = self
            .factory
            .create_for_user(context)
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        if let Some(recorder) = &self.recorder {
            recorder.run_started(user, &run_id, &thread, &request.agent, &request.message);
        }
        self.metrics.run_accepted(&run_id);
        let input = AgentInput {
            message: request.message,
            input: request.input.map_or(Value::Null, Value::Object),
            previous_result: None,
            history: Vec::new(),
        };
        let started = engine
            .execute_agent_with(&request.agent, input, admission)
            .await;
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(recorder) = &self.recorder {
                    recorder.run_refused(&run_id, &thread);
                }
                self.metrics.run_refused(&run_id);
                self.factory.release(&engine);
                if matches!(e, EngineError::Slots(SlotError::ThreadBusy { .. })) {
                    self.metrics.busy_thread(strategy, false);
                }
                return Err(Refusal::new(e.code(), e.to_string()));
            }
        };
        let queued = handle.queued().cloned();
        if queued.as_ref().is_some_and(|q| q.behind.is_some()) {
            self.metrics.busy_thread(strategy, true);
        }
        let accepted = RunAccepted {
            run_id: handle.run_id().clone(),
            thread_id: handle.thread_id().clone(),
            steered: false,
            queued: queued.as_ref().map(|q| q.position),
        };
        tracing::info!(user = %user_tag(user), run_id = %accepted.run_id, agent = %request.agent, queued = ?accepted.queued, "run started");
        self.follow(user, engine, handle, &request.agent);
        self.end_run_ahead(user, strategy, queued.as_ref()).await;
        Ok(accepted)
    }

    /// Tracks a run (started or resumed) on `engine` until it ends or pauses, then lets the
    /// engine go.
    pub(crate) fn follow(
        self: &Arc<Self>,
        user: &UserId,
        engine: UserExecutionEngine,
        handle: RunHandle,
        agent: &str,
    ) {
        let run = handle.run_id().clone();
        let thread = handle.thread_id().clone();
        self.sessions.track(user, run.clone(), engine.clone());
        let service = Arc::clone(self);
        let user = user.clone();
        let tag = user_tag(&user);
        let agent = agent.to_owned();
        tokio::spawn(async move {
            let (outcome, untaken) = handle.wait_with_untaken().await;
            let how = match &outcome {
                RunOutcome::Completed { .. } => "completed",
                RunOutcome::Failed(_) => "failed",
                RunOutcome::Cancelled(_) => "cancelled",
                RunOutcome::Paused(calls) => {
                    service.metrics.approvals_requested(calls.len());
                    "paused for approval"
                }
                RunOutcome::WaitingForBudget(exhausted) => {
                    service.metrics.budget_wait(exhausted.budget.name());
                    "paused for its budget"
                }
            };
            tracing::info!(user = %tag, run_id = %run, agent, how, code = outcome.error_code(), "run ended");
            service.sessions.finished(&user, &run);
            service.factory.release(&engine);
            // Messages sent into the run that it never took: each a run of its own.
            for message in untaken {
                service
                    .run_of_its_own(&user, &thread, &agent, message)
                    .await;
            }
        });
    }

    /// Cancels `user`'s active run `run_id`, on this node or on the one executing it; only
    /// the user's own runs are found. The run's `agent_cancelled` event follows.
    pub async fn cancel(&self, user: &UserId, run_id: &RunId) -> Result<(), Refusal> {
        let reason = redis_broker::USER_CANCELLED;
        if self.cancel_active(user, run_id, reason).await?
            || self
                .cancel_paused(user, run_id, Ending::Cancelled(reason))
                .await?
        {
            return Ok(());
        }
        Err(Refusal::new(
            "run_not_found",
            format!("no active run {run_id} for this user"),
        ))
    }

    /// A client (an AG-UI response) began to follow `user`'s run `run` from this node: until
    /// it stops ([`unwatch`](Self::unwatch)), [`watched`](Self::watched) says so on every node.
    pub async fn watch(&self, user: &UserId, run: &RunId) {
        self.followers
            .follow(self.cluster.as_ref(), user, run)
            .await;
    }

    /// A client of this node stopped following `user`'s run `run`.
    pub async fn unwatch(&self, user: &UserId, run: &RunId) {
        self.followers
            .unfollow(self.cluster.as_ref(), user, run)
            .await;
    }

    /// Whether a client follows `user`'s run `run` now, from any node.
    pub async fn watched(&self, user: &UserId, run: &RunId) -> bool {
        self.followers
            .followed(self.cluster.as_ref(), user, run)
            .await
    }

    /// Drops idle engines and sessions with no runs that were idle for `idle`.
    pub fn maintain(&self, idle: std::time::Duration) {
        self.factory.cleanup_idle();
        self.sessions.evict_idle(idle);
    }

    /// Runs the cluster's chores until the service is dropped: lease renewal and reaping,
    /// and the `cancel_run` requests other nodes route here. None without a cluster.
    pub fn spawn_cluster_tasks(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut requests = cluster.node_requests();
        let every = cluster.renew_every();
        let weak: Weak<RunService> = Arc::downgrade(self);
        let renewing = weak.clone();
        let renew = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(service) = renewing.upgrade() else {
                    return;
                };
                if let Some(cluster) = &service.cluster {
                    for (user, run) in cluster.renew().await {
                        if let Some(engine) = service.sessions.active_run(&user, &run) {
                            engine.cancel_run(&run, "this server lost the run's lease");
                        }
                    }
                }
            }
        });
        // Reaping on a task of its own: a reap that waits on a master that does not answer
        // never delays a renewal.
        let reaping = weak.clone();
        let reap = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(service) = reaping.upgrade() else {
                    return;
                };
                if let Some(cluster) = &service.cluster {
                    cluster.reap().await;
                }
            }
        });
        let cancel = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Some(service) = weak.upgrade() else {
                    return;
                };
                match request {
                    NodeRequest::Cancel(request) => {
                        if let Some(engine) =
                            service.sessions.active_run(&request.user, &request.run_id)
                        {
                            engine.cancel_run(&request.run_id, &request.reason);
                        }
                    }
                    NodeRequest::Steer(request) => service.deliver_steer(request).await,
                }
            }
        });
        vec![renew, reap, cancel]
    }
}
