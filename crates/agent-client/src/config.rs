//! [`ClientConfig`]: the client's settings, each with a default that suits an interactive
//! application, checked once when the client connects.

use std::time::Duration;

use agent_protocol::ResumeParams;

use crate::backoff::Backoff;

/// Settings of a [`Client`](crate::Client). `ClientConfig::default()` suits most callers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Pauses between reconnect attempts after the socket dropped.
    pub backoff: Backoff,
    /// Where to resume the stream on the first connect: the
    /// [`Client::position`](crate::Client::position) of an earlier client, so that a process
    /// that restarts reads on from the last event it handled. `None` starts at the live edge.
    pub resume_from: Option<ResumeParams>,
    /// How long one connection attempt (TCP, handshake, `connection_established`) may take.
    pub connect_timeout: Duration,
    /// How long a request (`start_agent`, `cancel_run`, `ping`) waits for its answer.
    pub request_timeout: Duration,
    /// Events and notices the client holds for the application before it stops reading the
    /// socket. A client that falls that far behind is eventually disconnected by the server as
    /// a slow consumer; it then resumes from the last event it holds, so nothing is lost while
    /// memory stays bounded. While the client holds that many, answers to requests wait too:
    /// read the stream while making requests.
    pub max_buffered_items: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            resume_from: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_buffered_items: 16_384,
        }
    }
}

impl ClientConfig {
    /// Checks the settings, naming the first one that is out of range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.backoff.validate()?;
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} is zero; give it time to answer"));
            }
        }
        if self.max_buffered_items == 0 {
            return Err("max_buffered_items is 0; the client must hold at least one event".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        let check = |config: ClientConfig, expected: Result<(), &str>| match (
            config.validate(),
            expected,
        ) {
            (Ok(()), Ok(())) => {}
            (Err(m), Err(f)) => assert!(m.contains(f), "{m:?} lacks {f:?}"),
            (got, _) => panic!("expected {expected:?}, got {got:?}"),
        };
        check(ClientConfig::default(), Ok(()));
        check(
            ClientConfig {
                request_timeout: Duration::ZERO,
                ..ClientConfig::default()
            },
            Err("request_timeout is zero"),
        );
        check(
            ClientConfig {
                max_buffered_items: 0,
                ..ClientConfig::default()
            },
            Err("max_buffered_items is 0"),
        );
        check(
            ClientConfig {
                backoff: Backoff {
                    initial: Duration::ZERO,
                    ..Backoff::default()
                },
                ..ClientConfig::default()
            },
            Err("backoff.initial is zero"),
        );
    }
}
