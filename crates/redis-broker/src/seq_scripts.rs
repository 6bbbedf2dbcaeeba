//! The scripts of the sequencer mode ([`RedisBrokerConfig::sequencer`](crate::RedisBrokerConfig::sequencer),
//! `docs/sequencer.md`): a node holds a user's lease and gives their seqs itself, writing
//! the log with plain pipelined commands (`sequencer`); these scripts are the few steps that
//! must be atomic.
//!
//! The keys are those of `scripts`, with:
//! - in the meta, `lease` (the last lease number given, at least the ms it was taken at), `sq`
//!   (`<node id>:<lease number>`, the holder), `sqx` (its expiry, ms) and `a:<origin node>`
//!   (`<publish counter>:<ms>`, the origin's highest counter the log held at the last
//!   barrier); the meta's `seq` is not kept (a stale holder's plain write could move it back);
//! - in the log, entries `<lease number>-<seq>` holding `b` (the event without its opening
//!   brace), `t` (ms), `c` (`<origin node>:<publish counter>`, so a successor skips an
//!   event already appended) and `r` (its run, for a reaper: `record_scripts`), and a
//!   barrier `<lease number>-0` per lease, written as it is taken (or as a reaper fences the
//!   stream), holding `p` (the last seq before it) and `t`. Every `XADD` of an older lease is
//!   then below the barrier and refused: a stale holder can never append again, nor out of
//!   order. A stream's last seq is its log's last entry's (a barrier's `p`).
//!
//! A stream of the other mode (a meta with a `seq` above 0 and no `lease`) is opened anew,
//! as is one whose log was lost under its meta: clients resuming it get `epoch_changed`.
//! A lease taken is announced on `<prefix>:leases` as `<user>\n<epoch>\n<lease>\n<last seq>`.

use redis::Script;

/// Helpers reading and fencing a lease-numbered log (no other script needed): `seq_of`,
/// `field`, `seq_at`, `last_seq`, `each_back`, `lease_of`, and `barrier` (takes a new lease number and
/// appends its barrier).
pub(crate) const LOG_HELPERS: &str = r"
local function seq_of(id)
  return tonumber(string.match(id, '%-(%d+)$'))
end
local function field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
  return nil
end
-- The last seq as of `entry`, a log's last entry (nil: an empty log).
local function seq_at(entry)
  if not entry then return 0 end
  local seq = seq_of(entry[1])
  if seq > 0 then return seq end
  return tonumber(field(entry[2], 'p') or '0')
end
local function last_seq(log)
  return seq_at(redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1])
