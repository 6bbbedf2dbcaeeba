//! `UsageBook`, the engine's usage meter: each model call's worst case reserved against its
//! user's budget before the call, and its real usage counted once in the history after.
//!
//! **The reservation.** A call asks for its prompt's estimated tokens plus the longest answer
//! it could get: the agent's own cap, or what remains of the budget after the prompt,
//! whichever is less (that is the request's `max_tokens`). What remains is the budget less
//! the period's usage in the history and the reservations of this node's calls under way, read
//! and reserved under the user's own lock, so this node's concurrent calls never pass the
//! budget together (`core_context::budget::plan_call` does the arithmetic). A call that
//! cannot get `MIN_ANSWER_TOKENS` waits for the budget
//! (`budget_exhausted`); one whose prompt alone passes the whole budget fails. Settled, the
//! reservation gives way to the call's real usage (written to the history first, so the call
//! is never counted by neither); a call that failed gives it back.
//!
//! Across nodes (a Redis broker), the reservations are made in the cluster's ledger
//! (`redis_broker::BudgetLedger`) with the same arithmetic, atomically: the calls under way on
//! every node count, so nodes calling at once never pass a budget together. While Redis cannot
//! be reached a node reserves against its own calls only (and says so in its log).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agent_registry::{AgentError, BUDGET_EXCEEDED, CallEstimate, CallUsage, Grant, UsageMeter};
use async_trait::async_trait;
use core_context::budget::{
    Amount, BudgetKind, CallAsk, CallPlan, Exhausted, Limits, Spent, plan_call,
};
use core_context::{RunId, RunScope, Timestamp, UserId};
use history::ModelUsage;
use parking_lot::Mutex;
use redis_broker::{BudgetLedger, LedgerGrant, LedgerTicket};

use crate::budgets::Budgets;
use crate::counter::RunCounter;
use crate::recorder::{Recorder, now_ms, timestamp};
use crate::usage::{Budget, Prices};

/// How long a reservation in the cluster's ledger lasts unless settled: longer than any model
/// call (a node that died while calling holds the user's budget this long at most).
const RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// One user's calls under way on this node: the lock their reservations are made under, and
/// what each holds (tokens, millionths of a dollar).
#[derive(Default)]
struct Held {
    lock: Arc<tokio::sync::Mutex<()>>,
    calls: HashMap<u64, (u64, u64)>,
}

/// The engine's usage meter; see the module documentation.
pub(crate) struct UsageBook {
    recorder: Arc<Recorder>,
    prices: Prices,
    metrics: Arc<dyn RunCounter>,
    budgets: Arc<Budgets>,
    held: Mutex<HashMap<UserId, Held>>,
    tickets: AtomicU64,
    /// The cluster's ledger, with a Redis broker: reservations are made there, across nodes.
    shared: Option<BudgetLedger>,
    /// This node's tickets of reservations held in the cluster's ledger.
    remote: Mutex<HashMap<u64, LedgerTicket>>,
}

impl UsageBook {
    pub(crate) fn new(
        recorder: Arc<Recorder>,
        prices: Prices,
        metrics: Arc<dyn RunCounter>,
        budgets: Arc<Budgets>,
        shared: Option<BudgetLedger>,
    ) -> Self {
        Self {
            recorder,
            prices,
            metrics,
            budgets,
            held: Mutex::default(),
            tickets: AtomicU64::new(1),
            shared,
            remote: Mutex::default(),
        }
    }

    /// `user`'s lock (their entry is kept while it is held).
    fn lock_of(&self, user: &UserId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(&self.held.lock().entry(user.clone()).or_default().lock)
    }

    /// What this node's calls under way hold for `user`: tokens, millionths of a dollar.
    fn held_by(&self, user: &UserId) -> (u64, u64) {
        self.held.lock().get(user).map_or((0, 0), |entry| {
            entry.calls.values().fold((0u64, 0u64), |(t, m), (ct, cm)| {
                (t.saturating_add(*ct), m.saturating_add(*cm))
            })
        })
    }

