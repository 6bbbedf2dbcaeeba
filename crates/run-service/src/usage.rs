//! What users' runs spend: each model call's usage counted once in the history
//! (`ledger.rs`'s `UsageBook`, the engine's `UsageMeter`), priced by the configured price table
//! ([`Prices`]), and the per-user budgets per calendar period ([`Budget`], [`Period`]) that a
//! new run is checked against and `GET /v1/me/usage` reports ([`UsageReport`], from
//! [`RunService::usage_report`](crate::RunService::usage_report)).

use std::collections::HashMap;

use agent_registry::CallUsage;
use serde::Serialize;

/// A calendar period in UTC over which a budget counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// From midnight UTC.
    Day,
    /// From Monday, midnight UTC.
    Week,
    /// From the first of the month, midnight UTC.
    #[default]
    Month,
}

impl Period {
    /// Every period's name.
    pub const NAMES: &'static [&'static str] = &["day", "week", "month"];

    /// The period named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The period holding `now_ms` (Unix ms): its start and when the next one begins.
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        use jiff::ToSpan;
        use jiff::civil::Weekday;
        use jiff::tz::Offset;
        let Ok(now) = jiff::Timestamp::from_millisecond(now_ms) else {
            return (now_ms, now_ms);
        };
        let date = Offset::UTC.to_datetime(now).date();
        let (start, next) = match self {
            Self::Day => (date, date.checked_add(1.day())),
            Self::Week => {
                let back = i64::from(date.weekday().since(Weekday::Monday));
                let monday = date.checked_sub(back.days()).unwrap_or(date);
                (monday, monday.checked_add(1.week()))
            }
            Self::Month => {
                let first = date.first_of_month();
                (first, first.checked_add(1.month()))
            }
        };
        let ms = |date: jiff::civil::Date| {
            Offset::UTC
                .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
                .map_or(now_ms, |t| t.as_millisecond())
        };
        (ms(start), next.map_or(i64::MAX, ms))
    }
}

/// Model prices, in US dollars per million tokens (input and output), by model name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(HashMap<String, (f64, f64)>);

impl Prices {
    /// Reads `MODEL=INPUT/OUTPUT` entries (`gpt-4o=2.5/10`: $2.50 per million prompt
    /// tokens, $10 per million answer tokens); the error names the entry and what is wrong.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut prices = HashMap::new();
        for entry in entries {
            let wrong = |why: &str| {
                format!(
                    "model price {entry:?}: {why} (expected MODEL=INPUT/OUTPUT in US dollars per million tokens, like gpt-4o=2.5/10)"
                )
            };
            let (model, pair) = entry.split_once('=').ok_or_else(|| wrong("no `=`"))?;
            let (input, output) = pair.split_once('/').ok_or_else(|| wrong("no `/`"))?;
            let price = |text: &str| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite() && *p >= 0.0 && *p <= 1_000_000.0)
                    .ok_or_else(|| wrong(&format!("{text:?} is not a price from 0 to 1000000")))
            };
            let model = model.trim();
            if model.is_empty() {
                return Err(wrong("the model name is empty"));
            }
            prices.insert(model.to_owned(), (price(input)?, price(output)?));
        }
        Ok(Self(prices))
    }

    /// What `usage` cost in millionths of a dollar; `None` for a model with no price.
    pub fn cost_micro_usd(&self, usage: &CallUsage) -> Option<u64> {
        let (input, output) = self.0.get(&usage.model)?;
        // $X per million tokens is X millionths of a dollar per token.
        let cost = usage.prompt_tokens as f64 * input + usage.completion_tokens as f64 * output;
        Some(cost.round().min(u64::MAX as f64) as u64)
    }

    /// `model`'s price per million tokens (input, output), in dollars: as many millionths
    /// of a dollar per token.
    pub fn of(&self, model: &str) -> Option<(f64, f64)> {
        self.0.get(model).copied()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What each user's runs may spend per period; nothing is bounded without a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Prompt and answer tokens per user per period.
    pub tokens: Option<u64>,
    /// Cost per user per period, in millionths of a dollar.
    pub cost_micro_usd: Option<u64>,
    /// The period.
    pub period: Period,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.tokens.is_some() || self.cost_micro_usd.is_some()
    }

    /// This budget with a user's own limits (a token's [`PLAN_CLAIM`]) in place of the
    /// server's.
    pub fn with_plan(self, plan: Option<Plan>) -> Self {
        let Some(plan) = plan else { return self };
        Self {
            tokens: plan.tokens.or(self.tokens),
            cost_micro_usd: plan.cost_micro_usd.or(self.cost_micro_usd),
            period: self.period,
        }
    }
}

/// The claim of a token that grants its user limits of their own (an identity provider's
/// plans): `{"tokens": 500000, "cost_usd": 20}`, either or both; they replace the server's
/// `--token-budget-per-user` and `--cost-budget-per-user` for that user from the request that
/// carried it on.
pub const PLAN_CLAIM: &str = "agent_engine_budget";

/// A user's own limits, from their token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tokens per period.
    pub tokens: Option<u64>,
    /// Millionths of a dollar per period.
    pub cost_micro_usd: Option<u64>,
}