end
-- Visits `log`'s entries from the newest back, in chunks, until `visit` answers true.
-- The chunks start small and double (to 256): Redis builds a chunk whole, and a resume
-- usually needs the last few entries of a long log.
local function each_back(log, visit)
  local cursor, count = '+', 16
  while true do
    local chunk = redis.call('XREVRANGE', log, cursor, '-', 'COUNT', count)
    for _, entry in ipairs(chunk) do
      if visit(entry) then return end
    end
    if #chunk < count then return end
    cursor = '(' .. chunk[#chunk][1]
    count = math.min(count * 2, 256)
  end
end
local function lease_of(meta)
  return tonumber(redis.call('HGET', meta, 'lease') or '0')
end
-- A new lease number, above the last given and the log's last entry, and at least Redis's
-- time in ms (`now`): a stream opened anew (its meta lost) starts above every lease a stale
-- holder of the old one could still append under. Appends its barrier `<lease>-0` (holding
-- the last seq; trimmed to `cap` when given), so every append of an older lease is refused.
-- Before it, what the lease ending appended joins what the meta keeps as applied: per origin
-- node the highest publish counter in the log (`a:<origin>` = `<counter>:<ms merged>`), so a
-- lease reads only the entries of the lease before it: those after its barrier
-- `<lease>-0`, whose number the meta holds (every older entry is below that barrier; the
-- whole log when the meta has no number). Read from the barrier forwards, not from the log's
-- end back, so a take costs the last lease's entries, not as many of a long log as a chunk
-- holds.
-- Returns the lease and the last seq.
local function barrier(meta, log, now, cap)
  local applied = {}
  for _, entry in ipairs(redis.call('XRANGE', log, lease_of(meta) .. '-0', '+')) do
    local node, counter = string.match(field(entry[2], 'c') or '', '^(.*):(%d+)$')
    counter = tonumber(counter)
    if node and seq_of(entry[1]) > 0 and (applied[node] or 0) < counter then
      applied[node] = counter
    end
  end
  for node, counter in pairs(applied) do
    local known = tonumber(string.match(redis.call('HGET', meta, 'a:' .. node) or '', '^(%d+):'))
    if not known or known < counter then
      redis.call('HSET', meta, 'a:' .. node, counter .. ':' .. now)
    end
  end
  local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  local last = seq_at(top)
  local lease = math.max(redis.call('HINCRBY', meta, 'lease', 1), now)
  if top then lease = math.max(lease, tonumber(string.match(top[1], '^(%d+)%-')) + 1) end
  redis.call('HSET', meta, 'lease', lease)
  if cap then
    redis.call('XADD', log, 'MAXLEN', cap, lease .. '-0', 'p', last, 't', now)
  else
    redis.call('XADD', log, lease .. '-0', 'p', last, 't', now)
  end
  return lease, last
end
";

/// On top of `scripts`' `OPEN`: `sq_open` (opens the stream as `open` does, and anew when it
/// is of the other mode or lost its log).
const PRELUDE: &str = r"
local function sq_open(meta, log, new_epoch, ttl)
  local m = redis.call('HMGET', meta, 'epoch', 'lease', 'seq')
  if m[1] and ((m[2] and redis.call('EXISTS', log) == 0) or (not m[2] and tonumber(m[3] or '0') > 0)) then
    redis.call('HDEL', meta, 'epoch')
  end
  return open(meta, log, new_epoch, ttl)
end
";

/// Takes a user's lease if it is free, expired or this node's: `KEYS` meta and log;
/// `ARGV[1]` the epoch of a stream that starts, `ARGV[2]` the stream's TTL (ms), `ARGV[3]`
/// the node id, `ARGV[4]` the lease's length (ms), `ARGV[5]` the log's cap, `ARGV[6]` the
/// key prefix, `ARGV[7]` how long (ms) an origin node's applied counter is kept unchanged,
/// `ARGV[8]` `1` to take it only if this node holds it already (it has only other nodes'
/// events of the user: the lease goes to where the user's events start). Answers `{'held',
/// <holder node>, <ms left>}`, `{'free'}` (nobody holds it, and `ARGV[8]` said not to take
/// it), or `{'taken', epoch, lease number, last seq, {origin, counter, ...}, {run, ...}}`
/// with the highest counter of each origin node in the log (merged into the meta at each
/// barrier; an origin's is dropped once unchanged for `ARGV[7]`: an event is sent again only
/// while its origin awaits a confirmation, which is far shorter), and the user's runs reaped
/// within a day (`record_scripts`' `fence`: their later events are dropped, but for those
/// ending them).
const TAKE: &str = r"
local meta, log = KEYS[1], KEYS[2]
local now = now_ms()
local held = redis.call('HMGET', meta, 'sq', 'sqx')
local mine = false
if held[1] then
  local holder = string.match(held[1], '^(.*):%d+$')
  local left = tonumber(held[2] or '0') - now
  if holder ~= ARGV[3] and left > 0 then return {'held', holder, left} end
  mine = left > 0
end
if ARGV[8] == '1' and not mine then return {'free'} end
local epoch = sq_open(meta, log, ARGV[1], ARGV[2])
local lease, last = barrier(meta, log, now, ARGV[5])
redis.call('HSET', meta, 'sq', ARGV[3] .. ':' .. lease, 'sqx', now + tonumber(ARGV[4]))
local ttl = tonumber(ARGV[2])
local keep = ttl + math.floor(ttl / 4)
redis.call('PEXPIRE', meta, keep)
redis.call('PEXPIRE', log, keep)
local user = string.match(meta, '{([^}]*)}:meta$')
redis.call('PUBLISH', ARGV[6] .. ':leases', user .. '\n' .. epoch .. '\n' .. lease .. '\n' .. last)
local list = {}
local since = now - tonumber(ARGV[7])
local fields = redis.call('HGETALL', meta)
for j = 1, #fields, 2 do
  if string.sub(fields[j], 1, 2) == 'a:' then
    local counter, at = string.match(fields[j + 1], '^(%d+):(%d+)$')
    if counter and tonumber(at) >= since then
      list[#list + 1] = string.sub(fields[j], 3)
      list[#list + 1] = counter
    else
      redis.call('HDEL', meta, fields[j])
    end
  end
end
local reaped = string.sub(meta, 1, -6) .. ':reaped'
return {'taken', epoch, lease, last, list, redis.call('ZRANGE', reaped, now - 86400000, '+inf', 'BYSCORE')}
";

/// Renews or gives back this node's leases: `KEYS` the users' metas; `ARGV[1]` the node id,
/// `ARGV[2]` the lease's length (ms), then per user the lease number and `1` (renew) or `0`
/// (give back). Answers the (0-based) indexes of the users whose lease this node no longer
/// holds. (The keys' own expiry is the writes', as after the last write they live the replay
/// age and a quarter more.)
const RENEW_LEASES: &str = r"
local now = now_ms()
local lost = {}
for i = 1, #KEYS do
  local meta = KEYS[i]
  if redis.call('HGET', meta, 'sq') == ARGV[1] .. ':' .. ARGV[1 + 2 * i] then
    if ARGV[2 + 2 * i] == '1' then
      redis.call('HSET', meta, 'sqx', now + tonumber(ARGV[2]))
    else
      redis.call('HDEL', meta, 'sq', 'sqx')
    end
  else
    lost[#lost + 1] = i - 1
  end
end
return lost
";

/// `scripts`' `FOLLOW`, reading the last seq from the log: `{epoch, last seq, lease}`.
const FOLLOW: &str = r"
local epoch = sq_open(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'f:' .. ARGV[3], ARGV[4] .. ':' .. (now_ms() + tonumber(ARGV[2])))
list_followers(KEYS[1])
return {epoch, last_seq(KEYS[2]), lease_of(KEYS[1])}
";

/// `scripts`' `POSITION`, reading the last seq from the log: `{epoch, last seq, lease}`.
const POSITION: &str = r"
local epoch = sq_open(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return {epoch, last_seq(KEYS[2]), lease_of(KEYS[1])}
";

/// The checks both replay scripts make once they know `epoch`, `last`, `after` and
/// `oldest_kept`: the refusals, and the answer's head (all of it when nothing is missed).
pub(crate) const REPLAY_CHECKS: &str = r"
local function refuse(status)
  return {status, oldest_kept(), epoch, last}
end
if epoch ~= ARGV[3] then return refuse('epoch_changed') end
if after > last then return refuse('seq_ahead') end
local reply = {'ok', 0, epoch, last}
if after == last then return reply end
";

/// `scripts`' replay over lease-numbered entries: the same arguments and answer. The
/// entries after the client's seq are read from the log's end backwards, barriers skipped.
/// In two parts, around [`REPLAY_CHECKS`].
const REPLAY_HEAD: &str = r#"
local epoch = sq_open(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local log = KEYS[2]
local last = last_seq(log)
local after = tonumber(ARGV[4])
local oldest_age = now_ms() - tonumber(ARGV[5])
local function oldest_kept()
  for _, entry in ipairs(redis.call('XRANGE', log, '-', '+')) do
    if seq_of(entry[1]) > 0 and tonumber(field(entry[2], 't')) >= oldest_age then
      return seq_of(entry[1])
    end
  end
  return last + 1
end
"#;

/// See [`REPLAY_HEAD`].
const REPLAY_TAIL: &str = r#"
local newest_first = {}
each_back(log, function(entry)
  local seq = seq_of(entry[1])
  if seq == 0 then return tonumber(field(entry[2], 'p') or '0') <= after end
  if seq <= after then return true end
  newest_first[#newest_first + 1] = entry
  return false
end)
local first = newest_first[#newest_first]
if not first or seq_of(first[1]) ~= after + 1 or tonumber(field(first[2], 't')) < oldest_age then
  return refuse('too_old')
end
for i = #newest_first, 1, -1 do
  local entry = newest_first[i]
  reply[#reply + 1] = '{"seq":' .. seq_of(entry[1]) .. ',' .. field(entry[2], 'b')
end
return reply
"#;

/// The scripts of a user's lease in the sequencer mode.
pub(crate) struct LeaseScripts {
    pub(crate) take: Script,
    pub(crate) renew: Script,
}

/// A script of this module after `open` (the `OPEN` of `scripts`, with its `FENCED` line)
/// and this module's preludes.
fn with(open: &str, body: &str) -> Script {
    Script::new(&format!("{open}{LOG_HELPERS}{PRELUDE}{body}"))
}

/// The lease scripts.
pub(crate) fn leases(open: &str) -> LeaseScripts {
    LeaseScripts {
        take: with(open, TAKE),
        renew: with(open, RENEW_LEASES),
    }
}

/// The position, follow and replay scripts of lease-numbered logs, in that order.
pub(crate) fn reads(open: &str) -> [Script; 3] {
    [
        with(open, POSITION),
        with(open, FOLLOW),
        with(open, &format!("{REPLAY_HEAD}{REPLAY_CHECKS}{REPLAY_TAIL}")),
    ]
}

/// Sends a transaction's frames to the nodes following their users, after its appends (in the
/// same `MULTI`, so as atomically as the publish script's): `KEYS` the users' metas; `ARGV[1]`
/// the key prefix, `ARGV[2]` the holder's node id (which hands its own listeners the frames
/// itself, so they are not sent back to it), then per user their records (`<user>\n<epoch>\n<lease>:<seq>\n<rest>`,
/// joined by `\n`, in order) and `1` to remove their expired follower entries first (when the
/// holder renews their keys). Each following node gets one message per about 7,000 bytes on
/// its events channel, with the records of every user of the batch it follows, as the publish
/// script sends them. A node that follows the user before the transaction gets the frames; one
/// that follows after it reads the entries from the log.
pub(crate) const FANOUT: &str = r"
local prefix, holder = ARGV[1], ARGV[2]
local now = nil
-- Per set of nodes following a user (their `fl`): its messages, each the users' records
-- (`message_for`); `receivers` the sets in the order they came.
local inbox, receivers = {}, {}
for i = 1, #KEYS do
  local meta = KEYS[i]
  if ARGV[2 * i + 2] == '1' then
    now = now or now_ms()
    prune_followers(meta, now)
  end
  local followers = redis.call('HGET', meta, 'fl')
  if followers then
    local records = ARGV[2 * i + 1]
    local message = message_for(inbox, receivers, followers, #records + 1)
    message.n = message.n + 1
    message[message.n] = records
    message.size = message.size + #records + 1
  end
end
send_messages(prefix, inbox, receivers, '\n', holder)
return 0
";
