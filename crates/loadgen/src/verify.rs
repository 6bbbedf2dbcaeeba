//! Verification of one connection's stream while it loads: every event is its user's, `seq`
//! increases by exactly 1, and every run is complete and whole.
//!
//! A [`StreamVerifier`] sees the events of one connection in the order they arrived:
//! - `seq` must be the previous one plus 1, starting after `connection_established.last_seq`;
//! - an event's run must be one this connection's user started (its id came back in a
//!   `run_accepted` on one of the user's connections). The `run_accepted` may still be on its
//!   way on a sibling connection when an event of the run arrives here, so an unknown run is
//!   noted and judged at [`finish`](StreamVerifier::finish), when every acceptance is in;
//!   a run still unknown then is another user's: a wrong-user frame;
//! - when a run's terminal event arrives, its events go through
//!   [`core_context::lifecycle::check_lifecycle`] (one `agent_started` first, tool calls
//!   paired, one terminal last), the run must have completed (not failed or been cancelled)
//!   and delivered exactly the shape's number of events.
//!
//! After a failed resume (`epoch_changed`, `too_old`: the server said events were not
//! replayed, which a load that tolerates it accepts), [`reset`](StreamVerifier::reset) goes on
//! from the new position and writes off the runs the missed events may have belonged to:
//! those begun or accepted here and not ended, and any run whose first event here is not its
//! `agent_started`. Their later events are skipped, not checked; every run begun after is
//! checked whole.
//!
//! Runs are checked one at a time as they end, not per user at the end, so memory stays
//! bounded by the runs in flight however long a steady load goes on; the synthetic agent
//! makes no sub-runs, so a run's own events are all the checker needs.

use std::collections::{HashMap, HashSet};
use std::fmt;

use core_context::lifecycle::check_lifecycle;
use core_context::{AgentEvent, EventKind, RunId, SequencedEvent, UserId};

/// Where a violation happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The connection's index (0-based, in the order they were opened).
    pub connection: usize,
    /// Its user.
    pub user: UserId,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {} of user {}", self.connection, self.user)
    }
}

/// A broken guarantee, with where it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// `seq` skipped or went back.
    #[error("{place}: seq {got} where {expected} was due (the stream skipped or repeated)")]
    SeqGap {
        /// Where.
        place: Place,
        /// The `seq` that was due.
        expected: u64,
        /// The `seq` that came.
        got: u64,
    },
    /// An event of a run its user never started.
    #[error(
        "{place}: wrong-user frame: event of run {run_id} (seq {seq}), which this user never started ({how}; the user lost {lost_requests} requests unanswered)"
    )]
    WrongUser {
        /// Where.
        place: Place,
        /// The foreign run.
        run_id: String,
        /// How the run ended here: `node_lost`, otherwise, or not at all.
        how: &'static str,
        /// The user's requests that ended without an answer (each may have started a run).
        lost_requests: u64,
        /// The first such event's `seq`.
        seq: u64,
    },
    /// A run broke the lifecycle rules.
    #[error("{place}: {problem}")]
    Lifecycle {
        /// Where.
        place: Place,
        /// What the checker said.
        problem: String,
    },
    /// A run ended other than completed.
    #[error("{place}: run {run_id} ended with {ending} instead of agent_completed")]
    NotCompleted {
        /// Where.
        place: Place,
        /// The run.
        run_id: String,
        /// Its terminal event, in words.
        ending: String,
    },
    /// A run delivered the wrong number of events.
    #[error("{place}: run {run_id} delivered {got} events; its shape makes {expected}")]
    EventCount {
        /// Where.
        place: Place,
        /// The run.
        run_id: String,
        /// Expected events.
        expected: u64,
        /// Delivered events.
        got: u64,
    },
    /// A run had begun on this connection but not ended when the load was over.
    #[error("{place}: run {run_id} delivered {events} events but never its terminal event")]
    Unfinished {
        /// Where.
        place: Place,
        /// The run.
        run_id: String,
        /// Events delivered.
        events: usize,
    },
    /// The connection saw fewer complete runs than its user started.
    #[error("{place}: {seen} complete runs arrived; the user started {started}")]
    MissingRuns {
        /// Where.
        place: Place,
        /// Runs completed on this connection.
        seen: u64,
        /// Runs the user started.
        started: u64,
    },
    /// Anything else the protocol does not allow at this point (a refusal, a close, a frame
    /// that does not parse), in words.
    #[error("{place}: {problem}")]
    Protocol {
        /// Where.
        place: Place,
        /// What happened.
        problem: String,
    },
    /// A resume after a dropped connection failed: events were missed.
    #[error(
        "{place}: resume after seq {after_seq} failed ({reason}): the events after it were not replayed"
    )]
    ResumeFailed {
        /// Where.
        place: Place,
        /// The last `seq` received before the drop.
        after_seq: u64,
        /// The server's reason.
        reason: String,
    },
    /// The load ended with runs unaccounted for and no other violation naming them.
    #[error("the load stalled: {0}")]
    Incomplete(String),
    /// A run did not finish in time.
    #[error("{place}: run of request {request_id} not finished {secs} s after it was requested")]
    Timeout {
        /// Where (the connection that started it).
        place: Place,
        /// The request.
        request_id: String,
        /// The timeout.
        secs: u64,
    },
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnded {
    /// The run.
    pub run_id: RunId,
    /// Whether it ended with `agent_error` `node_lost` (its node died), which a verifier
    /// that tolerates node loss accepts.
    pub node_lost: bool,
    /// Whether it was written off here, unchecked: its first events were lost to a failed
    /// resume (see [`StreamVerifier::reset`]).
    pub cut: bool,
}

