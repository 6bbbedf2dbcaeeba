//! [`UsageMeter`]: where a run's model calls report what they spent ([`CallUsage`]), so the
//! server can count each call once, per run and per user, and bound what users spend.
//!
//! An agent backed by a model asks before each call
//! ([`AgentContext::reserve_call`](crate::AgentContext::reserve_call)): the meter reserves the call's worst case against the
//! user's budget and says how long an answer it may ask for. The call's real usage settles
//! the reservation ([`Reservation::settle`], as soon as the call answered); a call that never
//! answered gives it back (the reservation's drop). When the call would pass the budget, the
//! agent pauses its run with [`AgentContext::wait_for_budget`](crate::AgentContext::wait_for_budget): the engine keeps it waiting
//! (`budget_exhausted`) until the budget allows, then resumes it. An agent that does not ask
//! first reports usage with [`AgentContext::record_usage`](crate::AgentContext::record_usage). The engine gives every run of a
//! server (sub-runs too) the server's meter; without one, usage is only what the agent puts in
//! its `agent_completed`, and nothing is bounded.

use std::sync::Arc;

use async_trait::async_trait;
use core_context::approval::PendingCall;
use core_context::budget::Exhausted;
use core_context::{RunScope, UserId};
use serde_json::Value;

use crate::run_types::AgentError;

/// One model call's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallUsage {
    /// The model's name, as the agent asked for it.
    pub model: String,
    /// Tokens of the prompt (cached ones included).
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Tokens of the prompt the provider served from its cache.
    pub cached_tokens: u64,
}

impl CallUsage {
    /// The usage an OpenAI-compatible API reports (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`), for `model`; `None` when it names no tokens.
    pub fn from_openai(model: &str, usage: &Value) -> Option<Self> {
        let count = |v: &Value| v.as_u64();
        let prompt = usage.get("prompt_tokens").and_then(count);
        let completion = usage.get("completion_tokens").and_then(count);
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        Some(Self {
            model: model.to_owned(),
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            cached_tokens: usage
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(count)
                .unwrap_or(0),
        })
    }

    /// Prompt and answer tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A model call about to be made: its model, an estimate of its prompt's tokens, and the
/// longest answer the agent would ask for without a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEstimate {
    /// The model's name.
    pub model: String,
    /// The prompt's tokens, estimated on the high side ([`estimate_tokens`]).
    pub prompt_tokens: u64,
    /// The answer's tokens at most (the agent's own cap).
    pub max_answer_tokens: u64,
}

/// A prompt's tokens, estimated on the high side from its text: one token per 3 bytes of
/// UTF-8 (tokenizers average about 4 bytes of English per token), plus one per 64 bytes
/// for the structure around it. No tokenizer is exact for every model; this errs towards
/// reserving too much, which a budget can afford, rather than too little.
pub fn estimate_tokens(text_bytes: usize) -> u64 {
    let bytes = text_bytes as u64;
    bytes.div_ceil(3) + bytes.div_ceil(64)
}

/// What the meter allows a model call.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// No budget bounds the user: call as usual, and report the usage.
    Unbounded,
    /// The call's worst case is reserved under `ticket`: it may ask for an answer of
    /// `max_answer_tokens` at most (what remains of the budget after the prompt, or the
    /// agent's own cap).
    Reserved {
        /// Names the reservation when it is settled or given back.
        ticket: u64,
        /// The longest answer the call may ask for.
        max_answer_tokens: u64,
    },
    /// The call would pass the user's budget: the run waits until it allows.
    Exhausted(Exhausted),
    /// The call can never be made (its prompt alone passes the whole budget): the run fails
    /// with this error.
    Refused(AgentError),
}

/// Where model usage goes; the server implements it over its history (and budgets).
#[async_trait]
pub trait UsageMeter: Send + Sync {
    /// Reserves the worst case of `user`'s next model call in run `scope` against their
    /// budget. Without budgets: [`Grant::Unbounded`].
    async fn reserve(&self, _user: &UserId, _scope: &RunScope, _call: &CallEstimate) -> Grant {
        Grant::Unbounded
    }

