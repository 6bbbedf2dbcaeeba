//! The immutable per-request context every engine is built from.
//!
//! A [`UserExecutionContext`] is made once, by [`UserExecutionContext::builder`], and never
//! changes: it has no setters, and its maps are shared read-only. A child operation gets a
//! new context from [`create_child_context`](UserExecutionContext::create_child_context),
//! which keeps the user, thread and run, issues a new request id and is refused beyond
//! [`MAX_OPERATION_DEPTH`]. Cloning a context is cheap (reference counts only).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::event::Timestamp;
use crate::id::{ConnectionId, RequestId, RunId, ThreadId, UserId};

/// How deep child contexts may nest (the root is depth 0).
pub const MAX_OPERATION_DEPTH: u8 = 10;
/// The most entries each of `agent_context` and `audit_metadata` may hold.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 64;

/// Keys that would shadow a typed field of the context in its audit trail.
pub const RESERVED_KEYS: &[&str] = &[
    "user_id",
    "thread_id",
    "run_id",
    "request_id",
    "connection_id",
    "correlation_id",
    "parent_request_id",
    "operation",
    "operation_depth",
    "created_at",
    "deadline",
];

/// Why a context could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// A metadata key is reserved for a typed field.
    #[error(
        "{map} key {key:?} is reserved (it names a field of the context itself); pick another key"
    )]
    ReservedKey {
        /// `agent_context` or `audit_metadata`.
        map: &'static str,
        /// The key.
        key: String,
    },
    /// A metadata key is empty, too long or not printable ASCII.
    #[error(
        "{map} key {key:?} is invalid: keys are 1 to {MAX_METADATA_KEY_LEN} printable ASCII characters"
    )]
    InvalidKey {
        /// `agent_context` or `audit_metadata`.
        map: &'static str,
        /// The key.
        key: String,
    },
    /// A metadata map has too many entries.
    #[error("{map} has more than {MAX_METADATA_ENTRIES} entries")]
    TooManyEntries {
        /// `agent_context` or `audit_metadata`.
        map: &'static str,
    },
    /// A child context would nest deeper than [`MAX_OPERATION_DEPTH`].
    #[error(
        "operation {operation:?} would nest at depth {depth}; the limit is {MAX_OPERATION_DEPTH} (is an agent calling itself?)"
    )]
    DepthExceeded {
        /// The refused operation.
        operation: String,
        /// The depth it would have had.
        depth: u8,
    },
    /// A child operation was given an empty name.
    #[error("a child operation needs a non-empty name")]
    EmptyOperation,
}

/// Everything an engine needs to know about the request it serves. Immutable; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct UserExecutionContext {
    user_id: UserId,
    thread_id: ThreadId,
    run_id: RunId,
    request_id: RequestId,
    connection_id: Option<ConnectionId>,
    created_at: SystemTime,
    agent_context: Arc<BTreeMap<String, Value>>,
    audit_metadata: Arc<BTreeMap<String, Value>>,
    operation: Option<Arc<str>>,
    operation_depth: u8,
    parent_request_id: Option<RequestId>,
    cancellation: CancellationToken,
    deadline: Option<Instant>,
}

impl UserExecutionContext {
    /// Starts a context for `user_id`. Thread, run and request ids are generated unless set.
    pub fn builder(user_id: UserId) -> UserExecutionContextBuilder {
        UserExecutionContextBuilder {
            user_id,
            thread_id: None,
            run_id: None,
            request_id: None,
            connection_id: None,
            agent_context: BTreeMap::new(),
            audit_metadata: BTreeMap::new(),
            cancellation: None,
            deadline: None,
        }
    }

