//! The vocabulary of spending budgets: which budget a run used up ([`BudgetKind`]), an
//! amount of it ([`Amount`]), and what a run that paused for its user's budget reports
//! ([`Exhausted`], the data of `budget_exhausted`), and what a run refused for its budget is
//! told ([`Shortfall`], on `budget_exceeded` errors).
//!
//! Plain data shared by the agent's context (where a model call is refused), the engine
//! (which pauses the run), the history (which keeps it waiting) and the transports:
//! `docs/protocol.md`, "Budgets".

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The budget a user's runs used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    /// The budget in the way.
    pub budget: BudgetKind,
    /// What remains of it this period.
    pub remaining: Amount,
    /// When the next period begins (RFC 3339).
    pub resets_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn amounts_read_back_as_what_they_are() {
        let tokens: Amount = serde_json::from_value(json!(300)).unwrap();
        assert_eq!(tokens, Amount::Tokens(300));
        let usd: Amount = serde_json::from_value(json!(0.15)).unwrap();
        assert_eq!(usd, Amount::Usd(0.15));
        assert_eq!(serde_json::to_value(Amount::Usd(2.0)).unwrap(), json!(2.0));
        assert_eq!(
            serde_json::to_value(BudgetKind::CostUsd).unwrap(),
            json!(BudgetKind::CostUsd.name())
        );
    }
}
