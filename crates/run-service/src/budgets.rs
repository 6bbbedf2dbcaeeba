//! [`Budgets`]: what each user's runs may spend per period: the server's budget, or the
//! limits of the plan the user's latest token carried. Shared by the run service (the check
//! before a run, the usage report, the sweep that resumes runs waiting for their budget) and
//! the usage meter (the reservation before each model call).

use std::collections::HashMap;

use core_context::UserId;
use core_context::budget::{Amount, BudgetKind, Exhausted};
use parking_lot::Mutex;

use crate::usage::{Budget, Plan};

/// Users whose plans are kept at most; past it, the plans of users seen longest ago go (they
/// get the server's budget until their next request brings their token's plan again).
const MAX_PLANS: usize = 100_000;

/// The server's budget and users' own plans.
#[derive(Debug, Default)]
pub struct Budgets {
    budget: Budget,
    plans: Mutex<Plans>,
}

#[derive(Debug, Default)]
struct Plans {
    /// The plan of each user this node has seen a token of since it started (`None`: their
    /// token carried none), with when it was last seen.
    by_user: HashMap<UserId, (Option<Plan>, u64)>,
    /// Bumped on each note: a plan's age, for eviction.
    clock: u64,
}

impl Budgets {
    /// `budget` for every user whose token carries no plan.
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            plans: Mutex::default(),
        }
    }

    /// The server's budget.
    pub fn server(&self) -> Budget {
        self.budget
    }

    /// What `user`'s runs may spend per period.
    pub fn of(&self, user: &UserId) -> Budget {
        let plan = self
            .plans
            .lock()
            .by_user
            .get(user)
            .and_then(|(plan, _)| *plan);
        self.budget.with_plan(plan)
    }

    /// Whether this node has seen a token of `user`'s since it started, so it knows their
    /// plan (or that they have none): another node may know a plan this one does not.
    pub fn knows(&self, user: &UserId) -> bool {
        self.plans.lock().by_user.contains_key(user)
    }

    /// Takes `user`'s plan from their latest token (`None`: the server's budget). True when
    /// their budget changed, or this node had not seen them yet.
    pub fn note(&self, user: &UserId, plan: Option<Plan>) -> bool {
        let known = self.knows(user);
        let before = self.of(user);
        let mut plans = self.plans.lock();
        plans.clock += 1;
        let now = plans.clock;
        plans.by_user.insert(user.clone(), (plan, now));
        if plans.by_user.len() > MAX_PLANS {
            let oldest = plans
                .by_user
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(user, _)| user.clone());
            if let Some(oldest) = oldest {
                plans.by_user.remove(&oldest);
            }
        }
        drop(plans);
        !known || self.of(user) != before
    }
}

/// Whether a run that paused as `exhausted` says may go on under `budget` at `now_ms`: a new
/// period began, or the limit in its way was raised (or removed). A raised limit counts only
/// when `known`: this node has seen the user's token (their plan) since it started, since on
/// several nodes one that has not may hold a lower plan's user to the server's budget.
pub(crate) fn allows_again(
    exhausted: &Exhausted,
    (budget, known): (&Budget, bool),
    now_ms: i64,
) -> bool {
    if now_ms >= crate::recorder::unix_ms(exhausted.resets_at.as_system_time()) {
        return true;
    }
    if !known {
        return false;
    }
    match (exhausted.budget, exhausted.limit) {
        (BudgetKind::Tokens, Amount::Tokens(was)) => budget.tokens.is_none_or(|now| now > was),
        (BudgetKind::CostUsd, Amount::Usd(was)) => budget
            .cost_micro_usd
            .is_none_or(|now| now as f64 / 1_000_000.0 > was + 1e-9),
        // Not a pause this server wrote: let the reservation decide.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use core_context::Timestamp;

    use super::*;
    use crate::usage::Period;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn a_plan_replaces_the_servers_limits_until_a_token_without_one() {
        let budgets = Budgets::new(Budget {
            tokens: Some(100),
            cost_micro_usd: None,
            period: Period::Day,
        });
        let alice = user("alice");
        assert_eq!(budgets.of(&alice).tokens, Some(100));
        let plan = Plan {
            tokens: Some(500),
            cost_micro_usd: None,
        };
        assert!(!budgets.knows(&alice));
        assert!(budgets.note(&alice, Some(plan)), "raised");
        assert!(!budgets.note(&alice, Some(plan)), "the same again");
        assert!(budgets.knows(&alice));
        let bob = user("bob");
        assert!(budgets.note(&bob, None), "seen for the first time");
        assert!(!budgets.note(&bob, None));
        assert_eq!(budgets.of(&alice).tokens, Some(500));
        assert_eq!(budgets.of(&user("bob")).tokens, Some(100));
        assert!(budgets.note(&alice, None));
        assert_eq!(budgets.of(&alice).tokens, Some(100));
    }

    fn allows_again_owned(
        exhausted: &Exhausted,
        (budget, known): (Budget, bool),
        now: i64,
    ) -> bool {
        allows_again(exhausted, (&budget, known), now)
    }

    #[test]
    fn a_budget_wait_ends_with_its_period_or_a_higher_limit() {
        let resets = UNIX_EPOCH + Duration::from_secs(1_000);
        let exhausted = Exhausted {
            budget: BudgetKind::Tokens,
            used: Amount::Tokens(290),
            limit: Amount::Tokens(300),
            resets_at: Timestamp::from(resets),
        };
        let with = |tokens| Budget {
            tokens,
            cost_micro_usd: None,
            period: Period::Day,
        };
        let before_reset = 999_000;
        let known = |budget: &Budget| (*budget, true);
        assert!(!allows_again_owned(
            &exhausted,
            known(&with(Some(300))),
            before_reset
        ));
        assert!(!allows_again_owned(
            &exhausted,
            known(&with(Some(200))),
            before_reset
        ));
        assert!(allows_again_owned(
            &exhausted,
            known(&with(Some(301))),
            before_reset
        ));
        assert!(allows_again_owned(
            &exhausted,
            known(&with(None)),
            before_reset
        ));
        assert!(allows_again_owned(
            &exhausted,
            known(&with(Some(300))),
            1_000_000
        ));
        // A user this node has not seen: only a new period lets the run go on.
        assert!(!allows_again_owned(
            &exhausted,
            (with(Some(301)), false),
            before_reset
        ));
        assert!(allows_again_owned(
            &exhausted,
            (with(Some(300)), false),
            1_000_000
        ));
        let cost = Exhausted {
            budget: BudgetKind::CostUsd,
            used: Amount::Usd(0.3),
            limit: Amount::Usd(0.5),
            ..exhausted
        };
        let dollars = |micro| Budget {
            cost_micro_usd: micro,
            ..with(None)
        };
        assert!(!allows_again_owned(
            &cost,
            known(&dollars(Some(500_000))),
            before_reset
        ));
        assert!(allows_again_owned(
            &cost,
            known(&dollars(Some(600_000))),
            before_reset
        ));
    }
}
