//! `agent-server token`: mints a token with the server's configured secret, so an operator
//! (or a test, or a script) can act as a user without the dev token endpoint.

use std::time::Duration;

use clap::Args;
use core_context::UserId;

use crate::auth::Auth;
use crate::config::MIN_SECRET_LEN;

/// The longest validity a minted token may have.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

/// Flags of `agent-server token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token names (its `sub`).
    #[arg(long)]
    pub user: String,
    /// How long the token is valid (`30m`, `1h`, `7d`; at most a year).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The server's HS256 secret (the same as `serve`'s).
    #[arg(long, env = "AGENT_SERVER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// A token for `args.user`, signed with `args.jwt_secret`; `Err` says what was wrong.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    if args.jwt_secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the JWT secret (--jwt-secret / AGENT_SERVER_JWT_SECRET) is {} bytes; the server needs at least {MIN_SECRET_LEN}",
            args.jwt_secret.len()
        ));
    }
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        return Err(format!(
            "--ttl {} is out of range: from 1s to 365d",
            humantime::format_duration(args.ttl)
        ));
    }
    let user = UserId::parse(&args.user).map_err(|e| format!("--user {:?}: {e}", args.user))?;
    Auth::from_secret(args.jwt_secret.as_bytes(), false)
        .issue(&user, args.ttl)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: &str, ttl: Duration, secret: &str) -> TokenArgs {
        TokenArgs {
            user: user.into(),
            ttl,
            jwt_secret: secret.into(),
        }
    }

    #[tokio::test]
    async fn minted_tokens_verify_and_bad_input_is_named() {
        let secret = "s".repeat(32);
        let token = mint(&args("alice", Duration::from_secs(60), &secret)).unwrap();
        let auth = Auth::from_secret(secret.as_bytes(), false);
        assert_eq!(auth.verify(&token).await.unwrap().as_str(), "alice");
        let other = Auth::from_secret("t".repeat(32).as_bytes(), false);
        assert!(
            other.verify(&token).await.is_err(),
            "another secret must not verify it"
        );
        let table = [
            (
                args("alice", Duration::from_secs(60), "short"),
                "is 5 bytes",
            ),
            (
                args("alice", Duration::ZERO, &secret),
                "--ttl 0s is out of range",
            ),
            (args("alice", MAX_TTL * 2, &secret), "is out of range"),
            (
                args("not a user!", Duration::from_secs(60), &secret),
                "--user \"not a user!\"",
            ),
        ];
        for (bad, fragment) in table {
            let error = mint(&bad).unwrap_err();
            assert!(error.contains(fragment), "{error:?} lacks {fragment:?}");
        }
    }
}
