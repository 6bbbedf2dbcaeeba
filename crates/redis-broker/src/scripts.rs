//! Where a user's stream lives in Redis (its keys) and the Lua scripts that change or read it
//! atomically.
//!
//! A user's stream is two keys, both with the user's id as the hash tag (so a Redis Cluster
//! keeps them on one slot):
//! - `<prefix>:{<user>}:meta`, a hash: `epoch`, `seq` (the last seq given), `renewed` (when
//!   the publish script last renewed the keys' TTL), per publishing node the highest publish
//!   counter applied (so a publish retried after a lost connection is applied once), and per
//!   node that follows the user (holds connections of it) `f:<node id>`, its
//!   `<attachment id>:<expiry in ms>`, listed in `fl` (the ids sorted, joined by `,`: what
//!   the publish script reads): nodes renew their entries while they follow, and an entry
//!   past its expiry is removed when the publish script next renews the keys;
//! - `<prefix>:{<user>}:log`, a Stream: entry `<seq>-0` holds the event's JSON without its
//!   opening brace (`b`; the frame is `{"seq":<seq>,` and it) and its publish time in ms (`t`),
//!   capped at the replay log's length (entries of earlier versions hold the whole frame, `f`).
//!
//! Live delivery goes to nodes, not to users: a publish script sends each node that follows
//! any of the batch's users their frames on the node's events channel
//! (`<prefix>:node:<node id>:events`), `<user>\n<epoch>\n<seq>\n<rest>` records joined by
//! `\n`, where the frame is `{"seq":<seq>,<rest>` (JSON has no raw newline), in messages of
//! about 7,000 bytes at most (one record may be longer), in order. Nodes that follow the same
//! users share the same messages. So a batch costs Redis one `PUBLISH` per following node
//! and 7,000 bytes of frames, not one per event, and a node parses as many messages.
//! A stream that starts (a new epoch) is announced on `<prefix>:opened` as
//! `<user>\n<epoch>`, so a node following a user whose stream was lost learns it even if
//! its entry was lost with it.
//!
//! The stream's keys expire between the replay age and a quarter more after the last publish
//! (publishes renew them at most every quarter of it; nodes holding the user's connections
//! renew them too); a stream whose meta is gone starts a new epoch and an empty log.

use core_context::UserId;
use redis::Script;

/// The keys of one user's stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamKeys {
    pub(crate) meta: String,
    pub(crate) log: String,
}

impl StreamKeys {
    pub(crate) fn new(prefix: &str, user: &UserId) -> Self {
        let (meta, log) = meta_and_log(prefix, user);
        Self { meta, log }
    }
}

/// The two keys a publish writes: the stream's meta and log.
pub(crate) fn meta_and_log(prefix: &str, user: &UserId) -> (String, String) {
    (
        format!("{prefix}:{{{}}}:meta", user.as_str()),
        log_key(prefix, user),
    )
}

/// `<prefix>:{<user>}`, the base of every key of the user (the hash tag keeps them on one slot).
pub(crate) fn user_base(prefix: &str, user: &UserId) -> String {
    format!("{prefix}:{{{}}}", user.as_str())
}

/// The stream's log alone (what the sequencer's appends write).
pub(crate) fn log_key(prefix: &str, user: &UserId) -> String {
    format!("{prefix}:{{{}}}:log", user.as_str())
}

/// A node's events channel (see the module documentation).
pub(crate) fn events_channel(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:node:{node_id}:events")
}

/// The channel announcing streams that start (see the module documentation).
pub(crate) fn opened_channel(prefix: &str) -> String {
    format!("{prefix}:opened")
}

