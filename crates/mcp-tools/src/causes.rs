//! What an MCP error says, with the errors that caused it: what `supervised` reports when a
//! server does not start or a call fails.

/// `error` and the errors that caused it, each once: the cause is often the useful part (an
/// HTTP client's "error sending request" hides "invalid peer certificate: UnknownIssuer").
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = cause_of(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = cause_of(inner);
    }
    text
}

/// What caused `error`: its source, or what two of rmcp's errors hold without giving it as
/// their source (the transport's error in a failed initialize, the HTTP client's error in a
/// streamable HTTP error).
fn cause_of<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    use rmcp::service::ClientInitializeError;
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    if let Some(ClientInitializeError::TransportError { error, .. }) = error.downcast_ref() {
        return Some(error);
    }
    match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(client)) => Some(client),
        _ => error.source(),
    }
}
