//! Resume: where a reconnecting client left off (the connect URL's `epoch` and `after_seq`),
//! and what the server made of it (`connection_established.resume`).
//!
//! Resume is part of the connect request, so that replay and live delivery join without a
//! gap or a duplicate; the stream is always the authenticated user's own.

use std::fmt;

/// The stream's epoch: core-context's, the one type the bridge makes and the wire carries.
pub use core_context::Epoch;
use serde::{Deserialize, Serialize};

/// The longest epoch a client may send back, in bytes.
pub const MAX_EPOCH_LEN: usize = 64;

/// The resume parameters of a connect URL: `/ws?epoch=E&after_seq=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeParams {
    /// The epoch of the stream the client was reading.
    pub epoch: Epoch,
    /// The last `seq` the client received.
    pub after_seq: u64,
}

impl ResumeParams {
    /// Reads the `epoch` and `after_seq` query parameters: both absent is a fresh connect,
    /// both present a resume, anything else an error that says what is wrong.
    pub fn from_query(
        epoch: Option<&str>,
        after_seq: Option<&str>,
    ) -> Result<Option<Self>, String> {
        match (epoch, after_seq) {
            (None, None) => Ok(None),
            (Some(epoch), Some(seq)) => {
                let after_seq = seq.parse::<u64>().map_err(|_| {
                    format!("after_seq must be a non-negative integer, got {seq:?}")
                })?;
                if epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN {
                    return Err(format!("epoch must be 1 to {MAX_EPOCH_LEN} characters"));
                }
                Ok(Some(Self {
                    epoch: Epoch::new(epoch),
                    after_seq,
                }))
            }
            _ => Err("to resume, send both epoch and after_seq".into()),
        }
    }

    /// The query parameters, as `epoch=E&after_seq=N` (the epoch percent-encoded).
    pub fn to_query(&self) -> String {
        let mut epoch = String::with_capacity(self.epoch.as_str().len());
        for byte in self.epoch.as_str().bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                epoch.push(char::from(byte));
            } else {
                epoch.push_str(&format!("%{byte:02X}"));
            }
        }
        format!("epoch={epoch}&after_seq={}", self.after_seq)
    }
}

/// Why a resume could not replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFailure {
    /// Events after `after_seq` have already left the replay log.
    TooOld,
    /// The stream's history was lost (restart or eviction); the client must refetch state.
    EpochChanged,
    /// The client claims a `seq` this stream never reached.
    SeqAhead,
    /// A reason this version of the protocol does not name (from a newer server): treat it
    /// like any failed resume and refetch state.
    #[serde(other)]
    Unknown,
}

impl ResumeFailure {
    /// The reason as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailure::TooOld => "too_old",
            ResumeFailure::EpochChanged => "epoch_changed",
            ResumeFailure::SeqAhead => "seq_ahead",
            ResumeFailure::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ResumeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a resume, as `connection_established.resume` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ResumeStatus {
    /// Every event after `after_seq` is queued ahead of live ones.
    Ok {
        /// How many events were replayed.
        replayed: usize,
    },
    /// Nothing was replayed; the client must refetch state.
    Failed {
        /// Why.
        reason: ResumeFailure,
        /// The oldest `seq` the log still holds (the next `seq` if the log is empty).
        oldest_seq: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_parameters_table() {
        let check =
            |epoch: Option<&str>, seq: Option<&str>, expected: Result<Option<u64>, &str>| {
                let got = ResumeParams::from_query(epoch, seq).map(|r| r.map(|r| r.after_seq));
                match (&got, expected) {
                    (Ok(a), Ok(b)) => assert_eq!(*a, b),
                    (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
                    _ => panic!("{epoch:?} {seq:?}: expected {expected:?}, got {got:?}"),
                }
            };
        check(None, None, Ok(None));
        check(Some("ep_1"), Some("41"), Ok(Some(41)));
        check(Some("ep_1"), None, Err("both epoch and after_seq"));
        check(None, Some("4"), Err("both epoch and after_seq"));
        check(Some("ep_1"), Some("-1"), Err("non-negative integer"));
        check(Some("ep_1"), Some("x"), Err("non-negative integer"));
        check(Some(""), Some("1"), Err("1 to 64 characters"));
    }

    #[test]
    fn a_newer_failure_reason_still_parses_as_a_failed_resume() {
        let status: ResumeStatus =
            serde_json::from_str(r#"{"status":"failed","reason":"log_truncated","oldest_seq":5}"#)
                .unwrap();
        assert_eq!(
            status,
            ResumeStatus::Failed {
                reason: ResumeFailure::Unknown,
                oldest_seq: 5
            }
        );
    }

    #[test]
    fn the_query_encodes_the_epoch() {
        let params = ResumeParams {
            epoch: Epoch::new("ep_7f3a&x y"),
            after_seq: 41,
        };
        assert_eq!(params.to_query(), "epoch=ep_7f3a%26x%20y&after_seq=41");
    }
}