    /// The authenticated user.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }
    /// The conversation.
    pub fn thread_id(&self) -> &ThreadId {
        &self.thread_id
    }
    /// The run this request belongs to.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }
    /// This request.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
    /// The connection the request came from, if any.
    pub fn connection_id(&self) -> Option<&ConnectionId> {
        self.connection_id.as_ref()
    }
    /// When the context was built.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }
    /// Agent-specific values handed in by the caller.
    pub fn agent_context(&self) -> &BTreeMap<String, Value> {
        &self.agent_context
    }
    /// Values recorded in the audit trail.
    pub fn audit_metadata(&self) -> &BTreeMap<String, Value> {
        &self.audit_metadata
    }
    /// The name of the child operation this context was made for (`None` for a root context).
    pub fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }
    /// How many child steps lie between this context and its root (the root is 0).
    pub fn operation_depth(&self) -> u8 {
        self.operation_depth
    }
    /// The request this one is a child of.
    pub fn parent_request_id(&self) -> Option<&RequestId> {
        self.parent_request_id.as_ref()
    }
    /// Cancelled when the request is abandoned; children's tokens are children of this one.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }
    /// When the request must be finished by, if it has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    /// Time left until the deadline (zero once past it), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A context for a child operation: same user, thread and run, a new request id, depth + 1,
    /// a cancellation token that is a child of this one (cancelling the parent cancels it), the
    /// same deadline and maps. Refused beyond [`MAX_OPERATION_DEPTH`].
    pub fn create_child_context(&self, operation: &str) -> Result<Self, ContextError> {
        if operation.trim().is_empty() {
            return Err(ContextError::EmptyOperation);
        }
        let depth = self.operation_depth + 1;
        if depth > MAX_OPERATION_DEPTH {
            return Err(ContextError::DepthExceeded {
                operation: operation.to_owned(),
                depth,
            });
        }
        Ok(Self {
            user_id: self.user_id.clone(),
            thread_id: self.thread_id.clone(),
            run_id: self.run_id.clone(),
            request_id: RequestId::generate(),
            connection_id: self.connection_id.clone(),
            created_at: SystemTime::now(),
            agent_context: Arc::clone(&self.agent_context),
            audit_metadata: Arc::clone(&self.audit_metadata),
            operation: Some(Arc::from(operation)),
            operation_depth: depth,
            parent_request_id: Some(self.request_id.clone()),
            cancellation: self.cancellation.child_token(),
            deadline: self.deadline,
        })
    }

    /// The context of one run of this request: the same request with run id `run_id` and a
    /// cancellation token that is a child of this one. The engine gives every run it starts
    /// (pipeline steps, retries) its own run context, so agents always see their run's id.
    pub fn for_run(&self, run_id: RunId) -> Self {
        Self {
            run_id,
            cancellation: self.cancellation.child_token(),
            ..self.clone()
        }
    }

    /// A string that ties log lines of this request together: `user:thread:run:request`.
    pub fn correlation_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.user_id, self.thread_id, self.run_id, self.request_id
        )
    }

    /// `key` scoped to this user and thread (`user:thread:key`), for caches and stores shared
    /// between users. Ids cannot contain `:`, so two users' keys never collide.
    pub fn scoped_key(&self, key: &str) -> String {
        format!("{}:{}:{}", self.user_id, self.thread_id, key)
    }

    /// A serialisable record of who did what, for audit logs.
    pub fn audit_trail(&self) -> AuditTrail {
        AuditTrail {
            correlation_id: self.correlation_id(),
            user_id: self.user_id.clone(),
            thread_id: self.thread_id.clone(),
            run_id: self.run_id.clone(),
            request_id: self.request_id.clone(),
            connection_id: self.connection_id.clone(),
            parent_request_id: self.parent_request_id.clone(),
            operation: self.operation.as_deref().map(str::to_owned),
            operation_depth: self.operation_depth,
            created_at: Timestamp::from(self.created_at),
            has_deadline: self.deadline.is_some(),
            cancelled: self.cancellation.is_cancelled(),
            metadata: (*self.audit_metadata).clone(),
        }
    }
}

/// The audit record of a context, see [`UserExecutionContext::audit_trail`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditTrail {
    /// See [`UserExecutionContext::correlation_id`].
    pub correlation_id: String,
    /// The user.
    pub user_id: UserId,
    /// The thread.
    pub thread_id: ThreadId,
    /// The run.
    pub run_id: RunId,
    /// The request.
    pub request_id: RequestId,
    /// The connection, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// The parent request, for child contexts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_request_id: Option<RequestId>,
    /// The child operation's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Nesting depth.
    pub operation_depth: u8,
    /// When the context was built.
    pub created_at: Timestamp,
    /// Whether a deadline is set.
    pub has_deadline: bool,
    /// Whether the request was cancelled.
    pub cancelled: bool,
    /// The caller's audit metadata.
    pub metadata: BTreeMap<String, Value>,
}

