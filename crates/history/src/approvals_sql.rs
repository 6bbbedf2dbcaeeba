//! [`ApprovalStore`] on [`SqlStore`]: the same portable SQL on SQLite and Postgres.
//!
//! Every race is settled by one conditional write whose affected rows say who won: an
//! `UPDATE ... WHERE status = 'pending'` for deciders and sweepers, a `DELETE` of the
//! `paused_runs` row for claimers and cancellers. A transaction here starts with its arbiter
//! write, never with a read: on SQLite a transaction that read first and then writes fails
//! when another connection wrote in between, instead of waiting its turn.

use async_trait::async_trait;
use core_context::approval::{Decision, PendingCall, WaitingFor};
use core_context::budget::Exhausted;
use core_context::{IdError, RunId, ThreadId, UserId};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::approvals::{
    ApprovalRecord, ApprovalStatus, ApprovalStore, BudgetWait, CancelledRun, DecideOutcome,
    ExpiredCall, PausedRun, ResolvedCall, Resumable, WaitingCall,
};
use crate::{HistoryError, RunStatus, SqlStore};

const RECORD_COLUMNS: &str = "run_id, thread_id, agent, tool_call_id, tool_name, arguments, \
     requested_ms, expires_ms, status, decision, decided_ms";

/// How many times [`ApprovalStore::decide`] tries again when the call it lost on was re-armed
/// by a later pause of its run between its two statements.
const DECIDE_ATTEMPTS: usize = 3;

fn decode(what: &str, problem: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what}: {problem}").into())
}

fn json(row: &AnyRow, column: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| decode(column, e))
}

fn optional_json(row: &AnyRow, column: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| decode(column, e)))
        .transpose()
}

fn to_text(value: &Value) -> String {
    // A `Value` always serializes.
    value.to_string()
}

fn status(row: &AnyRow) -> Result<ApprovalStatus, sqlx::Error> {
    let status: String = row.try_get("status")?;
    ApprovalStatus::parse(&status).ok_or_else(|| decode("approval status", format!("{status:?}")))
}

fn record(row: &AnyRow) -> Result<ApprovalRecord, sqlx::Error> {
    Ok(ApprovalRecord {
        run_id: row.try_get("run_id")?,
        thread_id: row.try_get("thread_id")?,
        agent: row.try_get("agent")?,
        tool_call_id: row.try_get("tool_call_id")?,
        tool_name: row.try_get("tool_name")?,
        arguments: json(row, "arguments")?,
        requested_ms: row.try_get("requested_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        status: status(row)?,
        decision: row.try_get("decision")?,
        decided_ms: row.try_get("decided_ms")?,
    })
}

fn call(row: &AnyRow) -> Result<PendingCall, sqlx::Error> {
    Ok(PendingCall {
        tool_call_id: row.try_get("tool_call_id")?,
        tool_name: row.try_get("tool_name")?,
        arguments: json(row, "arguments")?,
    })
}

/// The decision of a call of a run that may resume (none of its calls is pending).
fn decision(row: &AnyRow) -> Result<Decision, sqlx::Error> {
    let tool_call_id: String = row.try_get("tool_call_id")?;
    match status(row)? {
        ApprovalStatus::Expired => Ok(Decision::Expired),
        ApprovalStatus::Decided => {
            let name: String = row.try_get("decision")?;
            let arguments = optional_json(row, "decision_arguments")?;
            let message: Option<String> = row.try_get("decision_message")?;
            Decision::from_parts(&name, arguments, message).ok_or_else(|| {
                decode(
                    "decision",
                    format!("{name:?} of call {tool_call_id:?} is not a whole decision"),
                )
            })
        }
        other => Err(decode(
            "approval",
            format!(
                "call {tool_call_id:?} of a resuming run is {}",
                other.as_str()
            ),
        )),
    }
}

fn budget_text(exhausted: &Exhausted) -> String {
    // Plain data: it always serializes.
    serde_json::to_string(exhausted).unwrap_or_default()
}

fn budget(row: &AnyRow) -> Result<Option<Exhausted>, sqlx::Error> {
    let text: Option<String> = row.try_get("budget")?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| decode("budget", e)))
        .transpose()
}

