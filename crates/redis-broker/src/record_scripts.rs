//! What an event changes on its run's record (`<prefix>:{<user>}:run:<run>`, see `runs`), in
//! Lua: the publish script applies it as it appends ([`TRACK`]); in the sequencer mode the
//! holder applies it after Redis confirmed the appends ([`RECORD`]), so a record may lag its
//! log, and a reaper reads the run's entries in the log on top of it ([`FROM_LOG`]) before it
//! ends the run.
//!
//! A record changes for a run's `agent_started` (`started`), `tool_executing` and
//! `tool_completed` (`open:<tool_call_id>`, the tool's name, set and taken away) and terminal
//! event (`ended`). A sub-run's are kept on its top-level run's record (`sub:<run>` =
//! `<parent>\n<agent>` while it runs, `sopen:<call>` = `<run>\n<tool>`), found through
//! `<prefix>:{<user>}:root:<run>`, so that if their node dies, the top-level run's end ends
//! them too, each before its parent. Nothing here creates a record: a run without one (no
//! claim, or ended by a reaper, which deletes it) is left without.

/// Lua functions: `event_kind(rest)` (the kind of an event that changes a record, with its
/// call and tool, else nil), `track(base, run, recorded, rest)` (applies one appended
/// event, `recorded`: whether the run has a record of its own) and `track_kind(base, run,
/// recorded, rest, kind, call, tool)` (the same, its kind read already). `rest` is the
/// event's JSON without its opening brace; `base` the user's `<prefix>:{<user>}`.
pub(crate) const TRACK: &str = r#"
-- Per sub-run key, its top-level run.
local roots = {}
-- The top-level run whose record keeps a sub-run (`<base>:root:<run>`, set at its start).
local function root_of(base, run)
  local key = base .. ':root:' .. run
  if roots[key] == nil then roots[key] = redis.call('GET', key) or false end
  return roots[key]
end
-- A sub-run's parent and agent, from its `agent_started`, whose last fields are
-- `"parent_run_id":...,"thread_id":...,"agent_name":...,"timestamp":...}`.
local function sub_start(rest)
  return string.match(rest,
    '"parent_run_id":"([^"\\]*)","thread_id":"[^"\\]*","agent_name":"([^"\\]*)","timestamp":"[^"]*"}$')
end
local function track_sub(base, run, kind, rest, call, tool)
  if kind == 'agent_started' then
    local parent, agent = sub_start(rest)
    if not parent then return end
    local root = parent
    if redis.call('EXISTS', base .. ':run:' .. parent) == 0 then root = root_of(base, parent) end
    -- A root whose record is gone (ended by a reaper) keeps no more sub-runs.
    if not root or redis.call('EXISTS', base .. ':run:' .. root) == 0 then return end
    redis.call('SET', base .. ':root:' .. run, root, 'PX', 86400000)
    roots[base .. ':root:' .. run] = root
    redis.call('HSET', base .. ':run:' .. root, 'sub:' .. run, parent .. '\n' .. agent)
    return
  end
  local root = root_of(base, run)
  if not root or redis.call('EXISTS', base .. ':run:' .. root) == 0 then return end
  local record = base .. ':run:' .. root
  if kind == 'tool_executing' then
    redis.call('HSET', record, 'sopen:' .. call, run .. '\n' .. tool)
  elseif kind == 'tool_completed' then
    redis.call('HDEL', record, 'sopen:' .. call)
  else
    redis.call('HDEL', record, 'sub:' .. run)
  end
end
-- `"type":"` is 8 bytes.
local function event_kind(rest)
  local kind = nil
  if string.byte(rest, 9) == 116 then
    kind = string.match(rest, '^"type":"(tool_[a-z]+)",')
    if kind ~= 'tool_executing' and kind ~= 'tool_completed' then return nil end
    -- The server writes a tool event as `"type":...,"data":{"tool_call_id":...,
    -- "tool_name":...`; anything else (an escaped character) is read whole.
    local call, tool = string.match(rest,
      '^"type":"[a-z_]+","data":{"tool_call_id":"([^"\\]*)","tool_name":"([^"\\]*)"')
    if not call then
      local data = cjson.decode('{' .. rest)['data']
      call, tool = data['tool_call_id'], data['tool_name']
    end
    return kind, call, tool
  end
  kind = string.match(rest, '^"type":"(agent_[a-z]+)",')
  if kind ~= 'agent_started' and kind ~= 'agent_completed' and kind ~= 'agent_error'
    and kind ~= 'agent_cancelled' then return nil end
  return kind
end
-- `track` for an event whose kind (with its call and tool) `event_kind` read already.
local function track_kind(base, run, recorded, rest, kind, call, tool)
  local record_key = base .. ':run:' .. run
  if not recorded then
    track_sub(base, run, kind, rest, call, tool)
  elseif kind == 'agent_started' then
    redis.call('HSET', record_key, 'started', '1')
  elseif kind == 'tool_executing' then
    redis.call('HSET', record_key, 'open:' .. call, tool)
  elseif kind == 'tool_completed' then
    redis.call('HDEL', record_key, 'open:' .. call)
  else
    redis.call('HSET', record_key, 'ended', '1')
  end
