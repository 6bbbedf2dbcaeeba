//! The JSON bodies of the server's HTTP side: refusals (a connect without a valid token gets
//! one with status 401, before any socket exists), dev tokens, a decision's answer and the
//! usage report. (The history's bodies are `crates/history`'s.)

use core_context::{RunId, UserId};
use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;

/// The body of every HTTP refusal: `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct HttpError {
    /// What kind of refusal (`unauthorized`, `bad_request`, `too_many_connections`, ...).
    pub error: ErrorCode,
    /// What was wrong, for a human.
    pub message: String,
}

/// `POST /dev/token` request body (served only when the server generated its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct DevTokenRequest {
    /// The user to sign a token for.
    pub user: String,
}

/// `POST /dev/token` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct DevTokenResponse {
    // Fields in the order the server has always written them (alphabetical), so the
    // answer stays the same bytes.
    /// Its lifetime.
    pub expires_in_secs: u64,
    /// The signed JWT.
    pub token: String,
    /// Its subject.
    pub user_id: UserId,
}

/// `POST /v1/runs/{run_id}/approvals/{tool_call_id}` answer: the decision was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct ApprovalOutcome {
    /// The run.
    pub run_id: RunId,
    /// The call decided.
    pub tool_call_id: String,
    /// The decision taken (`approve`, `edit`, `reject`, `respond`).
    pub decision: String,
    /// The run's calls still waiting for a decision.
    pub waiting: usize,
    /// Whether this decision resumed the run.
    pub resumed: bool,
}

/// `GET /v1/me/usage` answer: what the user's runs spent in the budget's current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct Usage {
    /// The budget's period (`day`, `week`, `month`).
    pub period: String,
    /// When the period began (RFC 3339).
    pub period_start: String,
    /// When the next period begins and the budget resets (RFC 3339).
    pub resets_at: String,
    /// Prompt and answer tokens.
    pub tokens: TokenUse,
    /// US dollars (calls of priced models).
    pub cost_usd: CostUse,
    /// Model calls counted.
    pub calls: u64,
    /// Of those, calls of models without a price (counted in tokens only).
    pub unpriced_calls: u64,
}

/// Tokens used this period, against the budget (`null`s without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct TokenUse {
    /// Used.
    pub used: u64,
    /// The budget.
    pub limit: Option<u64>,
    /// What is left of it (0 when it is spent).
    pub remaining: Option<u64>,
}

impl TokenUse {
    /// `used` of a budget of `limit`.
    pub fn new(used: u64, limit: Option<u64>) -> Self {
        let remaining = limit.map(|limit| limit.saturating_sub(used));
        Self {
            used,
            limit,
            remaining,
        }
    }
}

/// Dollars spent this period, against the budget (`null`s without one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct CostUse {
    /// Spent.
    pub used: f64,
    /// The budget.
    pub limit: Option<f64>,
    /// What is left of it (0 when it is spent).
    pub remaining: Option<f64>,
}

impl CostUse {
    /// `used` of a budget of `limit`.
    pub fn new(used: f64, limit: Option<f64>) -> Self {
        let remaining = limit.map(|limit| (limit - used).max(0.0));
        Self {
            used,
            limit,
            remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_keep_their_bytes() {
        let refusal = HttpError {
            error: ErrorCode::Unauthorized,
            message: "no token".to_owned(),
        };
        let token = DevTokenResponse {
            expires_in_secs: 3600,
            token: "t.o.k".to_owned(),
            user_id: UserId::parse("alice").unwrap(),
        };
        let cases = [
            (
                serde_json::to_string(&refusal).unwrap(),
                r#"{"error":"unauthorized","message":"no token"}"#,
            ),
            (
                serde_json::to_string(&token).unwrap(),
                r#"{"expires_in_secs":3600,"token":"t.o.k","user_id":"alice"}"#,
            ),
        ];
        for (written, expected) in cases {
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn what_is_left_of_a_budget_is_never_below_zero_and_null_without_one() {
        assert_eq!(TokenUse::new(70, Some(100)).remaining, Some(30));
        assert_eq!(TokenUse::new(170, Some(100)).remaining, Some(0));
        assert_eq!(TokenUse::new(170, None).remaining, None);
        assert_eq!(CostUse::new(0.25, Some(1.0)).remaining, Some(0.75));
        assert_eq!(CostUse::new(2.5, Some(1.0)).remaining, Some(0.0));
        let usage = Usage {
            period: "day".to_owned(),
            period_start: "2026-12-06T00:00:00Z".to_owned(),
            resets_at: "2026-12-07T00:00:00Z".to_owned(),
            tokens: TokenUse::new(70, Some(100)),
            cost_usd: CostUse::new(0.0, None),
            calls: 2,
            unpriced_calls: 2,
        };
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(
            json["tokens"],
            serde_json::json!({"used": 70, "limit": 100, "remaining": 30})
        );
        assert_eq!(
            json["cost_usd"],
            serde_json::json!({"used": 0.0, "limit": null, "remaining": null})
        );
    }
}
