//! Opening authenticated connections: tokens, source addresses, the upgrade, and the
//! server's `connection_established`.
//!
//! Each connection is a raw `tokio-tungstenite` socket (one `agent-client` per socket would
//! cost a driver task and reconnect machinery that a load run does not want). Against a
//! loopback server the client side is bound to `127.0.0.k:0` for k in 1..=`sources`, so that
//! tens of thousands of sockets do not exhaust one source address's ephemeral ports (about
//! 28,000 with Linux's default range), nor collide with the TIME_WAIT leftovers of the last
//! run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_protocol::{Epoch, ResumeParams, ResumeStatus, ServerFrame, ServerMessage};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// A client socket.
pub type Socket = WebSocketStream<TcpStream>;

/// How long one connection may take, upgrade and greeting included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the tokens live: longer than any load run.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a `ws://host:port/path` URL.
    #[error("--url {url}: {problem}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A token could not be signed.
    #[error("cannot sign a token: {0}")]
    Token(String),
    /// The socket could not be set up or connected.
    #[error("from {source_addr}: {error}{hint}")]
    Socket {
        /// The local address used.
        source_addr: String,
        /// The OS error.
        error: std::io::Error,
        /// What to do about it, when the error says the box ran out of something.
        hint: &'static str,
    },
    /// The server refused the upgrade or the WebSocket failed.
    #[error("{0}")]
    WebSocket(String),
    /// The first frame was not `connection_established` for this user.
    #[error("{0}")]
    Greeting(String),
    /// It took longer than [`CONNECT_TIMEOUT`].
    #[error("no connection_established within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
}

impl ConnectError {
    /// Whether the box (file descriptors, ephemeral ports), not the server, refused it.
    pub fn is_box_limit(&self) -> bool {
        matches!(self, ConnectError::Socket { hint, .. } if !hint.is_empty())
    }
}

/// Where to connect: the server's address and the upgrade request's pieces.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The server's socket address.
    pub addr: SocketAddr,
    /// Source addresses to spread sockets over (empty: let the OS choose).
    pub sources: Vec<IpAddr>,
}

impl Target {
    /// Resolves `url` (`ws://host:port/ws`) and picks `sources` loopback source addresses when
    /// the server is on loopback.
    pub async fn resolve(url: &str, sources: u8) -> Result<Self, ConnectError> {
        let bad = |problem: String| ConnectError::Url {
            url: url.to_owned(),
            problem,
        };
        let request = url.into_client_request().map_err(|e| bad(e.to_string()))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(bad(
                "only ws:// URLs are supported (loadgen speaks no TLS)".into()
            ));
        }
        let host = uri.host().ok_or_else(|| bad("no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| bad(format!("{host} resolves to no address")))?;
        let sources = if addr.ip().is_loopback() && addr.is_ipv4() {
            (1..=sources)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            url: url.to_owned(),
            addr,
            sources,
        })
    }

    /// The source address of connection `index`.
    fn source(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }
}

/// Signs tokens for users with the server's secret.
pub struct Minter {
    key: EncodingKey,
    exp: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

impl Minter {
    /// A minter for HS256 tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + TOKEN_TTL.as_secs();
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp,
        }
    }

    /// A token for `user`.
    pub fn token(&self, user: &str) -> Result<String, ConnectError> {
        let claims = Claims {
            sub: user,
            exp: self.exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| ConnectError::Token(e.to_string()))
    }
}

/// A connection the server greeted.
pub struct Opened {
    /// The socket.
    pub socket: Socket,
    /// `connection_established.last_seq`.
    pub last_seq: u64,
    /// `connection_established.epoch`.
    pub epoch: Epoch,
    /// `connection_established.resume`: the outcome, when the connection asked to resume.
    pub resume: Option<ResumeStatus>,
}

/// The client's WebSocket buffers: small, like the server's, so that 19,000 sockets do not
/// reserve 128 KiB each.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
}

