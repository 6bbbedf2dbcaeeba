//! An identity provider's keys from its JWKS URL: fetched at the first token that needs
//! them, cached, fetched again when a token names a key id the cache does not hold (the
//! provider rotated its keys) or when the cache is older than [`MAX_AGE`], but never more
//! often than the configured minimum interval, so tokens with made-up key ids cannot make the
//! server hammer the provider. A failed fetch keeps the keys it had, and is logged. One fetch
//! runs at a time, and the cache is not locked across it: while the provider answers (up to
//! the fetch timeout), tokens of keys already cached verify at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::AuthError;

/// Keys older than this are fetched again (a provider may have revoked one).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);

/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Cached {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
    fetches: u64,
}

/// The keys behind one JWKS URL.
pub(crate) struct Jwks {
    url: String,
    min_refresh: Duration,
    http: reqwest::Client,
    cached: RwLock<Cached>,
    /// Held while a fetch runs, so that one fetch runs at a time; the cache's lock is not held
    /// across it, so tokens of keys already cached verify while the provider answers.
    fetching: Mutex<()>,
}

impl Jwks {
    /// The key set at `url`, fetched at most once per `min_refresh`.
    pub(crate) fn new(url: &str, min_refresh: Duration) -> Result<Self, AuthError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(AuthError::Keys(format!(
                "the JWKS URL must be http(s)://…, not {url:?}"
            )));
        }
        // reqwest's rustls takes the process's crypto provider: ring, as everywhere in the
        // workspace, unless one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::Keys(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            min_refresh,
            http,
            cached: RwLock::new(Cached::default()),
            fetching: Mutex::new(()),
        })
    }

    /// Times the key set was fetched.
    pub(crate) async fn fetches(&self) -> u64 {
        self.cached.read().await.fetches
    }

    /// The key `kid` for a token signed with `alg`.
    pub(crate) async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        if let Some(found) = self.cached_key(kid, alg).await {
            return found;
        }
        let _one_fetch_at_a_time = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let due = {
            let cached = self.cached.read().await;
            let due = cached
                .fetched
                .is_none_or(|at| at.elapsed() >= self.min_refresh);
            let known = cached.keys.contains_key(kid) && is_fresh(&cached);
            due && !known
        };
        if due {
            {
                let mut cached = self.cached.write().await;
                cached.fetches += 1;
                cached.fetched = Some(Instant::now());
            }
            match self.fetch().await {
                Ok(keys) => self.cached.write().await.keys = keys,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "cannot fetch the identity provider's keys; keeping the ones fetched before");
                }
            }
        }
        let cached = self.cached.read().await;
        pick(&cached.keys, kid, alg).unwrap_or(Err(AuthError::UnknownKey))
    }

    /// The key `kid` from a cache young enough to trust, if it holds it.
    async fn cached_key(
        &self,
        kid: &str,
        alg: Algorithm,
    ) -> Option<Result<DecodingKey, AuthError>> {
        let cached = self.cached.read().await;
        if is_fresh(&cached) {
            pick(&cached.keys, kid, alg)
        } else {
            None
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| format!("not a JWK set: {}", e.without_url()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (&jwk.common.key_id, algorithm_of(jwk)) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), (key, alg));
            }
        }
        Ok(keys)
    }
}

/// Whether the cache was fetched less than [`MAX_AGE`] ago.
fn is_fresh(cached: &Cached) -> bool {
    cached.fetched.is_some_and(|at| at.elapsed() < MAX_AGE)
}

/// The cached key `kid`, if any: refused when the token's `alg` is not the key's.
fn pick(
    keys: &HashMap<String, (DecodingKey, Algorithm)>,
    kid: &str,
    alg: Algorithm,
) -> Option<Result<DecodingKey, AuthError>> {
    let (key, expected) = keys.get(kid)?;
    Some(if *expected == alg {
        Ok(key.clone())
    } else {
        Err(AuthError::Algorithm)
    })
}

/// The algorithm a JWK's tokens are signed with: its `alg`, else its key type (RSA: RS256,
/// P-256: ES256). Only RS256 and ES256 are accepted.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
            if p.curve == EllipticCurve::P256 =>
        {
            Some(Algorithm::ES256)
        }
        (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        _ => None,
    }
}
