//! [`ClientError`]: everything that can go wrong between an application and the server, as one
//! enum whose messages say what happened and what to do about it.
//!
//! The variants fall in three groups: the request never reached a server (a bad URL or
//! configuration, an unreachable host, an HTTP refusal), the server refused a request
//! (`error` frames, with the protocol's [`ErrorCode`]), and the connection or the stream ended
//! (a dropped socket while a request was in flight, a close the client must not resume after,
//! reconnecting given up). [`ClientError::is_retryable`] tells the two kinds of connect failure
//! apart, and it is what the client's own reconnect loop uses.

use std::time::Duration;

use agent_protocol::http::HttpError;
use agent_protocol::{CloseCode, ErrorCode};

/// Why a call of the client failed, or why its event stream ended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it and what to write instead.
        reason: String,
    },
    /// A [`ClientConfig`](crate::ClientConfig) setting is out of range.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// No connection could be made (DNS, TCP, TLS, or the WebSocket handshake failed).
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable {
        /// Where the client tried to connect (never with the token).
        url: String,
        /// The transport's explanation.
        reason: String,
    },
    /// The server answered an HTTP request (the WebSocket upgrade, or `POST /dev/token`) with
    /// a refusal: 401 for a missing, bad or expired token, 400 for bad parameters, 429 when the
    /// user has too many open connections.
    #[error("the server refused with HTTP {status} ({}): {}{}", .error.error, .error.message, refusal_hint(*.status))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's JSON body. A body that is not one (from a proxy, say) is kept as the
        /// message, with a code derived from the status.
        error: HttpError,
    },
    /// `POST /dev/token` does not exist on this server.
    #[error(
        "dev tokens are off at {url}: this server has a configured secret, so POST /dev/token does not exist; ask its operator for a token (a JWT signed with that secret)"
    )]
    DevTokensOff {
        /// The dev token URL that answered 404.
        url: String,
    },
    /// The server answered a request with an `error` frame.
    #[error("the server refused the request ({code}): {message}")]
    Server {
        /// What kind of refusal; codes this version does not name are [`ErrorCode::Other`].
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The socket dropped after the request was sent and before its answer arrived. The
    /// request may or may not have taken effect, so the client does not send it again: a
    /// `start_agent` that did start a run shows up in the event stream after the reconnect.
    #[error(
        "the connection dropped before the server answered; the request may or may not have taken effect (a run it started shows up in the event stream), so it was not sent again"
    )]
    ConnectionLost,
    /// The request was made while the client was reconnecting; it was not sent.
    #[error(
        "not connected: the client is reconnecting and did not send the request; retry once the stream continues"
    )]
    NotConnected,
    /// Something did not happen in time.
    #[error("no {what} within {after:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long the client waited.
        after: Duration,
    },
    /// The server closed the connection with a code after which resuming makes no sense.
    #[error("the server closed the connection with code {code} ({reason}){}", close_hint(*.code))]
    ClosedByServer {
        /// The close frame's code (1005 when it had none).
        code: u16,
        /// The close frame's reason.
        reason: String,
    },
    /// Reconnecting failed [`Backoff::max_attempts`](crate::Backoff::max_attempts) times in a row.
    #[error("gave up reconnecting after {attempts} attempts; the last one failed: {last}")]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: Box<ClientError>,
    },
    /// The server sent something protocol v1 does not allow.
    #[error("the server broke protocol v1: {0}")]
    Protocol(String),
    /// The client was closed, or its stream ended (the reason was returned by
    /// [`Client::next_item`](crate::Client::next_item)).
    #[error("the client is closed: it was closed by the application or its stream ended")]
    Closed,
}

