//! One connection attempt: the WebSocket upgrade with the token in the `Authorization`
//! header, and the server's first frame, `connection_established`.
//!
//! The token lives in [`Endpoint`] only, whose `Debug` hides it; it never goes in a URL, an
//! error or a log line.

use std::fmt;
use std::time::Duration;

use agent_protocol::http::HttpError;
use agent_protocol::{Epoch, ErrorCode, ResumeParams, ResumeStatus, ServerFrame, ServerMessage};
use core_context::UserId;
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::url::ServerUrl;

/// An open WebSocket to the server.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to connect, and as whom.
pub(crate) struct Endpoint {
    pub(crate) url: ServerUrl,
    /// `Bearer <token>`, marked sensitive so that `http`'s own `Debug` hides it too.
    authorization: HeaderValue,
}

impl Endpoint {
    /// The server at `url`, with `token`.
    pub(crate) fn new(url: ServerUrl, token: &str) -> Result<Self, ClientError> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| {
                ClientError::InvalidConfig(
                    "the token has characters an HTTP header cannot carry; pass the JWT as issued"
                        .into(),
                )
            })?;
        authorization.set_sensitive(true);
        Ok(Self { url, authorization })
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.to_string())
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A connection that the server has greeted.
pub(crate) struct Opened {
    pub(crate) socket: Socket,
    pub(crate) user_id: UserId,
    pub(crate) epoch: Epoch,
    pub(crate) last_seq: u64,
    pub(crate) resume: Option<ResumeStatus>,
}

/// Connects to `endpoint`, resuming after `resume` when given, within `timeout`.
pub(crate) async fn open(
    endpoint: &Endpoint,
    resume: Option<&ResumeParams>,
    timeout: Duration,
) -> Result<Opened, ClientError> {
    let attempt = async {
        let socket = handshake(endpoint, resume).await?;
        greeting(endpoint, socket).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout {
            what: "connection",
            after: timeout,
        })?
}

async fn handshake(
    endpoint: &Endpoint,
    resume: Option<&ResumeParams>,
) -> Result<Socket, ClientError> {
    let url = endpoint.url.websocket(resume);
    let unreachable = |reason: String| ClientError::Unreachable {
        url: endpoint.url.to_string(),
        reason,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, endpoint.authorization.clone());
    // Events are small frames that should leave at once: no Nagle.
    match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(refusal(
            response.status().as_u16(),
            response.body().as_deref().unwrap_or_default(),
        )),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// Reads `connection_established`, skipping WebSocket pings.
async fn greeting(endpoint: &Endpoint, mut socket: Socket) -> Result<Opened, ClientError> {
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                return Err(ClientError::Unreachable {
                    url: endpoint.url.to_string(),
                    reason: format!("the connection failed before connection_established: {e}"),
                });
            }
            None => {
                return Err(ClientError::Unreachable {
                    url: endpoint.url.to_string(),
                    reason: "the connection closed before connection_established".into(),
                });
            }
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return Err(ClientError::ClosedByServer { code, reason });
            }
            _ => continue,
        };
        return match ServerMessage::parse(&text) {
            Ok(ServerMessage::Frame(ServerFrame::ConnectionEstablished {
                user_id,
                epoch,
                last_seq,
                resume,
                ..
            })) => Ok(Opened {
                socket,
                user_id,
                epoch,
                last_seq,
                resume,
            }),
            Ok(other) => Err(ClientError::Protocol(format!(
                "the first frame must be connection_established, got {}",
                other.to_text()
            ))),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        };
    }
}

/// An HTTP refusal with status `status` and `body`: the server's JSON body, or for a body that
/// is not one (a proxy's page, say) its text under a code derived from the status.
pub(crate) fn refusal(status: u16, body: &[u8]) -> ClientError {
    let error = serde_json::from_slice::<HttpError>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(300).collect();
        HttpError {
            error: match status {
                400 => ErrorCode::BadRequest,
                401 => ErrorCode::Unauthorized,
                429 => ErrorCode::TooManyConnections,
                other => ErrorCode::Other(format!("http_{other}")),
            },
            message: if text.is_empty() {
                "(the response has no body)".into()
            } else {
                text
            },
        }
    });
    ClientError::Refused { status, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a refusal and compares its code and message.
    fn check(status: u16, body: &str, code: ErrorCode, message: &str) {
        match refusal(status, body.as_bytes()) {
            ClientError::Refused { status: s, error } => {
                assert_eq!(
                    (s, &error.error, error.message.as_str()),
                    (status, &code, message)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusal_table() {
        check(
            401,
            r#"{"error":"unauthorized","message":"the token has expired"}"#,
            ErrorCode::Unauthorized,
            "the token has expired",
        );
        check(
            429,
            r#"{"error":"too_many_connections","message":"close one first"}"#,
            ErrorCode::TooManyConnections,
            "close one first",
        );
        check(
            401,
            "",
            ErrorCode::Unauthorized,
            "(the response has no body)",
        );
        check(
            502,
            "<html>Bad Gateway</html>\n",
            ErrorCode::Other("http_502".into()),
            "<html>Bad Gateway</html>",
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let url = ServerUrl::parse("http://127.0.0.1:1").unwrap();
        let endpoint = Endpoint::new(url, "eyJsecret.payload.sig").unwrap();
        let shown = format!("{endpoint:?}");
        assert!(!shown.contains("eyJsecret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(Endpoint::new(ServerUrl::parse("http://h:1").unwrap(), "a\nb").is_err());
    }
}
