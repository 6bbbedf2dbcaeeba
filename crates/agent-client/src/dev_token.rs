//! [`get_dev_token`]: a token from `POST /dev/token`, which a server serves only when it
//! generated its own secret (local development).

use std::time::Duration;

use agent_protocol::http::{DevTokenRequest, DevTokenResponse};

use crate::connect::refusal;
use crate::error::ClientError;
use crate::url::ServerUrl;

/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the server at `server_url` for a development token for `user`.
///
/// A server with a configured secret has no such endpoint: that is
/// [`ClientError::DevTokensOff`]. A user id the server refuses (say, a placeholder like
/// `default`) is [`ClientError::Refused`] with the server's message.
pub async fn get_dev_token(server_url: &str, user: &str) -> Result<DevTokenResponse, ClientError> {
    let url = ServerUrl::parse(server_url)?.http("dev/token");
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    // reqwest's rustls takes the process's crypto provider: ring, as everywhere in the
    // workspace, unless one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .post(&url)
        .json(&DevTokenRequest {
            user: user.to_owned(),
        })
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match status {
        200 => serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("POST {url} answered 200 without a token ({e})"))
        }),
        404 => Err(ClientError::DevTokensOff { url }),
        _ => Err(refusal(status, &body)),
    }
}
