//! What the signed-in user's runs spent, over HTTP (`Authorization: Bearer`, like the
//! history): `GET /v1/me/usage` answers the budget's period, when it began and when it
//! resets, the tokens and dollars used this period, and the limits (`null` without a budget).
//! The caller is the history API's (`history_http::Caller`): a token, and a server with a
//! store, where usage is counted.

use std::collections::HashMap;

use agent_protocol::ErrorCode;
use agent_protocol::http::{CostUse, TokenUse, Usage};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http_guard::bearer::refuse;

use crate::app::{Live, RouterState};
use crate::history_http::Caller;

/// The routes, by path (the router puts them behind the HTTP API's guard).
pub fn routes() -> [(&'static str, MethodRouter<RouterState>); 1] {
    [("/v1/me/usage", get(usage))]
}

async fn usage(
    Caller { user, .. }: Caller,
    State(live): State<Live>,
    headers: HeaderMap,
) -> Response {
    // The token's plan, if it carries one, is the user's budget from this request on.
    if let Err(reason) = live.user(&headers, &HashMap::new()).await {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, reason);
    }
    match live.runs.usage_report(&user).await {
        Ok(report) => {
            let at = |ms: i64| {
                jiff::Timestamp::from_millisecond(ms)
                    .map_or_else(|_| String::new(), |t| t.to_string())
            };
            Json(Usage {
                period: report.period.name().to_owned(),
                period_start: at(report.period_start_ms),
                resets_at: at(report.resets_at_ms),
                tokens: TokenUse::new(report.tokens_used, report.tokens_limit),
                cost_usd: CostUse::new(report.cost_usd_used, report.cost_usd_limit),
                calls: report.calls,
                unpriced_calls: report.unpriced_calls,
            })
            .into_response()
        }
        Err(refusal) => crate::wire::refused_http(refusal),
    }
}
