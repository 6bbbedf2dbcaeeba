//! One run per thread: what a new message into a thread does to the thread's live run, by
//! its `multitask` strategy (or the server's default). The run slots keep the order (on one
//! node, or across nodes in Redis: `ThreadRule`); this module builds each run's admission
//! (its rule, and the prelude that reads the thread's earlier turns when the run starts, and
//! first erases a run it rolled back), and ends the run a new message interrupts.
//!
//! | strategy | the thread's running run | the new message |
//! |---|---|---|
//! | `reject` | goes on | refused, `thread_busy` naming the running (or first queued) run |
//! | `enqueue` | goes on | runs after the thread's runs ahead of it, in order |
//! | `interrupt` | `agent_cancelled` `interrupted` (status `interrupted`, its partial answer kept) | runs next, with the partial turn in its memory |
//! | `rollback` | `agent_cancelled` `rolled_back`, then erased | runs next, as if the run had never been |
//! | `steer` | takes the message at its next safe point (`message_received`) | joins that run (`run_accepted` names it, `steered`); queued as `enqueue` when the run's agent takes no messages; a run of its own when the run ends first |

use std::sync::Arc;

use core_context::multitask::{self, Multitask};
use core_context::{ConnectionId, RunId, ThreadId, UserId};
use execution_engine::{Admission, QueuedAt};
use redis_broker::SteerRequest;

use crate::recorder::Recorder;
use crate::service::{Refusal, RunAccepted, RunRequest, RunService};

impl RunService {
    /// How a run of `strategy` into `thread` (an existing one: `Some`) enters it: its rule,
    /// and (with a history) the prelude that reads the thread's earlier turns when the run
    /// starts, after erasing the run it rolled back.
    pub(crate) fn admission(
        &self,
        user: &UserId,
        thread: Option<&ThreadId>,
        strategy: Multitask,
    ) -> Admission {
        let rule = strategy.thread_rule();
        let (Some(recorder), Some(thread)) = (self.recorder().cloned(), thread.cloned()) else {
            return Admission {
                thread: rule,
                prelude: None,
            };
        };
        let user = user.clone();
        let erases = strategy == Multitask::Rollback;
        Admission {
            thread: rule,
            prelude: Some(Box::new(move |behind: Option<RunId>| {
                Box::pin(async move {
                    if let Some(run) = behind.filter(|_| erases) {
                        erase(&recorder, &user, &run).await;
                    }
                    recorder.turns(&user, &thread).await
                })
            })),
        }
    }

    /// After a run of `strategy` was accepted, queued at `queued`: `interrupt` and `rollback`
    /// end the run of its thread it queued behind (on this node or the one running it).
    pub(crate) async fn end_run_ahead(
        &self,
        user: &UserId,
        strategy: Multitask,
        queued: Option<&QueuedAt>,
    ) {
        let reason = match strategy {
            Multitask::Interrupt => multitask::INTERRUPTED,
            Multitask::Rollback => multitask::ROLLED_BACK,
            _ => return,
        };
        let Some(run) = queued.and_then(|q| q.behind.as_ref()) else {
            return;
        };
        match self.cancel_active(user, run, reason).await {
            Ok(true) => {}
            // Ended by itself meanwhile: the new run starts as soon as its slot is free.
            Ok(false) => {
                tracing::debug!(%run, "multitask: the run ahead ended before it could be interrupted")
            }
            Err(refusal) => {
                tracing::warn!(%run, %refusal, "multitask: cannot interrupt the run ahead; the new run waits for it to end")
            }
        }
    }

