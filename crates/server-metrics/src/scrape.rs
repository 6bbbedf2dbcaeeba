//! What a scrape reads at the time it is made: states (gauges) and the counts other parts
//! keep themselves (the history writer, the Redis broker, the `llm` agent, the tool
//! dispatcher's refusals and cuts), put in a registry made for this scrape and written after
//! the live one.
//!
//! It reads a [`Snapshot`] that the state's owner fills (the server's `AppState::snapshot`), not
//! the state itself, so this crate depends on the parts it reads and not on the server.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a scrape reads from the rest of the server: the states of this moment, and the parts
/// that keep their own counts. The server's state fills one per scrape.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// WebSocket connections open.
    pub connections_open: usize,
    /// The async runtime's worker threads (`--worker-threads`).
    pub runtime_workers: usize,
    /// The per-user limit of concurrent runs.
    pub run_limit_per_user: usize,
    /// Users with at least one run going on this node.
    pub users_with_runs: usize,
    /// Users whose runs on this node reach the per-user limit.
    pub users_at_run_limit: usize,
    /// Users whose stream this node holds.
    pub streams: usize,
    /// What the replay logs hold, all users together, when they are in this node's memory.
    pub replay: Option<ws_bridge::broker::ReplayMemory>,
    /// Whether the broker takes and delivers events.
    pub broker_up: bool,
    /// Whether the server is shutting down.
    pub draining: bool,
    /// The history writer's counts, with `--store`.
    pub history: Option<&'a history::WriterStats>,
    /// The Redis broker's counts, with a Redis broker.
    pub redis: Option<&'a redis_broker::BrokerStats>,
    /// The `llm` agent's model counts, when it is registered.
    pub model: Option<&'a llm_agent::ModelStats>,
    /// The MCP servers, with `--mcp-server`.
    pub mcp: Option<&'a mcp_tools::McpTools>,
    /// What removes the server's secrets (it counts what it removed).
    pub scrubber: &'a secrets::Scrubber,
    /// The registry (its tools, and what the dispatcher refused or cut).
    pub registry: &'a agent_registry::AgentRegistry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Why {
    why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Server {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tool {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter: Counter = Counter::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn flag(on: bool) -> i64 {
    i64::from(on)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `live` (the counts kept as things happen) followed by what `state` read now and the
/// runs going on now (`runs_active`, which the live counts keep).
pub(super) fn render(live: &Registry, runs_active: usize, state: &Snapshot<'_>) -> String {
    let mut now = Registry::with_prefix("agent_server");
    states(&mut now, runs_active, state);
    history(&mut now, state);
    broker(&mut now, state);
    model(&mut now, state);
    mcp(&mut now, state);
    secrets(&mut now, state);
    tools(&mut now, state);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, live)
        .and_then(|()| encode_registry(&mut out, &now))
        .and_then(|()| encode_eof(&mut out));
    out
}

fn states(r: &mut Registry, runs_active: usize, state: &Snapshot<'_>) {
    gauge(
        r,
        "connections_open",
        "WebSocket connections open now",
        count(state.connections_open),
    );
    gauge(
        r,
        "runtime_worker_threads",
        "Threads of the async runtime running the server's work (--worker-threads)",
        count(state.runtime_workers),
    );
    gauge(
        r,
        "runs_active",
        "Runs between their start and their end now (sub-runs included)",
        count(runs_active),
    );
    gauge(
        r,
        "users_with_runs",
        "Users with at least one run going on this node",
        count(state.users_with_runs),
    );
    gauge(
        r,
        "users_at_run_limit",
        "Users whose runs on this node reach the per-user limit (more starts wait or are refused)",
        count(state.users_at_run_limit),
    );
    gauge(
        r,
        "run_limit_per_user",
        "The per-user limit of concurrent runs",
        count(state.run_limit_per_user),
    );
    gauge(
        r,
        "streams",
        "Users whose stream this node holds",
        count(state.streams),
    );
    if let Some(replay) = state.replay {
        gauge(
            r,
            "replay_log_frames",
            "Frames the replay logs hold, all users together",
            i64::try_from(replay.frames).unwrap_or(i64::MAX),
        );
        gauge(
            r,
            "replay_log_bytes",
            "Bytes the replay logs hold, all users together (frames' text and what keeping each costs), within --replay-max-bytes",
            i64::try_from(replay.bytes).unwrap_or(i64::MAX),
        );
        counter(
            r,
            "replay_log_evicted_frames",
            "Frames dropped from the replay logs, oldest first across users, to keep them within --replay-max-bytes (a resume past one gets too_old)",
            replay.evicted,
        );
    }
    gauge(
        r,
        "broker_up",
        "Whether the broker takes and delivers events (1) or not (0)",
        flag(state.broker_up),
    );
    gauge(
        r,
        "draining",
        "Whether the server is shutting down (1)",
        flag(state.draining),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrubSite {
    site: &'static str,
}

/// The secrets removed from outgoing text, by where the text was going.
fn secrets(r: &mut Registry, state: &Snapshot<'_>) {
    let scrubbed = Family::<ScrubSite, Counter>::default();
    for site in secrets::Site::ALL {
        scrubbed
            .get_or_create(&ScrubSite {
                site: site.as_str(),
            })
            .inc_by(state.scrubber.scrubbed(site));
    }
    r.register(
        "secrets_scrubbed",
        "Secrets of the server removed from outgoing text (events and history, model requests, logs, HTTP bodies, socket frames, exported spans), by where it was going",
        scrubbed,
    );
}

/// Each MCP server's state (with `--mcp-server`).
fn mcp(r: &mut Registry, state: &Snapshot<'_>) {
    let Some(mcp) = state.mcp else {
        return;
    };
    let up = Family::<Server, Gauge>::default();
    let tools = Family::<Server, Gauge>::default();
    let failures = Family::<Server, Counter>::default();
    for server in mcp.servers() {
        let status = server.status();
        let label = Server {
            server: server.name().to_owned(),
        };
        up.get_or_create(&label).set(flag(status.up));
        tools.get_or_create(&label).set(count(status.tools));
        failures.get_or_create(&label).inc_by(status.failures);
    }
    r.register(
        "mcp_server_up",
        "Whether the MCP server has a session (1) or is being started again (0)",
        up,
    );
    r.register(
        "mcp_server_tools",
        "Tools the MCP server listed last",
        tools,
    );
    r.register(
        "mcp_server_failures",
        "Failed starts and lost sessions of the MCP server (each is followed by a restart)",
        failures,
    );
}

/// What the tool dispatcher refused or cut, by tool (the registry counts both: neither is
/// visible in an event without matching on its text). Every tool listed now has a sample,
/// zero until something is counted, so a rate is defined from the first scrape.
fn tools(r: &mut Registry, state: &Snapshot<'_>) {
    let invalid = Family::<Tool, Counter>::default();
    let truncated = Family::<Tool, Counter>::default();
    let registry = state.registry;
    let counts = registry.tool_counts();
    let names: std::collections::BTreeSet<String> = registry
        .tool_names()
        .into_iter()
        .chain(counts.keys().cloned())
        .collect();
    for tool in names {
        let counted = counts.get(&tool).copied().unwrap_or_default();
        let label = Tool { tool };
        invalid
            .get_or_create(&label)
            .inc_by(counted.invalid_arguments);
        truncated
            .get_or_create(&label)
            .inc_by(counted.truncated_results);
    }
    r.register(
        "tool_arguments_invalid",
        "Tool calls refused before the call: their arguments did not fit the tool's JSON Schema",
        invalid,
    );
    r.register(
        "tool_results_truncated",
        "Tool results (or failure messages) cut to the dispatcher's size bound",
        truncated,
    );
}

fn history(r: &mut Registry, state: &Snapshot<'_>) {
    let Some(stats) = state.history else {
        return;
    };
    gauge(
        r,
        "store_up",
        "Whether the history store took the last batch (1) or not (0)",
        flag(stats.last_ok.load(Relaxed)),
    );
    counter(
        r,
        "history_writes",
        "Writes (run starts, events, endings) stored",
        stats.written.load(Relaxed),
    );
    let dropped = Family::<Why, Counter>::default();
    dropped
        .get_or_create(&Why { why: "queue_full" })
        .inc_by(stats.dropped_full.load(Relaxed));
    dropped
        .get_or_create(&Why {
            why: "store_failed",
        })
        .inc_by(stats.dropped_failed.load(Relaxed));
    r.register(
        "history_dropped",
        "Writes dropped: the queue was full, or the store failed the batch repeatedly",
        dropped,
    );
    counter(
        r,
        "history_failed_batches",
        "Batch attempts the store failed (each retry counts)",
        stats.failed_attempts.load(Relaxed),
    );
}

fn broker(r: &mut Registry, state: &Snapshot<'_>) {
    let Some(stats) = state.redis else {
        return;
    };
    let table = [
        (
            "redis_events_published",
            "Events Redis accepted from this node",
            &stats.events_published,
        ),
        (
            "redis_publish_batches",
            "Batches of events Redis accepted from this node (one script call each; on a Redis Cluster, one per slot sent together count as one)",
            &stats.publish_batches,
        ),
        (
            "redis_publish_retries",
            "Batches sent to Redis again after a connection error",
            &stats.publish_retries,
        ),
        (
            "redis_events_rejected",
            "Events refused because Redis was unreachable long enough to fill the publish queue",
            &stats.events_rejected,
        ),
        (
            "redis_events_lost",
            "Events Redis refused for good",
            &stats.events_lost,
        ),
        (
            "redis_subscriber_disconnects",
            "Times the live (pub/sub) connection to Redis was lost",
            &stats.subscriber_disconnects,
        ),
        (
            "redis_frames_recovered",
            "Frames fetched from the log because the live channel missed them",
            &stats.frames_recovered,
        ),
        (
            "redis_stream_resets",
            "Times a user's connections here were closed because Redis lost their stream (4009)",
            &stats.stream_resets,
        ),
        (
            "redis_events_forwarded",
            "Sequencer mode: events sent to the node holding their user's lease (resends count)",
            &stats.events_forwarded,
        ),
        (
            "redis_leases_taken",
            "Sequencer mode: users' leases this node took",
            &stats.leases_taken,
        ),
    ];
    for (name, help, value) in table {
        counter(r, name, help, value.load(Relaxed));
    }
    gauge(
        r,
        "redis_sequencer_mode",
        "1 when this node runs the Redis broker's sequencer mode, 0 for the publish script's (--broker-mode)",
        i64::from(stats.sequencer_mode.load(Relaxed)),
    );
    seconds(
        r,
        "redis_publish_batch_seconds",
        "Time from sending each accepted batch to Redis's answer, summed",
        stats.publish_batch_micros.load(Relaxed),
    );
    seconds(
        r,
        "redis_publish_queue_seconds",
        "Time each accepted event waited in the publish queue before its batch was sent, summed over the events",
        stats.publish_queue_micros.load(Relaxed),
    );
}

/// A counter of seconds, from microseconds.
fn seconds(registry: &mut Registry, name: &str, help: &str, micros: u64) {
    let counter: Counter<f64, AtomicU64> = Counter::default();
    counter.inc_by(micros as f64 / 1_000_000.0);
    registry.register(name, help, counter);
}

fn model(r: &mut Registry, state: &Snapshot<'_>) {
    let Some(stats) = state.model else {
        return;
    };
    let stats = stats.snapshot();
    counter(
        r,
        "model_requests",
        "HTTP requests the llm agent sent to its model (retries count)",
        stats.requests,
    );
    let calls = Family::<Outcome, Counter>::default();
    calls
        .get_or_create(&Outcome {
            outcome: "answered",
        })
        .inc_by(stats.answered);
    for (code, n) in &stats.failures {
        calls.get_or_create(&Outcome { outcome: code }).inc_by(*n);
    }
    r.register(
        "model_calls",
        "Model calls of the llm agent, by outcome (`answered`, or the failure code after retries)",
        calls,
    );
    let tokens = Family::<Kind, Counter>::default();
    tokens
        .get_or_create(&Kind { kind: "prompt" })
        .inc_by(stats.prompt_tokens);
    tokens
        .get_or_create(&Kind { kind: "completion" })
        .inc_by(stats.completion_tokens);
    r.register(
        "model_tokens",
        "Tokens the model reported for the llm agent's calls, by kind",
        tokens,
    );
}