/// Builds a [`UserExecutionContext`]; see [`UserExecutionContext::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct UserExecutionContextBuilder {
    user_id: UserId,
    thread_id: Option<ThreadId>,
    run_id: Option<RunId>,
    request_id: Option<RequestId>,
    connection_id: Option<ConnectionId>,
    agent_context: BTreeMap<String, Value>,
    audit_metadata: BTreeMap<String, Value>,
    cancellation: Option<CancellationToken>,
    deadline: Option<Instant>,
}

impl UserExecutionContextBuilder {
    /// Sets the thread (a new one is generated otherwise).
    pub fn thread_id(mut self, id: ThreadId) -> Self {
        self.thread_id = Some(id);
        self
    }
    /// Sets the run (a new one is generated otherwise).
    pub fn run_id(mut self, id: RunId) -> Self {
        self.run_id = Some(id);
        self
    }
    /// Sets the request (a new one is generated otherwise).
    pub fn request_id(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }
    /// Sets the connection the request came from.
    pub fn connection_id(mut self, id: ConnectionId) -> Self {
        self.connection_id = Some(id);
        self
    }
    /// Adds an agent-specific value (validated at [`build`](Self::build)).
    pub fn agent_context(mut self, key: impl Into<String>, value: Value) -> Self {
        self.agent_context.insert(key.into(), value);
        self
    }
    /// Adds a value to the audit metadata (validated at [`build`](Self::build)).
    pub fn audit(mut self, key: impl Into<String>, value: Value) -> Self {
        self.audit_metadata.insert(key.into(), value);
        self
    }
    /// Uses `token` as the request's cancellation token (a fresh one otherwise).
    pub fn cancellation(mut self, token: CancellationToken) -> Self {
        self.cancellation = Some(token);
        self
    }
    /// Sets a deadline `after` from now.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.deadline = Some(Instant::now() + after);
        self
    }
    /// Sets an absolute deadline.
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Validates the metadata and builds the context.
    pub fn build(self) -> Result<UserExecutionContext, ContextError> {
        validate_map("agent_context", &self.agent_context)?;
        validate_map("audit_metadata", &self.audit_metadata)?;
        Ok(UserExecutionContext {
            user_id: self.user_id,
            thread_id: self.thread_id.unwrap_or_else(ThreadId::generate),
            run_id: self.run_id.unwrap_or_else(RunId::generate),
            request_id: self.request_id.unwrap_or_else(RequestId::generate),
            connection_id: self.connection_id,
            created_at: SystemTime::now(),
            agent_context: Arc::new(self.agent_context),
            audit_metadata: Arc::new(self.audit_metadata),
            operation: None,
            operation_depth: 0,
            parent_request_id: None,
            cancellation: self.cancellation.unwrap_or_default(),
            deadline: self.deadline,
        })
    }
}

