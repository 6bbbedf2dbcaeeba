//! The client's few HTTP requests (feature `dev-token`), on the workspace's one HTTP client:
//! reqwest on rustls, with the process's crypto provider.

use std::time::Duration;

use crate::connect::refusal;
use crate::error::ClientError;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the request `build` makes on a fresh client to `url`: the body of a 200 answer,
/// `ClientError::Unreachable` when no answer came, and the server's refusal (its HTTP status
/// and JSON body) otherwise; `not_found` says what a 404 means for this request.
pub(crate) async fn send(
    url: &str,
    build: impl FnOnce(reqwest::Client) -> reqwest::RequestBuilder,
    not_found: impl FnOnce() -> ClientError,
) -> Result<Vec<u8>, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    // reqwest's rustls takes the process's crypto provider: ring, as everywhere in the
    // workspace, unless one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let response = build(client)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match status {
        200 => Ok(body.to_vec()),
        404 => Err(not_found()),
        _ => Err(refusal(status, &body)),
    }
}
