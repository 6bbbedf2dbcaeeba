//! [`Epoch`]: names one life of a user's event stream. The bridge's broker makes one when a
//! stream starts; the wire carries it to clients, and they send it back to resume.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Names one life of a user's stream; `seq` restarts only under a new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A new, unique epoch (`ep_` and a lowercase ULID).
    pub fn generate() -> Self {
        Self(Arc::from(
            format!("ep_{}", ulid::Ulid::new()).to_ascii_lowercase(),
        ))
    }

    /// An epoch as the server wrote it or a client sent it back.
    pub fn new(value: &str) -> Self {
        Self(Arc::from(value))
    }

    /// The epoch as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
