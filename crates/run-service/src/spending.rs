//! The run service's side of spending: a user's usage this period against their budget
//! ([`RunService::usage_report`]), the check that refuses a new run once the budget is used
//! up (`budget_exceeded`), and the sweep that resumes runs that waited for their budget once
//! it allows them again ([`RunService::resume_budget_waits`]). The counting itself is
//! `ledger`.

use std::sync::Arc;

use core_context::UserId;
use core_context::budget::{Amount, BudgetKind, Shortfall};
use history::UsageTotals;

use crate::budgets::allows_again;
use crate::recorder::now_ms;
use crate::service::{Refusal, RunService};
use crate::usage::UsageReport;

fn usd(micro: u64) -> f64 {
    micro as f64 / 1_000_000.0
}

impl RunService {
    /// `user`'s spending this period, against the budget.
    pub async fn usage_report(&self, user: &UserId) -> Result<UsageReport, Refusal> {
        let budget = self.budget_for(user);
        let (start, resets) = budget.period.bounds(now_ms());
        let totals = match self.recorder() {
            Some(recorder) => recorder
                .store()
                .usage_since(user, start)
                .await
                .map_err(|e| Refusal::new("internal_error", format!("history: {e}")))?,
            None => UsageTotals::default(),
        };
        Ok(UsageReport {
            period: budget.period,
            period_start_ms: start,
            resets_at_ms: resets,
            tokens_used: totals.tokens,
            tokens_limit: budget.tokens,
            cost_usd_used: usd(totals.cost_micro_usd),
            cost_usd_limit: budget.cost_micro_usd.map(usd),
            calls: totals.calls,
            unpriced_calls: totals.unpriced_calls,
        })
    }

    /// Refuses a new run of `user`'s with `budget_exceeded` when their budget for this period
    /// is used up; the message says what is used, what is allowed and when it resets, and the
    /// refusal carries the budget, what remains (nothing) and when it resets.
    pub(crate) async fn check_budget(&self, user: &UserId) -> Result<(), Refusal> {
        if !self.budget_for(user).is_set() {
            return Ok(());
        }
        let report = self.usage_report(user).await?;
        let resets_at = crate::recorder::timestamp(report.resets_at_ms);
        let resets = jiff::Timestamp::from_millisecond(report.resets_at_ms)
            .map_or_else(|_| report.resets_at_ms.to_string(), |t| t.to_string());
        let refused = |budget, remaining, message: String| Refusal {
            shortfall: Some(Shortfall {
                budget,
                remaining,
                resets_at,
            }),
            ..Refusal::new("budget_exceeded", message)
        };
        if let Some(limit) = report.tokens_limit
            && report.tokens_used >= limit
        {
            return Err(refused(
                BudgetKind::Tokens,
                Amount::Tokens(0),
                format!(
                    "your token budget for this {} is used up: {} of {limit} tokens used, 0 remaining; it resets at {resets}",
                    report.period.name(),
                    report.tokens_used
                ),
            ));
        }
        if let Some(limit) = report.cost_usd_limit
            && report.cost_usd_used >= limit
        {
            return Err(refused(
                BudgetKind::CostUsd,
                Amount::Usd(0.0),
                format!(
                    "your cost budget for this {} is used up: ${:.4} of ${limit:.2} spent, $0 remaining; it resets at {resets}",
                    report.period.name(),
                    report.cost_usd_used
                ),
            ));
        }
        Ok(())
    }

    /// Resumes the runs that wait for their budget and may go on now: a new period began,
    /// or their user's limit was raised (a restart with a higher limit, or a token with a
    /// higher plan). Each is resumed once across nodes (the history store's claim). Called
    /// every few seconds.
    pub async fn resume_budget_waits(self: &Arc<Self>) {
        self.sweep_budget_waits(None).await;
    }

    /// [`resume_budget_waits`](Self::resume_budget_waits) for `user`'s runs only (their
    /// budget just changed).
    pub(crate) async fn resume_budget_waits_of(self: &Arc<Self>, user: &UserId) {
        self.sweep_budget_waits(Some(user)).await;
    }

    async fn sweep_budget_waits(self: &Arc<Self>, only: Option<&UserId>) {
        const PAGE: usize = 200;
        let Some(recorder) = self.recorder().cloned() else {
            return;
        };
        let mut after = (
            only.map_or_else(String::new, |u| u.as_str().to_owned()),
            String::new(),
        );
        loop {
            let waits = match recorder
                .store()
                .budget_waits((&after.0, &after.1), PAGE)
                .await
            {
                Ok(waits) => waits,
                Err(error) => {
                    tracing::warn!(%error, "budgets: cannot look for runs waiting for their budget now");
                    return;
                }
            };
            for wait in &waits {
                if only.is_some_and(|user| *user != wait.user) {
                    return;
                }
                let budget = self.budget_for(&wait.user);
                let known = self.budgets().knows(&wait.user);
                if allows_again(&wait.exhausted, (&budget, known), now_ms()) {
                    self.resume(&wait.user, &wait.run_id).await;
                }
            }
            match waits.last() {
                Some(last) if waits.len() == PAGE => {
                    after = (
                        last.user.as_str().to_owned(),
                        last.run_id.as_str().to_owned(),
                    );
                }
                _ => return,
            }
        }
    }
}
