//! The sequencer's run records (sequencer mode): the changes its appended events make to
//! their runs' records (`record_scripts`), applied once Redis confirmed the appends, in the
//! order of the log, by one task, so that a record never takes a later change before an
//! earlier one. A record lags its log meanwhile, and for good if the holder dies first: a
//! reaper reads the log on top of it (`record_scripts`' `from_log`).

use std::time::Duration;

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
}

impl RecordChange {
    /// The change `item`, just appended, makes to its run's record, if any.
    pub(crate) fn of(item: &crate::forwarded::Item) -> Option<Self> {
        let run = item.run.as_ref()?;
        crate::record_scripts::changes_record(item.rest()).then(|| Self {
            user: item.user.clone(),
            run: run.clone(),
            body: std::sync::Arc::clone(&item.body),
        })
    }
}

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
    while let Some(batch) = changes.recv().await {
        waiting.extend(batch);
        while let Ok(batch) = changes.try_recv() {
            waiting.extend(batch);
        }
        for call in waiting.chunks(PER_CALL) {
            let mut invocation = script.prepare_invoke();
            for change in call {
                let rest = change.body.strip_prefix('{').unwrap_or(&change.body);
                invocation
                    .arg(format!("{prefix}:{{{}}}", change.user.as_str()))
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
        waiting.clear();
    }
}
