//! The Redis budget ledger (`redis_broker::BudgetLedger`) on a private `redis-server`: its
//! reservations are `core_context::budget::plan_call`'s to the token and the micro-dollar
//! (a table of edges and a generated sweep), what one node's calls hold the others see, nodes
//! reserving at once never pass a budget together, settled usage counts (the larger of the
//! ledger's count and the history's), an expired reservation stops counting, and one user's
//! reservations leave others alone.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use core_context::UserId;
use core_context::budget::{BudgetKind, CallAsk, CallPlan, Limits, Spent, plan_call};
use redis_broker::{BudgetLedger, LedgerGrant, LedgerTicket, RedisBroker, RedisBrokerConfig};
use ws_bridge::BridgeConfig;

use crate::redis_support::RedisServer;
use crate::support::user_id;

const TTL: Duration = Duration::from_secs(60);

/// One node on `redis`: its broker (kept alive) and its ledger.
async fn node(redis: &RedisServer) -> (Arc<RedisBroker>, BudgetLedger) {
    let bounds = BridgeConfig::default().replay_bounds();
    let broker = Arc::new(
        RedisBroker::connect(RedisBrokerConfig::new(redis.url(), bounds))
            .await
            .unwrap(),
    );
    let ledger = broker.budget_ledger();
    (broker, ledger)
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A period under way, the same for the whole test binary: began a minute before its first
/// use, ends an hour after it.
fn period() -> (i64, i64) {
    static PERIOD: OnceLock<(i64, i64)> = OnceLock::new();
    *PERIOD.get_or_init(|| {
        let now = now_ms();
        (now - 60_000, now + 3_600_000)
    })
}

fn spent(tokens: u64, cost_micro_usd: u64) -> Spent {
    Spent {
        tokens,
        cost_micro_usd,
    }
}

fn ask(prompt_tokens: u64, answer_cap: u64, price: Option<(f64, f64)>) -> CallAsk {
    CallAsk {
        prompt_tokens,
        answer_cap,
        price,
    }
}

fn limits(tokens: Option<u64>, cost_micro_usd: Option<u64>) -> Limits {
    Limits {
        tokens,
        cost_micro_usd,
    }
}

fn tokens_only(limit: u64) -> Limits {
    limits(Some(limit), None)
}

/// An outcome both sides can be compared on.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reserved(u64),
    Exhausted(BudgetKind, u64),
    TooLarge(BudgetKind),
}

/// What `plan_call` says, with the usage an exhausted ledger reports (`used`: the period's
/// usage, reservations aside).
fn planned(plan: CallPlan, used: Spent) -> Outcome {
    match plan {
        CallPlan::Reserve { answer, .. } => Outcome::Reserved(answer),
        CallPlan::Exhausted(kind) => Outcome::Exhausted(
            kind,
            match kind {
                BudgetKind::Tokens => used.tokens,
                BudgetKind::CostUsd => used.cost_micro_usd,
            },
        ),
        CallPlan::TooLarge(kind) => Outcome::TooLarge(kind),
    }
}

fn outcome(grant: &LedgerGrant) -> Outcome {
    match grant {
        LedgerGrant::Reserved { answer, .. } => Outcome::Reserved(*answer),
        LedgerGrant::Exhausted { kind, used } => Outcome::Exhausted(*kind, *used),
        LedgerGrant::TooLarge(kind) => Outcome::TooLarge(*kind),
    }
}

async fn reserve(
    ledger: &BudgetLedger,
    user: &UserId,
    seen: Spent,
    ask: &CallAsk,
    limits: Limits,
) -> LedgerGrant {
    ledger
        .reserve(user, period(), seen, ask, limits, TTL)
        .await
        .unwrap()
}

