//! What nodes send each other in the sequencer mode (`docs/sequencer.md`), on the node
//! channels (`<prefix>:node:<node id>`, beside `cancel` and `steer`):
//!
//! - `fwd\n<origin node>\n` and records `<user>\n<counter>\n<run>\n<flags>\n<rest>` joined by
//!   `\n`: events for users whose lease another node holds, sent to it in the origin's publish
//!   order (`<run>` empty for none; flags 1 for the terminal event of a lost run, 2 for the
//!   first event the origin sends after finding the holder anew; `<rest>` the event's JSON
//!   without its opening brace);
//! - `ack\n` and `<user>\n<counter>` pairs: the sequencer appended (or already had) the origin's
//!   events of that user up to that counter;
//! - `nack\n` and the same pairs: the sequencer does not hold that user's lease; the origin
//!   sends again every event of the user it has not had confirmed, to whoever holds it now.
//!   Until then the sequencer refuses the origin's later events of that user, even once it
//!   holds the lease, so they cannot overtake the refused one: the resend's first event
//!   (flag 2) lifts that.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use core_context::{RunId, UserId};

/// One event to sequence or forward.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The node it came from; `None` for this node's own.
    pub(crate) origin: Option<Arc<str>>,
    pub(crate) user: UserId,
    /// The event's JSON, with its opening brace.
    pub(crate) body: Arc<str>,
    /// The origin's publish counter for it.
    pub(crate) counter: u64,
    pub(crate) run: Option<RunId>,
    pub(crate) ends_lost_run: bool,
    /// The first event its origin forwards after finding the holder anew (flag 2).
    pub(crate) anew: bool,
    /// When it was queued on this node (or arrived from another).
    pub(crate) queued_at: Instant,
}

impl Item {
    /// The event's JSON without its opening brace.
    pub(crate) fn rest(&self) -> &str {
        self.body.strip_prefix('{').unwrap_or(&self.body)
    }
}

/// A message of another node for this node's publisher.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Events forwarded to this node.
    Forwarded(Vec<Item>),
    /// Per user, the highest counter of this node's events a sequencer confirmed.
    Confirmed(Vec<(UserId, u64)>),
    /// Users whose events a node refused: it does not hold their leases.
    Refused(Vec<UserId>),
    /// The answer of this node's lookup of `user`'s lease, asked at `sent` (`seq_lookup`).
    Routed {
        user: UserId,
        sent: Instant,
        answer: redis::RedisResult<redis::Value>,
    },
    /// The answer of this node's lease renewal sent at `sent`: the (user, lease number) pairs
    /// it still holds, and those it no longer does.
    Renewed {
        sent: Instant,
        kept: Vec<(UserId, u64)>,
        lost: Vec<(UserId, u64)>,
    },
}

/// Writes `items` (of one user or many, in publish order) as a `fwd` message from `origin`.
pub(crate) fn forward_message(origin: &str, items: &[Item]) -> String {
    let mut text = format!("fwd\n{origin}");
    for item in items {
        let run = item.run.as_ref().map_or("", RunId::as_str);
        let flag = u8::from(item.ends_lost_run) | (u8::from(item.anew) << 1);
        let _ = write!(
            text,
            "\n{}\n{}\n{run}\n{flag}\n{}",
            item.user.as_str(),
            item.counter,
            item.rest()
        );
    }
    text
}

/// Writes an `ack` (`confirmed`) or `nack` message of `(user, counter)` pairs.
pub(crate) fn confirm_message<'a>(
    confirmed: bool,
    pairs: impl IntoIterator<Item = (&'a str, u64)>,
) -> String {
    let mut text = String::from(if confirmed { "ack" } else { "nack" });
    for (user, counter) in pairs {
        let _ = write!(text, "\n{user}\n{counter}");
    }
    text
}