end
local function track(base, run, recorded, rest)
  local kind, call, tool = event_kind(rest)
  if kind then track_kind(base, run, recorded, rest, kind, call, tool) end
end
"#;

/// Applies appended events to their runs' records (sequencer mode), in log order: `ARGV`
/// holds per event the user's `<prefix>:{<user>}`, the run id and the event's JSON without
/// its opening brace; `KEYS[1]` one of their users' meta, unread, routes the call to their
/// slot on a Redis Cluster (the caller groups a call's users by slot). Returns how many
/// events it read.
const RECORD: &str = r"
local recorded = {}
for i = 1, #ARGV, 3 do
  local base, run = ARGV[i], ARGV[i + 1]
  local key = base .. ':run:' .. run
  if recorded[key] == nil then recorded[key] = redis.call('EXISTS', key) == 1 end
  track(base, run, recorded[key], ARGV[i + 2])
end
return #ARGV / 3
";

/// The script applying appended events to their runs' records.
pub(crate) fn record() -> redis::Script {
    redis::Script::new(&format!("{TRACK}{RECORD}"))
}

/// The reapers' `take` hooks of the sequencer mode (see `run_scripts`' `TAKE`), after
/// [`TRACK`] and `seq_scripts`' log helpers:
/// - `from_log(base, run, st)` reads the run's entries (and its sub-runs') in the user's log
///   (`r`, each entry's run) on top of what its record said (`st`: `started`, `ended`, and
///   the ordered lists `open` {call, tool}, `subs` {run, parent, agent} and `sub_open`
///   {call, run, tool}): the record may lag the log by the appends whose record changes had
///   not been applied when their holder died;
/// - `fence(base, runs)` marks the runs reaped (`<prefix>:{<user>}:reaped`, a sorted set by
///   ms, kept a day, which a new holder reads as it takes the lease) and fences the user's
///   stream: a barrier of a new lease number, held by nobody, so whatever a holder still
///   appends is refused until it takes the lease again and learns the runs were reaped.
pub(crate) const SEQ_HOOKS: &str = r#"
local function put(list, item)
  for _, known in ipairs(list) do
    if known[1] == item[1] then return end
  end
  list[#list + 1] = item
end
local function drop(list, key)
  for i, known in ipairs(list) do
    if known[1] == key then
      table.remove(list, i)
      return
    end
  end
end
local function from_log(base, run, st)
  local tree = {[run] = true}
  for _, sub in ipairs(st.subs) do tree[sub[1]] = true end
  for _, entry in ipairs(redis.call('XRANGE', base .. ':log', '-', '+')) do
    local r = field(entry[2], 'r')
    local rest = r and field(entry[2], 'b')
    local kind, call, tool = nil, nil, nil
    if rest then kind, call, tool = event_kind(rest) end
    if kind == 'agent_started' and not tree[r] then
      local parent, agent = sub_start(rest)
      if parent and tree[parent] then
        tree[r] = true
        put(st.subs, {r, parent, agent})
      end
    elseif kind and r == run then
      if kind == 'agent_started' then
        st.started = '1'
      elseif kind == 'tool_executing' then
        put(st.open, {call, tool})
      elseif kind == 'tool_completed' then
        drop(st.open, call)
      else
        st.ended = '1'
      end
    elseif kind and tree[r] then
      if kind == 'tool_executing' then
        put(st.sub_open, {call, r, tool})
      elseif kind == 'tool_completed' then
        drop(st.sub_open, call)
      elseif kind ~= 'agent_started' then
        drop(st.subs, r)
      end
    end
  end
end
local function fence(base, runs)
  local now = now_ms()
  local reaped = base .. ':reaped'
  for _, run in ipairs(runs) do redis.call('ZADD', reaped, now, run) end
  redis.call('ZREMRANGEBYSCORE', reaped, '-inf', now - 86400000)
  redis.call('PEXPIRE', reaped, 86400000)
  local meta, log = base .. ':meta', base .. ':log'
  if not redis.call('HGET', meta, 'lease') or redis.call('EXISTS', log) == 0 then return end
  local lease, last = barrier(meta, log, now, nil)
  redis.call('HDEL', meta, 'sq', 'sqx')
  -- Announced as a lease taken: followers drop a stale holder's frames from now on.
  local prefix, user = string.match(base, '^(.*):{([^}]*)}$')
  local epoch = redis.call('HGET', meta, 'epoch')
  if prefix and epoch then
    redis.call('PUBLISH', prefix .. ':leases', user .. '\n' .. epoch .. '\n' .. lease .. '\n' .. last)
  end
end
"#;

/// The reapers' `take` hooks outside the sequencer mode: the publish script keeps records
/// exact and checks ended marks itself.
pub(crate) const NO_HOOKS: &str = r"
local function from_log(base, run, st) end
local function fence(base, runs) end
";
