//! What Redis spends on the publish path, counted in instructions (`valgrind --tool=callgrind`
//! counts them, so the figure is the same on a busy or an idle box, unlike CPU time):
//!
//! ```text
//! cargo run --release -p redis-broker --example publish_cost [--plain | --fenced] [users] [runs]
//! ```
//!
//! It starts `redis-server` under callgrind on a free port, and two brokers on it, as two
//! nodes, both following every user (as in the bench's cross-node burst, where each user has a
//! connection on each node). One publishes 4,000 runs of 2,000 users (by default) at once, 17
//! events each, in the order a burst interleaves them, each run with the record its claim
//! leaves. Redis runs about 50 times slower under callgrind, so the publisher sends full
//! batches. It counts from the first event to the last frame both nodes received, and prints
//! Redis's instructions per published event. Needs `valgrind` (with `callgrind_control`) and
//! `redis-server` on the PATH.
//!
//! With `--plain` it measures instead what Redis would spend on the same events if nodes gave
//! the seqs themselves (`docs/sequencer.md`, not built): no script, the same bytes sent as
//! plain commands, pipelined 256 events at a time: per event an `XADD` of its entry (`<seq>-0`,
//! `b` and `t`, capped at the log's length, as the publish script writes it) to its user's log;
//! per user of the batch the meta's `seq`; per batch the other node's frames in `PUBLISH`es of
//! at most 7,000 bytes (the records the publish script sends); and, before them, the events of
//! the runs started on the other node (every second run, as the bench starts a user's runs on
//! either node in turn) `PUBLISH`ed once more, as that node forwards them to the one giving the
//! seqs. A subscriber reads each of the two channels. It counts from the first command to the
//! last message read.
//!
//! `--fenced` sends the same, but the sequencer's writes of a batch in one script call that
//! first checks each user's lease (`sq` in the meta) and refuses the whole batch if one is not
//! the caller's: the safe way out of the trap `docs/sequencer.md` describes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_context::{AgentEvent, EventKind, EventSink, RunId, RunScope, ThreadId, UserId};
use futures::StreamExt;
use redis_broker::{RedisBroker, RedisBrokerConfig};
use serde_json::json;
use ws_bridge::{AgentWebSocketBridge, BridgeConfig};

type Error = Box<dyn std::error::Error>;

