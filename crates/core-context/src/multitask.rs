//! What a new message into a thread does to the thread's live run: [`Multitask`], the
//! `multitask` of a `start_agent` (and of AG-UI's `forwardedProps`).
//!
//! Today the server acts on it for a thread whose run waits for approvals: `interrupt` and
//! `rollback` end the waiting run (cancelled as `interrupted`, or cancelled and erased), any
//! other strategy is refused with `thread_waiting_for_approval`.

use serde::{Deserialize, Serialize};

/// A strategy for a message sent into a thread whose run is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