fn waiting_for(row: &AnyRow) -> Result<WaitingFor, sqlx::Error> {
    let name: String = row.try_get("waiting_for")?;
    WaitingFor::parse(&name).ok_or_else(|| decode("waiting_for", format!("{name:?}")))
}

fn id<T>(
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
    value: &str,
) -> Result<T, sqlx::Error> {
    parse(value).map_err(|e| decode(what, e))
}

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn pause_run(&self, run: &PausedRun) -> Result<(), HistoryError> {
        let run_id = run.run_id.as_str();
        let mut tx = self.pool.begin().await?;
        // The pause's number: one past the last pause that requested a call of this run.
        let pause: i64 = sqlx::query(
            "INSERT INTO paused_runs (run_id, user_id, thread_id, agent, message, input, state, \
             paused_ms, waiting_for, budget, pause) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             (SELECT COALESCE(MAX(pause), 0) + 1 FROM approvals WHERE run_id = $1)) RETURNING pause",
        )
        .bind(run_id)
        .bind(run.user.as_str())
        .bind(run.thread_id.as_str())
        .bind(run.agent.as_str())
        .bind(run.message.as_str())
        .bind(to_text(&run.input))
        .bind(to_text(&run.state))
        .bind(run.paused_ms)
        .bind(run.waiting_for().as_str())
        .bind(run.budget.as_ref().map(budget_text))
        .fetch_one(&mut *tx)
        .await?
        .try_get("pause")?;
        for waiting in &run.calls {
            let call = &waiting.call;
            sqlx::query(
                "INSERT INTO approvals (run_id, tool_call_id, pause, position, user_id, thread_id, \
                 agent, tool_name, arguments, requested_ms, expires_ms, status) VALUES ($1, $2, $3, \
                 (SELECT COALESCE(MAX(position), 0) + 1 FROM approvals WHERE run_id = $1), \
                 $4, $5, $6, $7, $8, $9, $10, 'pending') \
                 ON CONFLICT (run_id, tool_call_id) DO UPDATE SET pause = excluded.pause, \
                 position = excluded.position, user_id = excluded.user_id, \
                 thread_id = excluded.thread_id, agent = excluded.agent, \
                 tool_name = excluded.tool_name, arguments = excluded.arguments, \
                 requested_ms = excluded.requested_ms, expires_ms = excluded.expires_ms, \
                 status = 'pending', decision = NULL, decision_arguments = NULL, \
                 decision_message = NULL, decided_ms = NULL, result = NULL",
            )
            .bind(run_id)
            .bind(call.tool_call_id.as_str())
            .bind(pause)
            .bind(run.user.as_str())
            .bind(run.thread_id.as_str())
            .bind(run.agent.as_str())
            .bind(call.tool_name.as_str())
            .bind(to_text(&call.arguments))
            .bind(run.paused_ms)
            .bind(waiting.expires_ms)
            .execute(&mut *tx)
            .await?;
        }
        let waiting = match run.waiting_for() {
            WaitingFor::Approval => RunStatus::WaitingForApproval,
            WaitingFor::Budget => RunStatus::WaitingForBudget,
        };
        sqlx::query("UPDATE runs SET status = $2 WHERE id = $1 AND status = 'running'")
            .bind(run_id)
            .bind(waiting.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_approvals(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, HistoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM approvals WHERE user_id = $1 AND status = 'pending' \
             ORDER BY requested_ms, run_id, position LIMIT $2"
        ))
        .bind(user.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn run_approvals(
        &self,
        user: &UserId,
        run: &RunId,
    ) -> Result<Vec<ApprovalRecord>, HistoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM approvals WHERE run_id = $1 AND user_id = $2 \
             ORDER BY position"
        ))
        .bind(run.as_str())
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn decide(
        &self,
        user: &UserId,
        run: &RunId,
        tool_call_id: &str,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<DecideOutcome, HistoryError> {
        let (name, arguments, message) = decision.parts();
        for _ in 0..DECIDE_ATTEMPTS {
            let decided = sqlx::query(
                "UPDATE approvals SET status = 'decided', decision = $1, decision_arguments = $2, \
                 decision_message = $3, decided_ms = $4 WHERE run_id = $5 AND tool_call_id = $6 \
                 AND user_id = $7 AND status = 'pending' AND expires_ms > $4",
            )
            .bind(name)
            .bind(arguments.map(to_text))
            .bind(message)
            .bind(now_ms)
            .bind(run.as_str())
            .bind(tool_call_id)
            .bind(user.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
            if decided > 0 {
                let waiting: i64 = sqlx::query(
                    "SELECT COUNT(*) AS waiting FROM approvals WHERE run_id = $1 AND status = 'pending'",
                )
                .bind(run.as_str())
                .fetch_one(&self.pool)
                .await?
                .try_get("waiting")?;
                return Ok(DecideOutcome::Decided {
                    waiting: usize::try_from(waiting).unwrap_or(0),
                });
            }
            // Lost: read why.
            let Some(row) = sqlx::query(
                "SELECT status, decision, expires_ms FROM approvals \
                 WHERE run_id = $1 AND tool_call_id = $2 AND user_id = $3",
            )
            .bind(run.as_str())
            .bind(tool_call_id)
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(DecideOutcome::NotFound);
            };
            let expires_ms: i64 = row.try_get("expires_ms")?;
            return Ok(match status(&row)? {
                ApprovalStatus::Decided => DecideOutcome::AlreadyDecided {
                    decision: row.try_get("decision")?,
                },
                ApprovalStatus::Cancelled => DecideOutcome::AlreadyDecided {
                    decision: "cancelled".into(),
                },
                ApprovalStatus::Expired => DecideOutcome::Expired,
                ApprovalStatus::Pending if expires_ms <= now_ms => DecideOutcome::Expired,
                // Settled when the update ran, re-armed by a later pause since: that one is
                // a new request, so try it.
                ApprovalStatus::Pending => continue,
            });
        }
        // Re-armed under every attempt (not seen in practice): the request this decision
        // answered is gone.
        Ok(DecideOutcome::NotFound)
    }

    async fn claim_resume(
        &self,
        run: &RunId,
        node: &str,
        _now_ms: i64,
    ) -> Result<Option<Resumable>, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let Some(paused) = sqlx::query(
            "DELETE FROM paused_runs WHERE run_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM approvals WHERE run_id = $1 AND status = 'pending') \
             RETURNING user_id, thread_id, agent, message, input, state, paused_ms, pause, budget",
        )
        .bind(run.as_str())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE runs SET status = 'running', node = $2 \
             WHERE id = $1 AND status IN ('waiting_for_approval', 'waiting_for_budget')",
        )
        .bind(run.as_str())
        .bind(node)
        .execute(&mut *tx)
        .await?;
        let pause: i64 = paused.try_get("pause")?;
        let rows = sqlx::query(
            "SELECT tool_call_id, tool_name, arguments, expires_ms, status, decision, \
             decision_arguments, decision_message, result FROM approvals \
             WHERE run_id = $1 AND pause = $2 ORDER BY position",
        )
        .bind(run.as_str())
        .bind(pause)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut calls = Vec::with_capacity(rows.len());
        let mut resolved = Vec::with_capacity(rows.len());
        for row in &rows {
            let call = call(row)?;
            calls.push(WaitingCall {
                call: call.clone(),
                expires_ms: row.try_get("expires_ms")?,
            });
            resolved.push(ResolvedCall {
                call,
                decision: decision(row)?,
                result: optional_json(row, "result")?,
            });
        }
        let user: String = paused.try_get("user_id")?;
        let thread: String = paused.try_get("thread_id")?;
        Ok(Some(Resumable {
            run: PausedRun {
                user: id("user id", UserId::parse, &user)?,
                run_id: run.clone(),
                thread_id: id("thread id", ThreadId::parse, &thread)?,
                agent: paused.try_get("agent")?,
                message: paused.try_get("message")?,
                input: json(&paused, "input")?,
                state: json(&paused, "state")?,
                paused_ms: paused.try_get("paused_ms")?,
                calls,
                budget: budget(&paused)?,
            },
            resolved,
        }))
    }

    async fn record_result(
        &self,
        run: &RunId,
        tool_call_id: &str,
        result: &Value,
    ) -> Result<bool, HistoryError> {
        let recorded = sqlx::query(
            "UPDATE approvals SET result = $3 \
             WHERE run_id = $1 AND tool_call_id = $2 AND result IS NULL",
        )
        .bind(run.as_str())
        .bind(tool_call_id)
        .bind(to_text(result))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(recorded > 0)
    }

    async fn cancel_paused(
        &self,
        user: &UserId,
        run: &RunId,
        ending: crate::RunStatus,
        now_ms: i64,
    ) -> Result<Option<CancelledRun>, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let Some(paused) = sqlx::query(
            "DELETE FROM paused_runs WHERE run_id = $1 AND user_id = $2 RETURNING thread_id, agent",
        )
        .bind(run.as_str())
        .bind(user.as_str())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE approvals SET status = 'cancelled', decided_ms = $2 \
             WHERE run_id = $1 AND status = 'pending'",
        )
        .bind(run.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE runs SET status = $3, finished_ms = $2 \
             WHERE id = $1 AND status IN ('waiting_for_approval', 'waiting_for_budget')",
        )
        .bind(run.as_str())
        .bind(now_ms)
        .bind(ending.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let thread: String = paused.try_get("thread_id")?;
        Ok(Some(CancelledRun {
            thread_id: id("thread id", ThreadId::parse, &thread)?,
            agent: paused.try_get("agent")?,
        }))
    }

    async fn paused_in_thread(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Option<(RunId, WaitingFor)>, HistoryError> {
        let row = sqlx::query(
            "SELECT run_id, waiting_for FROM paused_runs \
             WHERE thread_id = $1 AND user_id = $2 LIMIT 1",
        )
        .bind(thread.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let run: String = row.try_get("run_id")?;
                Ok(Some((
                    id("run id", RunId::parse, &run)?,
                    waiting_for(&row)?,
                )))
            }
            None => Ok(None),
        }
    }

    async fn budget_waits(
        &self,
        (user, run): (&str, &str),
        limit: usize,
    ) -> Result<Vec<BudgetWait>, HistoryError> {
        let rows = sqlx::query(
            "SELECT user_id, run_id, budget FROM paused_runs WHERE waiting_for = 'budget' \
             AND (user_id > $1 OR (user_id = $1 AND run_id > $2)) \
             ORDER BY user_id, run_id LIMIT $3",
        )
        .bind(user)
        .bind(run)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut waits = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: String = row.try_get("user_id")?;
            let run: String = row.try_get("run_id")?;
            let Some(exhausted) = budget(row)? else {
                return Err(decode(
                    "budget",
                    format!("run {run:?} waits for a budget it does not name"),
                )
                .into());
            };
            waits.push(BudgetWait {
                user: id("user id", UserId::parse, &user)?,
                run_id: id("run id", RunId::parse, &run)?,
                exhausted,
            });
        }
        Ok(waits)
    }

    async fn expire_approvals(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredCall>, HistoryError> {
        let due = sqlx::query(
            "SELECT run_id, tool_call_id, user_id, thread_id, agent FROM approvals \
             WHERE status = 'pending' AND expires_ms <= $1 ORDER BY expires_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::new();
        for row in &due {
            let run: String = row.try_get("run_id")?;
            let tool_call_id: String = row.try_get("tool_call_id")?;
            let won = sqlx::query(
                "UPDATE approvals SET status = 'expired', decision = 'expired', decided_ms = $3 \
                 WHERE run_id = $1 AND tool_call_id = $2 AND status = 'pending' AND expires_ms <= $3",
            )
            .bind(run.as_str())
            .bind(tool_call_id.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if won == 0 {
                continue;
            }
            let user: String = row.try_get("user_id")?;
            let thread: String = row.try_get("thread_id")?;
            expired.push(ExpiredCall {
                user: id("user id", UserId::parse, &user)?,
                run_id: id("run id", RunId::parse, &run)?,
                thread_id: id("thread id", ThreadId::parse, &thread)?,
                agent: row.try_get("agent")?,
                tool_call_id,
            });
        }
        Ok(expired)
    }
}
