//! Who gives each user's seqs, as far as this node's sequencer knows (sequencer mode,
//! `sequencer`): this node, holding the user's lease ([`Held`]), another node until a given
//! time, or nobody known; and per user the events this node forwarded and awaits
//! confirmations of ([`UserState`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::forwarded::Item;

/// How long a lease lasts unrenewed (a dead holder's users wait this long for a new one).
pub(crate) const LEASE: Duration = Duration::from_secs(5);
/// A holder stops writing this long before its lease ends by its own clock.
pub(crate) const MARGIN: Duration = Duration::from_secs(1);
/// A lease its holder wrote none of its own events under for this long is given back at its
/// next renewal: the next node to publish for the user takes it (a user's next run, seconds
/// later, may start on another node, and its events are then not forwarded).
pub(crate) const IDLE: Duration = Duration::from_secs(2);
/// How long a new holder is told an origin node's highest publish counter in the log after it
/// last changed (what it appended is not appended again).
pub(crate) const APPLIED_WITHIN: Duration = Duration::from_secs(60);

/// How long another node is taken for a user's holder without asking Redis again.
pub(crate) const ROUTE_KEPT: Duration = Duration::from_secs(30);

/// A user's lease, held by this node.
pub(crate) struct Held {
    pub(crate) lease: u64,
    pub(crate) epoch: ws_bridge::broker::Epoch,
    pub(crate) last_seq: u64,
    /// Per origin node, the highest publish counter appended.
    pub(crate) applied: HashMap<Arc<str>, u64>,
    /// The user's runs a reaper ended (their node died): their later events are dropped,
    /// but for those ending them, so the `node_lost` stays each one's last.
    pub(crate) reaped: HashSet<Arc<str>>,
    /// By this node's clock, when it stops writing unless renewed.
    pub(crate) valid_until: Instant,
    /// When this node last appended an event of its own for the user: a lease that only
    /// other nodes' events use for [`IDLE`] is given back, and goes to one of them.
    pub(crate) written_at: Instant,
    /// When the stream's keys were last given the replay age and a quarter more to live
    /// (as the lease was taken, then by a write at most every quarter of the replay age).
    pub(crate) kept_at: Instant,
}

/// Who gives a user's seqs, as far as this node knows.
#[derive(Default)]
pub(crate) enum Route {
    #[default]
    Unknown,
    Mine(Held),
    Other {
        node: Arc<str>,
        until: Instant,
    },
    /// Nobody held it when this node, with only other nodes' events of the user, looked (until
    /// `until`): it refuses those, so their origin takes the lease. Events of its own are
    /// looked up again at once.
    Free {
        until: Instant,
    },
}

#[derive(Default)]
pub(crate) struct UserState {
    pub(crate) route: Route,
    /// This node's events forwarded and not yet confirmed, in publish order.
    pub(crate) pending: VecDeque<Item>,
    /// When the oldest of them was sent.
    pub(crate) forwarded_at: Option<Instant>,
    /// Origin nodes whose events of this user were refused here: their later ones are
    /// refused too, until one comes flagged `anew` (`forwarded`), so they stay in order.
    pub(crate) blocked: HashSet<Arc<str>>,
    /// The holder was found anew: the next event forwarded to it says so.
    pub(crate) fresh: bool,
    /// A lookup of the user's lease is out (`seq_lookup`).
    pub(crate) looking: bool,
    /// The user's events that came while it is out, in order.
    pub(crate) parked: VecDeque<Item>,
}

impl UserState {
    /// Whether the user's route must be looked up before events are written: `own` says
    /// whether this node has events of its own for them (asked only of a lease found free).
    pub(crate) fn needs_route(&self, now: Instant, own: impl FnOnce() -> bool) -> bool {
        match &self.route {
            Route::Unknown => true,
            Route::Mine(held) => now >= held.valid_until,
            Route::Other { until, .. } => now >= *until,
            Route::Free { until } => now >= *until || own(),
        }
    }
}

/// How long a lease found free is taken for free by a node with only other nodes' events of
/// the user (refusing them meanwhile).
pub(crate) const FREE_KEPT: Duration = Duration::from_millis(500);

/// Reads the lease script's answer (see `seq_scripts`' `TAKE`); `sent` when it was asked.
pub(crate) fn read_take(answer: redis::Value, sent: Instant) -> Option<Route> {
    use redis::FromRedisValue;
    let redis::Value::Array(items) = answer else {
        return None;
    };
    let mut items = items.into_iter();
    let kind = String::from_redis_value(items.next()?).ok()?;
    match kind.as_str() {
        "held" => {
            let node = String::from_redis_value(items.next()?).ok()?;
            // How long the holder's lease has left is not how long it holds: it renews. A
            // holder that stops confirming, or refuses, is found anew sooner.
            let _left: u64 = u64::from_redis_value(items.next()?).ok()?;
            Some(Route::Other {
                node: Arc::from(node),
                until: sent + ROUTE_KEPT,
            })
        }
        "free" => Some(Route::Free {
            until: sent + FREE_KEPT,
        }),
        "taken" => {
            let epoch = String::from_redis_value(items.next()?).ok()?;
            let lease = u64::from_redis_value(items.next()?).ok()?;
            let last_seq = u64::from_redis_value(items.next()?).ok()?;
            let pairs: Vec<redis::Value> = Vec::from_redis_value(items.next()?).ok()?;
            let reaped: Vec<String> = Vec::from_redis_value(items.next()?).ok()?;
            let mut applied = HashMap::new();
            let mut pairs = pairs.into_iter();
            while let (Some(node), Some(counter)) = (pairs.next(), pairs.next()) {
                let node = String::from_redis_value(node).ok()?;
                applied.insert(Arc::from(node), u64::from_redis_value(counter).ok()?);
            }
            Some(Route::Mine(Held {
                lease,
                epoch: ws_bridge::broker::Epoch::new(&epoch),
                last_seq,
                applied,
                reaped: reaped.into_iter().map(Arc::from).collect(),
                valid_until: sent + LEASE - MARGIN,
                written_at: sent,
                kept_at: sent,
            }))
        }
        _ => None,
    }
}