    /// Cancels `user`'s running or queued run `run` with `reason`, on this node or on the
    /// one executing it. False when no node has it for this user.
    pub(crate) async fn cancel_active(
        &self,
        user: &UserId,
        run: &RunId,
        reason: &str,
    ) -> Result<bool, Refusal> {
        if let Some(engine) = self.sessions().active_run(user, run)
            && engine.cancel_run(run, reason)
        {
            return Ok(true);
        }
        match self.cluster() {
            Some(cluster) => Ok(cluster
                .cancel(user, run, reason)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "cluster: cannot route cancel_run");
                    false
                })),
            None => Ok(false),
        }
    }

    /// The strategy of a request that names `multitask` (or not: the server's default).
    pub(crate) fn strategy(&self, multitask: Option<Multitask>) -> Multitask {
        multitask.unwrap_or(self.multitask_default())
    }
}

/// Erases run `run` (rolled back by a new message), whose end is stored by now (its node
/// settled it before its slot went to the new run).
async fn erase(recorder: &Arc<Recorder>, user: &UserId, run: &RunId) {
    recorder.writer().flush().await;
    match recorder.store().delete_run(user, run).await {
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%run, %error, "history: cannot erase a rolled-back run; it stays, cancelled")
        }
    }
}

impl RunService {
    /// `steer`: hands the request's message to `thread`'s running run when its agent takes
    /// messages (on this node, or routed to the node executing it), and answers with that
    /// run. `None` when the message must run on its own instead (no running run, or one that
    /// takes no messages or ended meanwhile): the caller queues it.
    pub(crate) async fn steer(
        &self,
        user: &UserId,
        thread: &ThreadId,
        request: &RunRequest,
    ) -> Result<Option<RunAccepted>, Refusal> {
        let runner = self
            .factory()
            .slots()
            .thread_runner(user, thread)
            .await
            .map_err(|e| Refusal::new("internal_error", e.to_string()))?;
        let Some((run, agent)) = runner else {
            return Ok(None);
        };
        if !self.factory().registry().can_steer(&agent) {
            return Ok(None);
        }
        let accepted = RunAccepted {
            run_id: run.clone(),
            thread_id: thread.clone(),
            steered: true,
            queued: None,
        };
        if let Some(engine) = self.sessions().active_run(user, &run) {
            let taken = engine.steer_run(&run, request.message.clone()).is_ok();
            if taken {
                self.metrics().busy_thread(Multitask::Steer, true);
            }
            return Ok(taken.then_some(accepted));
        }
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let routed = SteerRequest {
            user: user.clone(),
            run_id: run,
            thread_id: thread.clone(),
            agent: request.agent.clone(),
            message: request.message.clone(),
        };
        match cluster.steer(&routed).await {
            Ok(true) => {
                self.metrics().busy_thread(Multitask::Steer, true);
                Ok(Some(accepted))
            }
            Ok(false) => Ok(None),
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot route a message to its running run; it is queued instead");
                Ok(None)
            }
        }
    }

    /// A message another node routed to a run here: the run takes it, or (it cannot, or
    /// ended) the message starts a run of its own in the thread.
    pub(crate) async fn deliver_steer(self: &Arc<Self>, request: SteerRequest) {
        let message = match self.sessions().active_run(&request.user, &request.run_id) {
            Some(engine) => match engine.steer_run(&request.run_id, request.message) {
                Ok(()) => return,
                Err(message) => message,
            },
            None => request.message,
        };
        self.run_of_its_own(&request.user, &request.thread_id, &request.agent, message)
            .await;
    }

    /// Starts `message` as a run of its own in `thread` (queued behind the thread's runs): a
    /// message sent into a run that ended before taking it is never lost.
    pub(crate) async fn run_of_its_own(
        self: &Arc<Self>,
        user: &UserId,
        thread: &ThreadId,
        agent: &str,
        message: String,
    ) {
        let request = RunRequest {
            agent: agent.to_owned(),
            message,
            thread_id: Some(thread.clone()),
            input: None,
            request_id: None,
            multitask: Some(Multitask::Enqueue),
        };
        let connection = ConnectionId::generate();
        if let Err(refusal) = Box::pin(self.start(user, &connection, request)).await {
            tracing::warn!(%refusal, code = refusal.code, "a message its run never took could not start a run of its own");
        }
    }
}
