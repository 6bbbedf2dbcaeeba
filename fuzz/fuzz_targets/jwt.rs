//! Any bytes as a bearer token: refused (no fuzzer can sign with the secret) with one of the
//! fixed reasons, none of which carries anything of the token, never a panic.
#![no_main]

use std::sync::OnceLock;

use agent_auth::{Auth, AuthError};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    let auth = AUTH.get_or_init(|| Auth::from_secret(b"fuzz-secret-fuzz-secret-fuzz-sec", false));
    let token = String::from_utf8_lossy(data);
    let refused = runtime().block_on(auth.verify(&token));
    match refused.expect_err("a token no one signed was accepted") {
        AuthError::MissingClaim(claim) => assert!(["sub", "exp"].contains(&claim.as_str())),
        AuthError::Malformed | AuthError::Algorithm | AuthError::BadSignature => {}
        other => panic!("an unsigned token refused as {other:?}"),
    }
});
