//! The approvals store, as one suite run against SQLite (a temp file) and PostgreSQL (a private
//! server): a run pauses for its tool calls, people decide them once, the run resumes once;
//! concurrent deciders, claimers and sweepers each have one winner; expiry, cancellation,
//! deletion; another user's paused run reads like a missing one.

use std::sync::Arc;

use core_context::approval::{Decision, PendingCall};
use core_context::{RunId, ThreadId, UserId};
use history::{
    ApprovalRecord, ApprovalStatus, CancelledRun, DecideOutcome, HistoryStore, PausedRun,
    Resumable, RunStatus, WaitingCall,
};
use serde_json::{Value, json};

use crate::history::{started, stores, user};

/// Far in the future: a call that does not expire during a test.
const LATER: i64 = 1 << 50;

fn waiting(id: &str, tool: &str, arguments: Value, expires_ms: i64) -> WaitingCall {
    WaitingCall {
        call: PendingCall {
            tool_call_id: id.into(),
            tool_name: tool.into(),
            arguments,
        },
        expires_ms,
    }
}

fn decided(waiting: usize) -> DecideOutcome {
    DecideOutcome::Decided { waiting }
}

fn already(decision: &str) -> DecideOutcome {
    DecideOutcome::AlreadyDecided {
        decision: decision.into(),
    }
}

fn call_ids(records: &[ApprovalRecord]) -> Vec<&str> {
    records.iter().map(|a| a.tool_call_id.as_str()).collect()
}

/// A run paused in a store under test, and the calls the tests make about it (as its user,
/// unless named otherwise).
#[derive(Clone)]
struct Paused {
    store: Arc<dyn HistoryStore>,
    run: PausedRun,
}

impl Paused {
    /// Starts `user`'s run in a new thread and pauses it at `at_ms` on `calls`.
    async fn start(
        store: &Arc<dyn HistoryStore>,
        user: &UserId,
        at_ms: i64,
        calls: Vec<WaitingCall>,
    ) -> Self {
        let (run_id, thread_id) = (RunId::generate(), ThreadId::generate());
        store
            .apply(&[started(
                user,
                &run_id,
                &thread_id,
                "tidy my inbox",
                at_ms - 1,
            )])
            .await
            .unwrap();
        let run = PausedRun {
            user: user.clone(),
            run_id,
            thread_id,
            agent: "assistant".into(),
            message: "tidy my inbox".into(),
            input: json!({"message": "tidy my inbox"}),
            // A continuation of a realistic size: tens of KB.
            state: json!({"messages": ["x".repeat(40_000)], "step": 3}),
            paused_ms: at_ms,
            calls,
            budget: None,
        };
        store.pause_run(&run).await.unwrap();
        Self {
            store: Arc::clone(store),
            run,
        }
    }

    /// Pauses the (resumed) run again at `at_ms` on `calls`, with a new state.
    async fn again(&self, at_ms: i64, calls: Vec<WaitingCall>) -> PausedRun {
        let run = PausedRun {
            state: json!({"step": at_ms}),
            paused_ms: at_ms,
            calls,
            ..self.run.clone()
        };
        self.store.pause_run(&run).await.unwrap();
        run
    }

    fn id(&self) -> &RunId {
        &self.run.run_id
    }

    async fn decide_as(&self, user: &UserId, call: &str, d: &Decision, at: i64) -> DecideOutcome {
        self.store
            .decide(user, self.id(), call, d, at)
            .await
            .unwrap()
    }

    async fn decide(&self, call: &str, decision: &Decision, at_ms: i64) -> DecideOutcome {
        self.decide_as(&self.run.user, call, decision, at_ms).await
    }

    async fn claim(&self, node: &str, at_ms: i64) -> Option<Resumable> {
        self.store
            .claim_resume(self.id(), node, at_ms)
            .await
            .unwrap()
    }

    async fn cancel_as(&self, user: &UserId, at_ms: i64) -> Option<CancelledRun> {
        self.store
            .cancel_paused(user, self.id(), history::RunStatus::Cancelled, at_ms)
            .await
            .unwrap()
    }

    async fn record(&self, call: &str, result: Value) -> bool {
        self.store
            .record_result(self.id(), call, &result)
            .await
            .unwrap()
    }

    async fn approvals(&self) -> Vec<ApprovalRecord> {
        self.store
            .run_approvals(&self.run.user, self.id())
            .await
            .unwrap()
    }

