//! What the connection tasks, the scenario driver, the watchdog and the progress bar share:
//! counters, the latency histogram, each user's accepted runs, the requests in flight, and
//! the violations found so far.
//!
//! loadgen usually runs on one thread, so the locks here are uncontended; they are
//! `parking_lot` mutexes held for a few instructions, never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use core_context::{RunId, UserId};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::measure::Latencies;
use crate::verify::{Place, Violation};

/// The most violations kept for the report; the count goes on past it.
const MAX_KEPT_VIOLATIONS: usize = 20;

/// One user of the load: its id, how many connections it has, and the runs it started.
#[derive(Debug)]
pub struct UserRuns {
    /// The user.
    pub id: UserId,
    /// Its connections.
    pub connections: u64,
    /// Runs accepted for it (on any of its connections).
    pub runs: Mutex<HashSet<RunId>>,
    /// Its requests lost unanswered with a dropped connection, or refused as `unavailable`
    /// (`--reconnect`): each may have started a run whose acceptance never arrived.
    pub lost_requests: AtomicU64,
}

/// What faults did to the load (`--reconnect`).
#[derive(Debug, Default)]
pub struct Faults {
    /// Connections that dropped and were reopened with a resume.
    pub reconnects: AtomicU64,
    /// Events replayed by those resumes.
    pub replayed: AtomicU64,
    /// Requests lost unanswered with their connection.
    pub lost_requests: AtomicU64,
    /// Requests the server refused with an error frame (during an outage, say: the client
    /// was told and would send them again).
    pub refused_requests: AtomicU64,
    /// Runs started here that ended with `agent_error` `node_lost`.
    pub node_lost_runs: AtomicU64,
    /// (run, connection) deliveries of `node_lost` runs whose acceptance was lost.
    pub orphan_deliveries: AtomicU64,
    /// Resumes the server answered `failed`, accepted (`--tolerate-failed-resumes`).
    pub failed_resumes: AtomicU64,
    /// (run, connection) deliveries written off after those: counted, not checked.
    pub runs_written_off: AtomicU64,
    /// Milliseconds from each drop to its resumed connection.
    pub recovery_ms: Mutex<Vec<f64>>,
}

/// A `start_agent` sent and not yet ended (its terminal event not seen by the connection that
/// sent it).
#[derive(Debug, Clone)]
pub struct Pending {
    /// When it was sent.
    pub sent: Instant,
    /// Where it was sent from.
    pub place: Place,
}

/// The shared state of one load run.
#[derive(Debug)]
pub struct Shared {
    /// When the load run began; event times are kept as offsets from it.
    pub base: Instant,
    /// Events a run of the shape delivers.
    pub events_per_run: u64,
    /// The users, by index.
    pub users: Vec<UserRuns>,
    /// Emit-to-client latencies of every event.
    pub latencies: Mutex<Latencies>,
    /// Events received, on all connections.
    pub events: AtomicU64,
    /// Starts the scenario handed to connections.
    pub issued: AtomicU64,
    /// `start_agent` frames sent.
    pub requested: AtomicU64,
    /// `run_accepted` frames received.
    pub accepted: AtomicU64,
    /// Runs whose terminal event reached the connection that started them.
    pub finished: AtomicU64,
    /// (run, connection) pairs that must see a whole run: each accepted run × its user's
    /// connections.
    pub deliveries_expected: AtomicU64,
    /// (run, connection) pairs that saw a whole, verified run.
    pub deliveries_done: AtomicU64,
    /// Microseconds from `base` to the last event received.
    last_event_micros: AtomicU64,
    /// Microseconds from `base` to the last `start_agent` sent.
    last_request_micros: AtomicU64,
    /// Requests in flight, by request id.
    pub pending: Mutex<HashMap<String, Pending>>,
    /// What faults did.
    pub faults: Faults,
    violations: Mutex<(Vec<Violation>, u64)>,
    failed: AtomicBool,
    /// Woken when a run finishes or a violation is found.
    pub progress: Notify,
}

impl Shared {
    /// The state of a load over `users` with runs of `events_per_run` events.
    pub fn new(users: Vec<UserRuns>, events_per_run: u64) -> Self {
        Self {
            base: Instant::now(),
            events_per_run,
            users,
            latencies: Mutex::new(Latencies::default()),
            events: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            requested: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            deliveries_expected: AtomicU64::new(0),
            deliveries_done: AtomicU64::new(0),
            last_event_micros: AtomicU64::new(0),
            last_request_micros: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            violations: Mutex::new((Vec::new(), 0)),
            failed: AtomicBool::new(false),
            progress: Notify::new(),
        }
    }

