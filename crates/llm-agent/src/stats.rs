//! [`ModelStats`]: what the agent's model calls came to, for the server's metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::Value;

/// Counts of one `llm` agent's model calls, shared by all its runs.
#[derive(Debug, Default)]
pub struct ModelStats {
    requests: AtomicU64,
    answered: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

/// A snapshot of [`ModelStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStatsSnapshot {
    /// HTTP requests sent to the model (a retried call counts each attempt).
    pub requests: u64,
    /// Model calls that got an answer (one turn of a run).
    pub answered: u64,
    /// Model calls that failed for good (after their retries), by failure code.
    pub failures: BTreeMap<&'static str, u64>,
    /// Prompt tokens the model reported.
    pub prompt_tokens: u64,
    /// Completion tokens the model reported.
    pub completion_tokens: u64,
}

impl ModelStats {
    /// A snapshot of the counts.
    pub fn snapshot(&self) -> ModelStatsSnapshot {
        ModelStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            failures: self.failures.lock().clone(),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A call answered with `usage` (OpenAI's `prompt_tokens` / `completion_tokens`).
    pub(crate) fn answered(&self, usage: Option<&Value>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let tokens = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
        if let Some(n) = tokens("prompt_tokens") {
            self.prompt_tokens.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(n) = tokens("completion_tokens") {
            self.completion_tokens.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn failed(&self, code: &'static str) {
        *self.failures.lock().entry(code).or_default() += 1;
    }
}
