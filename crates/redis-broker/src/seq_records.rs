//! The sequencer's run records (sequencer mode): the changes its appended events make to
//! their runs' records (`record_scripts`), applied once Redis confirmed the appends, in the
//! order of the log, by one task, so that a record never takes a later change before an
//! earlier one. A record lags its log meanwhile, and for good if the holder dies first: a
//! reaper reads the log on top of it (`record_scripts`' `from_log`).

use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use core_context::{RunId, UserId};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::publisher::{RETRY, retryable};

/// One appended event that changes its run's record.
pub(crate) struct RecordChange {
    pub(crate) user: UserId,
    pub(crate) run: RunId,
    /// The event's JSON, with its opening brace.
    pub(crate) body: std::sync::Arc<str>,
    change: Change,
}

/// What a change does, as far as [`compact`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Started,
    /// A tool call begun (its id, when it reads plainly).
    Called(Option<String>),
    /// A tool call completed.
    Completed(Option<String>),
    Ended,
}

impl RecordChange {
    /// The change `item`, just appended, makes to its run's record, if any.
    pub(crate) fn of(item: &crate::forwarded::Item) -> Option<Self> {
        let run = item.run.as_ref()?;
        let change = change_of(item.rest())?;
        Some(Self {
            user: item.user.clone(),
            run: run.clone(),
            body: std::sync::Arc::clone(&item.body),
            change,
        })
    }
}

/// What an event (its JSON without the opening brace) changes on its run's record, read by
/// its type (as `record_scripts`' `event_kind` reads it).
fn change_of(rest: &str) -> Option<Change> {
    let after = rest.strip_prefix("\"type\":\"")?;
    let call = |kind: &str| {
        let data = after.strip_prefix(kind)?;
        let id = data.strip_prefix("\",\"data\":{\"tool_call_id\":\"")?;
        let (id, _) = id.split_once('"')?;
        (!id.contains('\\')).then(|| id.to_owned())
    };
    if after.starts_with("agent_started\"") {
        Some(Change::Started)
    } else if after.starts_with("tool_executing\"") {
        Some(Change::Called(call("tool_executing")))
    } else if after.starts_with("tool_completed\"") {
        Some(Change::Completed(call("tool_completed")))
    } else if ["agent_completed\"", "agent_error\"", "agent_cancelled\""]
        .iter()
        .any(|kind| after.starts_with(kind))
    {
        Some(Change::Ended)
    } else {
        None
    }
}

/// Drops the changes that undo each other within `changes` (in log order): a tool call begun
/// and completed (its `open:` set and taken away), and a run's start when its end is there
/// too (a record with `ended` says all a reaper needs; a sub-run's `sub:` set and taken
/// away). The record ends as the changes would leave it, with far fewer calls to Redis.
fn compact(changes: Vec<RecordChange>) -> Vec<RecordChange> {
    use std::collections::HashMap;
    let mut keep = vec![true; changes.len()];
    let mut open: HashMap<(&UserId, &RunId, &str), usize> = HashMap::new();
    let mut started: HashMap<(&UserId, &RunId), usize> = HashMap::new();
    for (at, change) in changes.iter().enumerate() {
        let run = (&change.user, &change.run);
        match &change.change {
            Change::Started => {
                started.insert(run, at);
            }
            Change::Called(Some(call)) => {
                open.insert((run.0, run.1, call.as_str()), at);
            }
            Change::Completed(Some(call)) => {
                if let Some(begun) = open.remove(&(run.0, run.1, call.as_str())) {
                    keep[begun] = false;
                    keep[at] = false;
                }
            }
            Change::Ended => {
                if let Some(start) = started.remove(&run) {
                    keep[start] = false;
                }
            }
            Change::Called(None) | Change::Completed(None) => {}
        }
    }
    changes
        .into_iter()
        .zip(keep)
        .filter_map(|(change, keep)| keep.then_some(change))
        .collect()
}

/// How long changes gather before they are applied (compacted): a record lags its log this
/// much more, which a reaper reads on top of it.
const GATHER: Duration = Duration::from_millis(500);

/// Changes applied in one script call at most (a call holds Redis while it runs).
const PER_CALL: usize = 256;

/// Starts the task applying record changes; it ends when the sender is dropped.
pub(crate) fn spawn(prefix: String, conn: Conn) -> mpsc::UnboundedSender<Vec<RecordChange>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(apply(prefix, conn, receiver));
    sender
}

