//! [`RunCounter`]: what the run service counts (runs accepted and refused, approvals,
//! messages into busy threads, model usage), which the server's metrics implement, so the
//! service knows nothing of Prometheus or the server. It imports nothing of the crate, so
//! every module can count through it.

use core_context::RunId;
use core_context::multitask::Multitask;

/// What the run service counts: a run accepted (before the engine may start it), and a run
/// refused after it was accepted. The server's metrics implement it (the run's queue wait).
pub trait RunCounter: Send + Sync {
    /// `run` was accepted (before the engine may start it).
    fn run_accepted(&self, run: &RunId);
    /// `run` was refused after [`RunCounter::run_accepted`].
    fn run_refused(&self, run: &RunId);
    /// A run paused with `calls` tool calls waiting for approval.
    fn approvals_requested(&self, calls: usize) {
        let _ = calls;
    }
    /// A waiting call was decided (`decision`: `approve`, `edit`, `reject`, `respond`, or
    /// `expired`) after waiting `waited`.
    fn approval_resolved(&self, decision: &str, waited: std::time::Duration) {
        let _ = (decision, waited);
    }
    /// A message came into a thread that had a run (running or queued), with `strategy`
    /// (the request's, or the server's default); `accepted` whether it was taken.
    fn busy_thread(&self, strategy: Multitask, accepted: bool) {
        let _ = (strategy, accepted);
    }
    /// A run paused because its next model call would pass its user's `budget` (`tokens`,
    /// `cost_usd`).
    fn budget_wait(&self, budget: &'static str) {
        let _ = budget;
    }
    /// A model call of `model` used `prompt` and `completion` tokens (`cached` of the prompt
    /// from the provider's cache) and cost `cost_micro_usd` (`None`: the model has no price).
    fn model_usage(
        &self,
        model: &str,
        (prompt, completion, cached): (u64, u64, u64),
        cost_micro_usd: Option<u64>,
    ) {
        let _ = (model, prompt, completion, cached, cost_micro_usd);
    }
}
