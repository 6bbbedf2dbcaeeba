//! The usage store, as one suite run against SQLite (a temp file) and PostgreSQL (a private
//! server): a model call is counted once however often and however concurrently it is
//! recorded; a user's totals since a time and of a run; users kept apart; cost summed over the
//! priced calls only; usage that outlives its run's and thread's deletion and retention.

use std::sync::Arc;

use core_context::{RunId, ThreadId, UserId};
use history::{HistoryStore, ModelUsage, UsageTotals};
use tokio::sync::Barrier;

use crate::history::{started, stores, user};

/// A call of `user`'s `run` at `at_ms`: `prompt` and `completion` tokens, a tenth of the
/// prompt cached, costing `cost` micro-USD (`None`: no price).
fn call(
    id: &str,
    user: &UserId,
    run: &RunId,
    (prompt, completion): (u64, u64),
    cost: Option<u64>,
    at_ms: i64,
) -> ModelUsage {
    ModelUsage {
        call_id: format!("{run}:{id}"),
        user: user.clone(),
        run_id: run.clone(),
        model: "gpt-test".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: prompt / 10,
        cost_micro_usd: cost,
        at_ms,
    }
}

/// The totals of `calls`, summed here.
fn sum(calls: &[&ModelUsage]) -> UsageTotals {
    let mut t = UsageTotals::default();
    for c in calls {
        t.prompt_tokens += c.prompt_tokens;
        t.completion_tokens += c.completion_tokens;
        t.cached_tokens += c.cached_tokens;
        t.tokens += c.prompt_tokens + c.completion_tokens;
        t.calls += 1;
        match c.cost_micro_usd {
            Some(cost) => {
                t.cost_micro_usd += cost;
                t.priced_calls += 1;
            }
            None => t.unpriced_calls += 1,
        }
    }
    t
}

async fn record(store: &Arc<dyn HistoryStore>, usage: &ModelUsage) -> bool {
    store.record_usage(usage).await.unwrap()
}

async fn since(store: &Arc<dyn HistoryStore>, user: &UserId, since_ms: i64) -> UsageTotals {
    store.usage_since(user, since_ms).await.unwrap()
}

