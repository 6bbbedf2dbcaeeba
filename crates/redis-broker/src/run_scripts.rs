//! The Lua scripts of the runs across nodes ([`ClusterRuns`](crate::ClusterRuns)): claiming
//! a run slot or a place in the queue (with one run per thread), giving it back, renewing
//! leases, and reaping those of nodes that died. The keys they use are listed in the `runs`
//! module's documentation.

/// Claims a run slot or a place in the user's queue. `KEYS[1]` the user's slots (scored by
/// expiry), `KEYS[2]` the user's leases (slots and places, scored by expiry, for the reaper),
/// `KEYS[3]` this claim's lease hash, `KEYS[4]` the user's queue (scored by arrival, strictly
/// increasing), `KEYS[5]` the queue's expiries, `KEYS[6]` the run's hash, `KEYS[7]` the run's
/// ended mark, `KEYS[8]` the user's serialized threads (thread → `<lease> <run>` of the run
/// holding a slot in it, or `paused <run>` of a run paused there for approvals), `KEYS[9]` the user's queued claims (lease → `<thread> <front>
/// <run>`); `ARGV[1]` the claim's id, `ARGV[2]` TTL ms, `ARGV[3]` max running, `ARGV[4]` max
/// queued, `ARGV[5]` user, `ARGV[6]` node, `ARGV[7]` run, `ARGV[8]` thread, `ARGV[9]` agent,
/// `ARGV[10]` the run's message, `ARGV[11]` 1 when a queued claim asks again, `ARGV[12]` the
/// thread rule (`parallel`, `queue`, `reject`, `front`).
///
/// A claim takes a slot when fewer claims ahead of it may run than slots are free, and
/// (keeping one run per thread, every rule but `parallel`) its thread has no holder and no
/// claim queued ahead of it; a claim ahead "may run" unless its own thread holds it up. A
/// claim already in the queue (a waiter asking again) renews its place otherwise; a new one
/// queues while the queue has room: at the end, or (`front`) ahead of its thread's waiters
/// after their `front` ones; `reject` is refused while its thread has a run. Slots and places
/// not renewed within their TTL (their node died) are dropped first; a reaper ends their
/// runs. A waiter whose place a reaper took (its run ended) is told so. Returns `{1}`
/// running, `{2, position, holder}` queued (`position` claims ahead: of its thread when it
/// keeps one run per thread; `holder` the thread's running run or ''), `{0, running,
/// queued}` refused, `{3}` lost, `{4, run}` its thread is busy with `run`.
pub(crate) const CLAIM: &str = r"
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then return {'3'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local expiry = now + ttl
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[9], id)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now) end
local running = redis.call('ZCARD', KEYS[1])
local queued = redis.call('ZCARD', KEYS[4])
local rule = ARGV[12]
local mine = nil
if rule ~= 'parallel' then mine = ARGV[8] end
local holders = {}
local function holder(thread)
  if holders[thread] == nil then
    holders[thread] = false
    local h = redis.call('HGET', KEYS[8], thread)
    if h then
      local lease, run = string.match(h, '^(%S+) (%S+)$')
      if lease and (lease == 'paused' or redis.call('ZSCORE', KEYS[1], lease)) then
        holders[thread] = run
      else
        redis.call('HDEL', KEYS[8], thread)
      end
    end
  end
  return holders[thread]
end
local entries = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
local rank, may_ahead, same_ahead, fronts, first_same = nil, 0, 0, 0, nil
local last_front, first_normal = nil, nil
local blocked = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  if id == ARGV[1] then
    rank = (i - 1) / 2
    break
  end
  local q = redis.call('HGET', KEYS[9], id) or ''
  local thread, front, run = string.match(q, '^(%S*) (%d) (%S+)$')
  if thread == nil or thread == '' then
    may_ahead = may_ahead + 1
  else
    local h = holder(thread)
    if (not blocked[thread] and not h) or h == run then may_ahead = may_ahead + 1 end
    blocked[thread] = true
    if thread == mine then
      same_ahead = same_ahead + 1
      if not first_same then first_same = run end
      if front == '1' then
        fronts = fronts + 1
        last_front = i
      elseif not first_normal then
        first_normal = i
      end
    end
  end
end
local active = false
if mine then active = holder(mine) end
-- The thread's own paused run claiming again (resumed): the thread waits for it.
local own = active and active == ARGV[7]
if own then active = false end
if not rank and rule == 'reject' and (active or first_same) then
  return {'4', active or first_same}
