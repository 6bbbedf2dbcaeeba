//! Measurement: latency histograms ([`latency`]) and what the kernel says about the server,
//! loadgen itself and the machine ([`process`]).

pub mod latency;
pub mod process;

pub use latency::{Latencies, LatencySummary, LatencyWindow};
pub use process::{FileLimit, MachineTicks, ProcessProbe};
