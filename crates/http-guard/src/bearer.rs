//! Who an HTTP request is, and how an HTTP refusal looks: the one place the routes, the
//! WebSocket upgrade, the history API, AG-UI and the HTTP edge's rate limits read a bearer
//! token and answer with the protocol's error body.
//!
//! It takes the token verifier ([`Auth`]), not the server's state, so every handler and
//! middleware can use it without depending on the state's owner (`app.rs`).

use std::collections::HashMap;

use agent_protocol::ErrorCode;
use agent_protocol::http::HttpError;
use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use core_context::UserId;

use agent_auth::{Auth, AuthError};

/// The user of a request: its token (see `bearer`) verified by `auth`.
pub async fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<UserId, AuthError> {
    auth.verify(&bearer(headers, query)?).await
}

/// [`authenticate`], with the token's claims.
pub async fn authenticate_claims(
    auth: &Auth,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(UserId, serde_json::Value), AuthError> {
    auth.verify_claims(&bearer(headers, query)?).await
}

/// The token of a request: the `Authorization: Bearer` header, else `?token=` (for
/// browsers, which cannot set headers on a WebSocket).
fn bearer(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<String, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::BadScheme)?;
        return match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(token.trim().to_owned())
            }
            _ => Err(AuthError::BadScheme),
        };
    }
    query.get("token").cloned().ok_or(AuthError::Missing)
}

/// An HTTP refusal with the protocol's error body.
pub fn refuse(status: StatusCode, error: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(HttpError {
            error,
            message: message.into(),
        }),
    )
        .into_response()
}
