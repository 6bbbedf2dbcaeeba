//! Where a user's stream lives in Redis (its keys and channel) and the Lua scripts that
//! change or read it atomically.
//!
//! A user's stream is two keys and a channel, all with the user's id as the hash tag (so a
//! Redis Cluster keeps them on one slot):
//! - `<prefix>:{<user>}:meta`, a hash: `epoch`, `seq` (the last seq given), and per
//!   publishing node the highest publish counter applied (so a publish retried after a lost
//!   connection is applied once);
//! - `<prefix>:{<user>}:log`, a Stream: entry `<seq>-0` holds the frame (`f`) and its publish
//!   time in ms (`t`), capped at the replay log's length;
//! - `<prefix>:{<user>}:live`, the pub/sub channel: `<epoch>\n<frame>` per event.
//!
//! Both keys expire after the replay age without a publish (nodes holding the user's
//! connections renew them); a stream whose meta is gone starts a new epoch and an empty log.

use core_context::UserId;
use redis::Script;

/// The keys and channel of one user's stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamKeys {
    pub(crate) meta: String,
    pub(crate) log: String,
    pub(crate) channel: String,
}

impl StreamKeys {
    pub(crate) fn new(prefix: &str, user: &UserId) -> Self {
        let base = format!("{prefix}:{{{}}}", user.as_str());
        Self {
            meta: format!("{base}:meta"),
            log: format!("{base}:log"),
            channel: format!("{base}:live"),
        }
    }
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
    redis.call('DEL', log)
    redis.call('DEL', meta)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
    if writer then redis.call('HSET', meta, 'writer', writer) end
    redis.call('PEXPIRE', meta, ttl)
  end
  return epoch
end
local function open_stream()
  return open(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// Appends a batch of events, in order, each to its user's stream: `KEYS` are pairs of (meta,
/// log) per event; `ARGV[1]` the epoch for a stream that starts, `ARGV[2]` the TTL in ms,
/// `ARGV[3]` the node id, `ARGV[4]` the log's length cap, then per
/// event its node publish counter, its JSON without the seq, its channel, its run id, and
/// `1` for the terminal event of a run whose lease was taken (else `0`). Skipped: an event
/// whose counter the stream already applied (a retried batch), and any other event of a run
/// already ended that way (`<prefix>:{<user>}:ended:<run>`), so that terminal event stays the
/// run's last. A run's `agent_started` marks its record (`<prefix>:{<user>}:run:<run>`, field `started`),
/// its `tool_executing` / `tool_completed` add and remove `open:<tool_call_id>` there (the
/// tool's name), and its terminal event marks `ended`.
/// Returns how many were appended.
///
/// One script per batch rather than per event halves Redis's work per event; its keys are
/// many users', so on a Redis Cluster the publisher calls it once per slot.
const PUBLISH: &str = r#"
local now = now_ms()
local appended = 0
for i = 0, #KEYS / 2 - 1 do
  local meta, log = KEYS[2 * i + 1], KEYS[2 * i + 2]
  -- The user's keys' base, `<prefix>:{<user>}`: the meta key without `:meta`.
  local base = string.sub(meta, 1, -6)
  local at = 5 + 5 * i
  local counter, body, channel, run = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local epoch = open(meta, log, ARGV[1], ARGV[2])
  local applied = redis.call('HGET', meta, ARGV[3])
  if (not applied or tonumber(applied) < tonumber(counter))
     and (ARGV[at + 4] == '1' or redis.call('EXISTS', base .. ':ended:' .. run) == 0) then
    redis.call('HSET', meta, ARGV[3], counter)
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    local frame = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
    redis.call('XADD', log, 'MAXLEN', ARGV[4], seq .. '-0', 'f', frame, 't', now)
    redis.call('PEXPIRE', meta, ARGV[2])
    redis.call('PEXPIRE', log, ARGV[2])
    redis.call('PUBLISH', channel, epoch .. '\n' .. frame)
    appended = appended + 1
    -- A run's start, its open tool calls and its end are kept on its record (when it has
    -- one: a top-level run holding a claim), so that if its node dies, the run's end emits
    -- the start if it never came, closes the calls left open, and is not emitted at all for
    -- a run that had ended (its slot not yet given back).
    local kind = string.match(string.sub(body, 1, 32), '^{"type":"([a-z_]+)",')
    local tracked = kind == 'agent_started' or kind == 'tool_executing'
      or kind == 'tool_completed' or kind == 'agent_completed' or kind == 'agent_error'
      or kind == 'agent_cancelled'
    if tracked then
      local record = base .. ':run:' .. run
      if redis.call('EXISTS', record) == 1 then
        if kind == 'agent_started' then
          redis.call('HSET', record, 'started', '1')
        elseif kind == 'tool_executing' or kind == 'tool_completed' then
          local data = cjson.decode(body)['data']
          if kind == 'tool_executing' then
            redis.call('HSET', record, 'open:' .. data['tool_call_id'], data['tool_name'])
          else
            redis.call('HDEL', record, 'open:' .. data['tool_call_id'])
          end
        else
          redis.call('HSET', record, 'ended', '1')
        end
      end
    end
  end
end
return appended
"#;

/// Where the stream stands: `{epoch, last seq}` (opening it if needed).
const POSITION: &str = r"
local epoch = open_stream()
return {epoch, redis.call('HGET', KEYS[1], 'seq')}
";

/// The frames after a seq: `ARGV[3]` the client's epoch, `ARGV[4]` its last seq, `ARGV[5]`
/// the replay age in ms. Returns `{status, oldest seq, epoch, last seq, frames...}` where
/// status is `ok`, `epoch_changed`, `seq_ahead` or `too_old`, and oldest seq is the oldest
/// seq the log still holds within the replay age (the next seq when none).
const REPLAY: &str = r"
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
local function refuse(status)
  return {status, oldest_kept(), epoch, last}
end
if epoch ~= ARGV[3] then return refuse('epoch_changed') end
if after > last then return refuse('seq_ahead') end
local reply = {'ok', 0, epoch, last}
if after == last then return reply end
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')
local first = entries[1]
if not first or first[1] ~= (after + 1) .. '-0' or tonumber(first[2][4]) < oldest_age then
  return refuse('too_old')
end
for i, entry in ipairs(entries) do
  reply[4 + i] = entry[2][2]
end
return reply
";

/// The scripts, each with the stream-opening prelude.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) position: Script,
    pub(crate) replay: Script,
}

