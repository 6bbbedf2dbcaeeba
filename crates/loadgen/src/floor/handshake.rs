//! The floor server's HTTP side: read one request head, answer `GET /health`, refuse what
//! is not a WebSocket upgrade of `/ws` with a token (400 or 401 and a JSON error, like
//! agent-server), and switch protocols for the rest.

use std::time::Duration;

use agent_protocol::ErrorCode;
use agent_protocol::http::HttpError;
use core_context::UserId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::baseline::TokenCheck;

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /health`.
    Health,
    /// A WebSocket upgrade of `/ws` by `user`, with the key to answer.
    Upgrade {
        /// Who the token speaks for.
        user: UserId,
        /// `Sec-WebSocket-Key`.
        key: String,
    },
    /// Anything else: the status and the error to answer with.
    Refused(u16, ErrorCode, String),
}

/// Reads a request head from `tcp` and says what it asks for; `Ok(None)` when the client
/// closed or stalled first. Bytes after the head stay unread (a client sends its first
/// frame only after the answer).
pub async fn read(tcp: &mut TcpStream, tokens: &TokenCheck) -> std::io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() >= MAX_HEAD {
                return Ok(true);
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Ok(Ok(true)) => Ok(Some(request(&head, tokens))),
        Ok(Ok(false)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

/// What `head` asks for.
pub fn request(head: &[u8], tokens: &TokenCheck) -> Request {
    let bad = |message: &str| Request::Refused(400, ErrorCode::BadRequest, message.to_owned());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return bad("the request head is incomplete or too long"),
        Err(e) => return bad(&format!("not an HTTP request: {e}")),
    }
    let path = parsed.path.unwrap_or("");
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if parsed.method != Some("GET") {
        return Request::Refused(405, ErrorCode::BadRequest, "only GET is served".into());
    }
    match route {
        "/health" => return Request::Health,
        "/ws" => {}
        _ => return Request::Refused(404, ErrorCode::NotFound, format!("no route {route}")),
    }
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    let user = match tokens.user(header("authorization"), token) {
        Ok(user) => user,
        Err(message) => return Request::Refused(401, ErrorCode::Unauthorized, message),
    };
    if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return bad("/ws needs `Upgrade: websocket`");
    }
    if header("sec-websocket-version") != Some("13") {
        return bad("/ws needs `Sec-WebSocket-Version: 13`");
    }
    match header("sec-websocket-key") {
        Some(key) if !key.trim().is_empty() => Request::Upgrade {
            user,
            key: key.trim().to_owned(),
        },
        _ => bad("/ws needs a `Sec-WebSocket-Key`"),
    }
}

/// Writes the answer to a request that is not an upgrade, then closes.
pub async fn answer(tcp: &mut TcpStream, request: &Request) -> std::io::Result<()> {
    let (status, body) = match request {
        Request::Health => (200, "ok".to_owned()),
        Request::Refused(status, error, message) => (
            *status,
            serde_json::to_string(&HttpError {
                error: error.clone(),
                message: message.clone(),
            })
            .unwrap_or_default(),
        ),
        Request::Upgrade { .. } => return Ok(()),
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(text.as_bytes()).await?;
    tcp.shutdown().await
}

/// The `101 Switching Protocols` answer to an upgrade with `key`.
pub fn switching(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "floor-test-secret-0123456789abcdef";

    fn token(sub: &str) -> String {
        crate::connect::Minter::new(SECRET)
            .token(sub)
            .expect("signs")
    }

    fn head(lines: &[&str]) -> Vec<u8> {
        format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
    }

    #[test]
    fn an_upgrade_with_a_token_names_its_user() {
        let tokens = TokenCheck::new(SECRET);
        let bearer = format!("Authorization: Bearer {}", token("alice"));
        let upgrade = [
            "GET /ws HTTP/1.1",
            "Host: x",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ];
        let mut lines = upgrade.to_vec();
        lines.push(&bearer);
        let Request::Upgrade { user, key } = request(&head(&lines), &tokens) else {
            panic!("not an upgrade");
        };
        assert_eq!(user.as_str(), "alice");
        // RFC 6455 §1.3's example.
        assert!(switching(&key).contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));

        let query_path = format!("GET /ws?token={} HTTP/1.1", token("bob"));
        let mut lines = upgrade.to_vec();
        lines[0] = &query_path;
        assert!(
            matches!(request(&head(&lines), &tokens), Request::Upgrade { user, .. } if user.as_str() == "bob")
        );
    }

    #[test]
    fn what_is_not_an_authenticated_upgrade_is_refused_with_a_reason() {
        let tokens = TokenCheck::new(SECRET);
        let refused = |lines: &[&str]| match request(&head(lines), &tokens) {
            Request::Refused(status, _, message) => (status, message),
            other => panic!("{lines:?} was not refused: {other:?}"),
        };
        assert_eq!(
            refused(&["GET /ws HTTP/1.1", "Upgrade: websocket"]),
            (401, "no token".into())
        );
        let forged = format!(
            "Authorization: Bearer {}",
            crate::connect::Minter::new("another-secret-0123456789abcdefgh")
                .token("alice")
                .expect("signs")
        );
        let (status, message) = refused(&["GET /ws HTTP/1.1", &forged]);
        assert_eq!(status, 401);
        assert!(message.starts_with("invalid token"), "{message}");
        let bearer = format!("Authorization: Bearer {}", token("alice"));
        assert_eq!(
            refused(&["GET /ws HTTP/1.1", &bearer]).1,
            "/ws needs `Upgrade: websocket`"
        );
        assert_eq!(refused(&["POST /ws HTTP/1.1"]).0, 405);
        assert_eq!(refused(&["GET /other HTTP/1.1"]).0, 404);
        assert_eq!(refused(&["NOT HTTP"]).0, 400);
        assert_eq!(
            request(&head(&["GET /health HTTP/1.1"]), &tokens),
            Request::Health
        );
    }
}
