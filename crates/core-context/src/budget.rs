//! The vocabulary of spending budgets: which budget a run used up ([`BudgetKind`]), an
//! amount of it ([`Amount`]), and what a run that paused for its user's budget reports
//! ([`Exhausted`], the data of `budget_exhausted`), and what a run refused for its budget is
//! told ([`Shortfall`], on `budget_exceeded` errors).
//!
//! Plain data shared by the agent's context (where a model call is refused), the engine
//! (which pauses the run), the history (which keeps it waiting) and the transports:
//! `docs/protocol.md`, "Budgets".

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The budget a user's runs used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// Prompt and answer tokens per period (`--token-budget-per-user`).
    Tokens,
    /// Cost in US dollars per period (`--cost-budget-per-user`).
    CostUsd,
}

impl BudgetKind {
    /// Its wire name.
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Tokens => "tokens",
            BudgetKind::CostUsd => "cost_usd",
        }
    }
}

/// An amount of a budget: tokens, or US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(untagged)]
pub enum Amount {
    /// Tokens.
    Tokens(u64),
    /// US dollars.
    Usd(f64),
}

/// A run paused because its next model call would pass its user's budget: what is used,
/// what is allowed, and when the period (and so the budget) starts again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exhausted {
    /// The budget in the way.
    pub budget: BudgetKind,
    /// Used this period (reservations of calls under way included).
    pub used: Amount,
    /// Allowed per period.
    pub limit: Amount,
    /// When the next period begins (RFC 3339): the run goes on then, or once the limit is
    /// raised.
    pub resets_at: Timestamp,
}

/// What a run refused for its user's budget (`budget_exceeded`) is told besides the message:
/// the budget in the way, what remains of it (nothing), and when it resets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct Shortfall {
    /// The budget in the way.
    pub budget: BudgetKind,
    /// What remains of it this period.
    pub remaining: Amount,
    /// When the next period begins (RFC 3339).
    pub resets_at: Timestamp,
}

/// The shortest answer worth a model call: a call that could not get this many answer tokens
/// waits for the budget instead.
pub const MIN_ANSWER_TOKENS: u64 = 16;

/// A model call about to be reserved: its prompt's estimated tokens, the longest answer the
/// agent would ask for, and its model's price (millionths of a dollar per input and output
/// token; `None` for a model with no price).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallAsk {
    /// The prompt's estimated tokens.
    pub prompt_tokens: u64,
    /// The longest answer the agent would ask for.
    pub answer_cap: u64,
    /// Millionths of a dollar per input and per output token.
    pub price: Option<(f64, f64)>,
}

/// A user's limits per period (`None`: not bounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Tokens.
    pub tokens: Option<u64>,
    /// Millionths of a dollar.
    pub cost_micro_usd: Option<u64>,
}

/// What counts against a budget when a call is reserved: the period's usage and the
/// reservations of the calls under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Tokens.
    pub tokens: u64,
    /// Millionths of a dollar.
    pub cost_micro_usd: u64,
}

/// What a call's reservation comes to ([`plan_call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPlan {
    /// Reserve `tokens` and `cost_micro_usd`; the call may answer with `answer` tokens.
    Reserve {
        /// The longest answer the call may ask for (its `max_tokens`).
        answer: u64,
        /// Tokens reserved: the prompt and the longest answer.
        tokens: u64,
        /// Millionths of a dollar reserved (0 for a model with no price).
        cost_micro_usd: u64,
    },
    /// Less remains of this budget than the call needs at least: it waits.
    Exhausted(BudgetKind),
    /// The call needs more than the whole of this budget: it can never be made.
    TooLarge(BudgetKind),
}