end
local thread_free = (not mine) or own or (not active and not blocked[mine])
local function record(is_queued)
  redis.call('ZADD', KEYS[2], expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 86400000)
  redis.call('HSET', KEYS[3], 'user', ARGV[5], 'node', ARGV[6], 'run', ARGV[7],
    'thread', ARGV[8], 'agent', ARGV[9], 'queued', is_queued, 'message', ARGV[10])
  redis.call('HSET', KEYS[6], 'user', ARGV[5], 'node', ARGV[6], 'lease', ARGV[1])
  redis.call('PEXPIRE', KEYS[6], 86400000)
end
if thread_free and may_ahead < tonumber(ARGV[3]) - running then
  if rank then
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('ZREM', KEYS[5], ARGV[1])
    redis.call('HDEL', KEYS[9], ARGV[1])
  end
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  if mine then
    redis.call('HSET', KEYS[8], mine, ARGV[1] .. ' ' .. ARGV[7])
    redis.call('PEXPIRE', KEYS[8], 86400000)
  end
  record('0')
  return {'1'}
end
if rank then
  redis.call('ZADD', KEYS[5], 'XX', expiry, ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
  redis.call('PEXPIRE', KEYS[9], ttl)
  local position = rank
  if mine then position = same_ahead end
  return {'2', tostring(position), active or ''}
end
if queued >= tonumber(ARGV[4]) then return {'0', tostring(running), tostring(queued)} end
-- Arrival order, strictly after the last place (several may arrive in one millisecond).
local arrival = now
local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= arrival then arrival = tonumber(last[2]) + 1 end
local position = queued
if mine then position = same_ahead end
local front = '0'
if rule == 'front' and mine and (last_front or first_normal) then
  front = '1'
  local function score(i) return tonumber(entries[i + 1]) end
  if last_front then
    local after = score(last_front) + 2
    if entries[last_front + 2] then after = score(last_front + 2) end
    arrival = (score(last_front) + after) / 2
  else
    local before = score(first_normal) - 2
    if first_normal > 1 then before = score(first_normal - 2) end
    arrival = (before + score(first_normal)) / 2
  end
  position = fronts
elseif rule == 'front' then
  front = '1'
end
redis.call('ZADD', KEYS[4], arrival, ARGV[1])
redis.call('ZADD', KEYS[5], expiry, ARGV[1])
redis.call('HSET', KEYS[9], ARGV[1], (mine or '') .. ' ' .. front .. ' ' .. ARGV[7])
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('PEXPIRE', KEYS[9], ttl)
record('1')
return {'2', tostring(position), active or ''}
";

/// The Lua helper of [`RELEASE`] and [`UNHOLD`]: `name_places(queue, leases, count, node,
/// channels, user)` names the first `count` places of the user's `queue` (each place's node
/// read from its lease hash, `<leases><id>`), sends each other node holding one
/// `slot\n<user>\n<lease>…` on its node channel (`<channels><node>`), and returns the leases
/// of `node`'s own, which that node wakes itself.
pub(crate) const NAME_PLACES: &str = r"
local function name_places(queue, leases, count, node, channels, user)
  local mine, others, nodes = {}, {}, {}
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, count - 1)) do
    local holder = redis.call('HGET', leases .. id, 'node')
    if holder == node then
      table.insert(mine, id)
    elseif holder then
      if not others[holder] then
        others[holder] = {}
        table.insert(nodes, holder)
      end
      table.insert(others[holder], id)
    end
  end
  for _, other in ipairs(nodes) do
    redis.call('PUBLISH', channels .. other, 'slot\n' .. user .. '\n' .. table.concat(others[other], '\n'))
  end
  return mine
end
";

