//! The server's history (with `--store`): what it records and when. Runs are recorded when
//! they start (with the user's message), every event as it is emitted (by the server's event
//! sink, agent-server's `sink.rs`, through [`Recorder::writer`]), and runs a stopped node left `running` are marked
//! `interrupted`: all of them at start with SQLite (one node owns the file), and those of
//! nodes not seen for [`NODE_STALE`] with Postgres (many nodes share it), checked every
//! [`HEARTBEAT`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_registry::Turn;
use core_context::{RunId, ThreadId, UserId};
use history::{
    HistoryError, HistoryStore, HistoryWriter, RunStatus, SqlStore, Write, WriterConfig,
};
use serde_json::Value;

/// Earlier turns an agent gets at most, and their size at most (oldest left out first).
pub const MAX_TURNS: usize = 20;
/// See [`MAX_TURNS`].
pub const MAX_TURN_BYTES: usize = 32 * 1024;

/// Model usage is kept at least this long (two months: more than the longest budget period),
/// or as long as threads (`--history-max-age`) when that is longer.
pub const USAGE_KEPT: Duration = Duration::from_secs(62 * 24 * 3600);

/// How often a node says it is alive and looks for runs of stopped nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node not seen for this long is taken as stopped (its running runs are interrupted).
pub const NODE_STALE: Duration = Duration::from_secs(30);

/// Unix time in ms.
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `at` in Unix ms.
pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The point in time `ms` (Unix ms) names.
pub(crate) fn timestamp(ms: i64) -> core_context::Timestamp {
    core_context::Timestamp::from(
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
    )
}

