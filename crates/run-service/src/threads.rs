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
//! | `steer` | goes on | enqueued (no agent takes a message mid-run yet) |

use std::sync::Arc;

use core_context::multitask::{self, Multitask};
use core_context::{RunId, ThreadId, UserId};
use execution_engine::{Admission, QueuedAt};

use crate::recorder::Recorder;
use crate::service::{Refusal, RunService};

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
        if let Some(engine) = self.sessions().active_run(user, run) {
            if engine.cancel_run(run, reason) {
                return Ok(true);
            }
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