/// Opens a stream whose meta is gone: a new epoch, seq 0, an empty log. Takes the meta and
/// log keys, the epoch to use if a new one starts, and the TTL in ms.
///
/// On a Redis Cluster (`FENCED`) the meta also names the replication id of the master that
/// wrote it (`writer`). A replica promoted after its master failed takes a new replication
/// id, and may lack the master's last writes (replication is asynchronous): its seqs could
/// repeat ones clients already saw, with other events. So a stream written by another master
/// is opened anew (a new epoch): clients that saw the old one get `epoch_changed`, an explicit
/// failed resume, never a seq that means two events.
const OPEN: &str = r"
local function open(meta, log, new_epoch, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  local writer = nil
  if FENCED then
    writer = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
    if epoch and redis.call('HGET', meta, 'writer') ~= writer then epoch = nil end
  end
  if not epoch then
    epoch = new_epoch
    -- The nodes following the user still follow it (`f:<node>`).
    local fields = redis.call('HGETALL', meta)
    redis.call('DEL', log)
    redis.call('DEL', meta)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
    for j = 1, #fields, 2 do
      if string.sub(fields[j], 1, 2) == 'f:' or fields[j] == 'fl' then
        redis.call('HSET', meta, fields[j], fields[j + 1])
      end
    end
    if writer then redis.call('HSET', meta, 'writer', writer) end
    redis.call('PEXPIRE', meta, ttl)
    -- `<prefix>:{<user>}:meta`: announced on `<prefix>:opened` as `<user>\n<epoch>`.
    local prefix, user = string.match(meta, '^(.*):{([^}]*)}:meta$')
    if prefix then redis.call('PUBLISH', prefix .. ':opened', user .. '\n' .. epoch) end
  end
  return epoch
end
local function open_stream()
  return open(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
";

/// The helpers every script that reads or writes a stream's followers uses: `now_ms`,
/// `list_followers` (the meta's `fl`), `prune_followers`, and `message_for` and
/// `send_messages`, which gather frames per set of following nodes and send them.
pub(crate) const FOLLOWERS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Writes the meta's `fl` anew from its `f:<node>` entries: the following nodes' ids, sorted,
-- joined by `,` (none: no `fl`). The publish script reads only it, so a batch reads a
-- user's followers with one field, not their entries.
local function list_followers(meta)
  local names = {}
  for _, name in ipairs(redis.call('HKEYS', meta)) do
    if string.sub(name, 1, 2) == 'f:' then names[#names + 1] = string.sub(name, 3) end
  end
  if #names == 0 then
    redis.call('HDEL', meta, 'fl')
  else
    table.sort(names)
    redis.call('HSET', meta, 'fl', table.concat(names, ','))
  end
end
-- Removes `meta`'s follower entries past their expiry at `now` (and writes its `fl` anew if
-- any was): a node that stopped without removing its entry is sent nothing after that.
local function prune_followers(meta, now)
  local fields = redis.call('HGETALL', meta)
  local pruned = false
  for j = 1, #fields, 2 do
    local name = fields[j]
    if string.sub(name, 1, 2) == 'f:' then
      local expires = tonumber(string.match(fields[j + 1], ':(%d+)$'))
      if not expires or expires < now then
        redis.call('HDEL', meta, name)
        pruned = true
      end
    end
  end
  if pruned then list_followers(meta) end
end
-- A message is kept under Lua's buffer (8 KiB): a longer string is joined of joined pieces,
-- and Redis's Lua hashes every byte of each.
local MESSAGE_BYTES = 7000
-- The message of `inbox` that `size` more bytes go in for the nodes `followers` (their
-- `fl`): its messages' last, or a new one past MESSAGE_BYTES (one part may be longer); a
-- message holds its parts, their count (`n`) and size. `receivers` lists the sets of nodes
-- in the order they came.
local function message_for(inbox, receivers, followers, size)
  local messages = inbox[followers]
  if not messages then
    messages = {}
    inbox[followers] = messages
    receivers[#receivers + 1] = followers
  end
  local message = messages[#messages]
  if not message or message.size + size > MESSAGE_BYTES then
    message = {n = 0, size = 0}
    messages[#messages + 1] = message
  end
  return message
end
-- Sends each set of following nodes in `receivers` (their `fl`, in order) its messages in
-- `inbox` (each its parts, `n` of them, joined by `separator`) on each node's events channel,
-- but node `skip`'s (when given).
local function send_messages(prefix, inbox, receivers, separator, skip)
  for _, followers in ipairs(receivers) do
    local channels = {}
    for follower in string.gmatch(followers, '[^,]+') do
      if follower ~= skip then
        channels[#channels + 1] = prefix .. ':node:' .. follower .. ':events'
      end
    end
    for _, message in ipairs(inbox[followers]) do
      local text = table.concat(message, separator, 1, message.n)
      for _, channel in ipairs(channels) do redis.call('PUBLISH', channel, text) end
    end
  end
end
";

/// The sequencer's fan-out (`seq_scripts`' `FANOUT`) with its helpers, sent whole (`EVAL`):
/// in a transaction, a script Redis no longer has (restarted) would fail alone after the
/// appends went through.
pub(crate) static FANOUT_SCRIPT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{FOLLOWERS}{}", crate::seq_scripts::FANOUT));

/// Appends a batch of events, in order, each to its user's stream, and sends each node
/// following any of their users one message with their frames: `KEYS` are pairs of (meta,
/// log) per event; `ARGV[1]` the epoch for a stream that starts, `ARGV[2]` the TTL in ms,
/// `ARGV[3]` the node id, `ARGV[4]` the log's length cap, `ARGV[5]` the key prefix, then per
/// event its node publish counter, its JSON without the seq and without its opening brace
/// (`"type":...}`), its run id, and
/// `1` for the terminal event of a run whose lease was taken (else `0`). Refused: the events
/// of a user whose meta or log Redis refuses (a key of another type), from the first one
/// refused, so that one user's broken keys cost no other user's events. Skipped: an event
/// whose counter the stream already applied (a retried batch), and any other event of a run
/// already ended that way (`<prefix>:{<user>}:ended:<run>`), so that terminal event stays the
/// run's last. A run's `agent_started` marks its record (`<prefix>:{<user>}:run:<run>`, field `started`),
/// its `tool_executing` / `tool_completed` add and remove `open:<tool_call_id>` there (the
/// tool's name), and its terminal event marks `ended`.
/// Returns `{appended, refused, the first refusal's error or ''}`.
///
/// Redis spends most of a script's time on the calls it makes and on the strings and tables
/// it makes (each is hashed and later collected), so the script does little per event (its
/// instructions in Redis per event are measured in `docs/benchmarks.md`):
/// - the stream's meta is read once per user per batch, and only the fields it needs
///   (`HMGET`; the followers as one field, `fl`), and written once at its end;
/// - its keys' TTL is renewed at most every quarter of the TTL (the meta's `renewed`), and
///   so are expired follower entries removed (a node that stopped without removing its
///   entry gets at most that much longer of messages nobody reads);
/// - each run's record is checked once per batch (a run with one was not ended by a reaper),
///   its ended mark only when it has none;
/// - a frame is not built as one string but as its parts, joined once per message;
/// - each following node gets one `PUBLISH` per batch and about 7,000 bytes of frames.
///
/// Its keys are many users', so on a Redis Cluster the publisher calls it once per slot.
const PUBLISH: &str = r#"
local now = now_ms()
local ttl = tonumber(ARGV[2])
local node = ARGV[3]
local cap = ARGV[4]
local prefix = ARGV[5]
-- Lua formats a number with sprintf each time it becomes a string: once.
local now_text = tostring(now)
local appended = 0
-- Per user (their meta key): where their stream stands, read once per batch and written
-- back once at its end (`touched`, in order).
local streams, touched = {}, {}
-- Per set of nodes following a user (their `fl`): its messages, in order, each the parts of
-- its records (`message_for`); `receivers` the sets in the order they came.
local inbox, receivers = {}, {}
local writer = nil
-- Events of users whose keys Redis refuses (a key of another type), skipped, and the first
-- refusal: one user's broken keys cost only that user's events, never the batch's.
local refused, why = 0, ''
-- Whether Redis refused a call for its key (`WRONGTYPE`; `ERR`, such as an `XADD` id at or
-- below the log's last after a half-applied script) rather than for a while (`OOM`,
-- `NOREPLICAS`, ...: the script fails whole, at its first write, and is sent again).
local function of_key(err)
  return string.sub(err, 1, 10) == 'WRONGTYPE ' or string.sub(err, 1, 4) == 'ERR '
end
local function stream(meta, log)
  local st = streams[meta]
  if st then return st end
  local m = redis.pcall('HMGET', meta, 'epoch', 'seq', node, 'renewed', 'fl', 'writer')
  if m.err then
    if not of_key(m.err) then error(m) end
    if why == '' then why = m.err end
    st = {failed = true, dirty = false}
    streams[meta] = st
    return st
  end
  local epoch = m[1]
  if epoch and FENCED then
    writer = writer or string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
    if m[6] ~= writer then epoch = nil end
  end
  local followers = m[5]
  if epoch then
    st = {epoch = epoch, seq = tonumber(m[2]), applied = tonumber(m[3]) or 0,
          renewed = tonumber(m[4]) or 0}
  else
    -- Opened anew; the nodes that followed the old stream follow the new one.
    st = {epoch = open(meta, log, ARGV[1], ARGV[2]), seq = 0, applied = 0, renewed = 0}
    followers = redis.call('HGET', meta, 'fl')
  end
  -- `<prefix>:{<user>}:meta`: the user's keys' base (without `:meta`), and the head of each
  -- of their records, `<user>\n<epoch>\n`.
  st.base = string.sub(meta, 1, -6)
  st.head = string.sub(meta, #prefix + 3, -7) .. '\n' .. st.epoch .. '\n'
  st.followers = followers or false
  st.meta, st.log, st.dirty, st.runs = meta, log, false, {}
  streams[meta] = st
  touched[#touched + 1] = st
  return st
end
for i = 0, #KEYS / 2 - 1 do
  local at = 6 + 4 * i
  -- The event's JSON comes without its opening brace: the frame is `{"seq":N,` and it.
  local counter, rest, run = tonumber(ARGV[at]), ARGV[at + 1], ARGV[at + 2]
  local st = stream(KEYS[2 * i + 1], KEYS[2 * i + 2])
  if st.failed then
    refused = refused + 1
  else
    local base = st.base
    -- Whether the run has a record (then no reaper ended it: a reaper deletes the record as
    -- it marks the run ended), or else was ended by a reaper; a change to a thread (no run)
    -- has neither.
    local state = st.runs[run]
    if state == nil then
      if run == '' then
        state = 'none'
      elseif redis.call('EXISTS', base .. ':run:' .. run) == 1 then
        state = 'recorded'
      elseif redis.call('EXISTS', base .. ':ended:' .. run) == 1 then
        state = 'ended'
      else
        state = 'none'
      end
      st.runs[run] = state
    end
    local seq = tostring(st.seq + 1)
    local added = nil
    if st.applied < counter and (state ~= 'ended' or ARGV[at + 3] == '1') then
      added = redis.pcall('XADD', st.log, 'MAXLEN', cap, seq, 'b', rest, 't', now_text)
      if type(added) == 'table' then
        if not of_key(added.err) then error(added) end
        -- The log is not a stream: this user's events go no further in this batch.
        if why == '' then why = added.err end
        st.failed = true
        refused = refused + 1
        added = nil
      end
    end
    if added then
      st.applied = counter
      st.seq = st.seq + 1
      -- Written back as they came or were made: Lua formats a number again for each call.
      st.dirty, st.applied_text, st.seq_text = true, ARGV[at], seq
      local followers = st.followers
      if followers then
        local size = #st.head + #seq + #rest + 2
        local message = message_for(inbox, receivers, followers, size)
        local n = message.n
        if n > 0 then
          n = n + 1
          message[n] = '\n'
        end
        -- `<user>\n<epoch>\n<seq>\n<rest>`.
        message[n + 1] = st.head
        message[n + 2] = seq
        message[n + 3] = '\n'
        message[n + 4] = rest
        message.n, message.size = n + 4, message.size + size
      end
      appended = appended + 1
      -- A run's start, its open tool calls and its end are kept on its record (when it has
      -- one: a top-level run holding a claim), so that if its node dies, the run's end emits
      -- the start if it never came, closes the calls left open, and is not emitted at all for
      -- a run that had ended (its slot not yet given back). A record Redis refuses (a key of
      -- another type) is left as it is: the event is in the log.
      local kind, call, tool = event_kind(rest)
      if kind then
        local tracked, failure =
          pcall(track_kind, base, run, state == 'recorded', rest, kind, call, tool)
        if not tracked and why == '' then
          why = type(failure) == 'table' and failure.err or tostring(failure)
        end
      end
    end
  end
end
for _, st in ipairs(touched) do
  if st.dirty then
    if now - st.renewed >= ttl / 4 then
      -- A quarter longer than the replay age: a stream lives at least the replay age after
      -- its last publish, renewed or not (its entries are still refused by their age).
      local keep = ttl + math.floor(ttl / 4)
      redis.call('HSET', st.meta, node, st.applied_text, 'seq', st.seq_text, 'renewed', now_text)
      redis.call('PEXPIRE', st.meta, keep)
      redis.call('PEXPIRE', st.log, keep)
      prune_followers(st.meta, now)
    else
      redis.call('HSET', st.meta, node, st.applied_text, 'seq', st.seq_text)
    end
  end
end
send_messages(prefix, inbox, receivers, '', nil)
return {appended, refused, why}
"#;

/// Follows a user from this node and reads where their stream stands: `KEYS` meta and log;
/// `ARGV[3]` the node id, `ARGV[4]` the attachment id. Sets the node's entry (expiring after
/// the TTL, listed in the meta's `fl`) and returns `{epoch, last seq, 0}` (opening the stream if
/// needed): every event appended after this script reaches the node's events channel.
const FOLLOW: &str = r"
local epoch = open_stream()
redis.call('HSET', KEYS[1], 'f:' .. ARGV[3], ARGV[4] .. ':' .. (now_ms() + tonumber(ARGV[2])))
list_followers(KEYS[1])
return {epoch, redis.call('HGET', KEYS[1], 'seq'), 0}
";

/// Stops following a user: `KEYS[1]` their meta, `ARGV[1]` the node id, `ARGV[2]` the
/// attachment id that follows them. Removes the node's entry only if it is that attachment's
/// (a later attachment of the same user on this node may have set it again since).
const UNFOLLOW: &str = r"
local field = 'f:' .. ARGV[1]
local entry = redis.call('HGET', KEYS[1], field)
if entry and string.match(entry, '^(%d+):') == ARGV[2] then
  redis.call('HDEL', KEYS[1], field)
  list_followers(KEYS[1])
end
return 0
";

/// Keeps the streams a node follows from expiring, and its entries in them: `KEYS` are pairs
/// of (meta, log) per user; `ARGV[1]` the TTL in ms, `ARGV[2]` the node id, then per user the
/// attachment id. Returns the (0-based) indexes of the users whose entry was missing (their
/// keys were lost or evicted): the node fetches what it missed of those.
const RENEW: &str = r"
local ttl = tonumber(ARGV[1])
local expires = now_ms() + ttl
-- As long as the publish script keeps them (see there), so a renewal never shortens it.
local keep = ttl + math.floor(ttl / 4)
local field = 'f:' .. ARGV[2]
local missing = {}
for i = 0, #KEYS / 2 - 1 do
  local meta = KEYS[2 * i + 1]
  if redis.call('HSET', meta, field, ARGV[3 + i] .. ':' .. expires) == 1 then
    missing[#missing + 1] = i
    list_followers(meta)
  end
  redis.call('PEXPIRE', meta, keep)
  redis.call('PEXPIRE', KEYS[2 * i + 2], keep)
end
return missing
";

/// Where the stream stands: `{epoch, last seq, 0}` (opening it if needed; the 0 is the
/// sequencer mode's lease number, which this mode has not).
const POSITION: &str = r"
local epoch = open_stream()
return {epoch, redis.call('HGET', KEYS[1], 'seq'), 0}
";

/// The frames after a seq: `ARGV[3]` the client's epoch, `ARGV[4]` its last seq, `ARGV[5]`
/// the replay age in ms. Returns `{status, oldest seq, epoch, last seq, frames...}` where
/// status is `ok`, `epoch_changed`, `seq_ahead` or `too_old`, and oldest seq is the oldest
/// seq the log still holds within the replay age (the next seq when none).
const REPLAY_HEAD: &str = r#"
local epoch = open_stream()
local last = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local after = tonumber(ARGV[4])
local oldest_age = now_ms() - tonumber(ARGV[5])
local function oldest_kept()
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
    if tonumber(entry[2][4]) >= oldest_age then
      return tonumber((string.gsub(entry[1], '-0$', '')))
    end
  end
  return last + 1
end
"#;

/// The rest of [`REPLAY_HEAD`] (after `seq_scripts`' `REPLAY_CHECKS`): the frames, read
/// forwards from `<after + 1>-0`.
const REPLAY_TAIL: &str = r#"
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')
local first = entries[1]
if not first or first[1] ~= (after + 1) .. '-0' or tonumber(first[2][4]) < oldest_age then
  return refuse('too_old')
end
for i, entry in ipairs(entries) do
  local fields = entry[2]
  if fields[1] == 'b' then
    reply[4 + i] = '{"seq":' .. (string.gsub(entry[1], '-0$', '')) .. ',' .. fields[2]
  else
    reply[4 + i] = fields[2]
  end
end
return reply
"#;

/// The scripts, each with the stream-opening prelude.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) position: Script,
    pub(crate) replay: Script,
    pub(crate) follow: Script,
    pub(crate) unfollow: Script,
    pub(crate) renew: Script,
    /// The sequencer mode's lease scripts (`seq_scripts`); `None` in the publish script's
    /// mode.
    pub(crate) leases: Option<crate::seq_scripts::LeaseScripts>,
}

impl Scripts {
    /// The scripts; `fenced` on a Redis Cluster (see [`OPEN`]); `sequencer` for the
    /// sequencer mode, whose streams' position, replay and follow read lease-numbered logs.
    pub(crate) fn new(fenced: bool, sequencer: bool) -> Self {
        let open = format!("local FENCED = {fenced}\n{OPEN}{FOLLOWERS}");
        let mut scripts = Self {
            publish: Script::new(&format!("{open}{}{PUBLISH}", crate::record_scripts::TRACK)),
            position: Script::new(&format!("{open}{POSITION}")),
            replay: Script::new(&format!(
                "{open}{REPLAY_HEAD}{}{REPLAY_TAIL}",
                crate::seq_scripts::REPLAY_CHECKS
            )),
            follow: Script::new(&format!("{open}{FOLLOW}")),
            unfollow: Script::new(&format!("{open}{UNFOLLOW}")),
            renew: Script::new(&format!("{open}{RENEW}")),
            leases: None,
        };
        if sequencer {
            let [position, follow, replay] = crate::seq_scripts::reads(&open);
            scripts.position = position;
            scripts.follow = follow;
            scripts.replay = replay;
            scripts.leases = Some(crate::seq_scripts::leases(&open));
        }
        scripts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_users_hash_tag() {
        let user = UserId::parse("alice").expect("valid id");
        let keys = StreamKeys::new("agentws", &user);
        assert_eq!(keys.meta, "agentws:{alice}:meta");
        assert_eq!(keys.log, "agentws:{alice}:log");
    }
}