/// The history of one server.
pub struct Recorder {
    store: Arc<dyn HistoryStore>,
    writer: HistoryWriter,
    node: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("node", &self.node)
            .field("shared", &self.store.is_shared())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Opens the store at `url` (running its migrations), marks the runs that a stopped
    /// server left running, and starts the writer.
    pub async fn open(url: &str) -> Result<Self, HistoryError> {
        let store: Arc<dyn HistoryStore> = Arc::new(SqlStore::connect(url).await?);
        let node = format!(
            "node-{}",
            RunId::generate().as_str().trim_start_matches("run_")
        );
        let now = now_ms();
        // One node owns a SQLite file: whatever it left running was interrupted.
        let seen_before = if store.is_shared() {
            now - i64::try_from(NODE_STALE.as_millis()).unwrap_or(i64::MAX)
        } else {
            i64::MAX
        };
        let interrupted = store.interrupt_orphans(seen_before, &node, now).await?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "history: runs a stopped server left running are marked interrupted"
            );
        }
        store.heartbeat(&node, now).await?;
        let writer = HistoryWriter::start(Arc::clone(&store), WriterConfig::default());
        Ok(Self {
            store,
            writer,
            node,
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    /// This node's name in the history (runs it executes are recorded under it).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The writer.
    pub fn writer(&self) -> &HistoryWriter {
        &self.writer
    }

    /// Records that `run` started (before the engine runs it, so it precedes its events).
    pub fn run_started(
        &self,
        user: &UserId,
        run: &RunId,
        thread: &ThreadId,
        agent: &str,
        message: &str,
    ) {
        self.writer.record(Write::RunStarted {
            user: user.clone(),
            run_id: run.clone(),
            thread_id: thread.clone(),
            agent: agent.to_owned(),
            message: message.to_owned(),
            node: self.node.clone(),
            at_ms: now_ms(),
        });
    }

    /// Forgets a run recorded as started that the engine refused.
    pub fn run_refused(&self, run: &RunId, thread: &ThreadId) {
        self.writer.record(Write::RunRefused {
            run_id: run.clone(),
            thread_id: thread.clone(),
        });
    }

    /// The thread's earlier turns for a new run: each completed run's message and answer,
    /// and each interrupted run's message and partial answer (marked as cut short), oldest
    /// first, the newest [`MAX_TURNS`] that fit in [`MAX_TURN_BYTES`]. Waits for the writer
    /// first, so a follow-up sent right after an answer sees it.
    pub async fn turns(&self, user: &UserId, thread: &ThreadId) -> Vec<Turn> {
        self.writer.flush().await;
        let detail = match self.store.thread(user, thread).await {
            Ok(Some(detail)) => detail,
            Ok(None) => return Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "history: cannot read the thread's earlier turns; the run starts without them");
                return Vec::new();
            }
        };
        let runs: Vec<_> = detail
            .runs
            .into_iter()
            .filter(|run| {
                (run.status == RunStatus::Completed && run.outcome.is_some())
                    || run.status == RunStatus::Interrupted
            })
            .collect();
        let skip = runs.len().saturating_sub(MAX_TURNS);
        let mut turns: Vec<Turn> = Vec::with_capacity(runs.len() - skip);
        for run in runs.into_iter().skip(skip) {
            match run.outcome {
                Some(outcome) if run.status == RunStatus::Completed => turns.push(Turn {
                    user: run.message,
                    assistant: answer_text(&outcome),
                }),
                _ => {
                    let chunks = self.streamed_text(user, &run.run_id).await;
                    turns.push(partial_turn(run.message, &chunks));
                }
            }
        }
        let mut bytes = 0;
        let mut keep = 0;
        for turn in turns.iter().rev() {
            bytes += turn.user.len() + turn.assistant.len();
            if bytes > MAX_TURN_BYTES {
                break;
            }
            keep += 1;
        }
        turns.drain(..turns.len() - keep);
        turns
    }

    /// The text run `run` streamed (its `agent_response_chunk`s), for a run that did not
    /// finish.
    async fn streamed_text(&self, user: &UserId, run: &str) -> Vec<String> {
        let Ok(run) = RunId::parse(run) else {
            return Vec::new();
        };
        match self.store.run(user, &run).await {
            Ok(Some(detail)) => detail
                .events
                .iter()
                .filter(|event| {
                    event["type"] == "agent_response_chunk" && event["run_id"] == run.as_str()
                })
                .filter_map(|event| event["data"]["delta"].as_str().map(str::to_owned))
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "history: cannot read an interrupted run's partial answer");
                Vec::new()
            }
        }
    }

    /// Erases threads older than `max_age` and each user's past `max_threads`.
    pub async fn prune(&self, max_age: Duration, max_threads: u64) {
        let ms = |age: Duration| now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        match self.store.prune(ms(max_age), max_threads).await {
            Ok(0) => {}
            Ok(threads) => {
                tracing::info!(threads, "history: erased threads past the retention limits")
            }
            Err(error) => tracing::warn!(%error, "history: cannot apply the retention limits now"),
        }
        // Model usage is kept as long as threads, and at least USAGE_KEPT: longer than any
        // budget period, whose count must not lose a call (erased threads keep their usage).
        match self.store.prune_usage(ms(max_age.max(USAGE_KEPT))).await {
            Ok(0) => {}
            Ok(calls) => tracing::info!(calls, "history: erased model usage past its retention"),
            Err(error) => tracing::warn!(%error, "history: cannot erase old model usage now"),
        }
    }

    /// Says this node is alive and interrupts the runs of nodes that stopped (Postgres).
    pub async fn tick(&self) {
        let now = now_ms();
        if let Err(error) = self.store.heartbeat(&self.node, now).await {
            tracing::warn!(%error, "history: cannot record this node's heartbeat");
        }
        if self.store.is_shared() {
            let stale = now - i64::try_from(NODE_STALE.as_millis()).unwrap_or(i64::MAX);
            match self.store.interrupt_orphans(stale, &self.node, now).await {
                Ok(0) => {}
                Ok(runs) => tracing::warn!(
                    runs,
                    "history: runs of a stopped server are marked interrupted"
                ),
                Err(error) => {
                    tracing::warn!(%error, "history: cannot look for runs of stopped servers")
                }
            }
        }
    }
}

/// The partial answer of a run ended by a new message: its streamed text, marked as cut
/// short (so the next run's model knows it was not finished).
fn partial_turn(message: String, chunks: &[String]) -> Turn {
    let text = chunks.concat();
    let assistant = if text.trim().is_empty() {
        "(interrupted by the user's next message before answering)".to_owned()
    } else {
        format!("{text}\n\n(interrupted by the user's next message)")
    };
    Turn {
        user: message,
        assistant,
    }
}

/// An answer as text: a string result as it is, an object's `answer` string, else the JSON.
fn answer_text(outcome: &Value) -> String {
    match outcome {
        Value::String(text) => text.clone(),
        Value::Object(fields) => match fields.get("answer") {
            Some(Value::String(text)) => text.clone(),
            _ => outcome.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_as_text() {
        let table = [
            (json!("84"), "84"),
            (json!({"answer": "12*7 = 84", "steps": 2}), "12*7 = 84"),
            (json!({"total": 84}), r#"{"total":84}"#),
            (json!(84), "84"),
        ];
        for (outcome, text) in table {
            assert_eq!(answer_text(&outcome), text, "{outcome}");
        }
    }
}
