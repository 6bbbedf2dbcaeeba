//! [`get_dev_token`]: a token from `POST /dev/token`, which a server serves only when it
//! generated its own secret (local development).

use agent_protocol::http::{DevTokenRequest, DevTokenResponse};

use crate::error::ClientError;
use crate::http;
use crate::url::ServerUrl;

/// Asks the server at `server_url` for a development token for `user`.
///
/// A server with a configured secret has no such endpoint: that is
/// [`ClientError::DevTokensOff`]. A user id the server refuses (say, a placeholder like
/// `default`) is [`ClientError::Refused`] with the server's message.
pub async fn get_dev_token(server_url: &str, user: &str) -> Result<DevTokenResponse, ClientError> {
    let url = ServerUrl::parse(server_url)?.http("dev/token");
    let request = DevTokenRequest {
        user: user.to_owned(),
    };
    let body = http::send(
        &url,
        |client| client.post(&url).json(&request),
        || ClientError::DevTokensOff { url: url.clone() },
    )
    .await?;
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Protocol(format!("POST {url} answered 200 without a token ({e})"))
    })
}