/// Opens connection `index` for `user` with `token`, within [`CONNECT_TIMEOUT`]; with
/// `resume`, asks to resume the user's stream after it.
pub async fn open(
    target: &Target,
    index: usize,
    user: &str,
    token: &str,
    resume: Option<&ResumeParams>,
) -> Result<Opened, ConnectError> {
    let url = match resume {
        Some(resume) => {
            let join = if target.url.contains('?') { '&' } else { '?' };
            format!("{}{join}{}", target.url, resume.to_query())
        }
        None => target.url.clone(),
    };
    let attempt = async {
        let tcp = tcp_connect(target, index).await?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ConnectError::Token(e.to_string()))?;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(client_config()))
                .await
                .map_err(|e| ConnectError::WebSocket(upgrade_error(e)))?;
        greeting(socket, user).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn tcp_connect(target: &Target, index: usize) -> Result<TcpStream, ConnectError> {
    let source = target.source(index);
    let failed = |error: std::io::Error| {
        let hint = match error.raw_os_error() {
            Some(24) => " (EMFILE: the open-file limit is reached; raise `ulimit -n`)",
            Some(99) => " (EADDRNOTAVAIL: out of ephemeral ports; use more --sources)",
            _ => "",
        };
        ConnectError::Socket {
            source_addr: source.map_or_else(|| "the default address".into(), |ip| ip.to_string()),
            error,
            hint,
        }
    };
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(failed)?;
    }
    let stream = socket.connect(target.addr).await.map_err(failed)?;
    // Start requests are small frames that should leave at once, like the server's events.
    stream.set_nodelay(true).map_err(failed)?;
    Ok(stream)
}

/// An upgrade failure in words; an HTTP refusal keeps the server's status and body.
fn upgrade_error(error: tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            format!(
                "the server refused the upgrade: HTTP {} {body}",
                response.status()
            )
        }
        other => format!("the upgrade failed: {other}"),
    }
}

/// Reads `connection_established` and checks it names `user`.
async fn greeting(mut socket: Socket, user: &str) -> Result<Opened, ConnectError> {
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => {
                return Err(ConnectError::Greeting(format!(
                    "expected connection_established, got {other:?}"
                )));
            }
            Some(Err(e)) => return Err(ConnectError::WebSocket(e.to_string())),
            None => return Err(ConnectError::Greeting("closed before greeting".into())),
        };
        return match ServerMessage::parse(&text) {
            Ok(ServerMessage::Frame(ServerFrame::ConnectionEstablished {
                user_id,
                last_seq,
                epoch,
                resume,
                ..
            })) if user_id.as_str() == user => Ok(Opened {
                socket,
                last_seq,
                epoch,
                resume,
            }),
            Ok(ServerMessage::Frame(ServerFrame::ConnectionEstablished { user_id, .. })) => {
                Err(ConnectError::Greeting(format!(
                    "wrong-user greeting: connection_established names {user_id}, the token {user}"
                )))
            }
            _ => Err(ConnectError::Greeting(format!(
                "expected connection_established first, got {text}"
            ))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_targets_spread_over_sources_and_others_do_not() {
        let target = Target::resolve("ws://127.0.0.1:8080/ws", 4)
            .await
            .expect("resolves");
        assert_eq!(target.addr, "127.0.0.1:8080".parse().expect("addr"));
        let picked: Vec<String> = (0..5)
            .map(|i| {
                target
                    .source(i)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            picked,
            [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.1"
            ]
        );
        let err = Target::resolve("wss://127.0.0.1:8080/ws", 4)
            .await
            .expect_err("no tls");
        assert!(err.to_string().contains("only ws://"), "{err}");
        let err = Target::resolve("not a url", 4).await.expect_err("bad url");
        assert!(err.to_string().starts_with("--url not a url"), "{err}");
    }

    #[test]
    fn tokens_are_hs256_with_sub_and_exp() {
        let secret = "s".repeat(32);
        let token = Minter::new(&secret).token("lg-user-1").expect("signs");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .expect("valid token");
        assert_eq!(data.claims["sub"], "lg-user-1");
    }
}
