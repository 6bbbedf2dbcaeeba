//! [`usage()`]: what the user's runs spent this budget period, and what their budget allows,
//! from `GET /v1/me/usage` (`docs/protocol.md`, "GET /v1/me/usage").

use agent_protocol::ErrorCode;
use agent_protocol::http::HttpError;
use serde::Deserialize;

use crate::error::ClientError;
use crate::http;
use crate::url::ServerUrl;

/// The user's spending this budget period, as `GET /v1/me/usage` answers it. Every model call
/// of the user's runs counts once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// The budget's period: `day`, `week` or `month` (calendar periods in UTC).
    pub period: String,
    /// When this period began (RFC 3339, UTC).
    pub period_start: String,
    /// When the next period begins and the count starts over (RFC 3339, UTC).
    pub resets_at: String,
    /// Tokens (prompt and answer) used, and the token budget.
    pub tokens: Allowance<u64>,
    /// Dollars spent (calls of priced models), and the cost budget.
    pub cost_usd: Allowance<f64>,
    /// Model calls this period.
    pub calls: u64,
    /// Of them, calls of models without a price: counted in tokens only.
    pub unpriced_calls: u64,
}

/// What is used of one budget, what it allows and what remains (`None`: no such budget).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Allowance<T> {
    /// Used this period.
    pub used: T,
    /// The budget for the period, if one is set.
    pub limit: Option<T>,
    /// What is left of it (never below zero), if one is set.
    pub remaining: Option<T>,
}

impl Usage {
    /// Whether a budget is used up: a new run of the user's would be refused with
    /// `budget_exceeded` until [`resets_at`](Usage::resets_at).
    pub fn used_up(&self) -> bool {
        self.tokens.remaining == Some(0) || self.cost_usd.remaining.is_some_and(|r| r <= 0.0)
    }
}

/// What the user `token` names spent this budget period, from the server at `server_url`.
///
/// A refused token is [`ClientError::Refused`] with status 401; a server that keeps no
/// history (so counts no usage), or that predates budgets, answers 404, also a `Refused`.
pub async fn usage(server_url: &str, token: &str) -> Result<Usage, ClientError> {
    let url = ServerUrl::parse(server_url)?.http("v1/me/usage");
    let body = http::send(
        &url,
        |client| client.get(&url).bearer_auth(token),
        || ClientError::Refused {
            status: 404,
            error: HttpError {
                error: ErrorCode::NotFound,
                message: format!(
                    "GET {url} does not exist: this server counts no usage (it keeps no history, \
                     --store none, or predates usage budgets)"
                ),
            },
        },
    )
    .await?;
    read(&url, &body)
}

fn read(url: &str, body: &[u8]) -> Result<Usage, ClientError> {
    serde_json::from_slice(body).map_err(|e| {
        ClientError::Protocol(format!(
            "GET {url} answered 200 without a usage report ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_report_is_read_and_a_wrong_body_named() {
        let body = json!({"period": "month", "period_start": "2026-12-01T00:00:00Z",
            "resets_at": "2027-01-01T00:00:00Z",
            "tokens": {"used": 300, "limit": 300, "remaining": 0},
            "cost_usd": {"used": 0.0, "limit": null, "remaining": null},
            "calls": 2, "unpriced_calls": 2});
        let usage = read("u", body.to_string().as_bytes()).unwrap();
        assert_eq!(usage.period, "month");
        assert_eq!(usage.resets_at, "2027-01-01T00:00:00Z");
        assert_eq!(
            usage.tokens,
            Allowance {
                used: 300,
                limit: Some(300),
                remaining: Some(0)
            }
        );
        assert_eq!(usage.cost_usd.limit, None);
        assert_eq!((usage.calls, usage.unpriced_calls), (2, 2));
        assert!(usage.used_up());

        let mut open = body.clone();
        open["tokens"] = json!({"used": 10, "limit": null, "remaining": null});
        assert!(!read("u", open.to_string().as_bytes()).unwrap().used_up());
        let mut spent = open.clone();
        spent["cost_usd"] = json!({"used": 0.25, "limit": 0.2, "remaining": 0.0});
        assert!(read("u", spent.to_string().as_bytes()).unwrap().used_up());

        let err = read("http://h/v1/me/usage", b"{\"period\":7}").unwrap_err();
        assert!(
            err.to_string()
                .contains("GET http://h/v1/me/usage answered 200 without a usage report"),
            "{err}"
        );
    }
}
