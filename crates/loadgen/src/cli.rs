//! The command line: `loadgen burst|steady|idle` load a server, `loadgen baseline-server`
//! serves the bare fan-out baseline, `loadgen floor-server` the floor.
//!
//! clap checks types and ranges (so a bad number names its flag); [`LoadArgs::validate`]
//! checks what spans flags (users ≤ connections, a shape the synthetic agent accepts, a
//! start rate when the shape has no pauses) and turns the flags into a [`LoadPlan`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::load::plan::Layout;
use crate::shape::Shape;

/// Load generator for agent-server: opens many authenticated WebSockets, starts synthetic
/// runs, measures delivery latency and server cost, and verifies every frame.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start --runs runs at once, spread over the users.
    Burst {
        /// The connections and measurement flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Runs to start at once (run k goes to user k mod --users).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        runs: u64,
    },
    /// Start runs at a steady rate for --duration, keeping at most --in-flight running.
    Steady {
        /// The connections and measurement flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Runs in flight to keep (starts wait while this many are running).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        in_flight: u64,
        /// Runs started per second; default: --in-flight divided by the shape's run time,
        /// which keeps about --in-flight running.
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds to keep starting runs.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        duration: u64,
    },
    /// Open the connections, measure the server's memory at rest, hold them, close them.
    Idle {
        /// The connections and measurement flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Seconds to hold the connections open after measuring.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        hold: u64,
    },
    /// Serve the bare baseline: the same WebSocket stack and frames as agent-server, with no
    /// engine and no bridge, to compare against.
    BaselineServer(crate::baseline::BaselineArgs),
    /// Serve the floor: the same frames written straight to the sockets, with no framework,
    /// the least a server on this box can do per event.
    FloorServer(crate::floor::FloorArgs),
}

/// Flags every load scenario shares.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server's WebSocket URL; several, comma-separated, for the nodes of a cluster (a
    /// user's k-th connection goes to the k-th node, modulo their count).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's HS256 secret, to sign each user's token.
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// WebSocket connections to open (N).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Users the connections belong to (U ≤ N; connection c is user c mod U); default N.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub users: Option<u64>,
    /// The synthetic agent's shape, as `start_agent`'s input.
    #[arg(
        long,
        default_value = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":50}"#
    )]
    pub shape: String,
    /// The server's process id, to read its memory and CPU time from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connections being opened at once. Past the server's listen backlog (128 for a tokio
    /// listener bound the usual way) the kernel drops SYNs and connects wait for a retransmit
    /// (1 s and more); the report counts those drops.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connect_concurrency: u64,
    /// Loopback source addresses (127.0.0.1 to 127.0.0.K) to spread client sockets over.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,
    /// Threads loadgen runs on (1: one core for the client, the rest for the server).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Reconnect a connection the server dropped (a node killed, restarted or drained) to the
    /// next URL of --url and resume its stream after the last event it received; a failed
    /// resume is then a violation. Runs ended with `agent_error` `node_lost` count apart
    /// (their lifecycle is still checked), and so do requests lost unanswered with their
    /// connection and requests the server refused with an error frame (an explicit answer,
    /// as during a Redis outage). Without it, a dropped connection or a refusal is a violation.
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: a resume the server answers `failed` (`epoch_changed`, `too_old`:
    /// events were not replayed, and the client was told) is accepted instead of being a
    /// violation, as after Redis restarted without its data or a Redis Cluster master failed
    /// over. The stream goes on from its new position; the runs the missed events may have
    /// belonged to are written off on that connection (counted, not checked), and every run
    /// begun after is checked whole.
    #[arg(long, requires = "reconnect")]
    pub tolerate_failed_resumes: bool,
    /// Seconds a run may take from its request to its terminal event before the load fails.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub run_timeout: u64,
    /// Milliseconds to wait after connecting before reading the server's memory at rest.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
    /// The users' id prefix (ids are `<prefix>-00042`).
    #[arg(long, default_value = "lg")]
    pub user_prefix: String,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is drawn on stderr only when that is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// What a scenario does once the connections are open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Start `runs` runs at once.
    Burst {
        /// Runs.
        runs: u64,
    },
    /// Start `rate` runs per second for `duration`, at most `in_flight` at a time.
    Steady {
        /// Runs in flight at most.
        in_flight: u64,
        /// Starts per second.
        rate: f64,
        /// How long to keep starting.
        duration: Duration,
    },
    /// Start nothing; hold the connections for `hold`.
    Idle {
        /// How long.
        hold: Duration,
    },
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Burst { .. } => "burst",
            Scenario::Steady { .. } => "steady",
            Scenario::Idle { .. } => "idle",
        }
    }
}

/// A validated load: flags turned into what the run needs.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The flags as given.
    pub args: LoadArgs,
    /// Users and connections.
    pub layout: Layout,
    /// The runs' shape.
    pub shape: Shape,
    /// What to do once connected.
    pub scenario: Scenario,
}

impl Command {
    /// The load plan of a load subcommand (`None` for `baseline-server`).
    pub fn plan(&self) -> Option<Result<LoadPlan, String>> {
        let (load, scenario) = match self {
            Command::Burst { load, runs } => (load, Ok(Scenario::Burst { runs: *runs })),
            Command::Steady {
                load,
                in_flight,
                rate,
                duration,
            } => (load, steady(load, *in_flight, *rate, *duration)),
            Command::Idle { load, hold } => (
                load,
                Ok(Scenario::Idle {
                    hold: Duration::from_secs(*hold),
                }),
            ),
            Command::BaselineServer(_) | Command::FloorServer(_) => return None,
        };
        Some(scenario.and_then(|scenario| load.validate(scenario)))
    }
}

fn steady(
    load: &LoadArgs,
    in_flight: u64,
    rate: Option<f64>,
    duration: u64,
) -> Result<Scenario, String> {
    let run_time = Shape::parse(&load.shape)?.min_run_time();
    let rate = match rate {
        Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e6 => rate,
        Some(rate) => {
            return Err(format!(
                "--rate {rate}: give runs per second, above 0 and at most 1000000"
            ));
        }
        None if run_time.is_zero() => {
            return Err(
                "--rate is needed: the shape has no pauses, so its run time gives no rate".into(),
            );
        }
        None => in_flight as f64 / run_time.as_secs_f64(),
    };
    Ok(Scenario::Steady {
        in_flight,
        rate,
        duration: Duration::from_secs(duration),
    })
}

impl LoadArgs {
    /// Checks what spans flags and builds the plan.
    pub fn validate(&self, scenario: Scenario) -> Result<LoadPlan, String> {
        let shape = Shape::parse(&self.shape).map_err(|e| format!("--shape: {e}"))?;
        let connections = self.connections;
        let users = self.users.unwrap_or(connections);
        if users > connections {
            return Err(format!(
                "--users {users} is more than --connections {connections}: every user needs a connection"
            ));
        }
        let probe = Layout::user_id(&self.user_prefix, 0);
        core_context::UserId::parse(&probe).map_err(|e| {
            format!(
                "--user-prefix {:?} makes invalid user ids: {e}",
                self.user_prefix
            )
        })?;
        if self.jwt_secret.is_empty() {
            return Err("--jwt-secret is empty; pass the server's secret".into());
        }
        let as_usize = |v: u64| usize::try_from(v).map_err(|_| format!("{v} is too large"));
        Ok(LoadPlan {
            args: self.clone(),
            layout: Layout {
                connections: as_usize(connections)?,
                users: as_usize(users)?,
            },
            shape,
            scenario,
        })
    }
}

#[cfg(test)]
mod tests;