    /// `user`'s run `scope` made a model call that used `usage`, with no reservation.
    /// Called once per call.
    async fn record(&self, user: &UserId, scope: &RunScope, usage: CallUsage);

    /// The call reserved under `ticket` answered and used `usage`: counted once, and the
    /// reservation let go.
    async fn settle(&self, user: &UserId, scope: &RunScope, ticket: u64, usage: CallUsage) {
        self.record(user, scope, usage).await;
        self.release(user, ticket);
    }

    /// The call reserved under `ticket` reported no usage (it failed, or was cancelled):
    /// its reservation is let go.
    fn release(&self, _user: &UserId, _ticket: u64) {}
}

/// A model call's place in its user's budget ([`AgentContext::reserve_call`](crate::AgentContext::reserve_call)): settle it
/// with the call's usage once it answered; dropped unsettled, the reservation is let go.
pub struct Reservation {
    pub(crate) meter: Option<(Arc<dyn UsageMeter>, UserId, RunScope)>,
    pub(crate) ticket: Option<u64>,
    pub(crate) max_answer_tokens: Option<u64>,
}

impl Reservation {
    /// The longest answer the call may ask for, when a budget bounds it (the request's
    /// `max_tokens`); `None`: as the agent would without a budget.
    pub fn max_answer_tokens(&self) -> Option<u64> {
        self.max_answer_tokens
    }

    /// The call answered and used `usage`: counted once for the run and the user.
    pub async fn settle(mut self, usage: CallUsage) {
        let Some((meter, user, scope)) = self.meter.take() else {
            return;
        };
        match self.ticket.take() {
            Some(ticket) => meter.settle(&user, &scope, ticket, usage).await,
            None => meter.record(&user, &scope, usage).await,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some((meter, user, _)), Some(ticket)) = (&self.meter, self.ticket) {
            meter.release(user, ticket);
        }
    }
}

/// Why a model call may not be made now ([`AgentContext::reserve_call`](crate::AgentContext::reserve_call)).
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetStop {
    /// The user's budget is used up for now: pause the run with
    /// [`AgentContext::wait_for_budget`](crate::AgentContext::wait_for_budget).
    Exhausted(Exhausted),
    /// The call can never be made: fail the run with this error.
    Refused(AgentError),
}

/// A pause an agent asked for, as the engine takes it ([`AgentContext::take_pause`](crate::AgentContext::take_pause)).
#[derive(Debug, Clone, PartialEq)]
pub enum Pause {
    /// Tool calls wait for a person's approval.
    Approval {
        /// What the agent resumes from.
        state: Value,
        /// The calls held.
        calls: Vec<PendingCall>,
        /// The thinking steps taken.
        steps: u32,
    },
    /// The next model call waits for the user's budget.
    Budget {
        /// What the agent resumes from.
        state: Value,
        /// What the budget says.
        exhausted: Exhausted,
        /// The thinking steps taken.
        steps: u32,
    },
}

/// The error code a run fails with when its model call can never fit in the user's budget,
/// and the one a new run of a user whose budget is used up is refused with.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn openai_usage_is_read_with_its_cached_tokens() {
        let usage = json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                           "prompt_tokens_details": {"cached_tokens": 100}});
        let read = CallUsage::from_openai("m", &usage).unwrap();
        assert_eq!(
            (
                read.prompt_tokens,
                read.completion_tokens,
                read.cached_tokens,
                read.tokens()
            ),
            (120, 30, 100, 150)
        );
        assert_eq!(read.model, "m");
        assert_eq!(
            CallUsage::from_openai("m", &json!({"completion_tokens": 7})).map(|u| u.tokens()),
            Some(7)
        );
        assert_eq!(CallUsage::from_openai("m", &json!({"total": 3})), None);
    }

    #[test]
    fn estimates_err_on_the_high_side() {
        // 400 bytes of English is about 100 tokens; the estimate reserves more.
        let english = "The quick brown fox jumps over the lazy dog. ".repeat(9);
        let estimate = estimate_tokens(english.len());
        assert!((100..=160).contains(&estimate), "{estimate}");
        assert_eq!(estimate_tokens(0), 0);
    }
}
