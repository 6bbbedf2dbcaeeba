//! Authentication before the WebSocket upgrade (and for the HTTP API): a JWT with `sub` and
//! `exp`, verified by the keys of the server's [`Identity`]: an HS256 secret, an identity
//! provider's RS256/ES256 public key (a PEM file), or its JWKS URL (`jwks.rs`: cached,
//! fetched again for an unknown key id at a bounded rate); `iss` and `aud` are checked when
//! configured. `none`, and any algorithm the configured keys do not sign with, is refused.
//!
//! The user id of a connection is the verified token's `sub`, parsed as a [`UserId`] (so a
//! placeholder such as `test` is refused like any invalid id). Tokens are never logged: the
//! errors below describe what is wrong with a token without quoting it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod dev_names;
mod jwks;

pub use dev_names::user_for_name;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use core_context::{IdError, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How long a dev token lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

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
    #[error(
        "the token's algorithm is not accepted here: HS256 with the server's secret, RS256/ES256 with its identity provider's keys, never `none`"
    )]
    Algorithm,
    /// The token names a key the identity provider's key set does not hold.
    #[error("the token's key id (`kid`) is not in the identity provider's key set")]
    UnknownKey,
    /// The token's issuer is not the configured one.
    #[error("the token's issuer (`iss`) is not the one this server accepts")]
    Issuer,
    /// The token is not meant for this server.
    #[error("the token's audience (`aud`) does not name this server")]
    Audience,
    /// The identity settings cannot be used (a bad key file or URL).
    #[error("identity settings: {0}")]
    Keys(String),
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

/// Where the keys that verify tokens come from, and what a token must say about itself.
#[derive(Clone, Default)]
pub struct Identity {
    /// An HS256 secret (also what `agent-server token` and dev tokens sign with).
    pub secret: Option<Vec<u8>>,
    /// An identity provider's public key, PEM (RSA: RS256 tokens; EC P-256: ES256).
    pub public_key_pem: Option<Vec<u8>>,
    /// An identity provider's JWKS URL (tokens name their key with `kid`).
    pub jwks_url: Option<String>,
    /// The JWKS is fetched at most once per this interval (unknown key ids included).
    pub jwks_min_refresh: Duration,
    /// Tokens must have this `iss`, when set.
    pub issuer: Option<String>,
    /// Tokens' `aud` must name this, when set.
    pub audience: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key_pem.is_some())
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Identity {
    /// Whether any key is configured (without one the server makes a secret of its own and
    /// serves dev tokens).
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.public_key_pem.is_some() || self.jwks_url.is_some()
    }
}

/// Verifies tokens (and, with a generated secret, issues dev tokens).
pub struct Auth {
    secret: Option<(DecodingKey, EncodingKey)>,
    public_key: Option<(DecodingKey, Algorithm)>,
    jwks: Option<jwks::Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
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
        Self {
            secret: Some((
                DecodingKey::from_secret(secret),
                EncodingKey::from_secret(secret),
            )),
            public_key: None,
            jwks: None,
            issuer: None,
            audience: None,
            dev_tokens,
        }
    }

    /// Verifies tokens with the keys of `identity` (which must name at least one).
    pub fn from_identity(identity: &Identity) -> Result<Self, AuthError> {
        if !identity.is_configured() {
            return Err(AuthError::Keys(
                "no secret, public key or JWKS URL is configured".into(),
            ));
        }
        let mut auth = match &identity.secret {
            Some(secret) => Self::from_secret(secret, false),
            None => Self {
                secret: None,
                public_key: None,
                jwks: None,
                issuer: None,
                audience: None,
                dev_tokens: false,
            },
        };
        auth.public_key = identity
            .public_key_pem
            .as_deref()
            .map(public_key)
            .transpose()?;
        auth.jwks = identity
            .jwks_url
            .as_deref()
            .map(|url| jwks::Jwks::new(url, identity.jwks_min_refresh))
            .transpose()?;
        auth.issuer.clone_from(&identity.issuer);
        auth.audience.clone_from(&identity.audience);
        Ok(auth)
    }

    /// Times the JWKS was fetched (0 without one).
    pub async fn jwks_fetches(&self) -> u64 {
        match &self.jwks {
            Some(jwks) => jwks.fetches().await,
            None => 0,
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

    /// The key that verifies a token with `header`.
    async fn key_for(&self, header: &jsonwebtoken::Header) -> Result<DecodingKey, AuthError> {
        match header.alg {
            Algorithm::HS256 => self
                .secret
                .as_ref()
                .map(|(key, _)| key.clone())
                .ok_or(AuthError::Algorithm),
            Algorithm::RS256 | Algorithm::ES256 => {
                if let (Some(jwks), Some(kid)) = (&self.jwks, &header.kid) {
                    return jwks.key(kid, header.alg).await;
                }
                match &self.public_key {
                    Some((key, alg)) if *alg == header.alg => Ok(key.clone()),
                    _ if self.jwks.is_some() => Err(AuthError::UnknownKey),
                    _ => Err(AuthError::Algorithm),
                }
            }
            _ => Err(AuthError::Algorithm),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        let mut required = vec!["exp", "sub"];
        validation.leeway = 5;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The user a token speaks for.
    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.verify_claims(token).await.map(|(user, _)| user)
    }

    /// The user a token speaks for, with all its claims (a server reads its own from them,
    /// such as a per-user budget).
    pub async fn verify_claims(
        &self,
        token: &str,
    ) -> Result<(UserId, serde_json::Value), AuthError> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            // An unknown `alg` (such as `none`) fails to parse as a header.
            Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => return Err(AuthError::Algorithm),
            Err(_) => return Err(AuthError::Malformed),
        };
        let key = self.key_for(&header).await?;
        let validation = self.validation(header.alg);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
                _ => AuthError::Malformed,
            },
        )?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let user = UserId::parse(sub).map_err(AuthError::InvalidSubject)?;
        Ok((user, data.claims))
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
        let (_, encoding) = self
            .secret
            .as_ref()
            .ok_or_else(|| AuthError::Issue("this server has no secret to sign with".into()))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .map_err(|e| AuthError::Issue(e.to_string()))
    }
}

/// A PEM public key: RSA for RS256 tokens, EC (P-256) for ES256.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), AuthError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(pem)
        .map(|key| (key, Algorithm::ES256))
        .map_err(|e| {
            AuthError::Keys(format!(
                "the public key is neither an RSA nor an EC (P-256) PEM public key: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    /// Runs `future` to its end on a runtime of its own.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    use serde_json::json;

    use super::*;

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
        let got = block_on(Auth::from_secret(SECRET, false).verify(token));
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
        let Err(AuthError::InvalidSubject(_)) = block_on(
            Auth::from_secret(SECRET, false)
                .verify(&sign(json!({"sub": "test", "exp": later()}), SECRET)),
        ) else {
            panic!("a placeholder subject must be refused");
        };
    }

    #[test]
    fn dev_tokens_round_trip_and_messages_never_quote_the_token() {
        let auth = Auth::generated().unwrap();
        assert!(auth.dev_tokens());
        let alice = UserId::parse("alice").unwrap();
        let token = auth.issue(&alice, DEV_TOKEN_TTL).unwrap();
        let verify = |auth: &Auth| block_on(auth.verify(&token));
        assert_eq!(verify(&auth).unwrap(), alice);
        // Another server's generated secret does not accept it.
        let other = Auth::generated().unwrap();
        assert_eq!(verify(&other), Err(AuthError::BadSignature));
        let message = verify(&other).unwrap_err().to_string();
        assert!(!message.contains(&token[..20]));
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
