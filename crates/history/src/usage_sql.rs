//! [`UsageStore`] on [`SqlStore`]: the same portable SQL on SQLite and Postgres.
//!
//! A call is counted once by its primary key: `INSERT ... ON CONFLICT (call_id) DO NOTHING`
//! inserts a row for the first record of a call id and none for any other, concurrent ones
//! on other nodes included (Postgres makes the later insert wait for the first and then do
//! nothing; SQLite runs one writer at a time).

use async_trait::async_trait;
use core_context::{RunId, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::usage::{ModelUsage, UsageStore, UsageTotals};
use crate::{HistoryError, SqlStore};

/// The sums of the calls a `WHERE` clause selects. Postgres sums `BIGINT`s as `NUMERIC`,
/// which the `Any` driver cannot read: each sum is cast back (a sum past `BIGINT` is an error
/// on both databases, never a wrong total).
const TOTALS: &str = "SELECT COUNT(*) AS calls, COUNT(cost_micro_usd) AS priced_calls, \
     CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
     CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
     CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) AS cost_micro_usd \
     FROM model_usage WHERE user_id = $1 AND ";

/// `value` as stored: a count past `i64::MAX` is refused, not wrapped.
fn stored(what: &str, value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(|_| {
        sqlx::Error::Encode(format!("{what} {value} is past the largest count stored").into())
    })
}

/// A stored sum or count as read: a negative one (no record writes one) is an error.
fn count(row: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| {
        sqlx::Error::Decode(format!("stored usage: {column} is negative ({value})").into())
    })
}

fn totals(row: &AnyRow) -> Result<UsageTotals, sqlx::Error> {
    let prompt_tokens = count(row, "prompt_tokens")?;
    let completion_tokens = count(row, "completion_tokens")?;
    let calls = count(row, "calls")?;
    let priced_calls = count(row, "priced_calls")?;
    Ok(UsageTotals {
        prompt_tokens,
        completion_tokens,
        cached_tokens: count(row, "cached_tokens")?,
        // Each is at most `i64::MAX`, so the sum fits a u64; saturate all the same.
        tokens: prompt_tokens.saturating_add(completion_tokens),
        cost_micro_usd: count(row, "cost_micro_usd")?,
        calls,
        priced_calls,
        unpriced_calls: calls.saturating_sub(priced_calls),
    })
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(&self, usage: &ModelUsage) -> Result<bool, HistoryError> {
        let cost = usage
            .cost_micro_usd
            .map(|c| stored("cost_micro_usd", c))
            .transpose()?;
        let inserted = sqlx::query(
            "INSERT INTO model_usage (call_id, user_id, run_id, model, prompt_tokens, \
             completion_tokens, cached_tokens, cost_micro_usd, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (call_id) DO NOTHING",
        )
        .bind(usage.call_id.as_str())
        .bind(usage.user.as_str())
        .bind(usage.run_id.as_str())
        .bind(usage.model.as_str())
        .bind(stored("prompt_tokens", usage.prompt_tokens)?)
        .bind(stored("completion_tokens", usage.completion_tokens)?)
        .bind(stored("cached_tokens", usage.cached_tokens)?)
        .bind(cost)
        .bind(usage.at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    async fn prune_usage(&self, before_ms: i64) -> Result<u64, HistoryError> {
        let erased = sqlx::query("DELETE FROM model_usage WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(erased)
    }

    async fn usage_since(&self, user: &UserId, since_ms: i64) -> Result<UsageTotals, HistoryError> {
        let row = sqlx::query(&format!("{TOTALS}at_ms >= $2"))
            .bind(user.as_str())
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(totals(&row)?)
    }

    async fn run_usage(&self, user: &UserId, run: &RunId) -> Result<UsageTotals, HistoryError> {
        let row = sqlx::query(&format!("{TOTALS}run_id = $2"))
            .bind(user.as_str())
            .bind(run.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(totals(&row)?)
    }
}
