//! Authentication before the WebSocket upgrade: JWT (HS256) with `sub` and `exp`.
//!
//! The user id of a connection is the verified token's `sub`, parsed as a [`UserId`] (so a
//! placeholder such as `test` is refused like any invalid id). Tokens are never logged: the
//! errors below describe what is wrong with a token without quoting it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use core_context::{IdError, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How long a dev token lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// A short tag for `user` in log lines: the same for one user within a process, and not the
/// user id itself (a keyed hash with a key made at start), so logs correlate a user's lines
/// without naming them.
pub fn user_tag(user: &UserId) -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let hash = KEY.get_or_init(Default::default).hash_one(user.as_str());
    format!("u{:012x}", hash & 0xffff_ffff_ffff)
}

/// Why a token was refused. Every variant ends in HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the `Authorization` header or the `token` query parameter.
    #[error("no token: send `Authorization: Bearer <JWT>` or `?token=<JWT>`")]
    Missing,
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <JWT>`")]
    BadScheme,
    /// The token is not a well-formed JWT.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The token's algorithm is not accepted.
    #[error("the token's algorithm is not accepted: only HS256 (never `none`)")]
    Algorithm,
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// A required claim is missing.
    #[error("the token has no `{0}` claim; `sub` (the user id) and `exp` are required")]
    MissingClaim(String),
    /// `sub` is not a valid user id.
    #[error("the token's `sub` is not a valid user id: {0}")]
    InvalidSubject(IdError),
    /// A token could not be issued.
    #[error("could not issue a token: {0}")]
    Issue(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Verifies tokens (and, with a generated secret, issues dev tokens).
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    dev_tokens: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are secrets: never print them.
        f.debug_struct("Auth")
            .field("dev_tokens", &self.dev_tokens)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Verifies tokens signed with `secret`. `dev_tokens` enables [`issue`](Self::issue).
    pub fn from_secret(secret: &[u8], dev_tokens: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            dev_tokens,
        }
    }

    /// A fresh random secret (256 bits from the OS) with dev tokens enabled.
    pub fn generated() -> Result<Self, AuthError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| AuthError::Issue(format!("no randomness for a secret: {e}")))?;
        Ok(Self::from_secret(&secret, true))
    }

    /// Whether this server hands out dev tokens.
    pub fn dev_tokens(&self) -> bool {
        self.dev_tokens
    }

    /// The user a token speaks for.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.alg != Algorithm::HS256 => return Err(AuthError::Algorithm),
            Ok(_) => {}
            // An unknown `alg` (such as `none`) fails to parse as a header.
            Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => return Err(AuthError::Algorithm),
            Err(_) => return Err(AuthError::Malformed),
        }
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &self.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::MissingClaim(claim.clone())
                    }
                    _ => AuthError::Malformed,
                })?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        UserId::parse(sub).map_err(AuthError::InvalidSubject)
    }

    /// A token for `user` valid for `ttl`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> Result<String, AuthError> {
        let exp = SystemTime::now()
            .checked_add(ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| AuthError::Issue("expiry out of range".into()))?;
        let claims = Claims {
            sub: user.to_string(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Issue(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn user_tags_correlate_without_naming_the_user() {
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let tag = user_tag(&alice);
        assert_eq!(tag, user_tag(&alice));
        assert_ne!(tag, user_tag(&bob));
        assert!(!tag.contains("alice"), "{tag}");
        assert_eq!(tag.len(), 13, "{tag}");
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn later() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    /// `alg: none` with no signature, built by hand as an attacker would.
    fn unsigned(claims: serde_json::Value) -> String {
        use base64::Engine;
        let enc = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.",
            enc(br#"{"alg":"none","typ":"JWT"}"#),
            enc(claims.to_string().as_bytes())
        )
    }

    fn check(token: &str, expected: Result<&str, AuthError>) {
        let got = Auth::from_secret(SECRET, false).verify(token);
        match (&got, &expected) {
            (Ok(user), Ok(name)) => assert_eq!(user.as_str(), *name),
            (Err(a), Err(b)) => assert_eq!(a, b, "{token}"),
            _ => panic!("{token}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn token_table() {
        let past = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        check(
            &sign(json!({"sub": "alice", "exp": later()}), SECRET),
            Ok("alice"),
        );
        check("", Err(AuthError::Malformed));
        check("garbage", Err(AuthError::Malformed));
        check("a.b.c", Err(AuthError::Malformed));
        check(
            &sign(json!({"sub": "alice", "exp": past}), SECRET),
            Err(AuthError::Expired),
        );
        check(
            &sign(
                json!({"sub": "alice", "exp": later()}),
                b"another-secret-another-secret-xx",
            ),
            Err(AuthError::BadSignature),
        );
        check(
            &sign(json!({"exp": later()}), SECRET),
            Err(AuthError::MissingClaim("sub".into())),
        );
        check(
            &sign(json!({"sub": "alice"}), SECRET),
            Err(AuthError::MissingClaim("exp".into())),
        );
        check(
            &unsigned(json!({"sub": "alice", "exp": later()})),
            Err(AuthError::Algorithm),
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "alice", "exp": later()}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        check(&hs512, Err(AuthError::Algorithm));
        let Err(AuthError::InvalidSubject(_)) = Auth::from_secret(SECRET, false)
            .verify(&sign(json!({"sub": "test", "exp": later()}), SECRET))
        else {
            panic!("a placeholder subject must be refused");
        };
    }

    #[test]
    fn dev_tokens_round_trip_and_messages_never_quote_the_token() {
        let auth = Auth::generated().unwrap();
        assert!(auth.dev_tokens());
        let alice = UserId::parse("alice").unwrap();
        let token = auth.issue(&alice, DEV_TOKEN_TTL).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), alice);
        // Another server's generated secret does not accept it.
        assert_eq!(
            Auth::generated().unwrap().verify(&token),
            Err(AuthError::BadSignature)
        );
        let message = Auth::generated()
            .unwrap()
            .verify(&token)
            .unwrap_err()
            .to_string();
        assert!(!message.contains(&token[..20]));
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