/// What is measured: today's publish script through two brokers, or what a node giving the
/// seqs would send (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Script,
    Plain,
    Fenced,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1).peekable();
    let mode = match args.next_if(|a| a.starts_with("--")).as_deref() {
        None => Mode::Script,
        Some("--plain") => Mode::Plain,
        Some("--fenced") => Mode::Fenced,
        Some(other) => return Err(format!("unknown option {other}: --plain or --fenced").into()),
    };
    let users: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(4_000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("publish-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let redis = Redis::start(&dir)?;
    let outcome = match mode {
        Mode::Script => measure(&redis, users, runs).await,
        Mode::Plain | Mode::Fenced => measure_sequenced(&redis, users, runs, mode).await,
    };
    let instructions = redis.stop_and_count();
    std::fs::remove_dir_all(&dir)?;
    let events = outcome?;
    let instructions = instructions?;
    let path = match mode {
        Mode::Script => "publish path",
        Mode::Plain => "plain XADD, HSET and PUBLISH, pipelined, no script",
        Mode::Fenced => "one fenced script per batch (HGET, XADD, HSET, PUBLISH)",
    };
    println!(
        "{path} in Redis: {} instructions per published event ({events} events of {runs} runs of {users} users, both nodes following each user; callgrind, {})",
        instructions / events,
        redis_version()
    );
    Ok(())
}

/// Publishes the runs through one broker while both follow their users; returns how many
/// events were published. Callgrind counts from the first event on.
async fn measure(redis: &Redis, users: usize, runs: usize) -> Result<u64, Error> {
    let config = BridgeConfig::default();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let publisher =
        RedisBroker::connect(RedisBrokerConfig::new(&url, config.replay_bounds())).await?;
    let follower =
        RedisBroker::connect(RedisBrokerConfig::new(&url, config.replay_bounds())).await?;
    let emitting = AgentWebSocketBridge::with_broker(config.clone(), Arc::new(publisher));
    let following = AgentWebSocketBridge::with_broker(config, Arc::new(follower));
    let ids: Vec<UserId> = (0..users)
        .map(|u| UserId::parse(&format!("cost-{u:05}")))
        .collect::<Result<_, _>>()?;
    let mut subscriptions = Vec::with_capacity(2 * users);
    for (user, id) in ids.iter().enumerate() {
        for bridge in [&emitting, &following] {
            subscriptions.push((user, bridge.subscribe(id, None).await?));
        }
    }
    let runs: Vec<Run> = (0..runs).map(|r| Run::new(r % users)).collect();
    let mut records = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    for run in &runs {
        let key = format!("agentws:{{{}}}:run:{}", ids[run.user], run.scope.run_id);
        redis::cmd("HSET")
            .arg(&key)
            .arg(&[
                "user",
                ids[run.user].as_str(),
                "node",
                "cost",
                "lease",
                "cost",
            ])
            .query_async::<()>(&mut records)
            .await?;
    }
    let order = burst_order(&runs);
    redis.count_from_here()?;
    let mut emitted = vec![0; runs.len()];
    for &r in &order {
        let run = &runs[r];
        emitting.emit(&ids[run.user], run.event(emitted[r]))?;
        emitted[r] += 1;
    }
    // Each user's frames, all of them (Redis is slow under callgrind: minutes, not seconds).
    let mut frames = vec![0; users];
    for run in &runs {
        frames[run.user] += EVENTS_PER_RUN;
    }
    for (user, subscription) in &subscriptions {
        let user = *user;
        for _ in 0..frames[user] {
            tokio::time::timeout(Duration::from_secs(600), subscription.recv())
                .await
                .map_err(|_| format!("cost-{user:05}'s frames stopped coming"))?
                .map_err(|e| format!("cost-{user:05}'s subscription closed: {e:?}"))?;
        }
    }
    Ok(u64::try_from(order.len())?)
}

/// Events sent at once in `--plain` (the publisher's batch), and the most bytes of records in
/// one message (the publish script's).
const PLAIN_BATCH: usize = 256;
const MESSAGE_BYTES: usize = 7_000;

/// `--plain` and `--fenced`: the same events as [`measure`], in the same order, as a node
/// giving the seqs would send them (see the module documentation); returns how many events were
/// sent.
async fn measure_sequenced(
    redis: &Redis,
    users: usize,
    runs: usize,
    mode: Mode,
) -> Result<u64, Error> {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let client = redis::Client::open(url.as_str())?;
    let mut subscriber = client.get_async_pubsub().await?;
    subscriber.subscribe(&[FRAMES, FORWARDED]).await?;
    let mut messages = subscriber.into_on_message();
    let mut conn = client.get_multiplexed_async_connection().await?;
    let ids: Vec<String> = (0..users).map(|u| format!("cost-{u:05}")).collect();
    for user in &ids {
        redis::cmd("HSET")
            .arg(format!("agentws:{{{user}}}:meta"))
            .arg(&["epoch", EPOCH, "sq", SEQUENCER])
            .query_async::<()>(&mut conn)
            .await?;
    }
    let fenced = redis::Script::new(FENCED);
    let runs: Vec<Run> = (0..runs).map(|r| Run::new(r % users)).collect();
    let order = burst_order(&runs);
    let mut seqs = vec![0_u64; users];
    let mut emitted = vec![0; runs.len()];
    let mut sent_messages = 0_usize;
    redis.count_from_here()?;
    for chunk in order.chunks(PLAIN_BATCH) {
        let mut events = Vec::with_capacity(chunk.len());
        let mut frames = Messages::default();
        let mut forwards = Messages::default();
        for &r in chunk {
            let run = &runs[r];
            let encoded = core_context::EncodedEvent::encode(&run.event(emitted[r]))?;
            emitted[r] += 1;
            seqs[run.user] += 1;
            let seq = seqs[run.user];
            let rest = encoded.json.strip_prefix('{').unwrap_or(&encoded.json);
            let user = &ids[run.user];
            if r % 2 == 1 {
                // `<user>\n<run>\n<event>`: what a forward would carry at least.
                forwards.push(&format!("{user}\n{}\n{rest}", run.scope.run_id));
            }
            frames.push(&format!("{user}\n{EPOCH}\n{seq}\n{rest}"));
            events.push((user.as_str(), seq, rest.to_owned()));
        }
        // The forwards reach Redis (from the nodes that ran those runs) before the frames
        // made of them.
        let mut forwarded = redis::pipe();
        for message in forwards.done() {
            forwarded
                .cmd("PUBLISH")
                .arg(FORWARDED)
                .arg(message)
                .ignore();
            sent_messages += 1;
        }
        let frames = frames.done();
        sent_messages += frames.len();
        forwarded.query_async::<()>(&mut conn).await?;
        if mode == Mode::Fenced {
            fenced_call(&fenced, &events, &frames)
                .invoke_async::<()>(&mut conn)
                .await?;
        } else {
            plain_pipeline(&events, &frames)
                .query_async::<()>(&mut conn)
                .await?;
        }
    }
    for read in 0..sent_messages {
        tokio::time::timeout(Duration::from_secs(600), messages.next())
            .await
            .map_err(|_| format!("the subscriber read {read} of {sent_messages} messages"))?
            .ok_or("the subscriber's connection closed")?;
    }
    Ok(u64::try_from(order.len())?)
}

/// A batch's events as (user, seq, event JSON without its opening brace).
type Sequenced<'a> = [(&'a str, u64, String)];