    /// Lets go of `ticket` (if given), and of `user`'s entry once nothing holds it.
    fn let_go(&self, user: &UserId, ticket: Option<u64>) {
        let mut held = self.held.lock();
        let Some(entry) = held.get_mut(user) else {
            return;
        };
        if let Some(ticket) = ticket {
            entry.calls.remove(&ticket);
        }
        if entry.calls.is_empty() && Arc::strong_count(&entry.lock) == 1 {
            held.remove(user);
        }
    }

    /// What the cluster's ledger granted, as the engine's grant.
    fn shared_grant(
        &self,
        grant: LedgerGrant,
        (ask, limits): (&CallAsk, Limits),
        budget: &Budget,
        resets_at: Timestamp,
    ) -> Grant {
        match grant {
            LedgerGrant::Reserved { ticket, answer } => {
                let id = self.tickets.fetch_add(1, Ordering::Relaxed);
                self.remote.lock().insert(id, ticket);
                Grant::Reserved {
                    ticket: id,
                    max_answer_tokens: answer,
                }
            }
            LedgerGrant::Exhausted { kind, used } => {
                Grant::Exhausted(exhausted(kind, used, limits, resets_at))
            }
            LedgerGrant::TooLarge(kind) => {
                Grant::Refused(too_large(kind, ask, limits, budget.period.name()))
            }
        }
    }

    /// The reservation itself, under `user`'s lock.
    async fn reserve_locked(&self, user: &UserId, call: &CallEstimate) -> Grant {
        let budget = self.budgets.of(user);
        if !budget.is_set() {
            return Grant::Unbounded;
        }
        let lock = self.lock_of(user);
        let _turn = lock.lock().await;
        let (held_tokens, held_micro) = self.held_by(user);
        let (start, resets_ms) = budget.period.bounds(now_ms());
        let totals = match self.recorder.store().usage_since(user, start).await {
            Ok(totals) => totals,
            Err(error) => {
                // The budget cannot be read: the call goes on rather than the run failing
                // on a store outage (the count catches up once it is back).
                tracing::warn!(%error, "history: cannot read a user's usage; a model call goes on unreserved");
                return Grant::Unbounded;
            }
        };
        let resets_at = timestamp(resets_ms);
        let ask = CallAsk {
            prompt_tokens: call.prompt_tokens,
            answer_cap: call.max_answer_tokens,
            price: self.prices.of(&call.model),
        };
        let limits = Limits {
            tokens: budget.tokens,
            cost_micro_usd: budget.cost_micro_usd,
        };
        if let Some(ledger) = &self.shared {
            let seen = Spent {
                tokens: totals.tokens,
                cost_micro_usd: totals.cost_micro_usd,
            };
            let period = (start, resets_ms);
            match ledger
                .reserve(user, period, seen, &ask, limits, RESERVATION_TTL)
                .await
            {
                Ok(grant) => return self.shared_grant(grant, (&ask, limits), &budget, resets_at),
                Err(error) => {
                    // Redis cannot be reached: this node's own reservations bound the call.
                    tracing::warn!(%error, "budgets: cannot reserve in Redis; reserving on this node only");
                }
            }
        }
        let spent = Spent {
            tokens: totals.tokens.saturating_add(held_tokens),
            cost_micro_usd: totals.cost_micro_usd.saturating_add(held_micro),
        };
        let (answer, tokens, micro) = match plan_call(spent, &ask, limits) {
            CallPlan::Reserve {
                answer,
                tokens,
                cost_micro_usd,
            } => (answer, tokens, cost_micro_usd),
            CallPlan::Exhausted(kind) => {
                let used = match kind {
                    BudgetKind::Tokens => totals.tokens,
                    BudgetKind::CostUsd => totals.cost_micro_usd,
                };
                return Grant::Exhausted(exhausted(kind, used, limits, resets_at));
            }
            CallPlan::TooLarge(kind) => {
                return Grant::Refused(too_large(kind, &ask, limits, budget.period.name()));
            }
        };
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = self.held.lock().get_mut(user) {
            entry.calls.insert(ticket, (tokens, micro));
        }
        Grant::Reserved {
            ticket,
            max_answer_tokens: answer,
        }
    }
}

