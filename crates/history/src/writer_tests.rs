//! The writer's tests, with a store whose writes fail on demand.

use std::sync::atomic::AtomicU32;

use async_trait::async_trait;
use core_context::{ThreadId, UserId};

use super::*;
use core_context::approval::Decision;
use serde_json::Value;

use crate::{
    ApprovalRecord, ApprovalStore, CancelledRun, DecideOutcome, ExpiredCall, HistoryError,
    ModelUsage, Page, PausedRun, Resumable, RunDetail, RunStatus, ThreadDetail, ThreadSummary,
    UsageStore, UsageTotals,
};

/// A store whose `apply` fails its first `failures` calls, then counts what it stored.
#[derive(Default)]
struct Flaky {
    failures: u32,
    calls: AtomicU32,
    stored: AtomicU64,
}

#[async_trait]
impl ApprovalStore for Flaky {
    async fn pause_run(&self, _: &PausedRun) -> Result<(), HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn pending_approvals(
        &self,
        _: &UserId,
        _: usize,
    ) -> Result<Vec<ApprovalRecord>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn run_approvals(
        &self,
        _: &UserId,
        _: &RunId,
    ) -> Result<Vec<ApprovalRecord>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn decide(
        &self,
        _: &UserId,
        _: &RunId,
        _: &str,
        _: &Decision,
        _: i64,
    ) -> Result<DecideOutcome, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn claim_resume(
        &self,
        _: &RunId,
        _: &str,
        _: i64,
    ) -> Result<Option<Resumable>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn record_result(&self, _: &RunId, _: &str, _: &Value) -> Result<bool, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn cancel_paused(
        &self,
        _: &UserId,
        _: &RunId,
        _: RunStatus,
        _: i64,
    ) -> Result<Option<CancelledRun>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn paused_in_thread(
        &self,
        _: &UserId,
        _: &ThreadId,
    ) -> Result<Option<(RunId, core_context::approval::WaitingFor)>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn budget_waits(
        &self,
        _: (&str, &str),
        _: usize,
    ) -> Result<Vec<crate::BudgetWait>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn expire_approvals(&self, _: i64, _: usize) -> Result<Vec<ExpiredCall>, HistoryError> {
        unreachable!("the writer only applies")
    }
}

#[async_trait]
impl UsageStore for Flaky {
    async fn record_usage(&self, _: &ModelUsage) -> Result<bool, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn usage_since(&self, _: &UserId, _: i64) -> Result<UsageTotals, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn run_usage(&self, _: &UserId, _: &RunId) -> Result<UsageTotals, HistoryError> {
        unreachable!("the writer only applies")
    }
}

#[async_trait]
impl HistoryStore for Flaky {
    async fn apply(&self, batch: &[Write]) -> Result<(), HistoryError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) < self.failures {
            return Err(HistoryError::Database(sqlx::Error::PoolTimedOut));
        }
        self.stored.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn threads(
        &self,
        _: &UserId,
        _: usize,
        _: Option<&str>,
    ) -> Result<Page<ThreadSummary>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn thread(&self, _: &UserId, _: &ThreadId) -> Result<Option<ThreadDetail>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn run(&self, _: &UserId, _: &RunId) -> Result<Option<RunDetail>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn thread_owner(&self, _: &ThreadId) -> Result<Option<UserId>, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn rename_thread(&self, _: &UserId, _: &ThreadId, _: &str) -> Result<bool, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn delete_run(&self, _: &UserId, _: &RunId) -> Result<bool, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn delete_thread(&self, _: &UserId, _: &ThreadId) -> Result<bool, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn prune(&self, _: i64, _: u64) -> Result<u64, HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn heartbeat(&self, _: &str, _: i64) -> Result<(), HistoryError> {
        unreachable!("the writer only applies")
    }
    async fn interrupt_orphans(&self, _: i64, _: &str, _: i64) -> Result<u64, HistoryError> {
        unreachable!("the writer only applies")
    }
    fn is_shared(&self) -> bool {
        false
    }
}

fn writes(count: usize) -> Vec<Write> {
    (0..count)
        .map(|i| Write::RunRefused {
            run_id: RunId::parse(&format!("run_{i}")).unwrap(),
            thread_id: ThreadId::parse(&format!("thr_{i}")).unwrap(),
        })
        .collect()
}

/// A store down for a few attempts loses nothing; the pauses between attempts grow
/// (with jitter) within the policy's bounds.
#[tokio::test(start_paused = true)]
async fn a_batch_is_retried_with_growing_pauses_until_the_store_answers() {
    let store = Flaky {
        failures: 5,
        ..Flaky::default()
    };
    let stats = WriterStats::default();
    let started = tokio::time::Instant::now();
    store_batch(&store, &writes(3), &stats).await;
    let waited = started.elapsed();
    assert_eq!(store.stored.load(Ordering::Relaxed), 3);
    assert_eq!(store.calls.load(Ordering::Relaxed), 6);
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 5);
    assert_eq!(stats.dropped_failed.load(Ordering::Relaxed), 0);
    assert!(stats.last_ok.load(Ordering::Relaxed));
    // 50 + 100 + 200 + 400 + 800 ms, each plus up to itself of jitter.
    let base = Duration::from_millis(1_550);
    assert!(
        waited >= base && waited < base * 2,
        "waited {waited:?} for five retries"
    );
}

/// A store that never answers: the batch is dropped (and counted) after the policy's
/// retries, not retried forever.
#[tokio::test(start_paused = true)]
async fn a_batch_that_always_fails_is_dropped_after_its_retries() {
    let store = Flaky {
        failures: u32::MAX,
        ..Flaky::default()
    };
    let stats = WriterStats::default();
    store_batch(&store, &writes(4), &stats).await;
    assert_eq!(
        store.calls.load(Ordering::Relaxed),
        7,
        "one attempt and 6 retries"
    );
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 6);
    assert_eq!(stats.dropped_failed.load(Ordering::Relaxed), 4);
    assert_eq!(store.stored.load(Ordering::Relaxed), 0);
    assert!(!stats.last_ok.load(Ordering::Relaxed));
}
