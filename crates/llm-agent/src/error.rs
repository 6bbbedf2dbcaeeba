//! The crate's two error vocabularies.
//!
//! [`LlmError`] is the public one: why the agent could not be set up ([`crate::register`],
//! [`LlmConfig::validate`](crate::LlmConfig::validate)). [`RunFailure`] is internal: why one
//! run failed. Each of its variants is one error code the user sees on the run's
//! `agent_error` event, and it becomes an [`AgentError`] only at the [`Agent`] boundary, so
//! the codes and their messages are written once, here.
//!
//! [`Agent`]: agent_registry::Agent

use std::time::Duration;

use agent_registry::{AgentError, RegistryError};
use eventsource_stream::EventStreamError;
use serde_json::Value;

/// Why the `llm` agent could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("LLM base URL {url:?} must start with http:// or https://")]
    BadBaseUrl {
        /// The URL as given, without trailing slashes, credentials hidden.
        url: String,
    },
    /// The model name is empty or blank.
    #[error("the LLM model name is empty")]
    EmptyModel,
    /// `max_turns` is 0, so no run could ever call the model.
    #[error("max_turns must be at least 1")]
    ZeroMaxTurns,
    /// `max_tokens` is 0, so no answer could have a word.
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    /// The HTTP client could not be built (for example, no TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The registry refused the agent (for example, an agent named `llm` is already there).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Why a run failed. [`code`](Self::code) is what the user's `agent_error` event carries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunFailure {
    /// The request did not get a response (connection refused, DNS, timeout) from the
    /// server at `url`.
    #[error("cannot reach the model server at {url} ({})", with_causes(.error))]
    Unreachable { url: String, error: reqwest::Error },
    /// HTTP 401 or 403.
    #[error("the model server refused the API key (HTTP {status})")]
    BadApiKey { status: u16 },
    /// HTTP 429.
    #[error("the model server is rate limiting this key (HTTP 429)")]
    RateLimited,
    /// An HTTP 5xx status.
    #[error("the model server failed (HTTP {status})")]
    ServerStatus { status: u16 },
    /// Any other non-2xx status; `said` is the server's explanation (its error's message, or
    /// the start of its body), `hint` what to do about it, when there is something to say.
    #[error(
        "the model server at {url} rejected the request for model {model:?} (HTTP {status}): {said}{hint}"
    )]
    Rejected {
        status: u16,
        url: String,
        model: String,
        said: String,
        hint: String,
    },
    /// HTTP 404 for a model the server does not have.
    #[error(
        "the model server at {url} has no model {model:?} ({said}); name one it serves with --llm-model (GET {url}/models lists them)"
    )]
    ModelNotFound {
        url: String,
        model: String,
        said: String,
    },
    /// An `error` object inside the stream.
    #[error("the model server reported an error: {0}")]
    ServerReported(Value),
    /// The stream stalled past the request timeout.
    #[error("the model took longer than {} s to answer", .0.as_secs_f64())]
    StreamTimeout(Duration),
    /// The stream broke (a transport or an event-framing error).
    #[error("the model's stream broke off: {0}")]
    StreamBroke(EventStreamError<reqwest::Error>),
    /// The stream ended without `[DONE]`.
    #[error("the model's stream ended before it finished ([DONE] never came)")]
    StreamEnded,
    /// An event's data is not JSON.
    #[error("the model sent a chunk that is not JSON ({0})")]
    NotJson(serde_json::Error),
    /// A choice's `delta` is neither an object nor null.
    #[error("the model sent a delta that is not an object")]
    DeltaNotObject,
    /// A tool call piece names an index past what any model sends.
    #[error("tool call index {0} is out of range")]
    ToolIndexOutOfRange(usize),
    /// A finished tool call has no function name.
    #[error("tool call {0} has no function name")]
    ToolWithoutName(usize),
    /// The model called tools on every one of `max_turns` turns.
    #[error(
        "the model kept calling tools for {0} turns without answering, so the run was stopped (the limit is --llm-max-turns, {0} here); ask again more narrowly, or raise the limit"
    )]
    MaxTurns(u32),
    /// A retryable failure that was still there after `retries` retries.
    #[error("{last} (gave up after {retries} retries)")]
    GaveUp { last: Box<RunFailure>, retries: u32 },
}

impl RunFailure {
    /// The machine-readable code of this failure.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { error, .. } if error.is_timeout() => "model_timeout",
            Self::Unreachable { .. } => "model_unreachable",
            Self::BadApiKey { .. } => "bad_api_key",
            Self::RateLimited => "rate_limited",
            Self::ServerStatus { .. } | Self::ServerReported(_) => "server_error",
            Self::Rejected { .. } => "model_request_rejected",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::StreamTimeout(_) => "model_timeout",
            Self::StreamBroke(_) | Self::StreamEnded => "stream_interrupted",
            Self::NotJson(_)
            | Self::DeltaNotObject
            | Self::ToolIndexOutOfRange(_)
            | Self::ToolWithoutName(_) => "malformed_stream",
            Self::MaxTurns(_) => "max_turns",
            Self::GaveUp { last, .. } => last.code(),
        }
    }
}

impl From<RunFailure> for AgentError {
    fn from(failure: RunFailure) -> Self {
        AgentError::new(failure.code(), failure.to_string())
    }
}

/// `error` and the causes under it (reqwest's own message says only "error sending
/// request"; the reason, such as an untrusted certificate, is in its sources).
fn with_causes(error: &reqwest::Error) -> String {
    let mut said = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = inner.source();
    }
    said
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The codes and messages users see; they are a contract, so they are pinned here.
    #[test]
    fn failure_codes_and_messages() {
        let check = |failure: RunFailure, code: &str, message: &str| {
            let error = AgentError::from(failure);
            assert_eq!(
                (error.code.as_str(), error.message.as_str()),
                (code, message)
            );
        };
        check(
            RunFailure::BadApiKey { status: 403 },
            "bad_api_key",
            "the model server refused the API key (HTTP 403)",
        );
        check(
            RunFailure::GaveUp {
                last: Box::new(RunFailure::RateLimited),
                retries: 3,
            },
            "rate_limited",
            "the model server is rate limiting this key (HTTP 429) (gave up after 3 retries)",
        );
        check(
            RunFailure::ServerReported(json!({"message": "overloaded"})),
            "server_error",
            r#"the model server reported an error: {"message":"overloaded"}"#,
        );
        check(
            RunFailure::StreamTimeout(Duration::from_millis(1500)),
            "model_timeout",
            "the model took longer than 1.5 s to answer",
        );
        check(
            RunFailure::MaxTurns(3),
            "max_turns",
            "the model kept calling tools for 3 turns without answering, so the run was stopped (the limit is --llm-max-turns, 3 here); ask again more narrowly, or raise the limit",
        );
        check(
            RunFailure::ToolWithoutName(0),
            "malformed_stream",
            "tool call 0 has no function name",
        );
    }
}
