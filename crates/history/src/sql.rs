//! [`SqlStore`]: the history on sqlx's `Any` driver: SQLite or Postgres by URL, the same
//! portable SQL for both (`$N` parameters, which SQLite reads in order too).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use core_context::{RunId, ThreadId, UserId};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use crate::model::{Page, RunDetail, RunStatus, RunSummary, ThreadDetail, ThreadSummary, Write};
use crate::{HistoryError, HistoryStore};

/// The migrations, embedded from `crates/history/migrations` (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "history", include_str!("../migrations/0001_history.sql")),
    (
        2,
        "event chunks",
        include_str!("../migrations/0002_event_chunks.sql"),
    ),
    (
        3,
        "run usage",
        include_str!("../migrations/0003_run_usage.sql"),
    ),
    (
        4,
        "packed events",
        include_str!("../migrations/0004_packed_events.sql"),
    ),
    (
        5,
        "approvals",
        include_str!("../migrations/0005_approvals.sql"),
    ),
    (
        6,
        "model usage",
        include_str!("../migrations/0006_model_usage.sql"),
    ),
    (
        7,
        "budget waits",
        include_str!("../migrations/0007_budget_waits.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The history in SQLite or Postgres.
///
/// Two pools: one for reads and the housekeeping statements, and one connection for the
/// writer's batches, opened by the first batch (on the writer's thread, so a SQLite
/// connection's worker thread inherits the writer's lower priority).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    writes: AnyPool,
    shared: bool,
    /// The next chunk number of each run started through this store and not ended.
    chunks: Arc<Mutex<HashMap<String, i64>>>,
}

const RUN_COLUMNS: &str =
    "id, thread_id, agent, message, status, outcome, error_code, usage, started_ms, finished_ms";

/// WAL pages the writer's SQLite connection gathers before it copies them into the
/// database (SQLite's default is 1,000: 4 MiB). Fewer, larger checkpoints cost less per
/// event under a burst; the WAL file stays around this size (40 MiB) once it grew to it.
const WAL_AUTOCHECKPOINT: u32 = 10_000;

/// How a pool's SQLite connections are tuned.
#[derive(Clone, Copy)]
struct Tuning {
    /// WAL pages gathered before a checkpoint.
    checkpoint: u32,
    /// SQLite's page cache per connection, KiB.
    cache_kib: u32,
}

/// The readers' pool: SQLite's defaults.
const READS: Tuning = Tuning {
    checkpoint: 1_000,
    cache_kib: 2_000,
};

/// The writer's one connection: see [`WAL_AUTOCHECKPOINT`]; a 64 MiB page cache keeps the
/// tables' and indexes' pages a burst touches in memory (with the default 2 MiB, the profile
/// of a burst showed its inserts reading pages back from the file, `pread` in the kernel).
const WRITES: Tuning = Tuning {
    checkpoint: WAL_AUTOCHECKPOINT,
    cache_kib: 64 * 1024,
};

/// Pool options: SQLite connections run in WAL mode (readers do not wait for the writer; a
/// busy writer is waited for), tuned by `tuning`.
fn options(sqlite: bool, connections: u32, tuning: Tuning) -> AnyPoolOptions {
    let Tuning {
        checkpoint,
        cache_kib,
    } = tuning;
    let options = AnyPoolOptions::new().max_connections(connections);
    if !sqlite {
        return options;
    }
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            for pragma in [
                "PRAGMA journal_mode = WAL".to_owned(),
                "PRAGMA busy_timeout = 5000".to_owned(),
                "PRAGMA synchronous = NORMAL".to_owned(),
                format!("PRAGMA wal_autocheckpoint = {checkpoint}"),
                format!("PRAGMA cache_size = -{cache_kib}"),
            ] {
                sqlx::query(&pragma).execute(&mut *conn).await?;
            }
            Ok(())
        })
    })
}

impl SqlStore {
    /// Connects to `url` (`sqlite://file.db`, created if missing, or `postgres://…`) and
    /// runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, HistoryError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(HistoryError::Url(url.to_owned()));
        }
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        let pool = options(sqlite, if sqlite { 4 } else { 8 }, READS)
            .connect(&url)
            .await?;
        Migrator::new(Embedded).await?.run(&pool).await?;
        let writes = options(sqlite, 1, WRITES).connect_lazy(&url)?;
        Ok(Self {
            pool,
            writes,
            shared: !sqlite,
            chunks: Arc::new(Mutex::new(HashMap::new())),
        })
    }
}

