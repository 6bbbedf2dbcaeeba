//! Identity providers: RS256 and ES256 tokens verified with a public key file and with a
//! JWKS served by the test (cached, fetched again for a rotated key, never more often than the
//! minimum interval however many unknown key ids arrive), `iss` and `aud` checked when
//! configured, and an RS256 token that gets a socket on a real server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_server::auth::{Auth, AuthError, Identity};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::server_support::{Client, now_secs, start_server};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A signing key of the test's identity provider.
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Signer {
    fn rsa(file: &str, kid: &'static str) -> Self {
        Self {
            key: EncodingKey::from_rsa_pem(&fixture(file)).unwrap(),
            alg: Algorithm::RS256,
            kid,
        }
    }

    fn ec(kid: &'static str) -> Self {
        Self {
            key: EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap(),
            alg: Algorithm::ES256,
            kid,
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    /// A token for `claims`, naming its key id when `with_kid`.
    fn sign(&self, claims: &Value, with_kid: bool) -> String {
        let mut header = Header::new(self.alg);
        header.kid = with_kid.then(|| self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "idp-user", "exp": now_secs() + 600});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

/// A JWKS endpoint whose key set the test changes, counting the fetches.
struct JwksServer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    /// While closed, a fetch waits at the provider (a slow provider) until it opens.
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl JwksServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::watch::Sender::new(true));
        let (served, counted, open) = (Arc::clone(&keys), Arc::clone(&fetches), gate.subscribe());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let set = JwkSet {
                    keys: served.lock().clone(),
                };
                let mut open = open.clone();
                async move {
                    let _ = open.wait_for(|open| *open).await;
                    axum::Json(set)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            keys,
            fetches,
            gate,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}

fn user(got: Result<core_context::UserId, AuthError>) -> Result<String, AuthError> {
    got.map(|u| u.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_files_verify_rs256_and_es256_tokens() {
    let rsa = Signer::rsa("rsa-private.pem", "r1");
    let ec = Signer::ec("e1");
    let by_file = |file: &str| {
        Auth::from_identity(&Identity {
            public_key_pem: Some(fixture(file)),
            ..Identity::default()
        })
        .unwrap()
    };
    let (rsa_auth, ec_auth) = (by_file("rsa-public.pem"), by_file("ec-public.pem"));
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let other_rsa = Signer::rsa("rsa2-private.pem", "r2");
    let table: Vec<(&Auth, String, Result<String, AuthError>)> = vec![
        (
            &rsa_auth,
            rsa.sign(&claims(json!({})), false),
            Ok("idp-user".into()),
        ),
        (
            &ec_auth,
            ec.sign(&claims(json!({})), false),
            Ok("idp-user".into()),
        ),
        (
            &rsa_auth,
            ec.sign(&claims(json!({})), false),
            Err(AuthError::Algorithm),
        ),
        (&rsa_auth, hs256, Err(AuthError::Algorithm)),
        (
            &rsa_auth,
            other_rsa.sign(&claims(json!({})), false),
            Err(AuthError::BadSignature),
        ),
        (
            &rsa_auth,
            rsa.sign(&json!({"sub": "idp-user", "exp": now_secs() - 3600}), false),
            Err(AuthError::Expired),
        ),
    ];
    for (i, (auth, token, expected)) in table.into_iter().enumerate() {
        assert_eq!(user(auth.verify(&token).await), expected, "case {i}");
    }
    let bad = Auth::from_identity(&Identity {
        public_key_pem: Some(
            b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n".to_vec(),
        ),
        ..Identity::default()
    });
    assert!(
        matches!(bad, Err(AuthError::Keys(_))),
        "a bad key file is refused at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_is_cached_refetched_for_a_rotated_key_and_at_a_bounded_rate() {
    let (rsa, ec, rotated) = (
        Signer::rsa("rsa-private.pem", "r1"),
        Signer::ec("e1"),
        Signer::rsa("rsa2-private.pem", "r2"),
    );
    let idp = JwksServer::start(vec![rsa.jwk(), ec.jwk()]).await;
    let identity = |min_refresh: Duration| Identity {
        jwks_url: Some(idp.url()),
        jwks_min_refresh: min_refresh,
        ..Identity::default()
    };
    let auth = Auth::from_identity(&identity(Duration::ZERO)).unwrap();
    for signer in [&rsa, &ec, &rsa] {
        let token = signer.sign(&claims(json!({})), true);
        assert_eq!(user(auth.verify(&token).await), Ok("idp-user".into()));
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "the keys are cached");
    let unsigned_kid = rsa.sign(&claims(json!({})), false);
    assert_eq!(
        user(auth.verify(&unsigned_kid).await),
        Err(AuthError::UnknownKey)
    );
    // The provider rotates: a token with the new key id makes the server fetch again.
    idp.keys.lock().push(rotated.jwk());
    let token = rotated.sign(&claims(json!({})), true);
    assert_eq!(user(auth.verify(&token).await), Ok("idp-user".into()));
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);

    // With a minimum interval, a flood of made-up key ids fetches once.
    let bounded = Auth::from_identity(&identity(Duration::from_secs(3600))).unwrap();
    let before = idp.fetches.load(Ordering::SeqCst);
    for i in 0..50 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("made-up-{i}"));
        let forged = jsonwebtoken::encode(&header, &claims(json!({})), &rsa.key).unwrap();
        assert_eq!(
            user(bounded.verify(&forged).await),
            Err(AuthError::UnknownKey)
        );
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), before + 1);
    assert_eq!(bounded.jwks_fetches().await, 1);
}

/// While the provider is slow to answer a fetch (a rotated key), tokens of keys already
/// cached verify at once: the fetch does not hold the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fetch_does_not_hold_up_tokens_of_cached_keys() {
    let (rsa, rotated) = (
        Signer::rsa("rsa-private.pem", "r1"),
        Signer::rsa("rsa2-private.pem", "r2"),
    );
    let idp = JwksServer::start(vec![rsa.jwk()]).await;
    let auth = Arc::new(
        Auth::from_identity(&Identity {
            jwks_url: Some(idp.url()),
            jwks_min_refresh: Duration::ZERO,
            ..Identity::default()
        })
        .unwrap(),
    );
    let cached = rsa.sign(&claims(json!({})), true);
    assert_eq!(user(auth.verify(&cached).await), Ok("idp-user".into()));
    // The provider rotates and becomes slow: the new key's token starts a fetch that waits.
    idp.gate.send_replace(false);
    idp.keys.lock().push(rotated.jwk());
    let waiting = {
        let (auth, token) = (Arc::clone(&auth), rotated.sign(&claims(json!({})), true));
        tokio::spawn(async move { user(auth.verify(&token).await) })
    };
    while idp.fetches.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The fetch is held at the provider; a cached key's token is not held behind it (the
    // timeout only turns a hang into a failure).
    let verified = tokio::time::timeout(Duration::from_secs(10), auth.verify(&cached)).await;
    assert_eq!(verified.map(user), Ok(Ok("idp-user".into())));
    assert!(!waiting.is_finished(), "the fetch was not held");
    idp.gate.send_replace(true);
    assert_eq!(waiting.await.unwrap(), Ok("idp-user".into()));
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let rsa = Signer::rsa("rsa-private.pem", "r1");
    let auth = Auth::from_identity(&Identity {
        public_key_pem: Some(fixture("rsa-public.pem")),
        issuer: Some("https://idp.example".into()),
        audience: Some("agent-server".into()),
        ..Identity::default()
    })
    .unwrap();
    let table = [
        (
            json!({"iss": "https://idp.example", "aud": "agent-server"}),
            Ok("idp-user".to_owned()),
        ),
        (
            json!({"iss": "https://idp.example", "aud": ["other", "agent-server"]}),
            Ok("idp-user".to_owned()),
        ),
        (
            json!({"iss": "https://evil.example", "aud": "agent-server"}),
            Err(AuthError::Issuer),
        ),
        (
            json!({"iss": "https://idp.example", "aud": "another-service"}),
            Err(AuthError::Audience),
        ),
        (
            json!({"aud": "agent-server"}),
            Err(AuthError::MissingClaim("iss".into())),
        ),
        (
            json!({"iss": "https://idp.example"}),
            Err(AuthError::MissingClaim("aud".into())),
        ),
    ];
    for (extra, expected) in table {
        let token = rsa.sign(&claims(extra.clone()), false);
        assert_eq!(user(auth.verify(&token).await), expected, "{extra}");
    }
}

/// Over a real server: an identity provider's token gets a socket, a forged one gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_jwks_accepts_the_providers_tokens() {
    let rsa = Signer::rsa("rsa-private.pem", "r1");
    let idp = JwksServer::start(vec![rsa.jwk()]).await;
    let url = idp.url();
    let server = start_server(move |config| {
        config.jwt_secret = None;
        config.identity.jwks_url = Some(url);
        config.identity.audience = Some("agent-server".into());
    })
    .await;
    let token = rsa.sign(&claims(json!({"aud": "agent-server"})), true);
    let client = Client::connect(server.addr(), &token, None).await.unwrap();
    assert_eq!(client.established["user_id"], "idp-user");
    let forged =
        Signer::rsa("rsa2-private.pem", "r1").sign(&claims(json!({"aud": "agent-server"})), true);
    match Client::connect(server.addr(), &forged, None).await {
        Err(crate::server_support::ConnectError::Http(status, body)) => {
            assert_eq!(status, 401, "{body}");
        }
        Err(other) => panic!("expected 401, got {other:?}"),
        Ok(_) => panic!("a forged token got a socket"),
    }
    drop(client);
    server.shutdown().await;
}