fn ticket(grant: LedgerGrant) -> LedgerTicket {
    match grant {
        LedgerGrant::Reserved { ticket, .. } => ticket,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

fn answer_of(grant: &LedgerGrant) -> u64 {
    match grant {
        LedgerGrant::Reserved { answer, .. } => *answer,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// Runs one case on a fresh user: the first reservation is `plan_call(seen, …)`'s, and a
/// second (with the first still held) is `plan_call(seen + what the first reserved, …)`'s,
/// so the tokens and cost the ledger holds are the plan's too.
/// Returns the first plan.
async fn check_case(
    ledger: &BudgetLedger,
    name: &str,
    seen: Spent,
    ask: &CallAsk,
    limits: Limits,
) -> CallPlan {
    let user = user_id(&format!("ledger-conf-{name}"));
    let plan = plan_call(seen, ask, limits);
    let first = reserve(ledger, &user, seen, ask, limits).await;
    assert_eq!(
        outcome(&first),
        planned(plan, seen),
        "{name}: {seen:?} {ask:?} {limits:?}"
    );
    let held = match plan {
        CallPlan::Reserve {
            tokens,
            cost_micro_usd,
            ..
        } => spent(tokens, cost_micro_usd),
        _ => spent(0, 0),
    };
    let counted = spent(
        seen.tokens.saturating_add(held.tokens),
        seen.cost_micro_usd.saturating_add(held.cost_micro_usd),
    );
    let second = reserve(ledger, &user, seen, ask, limits).await;
    assert_eq!(
        outcome(&second),
        planned(plan_call(counted, ask, limits), seen),
        "{name} (again, the first held): {seen:?} {ask:?} {limits:?}"
    );
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_plan_calls_to_the_token_and_the_micro_dollar() {
    let redis = RedisServer::start();
    let (_broker, ledger) = node(&redis).await;
    let plain = ask(600, 4096, None);
    let priced = ask(600, 4096, Some((10.0, 30.0)));
    let dollars = limits(None, Some(50_000));
    let cases: Vec<(&str, Spent, CallAsk, Limits)> = vec![
        ("unbounded", spent(0, 0), plain, Limits::default()),
        ("unbounded-priced", spent(7, 9), priced, Limits::default()),
        ("remaining", spent(1_000, 0), plain, tokens_only(3_000)),
        ("least", spent(3_000 - 616, 0), plain, tokens_only(3_000)),
        (
            "one-short",
            spent(3_000 - 615, 0),
            plain,
            tokens_only(3_000),
        ),
        ("over", spent(5_000, 0), plain, tokens_only(3_000)),
        ("too-large", spent(0, 0), plain, tokens_only(615)),
        ("just-fits", spent(0, 0), plain, tokens_only(616)),
        ("cap-binds", spent(10, 0), plain, tokens_only(1_000_000)),
        (
            "zero-prompt",
            spent(0, 0),
            ask(0, 4096, None),
            tokens_only(100),
        ),
        ("zero-cap", spent(0, 0), ask(50, 0, None), tokens_only(100)),
        ("cost", spent(0, 30_000), priced, dollars),
        ("cost-one-short", spent(0, 50_000 - 6_479), priced, dollars),
        ("cost-least", spent(0, 50_000 - 6_480), priced, dollars),
        (
            "cost-too-large",
            spent(0, 0),
            priced,
            limits(None, Some(6_479)),
        ),
        ("cost-over", spent(0, 90_000), priced, dollars),
        ("no-price", spent(0, 90_000), plain, dollars),
        (
            "price-no-cost-limit",
            spent(0, 0),
            priced,
            tokens_only(5_000),
        ),
        (
            "tokens-bind-first",
            spent(2_000, 0),
            priced,
            limits(Some(3_000), Some(1_000_000)),
        ),
        (
            "cost-binds-first",
            spent(0, 40_000),
            priced,
            limits(Some(100_000), Some(50_000)),
        ),
        (
            "both-exhausted-tokens-first",
            spent(3_000, 50_000),
            priced,
            limits(Some(3_000), Some(50_000)),
        ),
        (
            "cost-too-large-tokens-fine",
            spent(0, 0),
            priced,
            limits(Some(100_000), Some(100)),
        ),
        (
            "fractional-prices",
            spent(0, 0),
            ask(600, 4096, Some((0.15, 0.6))),
            limits(None, Some(1_000)),
        ),
        (
            "inexact-floats",
            spent(0, 3),
            ask(3, 4096, Some((0.1, 0.3))),
            limits(None, Some(100)),
        ),
        (
            "free-output",
            spent(0, 10),
            ask(600, 4096, Some((1.0, 0.0))),
            limits(None, Some(1_000)),
        ),
        (
            "free-model",
            spent(0, 10),
            ask(600, 4096, Some((0.0, 0.0))),
            limits(Some(5_000), Some(1_000)),
        ),
        (
            "huge-limits",
            spent(0, 0),
            priced,
            limits(Some(u64::MAX), Some(u64::MAX)),
        ),
    ];
    for (name, seen, ask, limits) in &cases {
        check_case(&ledger, name, *seen, ask, *limits).await;
    }
    let mut kinds = std::collections::BTreeSet::new();
    // A sweep over generated cases (a fixed xorshift sequence): small budgets, so the edges
    // come up often.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let prices = [
        0.0, 0.1, 0.15, 0.3, 0.6, 1.0, 2.5, 3.0, 10.0, 15.0, 30.0, 75.0,
    ];
    for i in 0..300 {
        let price = (next(4) != 0).then(|| {
            (
                prices[usize::try_from(next(12)).unwrap()],
                prices[usize::try_from(next(12)).unwrap()],
            )
        });
        let call = ask(next(3_000), next(8_192), price);
        let limit = limits(
            (next(3) != 0).then(|| next(12_000)),
            (next(3) != 0).then(|| next(200_000)),
        );
        let seen = spent(next(12_000), next(200_000));
        let plan = check_case(&ledger, &format!("gen-{i}"), seen, &call, limit).await;
        kinds.insert(match plan {
            CallPlan::Reserve { answer, .. } if answer == call.answer_cap => "reserve-cap",
            CallPlan::Reserve { .. } => "reserve-bounded",
            CallPlan::Exhausted(BudgetKind::Tokens) => "exhausted-tokens",
            CallPlan::Exhausted(BudgetKind::CostUsd) => "exhausted-cost",
            CallPlan::TooLarge(BudgetKind::Tokens) => "too-large-tokens",
            CallPlan::TooLarge(BudgetKind::CostUsd) => "too-large-cost",
        });
    }
    assert_eq!(kinds.len(), 6, "the sweep missed an outcome: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_the_calls_under_way_on_the_others() {
    let redis = RedisServer::start();
    let (_a, node_a) = node(&redis).await;
    let (_b, node_b) = node(&redis).await;
    let user = user_id("ledger-nodes");
    let call = ask(500, 4096, None);
    let limit = tokens_only(8_000);
    let on_a = reserve(&node_a, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&on_a), 4096);
    // B counts A's 4,596 held: 3,404 remain, 2,904 after the prompt.
    let on_b = reserve(&node_b, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&on_b), 2_904);
    // Both held: nothing remains, on either node.
    let none = reserve(&node_a, &user, spent(0, 0), &call, limit).await;
    assert_eq!(
        none,
        LedgerGrant::Exhausted {
            kind: BudgetKind::Tokens,
            used: 0
        }
    );
    // A's call made no call: its reservation goes, and B's next reserve gets more again.
    node_a.release(&ticket(on_a)).await.unwrap();
    let again = reserve(&node_b, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&again), 4096, "A's released hold still counted");
    node_b.release(&ticket(on_b)).await.unwrap();
    node_b.release(&ticket(again)).await.unwrap();
    // All let go: the whole budget again (a second release is harmless).
    let whole = reserve(&node_a, &user, spent(0, 0), &call, tokens_only(4_596)).await;
    assert_eq!(answer_of(&whole), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reserving_at_once_never_pass_the_budget_together() {
    let redis = RedisServer::start();
    let (_a, node_a) = node(&redis).await;
    let (_b, node_b) = node(&redis).await;
    let user = user_id("ledger-race");
    let limit = 10_000;
    let call = ask(500, 4096, None);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ledger = if i % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            reserve(&ledger, &user, spent(0, 0), &call, tokens_only(limit)).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            LedgerGrant::Reserved { answer, .. } => answers.push(answer),
            LedgerGrant::Exhausted { kind, used } => {
                assert_eq!((kind, used), (BudgetKind::Tokens, 0));
            }
            other @ LedgerGrant::TooLarge(_) => panic!("{other:?}"),
        }
    }
    let reserved: u64 = answers.iter().map(|answer| 500 + answer).sum();
    assert!(!answers.is_empty(), "no call was granted");
    assert!(
        reserved <= limit,
        "the calls under way hold {reserved} tokens of {limit}: {answers:?}"
    );
    // Whatever the order, identical calls one after another fill the budget exactly:
    // 4,596 + 4,596 + 808, then nothing.
    answers.sort_unstable();
    assert_eq!(answers, vec![308, 4096, 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_usage_counts_and_the_larger_count_wins() {
    let redis = RedisServer::start();
    let (_a, node_a) = node(&redis).await;
    let (_b, node_b) = node(&redis).await;
    let user = user_id("ledger-settle");
    let call = ask(500, 4096, None);
    let limit = tokens_only(5_000);
    let first = reserve(&node_a, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&first), 4096);
    // The call used 3,000 tokens: counted on every node, even by a caller whose history does
    // not have it yet (seen 0); its 4,596 reserved are let go.
    node_a
        .settle(&ticket(first), spent(3_000, 0))
        .await
        .unwrap();
    let second = reserve(&node_b, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&second), 1_500);
    node_b.release(&ticket(second)).await.unwrap();
    // A larger count in the history wins...
    let third = reserve(&node_b, &user, spent(4_000, 0), &call, limit).await;
    assert_eq!(answer_of(&third), 500);
    node_b.release(&ticket(third)).await.unwrap();
    // ...and a smaller one does not lower the ledger's.
    let fourth = reserve(&node_a, &user, spent(1_000, 0), &call, limit).await;
    assert_eq!(answer_of(&fourth), 1_500);
    node_a.release(&ticket(fourth)).await.unwrap();
    // Exhausted reports the period's usage as counted, reservations aside.
    let big = ask(2_000, 4096, None);
    assert_eq!(
        reserve(&node_a, &user, spent(0, 0), &big, limit).await,
        LedgerGrant::Exhausted {
            kind: BudgetKind::Tokens,
            used: 3_000
        }
    );
    assert_eq!(
        reserve(&node_a, &user, spent(4_990, 0), &big, limit).await,
        LedgerGrant::Exhausted {
            kind: BudgetKind::Tokens,
            used: 4_990
        }
    );
    // Cost settles too: $10 and $30 per million tokens, $0.05 allowed, $0.03 used.
    let buyer = user_id("ledger-settle-cost");
    let priced = ask(600, 4096, Some((10.0, 30.0)));
    let dollars = limits(None, Some(50_000));
    let paid = reserve(&node_a, &buyer, spent(0, 0), &priced, dollars).await;
    node_a
        .settle(&ticket(paid), spent(1_000, 30_000))
        .await
        .unwrap();
    let after = reserve(&node_b, &buyer, spent(0, 0), &priced, dollars).await;
    assert_eq!(answer_of(&after), 466);
    // A period with no ledger does not count a settle (the history has it): its next
    // reservation starts from what the caller saw.
    let (start, end) = period();
    let stray = LedgerTicket {
        user: user.clone(),
        period_start_ms: start - 1,
        id: "stray".into(),
    };
    node_a.settle(&stray, spent(4_000, 0)).await.unwrap();
    let fresh = node_a
        .reserve(&user, (start - 1, end), spent(0, 0), &call, limit, TTL)
        .await
        .unwrap();
    assert_eq!(answer_of(&fresh), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_not_let_go_within_its_ttl_stops_counting() {
    let redis = RedisServer::start();
    let (_a, node_a) = node(&redis).await;
    let (_b, node_b) = node(&redis).await;
    let user = user_id("ledger-expiry");
    let call = ask(500, 4096, None);
    let limit = tokens_only(5_000);
    let short = Duration::from_millis(200);
    let dead = node_a
        .reserve(&user, period(), spent(0, 0), &call, limit, short)
        .await
        .unwrap();
    assert_eq!(answer_of(&dead), 4096);
    let blocked = node_b
        .reserve(&user, period(), spent(0, 0), &call, limit, short)
        .await
        .unwrap();
    assert_eq!(
        blocked,
        LedgerGrant::Exhausted {
            kind: BudgetKind::Tokens,
            used: 0
        }
    );
    // Node A "died": its reservation is never let go, and counts no more after its TTL.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let freed = reserve(&node_b, &user, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&freed), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_reservations_leave_other_users_and_periods_alone() {
    let redis = RedisServer::start();
    let (_a, node_a) = node(&redis).await;
    let (_b, node_b) = node(&redis).await;
    let (alice, bob) = (user_id("ledger-alice"), user_id("ledger-bob"));
    let call = ask(500, 4096, None);
    let limit = tokens_only(4_596);
    let held = reserve(&node_a, &alice, spent(0, 0), &call, limit).await;
    assert_eq!(answer_of(&held), 4096);
    assert_eq!(
        reserve(&node_b, &alice, spent(0, 0), &call, limit).await,
        LedgerGrant::Exhausted {
            kind: BudgetKind::Tokens,
            used: 0
        }
    );
    assert_eq!(
        answer_of(&reserve(&node_b, &bob, spent(0, 0), &call, limit).await),
        4096
    );
    // Alice's next period starts with nothing held.
    let (_, end) = period();
    let next = node_b
        .reserve(
            &alice,
            (end, end + 3_600_000),
            spent(0, 0),
            &call,
            limit,
            TTL,
        )
        .await
        .unwrap();
    assert_eq!(answer_of(&next), 4096);
}
