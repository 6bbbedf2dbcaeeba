//! [`UsageMeter`]: where a run's model calls report what they spent ([`CallUsage`]), so the
//! server can count each call once, per run and per user, and bound what users spend.
//!
//! An agent backed by a model reports each call's usage with
//! [`AgentContext::record_usage`](crate::AgentContext::record_usage) as soon as the call
//! answered; the engine gives every run of a server (sub-runs too) the server's meter. Without
//! one, usage is only what the agent puts in its `agent_completed`.

use async_trait::async_trait;
use core_context::{RunScope, UserId};
use serde_json::Value;

/// One model call's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallUsage {
    /// The model's name, as the agent asked for it.
    pub model: String,
    /// Tokens of the prompt (cached ones included).
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Tokens of the prompt the provider served from its cache.
    pub cached_tokens: u64,
}

impl CallUsage {
    /// The usage an OpenAI-compatible API reports (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`), for `model`; `None` when it names no tokens.
    pub fn from_openai(model: &str, usage: &Value) -> Option<Self> {
        let count = |v: &Value| v.as_u64();
        let prompt = usage.get("prompt_tokens").and_then(count);
        let completion = usage.get("completion_tokens").and_then(count);
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        Some(Self {
            model: model.to_owned(),
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            cached_tokens: usage
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(count)
                .unwrap_or(0),
        })
    }

    /// Prompt and answer tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Where model usage goes; the server implements it over its history (and budgets).
#[async_trait]
pub trait UsageMeter: Send + Sync {
    /// `user`'s run `scope` made a model call that used `usage`. Called once per call.
    async fn record(&self, user: &UserId, scope: &RunScope, usage: CallUsage);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn openai_usage_is_read_with_its_cached_tokens() {
        let usage = json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                           "prompt_tokens_details": {"cached_tokens": 100}});
        let read = CallUsage::from_openai("m", &usage).unwrap();
        assert_eq!(
            (
                read.prompt_tokens,
                read.completion_tokens,
                read.cached_tokens,
                read.tokens()
            ),
            (120, 30, 100, 150)
        );
        assert_eq!(read.model, "m");
        assert_eq!(
            CallUsage::from_openai("m", &json!({"completion_tokens": 7})).map(|u| u.tokens()),
            Some(7)
        );
        assert_eq!(CallUsage::from_openai("m", &json!({"total": 3})), None);
    }
}
