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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;

    use super::*;

    const SECRET: &str = "http-secret-value-0123456789";

    /// Serves `router` behind the scrubber and returns the body and `Content-Length` of `path`.
    async fn fetch(path: &str) -> (String, Option<String>) {
        let mut secrets = secrets::Secrets::new();
        secrets.add("test", SECRET).unwrap();
        let scrubber = Arc::new(Scrubber::new(&secrets));
        let router = Router::new()
            .route(
                "/full",
                get(|| async { format!("{{\"error\":\"{SECRET}\"}}") }),
            )
            .route("/clean", get(|| async { "nothing to hide" }))
            .route(
                "/stream",
                get(|| async {
                    let frames =
                        ["data: one\n\n", "data: {SECRET}\n\n", "data: three\n\n"].map(|f| {
                            Ok::<_, std::io::Error>(Bytes::from(f.replace("{SECRET}", SECRET)))
                        });
                    Body::from_stream(futures::stream::iter(frames))
                }),
            )
            .layer(axum::middleware::from_fn_with_state(scrubber, responses));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.text().await.unwrap(), length)
    }

    #[tokio::test]
    async fn bodies_whole_and_streamed_leave_scrubbed() {
        let marker = secrets::MARKER;
        let (full, length) = fetch("/full").await;
        assert_eq!(full, format!("{{\"error\":\"{marker}\"}}"));
        assert_eq!(length, Some(full.len().to_string()));
        let (clean, length) = fetch("/clean").await;
        assert_eq!(
            (clean.as_str(), length),
            ("nothing to hide", Some("15".into()))
        );
        let (stream, _) = fetch("/stream").await;
        assert_eq!(
            stream,
            format!("data: one\n\ndata: {marker}\n\ndata: three\n\n")
        );
    }
}
