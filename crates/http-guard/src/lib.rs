//! The HTTP edge: what every response carries for browsers, and the checks API requests pass
//! before their handler runs.
//!
//! - Every response: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY` and the [`CONTENT_SECURITY_POLICY`], which lets a page run only
//!   this server's own scripts and styles and talk only to this server (the chat page has no
//!   inline script or style; a JSON answer under the same policy cannot be made to run
//!   anything either).
//! - `/ws`, `/v1/*`, `/agui/*` and `POST /dev/token`: a request whose `Origin` is neither the
//!   server's own nor listed in `--allowed-origins` is refused with 403 `origin_not_allowed`
//!   ([`AllowedOrigins`], a setting). A request without `Origin` (a client that is not a
//!   browser) passes.
//! - `/v1/*` and `/agui/*`: CORS for the listed origins (preflights answered with
//!   `Authorization` and `Content-Type` allowed; a preflight from another origin gets the
//!   403 and no CORS header, so browsers send nothing after it), and rate limits per user and per address;
//!   `POST /dev/token`: a rate limit per address ([`rate`]). Over a limit: 429 `rate_limited`
//!   with `Retry-After`.
//!
//! - With dev tokens (a generated secret, on loopback), the same routes take only requests
//!   that name a loopback `Host` (`localhost`, `127.0.0.1`, `[::1]`), against DNS rebinding.
//!
//! The checks read an `Edge`, the few parts of the server's state they need, so the edge
//! does not depend on the state's owner (`app.rs`).
//!
//! **Architecture Invariant:** a page of another site never gets a socket or an API answer
//! with a user's token: browsers name the page's origin, and it is checked before the token.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_protocol::ErrorCode;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::MethodRouter;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use agent_auth::Auth;
use server_metrics::Metrics;

use crate::bearer::{authenticate, refuse};

pub mod bearer;
mod origins;
pub mod rate;

pub use origins::{AllowedOrigins, OriginError};
pub use rate::{HttpLimits, HttpRates};

/// What the edge's checks read: taken from the server's state when the router is built, so
/// the edge depends on these parts and not on the state that holds them.
pub struct Edge {
    /// Browser origins allowed besides the server's own (`--allowed-origins`).
    pub allowed_origins: AllowedOrigins,
    /// Whether requests must name a loopback `Host`: dev tokens served on a loopback
    /// address (see `rebound_host`).
    pub loopback_only: bool,
    /// Verifies the token a per-user rate limit is keyed by.
    pub auth: Arc<Auth>,
    /// The HTTP API's rate limits (per user, per address).
    pub limits: Arc<HttpLimits>,
    /// Counts refusals and rate-limited requests.
    pub metrics: Arc<Metrics>,
}

/// The Content Security Policy of every response. `connect-src 'self'` covers `ws://` and
/// `wss://` to the page's own host and port (CSP level 3); images may be `data:` URLs (the
/// page's icon) but nothing from elsewhere, so an answer's markdown cannot load a tracking
/// image.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The guarded routes, as their metric label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// `/v1/*`: the history API and `/v1/me`.
    History,
    /// `POST /agui/{agent}`.
    Agui,
    /// `POST /dev/token`.
    DevToken,
    /// `GET /ws`: the origin check only (the connection cap bounds it).
    Socket,
}

impl Guarded {
    /// The `route` label of the rate-limit metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::History => "history",
            Self::Agui => "agui",
            Self::DevToken => "dev_token",
            Self::Socket => "ws",
        }
    }

    /// The flag that sets the limit a refusal names.
    fn flag(self, key: rate::Key) -> &'static str {
        match (self, key) {
            (Self::DevToken, _) => "--dev-token-rate-per-address-per-minute",
            (_, rate::Key::User) => "--http-rate-per-user-per-minute",
            (_, rate::Key::Address) => "--http-rate-per-address-per-minute",
        }
    }
}

/// The headers of every response, applied to the whole router.
pub fn with_security_headers<S>(router: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}

/// `route` behind the origin check and the rate limits of `guarded` (and CORS, for the API).
pub fn guard<S>(edge: &Arc<Edge>, guarded: Guarded, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    // The origin check is the outer layer, so a preflight from an origin that is not allowed
    // gets a 403 without any CORS header, and CORS answers only allowed ones.
    let route = match guarded {
        Guarded::History | Guarded::Agui => route.layer(cors(&edge.allowed_origins)),
        Guarded::DevToken | Guarded::Socket => route,
    };
    route.layer(from_fn_with_state((Arc::clone(edge), guarded), check))
}

