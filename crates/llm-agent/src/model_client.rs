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
                failure: RunFailure::Unreachable {
                    url: self.config.display_url(),
                    error: error.without_url(),
                },
                wait: None,
            },
            Ok(response) => classify(response, &self.config).await,
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
async fn classify(response: reqwest::Response, config: &LlmConfig) -> Attempt {
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
            Attempt::Final(rejection(status, &text, config))
        }
    }
}

/// A refusal the client does not retry, said as a sentence: a model the server does not
/// have, or else what the server said, with a hint for a base URL without `/v1`.
fn rejection(status: u16, text: &str, config: &LlmConfig) -> RunFailure {
    let said = server_message(text);
    let (url, model) = (config.display_url(), config.model.clone());
    if status == 404 && said.to_lowercase().contains("model") {
        return RunFailure::ModelNotFound { url, model, said };
    }
    let hint = if status == 404 && !url.ends_with("/v1") {
        format!(
            "; OpenAI-compatible servers serve their API under /v1: try --llm-base-url {url}/v1"
        )
    } else {
        String::new()
    };
    RunFailure::Rejected {
        status,
        url,
        model,
        said,
        hint,
    }
}

/// The message of an error body (`{"error": {"message": …}}`, `{"error": "…"}`,
/// `{"message": "…"}`), not the JSON around it; else the start of the body.
fn server_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let message = parsed.as_ref().and_then(|body| {
        (body.pointer("/error/message"))
            .or_else(|| body.get("error").filter(|e| e.is_string()))
            .or_else(|| body.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let said: String = (message.unwrap_or_else(|| text.trim().to_owned()))
        .chars()
        .take(REJECTION_BODY_CHARS)
        .collect();
    if said.is_empty() {
        "it gave no reason".to_owned()
    } else {
        said
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
    fn refusals_are_sentences_that_name_the_server_and_the_model() {
        let at = |url: &str| LlmConfig::new(url, "llama3");
        let not_found = rejection(
            404,
            r#"{"error":"model \"llama3\" not found, try pulling it first"}"#,
            &at("http://127.0.0.1:11434/v1/"),
        );
        assert_eq!(not_found.code(), "model_not_found");
        assert_eq!(
            not_found.to_string(),
            "the model server at http://127.0.0.1:11434/v1 has no model \"llama3\" (model \"llama3\" not found, try pulling it first); name one it serves with --llm-model (GET http://127.0.0.1:11434/v1/models lists them)"
        );
        let no_v1 = rejection(404, "404 page not found", &at("http://127.0.0.1:11434"));
        assert_eq!(no_v1.code(), "model_request_rejected");
        assert!(
            no_v1
                .to_string()
                .ends_with("(HTTP 404): 404 page not found; OpenAI-compatible servers serve their API under /v1: try --llm-base-url http://127.0.0.1:11434/v1"),
            "{no_v1}"
        );
        let openai = rejection(
            400,
            r#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}"#,
            &at("https://api.example.com/v1"),
        );
        assert_eq!(
            openai.to_string(),
            "the model server at https://api.example.com/v1 rejected the request for model \"llama3\" (HTTP 400): max_tokens is too large"
        );
        assert!(
            rejection(400, "", &at("http://h/v1"))
                .to_string()
                .ends_with("it gave no reason")
        );
    }

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