/// Reads a node channel message of this module: `None` when it is not one of them (a
/// `cancel` or `steer`), `Some(Err(why))` when it is one but malformed.
pub(crate) fn parse(payload: &[u8]) -> Option<Result<Inbound, &'static str>> {
    let kind = payload.split(|b| *b == b'\n').next()?;
    if !matches!(kind, b"fwd" | b"ack" | b"nack") {
        return None;
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return Some(Err("not UTF-8"));
    };
    let mut lines = text.split('\n');
    lines.next();
    Some(match kind {
        b"fwd" => forwarded(lines).ok_or("a fwd message is not `fwd\\n<node>` and records"),
        confirmed => pairs(lines)
            .map(|pairs| {
                if confirmed == b"ack" {
                    Inbound::Confirmed(pairs)
                } else {
                    Inbound::Refused(pairs.into_iter().map(|(user, _)| user).collect())
                }
            })
            .ok_or("an ack or nack message is not `<user>\\n<counter>` pairs"),
    })
}

fn forwarded<'a>(mut lines: impl Iterator<Item = &'a str>) -> Option<Inbound> {
    let origin: Arc<str> = Arc::from(lines.next().filter(|node| !node.is_empty())?);
    let queued_at = Instant::now();
    let mut items = Vec::new();
    while let Some(user) = lines.next() {
        let counter = lines.next()?.parse().ok()?;
        let run = match lines.next()? {
            "" => None,
            run => Some(RunId::parse(run).ok()?),
        };
        let flags: u8 = lines.next()?.parse().ok().filter(|flags| *flags < 4)?;
        let rest = lines.next()?;
        if !rest.starts_with('"') || !rest.ends_with('}') {
            return None;
        }
        items.push(Item {
            origin: Some(Arc::clone(&origin)),
            user: UserId::parse(user).ok()?,
            body: Arc::from(format!("{{{rest}")),
            counter,
            run,
            ends_lost_run: flags & 1 == 1,
            anew: flags & 2 == 2,
            queued_at,
        });
    }
    (!items.is_empty()).then_some(Inbound::Forwarded(items))
}

fn pairs<'a>(mut lines: impl Iterator<Item = &'a str>) -> Option<Vec<(UserId, u64)>> {
    let mut pairs = Vec::new();
    while let Some(user) = lines.next() {
        pairs.push((UserId::parse(user).ok()?, lines.next()?.parse().ok()?));
    }
    (!pairs.is_empty()).then_some(pairs)
}

/// The frames of a batch, per user in the order their first came: each user's records
/// (`<user>\n<epoch>\n<lease>:<seq>\n<rest>`) joined by `\n`, in order. The fan-out script
/// (`seq_scripts`) sends them to the nodes following each user.
#[derive(Default)]
pub(crate) struct Frames {
    pub(crate) users: Vec<(UserId, String)>,
    index: HashMap<UserId, usize>,
}