async fn apply(
    prefix: String,
    mut conn: Conn,
    mut changes: mpsc::UnboundedReceiver<Vec<RecordChange>>,
) {
    let script = crate::record_scripts::record();
    let mut waiting: Vec<RecordChange> = Vec::new();
    let mut applied_at = Instant::now();
    while let Some(batch) = changes.recv().await {
        waiting.extend(batch);
        tokio::time::sleep(GATHER.saturating_sub(applied_at.elapsed())).await;
        while let Ok(batch) = changes.try_recv() {
            waiting.extend(batch);
        }
        applied_at = Instant::now();
        let gathered = compact(std::mem::take(&mut waiting));
        // On a Redis Cluster a call's keys share one slot: calls per slot, each routed by one
        // of its users' keys.
        let calls = crate::calls::in_calls(
            conn.is_cluster(),
            &gathered,
            |change| change.user.as_str(),
            PER_CALL,
        );
        for call in calls {
            let mut invocation = script.prepare_invoke();
            if let Some(first) = call.first() {
                invocation.key(crate::scripts::StreamKeys::new(&prefix, &first.user).meta);
            }
            for change in &call {
                let rest = change.body.strip_prefix('{').unwrap_or(&change.body);
                invocation
                    .arg(crate::scripts::user_base(&prefix, &change.user))
                    .arg(change.run.as_str())
                    .arg(rest);
            }
            let mut pauses = RETRY.build();
            while let Err(error) = invocation.invoke_async::<()>(&mut conn).await {
                if !retryable(&error) {
                    // A reaper reads these runs' entries in the log on top of their records.
                    tracing::error!(%error, changes = call.len(), "redis broker: Redis refused changes to run records; a reaper reads them from the log");
                    break;
                }
                tracing::debug!(%error, "redis broker: cannot change run records yet; retrying");
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core_context::{AgentEvent, EncodedEvent, EventKind, RunScope, ThreadId};
    use serde_json::json;

    use super::*;

    fn change(user: &str, scope: &RunScope, kind: EventKind) -> RecordChange {
        let event: AgentEvent = scope.event(kind);
        let body = EncodedEvent::encode(&event).expect("encodes").json;
        let rest = body.strip_prefix('{').expect("an object").to_owned();
        RecordChange {
            user: UserId::parse(user).expect("valid"),
            run: scope.run_id.clone(),
            change: change_of(&rest).expect("changes a record"),
            body,
        }
    }

    fn scope() -> RunScope {
        RunScope {
            run_id: RunId::generate(),
            parent_run_id: None,
            thread_id: ThreadId::generate(),
            agent_name: std::sync::Arc::from("assistant"),
        }
    }

    fn call(id: &str) -> EventKind {
        EventKind::ToolExecuting {
            tool_call_id: id.into(),
            tool_name: "calculator".into(),
            arguments: json!({}),
        }
    }

    fn done(id: &str) -> EventKind {
        EventKind::ToolCompleted {
            tool_call_id: id.into(),
            tool_name: "calculator".into(),
            result: json!(1),
            is_error: false,
            duration_ms: 1,
        }
    }

    /// Calls begun and completed, and starts of runs that ended, go; a call still open, an
    /// escaped call id, another user's same run id and a start without its end stay, in order.
    #[test]
    fn changes_that_undo_each_other_are_dropped_and_the_rest_kept_in_order() {
        let (a, b) = (scope(), scope());
        let started = || EventKind::AgentStarted {
            message: "go".into(),
        };
        let ended = || EventKind::AgentCompleted {
            result: json!("ok"),
            duration_ms: 1,
            usage: None,
        };
        let changes = vec![
            change("alice", &a, started()),
            change("alice", &a, call("c1")),
            change("alice", &a, call("c2")),
            change("bob", &a, done("c1")),
            change("alice", &a, done("c1")),
            change("alice", &a, call("c\"3")),
            change("alice", &a, done("c\"3")),
            change("alice", &b, started()),
            change("alice", &a, ended()),
        ];
        assert_eq!(
            changes[5].change,
            Change::Called(None),
            "an escaped id is not read"
        );
        let kept: Vec<(String, Change)> = compact(changes)
            .into_iter()
            .map(|c| {
                (
                    format!("{}/{}", c.user.as_str(), c.run == a.run_id),
                    c.change,
                )
            })
            .collect();
        let expected = [
            ("alice/true", Change::Called(Some("c2".into()))),
            ("bob/true", Change::Completed(Some("c1".into()))),
            ("alice/true", Change::Called(None)),
            ("alice/true", Change::Completed(None)),
            ("alice/false", Change::Started),
            ("alice/true", Change::Ended),
        ];
        let expected: Vec<(String, Change)> = expected
            .into_iter()
            .map(|(who, change)| (who.to_owned(), change))
            .collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn only_events_that_change_a_record_are_read_as_changes() {
        assert_eq!(change_of("\"type\":\"agent_thinking\",\"data\":{}"), None);
        assert_eq!(
            change_of("\"type\":\"agent_error\",\"data\":{}"),
            Some(Change::Ended)
        );
        assert_eq!(
            change_of(
                "\"type\":\"tool_completed\",\"data\":{\"tool_call_id\":\"x\",\"tool_name\":\"t\"}"
            ),
            Some(Change::Completed(Some("x".into())))
        );
    }
}
