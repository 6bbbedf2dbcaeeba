//! What a new message into a thread does to the thread's live run: [`Multitask`], the
//! `multitask` of a `start_agent` (and of AG-UI's `forwardedProps`); and [`ThreadRule`], how a
//! run claims its place in its thread (one run per thread at a time), which the run slots
//! keep on one node and across nodes.
//!
//! A thread whose run waits for approvals refuses new input (`thread_waiting_for_approval`)
//! unless it says `interrupt` or `rollback`, which end the waiting run first.

use serde::{Deserialize, Serialize};

/// A strategy for a message sent into a thread whose run is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum Multitask {
    /// Refuse the new message (`thread_busy`).
    Reject,
    /// Run the new message after the live run ends.
    Enqueue,
    /// End the live run (`interrupted`) and run the new message.
    Interrupt,
    /// End the live run, erase it from the history, and run the new message.
    Rollback,
    /// Hand the new message to the live run at its next safe point.
    Steer,
}

impl Multitask {
    /// Every strategy's wire name.
    pub const NAMES: &'static [&'static str] =
        &["reject", "enqueue", "interrupt", "rollback", "steer"];

    /// The strategy's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Multitask::Reject => "reject",
            Multitask::Enqueue => "enqueue",
            Multitask::Interrupt => "interrupt",
            Multitask::Rollback => "rollback",
            Multitask::Steer => "steer",
        }
    }

    /// The strategy named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Multitask::Reject,
            Multitask::Enqueue,
            Multitask::Interrupt,
            Multitask::Rollback,
            Multitask::Steer,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// Whether the strategy ends a run that waits for approvals (rather than being refused).
    pub fn drops_a_waiting_run(self) -> bool {
        matches!(self, Multitask::Interrupt | Multitask::Rollback)
    }
}

/// The `agent_cancelled` reason of a run ended by a new message in its thread
/// (`interrupt`); its history status is `interrupted`.
pub const INTERRUPTED: &str = "interrupted";

/// The `agent_cancelled` reason of a run ended by a new message in its thread that erases
/// it (`rollback`).
pub const ROLLED_BACK: &str = "rolled_back";

/// How a run claims its place in its thread (see `execution_engine::slots`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ThreadRule {
    /// Beside the thread's other runs, bound only by the user's limits (sub-runs, and
    /// engines used without the one-run-per-thread rule).
    #[default]
    Parallel,
    /// After the thread's running run and the thread's claims queued before it.
    Queue,
    /// Refused (`thread_busy`) while the thread has a run, running or queued.
    Reject,
    /// Next in its thread: ahead of the thread's queued claims (after earlier `Front` ones),
    /// still after its running run (which the caller may cancel).
    Front,
}

impl ThreadRule {
    /// Whether the claim keeps one run per thread (every rule but `Parallel`).
    pub fn serializes(self) -> bool {
        self != ThreadRule::Parallel
    }

    /// Its name in the run slots' stores.
    pub fn name(self) -> &'static str {
        match self {
            ThreadRule::Parallel => "parallel",
            ThreadRule::Queue => "queue",
            ThreadRule::Reject => "reject",
            ThreadRule::Front => "front",
        }
    }
}

impl Multitask {
    /// How a new run with this strategy claims its place in its thread (`steer` queues: the
    /// run that takes the message is the thread's running one).
    pub fn thread_rule(self) -> ThreadRule {
        match self {
            Multitask::Reject => ThreadRule::Reject,
            Multitask::Enqueue | Multitask::Steer => ThreadRule::Queue,
            Multitask::Interrupt | Multitask::Rollback => ThreadRule::Front,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Multitask::NAMES {
            let parsed = Multitask::parse(name).expect("a strategy");
            assert_eq!(parsed.name(), *name);
            let wire = serde_json::to_value(parsed).expect("encodes");
            assert_eq!(wire, serde_json::json!(name));
        }
        assert_eq!(Multitask::parse("later"), None);
    }
}
