//! How long the client waits before each reconnect attempt: the workspace's one retry policy
//! (backon's exponential backoff, with jitter, capped), so that the clients of a restarted
//! server do not all come back in the same instant.
//!
//! [`Backoff::schedule`] is an iterator of pauses, so the schedule is tested without clocks.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Reconnect backoff settings.
///
/// Attempt `n` (counted from 1 after each drop, and reset once a connection is made) waits
/// `min(initial * 2^(n-1), max)` plus a random share of that (up to all of it): between one
/// and two times the capped pause.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The pause before the first attempt (before its jitter).
    pub initial: Duration,
    /// The longest pause before its jitter (so no pause is longer than twice this).
    pub max: Duration,
    /// Attempts in a row before the client gives up and ends its stream with
    /// [`ClientError::ReconnectFailed`](crate::ClientError::ReconnectFailed); `None` retries
    /// forever (retryable failures only: a refused token ends the stream at once).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 250 ms doubling up to 15 s (so at most 30 s with jitter), retrying forever.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(15),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The pauses before attempts 1, 2, ... of one reconnect; it ends after `max_attempts`.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter();
        match self.max_attempts {
            Some(max) => builder.with_max_times(max as usize),
            None => builder.without_max_times(),
        }
        .build()
    }

    /// Checks the settings, naming the first one that is out of range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("backoff.initial is zero; use at least 1 ms".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_schedule_doubles_up_to_the_cap_with_jitter_and_ends_after_max_attempts() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1_000),
            max_attempts: Some(8),
        };
        let bases = [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000].map(ms);
        let mut jittered = 0;
        for _ in 0..200 {
            let pauses: Vec<Duration> = backoff.schedule().collect();
            assert_eq!(pauses.len(), bases.len(), "{pauses:?}");
            for (pause, base) in pauses.iter().zip(bases) {
                assert!(
                    *pause >= base && *pause < base * 2,
                    "{pause:?} is outside [{base:?}, {:?})",
                    base * 2
                );
                jittered += usize::from(*pause != base);
            }
        }
        // The random share varies: nearly every pause differs from its base.
        assert!(
            jittered > 1_500,
            "only {jittered} of 1600 pauses were jittered"
        );
        let forever = Backoff {
            max_attempts: None,
            ..backoff
        };
        assert_eq!(forever.schedule().take(10_000).count(), 10_000);
        assert!(forever.schedule().nth(9_999).unwrap() < ms(2_000));
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
                initial: Duration::ZERO,
                ..Backoff::default()
            },
            Err("backoff.initial is zero"),
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
}
