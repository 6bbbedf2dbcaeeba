//! The server's address, checked once and then turned into the WebSocket URL (`/ws`, with the
//! resume parameters) and the HTTP URLs (`/dev/token`).
//!
//! A caller names the server, not an endpoint: `http://host:port`, `ws://host:port` (the same
//! server), optionally with a path prefix the server is mounted under; `/ws` is implied, and a
//! URL that already ends in `/ws` means the same. A URL never carries the token: it goes in the
//! `Authorization` header, so a URL may be logged freely, and a query or credentials in the URL
//! are refused rather than silently dropped.

use std::fmt;

use ::url::Url;
use agent_protocol::ResumeParams;

use crate::error::ClientError;

/// A checked server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// `http` or `https`, host, port, and the path prefix ending in `/`.
    base: Url,
}

impl ServerUrl {
    /// Checks `raw` (see the module documentation for what is accepted).
    pub(crate) fn parse(raw: &str) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: raw.to_owned(),
            reason,
        };
        if !raw.contains("://") {
            return Err(invalid(format!(
                "it has no scheme; write http://{raw} (or ws://{raw})"
            )));
        }
        let mut url = Url::parse(raw).map_err(|e| invalid(format!("not a URL ({e})")))?;
        let secure = match url.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => {
                return Err(invalid(format!(
                    "the scheme {other}:// is not supported; use http://HOST:PORT or ws://HOST:PORT"
                )));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not used; pass the token to the client instead".into(),
            ));
        }
        if url.query().is_some() {
            return Err(invalid(
                "it must not have a query: the token goes in the Authorization header, and the client adds the resume parameters itself".into(),
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid("it must not have a #fragment".into()));
        }
        let path = url.path().trim_end_matches('/');
        let prefix = path.strip_suffix("/ws").unwrap_or(path).to_owned();
        url.set_path(&format!("{prefix}/"));
        let scheme = if secure { "https" } else { "http" };
        url.set_scheme(scheme)
            .map_err(|()| invalid(format!("cannot use it as {scheme}://")))?;
        Ok(Self { base: url })
    }

    /// Refuses `wss://` when this build cannot speak TLS.
    pub(crate) fn check_websocket_support(&self) -> Result<(), ClientError> {
        if self.is_secure() && !cfg!(feature = "tls") {
            return Err(ClientError::InvalidUrl {
                url: self.to_string(),
                reason: "wss:// needs agent-client's `tls` cargo feature".into(),
            });
        }
        Ok(())
    }

    fn is_secure(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// The WebSocket URL, with the resume parameters when resuming. It holds no secret.
    pub(crate) fn websocket(&self, resume: Option<&ResumeParams>) -> String {
        let mut url = self.base.clone();
        // Both schemes are "special" in the URL standard, so switching between them works.
        let _same_kind = url.set_scheme(if self.is_secure() { "wss" } else { "ws" });
        url.set_path(&format!("{}ws", self.base.path()));
        if let Some(resume) = resume {
            url.set_query(Some(&resume.to_query()));
        }
        url.into()
    }

    /// The HTTP URL of `path` (relative, like `dev/token`) on this server.
    #[cfg_attr(not(feature = "dev-token"), allow(dead_code))]
    pub(crate) fn http(&self, path: &str) -> String {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        url.into()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.websocket(None))
    }
}

#[cfg(test)]
mod tests {
    use agent_protocol::Epoch;

    use super::*;

    /// Parses `raw` and compares the WebSocket and dev token URLs, or the error's reason.
    fn check(raw: &str, expected: Result<(&str, &str), &str>) {
        let got = ServerUrl::parse(raw).and_then(|url| {
            url.check_websocket_support()?;
            Ok((url.websocket(None), url.http("dev/token")))
        });
        match (&got, expected) {
            (Ok((ws, dev)), Ok((want_ws, want_dev))) => {
                assert_eq!((ws.as_str(), dev.as_str()), (want_ws, want_dev), "{raw}");
            }
            (Err(ClientError::InvalidUrl { reason, .. }), Err(fragment)) => {
                assert!(
                    reason.contains(fragment),
                    "{raw}: {reason:?} lacks {fragment:?}"
                );
            }
            _ => panic!("{raw}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn url_table() {
        let plain = ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/dev/token");
        check("http://127.0.0.1:8080", Ok(plain));
        check("http://127.0.0.1:8080/", Ok(plain));
        check("ws://127.0.0.1:8080", Ok(plain));
        check("ws://127.0.0.1:8080/ws", Ok(plain));
        check("ws://127.0.0.1:8080/ws/", Ok(plain));
        check(
            "http://example.com",
            Ok(("ws://example.com/ws", "http://example.com/dev/token")),
        );
        check(
            "http://[::1]:9000/agents/",
            Ok((
                "ws://[::1]:9000/agents/ws",
                "http://[::1]:9000/agents/dev/token",
            )),
        );
        check(
            "127.0.0.1:8080",
            Err("no scheme; write http://127.0.0.1:8080"),
        );
        check("ftp://host:21", Err("ftp:// is not supported"));
        check("http://", Err("not a URL"));
        check("http://alice:pw@host:1", Err("credentials"));
        check("http://host:1/ws?token=abc", Err("must not have a query"));
        check("http://host:1/#x", Err("#fragment"));
        check("not a url://x", Err("not a URL"));
        if cfg!(feature = "tls") {
            check(
                "wss://example.com",
                Ok(("wss://example.com/ws", "https://example.com/dev/token")),
            );
        } else {
            check("wss://example.com", Err("`tls` cargo feature"));
            check("https://example.com:8443", Err("`tls` cargo feature"));
        }
    }

    #[test]
    fn https_serves_dev_tokens_without_the_tls_feature() {
        let url = ServerUrl::parse("https://example.com").unwrap();
        assert_eq!(url.http("dev/token"), "https://example.com/dev/token");
    }

    #[test]
    fn resume_parameters_go_in_the_query() {
        let url = ServerUrl::parse("http://127.0.0.1:8080").unwrap();
        let resume = ResumeParams {
            epoch: Epoch::new("ep_1"),
            after_seq: 41,
        };
        assert_eq!(
            url.websocket(Some(&resume)),
            "ws://127.0.0.1:8080/ws?epoch=ep_1&after_seq=41"
        );
    }
}