/// The code of the terminal error of a run whose node died.
pub const NODE_LOST: &str = "node_lost";

/// The verifier of one connection's stream.
#[derive(Debug)]
pub struct StreamVerifier {
    place: Place,
    next_seq: u64,
    events_per_run: u64,
    open: HashMap<RunId, Vec<AgentEvent>>,
    /// Runs whose events arrived before the user's acceptance of them was known here, with
    /// the first such event's `seq`.
    unconfirmed: HashMap<RunId, u64>,
    completed: u64,
    events: u64,
    /// Whether runs may end `node_lost` (`--reconnect`).
    tolerate_node_lost: bool,
    /// Runs that ended `node_lost` here.
    node_lost: HashSet<RunId>,
    /// Runs accounted for here: checked whole, or written off and ended (a later failed
    /// resume must not write them off again).
    done: HashSet<RunId>,
    /// Runs written off by a failed resume whose terminal event has not come (their events
    /// are skipped), and how many were written off in all.
    cut: HashSet<RunId>,
    written_off: u64,
    /// Failed resumes this stream went on after.
    resets: u64,
}

impl StreamVerifier {
    /// A verifier for a connection whose `connection_established` said `last_seq`.
    pub fn new(place: Place, last_seq: u64, events_per_run: u64) -> Self {
        Self {
            place,
            next_seq: last_seq + 1,
            events_per_run,
            open: HashMap::new(),
            unconfirmed: HashMap::new(),
            completed: 0,
            events: 0,
            tolerate_node_lost: false,
            node_lost: HashSet::new(),
            done: HashSet::new(),
            cut: HashSet::new(),
            written_off: 0,
            resets: 0,
        }
    }