/// Gives a lease back: its slot or its place, its records, and its thread when it holds
/// it. `KEYS[1]` the user's slots, `KEYS[2]` the queue, `KEYS[3]` the queue's expiries,
/// `KEYS[4]` the user's leases, `KEYS[5]` the lease hash, `KEYS[6]` the run's hash, `KEYS[7]`
/// the user's serialized threads, `KEYS[8]` the user's queued claims; `ARGV[1]` the lease
/// id, `ARGV[2]` this node, `ARGV[3]` the node channels' prefix (`<prefix>:node:`),
/// `ARGV[4]` the user, `ARGV[5]` the user's limit of runs at once, `ARGV[6]` the prefix of
/// the user's lease hashes (`<base>:lease:`). After [`NAME_PLACES`].
///
/// Then names the places that may take a slot now (`name_places`): the queue's first ones,
/// as many as the user has slots free and two more (a place held up by its thread lets the
/// next one run), at most 16; returns this node's. A place it does not name asks again at
/// its poll.
pub(crate) const RELEASE: &str = r"
local thread = redis.call('HGET', KEYS[5], 'thread')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('HDEL', KEYS[8], ARGV[1])
if thread then
  local h = redis.call('HGET', KEYS[7], thread)
  if h and string.sub(h, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
    redis.call('HDEL', KEYS[7], thread)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(ARGV[5]) - redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
if free <= 0 then return {} end
return name_places(KEYS[2], ARGV[6], math.min(free + 2, 16), ARGV[2], ARGV[3], ARGV[4])
";

/// Takes a lease off the books and marks its run, and its sub-runs still open, ended for a
/// day (`<prefix>:{<user>}:ended:<run>`: the publish script drops the run's later events, so
/// its `node_lost` stays its last). `base` is the user's `<prefix>:{<user>}`. Returns `{user,
/// run, thread, agent, queued, message, started, open calls, ended, open sub-runs (run,
/// parent, agent, ...), their open calls (call, run, tool, ...)}` for a lease that names its
/// run, else nil (`queued`: '1' for a place in the queue, whose run never started). After
/// [`NOW_MS`] and the hooks of `record_scripts` (`from_log` and `fence`, which do nothing
/// outside the sequencer mode).
const TAKE: &str = r"
local function take(base, leases, id)
  redis.call('ZREM', leases, id)
  local lease = base .. ':lease:' .. id
  local f = redis.call('HMGET', lease, 'user', 'run', 'thread', 'agent', 'queued', 'message')
  redis.call('DEL', lease)
  if f[1] and f[2] then
    local record = base .. ':run:' .. f[2]
    local st = {started = '0', ended = '0', open = {}, subs = {}, sub_open = {}}
    local fields = redis.call('HGETALL', record)
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      if name == 'started' then
        st.started = value
      elseif name == 'ended' then
        st.ended = value
      elseif string.sub(name, 1, 5) == 'open:' then
        st.open[#st.open + 1] = {string.sub(name, 6), value}
      elseif string.sub(name, 1, 4) == 'sub:' then
        -- A sub-run still open: `<parent>\n<agent>`; it is ended with its top-level run.
        local parent, agent = string.match(value, '^([^\n]*)\n(.*)$')
        st.subs[#st.subs + 1] = {string.sub(name, 5), parent or '', agent or ''}
      elseif string.sub(name, 1, 6) == 'sopen:' then
        local run, tool = string.match(value, '^([^\n]*)\n(.*)$')
        st.sub_open[#st.sub_open + 1] = {string.sub(name, 7), run or '', tool or ''}
      end
    end
    from_log(base, f[2], st)
    local ended, open, subs, sub_open = {f[2]}, {}, {}, {}
    for _, call in ipairs(st.open) do
      open[#open + 1] = call[1]
      open[#open + 1] = call[2]
    end
    for _, sub in ipairs(st.subs) do
      for _, part in ipairs(sub) do subs[#subs + 1] = part end
      ended[#ended + 1] = sub[1]
      redis.call('SET', base .. ':ended:' .. sub[1], 1, 'PX', 86400000)
      redis.call('DEL', base .. ':root:' .. sub[1])
    end
    for _, call in ipairs(st.sub_open) do
      for _, part in ipairs(call) do sub_open[#sub_open + 1] = part end
    end
    redis.call('DEL', record)
    redis.call('SET', base .. ':ended:' .. f[2], 1, 'PX', 86400000)
    fence(base, ended)
    return {f[1], f[2], f[3], f[4], f[5] or '0', f[6] or '', st.started, open, st.ended, subs,
            sub_open}
  end
  return nil
end
";

/// What the renewal and reaper scripts start with: [`NOW_MS`], the hooks of the mode
/// (`sequencer`: `record_scripts`' `SEQ_HOOKS`, with what they need), and [`TAKE`].
pub(crate) fn take_prelude(sequencer: bool) -> String {
    if sequencer {
        format!(
            "{NOW_MS}{}{}{}{TAKE}",
            crate::seq_scripts::LOG_HELPERS,
            crate::record_scripts::TRACK,
            crate::record_scripts::SEQ_HOOKS
        )
    } else {
        format!("{NOW_MS}{}{TAKE}", crate::record_scripts::NO_HOOKS)
    }
}

/// The clock of [`TAKE`] and the scripts after it.
const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// Renews leases, each with its user's keys: `KEYS` are pairs of (the user's leases, the
/// user's slots) per lease; `ARGV[1]` TTL ms, then pairs of (the user's `<prefix>:{<user>}`,
/// lease id). A lease already expired is not renewed (a reaper may be ending its run): it is
/// taken here instead. Returns `{lost ids, taken runs}`: the ids no longer held, and the runs
/// of those this call took (the caller ends them). On a Redis Cluster it is called once per
/// slot, with that slot's leases.
pub(crate) const RENEW: &str = r"
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local lost, taken = {}, {}
for i = 0, #KEYS / 2 - 1 do
  local leases, slots = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local base, id = ARGV[2 * i + 2], ARGV[2 * i + 3]
  local score = redis.call('ZSCORE', leases, id)
  if not score then
    table.insert(lost, id)
  elseif tonumber(score) <= now then
    table.insert(lost, id)
    local run = take(base, leases, id)
    if run then table.insert(taken, run) end
  else
    redis.call('ZADD', leases, 'XX', expiry, id)
    redis.call('ZADD', slots, 'XX', expiry, id)
    redis.call('PEXPIRE', leases, 86400000)
    redis.call('PEXPIRE', slots, ARGV[1])
  end
end
return {lost, taken}
";

/// Takes up to 100 of one user's expired leases: `KEYS[1]` the user's leases, `ARGV[1]` the
/// user's `<prefix>:{<user>}`. Returns `{runs, next}`: the runs of those that named one, and
/// the expiry (ms) of the user's earliest lease left ('' when none is left).
pub(crate) const REAP: &str = r"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, 100)) do
  local run = take(ARGV[1], KEYS[1], id)
  if run then table.insert(out, run) end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, first[2] or ''}
";

/// Settles a user's entry in the reapers' index after a reap: `KEYS[1]` the index (users
/// scored by when a lease of theirs may expire next); `ARGV[1]` the user, `ARGV[2]` the
/// score the reaper read, `ARGV[3]` the user's next expiry ('' when no lease is left). Only
/// when the entry still has the score read: a claim since then set its own.
pub(crate) const SETTLE_INDEX: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
";

/// The run holding a thread's slot: `KEYS[1]` the user's serialized threads, `KEYS[2]` the
/// user's slots; `ARGV[1]` the thread, `ARGV[2]` the user's `<prefix>:{<user>}`. Returns `{run, agent}`, or nil
/// when no run holds it.
pub(crate) const RUNNER: &str = r"
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return nil end
local lease, run = string.match(h, '^(%S+) (%S+)$')
if not lease or not redis.call('ZSCORE', KEYS[2], lease) then return nil end
local agent = redis.call('HGET', ARGV[2] .. ':lease:' .. lease, 'agent') or ''
return {run, agent}
";

/// Keeps a thread for its run while the run is paused: `KEYS[1]` the user's serialized
/// threads; `ARGV[1]` the thread, `ARGV[2]` the run. Only when the run holds the thread.
pub(crate) const HOLD: &str = r"
local h = redis.call('HGET', KEYS[1], ARGV[1])
if h and string.match(h, ' (%S+)$') == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], 'paused ' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
return 1
";

/// Frees a thread from its paused run: `KEYS[1]` the user's serialized threads, `KEYS[2]`
/// the user's queue; `ARGV[1]` the thread, `ARGV[2]` the run, then as [`RELEASE`]'s
/// `ARGV[2]` to `ARGV[4]` and `ARGV[6]` (this node, the node channels' prefix, the user, the
/// lease hashes' prefix). After [`NAME_PLACES`]. Once freed, names the queue's first 16
/// places (the thread's next run among them, unless 16 of other threads wait ahead of it)
/// and returns this node's; nothing when the run did not hold the thread.
pub(crate) const UNHOLD: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'paused ' .. ARGV[2] then return {} end
redis.call('HDEL', KEYS[1], ARGV[1])
return name_places(KEYS[2], ARGV[6], 16, ARGV[3], ARGV[4], ARGV[5])
";
