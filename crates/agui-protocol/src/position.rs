//! Where an event stands in a run's AG-UI response: its server-sent event `id`.
//!
//! `{start}.{seq}.{index}`: `start` is the user's stream position just before the run (the
//! `after_seq` of `CUSTOM` `agent-engine.run`), `seq` the engine event the AG-UI event was
//! mapped from (`start` for the two opening events), and `index` its place among the AG-UI
//! events of that engine event. Clients treat it as opaque: they send the last one back as
//! `Last-Event-ID`.

use std::fmt;
use std::str::FromStr;

/// A position in a run's AG-UI response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The user's stream position just before the run.
    pub start: u64,
    /// The engine event's `seq` (`start` for the opening events).
    pub seq: u64,
    /// The AG-UI event's place among those of its engine event.
    pub index: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.start, self.seq, self.index)
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(id: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{:?} is not an event id of this server's AG-UI responses (three numbers joined \
                 by dots, as the `id:` of an event)",
                id.chars().take(80).collect::<String>()
            )
        };
        let mut parts = id.trim().split('.');
        let (Some(start), Some(seq), Some(index), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let position = Position {
            start: start.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        };
        if position.seq < position.start {
            return Err(bad());
        }
        Ok(position)
    }
}

impl Position {
    /// The position a `Last-Event-ID` header's value names; the error says what is wrong.
    pub fn from_last_event_id(value: Option<&[u8]>) -> Result<Self, String> {
        let hint = "send the id of the last event you received";
        let value = value.ok_or_else(|| format!("Last-Event-ID is missing; {hint}"))?;
        let text =
            std::str::from_utf8(value).map_err(|_| format!("Last-Event-ID is not text; {hint}"))?;
        text.parse()
            .map_err(|e| format!("Last-Event-ID: {e}; {hint}"))
    }
}

/// Gives the AG-UI events of one response their positions, in the order they are sent.
#[derive(Debug, Clone)]
pub struct Positions {
    start: u64,
    seq: u64,
    next: u32,
}

impl Positions {
    /// The positions of a run that began after stream position `start`.
    pub fn new(start: u64) -> Self {
        Self {
            start,
            seq: start,
            next: 0,
        }
    }

    /// The position of the next AG-UI event mapped from the engine event `seq`; events the
    /// server adds of its own (an interrupt's `RUN_FINISHED`, a `RUN_ERROR`) pass the last
    /// `seq` seen.
    pub fn next(&mut self, seq: u64) -> Position {
        if seq != self.seq {
            self.seq = seq;
            self.next = 0;
        }
        let position = Position {
            start: self.start,
            seq,
            index: self.next,
        };
        self.next += 1;
        position
    }

    /// The position the next event of the server's own would get (after the last one given).
    pub fn peek(&self) -> Position {
        Position {
            start: self.start,
            seq: self.seq,
            index: self.next,
        }
    }

    /// The last engine event's `seq` positions were given for.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_count_within_an_engine_event() {
        let mut positions = Positions::new(41);
        let given: Vec<String> = [41, 41, 43, 43, 43, 44]
            .into_iter()
            .map(|seq| positions.next(seq).to_string())
            .collect();
        assert_eq!(
            given,
            [
                "41.41.0", "41.41.1", "41.43.0", "41.43.1", "41.43.2", "41.44.0"
            ]
        );
        for id in &given {
            assert_eq!(&id.parse::<Position>().unwrap().to_string(), id);
        }
        assert!("41.43.1".parse::<Position>().unwrap() < "41.44.0".parse::<Position>().unwrap());
    }

    #[test]
    fn ids_that_are_not_positions_are_named() {
        for id in ["", "1.2", "1.2.3.4", "a.b.c", "5.4.0", "-1.2.3"] {
            let err = id.parse::<Position>().unwrap_err();
            assert!(err.contains("is not an event id"), "{id}: {err}");
        }
    }
}
