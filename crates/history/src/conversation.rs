//! A thread with its runs' events in one answer (`GET /v1/threads/{thread_id}?events=true`):
//! what a page needs to show a conversation, its newest runs first, a page at a time.

use core_context::{RunId, ThreadId, UserId};
use serde::Serialize;

use crate::model::{RunDetail, ThreadSummary};
use crate::{HistoryError, HistoryStore};

/// Items per page (threads; runs of a conversation) by default, and at most.
pub const DEFAULT_PAGE: usize = 20;
/// See [`DEFAULT_PAGE`].
pub const MAX_PAGE: usize = 100;

/// A page's size from a request's `limit` (absent: [`DEFAULT_PAGE`]), or why it is refused.
pub fn page_limit(limit: Option<&String>) -> Result<usize, String> {
    match limit.map(|l| l.parse::<usize>()) {
        None => Ok(DEFAULT_PAGE),
        Some(Ok(limit)) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(format!("limit must be a number from 1 to {MAX_PAGE}")),
    }
}

/// A page of a thread's runs with their events.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct ThreadConversation {
    /// The thread.
    #[serde(flatten)]
    pub thread: ThreadSummary,
    /// The thread's newest runs (before `before`, when asked), at most the page's `limit`,
    /// oldest first, each with its events and its sub-runs' events.
    pub runs: Vec<RunDetail>,
    /// The thread has older runs: pass this back as `before` for the page of them; null
    /// when these are its first.
    pub before: Option<String>,
}

/// `user`'s `thread` with the events of its `limit` newest runs before the run `before` (the
/// newest of all without it); `None` for another user's or a missing thread.
pub async fn conversation(
    store: &(impl HistoryStore + ?Sized),
    user: &UserId,
    thread: &ThreadId,
    limit: usize,
    before: Option<&str>,
) -> Result<Option<ThreadConversation>, HistoryError> {
    let Some(detail) = store.thread(user, thread).await? else {
        return Ok(None);
    };
    let end = match before {
        None => detail.runs.len(),
        Some(cursor) => detail
            .runs
            .iter()
            .position(|run| run.run_id == cursor)
            .ok_or_else(|| HistoryError::Cursor(cursor.to_owned()))?,
    };
    let start = end.saturating_sub(limit);
    let mut runs = Vec::with_capacity(end - start);
    for summary in &detail.runs[start..end] {
        let Ok(id) = RunId::parse(&summary.run_id) else {
            continue;
        };
        // A run erased since the thread was read (a rolled-back run) is left out.
        if let Some(run) = store.run(user, &id).await? {
            runs.push(run);
        }
    }
    Ok(Some(ThreadConversation {
        thread: detail.thread,
        runs,
        before: (start > 0).then(|| detail.runs[start].run_id.clone()),
    }))
}
