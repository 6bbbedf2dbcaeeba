//! [`BudgetLedger`]: users' budgets counted in Redis, so the nodes sharing one Redis reserve
//! model calls against a user's budget atomically: what one node's calls under way hold, the
//! others see, and nodes calling at once can never pass a budget together.
//!
//! Keys, per user and budget period (`<start>`: the period's start, ms since the epoch; the
//! user in braces, so one user's keys share a cluster slot):
//! - `<prefix>:{<user>}:budget:<start>`, a hash: the period's usage as the ledger counts it,
//!   `tokens` and `micro` (millionths of a dollar). Made by the first reservation of the
//!   period from the history's count, then raised by each settled call;
//! - `<prefix>:{<user>}:budget:<start>:held`, a hash: the reservations of calls under way,
//!   ticket id → `<tokens> <micro> <expiry ms>`. A reservation not settled or released by its
//!   expiry (its node died) is dropped by the next reservation.
//!
//! Both live until a day after the period ends (each reservation sets that), so old periods
//! vanish by themselves. Expiry is read from Redis's clock (`TIME`), one clock for all nodes.
//!
//! The usage counted is the larger of the ledger's own count and the history's (`seen`, read
//! by the caller just before): a ledger that is new, because the period began or Redis lost its
//! data, starts from the history, and one that is ahead of a lagging history is not lowered by
//! it. The arithmetic is `core_context::budget::plan_call`'s, in Lua (`budget_scripts`).

use std::sync::Arc;
use std::time::Duration;

use core_context::UserId;
use core_context::budget::{BudgetKind, CallAsk, Limits, Spent};
use redis::Script;
use ws_bridge::broker::BrokerError;

use crate::budget_scripts::{RESERVE, SETTLE};
use crate::shared::{Shared, broker_error};

/// The largest amount the ledger counts exactly (2^53: Lua's numbers are doubles); larger
/// amounts (tokens, micro-USD, limits) are taken as this, which no budget comes near.
pub const LEDGER_MAX: u64 = 1 << 53;

/// Users' budgets across the nodes sharing one Redis; see the module documentation.
#[derive(Clone)]
pub struct BudgetLedger {
    shared: Arc<Shared>,
    reserve: Arc<Script>,
    settle: Arc<Script>,
}

/// A reservation's name in Redis: whose, in which period, and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTicket {
    /// The user whose budget holds it.
    pub user: UserId,
    /// The start of the period it was reserved in (ms since the epoch).
    pub period_start_ms: i64,
    /// Its id among the period's reservations.
    pub id: String,
}

/// What [`BudgetLedger::reserve`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerGrant {
    /// Reserved: the call may answer with `answer` tokens; settle or release `ticket`.
    Reserved {
        /// The reservation, to settle or release.
        ticket: LedgerTicket,
        /// The longest answer the call may ask for (its `max_tokens`).
        answer: u64,
    },
    /// Less remains of `kind` than the call needs: `used` is the period's usage of it as
    /// Redis counts it (tokens, or micro-USD), reservations of calls under way aside.
    Exhausted {
        /// The budget in the way.
        kind: BudgetKind,
        /// The period's usage of it.
        used: u64,
    },
    /// The call needs more than the whole of `kind`.
    TooLarge(BudgetKind),
}

impl std::fmt::Debug for BudgetLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetLedger")
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

/// `amount`, capped at [`LEDGER_MAX`].
fn capped(amount: u64) -> u64 {
    amount.min(LEDGER_MAX)
}

/// A limit as the reserve script reads it (`''`: not bounded).
fn limit_arg(limit: Option<u64>) -> String {
    limit.map_or_else(String::new, |limit| capped(limit).to_string())
}

/// A kind as the scripts name it.
fn kind_of(code: u64) -> Option<BudgetKind> {
    match code {
        0 => Some(BudgetKind::Tokens),
        1 => Some(BudgetKind::CostUsd),
        _ => None,
    }
}