/// `--plain`: per event an `XADD`, per user the meta's `seq`, then the frames.
fn plain_pipeline(events: &Sequenced<'_>, frames: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (user, seq, rest) in events {
        pipe.cmd("XADD")
            .arg(format!("agentws:{{{user}}}:log"))
            .arg("MAXLEN")
            .arg(LOG_CAP)
            .arg(format!("{seq}-0"))
            .arg("b")
            .arg(rest)
            .arg("t")
            .arg(NOW_MS)
            .ignore();
    }
    for (user, seq) in last_seqs(events) {
        pipe.cmd("HSET")
            .arg(format!("agentws:{{{user}}}:meta"))
            .arg("seq")
            .arg(seq)
            .ignore();
    }
    for message in frames {
        pipe.cmd("PUBLISH").arg(FRAMES).arg(message).ignore();
    }
    pipe
}

/// `--fenced`: the same writes in one call of [`FENCED`].
fn fenced_call<'a>(
    script: &'a redis::Script,
    events: &Sequenced<'_>,
    frames: &[String],
) -> redis::ScriptInvocation<'a> {
    let mut call = script.prepare_invoke();
    call.arg(SEQUENCER)
        .arg(LOG_CAP)
        .arg(NOW_MS)
        .arg(events.len());
    for (user, seq, rest) in events {
        call.key(format!("agentws:{{{user}}}:meta"))
            .key(format!("agentws:{{{user}}}:log"))
            .arg(format!("{seq}-0"))
            .arg(rest);
    }
    for message in frames {
        call.arg(FRAMES).arg(message);
    }
    call
}

/// Each user's last seq in `events`, in the order the users came.
fn last_seqs<'a>(events: &Sequenced<'a>) -> Vec<(&'a str, u64)> {
    let mut last: Vec<(&str, u64)> = Vec::new();
    for (user, seq, _) in events {
        match last.iter_mut().find(|(seen, _)| seen == user) {
            Some(entry) => entry.1 = *seq,
            None => last.push((user, *seq)),
        }
    }
    last
}

