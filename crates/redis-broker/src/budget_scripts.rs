//! The Lua scripts of the budget ledger ([`BudgetLedger`](crate::BudgetLedger)): reserving a
//! model call against a user's budget, and settling a reservation. The keys they use are
//! listed in the `budget_ledger` module's documentation.
//!
//! Lua's numbers are doubles: every amount the ledger is given is below 2^53 (the Rust side
//! caps them there), where doubles count integers exactly, and prices are doubles in both
//! languages, so the script's arithmetic is `core_context::budget::plan_call`'s to the bit.

/// Reserves a call. `KEYS[1]` the period's usage (a hash: `tokens`, `micro`), `KEYS[2]` its
/// reservations (a hash: ticket id → `<tokens> <micro> <expiry ms>`); `ARGV[1]` the ticket id,
/// `ARGV[2]` its TTL ms, `ARGV[3]` the period's end (ms), `ARGV[4]` and `ARGV[5]` the usage the
/// history counts (tokens, micro-USD), `ARGV[6]` the prompt's tokens, `ARGV[7]` the answer
/// cap, `ARGV[8]` and `ARGV[9]` the price per input and output token (micro-USD; both `''`
/// for a model with no price), `ARGV[10]` the token limit and `ARGV[11]` the micro-USD limit
/// (`''`: not bounded).
///
/// A usage hash that does not exist yet starts from the history's count; either way the
/// usage counted is the larger of the two, plus the reservations not yet expired (expired
/// ones are dropped first). Then `plan_call`, line by line. Returns `{1, answer}` reserved
/// (the ticket is held), `{2, kind, used}` exhausted (`kind` 0 tokens, 1 cost; `used` the
/// period's usage of it, reservations aside), `{3, kind}` too large.
pub(crate) const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = math.max(tonumber(ARGV[3]) - now + 86400000, 1000)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[4], 'micro', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], keep)
local own = redis.call('HMGET', KEYS[1], 'tokens', 'micro')
local used_tokens = math.max(tonumber(own[1]) or 0, tonumber(ARGV[4]))
local used_micro = math.max(tonumber(own[2]) or 0, tonumber(ARGV[5]))
local held_tokens, held_micro = 0, 0
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local ht, hm, expiry = string.match(held[i + 1], '^(%d+) (%d+) (%d+)$')
  if ht == nil or tonumber(expiry) <= now then
    redis.call('HDEL', KEYS[2], held[i])
  else
    held_tokens = held_tokens + tonumber(ht)
    held_micro = held_micro + tonumber(hm)
  end
end
local spent_tokens = used_tokens + held_tokens
local spent_micro = used_micro + held_micro
-- Rust's `f as u64`: NaN and negatives are 0, the rest truncated.
local function as_u64(x)
  if x ~= x or x <= 0 then return 0 end
  return math.floor(x)
end
local min_answer = 16
local prompt = tonumber(ARGV[6])
local least = prompt + min_answer
local answer = tonumber(ARGV[7])
local input, output = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[10] ~= '' then
  local limit = tonumber(ARGV[10])
  if least > limit then return {3, 0} end
  local remaining = math.max(limit - spent_tokens, 0)
  if remaining < least then return {2, 0, used_tokens} end
  answer = math.min(answer, remaining - prompt)
end
if ARGV[11] ~= '' and input ~= nil then
  local limit = tonumber(ARGV[11])
  local prompt_cost = math.ceil(prompt * input)
  local least_cost = prompt_cost + min_answer * output
  if least_cost > limit then return {3, 1} end
  local remaining = math.max(limit - spent_micro, 0)
  if remaining < least_cost then return {2, 1, used_micro} end
  if output > 0 then
    local affordable = math.floor((remaining - prompt_cost) / output)
    if not (affordable > 0) then affordable = 0 end
    answer = math.min(answer, as_u64(affordable))
  end
end
local cost = 0
if input ~= nil then cost = as_u64(math.ceil(prompt * input + answer * output)) end
local tokens = prompt + answer
redis.call('HSET', KEYS[2], ARGV[1],
  string.format('%.0f %.0f %.0f', tokens, cost, now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[2], keep)
return {1, answer}
";

/// Settles a reservation: `KEYS[1]` the period's usage, `KEYS[2]` its reservations;
/// `ARGV[1]` the ticket id, `ARGV[2]` and `ARGV[3]` the call's usage (tokens, micro-USD).
/// The usage is counted only while the period's usage hash exists (otherwise the next
/// reservation starts from the history, which has it); the ticket is let go either way.
pub(crate) const SETTLE: &str = r"
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'micro', ARGV[3])
end
return 1
";
