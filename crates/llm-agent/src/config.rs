//! The agent's settings: [`LlmConfig`] (endpoint, model, limits, batching) and [`Secret`],
//! the API key wrapper that never prints.
//!
//! `agent-server` builds an [`LlmConfig`] from its flags and calls [`LlmConfig::validate`]
//! at startup, so a bad setting stops the server before any run; [`crate::register`]
//! validates again for callers that skip that step.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrets::Scrubber;

use crate::LlmError;

/// A value that must never be printed (an API key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key itself. Only the `Authorization` header may use it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Settings of the `llm` agent.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// The API root, such as `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// The API key, if the server needs one.
    pub api_key: Option<Secret>,
    /// The model name.
    pub model: String,
    /// A system prompt, if any.
    pub system_prompt: Option<String>,
    /// Turns (model calls) per run before the run fails with `max_turns`.
    pub max_turns: u32,
    /// The longest answer of one model call, in tokens, when a budget bounds the user: the
    /// call's reservation counts it, and the request's `max_tokens` is this or what remains
    /// of the budget, whichever is less. Without a budget the request sets no `max_tokens`.
    pub max_tokens: u32,
    /// Retries after a 429, a 5xx or a connection failure.
    pub max_retries: u32,
    /// The first retry's wait before its jitter; each retry doubles it, up to
    /// [`max_backoff`](Self::max_backoff), and adds a random share of up to itself (the
    /// workspace's one retry policy). A `Retry-After` header wins, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between retries before its jitter.
    pub max_backoff: Duration,
    /// The longest a single model call may take (the run's own timeout still applies).
    pub request_timeout: Duration,
    /// Answer text is sent to the user at least this often while it streams.
    pub chunk_interval: Duration,
    /// Answer text is sent to the user once this many characters are waiting.
    pub chunk_max_chars: usize,
    /// Removes the server's secrets from every request to the model and from the answer
    /// text streamed to the user (a secret split across two chunks included).
    pub scrubber: Arc<Scrubber>,
}

impl LlmConfig {
    /// Settings for `model` at `base_url`, with the defaults for everything else.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            system_prompt: None,
            max_turns: 10,
            max_tokens: 4096,
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            chunk_interval: Duration::from_millis(50),
            chunk_max_chars: 200,
            scrubber: Arc::default(),
        }
    }

    /// The pauses before retries 1, 2, ... of one model call, [`max_retries`](Self::max_retries)
    /// of them.
    pub(crate) fn retry_schedule(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build()
    }

    /// Checks the settings a user gave.
    pub fn validate(&self) -> Result<(), LlmError> {
        let url = self.base_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(LlmError::BadBaseUrl {
                url: secrets::url::redacted(url),
            });
        }
        if self.model.trim().is_empty() {
            return Err(LlmError::EmptyModel);
        }
        if self.max_turns == 0 {
            return Err(LlmError::ZeroMaxTurns);
        }
        if self.max_tokens == 0 {
            return Err(LlmError::ZeroMaxTokens);
        }
        Ok(())
    }

    /// The base URL as said in messages and logs: without trailing slashes, credentials
    /// hidden.
    pub fn display_url(&self) -> String {
        secrets::url::redacted(self.base_url.trim_end_matches('/'))
    }

    /// The Chat Completions endpoint under [`base_url`](Self::base_url).
    pub(crate) fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// A system prompt as given (`--llm-system-prompt`), if one is: its text, or `@path` for a
/// file's text. The error names the file and why it cannot be read, or says it is empty.
pub fn read_system_prompt(given: Option<&str>) -> Result<Option<String>, String> {
    let Some(given) = given else {
        return Ok(None);
    };
    let text = match given.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            format!(
                "--llm-system-prompt (LLM_SYSTEM_PROMPT) @{path}: cannot read the file ({error})"
            )
        })?,
        None => given.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(
            "--llm-system-prompt (LLM_SYSTEM_PROMPT) is empty: give the prompt's text, or @file"
                .into(),
        );
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = LlmConfig {
            api_key: Some(Secret::new("sk-live-123")),
            ..LlmConfig::new("http://x/v1", "m")
        };
        let shown = format!("{config:?} {}", Secret::new("sk-live-123"));
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn retries_double_with_jitter_up_to_the_cap_and_stop_at_max_retries() {
        let config = LlmConfig {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(3),
            ..LlmConfig::new("http://x/v1", "m")
        };
        let bases = [500, 1_000, 2_000, 3_000, 3_000].map(Duration::from_millis);
        for _ in 0..100 {
            let pauses: Vec<Duration> = config.retry_schedule().collect();
            assert_eq!(pauses.len(), 5, "{pauses:?}");
            for (pause, base) in pauses.into_iter().zip(bases) {
                assert!(pause >= base && pause < base * 2, "{pause:?} vs {base:?}");
            }
        }
        let none = LlmConfig {
            max_retries: 0,
            ..config
        };
        assert_eq!(none.retry_schedule().count(), 0);
    }

    #[test]
    fn config_validation_table() {
        let check = |config: LlmConfig, expected: Result<(), &str>| {
            let got = config.validate().map_err(|e| e.to_string());
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
                _ => panic!("{config:?}: expected {expected:?}, got {got:?}"),
            }
        };
        let config = LlmConfig::new;
        check(config("https://api.openai.com/v1", "gpt-4o-mini"), Ok(()));
        check(config("http://localhost:11434/v1/", "llama3"), Ok(()));
        check(
            config("localhost:11434", "llama3"),
            Err("LLM base URL \"localhost:11434\" must start with http:// or https://"),
        );
        check(
            config("http://x/v1", " "),
            Err("the LLM model name is empty"),
        );
        check(
            LlmConfig {
                max_turns: 0,
                ..config("http://x/v1", "m")
            },
            Err("max_turns must be at least 1"),
        );
    }

    #[test]
    fn completions_url_ignores_a_trailing_slash() {
        for base in ["http://x/v1", "http://x/v1/"] {
            assert_eq!(
                LlmConfig::new(base, "m").completions_url(),
                "http://x/v1/chat/completions"
            );
        }
    }
}