    async fn status(&self) -> RunStatus {
        let detail = self.store.run(&self.run.user, self.id()).await.unwrap();
        detail.expect("the run is stored").run.status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_waits_for_its_users_decisions_and_resumes_once() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (alice, bob) = (user("alice"), user("bob"));
        let calls = vec![
            waiting("c1", "calculator", json!({"expression": "6*7"}), LATER),
            waiting("c2", "delete_mail", json!({"folder": "inbox"}), LATER),
            waiting("c3", "search", json!({"query": "rust"}), LATER + 1),
        ];
        let run = Paused::start(store, &alice, 1_000, calls.clone()).await;
        assert_eq!(run.status().await, RunStatus::WaitingForApproval, "{kind}");
        let listed = store.pending_approvals(&alice, 10).await.unwrap();
        assert_eq!(call_ids(&listed), ["c1", "c2", "c3"], "{kind}");
        let first = &listed[0];
        let expected = ApprovalRecord {
            run_id: run.id().to_string(),
            thread_id: run.run.thread_id.to_string(),
            agent: "assistant".into(),
            tool_call_id: "c1".into(),
            tool_name: "calculator".into(),
            arguments: json!({"expression": "6*7"}),
            requested_ms: 1_000,
            expires_ms: LATER,
            status: ApprovalStatus::Pending,
            decision: None,
            decided_ms: None,
        };
        assert_eq!(first, &expected, "{kind}");
        let two = store.pending_approvals(&alice, 2).await.unwrap();
        assert_eq!(call_ids(&two), ["c1", "c2"], "{kind}");

        // Bob sees none of it and can change none of it.
        let bobs = store.pending_approvals(&bob, 10).await.unwrap();
        assert!(bobs.is_empty(), "{kind}");
        let bobs = store.run_approvals(&bob, run.id()).await.unwrap();
        assert!(bobs.is_empty(), "{kind}");
        let bobs = run.decide_as(&bob, "c1", &Decision::Approve, 2_000).await;
        assert_eq!(bobs, DecideOutcome::NotFound, "{kind}");
        assert_eq!(run.cancel_as(&bob, 2_000).await, None, "{kind}");
        let missing = run.decide("c9", &Decision::Approve, 2_000).await;
        assert_eq!(missing, DecideOutcome::NotFound, "{kind}");

        let edit = Decision::Edit {
            arguments: json!({"expression": "6*8"}),
        };
        let reject = Decision::Reject {
            message: Some("not the inbox".into()),
        };
        let respond = Decision::Respond {
            message: "rust is a language".into(),
        };
        assert_eq!(run.decide("c1", &edit, 2_000).await, decided(2), "{kind}");
        let again = run.decide("c1", &Decision::Approve, 2_001).await;
        assert_eq!(again, already("edit"), "{kind}");
        assert!(run.claim("node-b", 2_002).await.is_none(), "{kind}");
        assert_eq!(run.decide("c2", &reject, 2_003).await, decided(1), "{kind}");
        assert!(run.claim("node-b", 2_004).await.is_none(), "{kind}");
        assert_eq!(
            run.status().await,
            RunStatus::WaitingForApproval,
            "{kind}: a refused claim leaves the run waiting"
        );
        assert_eq!(
            run.decide("c3", &respond, 2_005).await,
            decided(0),
            "{kind}"
        );
        let left = store.pending_approvals(&alice, 10).await.unwrap();
        assert!(left.is_empty(), "{kind}");

        let resumable = run
            .claim("node-b", 3_000)
            .await
            .expect("every call is decided");
        assert_eq!(resumable.run, run.run, "{kind}: the run as it paused");
        let decisions: Vec<&Decision> = resumable.resolved.iter().map(|r| &r.decision).collect();
        assert_eq!(decisions, [&edit, &reject, &respond], "{kind}");
        let asked: Vec<&PendingCall> = resumable.resolved.iter().map(|r| &r.call).collect();
        let expected: Vec<&PendingCall> = calls.iter().map(|c| &c.call).collect();
        assert_eq!(asked, expected, "{kind}: the original arguments");
        assert!(resumable.resolved.iter().all(|r| r.result.is_none()));
        assert_eq!(run.status().await, RunStatus::Running, "{kind}");
        assert!(run.claim("node-c", 3_001).await.is_none(), "{kind}: once");

        let settled: Vec<_> = run
            .approvals()
            .await
            .into_iter()
            .map(|a| (a.tool_call_id, a.status, a.decision, a.decided_ms))
            .collect();
        let decided_at = |call: &str, name: &str, at: i64| {
            let name = Some(name.to_owned());
            (call.to_owned(), ApprovalStatus::Decided, name, Some(at))
        };
        assert_eq!(
            settled,
            [
                decided_at("c1", "edit", 2_000),
                decided_at("c2", "reject", 2_003),
                decided_at("c3", "respond", 2_005),
            ],
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deciders_and_claimers_have_one_winner_each() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let calls = vec![
            waiting("a", "deploy", json!({"env": "prod"}), LATER),
            waiting("b", "deploy", json!({"env": "staging"}), LATER),
            waiting("c", "deploy", json!({"env": "dev"}), LATER),
        ];
        let run = Paused::start(store, &user("erin"), 1_000, calls).await;
        let deciders: Vec<_> = (0..16)
            .map(|i| {
                let run = run.clone();
                let decision = if i % 2 == 0 {
                    Decision::Approve
                } else {
                    Decision::Reject { message: None }
                };
                tokio::spawn(async move {
                    let outcome = run.decide("a", &decision, 2_000).await;
                    (decision, outcome)
                })
            })
            .collect();
        let (mut winners, mut losers) = (Vec::new(), Vec::new());
        for task in deciders {
            match task.await.unwrap() {
                (decision, DecideOutcome::Decided { waiting }) => {
                    winners.push((decision.name(), waiting));
                }
                (_, DecideOutcome::AlreadyDecided { decision }) => losers.push(decision),
                (_, other) => panic!("{kind}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{kind}: {winners:?}");
        let (name, waiting) = winners[0];
        assert_eq!(waiting, 2, "{kind}");
        assert_eq!(losers.len(), 15, "{kind}");
        assert!(
            losers.iter().all(|l| l == name),
            "{kind}: {losers:?} after {name}"
        );

        // The last two calls decided at once, then 8 claimers race: one resumes the run.
        let decide = |call: &'static str| {
            let run = run.clone();
            tokio::spawn(async move { run.decide(call, &Decision::Approve, 2_100).await })
        };
        let (b, c) = (decide("b"), decide("c"));
        let mut waits = [b.await.unwrap(), c.await.unwrap()].map(|o| match o {
            DecideOutcome::Decided { waiting } => waiting,
            other => panic!("{kind}: {other:?}"),
        });
        // Whoever counted last saw both decided: someone knows the run can resume.
        waits.sort_unstable();
        assert_eq!(waits[0], 0, "{kind}: {waits:?}");
        let claimers: Vec<_> = (0..8)
            .map(|i| {
                let run = run.clone();
                tokio::spawn(async move { run.claim(&format!("node-{i}"), 3_000).await })
            })
            .collect();
        let mut resumed = Vec::new();
        for task in claimers {
            resumed.extend(task.await.unwrap());
        }
        assert_eq!(
            resumed.len(),
            1,
            "{kind}: exactly one claimer resumes the run"
        );
        assert_eq!(resumed[0].resolved.len(), 3, "{kind}");
        assert_eq!(run.status().await, RunStatus::Running, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_recorded_once_and_a_later_pause_re_arms_its_calls() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let fay = user("fay");
        let first = vec![waiting("a", "fetch", json!({"n": 1}), LATER)];
        let run = Paused::start(store, &fay, 1_000, first).await;
        assert_eq!(run.decide("a", &Decision::Approve, 1_100).await, decided(0));
        // The tool ran before the claim (say, on the node that took the decision).
        assert!(run.record("a", json!({"rows": 3})).await, "{kind}");
        assert!(
            !run.record("a", json!({"rows": 4})).await,
            "{kind}: a result is recorded once"
        );
        let resumed = run.claim("node-a", 1_200).await.unwrap();
        let result = &resumed.resolved[0].result;
        assert_eq!(result, &Some(json!({"rows": 3})), "{kind}");

        // The resumed run pauses again: `a` is asked anew (re-armed, its result cleared), `b`
        // for the first time.
        let second = vec![
            waiting("a", "fetch", json!({"n": 2}), LATER),
            waiting("b", "store", json!({"key": "k"}), LATER),
        ];
        let again = run.again(2_000, second).await;
        assert_eq!(run.status().await, RunStatus::WaitingForApproval, "{kind}");
        let asked: Vec<_> = store
            .pending_approvals(&fay, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.tool_call_id, a.arguments, a.requested_ms))
            .collect();
        let expected = [
            ("a".to_owned(), json!({"n": 2}), 2_000),
            ("b".to_owned(), json!({"key": "k"}), 2_000),
        ];
        assert_eq!(asked, expected, "{kind}");
        assert!(run.claim("node-a", 2_001).await.is_none(), "{kind}");
        let reject = Decision::Reject { message: None };
        assert_eq!(run.decide("a", &reject, 2_100).await, decided(1), "{kind}");
        assert_eq!(run.decide("b", &Decision::Approve, 2_100).await, decided(0));
        assert!(run.record("b", json!("stored")).await, "{kind}");
        let resumed = run.claim("node-b", 2_200).await.unwrap();
        assert_eq!(
            resumed.run, again,
            "{kind}: the second pause's state and calls"
        );
        let got: Vec<_> = resumed
            .resolved
            .into_iter()
            .map(|r| (r.call.tool_call_id, r.decision, r.result))
            .collect();
        let expected = [
            ("a".to_owned(), reject, None),
            ("b".to_owned(), Decision::Approve, Some(json!("stored"))),
        ];
        assert_eq!(got, expected, "{kind}");

        // A third pause on a new call: the claim carries that pause's call only; the run's
        // approvals keep every call, in the order they were (last) asked.
        run.again(3_000, vec![waiting("c", "fetch", json!({}), LATER)])
            .await;
        run.decide("c", &Decision::Approve, 3_100).await;
        let last = run.claim("node-a", 3_200).await.unwrap();
        let ids: Vec<_> = last.resolved.iter().map(|r| &r.call.tool_call_id).collect();
        assert_eq!(ids, ["c"], "{kind}");
        assert_eq!(call_ids(&run.approvals().await), ["a", "b", "c"], "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_their_expiry_are_expired_once_and_resume_as_expired() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let gus = user("gus");
        let calls = vec![
            waiting("soon", "wire_money", json!({"amount": 5}), 1_500),
            waiting("late", "wire_money", json!({"amount": 6}), 100_000),
        ];
        let run = Paused::start(store, &gus, 1_000, calls).await;
        let not_yet = store.expire_approvals(1_499, 10).await.unwrap();
        assert!(not_yet.is_empty(), "{kind}");
        let sweepers: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.expire_approvals(5_000, 10).await.unwrap() })
            })
            .collect();
        let mut expired = Vec::new();
        for task in sweepers {
            expired.extend(task.await.unwrap());
        }
        assert_eq!(
            expired.len(),
            1,
            "{kind}: one sweeper expires it: {expired:?}"
        );
        let call = &expired[0];
        assert_eq!(
            (&call.user, &call.run_id, &call.thread_id),
            (&gus, run.id(), &run.run.thread_id),
            "{kind}"
        );
        assert_eq!(
            (call.agent.as_str(), call.tool_call_id.as_str()),
            ("assistant", "soon")
        );
        let again = store.expire_approvals(6_000, 10).await.unwrap();
        assert!(again.is_empty(), "{kind}");
        let late = run.decide("soon", &Decision::Approve, 5_100).await;
        assert_eq!(late, DecideOutcome::Expired, "{kind}");
        let approve = run.decide("late", &Decision::Approve, 5_200).await;
        assert_eq!(approve, decided(0), "{kind}");
        let resumed = run.claim("node-a", 5_300).await.unwrap();
        let decisions: Vec<_> = resumed.resolved.into_iter().map(|r| r.decision).collect();
        assert_eq!(decisions, [Decision::Expired, Decision::Approve], "{kind}");
        let soon = &run.approvals().await[0];
        assert_eq!(
            (soon.status, soon.decision.as_deref(), soon.decided_ms),
            (ApprovalStatus::Expired, Some("expired"), Some(5_000)),
            "{kind}"
        );

