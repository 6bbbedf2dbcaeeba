//! What `/usage` prints ([`usage_text`]): the user's spending this budget period, from
//! `GET /v1/me/usage`, in two plain lines; and what a message refused with `budget_exceeded`
//! prints ([`budget_refusal`]). Apart from IO, so it is tested without a server.

use agent_client::Usage;

/// `/usage`'s two lines: what is used (and allowed, and left) this period; then the model
/// calls and when the count starts over, or, when a budget is used up, until when new
/// messages are refused.
pub(crate) fn usage_text(u: &Usage) -> String {
    let mut first = format!("Usage {}: ", this_period(&u.period));
    first.push_str(&match (u.tokens.limit, u.tokens.remaining) {
        (Some(limit), remaining) => format!(
            "{} of {} tokens used, {} left",
            grouped(u.tokens.used),
            grouped(limit),
            grouped(remaining.unwrap_or(0))
        ),
        (None, _) => format!("{} tokens used", grouped(u.tokens.used)),
    });
    // Dollars show when a cost budget is set, or when some call had a price.
    let priced = u.calls > u.unpriced_calls;
    let cost_shown = u.cost_usd.limit.is_some() || priced;
    match u.cost_usd.limit {
        Some(limit) => first.push_str(&format!(
            "; {} of {} spent, {} left",
            dollars(u.cost_usd.used),
            dollars(limit),
            dollars(u.cost_usd.remaining.unwrap_or(0.0))
        )),
        None if priced => first.push_str(&format!("; {} spent", dollars(u.cost_usd.used))),
        None => {}
    }
    let budget = u.tokens.limit.is_some() || u.cost_usd.limit.is_some();
    if !budget {
        first.push_str(" (no budget set)");
    }
    first.push('.');

    let mut calls = match u.calls {
        1 => "1 model call".to_owned(),
        n => format!("{} model calls", grouped(n)),
    };
    if cost_shown && u.unpriced_calls > 0 {
        calls.push_str(&format!(
            ", {} without a price (counted in tokens only)",
            grouped(u.unpriced_calls)
        ));
    }
    let resets = when(&u.resets_at);
    let second = if u.used_up() {
        format!(
            "The budget is used up: new messages are refused until it resets at {resets} ({calls})."
        )
    } else if budget {
        format!("{calls}; the budget resets at {resets}.")
    } else {
        format!("{calls}; the count starts over at {resets}.")
    };
    format!("{first}\n{second}")
}

/// What a message refused with `budget_exceeded` prints: the server's words (what is used and
/// when it resets, the time made readable), and what to do.
pub(crate) fn budget_refusal(message: &str) -> String {
    let message = match message.rsplit_once("resets at ") {
        Some((before, at)) => format!("{before}resets at {}", when(at.trim_end_matches('.'))),
        None => message.to_owned(),
    };
    format!(
        "not sent: {message}. Send it again once the budget resets; /usage shows what you used."
    )
}

/// "today", "this week", "this month".
fn this_period(period: &str) -> String {
    match period {
        "day" => "today".to_owned(),
        other => format!("this {other}"),
    }
}

/// An RFC 3339 UTC time as `2027-01-01 00:00 UTC`; anything else as it is.
pub(crate) fn when(rfc3339: &str) -> String {
    let readable = rfc3339
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .filter(|(date, time)| date.len() == 10 && time.len() >= 5);
    match readable {
        Some((date, time)) => format!("{date} {} UTC", &time[..5]),
        None => rfc3339.to_owned(),
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars to the cent, or to a hundredth of a cent below one cent (a few cheap calls are
/// not "$0.00").
fn dollars(usd: f64) -> String {
    if usd > 0.0 && usd < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn report(tokens: Value, cost: Value, calls: u64, unpriced: u64) -> Usage {
        serde_json::from_value(
            json!({"period": "month", "period_start": "2026-12-01T00:00:00Z",
            "resets_at": "2027-01-01T00:00:00Z", "tokens": tokens, "cost_usd": cost,
            "calls": calls, "unpriced_calls": unpriced}),
        )
        .unwrap()
    }
    const NO_COST: fn() -> Value = || json!({"used": 0.0, "limit": null, "remaining": null});

    #[test]
    fn usage_prints_what_is_used_allowed_and_when_it_resets() {
        let table = [
            (
                report(
                    json!({"used": 150, "limit": 300, "remaining": 150}),
                    NO_COST(),
                    1,
                    1,
                ),
                "Usage this month: 150 of 300 tokens used, 150 left.\n\
                 1 model call; the budget resets at 2027-01-01 00:00 UTC.",
            ),
            (
                report(
                    json!({"used": 300, "limit": 300, "remaining": 0}),
                    NO_COST(),
                    2,
                    2,
                ),
                "Usage this month: 300 of 300 tokens used, 0 left.\n\
                 The budget is used up: new messages are refused until it resets at 2027-01-01 \
                 00:00 UTC (2 model calls).",
            ),
            (
                report(
                    json!({"used": 1_234_567, "limit": null, "remaining": null}),
                    NO_COST(),
                    12,
                    12,
                ),
                "Usage this month: 1,234,567 tokens used (no budget set).\n\
                 12 model calls; the count starts over at 2027-01-01 00:00 UTC.",
            ),
            (
                report(
                    json!({"used": 450, "limit": null, "remaining": null}),
                    json!({"used": 0.15, "limit": 0.2, "remaining": 0.05}),
                    3,
                    1,
                ),
                "Usage this month: 450 tokens used; $0.15 of $0.20 spent, $0.05 left.\n\
                 3 model calls, 1 without a price (counted in tokens only); the budget resets at \
                 2027-01-01 00:00 UTC.",
            ),
            (
                report(
                    json!({"used": 20, "limit": null, "remaining": null}),
                    json!({"used": 0.0004, "limit": null, "remaining": null}),
                    1,
                    0,
                ),
                "Usage this month: 20 tokens used; $0.0004 spent (no budget set).\n\
                 1 model call; the count starts over at 2027-01-01 00:00 UTC.",
            ),
        ];
        for (usage, want) in table {
            assert_eq!(usage_text(&usage), want);
            assert!(usage_text(&usage).lines().all(|l| l.chars().count() <= 110));
        }
        let mut daily = report(
            json!({"used": 0, "limit": 5000, "remaining": 5000}),
            NO_COST(),
            0,
            0,
        );
        daily.period = "day".into();
        daily.resets_at = "2026-12-02T00:00:00Z".into();
        assert_eq!(
            usage_text(&daily),
            "Usage today: 0 of 5,000 tokens used, 5,000 left.\n\
             0 model calls; the budget resets at 2026-12-02 00:00 UTC."
        );
    }

    #[test]
    fn a_budget_refusal_says_when_to_send_again() {
        assert_eq!(
            budget_refusal(
                "your token budget for this month is used up: 300 of 300 tokens used, 0 \
                 remaining; it resets at 2027-01-01T00:00:00Z"
            ),
            "not sent: your token budget for this month is used up: 300 of 300 tokens used, 0 \
             remaining; it resets at 2027-01-01 00:00 UTC. Send it again once the budget \
             resets; /usage shows what you used."
        );
        assert_eq!(
            budget_refusal("over budget"),
            "not sent: over budget. Send it again once the budget resets; /usage shows what \
             you used."
        );
    }
}
