//! The server's history (with `--store`): what it records and when. Runs are recorded when
//! they start (with the user's message), every event as it is emitted (the engine's sink is
//! the bridge behind [`RecordingSink`]), and runs a stopped node left `running` are marked
//! `interrupted`: all of them at start with SQLite (one node owns the file), and those of
//! nodes not seen for [`NODE_STALE`] with Postgres (many nodes share it), checked every
//! [`HEARTBEAT`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use core_context::{AgentEvent, EmitError, EventSink, RunId, ThreadId, UserId};
use history::{HistoryError, HistoryStore, HistoryWriter, SqlStore, Write, WriterConfig};

/// How often a node says it is alive and looks for runs of stopped nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node not seen for this long is taken as stopped (its running runs are interrupted).
pub const NODE_STALE: Duration = Duration::from_secs(30);

/// Unix time in ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// The engine's sink with history: records each event, then hands it to the live stream.
pub struct RecordingSink {
    /// Where events go live.
    pub live: Arc<dyn EventSink>,
    /// Where they are recorded.
    pub writer: HistoryWriter,
}

impl EventSink for RecordingSink {
    fn emit(&self, user_id: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        self.writer.record_event(&event, now_ms());
        self.live.emit(user_id, event)
    }
}
