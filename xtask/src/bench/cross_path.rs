//! Where a multi-node scenario's events spend their time and the box's CPU, from the nodes'
//! own metrics (`/metrics`) and `/proc`, added to each run's report as `path`:
//! - `cpu_us_per_event`: the CPU of every server-side process (the nodes, and Redis on two
//!   nodes) over their lives, connects included, per event delivered;
//! - `queue_ms`: an event's wait in its node's publish queue before its batch was sent
//!   (the Redis broker's `redis_publish_queue_seconds_total` per published event);
//! - `round_trip_ms`: a publish call's (or sequencer transaction's) round trip to Redis;
//! - `events_per_batch`: events per such call;
//! - `to_write_ms`: a frame's wait from its arrival at the node that writes it (from Redis
//!   across nodes; from the run's emit on one node) to its socket write
//!   (`emit_to_send_seconds`).
//!
//! The publish figures are absent (`null`) on one node, which publishes to no Redis.

use std::path::Path;

use serde_json::{Value, json};

use super::outcome::Run;
use super::probe::{TICKS_PER_SECOND, metric_sum, metrics, ticks};

/// After a multi-node scenario's load on one node (an `AfterLoad`): adds the `path` figures
/// of node `pid` at `addr`.
pub(crate) fn one_node(pid: u32, addr: &str, _log: &Path, run: &mut Run) {
    let metrics: Vec<String> = metrics(addr).into_iter().collect();
    add(run, &metrics, ticks(pid).unwrap_or(0));
}

/// Adds the `path` figures to `run`'s report: `metrics` each node's `/metrics` text after
/// the load, `ticks` the CPU ticks of the server-side processes.
pub(crate) fn add(run: &mut Run, metrics: &[String], ticks: u64) {
    let Some(report) = run.report.as_mut().and_then(Value::as_object_mut) else {
        return;
    };
    let events = report
        .get("load")
        .and_then(|load| load.get("events"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    report.insert("path".into(), figures(metrics, ticks, events));
}

/// The figures of [`add`] for `events` delivered.
fn figures(metrics: &[String], ticks: u64, events: f64) -> Value {
    let sum = |name: &str| {
        metrics
            .iter()
            .map(|text| metric_sum(text, name))
            .sum::<f64>()
    };
    let per = |total: f64, count: f64| (count > 0.0).then(|| total / count);
    let published = sum("agent_server_redis_events_published_total");
    let batches = sum("agent_server_redis_publish_batches_total");
    let ms = 1e3;
    json!({
        "cpu_us_per_event": per(ticks as f64 / TICKS_PER_SECOND * 1e6, events),
        "queue_ms": per(sum("agent_server_redis_publish_queue_seconds_total") * ms, published),
        "round_trip_ms": per(sum("agent_server_redis_publish_batch_seconds_total") * ms, batches),
        "events_per_batch": per(published, batches),
        "to_write_ms": per(
            sum("agent_server_emit_to_send_seconds_sum") * ms,
            sum("agent_server_emit_to_send_seconds_count"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        published: u64,
        batches: u64,
        queue_s: f64,
        batch_s: f64,
        to_write: (f64, u64),
    ) -> String {
        format!(
            "# TYPE agent_server_redis_events_published_total counter\n\
             agent_server_redis_events_published_total {published}\n\
             agent_server_redis_publish_batches_total {batches}\n\
             agent_server_redis_publish_queue_seconds_total {queue_s}\n\
             agent_server_redis_publish_batch_seconds_total {batch_s}\n\
             agent_server_emit_to_send_seconds_bucket{{le=\"0.001\"}} {}\n\
             agent_server_emit_to_send_seconds_sum {}\n\
             agent_server_emit_to_send_seconds_count {}\n",
            to_write.1, to_write.0, to_write.1
        )
    }

    #[test]
    fn two_nodes_figures_are_their_sums_per_event_and_per_call() {
        let metrics = [
            node(1_000, 50, 2.0, 0.05, (1.5, 3_000)),
            node(3_000, 50, 2.0, 0.15, (0.5, 1_000)),
        ];
        // 400 ticks (4 s of CPU) over 8,000 events delivered.
        let path = figures(&metrics, 400, 8_000.0);
        let figure = |key: &str| path[key].as_f64().expect(key);
        assert!((figure("cpu_us_per_event") - 500.0).abs() < 1e-9);
        // 4 s of waits over 4,000 published events; 0.2 s over 100 calls.
        assert!((figure("queue_ms") - 1.0).abs() < 1e-9);
        assert!((figure("round_trip_ms") - 2.0).abs() < 1e-9);
        assert!((figure("events_per_batch") - 40.0).abs() < 1e-9);
        // 2 s over 4,000 frames: the buckets are not counted as the sum.
        assert!((figure("to_write_ms") - 0.5).abs() < 1e-9);
    }

    #[test]
    fn one_node_has_no_publish_figures() {
        let metrics = ["agent_server_emit_to_send_seconds_sum 0.3\n\
                        agent_server_emit_to_send_seconds_count 1000\n"
            .to_owned()];
        let path = figures(&metrics, 0, 0.0);
        assert!(path["queue_ms"].is_null());
        assert!(path["round_trip_ms"].is_null());
        assert!(path["events_per_batch"].is_null());
        assert!(path["cpu_us_per_event"].is_null(), "no event, no figure");
        assert!((path["to_write_ms"].as_f64().expect("a figure") - 0.3).abs() < 1e-9);
    }

    #[test]
    fn a_report_gets_the_figures_under_path() {
        let mut run = Run {
            report: Some(json!({"load": {"events": 100.0}})),
            ..Run::default()
        };
        add(&mut run, &[], 10);
        let report = run.report.expect("a report");
        assert!(
            (report["path"]["cpu_us_per_event"]
                .as_f64()
                .expect("a figure")
                - 1_000.0)
                .abs()
                < 1e-9
        );
        let mut failed = Run::default();
        add(&mut failed, &[], 10);
        assert!(failed.report.is_none(), "no report, nothing added");
    }
}