    /// Records a violation; the load stops at the first one.
    pub fn fail(&self, violation: Violation) {
        let mut violations = self.violations.lock();
        if violations.0.len() < MAX_KEPT_VIOLATIONS {
            violations.0.push(violation);
        }
        violations.1 += 1;
        self.failed.store(true, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// Whether a violation was found.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The violations kept, and how many there were in all.
    pub fn violations(&self) -> (Vec<Violation>, u64) {
        self.violations.lock().clone()
    }

    fn micros_since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    /// Notes that an event arrived at `at`.
    pub fn event_received(&self, at: Instant) {
        let micros = self.micros_since_base(at);
        self.last_event_micros.fetch_max(micros, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// When the last event arrived (`base` if none has).
    pub fn last_event(&self) -> Instant {
        self.base + Duration::from_micros(self.last_event_micros.load(Ordering::Relaxed))
    }

    /// Notes that a `start_agent` was sent at `at`.
    pub fn request_sent(&self, at: Instant) {
        let micros = self.micros_since_base(at);
        self.last_request_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.requested.fetch_add(1, Ordering::Relaxed);
    }

    /// When the last `start_agent` was sent (`base` if none was).
    pub fn last_request(&self) -> Instant {
        self.base + Duration::from_micros(self.last_request_micros.load(Ordering::Relaxed))
    }

    /// Runs requested and not yet finished (nor lost with their request).
    pub fn in_flight(&self) -> u64 {
        self.requested
            .load(Ordering::Relaxed)
            .saturating_sub(self.finished.load(Ordering::Relaxed) + self.unanswered())
    }

    /// Notes that request `request_id` of user `user` was lost unanswered with its
    /// connection.
    pub fn request_lost(&self, user: usize, request_id: &str) {
        self.pending.lock().remove(request_id);
        self.users[user]
            .lost_requests
            .fetch_add(1, Ordering::Relaxed);
        self.faults.lost_requests.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// Notes that request `request_id` of user `user` was refused by the server (no run
    /// started, or, `maybe_started`, one whose claim's answer the server lost may still be
    /// ended `node_lost` by a reaper: counted with the user's lost requests, which excuse
    /// such runs, see [`StreamVerifier::finish`](crate::verify::StreamVerifier::finish)).
    pub fn request_refused(&self, user: usize, request_id: &str, maybe_started: bool) {
        self.pending.lock().remove(request_id);
        if maybe_started {
            self.users[user]
                .lost_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        self.faults.refused_requests.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// Requests that ended without a run: lost with their connection, or refused.
    fn unanswered(&self) -> u64 {
        self.faults.lost_requests.load(Ordering::Relaxed)
            + self.faults.refused_requests.load(Ordering::Relaxed)
    }

    /// Whether every run the scenario issued was requested, accepted, finished, and reached
    /// every connection of its user.
    pub fn all_delivered(&self) -> bool {
        let requested = self.requested.load(Ordering::Relaxed);
        let lost = self.unanswered();
        self.issued.load(Ordering::Relaxed) == requested
            && self.accepted.load(Ordering::Relaxed) + lost == requested
            && self.finished.load(Ordering::Relaxed) + lost == requested
            && self.deliveries_done.load(Ordering::Relaxed)
                == self.deliveries_expected.load(Ordering::Relaxed)
    }

    /// The run counters in words, for a report of what is missing.
    pub fn counts(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} runs issued, {} requested, {} accepted, {} finished, {} lost unanswered with their connection, {} refused; {} of {} whole-run deliveries",
            n(&self.issued),
            n(&self.requested),
            n(&self.accepted),
            n(&self.finished),
            n(&self.faults.lost_requests),
            n(&self.faults.refused_requests),
            n(&self.deliveries_done),
            n(&self.deliveries_expected)
        )
    }

    /// Fails every request in flight for longer than `timeout` (one violation each, so
    /// the report names them).
    pub fn expire(&self, timeout: Duration) {
        let now = Instant::now();
        let expired: Vec<(String, Pending)> = self
            .pending
            .lock()
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) > timeout)
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        for (request_id, pending) in expired {
            self.pending.lock().remove(&request_id);
            self.fail(Violation::Timeout {
                place: pending.place,
                request_id,
                secs: timeout.as_secs(),
            });
        }
    }
}
