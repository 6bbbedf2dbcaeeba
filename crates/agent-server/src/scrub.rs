//! Every HTTP response body leaves scrubbed of the server's secrets: an error message that
//! quotes a failing service (its URL, its password), a stored row, an AG-UI stream. Events were scrubbed when emitted; this is the last gate for everything
//! else the HTTP side sends.
//!
//! A body held in memory (JSON answers, the page, errors) is scrubbed whole and keeps an
//! exact length; a streamed body (AG-UI's server-sent events) is scrubbed chunk by chunk as
//! it passes, each chunk being whole frames. A WebSocket upgrade has no body to scrub (its
//! frames are scrubbed by the connection).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;
use secrets::{Scrubber, Site};

/// The middleware: see the module documentation.
pub(crate) async fn responses(
    State(scrubber): State<Arc<Scrubber>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if !scrubber.is_active() || response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if body.size_hint().exact().is_some() {
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "a response body could not be read to be scrubbed");
                parts.status = StatusCode::INTERNAL_SERVER_ERROR;
                parts.headers.remove(header::CONTENT_LENGTH);
                return Response::from_parts(parts, Body::empty());
            }
        };
        let body = match scrub(&scrubber, bytes) {
            (bytes, false) => Body::from(bytes),
            (bytes, true) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Body::from(bytes)
            }
        };
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let chunks = body
        .into_data_stream()
        .map(move |chunk| chunk.map(|bytes| scrub(&scrubber, bytes).0));
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// `bytes` scrubbed, and whether anything was replaced.
fn scrub(scrubber: &Scrubber, bytes: Bytes) -> (Bytes, bool) {
    match scrubber.scrub_bytes(Site::Http, &bytes) {
        Cow::Borrowed(_) => (bytes, false),
        Cow::Owned(clean) => (Bytes::from(clean), true),
    }
}