impl Plan {
    /// The plan in a token's `claims`: `None` without [`PLAN_CLAIM`]; an error naming the
    /// claim when it is not `{"tokens": N, "cost_usd": X}` (either or both, not negative).
    pub fn from_claims(claims: &serde_json::Value) -> Result<Option<Self>, String> {
        let Some(claim) = claims.get(PLAN_CLAIM) else {
            return Ok(None);
        };
        let wrong = || {
            format!(
                "the token's {PLAN_CLAIM} claim must be an object like {{\"tokens\": 500000, \"cost_usd\": 20}} (either or both, not negative), got {claim}"
            )
        };
        let fields = claim.as_object().ok_or_else(wrong)?;
        if fields.keys().any(|k| k != "tokens" && k != "cost_usd") {
            return Err(wrong());
        }
        let tokens = match fields.get("tokens") {
            None => None,
            Some(n) => Some(n.as_u64().ok_or_else(wrong)?),
        };
        let cost_micro_usd = match fields.get("cost_usd") {
            None => None,
            Some(usd) => {
                let usd = usd
                    .as_f64()
                    .filter(|u| u.is_finite() && *u >= 0.0 && *u <= 1e9)
                    .ok_or_else(wrong)?;
                Some((usd * 1_000_000.0).round() as u64)
            }
        };
        Ok(Some(Self {
            tokens,
            cost_micro_usd,
        }))
    }
}

/// A user's spending in the current period, as `GET /v1/me/usage` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// The budget's period (`day`, `week`, `month`).
    pub period: Period,
    /// When it began (Unix ms).
    pub period_start_ms: i64,
    /// When the next one begins (Unix ms): the budget resets then.
    pub resets_at_ms: i64,
    /// Prompt and answer tokens used.
    pub tokens_used: u64,
    /// The token budget, if any.
    pub tokens_limit: Option<u64>,
    /// Dollars spent (calls of priced models).
    pub cost_usd_used: f64,
    /// The cost budget in dollars, if any.
    pub cost_usd_limit: Option<f64>,
    /// Model calls counted.
    pub calls: u64,
    /// Of those, calls of models without a price (counted in tokens only).
    pub unpriced_calls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn periods_are_calendar_periods_in_utc() {
        let now = ms("2026-12-05T10:24:18Z"); // a Saturday
        assert_eq!(
            Period::Day.bounds(now),
            (ms("2026-12-05T00:00:00Z"), ms("2026-12-06T00:00:00Z"))
        );
        assert_eq!(
            Period::Week.bounds(now),
            (ms("2026-11-30T00:00:00Z"), ms("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(now),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        let monday = ms("2026-11-30T00:00:00Z");
        assert_eq!(Period::Week.bounds(monday).0, monday);
    }

    #[test]
    fn a_plan_claim_replaces_the_servers_limits() {
        let claims = |claim: serde_json::Value| serde_json::json!({"sub": "u", PLAN_CLAIM: claim});
        let plan = Plan::from_claims(&claims(serde_json::json!({"tokens": 500, "cost_usd": 2.5})))
            .unwrap()
            .unwrap();
        assert_eq!(
            (plan.tokens, plan.cost_micro_usd),
            (Some(500), Some(2_500_000))
        );
        let server = Budget {
            tokens: Some(100),
            cost_micro_usd: Some(1),
            period: Period::Week,
        };
        let only_tokens = Plan::from_claims(&claims(serde_json::json!({"tokens": 7}))).unwrap();
        assert_eq!(
            server.with_plan(only_tokens),
            Budget {
                tokens: Some(7),
                ..server
            }
        );
        assert_eq!(
            Plan::from_claims(&serde_json::json!({"sub": "u"})),
            Ok(None)
        );
        for bad in [
            serde_json::json!(5),
            serde_json::json!({"tokens": -1}),
            serde_json::json!({"tokens": "5"}),
            serde_json::json!({"usd": 5}),
        ] {
            let error = Plan::from_claims(&claims(bad.clone())).unwrap_err();
            assert!(error.contains(PLAN_CLAIM), "{bad}: {error}");
        }
    }

    #[test]
    fn prices_are_read_and_applied_per_million_tokens() {
        let prices = Prices::parse(&["gpt-4o=2.5/10".into(), "free=0/0".into()]).unwrap();
        let usage = |model: &str| CallUsage {
            model: model.into(),
            prompt_tokens: 1_000,
            completion_tokens: 100,
            cached_tokens: 0,
        };
        // 1000 * $2.5/M + 100 * $10/M = $0.0035 = 3500 millionths.
        assert_eq!(prices.cost_micro_usd(&usage("gpt-4o")), Some(3_500));
        assert_eq!(prices.cost_micro_usd(&usage("free")), Some(0));
        assert_eq!(prices.cost_micro_usd(&usage("other")), None);
        for (bad, says) in [
            ("gpt-4o", "no `=`"),
            ("gpt-4o=2.5", "no `/`"),
            ("=1/2", "the model name is empty"),
            ("m=x/2", "\"x\" is not a price"),
            ("m=-1/2", "\"-1\" is not a price"),
        ] {
            let error = Prices::parse(&[bad.into()]).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
