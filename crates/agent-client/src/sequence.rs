//! The client's position in the user's stream, and the two decisions made from it: whether an
//! arriving event is new, a duplicate, or after a gap; and what a new connection's
//! `connection_established` means for the position.
//!
//! **Invariant:** the application sees every `seq` of an epoch at most once and in increasing
//! order, contiguously except across a failed-resume notice. Duplicates (`seq` at or below the
//! position) are dropped; a gap makes the client reconnect and resume, so the server replays
//! what is missing instead of the client skipping it.

use agent_protocol::{Epoch, ResumeFailure, ResumeParams, ResumeStatus};

use crate::stream::Notice;

/// What to do with an arriving event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// The next event: deliver it (the position has moved to it).
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Events are missing before it: reconnect and resume to get them.
    Gap {
        /// The `seq` that should have come.
        expected: u64,
    },
}

/// How a new connection joined the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Joined {
    /// A fresh connection: the stream starts at the live edge.
    Fresh,
    /// The resume worked: the missed events come next.
    Resumed {
        /// How many.
        replayed: usize,
    },
    /// The resume failed: the position jumped, and the notice says why.
    Failed(Notice),
}

/// What `connection_established` says about the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Established<'a> {
    /// The stream's epoch.
    pub(crate) epoch: &'a Epoch,
    /// The stream's last `seq` when the connection opened.
    pub(crate) last_seq: u64,
    /// The resume outcome, when the client asked to resume.
    pub(crate) resume: Option<&'a ResumeStatus>,
}

/// The position: the epoch read and the last `seq` received in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sequencer {
    position: ResumeParams,
}

impl Sequencer {
    /// A position after `established`, the first connection's answer to `asked`.
    pub(crate) fn first(
        asked: Option<&ResumeParams>,
        established: &Established<'_>,
    ) -> Result<(Self, Joined), String> {
        let mut sequencer = Self {
            position: asked.cloned().unwrap_or_else(|| ResumeParams {
                epoch: established.epoch.clone(),
                after_seq: established.last_seq,
            }),
        };
        let joined = sequencer.join(asked.is_some(), established)?;
        Ok((sequencer, joined))
    }

    /// Where to resume from.
    pub(crate) fn position(&self) -> &ResumeParams {
        &self.position
    }

    /// Decides about the event `seq`, moving the position when it is the next one.
    pub(crate) fn accept(&mut self, seq: u64) -> Accept {
        let expected = self.position.after_seq + 1;
        if seq < expected {
            Accept::Duplicate
        } else if seq > expected {
            Accept::Gap { expected }
        } else {
            self.position.after_seq = seq;
            Accept::Deliver
        }
    }