impl ClientError {
    /// The protocol's code for a refusal: the `code` of an `error` frame, or the `error` of an
    /// HTTP refusal body.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            ClientError::Refused { error, .. } => Some(&error.error),
            _ => None,
        }
    }

    /// Whether connecting again later may succeed without changing anything: the server was
    /// unreachable, busy (429, 5xx), slow, or closed the socket for a transient reason. A bad
    /// URL, a refused token (401), bad parameters (400) or a policy close (1008) is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::ConnectionLost
            | ClientError::NotConnected => true,
            ClientError::Refused { status, .. } => *status == 429 || *status >= 500,
            ClientError::ClosedByServer { code, .. } => close_is_resumable(*code),
            _ => false,
        }
    }
}

/// Whether the client reconnects and resumes after the server closed with `code`.
///
/// It does after the codes the protocol says to resume after (1001 shutdown, 4008 slow
/// consumer, 4009 stream reset, 4000 idle), after transient server-side codes (1011, 1012, 1013), and after
/// codes it does not know. It does not after the client broke a rule or sent something the
/// server cannot take (1002, 1003, 1007, 1008, 1009): doing the same again would fail again.
pub(crate) fn close_is_resumable(code: u16) -> bool {
    let close = CloseCode::from_code(code);
    if close.should_resume() {
        return true;
    }
    !matches!(
        close,
        CloseCode::PolicyViolation
            | CloseCode::MessageTooBig
            | CloseCode::Other(1002 | 1003 | 1007)
    )
}

/// What to do after an HTTP refusal, by status.
fn refusal_hint(status: u16) -> &'static str {
    match status {
        401 => "; get a new token (connecting again with this one fails the same way)",
        429 => "; close another connection of this user, or wait, then connect again",
        _ => "",
    }
}

/// What to do after a close the client does not resume after, by code.
fn close_hint(code: u16) -> &'static str {
    match CloseCode::from_code(code) {
        CloseCode::PolicyViolation => {
            "; the client broke a server policy (too many frames, or too many connections of this user): slow down before connecting again"
        }
        CloseCode::MessageTooBig => "; a frame was far over the server's frame limit",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_table() {
        let check = |code: u16, resumable: bool| {
            assert_eq!(close_is_resumable(code), resumable, "close code {code}");
        };
        for code in [1000, 1001, 1006, 1011, 1012, 1013, 4000, 4008, 4009, 4999] {
            check(code, true);
        }
        for code in [1002, 1003, 1007, 1008, 1009] {
            check(code, false);
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let check = |error: ClientError, fragments: &[&str]| {
            let text = error.to_string();
            for fragment in fragments {
                assert!(text.contains(fragment), "{text:?} lacks {fragment:?}");
            }
        };
        check(
            ClientError::Refused {
                status: 401,
                error: HttpError {
                    error: ErrorCode::Unauthorized,
                    message: "the token has expired".into(),
                },
            },
            &[
                "HTTP 401 (unauthorized): the token has expired",
                "new token",
            ],
        );
        check(
            ClientError::ClosedByServer {
                code: 1008,
                reason: "too many messages".into(),
            },
            &["code 1008 (too many messages)", "slow down"],
        );
        check(
            ClientError::ReconnectFailed {
                attempts: 3,
                last: Box::new(ClientError::Timeout {
                    what: "connection",
                    after: Duration::from_secs(1),
                }),
            },
            &["after 3 attempts", "no connection within 1s"],
        );
    }

    #[test]
    fn retryable_table() {
        let refused = |status| ClientError::Refused {
            status,
            error: HttpError {
                error: ErrorCode::Other(String::new()),
                message: String::new(),
            },
        };
        let table = [
            (refused(401), false),
            (refused(400), false),
            (refused(404), false),
            (refused(429), true),
            (refused(503), true),
            (ClientError::ConnectionLost, true),
            (ClientError::Protocol(String::new()), false),
            (
                ClientError::ClosedByServer {
                    code: 4008,
                    reason: String::new(),
                },
                true,
            ),
            (
                ClientError::ClosedByServer {
                    code: 1008,
                    reason: String::new(),
                },
                false,
            ),
        ];
        for (error, retryable) in table {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
    }
}