        // A call past its expiry that no sweep reached yet cannot be decided either; the run
        // resumes once a sweep expired it.
        let calls = vec![waiting("x", "wire_money", json!({}), 12_000)];
        let other = Paused::start(store, &gus, 10_000, calls).await;
        let past = other.decide("x", &Decision::Approve, 12_000).await;
        assert_eq!(past, DecideOutcome::Expired, "{kind}");
        assert!(other.claim("node-a", 12_001).await.is_none(), "{kind}");
        let swept = store.expire_approvals(12_002, 10).await.unwrap();
        assert_eq!(swept.len(), 1, "{kind}");
        let resumed = other.claim("node-a", 12_003).await.unwrap();
        assert_eq!(resumed.resolved[0].decision, Decision::Expired, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_is_cancelled_once_by_its_user() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let (hana, ivan) = (user("hana"), user("ivan"));
        let calls = vec![
            waiting("a", "send", json!({"to": "x"}), LATER),
            waiting("b", "send", json!({"to": "y"}), LATER),
        ];
        let run = Paused::start(store, &hana, 1_000, calls).await;
        run.decide("a", &Decision::Approve, 1_100).await;
        assert_eq!(run.cancel_as(&ivan, 1_200).await, None, "{kind}");
        let cancelled = run.cancel_as(&hana, 1_300).await.expect("her paused run");
        let expected = CancelledRun {
            thread_id: run.run.thread_id.clone(),
            agent: "assistant".into(),
        };
        assert_eq!(cancelled, expected, "{kind}");
        assert_eq!(run.cancel_as(&hana, 1_400).await, None, "{kind}: once");
        let detail = store.run(&hana, run.id()).await.unwrap().unwrap().run;
        assert_eq!(detail.status, RunStatus::Cancelled, "{kind}");
        assert_eq!(detail.finished_ms, Some(1_300), "{kind}");
        let statuses: Vec<_> = run.approvals().await.iter().map(|a| a.status).collect();
        let expected = [ApprovalStatus::Decided, ApprovalStatus::Cancelled];
        assert_eq!(statuses, expected, "{kind}");
        let late = run.decide("b", &Decision::Approve, 1_500).await;
        assert_eq!(late, already("cancelled"), "{kind}");
        assert!(run.claim("node-a", 1_600).await.is_none(), "{kind}");
        let pending = store.pending_approvals(&hana, 10).await.unwrap();
        assert!(pending.is_empty(), "{kind}");

        // A run already resumed is no longer paused: nothing to cancel.
        let calls = vec![waiting("c", "send", json!({}), LATER)];
        let resumed = Paused::start(store, &hana, 2_000, calls).await;
        resumed.decide("c", &Decision::Approve, 2_100).await;
        assert!(resumed.claim("node-a", 2_200).await.is_some(), "{kind}");
        assert_eq!(resumed.cancel_as(&hana, 2_300).await, None, "{kind}");
        assert_eq!(resumed.status().await, RunStatus::Running, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_threads_take_their_approvals_and_orphan_sweeps_leave_paused_runs_waiting() {
    let stores = stores().await;
    for (kind, store) in &stores.list {
        let jan = user("jan");
        let call = || vec![waiting("a", "send", json!({}), LATER)];
        let deleted = Paused::start(store, &jan, 1_000, call()).await;
        let pruned = Paused::start(store, &jan, 100, call()).await;
        let kept = Paused::start(store, &jan, 1_000, call()).await;
        let pending = store.pending_approvals(&jan, 10).await.unwrap();
        assert_eq!(pending.len(), 3, "{kind}");
        let thread = &deleted.run.thread_id;
        assert!(store.delete_thread(&jan, thread).await.unwrap(), "{kind}");
        assert_eq!(store.prune(500, 100).await.unwrap(), 1, "{kind}");
        let pending = store.pending_approvals(&jan, 10).await.unwrap();
        let left: Vec<_> = pending.iter().map(|a| a.run_id.as_str()).collect();
        assert_eq!(left, [kept.id().as_str()], "{kind}");
        for gone in [&deleted, &pruned] {
            assert!(gone.approvals().await.is_empty(), "{kind}");
            assert!(gone.claim("node-a", 2_000).await.is_none(), "{kind}");
        }

        // Its node (node-a, where `started` puts runs) stopped: its running run is
        // interrupted; the paused one has no task to lose and keeps waiting.
        let (running, thread) = (RunId::generate(), ThreadId::generate());
        let start = started(&jan, &running, &thread, "q", 1_500);
        store.apply(&[start]).await.unwrap();
        store.heartbeat("node-a", 1_000).await.unwrap();
        let marked = store.interrupt_orphans(50_000, "me", 60_000).await.unwrap();
        assert_eq!(marked, 1, "{kind}");
        let running = store.run(&jan, &running).await.unwrap().unwrap().run;
        assert_eq!(running.status, RunStatus::Interrupted, "{kind}");
        assert_eq!(kept.status().await, RunStatus::WaitingForApproval, "{kind}");

        // Resumed on node-b, it is that node's: it is interrupted when node-b stops.
        kept.decide("a", &Decision::Approve, 61_000).await;
        assert!(kept.claim("node-b", 61_100).await.is_some(), "{kind}");
        store.heartbeat("node-a", 70_000).await.unwrap();
        let marked = store.interrupt_orphans(65_000, "me", 71_000).await.unwrap();
        assert_eq!(marked, 1, "{kind}");
        assert_eq!(kept.status().await, RunStatus::Interrupted, "{kind}");
    }
}