async fn of_run(store: &Arc<dyn HistoryStore>, user: &UserId, run: &RunId) -> UsageTotals {
    store.run_usage(user, run).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_counts_once_in_its_users_totals_since_a_time_and_of_its_run() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (ana, ben) = (user("ana"), user("ben"));
        let (first, second, bens) = (RunId::generate(), RunId::generate(), RunId::generate());
        let a1 = call("1", &ana, &first, (1_000, 200), Some(5_000), 1_000);
        let a2 = call("2", &ana, &first, (2_000, 300), None, 2_000);
        let a3 = call("1", &ana, &second, (500, 50), Some(700), 3_000);
        let b1 = call("1", &ben, &bens, (40_000, 9_000), Some(90_000), 2_500);
        for usage in [&a1, &a2, &a3, &b1] {
            assert!(record(store, usage).await, "{kind}: first record");
        }
        // The same call again, even with other numbers, changes nothing.
        assert!(!record(store, &a1).await, "{kind}");
        let inflated = ModelUsage {
            prompt_tokens: 1_000_000,
            cost_micro_usd: Some(1),
            ..a1.clone()
        };
        assert!(!record(store, &inflated).await, "{kind}");

        let all = since(store, &ana, 0).await;
        assert_eq!(all, sum(&[&a1, &a2, &a3]), "{kind}");
        assert_eq!(
            (all.tokens, all.cost_micro_usd, all.calls),
            (4_050, 5_700, 3),
            "{kind}"
        );
        // The cost covers the priced calls only, and says one was not.
        assert_eq!((all.priced_calls, all.unpriced_calls), (2, 1), "{kind}");

        // `since_ms` is inclusive; older calls are left out.
        assert_eq!(since(store, &ana, 2_000).await, sum(&[&a2, &a3]), "{kind}");
        assert_eq!(since(store, &ana, 2_001).await, sum(&[&a3]), "{kind}");
        assert_eq!(since(store, &ana, 3_001).await, UsageTotals::default());

        // Users are apart: each sees only their own calls.
        assert_eq!(since(store, &ben, 0).await, sum(&[&b1]), "{kind}");
        assert_eq!(since(store, &user("cleo"), 0).await, UsageTotals::default());

        // A run's totals; another user's run reads as zero.
        assert_eq!(
            of_run(store, &ana, &first).await,
            sum(&[&a1, &a2]),
            "{kind}"
        );
        assert_eq!(of_run(store, &ana, &second).await, sum(&[&a3]), "{kind}");
        assert_eq!(of_run(store, &ben, &bens).await, sum(&[&b1]), "{kind}");
        assert_eq!(of_run(store, &ben, &first).await, UsageTotals::default());
        assert_eq!(of_run(store, &ana, &bens).await, UsageTotals::default());
        let unknown = RunId::generate();
        assert_eq!(of_run(store, &ana, &unknown).await, UsageTotals::default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_records_of_one_call_count_once() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (dan, run) = (user("dan"), RunId::generate());
        let usage = call("1", &dan, &run, (300, 40), Some(25), 1_000);
        let barrier = Arc::new(Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, usage, barrier) =
                    (Arc::clone(store), usage.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.record_usage(&usage).await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap().unwrap());
        }
        assert_eq!(won, 1, "{kind}: exactly one record is the call's");
        assert_eq!(since(store, &dan, 0).await, sum(&[&usage]), "{kind}");
        assert_eq!(of_run(store, &dan, &run).await, sum(&[&usage]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_outlives_deleted_runs_deleted_threads_and_retention() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let eva = user("eva");
        let (thread, old_thread) = (ThreadId::generate(), ThreadId::generate());
        let (deleted, in_thread, pruned) =
            (RunId::generate(), RunId::generate(), RunId::generate());
        store
            .apply(&[
                started(&eva, &deleted, &thread, "one", 1_000),
                started(&eva, &in_thread, &thread, "two", 1_100),
                started(&eva, &pruned, &old_thread, "old", 100),
            ])
            .await
            .unwrap();
        let calls = [
            call("1", &eva, &deleted, (100, 10), Some(1), 1_000),
            call("1", &eva, &in_thread, (200, 20), None, 1_100),
            call("1", &eva, &pruned, (400, 40), Some(4), 100),
        ];
        for usage in &calls {
            assert!(record(store, usage).await, "{kind}");
        }
        let before = since(store, &eva, 0).await;
        assert_eq!(before, sum(&calls.iter().collect::<Vec<_>>()), "{kind}");

        assert!(store.delete_run(&eva, &deleted).await.unwrap(), "{kind}");
        assert!(store.delete_thread(&eva, &thread).await.unwrap(), "{kind}");
        assert_eq!(store.prune(500, 100).await.unwrap(), 1, "{kind}");
        for run in [&deleted, &in_thread, &pruned] {
            let gone = store.run(&eva, run).await.unwrap();
            assert!(gone.is_none(), "{kind}: the run is erased");
        }

        assert_eq!(since(store, &eva, 0).await, before, "{kind}");
        for (run, usage) in [&deleted, &in_thread, &pruned].into_iter().zip(&calls) {
            assert_eq!(of_run(store, &eva, run).await, sum(&[usage]), "{kind}");
        }
        // A call of an erased run recorded late still counts once.
        assert!(!record(store, &calls[0]).await, "{kind}");
        let late = call("2", &eva, &deleted, (7, 3), Some(2), 1_200);
        assert!(record(store, &late).await, "{kind}");
        assert_eq!(since(store, &eva, 0).await.tokens, before.tokens + 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_past_the_stored_range_are_refused_not_wrapped() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (fay, run) = (user("fay"), RunId::generate());
        let huge = call("1", &fay, &run, (u64::MAX, 1), None, 1_000);
        assert!(store.record_usage(&huge).await.is_err(), "{kind}");
        let costly = call("2", &fay, &run, (1, 1), Some(u64::MAX), 1_000);
        assert!(store.record_usage(&costly).await.is_err(), "{kind}");
        assert_eq!(since(store, &fay, 0).await, UsageTotals::default());

        // Two calls at the largest count each: their sum is an error, never a wrapped total.
        let max = u64::try_from(i64::MAX).unwrap();
        for n in ["3", "4"] {
            assert!(record(store, &call(n, &fay, &run, (max, 0), None, 1_000)).await);
        }
        assert!(store.usage_since(&fay, 0).await.is_err(), "{kind}");
        assert!(store.run_usage(&fay, &run).await.is_err(), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_older_than_its_retention_is_erased_for_every_user() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (gus, hal, run) = (user("gus"), user("hal"), RunId::generate());
        for (n, who, at) in [("1", &gus, 100), ("2", &hal, 900), ("3", &gus, 1_500)] {
            assert!(record(store, &call(n, who, &run, (10, 5), None, at)).await);
        }
        assert_eq!(store.prune_usage(1_000).await.unwrap(), 2, "{kind}");
        assert_eq!(since(store, &gus, 0).await.calls, 1, "{kind}");
        assert_eq!(since(store, &hal, 0).await.calls, 0, "{kind}");
        assert_eq!(store.prune_usage(1_000).await.unwrap(), 0, "{kind}");
    }
}
