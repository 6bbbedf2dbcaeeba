//! The run service's side of spending: a user's usage this period against their budget
//! ([`RunService::usage_report`]), and the check that refuses a new run once the budget is
//! used up (`budget_exceeded`). The counting itself is `usage`.

use core_context::UserId;
use history::UsageTotals;

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
    /// is used up; the message says what is used, what is allowed and when it resets.
    pub(crate) async fn check_budget(&self, user: &UserId) -> Result<(), Refusal> {
        if !self.budget_for(user).is_set() {
            return Ok(());
        }
        let report = self.usage_report(user).await?;
        let resets = jiff::Timestamp::from_millisecond(report.resets_at_ms)
            .map_or_else(|_| report.resets_at_ms.to_string(), |t| t.to_string());
        if let Some(limit) = report.tokens_limit {
            if report.tokens_used >= limit {
                return Err(Refusal::new(
                    "budget_exceeded",
                    format!(
                        "your token budget for this {} is used up: {} of {limit} tokens used, 0 remaining; it resets at {resets}",
                        report.period.name(),
                        report.tokens_used
                    ),
                ));
            }
        }
        if let Some(limit) = report.cost_usd_limit {
            if report.cost_usd_used >= limit {
                return Err(Refusal::new(
                    "budget_exceeded",
                    format!(
                        "your cost budget for this {} is used up: ${:.4} of ${limit:.2} spent, $0 remaining; it resets at {resets}",
                        report.period.name(),
                        report.cost_usd_used
                    ),
                ));
            }
        }
        Ok(())
    }
}