impl Scripts {
    /// The scripts; `fenced` on a Redis Cluster (see [`OPEN`]).
    pub(crate) fn new(fenced: bool) -> Self {
        let open = format!("local FENCED = {fenced}\n{OPEN}");
        Self {
            publish: Script::new(&format!("{open}{PUBLISH}")),
            position: Script::new(&format!("{open}{POSITION}")),
            replay: Script::new(&format!("{open}{REPLAY}")),
        }
    }
}

/// Splits a live message (`<epoch>\n<frame>`) and reads the frame's seq, which the publish
/// script wrote first: `{"seq":N,...`.
pub(crate) fn parse_live(payload: &[u8]) -> Option<(&str, u64, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, frame) = text.split_once('\n')?;
    Some((epoch, frame_seq(frame)?, frame))
}

/// Reads a frame's seq (see [`parse_live`]).
pub(crate) fn frame_seq(frame: &str) -> Option<u64> {
    let digits = frame.strip_prefix("{\"seq\":")?;
    digits[..digits.find(',')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live message's bytes and what it parses to (epoch and seq), if anything.
    type LiveCase = (&'static [u8], Option<(&'static str, u64)>);

    #[test]
    fn live_messages_parse_or_are_refused() {
        let table: &[LiveCase] = &[
            (b"ep1\n{\"seq\":42,\"type\":\"x\"}", Some(("ep1", 42))),
            (b"ep1\n{\"seq\":1,\"type\":\"x\"}", Some(("ep1", 1))),
            (b"ep1{\"seq\":1,\"type\":\"x\"}", None),
            (b"ep1\n{\"type\":\"x\",\"seq\":1}", None),
            (b"ep1\n{\"seq\":x1,\"type\":\"x\"}", None),
            (b"ep1\n{\"seq\":1}", None),
            (b"\xff\n{\"seq\":1,\"type\":\"x\"}", None),
        ];
        for (payload, expected) in table {
            let got = parse_live(payload).map(|(e, s, _)| (e, s));
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn keys_share_the_users_hash_tag() {
        let user = UserId::parse("alice").expect("valid id");
        let keys = StreamKeys::new("agentws", &user);
        assert_eq!(keys.meta, "agentws:{alice}:meta");
        assert_eq!(keys.log, "agentws:{alice}:log");
        assert_eq!(keys.channel, "agentws:{alice}:live");
    }
}