fn run_summary(row: &AnyRow) -> Result<RunSummary, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    let usage: Option<String> = row.try_get("usage")?;
    Ok(RunSummary {
        run_id: row.try_get("id")?,
        thread_id: row.try_get("thread_id")?,
        agent: row.try_get("agent")?,
        message: row.try_get("message")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown run status {status:?}").into()))?,
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        error_code: row.try_get("error_code")?,
        usage: usage.and_then(|u| serde_json::from_str(&u).ok()),
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
    })
}

fn thread_summary(row: &AnyRow) -> Result<ThreadSummary, sqlx::Error> {
    Ok(ThreadSummary {
        thread_id: row.try_get("id")?,
        title: row.try_get("title")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// A cursor names the last thread of a page: `<created_ms>.<thread id>`.
fn parse_cursor(cursor: &str) -> Result<(i64, String), HistoryError> {
    let bad = || HistoryError::Cursor(cursor.to_owned());
    let (ms, id) = cursor.split_once('.').ok_or_else(bad)?;
    let ms = ms.parse().map_err(|_| bad())?;
    ThreadId::parse(id).map_err(|_| bad())?;
    Ok((ms, id.to_owned()))
}

#[async_trait]
impl HistoryStore for SqlStore {
    async fn apply(&self, batch: &[Write]) -> Result<(), HistoryError> {
        let mut tx = self.writes.begin().await?;
        crate::apply::apply(&mut tx, batch, &self.chunks, !self.shared).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn threads(
        &self,
        user: &UserId,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<ThreadSummary>, HistoryError> {
        let (before_ms, before_id) = match cursor {
            Some(cursor) => parse_cursor(cursor)?,
            None => (i64::MAX, String::new()),
        };
        let limit = limit.clamp(1, 200);
        let rows = sqlx::query(
            "SELECT id, title, created_ms, updated_ms FROM threads WHERE user_id = $1 \
             AND (created_ms < $2 OR (created_ms = $2 AND id < $3) OR $4 = 0) \
             ORDER BY created_ms DESC, id DESC LIMIT $5",
        )
        .bind(user.as_str())
        .bind(before_ms)
        .bind(before_id)
        .bind(i64::from(cursor.is_some()))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(thread_summary)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|t| format!("{}.{}", t.created_ms, t.thread_id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<ThreadDetail>, HistoryError> {
        let Some(row) = sqlx::query(
            "SELECT id, title, created_ms, updated_ms FROM threads WHERE id = $1 AND user_id = $2",
        )
        .bind(thread.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let runs = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE thread_id = $1 AND user_id = $2 ORDER BY started_ms, id"
        ))
        .bind(thread.as_str())
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(ThreadDetail {
            thread: thread_summary(&row)?,
            runs: runs.iter().map(run_summary).collect::<Result<_, _>>()?,
        }))
    }

    async fn run(&self, user: &UserId, run: &RunId) -> Result<Option<RunDetail>, HistoryError> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND user_id = $2"
        ))
        .bind(run.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut events = Vec::new();
        for row in sqlx::query(
            "SELECT events, packed FROM run_event_chunks WHERE run_id = $1 ORDER BY chunk",
        )
        .bind(run.as_str())
        .fetch_all(&self.pool)
        .await?
        {
            // Rows written before migration 4 hold their events as JSON text.
            let packed: Option<Vec<u8>> = row.try_get("packed")?;
            let chunk: Vec<Value> = match packed {
                Some(packed) => crate::pack::unpack(&packed),
                None => serde_json::from_str(&row.try_get::<String, _>("events")?)
                    .map_err(|e| e.to_string()),
            }
            .map_err(|e| sqlx::Error::Decode(format!("stored events: {e}").into()))?;
            events.extend(chunk);
        }
        Ok(Some(RunDetail {
            run: run_summary(&row)?,
            events,
        }))
    }

    async fn thread_owner(&self, thread: &ThreadId) -> Result<Option<UserId>, HistoryError> {
        let owner: Option<String> = sqlx::query("SELECT user_id FROM threads WHERE id = $1")
            .bind(thread.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("user_id"))
            .transpose()?;
        Ok(owner.and_then(|o| UserId::parse(&o).ok()))
    }

    async fn rename_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
        title: &str,
    ) -> Result<bool, HistoryError> {
        let renamed = sqlx::query("UPDATE threads SET title = $1 WHERE id = $2 AND user_id = $3")
            .bind(title)
            .bind(thread.as_str())
            .bind(user.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(renamed > 0)
    }

    async fn delete_run(&self, user: &UserId, run: &RunId) -> Result<bool, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM runs WHERE id = $1 AND user_id = $2")
            .bind(run.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            for table in ["run_event_chunks", "paused_runs", "approvals"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE run_id = $1"))
                    .bind(run.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn delete_thread(&self, user: &UserId, thread: &ThreadId) -> Result<bool, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM threads WHERE id = $1 AND user_id = $2")
            .bind(thread.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            for table in ["run_event_chunks", "paused_runs", "approvals"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE run_id IN (SELECT id FROM runs WHERE thread_id = $1 AND user_id = $2)",
                ))
                .bind(thread.as_str())
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM runs WHERE thread_id = $1 AND user_id = $2")
                .bind(thread.as_str())
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn prune(
        &self,
        updated_before_ms: i64,
        max_threads_per_user: u64,
    ) -> Result<u64, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query("DELETE FROM threads WHERE updated_ms < $1")
            .bind(updated_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM threads WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
             (PARTITION BY user_id ORDER BY updated_ms DESC, id DESC) AS newest FROM threads) ranked \
             WHERE newest > $1)",
        )
        .bind(i64::try_from(max_threads_per_user).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if old + over > 0 {
            sqlx::query(
                "DELETE FROM runs WHERE NOT EXISTS (SELECT 1 FROM threads t WHERE t.id = runs.thread_id)",
            )
            .execute(&mut *tx)
            .await?;
            for table in ["run_event_chunks", "paused_runs", "approvals"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = {table}.run_id)",
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(old + over)
    }

    async fn heartbeat(&self, node: &str, now_ms: i64) -> Result<(), HistoryError> {
        sqlx::query(
            "INSERT INTO nodes (id, last_seen_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET last_seen_ms = $2",
        )
        .bind(node)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn interrupt_orphans(
        &self,
        seen_before_ms: i64,
        except: &str,
        now_ms: i64,
    ) -> Result<u64, HistoryError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_ms = $3 WHERE status = 'running' AND node <> $2 \
             AND node NOT IN (SELECT id FROM nodes WHERE last_seen_ms >= $1)",
        )
        .bind(seen_before_ms)
        .bind(except)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    fn is_shared(&self) -> bool {
        self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Write;

    /// Rows stored before events were packed (migration 4) hold JSON text; a run with rows
    /// of both kinds reads back whole, in order.
    #[tokio::test]
    async fn chunks_stored_before_packing_still_read() {
        let dir = std::env::temp_dir().join(format!("history-legacy-{}", RunId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.join("h.db").display()))
            .await
            .unwrap();
        let (user, run) = (UserId::parse("lena").unwrap(), RunId::generate());
        let event = |n: u32| -> Arc<str> { format!(r#"{{"type":"step","n":{n}}}"#).into() };
        let write = |json: Arc<str>| Write::Event {
            root: run.clone(),
            json,
            ending: None,
            at_ms: 2,
        };
        store
            .apply(&[Write::RunStarted {
                user: user.clone(),
                run_id: run.clone(),
                thread_id: ThreadId::generate(),
                agent: "assistant".into(),
                message: "hi".into(),
                node: "node-a".into(),
                at_ms: 1,
            }])
            .await
            .unwrap();
        sqlx::query("INSERT INTO run_event_chunks (run_id, chunk, events) VALUES ($1, 0, $2)")
            .bind(run.as_str())
            .bind(r#"[{"type":"step","n":0},{"type":"step","n":1}]"#)
            .execute(&store.pool)
            .await
            .unwrap();
        store.chunks.lock().insert(run.as_str().to_owned(), 1);
        store
            .apply(&[write(event(2)), write(event(3))])
            .await
            .unwrap();
        let detail = store.run(&user, &run).await.unwrap().unwrap();
        let steps: Vec<u64> = detail
            .events
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [0, 1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
