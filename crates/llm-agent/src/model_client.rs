//! One model call: the Chat Completions request, its HTTP status mapped to a [`RunFailure`],
//! and the retries around it (exponential backoff, or the server's `Retry-After`).
//!
//! Retries happen only here, before the response's stream is read, so a retry never repeats
//! output the user already saw. A 429, a 5xx or a failed connection is retried; a refused key
//! or a rejected request is not, since asking again would get the same answer.

use std::sync::Arc;
use std::time::Duration;

use agent_registry::AgentContext;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrets::Site;
use serde_json::{Value, json};

use crate::error::RunFailure;
use crate::stats::ModelStats;
use crate::stream::{self, Turn};
use crate::{LlmConfig, LlmError};

/// How much of a rejecting server's response body the user sees.
const REJECTION_BODY_CHARS: usize = 300;

/// The HTTP side of the agent: the settings and one connection pool, shared by every run.
#[derive(Clone)]
pub(crate) struct ModelClient {
    config: Arc<LlmConfig>,
    http: reqwest::Client,
    stats: Arc<ModelStats>,
}

/// What one attempt at a model call came to.
enum Attempt {
    /// The server accepted the call; its event stream is ready to read.
    Accepted(reqwest::Response),
    /// A failure another try might not meet; `wait` is the server's `Retry-After`, if any.
    Retryable {
        failure: RunFailure,
        wait: Option<Duration>,
    },
    /// A failure another try would meet again.
    Final(RunFailure),
}

impl ModelClient {
    /// A client for `config`, whose `request_timeout` bounds every call.
    pub(crate) fn new(config: LlmConfig) -> Result<Self, LlmError> {
        // reqwest's rustls takes the process's crypto provider: ring, as everywhere in the
        // workspace, unless one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(LlmError::HttpClient)?;
        Ok(Self {
            config: Arc::new(config),
            http,
            stats: Arc::default(),
        })
    }

    /// What this client's calls came to.
    pub(crate) fn stats(&self) -> &Arc<ModelStats> {
        &self.stats
    }

    /// The settings this client calls the model with.
    pub(crate) fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// One model call with the conversation so far (its messages and the tools), retried
    /// while nothing has reached the user yet; its answer text and reasoning stream to the
    /// user through `ctx`. `max_tokens` bounds the answer when a budget does.
    pub(crate) async fn complete(
        &self,
        ctx: &AgentContext,
        (messages, tools): (&[Value], &[Value]),
        max_tokens: Option<u64>,
    ) -> Result<Turn, RunFailure> {
        let outcome = self.attempts(ctx, messages, tools, max_tokens).await;
        match &outcome {
            Ok(turn) => self.stats.answered(turn.usage.as_ref()),
            Err(failure) => self.stats.failed(failure.code()),
        }
        outcome
    }

    /// The attempts of one model call, until one is answered or retrying stops.
    async fn attempts(
        &self,
        ctx: &AgentContext,
        messages: &[Value],
        tools: &[Value],
        max_tokens: Option<u64>,
    ) -> Result<Turn, RunFailure> {
        let mut body = request_body(&self.config.model, messages, tools);
        if let Some(max_tokens) = max_tokens {
            body["max_tokens"] = max_tokens.into();
        }
        // Whatever the conversation holds (a tool's result, an earlier answer, the user's
        // message), the model never receives one of the server's secrets.
        self.config.scrubber.scrub_json(Site::Model, &mut body);
        let url = self.config.completions_url();
        let mut retries = self.config.retry_schedule();
        let mut attempt = 0;
        loop {
            self.stats.request();
            let (failure, wait) = match self.send(&url, &body).await {
                Attempt::Accepted(response) => {
                    return stream::read_turn(ctx, &self.config, response).await;
                }
                Attempt::Final(failure) => return Err(failure),
                Attempt::Retryable { failure, wait } => (failure, wait),
            };
            let Some(pause) = retries.next() else {
                return Err(RunFailure::GaveUp {
                    last: Box::new(failure),
                    retries: self.config.max_retries,
                });
            };
            // The server's Retry-After wins over the schedule, up to the longest wait.
            let backoff = wait.map_or(pause, |wait| wait.min(self.config.max_backoff));
            attempt += 1;
            tracing::info!(code = %failure.code(), attempt, ?backoff, "retrying the model call");
            tokio::time::sleep(backoff).await;
        }
    }

    /// Posts `body` once and sorts the outcome.
    async fn send(&self, url: &str, body: &Value) -> Attempt {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose());
        }
        match request.send().await {
            Err(error) => Attempt::Retryable {
                failure: RunFailure::Unreachable(error.without_url()),
                wait: None,
            },
            Ok(response) => classify(response).await,
        }
    }
}

/// The Chat Completions request: streamed, with usage in the last chunk, and the tools only
/// when there are any (OpenAI rejects an empty `tools` list).
fn request_body(model: &str, messages: &[Value], tools: &[Value]) -> Value {
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools.to_vec());
    }
    body
}

/// Maps a response's status to what the caller does next.
async fn classify(response: reqwest::Response) -> Attempt {
    match response.status().as_u16() {
        200..=299 => Attempt::Accepted(response),
        status @ (401 | 403) => Attempt::Final(RunFailure::BadApiKey { status }),
        429 => Attempt::Retryable {
            wait: retry_after(response.headers()),
            failure: RunFailure::RateLimited,
        },
        status @ 500..=599 => Attempt::Retryable {
            failure: RunFailure::ServerStatus { status },
            wait: None,
        },
        status => {
            let text = response.text().await.unwrap_or_default();
            let body = text.chars().take(REJECTION_BODY_CHARS).collect();
            Attempt::Final(RunFailure::Rejected { status, body })
        }
    }
}

/// The wait a `Retry-After: <seconds>` header asks for (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let check = |header: Option<&str>, expected: Option<u64>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(
                retry_after(&headers),
                expected.map(Duration::from_secs),
                "{header:?}"
            );
        };
        check(None, None);
        check(Some("2"), Some(2));
        check(Some(" 7 "), Some(7));
        check(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        check(Some("-1"), None);
    }

    #[test]
    fn tools_are_offered_only_when_there_are_some() {
        let messages = [json!({"role": "user", "content": "hi"})];
        let body = request_body("m", &messages, &[]);
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
        let tool = json!({"type": "function", "function": {"name": "t"}});
        let body = request_body("m", &messages, std::slice::from_ref(&tool));
        assert_eq!(body["tools"], json!([tool]));
    }
}
