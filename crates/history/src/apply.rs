//! Applying a batch of writes in one transaction, with multi-row statements: the writer's
//! batches are hundreds of writes, and one statement per row would make the store the
//! bottleneck of a burst.
//!
//! The batch is applied in phases that keep each run's order: run starts (threads, then
//! runs), events (one row per run per batch: its events in order, [packed](crate::pack)), run
//! endings, then refusals (a refusal always follows its start).

use std::collections::HashMap;

use core_context::{RunId, ThreadId};
use parking_lot::Mutex;
use sqlx::AnyConnection;

use crate::Write;
use crate::model::Ending;
use crate::model::title_of;

/// Rows per multi-row statement (at most 7 parameters a row: 3,500, far below SQLite's
/// 32,766 and Postgres's 65,535).
const ROWS: usize = 500;

/// `($1, $2, ...), ($k, ...)`: `rows` groups of `columns` numbered parameters.
fn values(rows: usize, columns: usize) -> String {
    let mut out = String::new();
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", row * columns + column + 1));
        }
        out.push(')');
    }
    out
}

struct Start<'a> {
    user: &'a str,
    run: &'a str,
    thread: &'a str,
    agent: &'a str,
    message: &'a str,
    node: &'a str,
    at_ms: i64,
}

/// Placeholders for multi-row statements: Postgres numbers them (`$1`); on SQLite, numbered
/// ones cost a linear lookup per bind (quadratic in a long statement), so they become
/// positional `?` (the statements bind in order).
fn dialect(sql: String, sqlite: bool) -> String {
    if !sqlite {
        return sql;
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) async fn apply(
    tx: &mut AnyConnection,
    batch: &[Write],
    chunks: &Mutex<HashMap<String, i64>>,
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    let mut starts = Vec::new();
    // Each run's events of this batch, in order, as one JSON array.
    let mut runs: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut endings = Vec::new();
    let mut refusals = Vec::new();
    for write in batch {
        match write {
            Write::RunStarted {
                user,
                run_id,
                thread_id,
                agent,
                message,
                node,
                at_ms,
            } => starts.push(Start {
                user: user.as_str(),
                run: run_id.as_str(),
                thread: thread_id.as_str(),
                agent,
                message,
                node,
                at_ms: *at_ms,
            }),
            Write::RunRefused { run_id, thread_id } => refusals.push((run_id, thread_id)),
            Write::Event {
                root,
                json,
                ending,
                at_ms,
            } => {
                let i = *at.entry(root.as_str()).or_insert_with(|| {
                    runs.push((root.as_str(), Vec::new()));
                    runs.len() - 1
                });
                runs[i].1.push(json);
                if let Some(end) = ending {
                    endings.push((root.as_str(), end, *at_ms));
                }
            }
        }
    }
    // Chunk numbers of the runs started through this store; the others (a run another node
    // started, ended here after its node stopped) go after their last stored chunk.
    let (numbered, unnumbered) = {
        let mut next = chunks.lock();
        for start in &starts {
            next.entry(start.run.to_owned()).or_insert(0);
        }
        let mut numbered = Vec::new();
        let mut unnumbered = Vec::new();
        for (run, events) in runs {
            let packed = crate::pack::pack(&events);
            match next.get_mut(run) {
                Some(chunk) => {
                    numbered.push((run, *chunk, packed));
                    *chunk += 1;
                }
                None => unnumbered.push((run, packed)),
            }
        }
        for (run, ..) in &endings {
            next.remove(*run);
        }
        (numbered, unnumbered)
    };
    insert_starts(tx, &starts, sqlite).await?;
    insert_events(tx, &numbered, unnumbered, sqlite).await?;
    end_and_refuse(tx, endings, refusals, sqlite).await
}

/// A run that ends in this batch: its id, how, and when.
type RunEnd<'a> = (&'a str, &'a Ending, i64);

async fn insert_events(
    tx: &mut AnyConnection,
    numbered: &[(&str, i64, Vec<u8>)],
    unnumbered: Vec<(&str, Vec<u8>)>,
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    for chunk in numbered.chunks(ROWS) {
        let sql = dialect(
            format!(
                "INSERT INTO run_event_chunks (run_id, chunk, events, packed) VALUES {}",
                values(chunk.len(), 4)
            ),
            sqlite,
        );
        let mut query = sqlx::query(&sql);
        for (run, idx, packed) in chunk {
            query = query.bind(*run).bind(*idx).bind("").bind(packed.as_slice());
        }
        query.execute(&mut *tx).await?;
    }
    for (run, packed) in unnumbered {
        sqlx::query(
            "INSERT INTO run_event_chunks (run_id, chunk, events, packed) \
             SELECT $1, COALESCE(MAX(chunk), -1) + 1, '', $2 FROM run_event_chunks WHERE run_id = $1",
        )
        .bind(run)
        .bind(packed)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn end_and_refuse(
    tx: &mut AnyConnection,
    endings: Vec<RunEnd<'_>>,
    refusals: Vec<(&RunId, &ThreadId)>,
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    for chunk in endings.chunks(ROWS) {
        // One statement per chunk: under load each statement is a round trip through a
        // busy scheduler, so fewer statements is what keeps the writer ahead.
        let rows: Vec<String> = (0..chunk.len())
            .map(|row| {
                let at = row * 6;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, CAST(${} AS BIGINT))",
                    at + 1,
                    at + 2,
                    at + 3,
                    at + 4,
                    at + 5,
                    at + 6
                )
            })
            .collect();
        let sql = dialect(
            format!(
                "WITH e(id, status, outcome, error_code, usage, finished_ms) AS (VALUES {}) \
                 UPDATE runs SET status = e.status, outcome = e.outcome, error_code = e.error_code, \
                 usage = e.usage, finished_ms = e.finished_ms FROM e \
                 WHERE runs.id = e.id AND runs.status = 'running'",
                rows.join(", ")
            ),
            sqlite,
        );
        let mut query = sqlx::query(&sql);
        for (run, end, at_ms) in chunk {
            query = query
                .bind(*run)
                .bind(end.status.as_str())
                .bind(end.outcome.clone())
                .bind(end.error_code.clone())
                .bind(end.usage.clone())
                .bind(*at_ms);
        }
        query.execute(&mut *tx).await?;
    }
    for (run, thread) in refusals {
        sqlx::query("DELETE FROM runs WHERE id = $1")
            .bind(run.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM threads WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM runs WHERE thread_id = $1)",
        )
        .bind(thread.as_str())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Threads (new ones with their title; known ones get a later `updated_ms`), then runs.
async fn insert_starts(
    tx: &mut AnyConnection,
    starts: &[Start<'_>],
    sqlite: bool,
) -> Result<(), sqlx::Error> {
    // One row per thread per statement (Postgres refuses to update a row twice in one):
    // the first start names it, the latest updates it.
    let mut threads: Vec<(&str, &str, String, i64, i64)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for start in starts {
        match at.get(start.thread) {
            Some(&i) => threads[i].4 = threads[i].4.max(start.at_ms),
            None => {
                at.insert(start.thread, threads.len());
                threads.push((
                    start.thread,
                    start.user,
                    title_of(start.message),
                    start.at_ms,
                    start.at_ms,
                ));
            }
        }
    }
    for chunk in threads.chunks(ROWS) {
        let sql = dialect(
            format!(
                "INSERT INTO threads (id, user_id, title, created_ms, updated_ms) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET updated_ms = excluded.updated_ms",
                values(chunk.len(), 5)
            ),
            sqlite,
        );
        let mut query = sqlx::query(&sql);
        for (id, user, title, created, updated) in chunk {
            query = query
                .bind(*id)
                .bind(*user)
                .bind(title.as_str())
                .bind(*created)
                .bind(*updated);
        }
        query.execute(&mut *tx).await?;
    }
    for chunk in starts.chunks(ROWS) {
        let sql = dialect(
            format!(
                "INSERT INTO runs (id, thread_id, user_id, agent, message, node, started_ms, status) VALUES {} \
                 ON CONFLICT (id) DO NOTHING",
                values_with_status(chunk.len())
            ),
            sqlite,
        );
        let mut query = sqlx::query(&sql);
        for s in chunk {
            query = query
                .bind(s.run)
                .bind(s.thread)
                .bind(s.user)
                .bind(s.agent)
                .bind(s.message)
                .bind(s.node)
                .bind(s.at_ms);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Like [`values`] with 7 parameters per row and the literal status `'running'` last.
fn values_with_status(rows: usize) -> String {
    values(rows, 7).replace(')', ", 'running')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_dialect() {
        let sql = "INSERT INTO t VALUES ($1, $2), ($3, CAST($12 AS BIGINT)) -- costs $";
        assert_eq!(dialect(sql.to_owned(), false), sql);
        assert_eq!(
            dialect(sql.to_owned(), true),
            "INSERT INTO t VALUES (?, ?), (?, CAST(? AS BIGINT)) -- costs $"
        );
    }

    #[test]
    fn numbered_rows() {
        assert_eq!(values(1, 2), "($1, $2)");
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(
            values_with_status(1),
            "($1, $2, $3, $4, $5, $6, $7, 'running')"
        );
    }
}
