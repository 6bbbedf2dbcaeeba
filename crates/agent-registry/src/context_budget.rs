//! The budget side of [`AgentContext`]: a model call reserves its worst case before it is
//! made ([`AgentContext::reserve_call`]), a run pauses until its user's budget allows
//! ([`AgentContext::wait_for_budget`]), and a call made without a reservation reports its
//! usage ([`AgentContext::record_usage`]). The meter and its values are `meter.rs`'s.

use std::sync::Arc;

use serde_json::Value;

use crate::context::AgentContext;
use crate::meter::{BudgetStop, CallEstimate, CallUsage, Grant, Reservation};
use crate::run_types::AgentError;

impl AgentContext {
    /// Asks the user's budget for a model call's worst case (`call`'s prompt and its longest
    /// answer) before making it. `Ok`: make the call, asking for at most
    /// [`Reservation::max_answer_tokens`], then [`settle`](Reservation::settle) it with the
    /// usage. [`BudgetStop::Exhausted`]: pause the run ([`wait_for_budget`](Self::wait_for_budget));
    /// [`BudgetStop::Refused`]: fail it. A run without a meter is never stopped.
    pub async fn reserve_call(&self, call: &CallEstimate) -> Result<Reservation, BudgetStop> {
        let Some(meter) = self.meter() else {
            return Ok(Reservation {
                meter: None,
                ticket: None,
                max_answer_tokens: None,
            });
        };
        let user = self.user_context().user_id();
        let (ticket, max_answer_tokens) = match meter.reserve(user, self.scope(), call).await {
            Grant::Unbounded => (None, None),
            Grant::Reserved {
                ticket,
                max_answer_tokens,
            } => (Some(ticket), Some(max_answer_tokens)),
            Grant::Exhausted(exhausted) => return Err(BudgetStop::Exhausted(exhausted)),
            Grant::Refused(error) => return Err(BudgetStop::Refused(error)),
        };
        Ok(Reservation {
            meter: Some((Arc::clone(meter), user.clone(), self.scope().clone())),
            ticket,
            max_answer_tokens,
        })
    }

    /// Pauses the run until the user's budget allows its next model call: `state` is what
    /// [`Agent::resume`](crate::Agent::resume) gets to go on (with no decided calls). Return
    /// the error it gives from `run` (or `resume`): the engine keeps the run waiting and emits
    /// `budget_exhausted`. A [`BudgetStop::Refused`] is returned as it is (the run fails).
    pub fn wait_for_budget(&self, state: Value, stop: BudgetStop) -> AgentError {
        match stop {
            BudgetStop::Refused(error) => error,
            BudgetStop::Exhausted(exhausted) => {
                self.pause_for_budget(state, exhausted);
                AgentError::new(
                    "waiting_for_budget",
                    "the run waits until its user's budget allows its next model call",
                )
            }
        }
    }

    /// Reports a model call's usage when it did not [`reserve_call`](Self::reserve_call)
    /// first (an agent backed by a model calls it once per call, when the call answered): the
    /// server counts it for the run and the user. Nothing without a meter (a bare engine).
    pub async fn record_usage(&self, usage: CallUsage) {
        if let Some(meter) = self.meter() {
            meter
                .record(self.user_context().user_id(), self.scope(), usage)
                .await;
        }
    }
}