    /// Goes on after a failed resume, from `last_seq` of the stream's new position: the runs
    /// the missed events may have belonged to (begun here and not ended, or among `user_runs`,
    /// the user's accepted runs, and not checked here) are written off and returned. Their
    /// later events are skipped.
    pub fn reset(&mut self, last_seq: u64, user_runs: &HashSet<RunId>) -> Vec<RunId> {
        self.next_seq = last_seq + 1;
        self.resets += 1;
        let mut cut: Vec<RunId> = self.open.drain().map(|(run, _)| run).collect();
        cut.extend(
            user_runs
                .iter()
                .filter(|run| !self.done.contains(*run) && !self.cut.contains(*run))
                .filter(|run| !cut.contains(run))
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.written_off += cut.len() as u64;
        self.cut.extend(cut.iter().cloned());
        cut
    }

    /// Lets runs end with `agent_error` `node_lost` (their lifecycle still checked), for a
    /// load that kills nodes; at [`finish`](Self::finish) such a run never confirmed as the
    /// user's is excused when the user lost that many requests unanswered.
    pub fn tolerating_node_loss(mut self) -> Self {
        self.tolerate_node_lost = true;
        self
    }

    /// The last `seq` received (where a resume continues from).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Where this verifier is.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Runs completed and verified on this connection.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Events seen.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Runs open here (begun, not ended) that `known` does not know as the user's.
    pub fn open_unconfirmed(&self, known: impl Fn(&RunId) -> bool) -> usize {
        self.open.keys().filter(|run| !known(run)).count()
    }

    /// Runs written off here by failed resumes (see [`reset`](Self::reset)).
    pub fn written_off(&self) -> u64 {
        self.written_off
    }

    /// Checks one event; `known` says whether the user started a run (as far as known now).
    /// Returns the run when this event ended it.
    pub fn on_event(
        &mut self,
        event: SequencedEvent,
        known: impl Fn(&RunId) -> bool,
    ) -> Result<Option<RunEnded>, Violation> {
        if event.seq != self.next_seq {
            return Err(Violation::SeqGap {
                place: self.place.clone(),
                expected: self.next_seq,
                got: event.seq,
            });
        }
        self.next_seq += 1;
        self.events += 1;
        let seq = event.seq;
        let event = event.event;
        let run_id = event.run_id.clone();
        let terminal = event.kind.is_terminal();
        if self.cut.contains(&run_id) {
            if terminal {
                self.cut.remove(&run_id);
                self.done.insert(run_id);
            }
            return Ok(None);
        }
        let buffer = self.open.entry(run_id.clone()).or_default();
        if buffer.is_empty() && !known(&run_id) {
            self.unconfirmed.entry(run_id.clone()).or_insert(seq);
        }
        if buffer.is_empty()
            && self.resets > 0
            && !matches!(event.kind, EventKind::AgentStarted { .. })
        {
            // Begun before a failed resume, its start among the events not replayed.
            self.open.remove(&run_id);
            self.written_off += 1;
            if terminal {
                self.done.insert(run_id.clone());
            } else {
                self.cut.insert(run_id.clone());
            }
            return Ok(Some(RunEnded {
                run_id,
                node_lost: false,
                cut: true,
            }));
        }
        buffer.push(event);
        if !terminal {
            return Ok(None);
        }
        let events = self.open.remove(&run_id).unwrap_or_default();
        let lost = self.tolerate_node_lost
            && events.last().is_some_and(
                |e| matches!(&e.kind, EventKind::AgentError { code, .. } if code == NODE_LOST),
            );
        self.check_run(&run_id, &events, lost)?;
        self.completed += 1;
        if lost {
            self.node_lost.insert(run_id.clone());
        }
        self.done.insert(run_id.clone());
        Ok(Some(RunEnded {
            run_id,
            node_lost: lost,
            cut: false,
        }))
    }

    /// Checks a run's events; a run that ended `node_lost` (`lost`, when tolerated) is
    /// checked for its lifecycle only: its start first, every tool call closed (the node
    /// that ends it closes the calls left open), one terminal event last.
    fn check_run(
        &self,
        run_id: &RunId,
        events: &[AgentEvent],
        lost: bool,
    ) -> Result<(), Violation> {
        let summary = check_lifecycle(events).map_err(|v| Violation::Lifecycle {
            place: self.place.clone(),
            problem: v.to_string(),
        })?;
        if lost {
            return Ok(());
        }
        if summary.completed != 1 {
            let ending = events
                .last()
                .map(|e| serde_json::to_string(&e.kind).unwrap_or_default())
                .unwrap_or_default();
            return Err(Violation::NotCompleted {
                place: self.place.clone(),
                run_id: run_id.to_string(),
                ending,
            });
        }
        let got = events.len() as u64;
        if got != self.events_per_run {
            return Err(Violation::EventCount {
                place: self.place.clone(),
                run_id: run_id.to_string(),
                expected: self.events_per_run,
                got,
            });
        }
        Ok(())
    }

    /// The final verdict, once every run of the load is over: runs still open, runs never
    /// confirmed as the user's (`user_runs` is the user's complete set), and whether every run
    /// the user started reached this connection (checked, or written off by a failed
    /// resume). Up to `lost_requests` runs never confirmed
    /// that ended `node_lost` are excused: requests lost unanswered with a connection to a
    /// node that died, or refused as `unavailable` after their claim's answer was lost, may
    /// have started them.
    pub fn finish(&self, user_runs: &HashSet<RunId>, lost_requests: u64) -> Result<(), Violation> {
        let mut orphans = 0;
        let mut foreign: Vec<(&RunId, &u64)> = self
            .unconfirmed
            .iter()
            .filter(|(run, _)| !user_runs.contains(*run))
            .filter(|(run, _)| {
                let excused = orphans < lost_requests && self.node_lost.contains(*run);
                orphans += u64::from(excused);
                !excused
            })
            .collect();
        foreign.sort_by_key(|(_, seq)| **seq);
        if let Some((run_id, seq)) = foreign.first() {
            let how = if self.node_lost.contains(*run_id) {
                "it ended node_lost"
            } else if self.done.contains(*run_id) {
                "it ended otherwise"
            } else {
                "it did not end here"
            };
            return Err(Violation::WrongUser {
                place: self.place.clone(),
                run_id: run_id.to_string(),
                how,
                lost_requests,
                seq: **seq,
            });
        }
        if let Some((run_id, events)) = self.open.iter().next() {
            return Err(Violation::Unfinished {
                place: self.place.clone(),
                run_id: run_id.to_string(),
                events: events.len(),
            });
        }
        let started = user_runs.len() as u64;
        let seen = self.completed + self.written_off - orphans;
        if seen != started {
            return Err(Violation::MissingRuns {
                place: self.place.clone(),
                seen,
                started,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
