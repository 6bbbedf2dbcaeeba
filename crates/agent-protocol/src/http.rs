//! The JSON bodies of the server's HTTP side: refusals (a connect without a valid token gets
//! one with status 401, before any socket exists) and dev tokens.

use core_context::UserId;
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
}
