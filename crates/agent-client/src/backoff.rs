//! How long the client waits before each reconnect attempt: exponential backoff with jitter,
//! so that the clients of a restarted server do not all come back in the same instant.
//!
//! [`Backoff::delay`] is a pure function of the attempt number and a random number, so the
//! schedule is tested without clocks; [`Jitter`] supplies the random numbers.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Reconnect backoff settings.
///
/// Attempt `n` (counted from 1 after each drop, and reset once a connection is made) waits
/// `min(initial * 2^(n-1), max)`, shortened by a random share of up to `jitter` of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The pause before the first attempt.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// The share of each pause that is random, from `0.0` (none) to `1.0` (the whole pause).
    pub jitter: f64,
    /// Attempts in a row before the client gives up and ends its stream with
    /// [`ClientError::ReconnectFailed`](crate::ClientError::ReconnectFailed); `None` retries
    /// forever (retryable failures only: a refused token ends the stream at once).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s, half of each pause random, retrying forever.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The pause before attempt `attempt` (1 is the first), given `random` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(62);
        let base = self.initial.as_secs_f64() * 2f64.powi(doublings as i32);
        let capped = base.min(self.max.as_secs_f64());
        let share = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped * (1.0 - share))
    }

    /// Checks the settings, naming the first one that is out of range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "backoff.jitter is {}; it must be between 0.0 and 1.0",
                self.jitter
            ));
        }
        if self.initial > self.max {
            return Err(format!(
                "backoff.initial ({:?}) is longer than backoff.max ({:?})",
                self.initial, self.max
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(
                "backoff.max_attempts is 0; use at least 1, or None to retry forever".into(),
            );
        }
        Ok(())
    }
}

/// A small random number source for jitter (xorshift64*), seeded per client from the
/// standard library's per-process random hasher keys. Not for anything secret.
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// A source with a fresh seed.
    pub(crate) fn new() -> Self {
        Self(RandomState::new().hash_one(0x5eed_u64) | 1)
    }

    /// The next number in `[0, 1)`.
    pub(crate) fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Compares the delay of `attempt` with random `random` against `expected` (to 1 µs).
    fn check(backoff: &Backoff, attempt: u32, random: f64, expected: Duration) {
        let got = backoff.delay(attempt, random);
        let diff = got.abs_diff(expected);
        assert!(
            diff < Duration::from_micros(1),
            "attempt {attempt}, random {random}: expected {expected:?}, got {got:?}"
        );
    }

    #[test]
    fn the_schedule_doubles_up_to_the_cap() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1_000),
            jitter: 0.5,
            max_attempts: None,
        };
        let table = [
            (1, 0.0, ms(100)),
            (2, 0.0, ms(200)),
            (3, 0.0, ms(400)),
            (4, 0.0, ms(800)),
            (5, 0.0, ms(1_000)),
            (40, 0.0, ms(1_000)),
            (u32::MAX, 0.0, ms(1_000)),
            // Jitter takes off up to half.
            (1, 0.5, ms(75)),
            (4, 0.99, ms(404)),
            (5, 0.5, ms(750)),
            // Attempt 0 is treated as the first.
            (0, 0.0, ms(100)),
        ];
        for (attempt, random, expected) in table {
            check(&backoff, attempt, random, expected);
        }
        let full = Backoff {
            jitter: 1.0,
            ..backoff.clone()
        };
        check(&full, 3, 0.25, ms(300));
        let none = Backoff {
            jitter: 0.0,
            ..backoff
        };
        check(&none, 3, 0.9, ms(400));
    }

    #[test]
    fn settings_are_validated() {
        let check =
            |backoff: Backoff, expected: Result<(), &str>| match (backoff.validate(), expected) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
                (got, _) => panic!("{backoff:?}: expected {expected:?}, got {got:?}"),
            };
        check(Backoff::default(), Ok(()));
        check(
            Backoff {
                jitter: 1.5,
                ..Backoff::default()
            },
            Err("backoff.jitter is 1.5"),
        );
        check(
            Backoff {
                jitter: f64::NAN,
                ..Backoff::default()
            },
            Err("backoff.jitter"),
        );
        check(
            Backoff {
                initial: ms(5_000),
                max: ms(1_000),
                ..Backoff::default()
            },
            Err("longer than backoff.max"),
        );
        check(
            Backoff {
                max_attempts: Some(0),
                ..Backoff::default()
            },
            Err("max_attempts is 0"),
        );
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let mut jitter = Jitter::new();
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.next()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
    }
}