/// What `budget_exhausted` says: the period's usage (`used`: tokens, or millionths of a dollar)
/// of the budget in the way, and its limit.
fn exhausted(kind: BudgetKind, used: u64, limits: Limits, resets_at: Timestamp) -> Exhausted {
    let usd = |micro: u64| Amount::Usd(micro as f64 / 1e6);
    let (used, limit) = match kind {
        BudgetKind::Tokens => (
            Amount::Tokens(used),
            Amount::Tokens(limits.tokens.unwrap_or(0)),
        ),
        BudgetKind::CostUsd => (usd(used), usd(limits.cost_micro_usd.unwrap_or(0))),
    };
    Exhausted {
        budget: kind,
        used,
        limit,
        resets_at,
    }
}

/// The failure of a call that could never fit in its user's budget.
fn too_large(kind: BudgetKind, ask: &CallAsk, limits: Limits, period: &str) -> AgentError {
    let prompt = ask.prompt_tokens;
    let message = match kind {
        BudgetKind::Tokens => format!(
            "this model call's prompt is about {prompt} tokens, more than your whole budget of {} tokens per {period}",
            limits.tokens.unwrap_or(0)
        ),
        BudgetKind::CostUsd => format!(
            "this model call's prompt alone would cost about ${:.4}, more than your whole budget of ${:.2} per {period}",
            ask.price.map_or(0.0, |(input, _)| prompt as f64 * input) / 1e6,
            limits.cost_micro_usd.unwrap_or(0) as f64 / 1e6
        ),
    };
    AgentError::new(BUDGET_EXCEEDED, message)
}

#[async_trait]
impl UsageMeter for UsageBook {
    async fn reserve(&self, user: &UserId, _scope: &RunScope, call: &CallEstimate) -> Grant {
        let grant = self.reserve_locked(user, call).await;
        if !matches!(grant, Grant::Reserved { .. }) {
            self.let_go(user, None);
        }
        grant
    }

    async fn record(&self, user: &UserId, scope: &RunScope, usage: CallUsage) {
        let record = ModelUsage {
            // Unique per call: a retried write of the same call counts once.
            call_id: format!("{}:{}", scope.run_id, RunId::generate().as_str()),
            user: user.clone(),
            run_id: scope.run_id.clone(),
            model: usage.model.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cost_micro_usd: self.prices.cost_micro_usd(&usage),
            at_ms: now_ms(),
        };
        self.metrics.model_usage(
            &usage.model,
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
            ),
            record.cost_micro_usd,
        );
        if let Err(error) = self.recorder.store().record_usage(&record).await {
            tracing::warn!(run_id = %scope.run_id, %error, "history: a model call's usage could not be recorded; the user's totals miss it");
        }
    }

    async fn settle(&self, user: &UserId, scope: &RunScope, ticket: u64, usage: CallUsage) {
        let used = Spent {
            tokens: usage.tokens(),
            cost_micro_usd: self.prices.cost_micro_usd(&usage).unwrap_or(0),
        };
        // Counted in the history before the reservation goes: never counted by neither.
        self.record(user, scope, usage).await;
        let remote = self.remote.lock().remove(&ticket);
        match (remote, &self.shared) {
            (Some(ticket), Some(ledger)) => {
                if let Err(error) = ledger.settle(&ticket, used).await {
                    tracing::warn!(%error, "budgets: a call's usage could not be counted in Redis; its reservation lapses and the history's count takes over");
                }
            }
            _ => self.let_go(user, Some(ticket)),
        }
    }

    fn release(&self, user: &UserId, ticket: u64) {
        let remote = self.remote.lock().remove(&ticket);
        match (remote, &self.shared) {
            (Some(ticket), Some(ledger)) => {
                let ledger = ledger.clone();
                // Called where nothing can be awaited (a dropped reservation).
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(error) = ledger.release(&ticket).await {
                            tracing::warn!(%error, "budgets: a reservation could not be given back in Redis; it lapses by itself");
                        }
                    });
                }
            }
            _ => self.let_go(user, Some(ticket)),
        }
    }
}
