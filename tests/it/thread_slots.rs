//! One run per thread in the run slots (`ThreadRule`), against every implementation (in
//! process, and the cluster's Redis leases on two nodes): a thread's runs start one at a
//! time in the order they queued, `Front` claims go ahead of the thread's queue, `Reject` is
//! refused naming the thread's run, and a claim blocked by its thread holds up none of the
//! user's other threads.

use std::sync::Arc;
use std::time::Duration;

use core_context::{RunId, RunScope, ThreadId, UserId};
use execution_engine::slots::{Claim, RunSlots, SlotError, ThreadRule};
use tokio::sync::mpsc;

use crate::run_slots::{implementations, queued, running, slot_of};
use crate::support::user_id;

fn scope_in(thread: &ThreadId) -> RunScope {
    RunScope {
        run_id: RunId::generate(),
        parent_run_id: None,
        thread_id: thread.clone(),
        agent_name: Arc::from("synthetic"),
    }
}

async fn claim_in(
    slots: &Arc<dyn RunSlots>,
    user: &UserId,
    scope: &RunScope,
    rule: ThreadRule,
) -> Result<Claim, SlotError> {
    slots.claim(user, scope, "go", rule).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threads_runs_start_one_at_a_time_in_order_and_other_threads_go_on() {
    let (all, _redis) = implementations(3, 10).await;
    for nodes in all {
        let n = nodes.name;
        let user = user_id(&format!("thr-order-{n}"));
        let thread = ThreadId::generate();
        let (a, b, c) = (scope_in(&thread), scope_in(&thread), scope_in(&thread));
        let first = running(claim_in(&nodes.a, &user, &a, ThreadRule::Queue).await, n);
        let second = queued(claim_in(&nodes.b, &user, &b, ThreadRule::Queue).await, n);
        assert_eq!(second.position(), 0, "{n}: next in its thread");
        assert_eq!(second.thread_active(), Some(&a.run_id), "{n}");
        let third = queued(claim_in(&nodes.a, &user, &c, ThreadRule::Queue).await, n);
        assert_eq!(third.position(), 1, "{n}: one of its thread ahead");
        // Slots are free: another thread of the user's runs at once, and so does a
        // claim that does not keep one run per thread.
        let elsewhere = scope_in(&ThreadId::generate());
        let other = running(
            claim_in(&nodes.b, &user, &elsewhere, ThreadRule::Queue).await,
            n,
        );
        let beside = scope_in(&thread);
        let parallel = running(
            claim_in(&nodes.a, &user, &beside, ThreadRule::Parallel).await,
            n,
        );
        drop((other, parallel));
        drop(first);
        let second = slot_of(second, n).await;
        // The third still waits for the second.
        let third = tokio::spawn(async move { third.wait().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "{n}: two runs of one thread at once");
        drop(second);
        let got = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third run never started")
            .unwrap();
        assert!(got, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_is_refused_naming_the_threads_run() {
    let (all, _redis) = implementations(3, 10).await;
    for nodes in all {
        let n = nodes.name;
        let user = user_id(&format!("thr-reject-{n}"));
        let thread = ThreadId::generate();
        let a = scope_in(&thread);
        let held = running(claim_in(&nodes.a, &user, &a, ThreadRule::Reject).await, n);
        match claim_in(&nodes.b, &user, &scope_in(&thread), ThreadRule::Reject).await {
            Err(SlotError::ThreadBusy { run }) => assert_eq!(run, a.run_id, "{n}"),
            other => panic!("{n}: expected thread_busy, got {other:?}"),
        }
        // The thread is free again once the run's slot is back.
        drop(held);
        let mut freed = false;
        for _ in 0..100 {
            if let Ok(Claim::Running(_)) =
                claim_in(&nodes.b, &user, &scope_in(&thread), ThreadRule::Reject).await
            {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(freed, "{n}: the thread stayed busy after its run ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_claims_go_ahead_of_the_threads_queue_in_the_order_they_came() {
    let (all, _redis) = implementations(3, 10).await;
    for nodes in all {
        let n = nodes.name;
        let user = user_id(&format!("thr-front-{n}"));
        let thread = ThreadId::generate();
        let a = scope_in(&thread);
        let held = running(claim_in(&nodes.a, &user, &a, ThreadRule::Queue).await, n);
        let (order_tx, mut order) = mpsc::unbounded_channel();
        let mut expect = Vec::new();
        for (name, rule, position) in [
            ("queued", ThreadRule::Queue, 0),
            ("front-1", ThreadRule::Front, 0),
            ("front-2", ThreadRule::Front, 1),
            ("queued-2", ThreadRule::Queue, 3),
        ] {
            let node = if expect.len() % 2 == 0 {
                &nodes.b
            } else {
                &nodes.a
            };
            let place = queued(claim_in(node, &user, &scope_in(&thread), rule).await, n);
            assert_eq!(place.position(), position, "{n}: {name}");
            assert_eq!(place.thread_active(), Some(&a.run_id), "{n}: {name}");
            expect.push(name);
            let tx = order_tx.clone();
            tokio::spawn(async move {
                if let Ok(permit) = place.wait().await {
                    let _ = tx.send(name);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    drop(permit);
                }
            });
        }
        drop(held);
        let mut got = Vec::new();
        for _ in 0..4 {
            let name = tokio::time::timeout(Duration::from_secs(5), order.recv())
                .await
                .unwrap_or_else(|_| panic!("{n}: runs stopped starting after {got:?}"))
                .unwrap();
            got.push(name);
        }
        assert_eq!(got, ["front-1", "front-2", "queued", "queued-2"], "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_place_lets_the_next_of_its_thread_go() {
    let (all, _redis) = implementations(1, 10).await;
    for nodes in all {
        let n = nodes.name;
        let user = user_id(&format!("thr-cancel-{n}"));
        let thread = ThreadId::generate();
        let held = running(
            claim_in(&nodes.a, &user, &scope_in(&thread), ThreadRule::Queue).await,
            n,
        );
        let gone = queued(
            claim_in(&nodes.b, &user, &scope_in(&thread), ThreadRule::Queue).await,
            n,
        );
        let next = queued(
            claim_in(&nodes.a, &user, &scope_in(&thread), ThreadRule::Queue).await,
            n,
        );
        assert_eq!(next.position(), 1, "{n}");
        drop(gone);
        drop(held);
        drop(slot_of(next, n).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_keeps_its_thread_until_it_resumes_and_ends_or_is_released() {
    let (all, _redis) = implementations(3, 10).await;
    for nodes in all {
        let n = nodes.name;
        let user = user_id(&format!("thr-paused-{n}"));
        let thread = ThreadId::generate();
        let a = scope_in(&thread);
        let held = running(claim_in(&nodes.a, &user, &a, ThreadRule::Queue).await, n);
        let next = queued(
            claim_in(&nodes.b, &user, &scope_in(&thread), ThreadRule::Queue).await,
            n,
        );
        // The run pauses: its slot goes back, its thread stays its own.
        nodes
            .a
            .hold_thread(&user, &thread, &a.run_id)
            .await
            .unwrap();
        drop(held);
        let next = tokio::spawn(async move { next.wait().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !next.is_finished(),
            "{n}: a queued message ran while the thread's run was paused"
        );
        // Resumed (on either node): it claims again and runs at once, ahead of the queue.
        let resumed = running(claim_in(&nodes.b, &user, &a, ThreadRule::Queue).await, n);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!next.is_finished(), "{n}");
        drop(resumed);
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the queued message never ran after the resumed run ended")
            .unwrap();
        assert!(got, "{n}");

        // Paused again, then ended without resuming: release frees the thread.
        let thread = ThreadId::generate();
        let c = scope_in(&thread);
        let held = running(claim_in(&nodes.a, &user, &c, ThreadRule::Queue).await, n);
        let after = queued(
            claim_in(&nodes.b, &user, &scope_in(&thread), ThreadRule::Queue).await,
            n,
        );
        nodes
            .a
            .hold_thread(&user, &thread, &c.run_id)
            .await
            .unwrap();
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        nodes
            .b
            .release_thread(&user, &thread, &c.run_id)
            .await
            .unwrap();
        drop(slot_of(after, n).await);
    }
}