impl Frames {
    pub(crate) fn add(&mut self, user: &UserId, epoch: &str, lease: u64, seq: u64, rest: &str) {
        use std::fmt::Write as _;
        let at = *self.index.entry(user.clone()).or_insert_with(|| {
            self.users.push((user.clone(), String::new()));
            self.users.len() - 1
        });
        let records = &mut self.users[at].1;
        if !records.is_empty() {
            records.push('\n');
        }
        let _ = write!(records, "{}\n{epoch}\n{lease}:{seq}\n{rest}", user.as_str());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The confirmations and refusals a batch owes other nodes, per origin node and user: the
/// highest counter.
#[derive(Default)]
pub(crate) struct Replies {
    confirmed: HashMap<Arc<str>, HashMap<UserId, u64>>,
    refused: HashMap<Arc<str>, HashMap<UserId, u64>>,
}

impl Replies {
    pub(crate) fn confirm(&mut self, origin: &Arc<str>, user: &UserId, counter: u64) {
        Self::note(&mut self.confirmed, origin, user, counter);
    }

    pub(crate) fn refuse(&mut self, origin: &Arc<str>, user: &UserId, counter: u64) {
        Self::note(&mut self.refused, origin, user, counter);
    }

    fn note(
        to: &mut HashMap<Arc<str>, HashMap<UserId, u64>>,
        origin: &Arc<str>,
        user: &UserId,
        counter: u64,
    ) {
        let highest = to
            .entry(Arc::clone(origin))
            .or_default()
            .entry(user.clone())
            .or_insert(0);
        *highest = (*highest).max(counter);
    }

    /// Adds them to `pipe`, each a `PUBLISH` to its origin's node channel.
    pub(crate) fn add_to(&self, pipe: &mut redis::Pipeline, prefix: &str) {
        for (confirmed, replies) in [(true, &self.confirmed), (false, &self.refused)] {
            for (origin, users) in replies {
                let pairs = users
                    .iter()
                    .map(|(user, counter)| (user.as_str(), *counter));
                pipe.cmd("PUBLISH")
                    .arg(format!("{prefix}:node:{origin}"))
                    .arg(confirm_message(confirmed, pairs))
                    .ignore();
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn item(user: &str, counter: u64, run: Option<&str>, body: &str) -> Item {
        Item {
            origin: None,
            user: UserId::parse(user).expect("a valid user id"),
            body: Arc::from(body),
            counter,
            run: run.map(|r| RunId::parse(r).expect("a valid run id")),
            ends_lost_run: counter == 9,
            anew: counter == 3,
            queued_at: Instant::now(),
        }
    }

    #[test]
    fn forwarded_events_arrive_as_they_were_sent() {
        let sent = [
            item("alice", 3, Some("run_a"), r#"{"type":"x","n":1}"#),
            item("bob", 9, None, r#"{"type":"y"}"#),
        ];
        let message = forward_message("node-1", &sent);
        let Some(Ok(Inbound::Forwarded(got))) = parse(message.as_bytes()) else {
            panic!("not read back: {message}");
        };
        assert_eq!(got.len(), 2);
        for (got, sent) in got.iter().zip(&sent) {
            assert_eq!(got.origin.as_deref(), Some("node-1"));
            assert_eq!(got.user, sent.user);
            assert_eq!(got.counter, sent.counter);
            assert_eq!(got.run, sent.run);
            assert_eq!(got.ends_lost_run, sent.ends_lost_run);
            assert_eq!(got.anew, sent.anew);
            assert_eq!(got.body, sent.body);
        }
    }

    #[test]
    fn confirmations_and_refusals_name_users_and_counters() {
        let ack = confirm_message(true, [("alice", 4), ("bob", 7)]);
        let Some(Ok(Inbound::Confirmed(pairs))) = parse(ack.as_bytes()) else {
            panic!("{ack}");
        };
        let seen: Vec<_> = pairs.iter().map(|(u, c)| (u.as_str(), *c)).collect();
        assert_eq!(seen, [("alice", 4), ("bob", 7)]);
        let nack = confirm_message(false, [("carol", 2)]);
        let Some(Ok(Inbound::Refused(users))) = parse(nack.as_bytes()) else {
            panic!("{nack}");
        };
        assert_eq!(users[0].as_str(), "carol");
    }

    #[test]
    fn other_messages_pass_and_malformed_ones_are_refused() {
        assert!(parse(b"cancel\nalice\nrun_1").is_none());
        assert!(parse(b"steer\n{}").is_none());
        for bad in [
            &b"fwd"[..],
            b"fwd\nnode",
            b"fwd\nnode\nalice\nx\n\n0\n\"t\":1}",
            b"fwd\nnode\nalice\n1\n\n4\n\"t\":1}",
            b"fwd\nnode\nalice\n1\n\n0\n{\"t\":1}",
            b"ack\nalice",
            b"ack",
            b"nack\nalice\nx",
        ] {
            assert!(
                matches!(parse(bad), Some(Err(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
