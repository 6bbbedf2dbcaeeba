//! Which tool calls wait for a person ([`ApprovalPolicy`]), and what a run's tool dispatcher
//! knows about approvals ([`ApprovalGate`]): whether its run can pause, the decisions a
//! resumed run was given, and where the results of approved calls are recorded.
//!
//! The dispatcher (`context.rs`) enforces it on every call, so no agent can run a tool that
//! needs approval without one: a call that needs it is held (the agent gets
//! `ToolError::AwaitingApproval` and pauses its run with `AgentContext::pause`), or, in a
//! run that cannot pause (a sub-run, an agent that cannot resume, a server without a store),
//! refused with `ToolError::ApprovalUnavailable`; the tool is never called.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use core_context::RunId;
use core_context::approval::{Decision, PendingCall};
use serde_json::Value;
use wildmatch::WildMatch;

/// Tool names whose calls wait for a person's approval: `--approve-tools` patterns, each a
/// tool name with `*` (any run of characters) and `?` (one character), such as `mcp_*` or
/// `calculator`. A tool may also ask for approval itself (`Tool::needs_approval`).
#[derive(Clone, Default)]
pub struct ApprovalPolicy {
    patterns: Vec<(String, WildMatch)>,
}

impl fmt::Debug for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.patterns.iter().map(|(p, _)| p))
            .finish()
    }
}

impl PartialEq for ApprovalPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.patterns().eq(other.patterns())
    }
}

/// A pattern that cannot match a tool name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "approve-tools pattern {0:?} is not a tool-name pattern: use 1 to 64 characters of a-z, 0-9, \
     `_`, `-`, and the wildcards `*` and `?` (for example `mcp_*` or `calculator`)"
)]
pub struct PolicyError(pub String);

impl ApprovalPolicy {
    /// A policy of `patterns`; each must be a tool name with wildcards.
    pub fn new<I, S>(patterns: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut checked = Vec::new();
        for pattern in patterns {
            let pattern: String = pattern.into();
            let valid = (1..=64).contains(&pattern.len())
                && pattern
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*?".contains(&b));
            if !valid {
                return Err(PolicyError(pattern));
            }
            if !checked.iter().any(|(p, _)| *p == pattern) {
                let matcher = WildMatch::new(&pattern);
                checked.push((pattern, matcher));
            }
        }
        Ok(Self { patterns: checked })
    }

    /// Whether no pattern is set (tools may still ask for approval themselves).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }

    /// Whether a pattern covers the tool `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.patterns.iter().any(|(_, m)| m.matches(name))
    }
}

/// A call a person decided, as a resumed run gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedCall {
    /// The call as the agent asked for it.
    pub call: PendingCall,
    /// What was decided.
    pub decision: Decision,
    /// The tool's result, when the call already ran (it is then never run again).
    pub result: Option<Value>,
}

/// Where the results of approved calls are recorded, under their `tool_call_id`, as each
/// completes: the record that makes a decided call run once.
#[async_trait]
pub trait ResultLog: Send + Sync {
    /// Records `result` (the value, or a failure's `{code, error}`) of `run`'s call.
    async fn record(&self, run: &RunId, tool_call_id: &str, result: &Value);
}

/// What one run's dispatcher knows about approvals. The default: no policy, no pause.
#[derive(Clone, Default)]
pub struct ApprovalGate {
    /// Which calls need approval.
    pub policy: Arc<ApprovalPolicy>,
    /// Whether the run can pause for one (a top-level run of an agent that can resume, on a
    /// server that keeps paused runs). When it cannot, a call that needs approval fails.
    pub can_pause: bool,
    /// The decisions of the calls a resumed run waited on, by `tool_call_id`.
    pub decided: Arc<HashMap<String, DecidedCall>>,
    /// Where approved calls' results go.
    pub results: Option<Arc<dyn ResultLog>>,
}

impl fmt::Debug for ApprovalGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalGate")
            .field("policy", &self.policy)
            .field("can_pause", &self.can_pause)
            .field("decided", &self.decided.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_tool_names_with_wildcards() {
        let policy = ApprovalPolicy::new(["mcp_*", "calculator", "text_stat?"]).unwrap();
        for (name, covered) in [
            ("calculator", true),
            ("calculator2", false),
            ("mcp_files_read", true),
            ("mcp_", true),
            ("mc_files", false),
            ("text_stats", true),
            ("text_stat", false),
            ("current_time", false),
        ] {
            assert_eq!(policy.covers(name), covered, "{name}");
        }
        assert!(!ApprovalPolicy::default().covers("calculator"));
        assert!(ApprovalPolicy::new(["*"]).unwrap().covers("anything"));
        let twice = ApprovalPolicy::new(["a", "a"]).unwrap();
        assert_eq!(twice.patterns().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        for bad in ["", "Calculator", "mcp.*", "a b", &"x".repeat(65)] {
            let error = ApprovalPolicy::new([bad]).unwrap_err();
            assert_eq!(error, PolicyError(bad.to_owned()));
            assert!(error.to_string().contains("is not a tool-name pattern"));
        }
    }
}
