//! `--allowed-origins`: which browser origins may use the API and open sockets: the server's
//! own (the `Origin` names the `Host` the request was sent to, over plain HTTP), plus the
//! listed ones.
//!
//! Browsers send `Origin` on every WebSocket upgrade and on every cross-origin request, so a
//! page of another site that holds (or guesses its way to) a user's token is refused by the
//! HTTP edge (`http_guard`), which asks [`AllowedOrigins::allows`]. Clients that are not
//! browsers (the CLI, `agent-client`, loadgen, curl) send no `Origin` and are not affected:
//! they are authenticated by their token alone. The list is a setting, so it lives with the
//! configuration, which the edge depends on and not the other way round.

use axum::http::HeaderValue;
use axum::http::uri::Authority;

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// `*` was given: any origin may call (unsafe outside development).
    any: bool,
    /// Normalized `scheme://host[:port]` values (lowercase, default ports left out), as
    /// browsers write them in `Origin`.
    listed: Vec<String>,
}

/// Why an `--allowed-origins` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--allowed-origins (AGENT_SERVER_ALLOWED_ORIGINS) {value:?} is not an origin: {why}; write scheme://host[:port], \
     such as https://chat.example.com or http://localhost:3000 (no path, no trailing slash), or * for any origin (unsafe)"
)]
pub struct OriginError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl AllowedOrigins {
    /// Reads the `--allowed-origins` values; each may hold several separated by `,` or `;`.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, OriginError> {
        let mut allowed = Self::default();
        let pieces = values
            .iter()
            .flat_map(|v| v.as_ref().split([',', ';']))
            .map(str::trim)
            .filter(|v| !v.is_empty());
        for value in pieces {
            if value == "*" {
                allowed.any = true;
            } else {
                let origin = normalize(value).map_err(|why| OriginError {
                    value: value.to_owned(),
                    why,
                })?;
                if !allowed.listed.contains(&origin) {
                    allowed.listed.push(origin);
                }
            }
        }
        Ok(allowed)
    }

    /// Whether any origin is allowed (`*`).
    pub fn any(&self) -> bool {
        self.any
    }

    /// The listed origins, normalized.
    pub fn listed(&self) -> &[String] {
        &self.listed
    }

    /// Whether `origin` is on the list (or the list is `*`); the server's own origin is
    /// checked by [`AllowedOrigins::allows`].
    pub fn lists(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        normalize(origin).is_ok_and(|o| self.listed.contains(&o))
    }

    /// Whether a request with `Origin: origin` sent to `Host: host` may go on: it is the
    /// server's own page, or a listed origin.
    pub fn allows(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        same_origin(origin, host) || self.lists(origin)
    }
}

/// Whether `origin` is `http://` + the request's `Host` (the server speaks plain HTTP; behind
/// a proxy that terminates TLS the public origin is `https://…` and must be listed).
fn same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    match (normalize(origin), normalize(&format!("http://{host}"))) {
        (Ok(origin), Ok(own)) => origin == own,
        _ => false,
    }
}

/// `scheme://host[:port]` lowercased with the scheme's default port left out, or why it is
/// not an origin.
fn normalize(value: &str) -> Result<String, &'static str> {
    let (scheme, rest) = value
        .split_once("://")
        .ok_or("it has no scheme (http:// or https://)")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err("the scheme is neither http nor https"),
    };
    if rest.is_empty() {
        return Err("it has no host");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment");
    }
    if rest.contains('@') {
        return Err("an origin has no user name or password");
    }
    let authority: Authority = rest.parse().map_err(|_| "the host or port is malformed")?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err("it has no host");
    }
    // The port is what follows the host (an IPv6 host is in brackets, with colons inside).
    let after_host = rest.rsplit_once(']').map_or(rest, |(_, tail)| tail);
    let port = match after_host.rsplit_once(':') {
        None => default_port,
        Some((_, "")) => return Err("the port is empty"),
        Some((_, digits)) => digits
            .parse::<u16>()
            .map_err(|_| "the port is not a number from 0 to 65535")?,
    };
    Ok(if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(value: &str, expected: Result<&[&str], &str>) {
        let got = AllowedOrigins::parse(&[value]);
        match expected {
            Ok(listed) => assert_eq!(got.unwrap().listed, listed, "{value}"),
            Err(why) => {
                let error = got.unwrap_err();
                assert_eq!(error.why, why, "{value}");
                assert!(error.to_string().contains("--allowed-origins"), "{error}");
            }
        }
    }

    #[test]
    fn values_are_origins_normalized_as_browsers_write_them() {
        check_parse(
            "https://Chat.Example.com",
            Ok(&["https://chat.example.com"]),
        );
        check_parse("https://a.example:443", Ok(&["https://a.example"]));
        check_parse("http://localhost:3000", Ok(&["http://localhost:3000"]));
        check_parse("http://[::1]:8080", Ok(&["http://[::1]:8080"]));
        check_parse(
            "http://a.test;https://b.test, http://a.test",
            Ok(&["http://a.test", "https://b.test"]),
        );
        check_parse(
            "chat.example.com",
            Err("it has no scheme (http:// or https://)"),
        );
        check_parse("ftp://x", Err("the scheme is neither http nor https"));
        check_parse(
            "https://x/",
            Err("an origin has no path, query or fragment"),
        );
        check_parse(
            "https://u:p@x",
            Err("an origin has no user name or password"),
        );
        check_parse(
            "https://x:99999",
            Err("the port is not a number from 0 to 65535"),
        );
        check_parse("https://x y", Err("the host or port is malformed"));
        check_parse("https://", Err("it has no host"));
        check_parse("https://x:", Err("the port is empty"));
    }

    fn check(allowed: &[&str], origin: &str, host: Option<&str>, expected: bool) {
        let allowed = AllowedOrigins::parse(allowed).unwrap();
        let origin = HeaderValue::from_str(origin).unwrap();
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        assert_eq!(
            allowed.allows(&origin, host.as_ref()),
            expected,
            "{allowed:?} {origin:?} {host:?}"
        );
    }

    #[test]
    fn the_servers_own_origin_and_listed_ones_are_allowed() {
        check(&[], "http://127.0.0.1:8080", Some("127.0.0.1:8080"), true);
        check(&[], "http://Example.com", Some("example.com:80"), true);
        check(&[], "http://127.0.0.1:8081", Some("127.0.0.1:8080"), false);
        check(&[], "https://127.0.0.1:8080", Some("127.0.0.1:8080"), false);
        check(&[], "http://evil.test", Some("127.0.0.1:8080"), false);
        check(&[], "null", Some("127.0.0.1:8080"), false);
        check(&[], "http://127.0.0.1:8080", None, false);
        check(
            &["https://chat.example.com"],
            "https://chat.example.com",
            Some("10.0.0.5:8080"),
            true,
        );
        check(
            &["https://chat.example.com"],
            "https://chat.example.com:8443",
            None,
            false,
        );
        check(&["*"], "http://anything.test", None, true);
    }
}