/// The reservation of a call `ask` against `limits` with `spent` counted: the call's worst
/// case is its prompt plus the longest answer it may get, which is its own cap or what
/// remains of each budget after the prompt, whichever is least. A call that could not get
/// [`MIN_ANSWER_TOKENS`] waits ([`CallPlan::Exhausted`]), one that could not even with the
/// whole budget is [`CallPlan::TooLarge`]. Tokens are checked before cost. Every
/// implementation of the reservation (this node's, Redis's script) computes exactly this.
pub fn plan_call(spent: Spent, ask: &CallAsk, limits: Limits) -> CallPlan {
    let prompt = ask.prompt_tokens;
    let least = prompt.saturating_add(MIN_ANSWER_TOKENS);
    let mut answer = ask.answer_cap;
    if let Some(limit) = limits.tokens {
        if least > limit {
            return CallPlan::TooLarge(BudgetKind::Tokens);
        }
        let remaining = limit.saturating_sub(spent.tokens);
        if remaining < least {
            return CallPlan::Exhausted(BudgetKind::Tokens);
        }
        answer = answer.min(remaining - prompt);
    }
    if let (Some(limit), Some((input, output))) = (limits.cost_micro_usd, ask.price) {
        let prompt_cost = (prompt as f64 * input).ceil();
        let least_cost = prompt_cost + MIN_ANSWER_TOKENS as f64 * output;
        if least_cost > limit as f64 {
            return CallPlan::TooLarge(BudgetKind::CostUsd);
        }
        let remaining = limit.saturating_sub(spent.cost_micro_usd) as f64;
        if remaining < least_cost {
            return CallPlan::Exhausted(BudgetKind::CostUsd);
        }
        if output > 0.0 {
            let affordable = ((remaining - prompt_cost) / output).floor();
            answer = answer.min(affordable.max(0.0) as u64);
        }
    }
    let cost_micro_usd = ask.price.map_or(0, |(input, output)| {
        (prompt as f64 * input + answer as f64 * output).ceil() as u64
    });
    CallPlan::Reserve {
        answer,
        tokens: prompt.saturating_add(answer),
        cost_micro_usd,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn amounts_read_back_as_what_they_are() {
        let tokens: Amount = serde_json::from_value(json!(300)).expect("tokens");
        assert_eq!(tokens, Amount::Tokens(300));
        let usd: Amount = serde_json::from_value(json!(0.15)).expect("dollars");
        assert_eq!(usd, Amount::Usd(0.15));
        assert_eq!(
            serde_json::to_value(Amount::Usd(2.0)).expect("encode"),
            json!(2.0)
        );
        assert_eq!(
            serde_json::to_value(BudgetKind::CostUsd).expect("encode"),
            json!(BudgetKind::CostUsd.name())
        );
    }

    #[test]
    fn a_call_reserves_its_prompt_and_the_answer_that_remains() {
        let ask = CallAsk {
            prompt_tokens: 600,
            answer_cap: 4096,
            price: None,
        };
        let tokens = |limit| Limits {
            tokens: Some(limit),
            cost_micro_usd: None,
        };
        let spent = |tokens| Spent {
            tokens,
            cost_micro_usd: 0,
        };
        // Unbounded: the agent's own cap.
        assert_eq!(
            plan_call(spent(0), &ask, Limits::default()),
            CallPlan::Reserve {
                answer: 4096,
                tokens: 4696,
                cost_micro_usd: 0
            }
        );
        // What remains after the prompt bounds the answer.
        assert_eq!(
            plan_call(spent(1_000), &ask, tokens(3_000)),
            CallPlan::Reserve {
                answer: 1_400,
                tokens: 2_000,
                cost_micro_usd: 0
            }
        );
        // Exactly the least a call needs still goes; one token less waits.
        assert!(matches!(
            plan_call(spent(3_000 - 616), &ask, tokens(3_000)),
            CallPlan::Reserve { answer: 16, .. }
        ));
        assert_eq!(
            plan_call(spent(3_000 - 615), &ask, tokens(3_000)),
            CallPlan::Exhausted(BudgetKind::Tokens)
        );
        assert_eq!(
            plan_call(spent(0), &ask, tokens(615)),
            CallPlan::TooLarge(BudgetKind::Tokens)
        );
        // A price: $10 and $30 per million tokens; $0.05 allowed, $0.03 spent.
        let priced = CallAsk {
            price: Some((10.0, 30.0)),
            ..ask
        };
        let dollars = Limits {
            tokens: None,
            cost_micro_usd: Some(50_000),
        };
        let spent_usd = Spent {
            tokens: 0,
            cost_micro_usd: 30_000,
        };
        // 20,000 remain; the prompt takes 6,000; 14,000 / 30 = 466 answer tokens.
        assert_eq!(
            plan_call(spent_usd, &priced, dollars),
            CallPlan::Reserve {
                answer: 466,
                tokens: 1_066,
                cost_micro_usd: 19_980
            }
        );
        let nearly = Spent {
            tokens: 0,
            cost_micro_usd: 50_000 - 6_479,
        };
        assert_eq!(
            plan_call(nearly, &priced, dollars),
            CallPlan::Exhausted(BudgetKind::CostUsd)
        );
    }
}