fn validate_map(map: &'static str, entries: &BTreeMap<String, Value>) -> Result<(), ContextError> {
    if entries.len() > MAX_METADATA_ENTRIES {
        return Err(ContextError::TooManyEntries { map });
    }
    for key in entries.keys() {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(ContextError::ReservedKey {
                map,
                key: key.clone(),
            });
        }
        let printable = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN || !printable {
            return Err(ContextError::InvalidKey {
                map,
                key: key.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid id")
    }

    #[test]
    fn builder_generates_missing_ids_and_keeps_given_ones() {
        let thread = ThreadId::parse("thr_given").expect("valid");
        let ctx = UserExecutionContext::builder(alice())
            .thread_id(thread.clone())
            .agent_context("locale", json!("de-CH"))
            .audit("ip", json!("10.0.0.1"))
            .build()
            .expect("valid context");
        assert_eq!(ctx.user_id().as_str(), "alice");
        assert_eq!(ctx.thread_id(), &thread);
        assert!(ctx.run_id().as_str().starts_with("run_"));
        assert!(ctx.request_id().as_str().starts_with("req_"));
        assert_eq!(ctx.agent_context()["locale"], json!("de-CH"));
        assert_eq!(ctx.operation_depth(), 0);
        assert!(ctx.parent_request_id().is_none());
    }

    /// Builds a context with one `agent_context` entry and one `audit_metadata` entry.
    fn check(agent_key: &str, audit_key: &str, expected: Result<(), &str>) {
        let got = UserExecutionContext::builder(alice())
            .agent_context(agent_key, json!(1))
            .audit(audit_key, json!(2))
            .build()
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(fragment)) => assert!(msg.contains(fragment), "{msg:?} vs {fragment:?}"),
            _ => panic!("({agent_key:?}, {audit_key:?}): expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn metadata_validation_table() {
        let long = "k".repeat(MAX_METADATA_KEY_LEN + 1);
        let table: &[(&str, &str, Result<(), &str>)] = &[
            ("locale", "ip", Ok(())),
            (
                "user_id",
                "ip",
                Err("agent_context key \"user_id\" is reserved"),
            ),
            (
                "locale",
                "run_id",
                Err("audit_metadata key \"run_id\" is reserved"),
            ),
            ("", "ip", Err("agent_context key \"\" is invalid")),
            ("has space", "ip", Err("is invalid")),
            (&long, "ip", Err("is invalid")),
        ];
        for (agent_key, audit_key, expected) in table {
            check(agent_key, audit_key, *expected);
        }
    }

    #[test]
    fn too_many_entries_is_refused() {
        let mut builder = UserExecutionContext::builder(alice());
        for i in 0..=MAX_METADATA_ENTRIES {
            builder = builder.audit(format!("k{i}"), json!(i));
        }
        assert_eq!(
            builder.build().map(|_| ()),
            Err(ContextError::TooManyEntries {
                map: "audit_metadata"
            })
        );
    }

    #[test]
    fn child_context_keeps_identity_and_nests_to_the_limit() {
        let root = UserExecutionContext::builder(alice())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("valid");
        let mut ctx = root.clone();
        for depth in 1..=MAX_OPERATION_DEPTH {
            let child = ctx
                .create_child_context("sub_agent")
                .expect("within the limit");
            assert_eq!(child.user_id(), root.user_id());
            assert_eq!(child.thread_id(), root.thread_id());
            assert_eq!(child.run_id(), root.run_id());
            assert_ne!(child.request_id(), ctx.request_id());
            assert_eq!(child.parent_request_id(), Some(ctx.request_id()));
            assert_eq!(child.operation_depth(), depth);
            assert_eq!(child.operation(), Some("sub_agent"));
            assert_eq!(child.deadline(), root.deadline());
            ctx = child;
        }
        let err = ctx.create_child_context("one_more").expect_err("too deep");
        assert_eq!(
            err,
            ContextError::DepthExceeded {
                operation: "one_more".into(),
                depth: MAX_OPERATION_DEPTH + 1
            }
        );
        assert_eq!(
            root.create_child_context(" ").map(|_| ()),
            Err(ContextError::EmptyOperation)
        );
    }

    #[test]
    fn cancelling_a_parent_cancels_its_children_but_not_the_reverse() {
        let root = UserExecutionContext::builder(alice())
            .build()
            .expect("valid");
        let child = root.create_child_context("a").expect("valid");
        let grandchild = child.create_child_context("b").expect("valid");
        grandchild.cancellation().cancel();
        assert!(!root.cancellation().is_cancelled());
        root.cancellation().cancel();
        assert!(child.cancellation().is_cancelled());
    }

    #[test]
    fn correlation_scoped_key_and_audit_trail() {
        let ctx = UserExecutionContext::builder(alice())
            .thread_id(ThreadId::parse("thr_1a").expect("valid"))
            .run_id(RunId::parse("run_1a").expect("valid"))
            .request_id(RequestId::parse("req_1a").expect("valid"))
            .audit("source", json!("ws"))
            .build()
            .expect("valid");
        assert_eq!(ctx.correlation_id(), "alice:thr_1a:run_1a:req_1a");
        assert_eq!(ctx.scoped_key("memory"), "alice:thr_1a:memory");
        let bob = UserExecutionContext::builder(UserId::parse("bob").expect("valid"))
            .thread_id(ThreadId::parse("thr_1a").expect("valid"))
            .build()
            .expect("valid");
        assert_ne!(bob.scoped_key("memory"), ctx.scoped_key("memory"));
        let trail = serde_json::to_value(ctx.audit_trail()).expect("encode");
        assert_eq!(trail["correlation_id"], "alice:thr_1a:run_1a:req_1a");
        assert_eq!(trail["user_id"], "alice");
        assert_eq!(trail["operation_depth"], 0);
        assert_eq!(trail["metadata"]["source"], "ws");
        assert_eq!(trail["cancelled"], false);
    }
}