/// CORS for the listed origins (the server's own page needs none).
fn cors(allowed: &AllowedOrigins) -> CorsLayer {
    let allowed = allowed.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            allowed.lists(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// The middleware: the origin, then the rate limits, then the handler.
async fn check(
    State((edge, guarded)): State<(Arc<Edge>, Guarded)>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refusal) = rebound_host(&edge, &request).or_else(|| foreign_origin(&edge, &request))
    {
        return refusal;
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let limited = match guarded {
        // A preflight (answered by CORS, cached by the browser for 10 minutes) is not counted.
        _ if request.method() == Method::OPTIONS => Ok(()),
        Guarded::Socket => Ok(()),
        Guarded::DevToken => address.map_or(Ok(()), |a| edge.limits.dev_token(a)),
        Guarded::History | Guarded::Agui => {
            // The per-user limit needs the verified user: a forged `sub` must not spend
            // someone else's requests. An invalid token counts against the address only, and
            // its handler answers 401.
            let user = if request.headers().contains_key(header::AUTHORIZATION) {
                authenticate(&edge.auth, request.headers(), &HashMap::new())
                    .await
                    .ok()
            } else {
                None
            };
            edge.limits.api(address, user.as_ref())
        }
    };
    match limited {
        Ok(()) => next.run(request).await,
        Err(limited) => {
            edge.metrics
                .http_rate_limited(guarded.label(), limited.key.label());
            too_many(guarded, limited)
        }
    }
}

/// The 403 of a request to a dev-token server (a generated secret, listening on loopback)
/// that does not name a loopback host, if it is one. A page of another site whose name its
/// owner pointed at 127.0.0.1 (DNS rebinding) is same-origin to the browser, `Origin` and
/// `Host` both naming that site; without this check it could take a token for any user from
/// `POST /dev/token` and use it.
fn rebound_host(edge: &Edge, request: &Request) -> Option<Response> {
    if !edge.loopback_only {
        return None;
    }
    let host = request.headers().get(header::HOST);
    if host.is_some_and(is_loopback_host) {
        return None;
    }
    let shown: String = host
        .map(|h| {
            String::from_utf8_lossy(h.as_bytes())
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(host = %shown, path = %request.uri().path(), "refused a request that names no loopback host");
    edge.metrics.refused(&ErrorCode::OriginNotAllowed);
    Some(refuse(
        StatusCode::FORBIDDEN,
        ErrorCode::OriginNotAllowed,
        format!(
            "this server hands out dev tokens and takes requests for localhost only, not for \
             {shown:?} (a site pointed at this machine could otherwise take tokens); use \
             http://localhost or http://127.0.0.1, or configure a secret (--jwt-secret)"
        ),
    ))
}

/// Whether `host` (a `Host` header: a name or address, and maybe a port) names this machine's
/// loopback: `localhost`, a name under `.localhost`, `127.0.0.0/8` or `[::1]`.
fn is_loopback_host(host: &HeaderValue) -> bool {
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`: the address is between the brackets.
        Some(rest) => rest.split_once(']').map_or("", |(address, _)| address),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The 403 of a request from a page of an origin that is not allowed, if it is one.
fn foreign_origin(edge: &Edge, request: &Request) -> Option<Response> {
    let origin = request.headers().get(header::ORIGIN)?;
    let host = request.headers().get(header::HOST);
    if edge.allowed_origins.allows(origin, host) {
        return None;
    }
    let shown: String = String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(200)
        .collect();
    tracing::info!(origin = %shown, path = %request.uri().path(), "refused a request from a foreign origin");
    edge.metrics.refused(&ErrorCode::OriginNotAllowed);
    Some(refuse(
        StatusCode::FORBIDDEN,
        ErrorCode::OriginNotAllowed,
        format!(
            "requests from pages of {shown:?} are not allowed: this server takes browser requests \
             from its own origin and from those listed with --allowed-origins (AGENT_SERVER_ALLOWED_ORIGINS)"
        ),
    ))
}

/// The 429 of a request over `limited`, with `Retry-After` in whole seconds.
fn too_many(guarded: Guarded, limited: rate::Limited) -> Response {
    let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let whose = match limited.key {
        rate::Key::User => "this user",
        rate::Key::Address => "this address",
    };
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!(
            "more than {} requests a minute from {whose} to {}; retry in {seconds} s (the limit is {})",
            limited.per_minute,
            describe(guarded),
            guarded.flag(limited.key),
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn describe(guarded: Guarded) -> &'static str {
    match guarded {
        Guarded::History | Guarded::Agui => "the HTTP API (/v1 and /agui together)",
        Guarded::DevToken => "POST /dev/token",
        Guarded::Socket => "GET /ws",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        let table = [
            ("localhost", true),
            ("localhost:8080", true),
            ("LOCALHOST.:8080", true),
            ("app.localhost:3000", true),
            ("127.0.0.1:8080", true),
            ("127.1.2.3", true),
            ("[::1]:8080", true),
            ("[::1]", true),
            ("evil.example:8080", false),
            ("localhost.evil.example", false),
            ("10.0.0.1:8080", false),
            ("[2001:db8::1]:80", false),
            ("", false),
        ];
        for (host, loopback) in table {
            let value = HeaderValue::from_str(host).unwrap();
            assert_eq!(is_loopback_host(&value), loopback, "{host}");
        }
    }
}