    /// Applies `connection_established` of a connection that asked to resume from the current
    /// position (`resumed`) or did not.
    pub(crate) fn join(
        &mut self,
        resumed: bool,
        established: &Established<'_>,
    ) -> Result<Joined, String> {
        let fresh = ResumeParams {
            epoch: established.epoch.clone(),
            after_seq: established.last_seq,
        };
        match (resumed, established.resume) {
            (false, _) => {
                self.position = fresh;
                Ok(Joined::Fresh)
            }
            (true, None) => Err("the server ignored the resume request".into()),
            (true, Some(ResumeStatus::Ok { replayed })) => {
                if *established.epoch != self.position.epoch {
                    return Err(format!(
                        "the server resumed epoch {} as {}",
                        self.position.epoch, established.epoch
                    ));
                }
                Ok(Joined::Resumed {
                    replayed: *replayed,
                })
            }
            (true, Some(ResumeStatus::Failed { reason, oldest_seq })) => {
                let previous = std::mem::replace(&mut self.position, fresh);
                let (after_seq, oldest_seq, last_seq) =
                    (previous.after_seq, *oldest_seq, established.last_seq);
                Ok(Joined::Failed(match reason {
                    ResumeFailure::TooOld => Notice::TooOld {
                        after_seq,
                        oldest_seq,
                        last_seq,
                    },
                    ResumeFailure::EpochChanged => Notice::EpochChanged {
                        previous: previous.epoch,
                        epoch: established.epoch.clone(),
                        oldest_seq,
                        last_seq,
                    },
                    ResumeFailure::SeqAhead => Notice::SeqAhead {
                        after_seq,
                        oldest_seq,
                        last_seq,
                    },
                    ResumeFailure::Unknown => Notice::ResumeFailed {
                        after_seq,
                        oldest_seq,
                        last_seq,
                    },
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, after_seq: u64) -> ResumeParams {
        ResumeParams {
            epoch: Epoch::new(epoch),
            after_seq,
        }
    }

    /// Feeds `arrivals` to a sequencer at `start` and compares what it decides and which
    /// `seq`s it delivers.
    fn check(start: u64, arrivals: &[u64], expected: &[Accept], delivered: &[u64]) {
        let mut sequencer = Sequencer {
            position: at("ep", start),
        };
        let mut got = Vec::new();
        let mut out = Vec::new();
        for &seq in arrivals {
            let accept = sequencer.accept(seq);
            if accept == Accept::Deliver {
                out.push(seq);
            }
            got.push(accept);
        }
        assert_eq!(got, expected, "{arrivals:?}");
        assert_eq!(out, delivered, "{arrivals:?}");
    }

    #[test]
    fn dedupe_by_seq_table() {
        use Accept::{Deliver, Duplicate, Gap};
        check(0, &[1, 2, 3], &[Deliver, Deliver, Deliver], &[1, 2, 3]);
        // A replay that overlaps what was already read: the repeats are dropped.
        check(
            0,
            &[1, 2, 1, 2, 3],
            &[Deliver, Deliver, Duplicate, Duplicate, Deliver],
            &[1, 2, 3],
        );
        check(41, &[40, 41, 42], &[Duplicate, Duplicate, Deliver], &[42]);
        // A gap is not skipped: the position stays, so a resume asks for the missing events.
        check(
            5,
            &[6, 8, 7, 8],
            &[Deliver, Gap { expected: 7 }, Deliver, Deliver],
            &[6, 7, 8],
        );
        check(0, &[2], &[Gap { expected: 1 }], &[]);
    }

    /// Joins `established` from position `from` (resuming when `from` is given) and compares
    /// the outcome and the new position.
    fn check_join(
        from: Option<ResumeParams>,
        established: Established<'_>,
        expected: Result<(Joined, ResumeParams), &str>,
    ) {
        let got = match &from {
            None => Sequencer::first(None, &established).map(|(s, j)| (j, s.position)),
            Some(from) => {
                let mut sequencer = Sequencer {
                    position: from.clone(),
                };
                sequencer
                    .join(true, &established)
                    .map(|j| (j, sequencer.position))
            }
        };
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{from:?} {established:?}"),
            (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
            _ => panic!("{from:?} {established:?}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn join_table() {
        let ep = Epoch::new("ep");
        let new = Epoch::new("ep_new");
        let failed = |reason, oldest_seq| ResumeStatus::Failed { reason, oldest_seq };
        let ok = ResumeStatus::Ok { replayed: 3 };
        let (too_old, changed, ahead) = (
            failed(ResumeFailure::TooOld, 30),
            failed(ResumeFailure::EpochChanged, 1),
            failed(ResumeFailure::SeqAhead, 1),
        );
        let established = |epoch, last_seq, resume| Established {
            epoch,
            last_seq,
            resume,
        };
        check_join(
            None,
            established(&ep, 41, None),
            Ok((Joined::Fresh, at("ep", 41))),
        );
        check_join(
            Some(at("ep", 10)),
            established(&ep, 13, Some(&ok)),
            Ok((Joined::Resumed { replayed: 3 }, at("ep", 10))),
        );
        let notice = Notice::TooOld {
            after_seq: 10,
            oldest_seq: 30,
            last_seq: 90,
        };
        check_join(
            Some(at("ep", 10)),
            established(&ep, 90, Some(&too_old)),
            Ok((Joined::Failed(notice), at("ep", 90))),
        );
        let notice = Notice::EpochChanged {
            previous: ep.clone(),
            epoch: new.clone(),
            oldest_seq: 1,
            last_seq: 0,
        };
        check_join(
            Some(at("ep", 10)),
            established(&new, 0, Some(&changed)),
            Ok((Joined::Failed(notice), at("ep_new", 0))),
        );
        let notice = Notice::SeqAhead {
            after_seq: 500,
            oldest_seq: 1,
            last_seq: 12,
        };
        check_join(
            Some(at("ep", 500)),
            established(&ep, 12, Some(&ahead)),
            Ok((Joined::Failed(notice), at("ep", 12))),
        );
        check_join(
            Some(at("ep", 10)),
            established(&ep, 12, None),
            Err("ignored the resume request"),
        );
        check_join(
            Some(at("ep", 10)),
            established(&new, 12, Some(&ok)),
            Err("resumed epoch ep as ep_new"),
        );
    }
}