/// `--fenced`: `KEYS` a (meta, log) pair per event; `ARGV[1]` the caller's lease (`sq`),
/// `ARGV[2]` the log's cap, `ARGV[3]` the time, `ARGV[4]` the number of events `n`, then per
/// event its entry id and JSON, then (channel, message) pairs. Refuses the whole batch if any
/// user's lease is not the caller's (before writing anything); else appends, writes each
/// user's `seq` once, and publishes.
const FENCED: &str = r"
local n = tonumber(ARGV[4])
local last = {}
local order = {}
for i = 1, n do
  local meta = KEYS[2 * i - 1]
  if not last[meta] then
    if redis.call('HGET', meta, 'sq') ~= ARGV[1] then return redis.error_reply('FENCED') end
    order[#order + 1] = meta
    last[meta] = true
  end
end
for i = 1, n do
  local id = ARGV[3 + 2 * i]
  redis.call('XADD', KEYS[2 * i], 'MAXLEN', ARGV[2], id, 'b', ARGV[4 + 2 * i], 't', ARGV[3])
  last[KEYS[2 * i - 1]] = id
end
for _, meta in ipairs(order) do
  redis.call('HSET', meta, 'seq', string.sub(last[meta], 1, -3))
end
for j = 5 + 2 * n, #ARGV, 2 do redis.call('PUBLISH', ARGV[j], ARGV[j + 1]) end
return n
";

/// The lease `--plain` and `--fenced` write with (the fenced script checks it).
const SEQUENCER: &str = "cost-node:1";

/// `--plain`'s channels: the other node's frames, and the events forwarded to the node giving
/// the seqs.
const FRAMES: &str = "agentws:node:cost:events";
const FORWARDED: &str = "agentws:node:cost:forwarded";
/// `--plain`'s epoch in every frame record.
const EPOCH: &str = "cost-epoch";
/// `--plain`'s and `--fenced`'s log cap (the replay log's default length) and entry time.
const LOG_CAP: usize = 1_000;
const NOW_MS: u64 = 1_765_000_000_000;

/// Records joined by `\n` into messages of at most [`MESSAGE_BYTES`] (one record may be
/// longer), as the publish script sends them.
#[derive(Default)]
struct Messages {
    done: Vec<String>,
    current: String,
}

impl Messages {
    fn push(&mut self, record: &str) {
        if !self.current.is_empty() && self.current.len() + record.len() + 1 > MESSAGE_BYTES {
            self.done.push(std::mem::take(&mut self.current));
        }
        if !self.current.is_empty() {
            self.current.push('\n');
        }
        self.current.push_str(record);
    }

    /// The messages, in order.
    fn done(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// One run's events, emitted in order: the bench's shape (4 thinking steps, 3 tool calls,
/// 5 chunks), 17 events.
struct Run {
    scope: RunScope,
    user: usize,
}

const EVENTS_PER_RUN: usize = 17;

impl Run {
    fn new(user: usize) -> Self {
        let scope = RunScope {
            run_id: RunId::generate(),
            parent_run_id: None,
            thread_id: ThreadId::generate(),
            agent_name: Arc::from("synthetic"),
        };
        Self { scope, user }
    }

    /// Its `i`-th event (from 0).
    fn event(&self, i: usize) -> AgentEvent {
        let kind = match i {
            0 => EventKind::AgentStarted {
                message: "load".into(),
            },
            1..=4 => EventKind::AgentThinking {
                reasoning: format!("synthetic thinking step {i} of 4"),
                step: u32::try_from(i).unwrap_or(0),
            },
            5..=10 => {
                let call = format!("call_{}", (i - 5) / 2 + 1);
                if i % 2 == 1 {
                    EventKind::ToolExecuting {
                        tool_call_id: call,
                        tool_name: "calculator".into(),
                        arguments: json!({"expression": "12*7"}),
                    }
                } else {
                    EventKind::ToolCompleted {
                        tool_call_id: call,
                        tool_name: "calculator".into(),
                        result: json!({"value": 84}),
                        is_error: false,
                        duration_ms: 1,
                    }
                }
            }
            11..=15 => EventKind::AgentResponseChunk {
                delta: format!("chunk {} of the synthetic answer ", i - 10),
            },
            _ => EventKind::AgentCompleted {
                result: json!({"text": "done"}),
                duration_ms: 50,
                usage: None,
            },
        };
        self.scope.event(kind)
    }
}

/// The runs' events interleaved as a burst does: at each step a run picked at random (a
/// fixed generator, so every measurement sends the same order) emits its next event.
fn burst_order(runs: &[Run]) -> Vec<usize> {
    let mut left: Vec<(usize, usize)> = (0..runs.len()).map(|r| (r, EVENTS_PER_RUN)).collect();
    let mut order = Vec::with_capacity(runs.len() * EVENTS_PER_RUN);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while !left.is_empty() {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pick = usize::try_from(state % left.len() as u64).unwrap_or(0);
        let (run, remaining) = &mut left[pick];
        order.push(*run);
        *remaining -= 1;
        if *remaining == 0 {
            left.swap_remove(pick);
        }
    }
    order
}

/// `redis-server` under callgrind, counting only between [`Redis::count_from_here`] and
/// [`Redis::stop_and_count`].
struct Redis {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Result<Self, Error> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let out = dir.join("callgrind.out");
        let child = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .args([
                "redis-server",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start valgrind (is it installed?): {e}"))?;
        let redis = Self { child, port, out };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server under callgrind did not open its port in 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(redis)
    }

    /// Sets callgrind's counters to zero.
    fn count_from_here(&self) -> Result<(), Error> {
        control(&["--zero", &self.child.id().to_string()])
    }

    /// Dumps the counters since [`Redis::count_from_here`], stops Redis and returns them.
    fn stop_and_count(mut self) -> Result<u64, Error> {
        let dumped = control(&["--dump", &self.child.id().to_string()]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        dumped?;
        let dump = PathBuf::from(format!("{}.1", self.out.display()));
        let text = std::fs::read_to_string(&dump)
            .map_err(|e| format!("no callgrind dump at {}: {e}", dump.display()))?;
        text.lines()
            .find_map(|line| line.strip_prefix("summary: "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no `summary:` line in {}", dump.display()).into())
    }
}

fn control(args: &[&str]) -> Result<(), Error> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?} failed: {status}").into())
    }
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(str::to_owned)
        })
        .map_or_else(
            || "redis-server".to_owned(),
            |v| format!("redis-server {}", &v[2..]),
        )
}