impl BudgetLedger {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            reserve: Arc::new(Script::new(RESERVE)),
            settle: Arc::new(Script::new(SETTLE)),
        }
    }

    /// The period's usage hash and its reservations' hash.
    fn keys(&self, user: &UserId, period_start_ms: i64) -> [String; 2] {
        let used = format!(
            "{}:{{{}}}:budget:{period_start_ms}",
            self.shared.prefix,
            user.as_str()
        );
        let held = format!("{used}:held");
        [used, held]
    }

    /// Reserves `ask` for `user` in the period [start_ms, end_ms) against `limits`. `seen` is
    /// the period's usage as the history store counts it (read by the caller just before): the
    /// ledger counts max(its own count, seen), so a ledger that is new (first call of the
    /// period, or Redis lost its data) starts from the store. Calls under way on every node
    /// count (their reservations); a reservation not settled or released within `ttl` (its
    /// node died) stops counting. The outcome is `core_context::budget::plan_call`'s for that
    /// count (amounts up to [`LEDGER_MAX`]); a call reserved holds its prompt and answer
    /// tokens and their cost until settled, released or expired.
    pub async fn reserve(
        &self,
        user: &UserId,
        (start_ms, end_ms): (i64, i64),
        seen: Spent,
        ask: &CallAsk,
        limits: Limits,
        ttl: Duration,
    ) -> Result<LedgerGrant, BrokerError> {
        let [used, held] = self.keys(user, start_ms);
        let id = ulid::Ulid::new().to_string();
        let (input, output) = ask.price.map_or_else(
            || (String::new(), String::new()),
            // Rust prints a float's shortest decimal that reads back as the same float.
            |(input, output)| (input.to_string(), output.to_string()),
        );
        let answer: Vec<u64> = self
            .reserve
            .key(used)
            .key(held)
            .arg(&id)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(end_ms)
            .arg(capped(seen.tokens))
            .arg(capped(seen.cost_micro_usd))
            .arg(capped(ask.prompt_tokens))
            .arg(capped(ask.answer_cap))
            .arg(input)
            .arg(output)
            .arg(limit_arg(limits.tokens))
            .arg(limit_arg(limits.cost_micro_usd))
            .invoke_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))?;
        let grant = match answer[..] {
            [1, answer] => Some(LedgerGrant::Reserved {
                ticket: LedgerTicket {
                    user: user.clone(),
                    period_start_ms: start_ms,
                    id,
                },
                answer,
            }),
            [2, kind, used] => kind_of(kind).map(|kind| LedgerGrant::Exhausted { kind, used }),
            [3, kind] => kind_of(kind).map(LedgerGrant::TooLarge),
            _ => None,
        };
        grant.ok_or_else(|| BrokerError(format!("Redis: the budget script answered {answer:?}")))
    }

    /// The call answered and used `used` (tokens, micro-USD): counted, and its reservation let
    /// go. Counted only while the period's ledger exists (else the next reserve reads it from
    /// the store). Settle a ticket once: a second settle counts the usage again.
    pub async fn settle(&self, ticket: &LedgerTicket, used: Spent) -> Result<(), BrokerError> {
        let [used_key, held] = self.keys(&ticket.user, ticket.period_start_ms);
        self.settle
            .key(used_key)
            .key(held)
            .arg(&ticket.id)
            .arg(capped(used.tokens))
            .arg(capped(used.cost_micro_usd))
            .invoke_async::<()>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))
    }

    /// The call made no call or reported no usage: its reservation is let go.
    pub async fn release(&self, ticket: &LedgerTicket) -> Result<(), BrokerError> {
        let [_, held] = self.keys(&ticket.user, ticket.period_start_ms);
        redis::cmd("HDEL")
            .arg(held)
            .arg(&ticket.id)
            .query_async::<()>(&mut self.shared.conn.clone())
            .await
            .map_err(|e| broker_error(&e))
    }
}
