//! The protocol's codes: the `code` of an `error` frame and the WebSocket close codes.
//!
//! Each list is written once, in a macro, so the enum, its wire form and its parsing cannot
//! disagree. A code this version does not know parses as `Other`, so a client built against
//! an older list still understands a newer server.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)*) => {
        /// The `code` of an `error` frame (and of HTTP refusals' `error`).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this version of the protocol does not name.
            Other(String),
        }

        /// In TypeScript: the known codes, or any other string (from a newer server).
        impl ts_rs::TS for ErrorCode {
            type WithoutGenerics = Self;
            type OptionInnerType = Self;

            fn name(_: &ts_rs::Config) -> String {
                "ErrorCode".to_owned()
            }

            fn inline(_: &ts_rs::Config) -> String {
                let known: Vec<String> = Self::KNOWN.iter().map(|c| format!("\"{c}\"")).collect();
                format!("{} | (string & {{}})", known.join(" | "))
            }

            fn decl(cfg: &ts_rs::Config) -> String {
                format!("type ErrorCode = {};", Self::inline(cfg))
            }

            fn docs() -> Option<String> {
                Some("/** The `code` of an `error` frame (and of HTTP refusals' `error`). */\n".to_owned())
            }
        }

        impl ErrorCode {
            /// The code as it is written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The code written as `wire`.
            pub fn from_wire(wire: &str) -> Self {
                match wire {
                    $($wire => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }

            /// Every code this version names, for tables and tests.
            pub const KNOWN: &'static [&'static str] = &[$($wire),*];
        }
    };
}

error_codes! {
    /// The frame is not JSON.
    InvalidJson = "invalid_json",
    /// The frame is JSON but not an object with a string `type`.
    InvalidFrame = "invalid_frame",
    /// The `type` is not one the server knows.
    UnknownType = "unknown_type",
    /// A required field is missing.
    MissingField = "missing_field",
    /// A field has the wrong type or an invalid value.
    InvalidField = "invalid_field",
    /// The frame is larger than the limit.
    FrameTooLarge = "frame_too_large",
    /// Binary frames are not part of the protocol.
    BinaryNotSupported = "binary_not_supported",
    /// Too many requests: `start_agent` frames, or HTTP requests (429 with `Retry-After`).
    RateLimited = "rate_limited",
    /// The run does not exist or is not the user's (the two are not told apart).
    RunNotFound = "run_not_found",
    /// No such call waits for approval in the user's run (another user's run looks the same;
    /// HTTP 404).
    ApprovalNotFound = "approval_not_found",
    /// The call was already decided (HTTP 409).
    ApprovalAlreadyDecided = "approval_already_decided",
    /// The call expired before it was decided; the run went on without it (HTTP 410).
    ApprovalExpired = "approval_expired",
    /// The thread's run waits for approvals: decide them, or send with `multitask`
    /// `interrupt` or `rollback` to drop it.
    ThreadWaitingForApproval = "thread_waiting_for_approval",
    /// The thread has a run going and the message said `multitask` `reject` (or the server's
    /// default is `reject`); the message names the run.
    ThreadBusy = "thread_busy",
    /// The user's budget for the period (`--token-budget-per-user`,
    /// `--cost-budget-per-user`) is used up; the message says what is used and when it
    /// resets.
    BudgetExceeded = "budget_exceeded",
    /// A cut AG-UI response cannot be continued: the run's events after the client's last
    /// position are no longer in the replay log (HTTP 410); read the run from the history.
    ResumeFailed = "resume_failed",
    /// The thread does not exist for this user (another user's thread looks the same).
    ThreadNotFound = "thread_not_found",
    /// The server is shutting down and takes no new runs.
    ShuttingDown = "shutting_down",
    /// No agent has that name.
    UnknownAgent = "unknown_agent",
    /// The agent name is not a valid name.
    InvalidAgent = "invalid_agent",
    /// The user has too many runs running and queued.
    TooManyRuns = "too_many_runs",
    /// The user holds too many engines.
    TooManyEngines = "too_many_engines",
    /// The engine was shut down.
    EngineClosed = "engine_closed",
    /// The server failed; nothing the client did.
    InternalError = "internal_error",
    /// HTTP: no valid token (missing, malformed, expired, wrong signature).
    Unauthorized = "unauthorized",
    /// HTTP: the request is malformed (bad resume parameters, bad JSON body).
    BadRequest = "bad_request",
    /// HTTP: the user already has the maximum number of open connections.
    TooManyConnections = "too_many_connections",
    /// HTTP: this server does not serve that (the history API of a server with no store).
    NotFound = "not_found",
    /// A store the request needs cannot be reached now; retry shortly: the history store
    /// (HTTP 503), or a start while the run slots' store (the Redis broker) cannot be reached
    /// (an `error` frame; HTTP 503 on the HTTP transports).
    Unavailable = "unavailable",
    /// HTTP: the request comes from a page of an origin the server does not allow (403).
    OriginNotAllowed = "origin_not_allowed",
    /// HTTP: the body is not of a type the endpoint reads (415: a JSON body without
    /// `content-type: application/json`).
    UnsupportedMediaType = "unsupported_media_type",
}

impl ErrorCode {
    /// The code of a refused request body, by the HTTP status its reader gave (415, else
    /// `bad_request`).
    pub fn of_body(status: u16) -> Self {
        match status {
            415 => Self::UnsupportedMediaType,
            _ => Self::BadRequest,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ErrorCode::from_wire(&raw))
    }
}

macro_rules! close_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $reason:literal,)*) => {
        /// Why the server closed a WebSocket, as the close frame's code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CloseCode {
            $($(#[$doc])* $variant,)*
            /// A code this version of the protocol does not name.
            Other(u16),
        }

        impl CloseCode {
            /// Every code this version names, by its variant's name.
            pub const KNOWN: &'static [(&'static str, u16)] = &[$((stringify!($variant), $code)),*];

            /// The close frame's code.
            pub fn code(self) -> u16 {
                match self {
                    $(CloseCode::$variant => $code,)*
                    CloseCode::Other(code) => code,
                }
            }

            /// The code `code` names.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $($code => CloseCode::$variant,)*
                    other => CloseCode::Other(other),
                }
            }

            /// The reason text the server sends with this code, which tells the client what
            /// to do (empty for codes whose reason is made per case).
            pub fn default_reason(self) -> &'static str {
                match self {
                    $(CloseCode::$variant => $reason,)*
                    CloseCode::Other(_) => "",
                }
            }
        }
    };
}

close_codes! {
    /// The server is shutting down: reconnect (to another node) and resume.
    GoingAway = 1001, "server shutting down: reconnect with epoch and after_seq to resume",
    /// The client broke a rule (flooding, or a connection past the user's limit).
    PolicyViolation = 1008, "",
    /// The client sent a message far over the frame limit.
    MessageTooBig = 1009, "",
    /// The server cannot follow the user's stream right now (its broker, Redis, is down or
    /// refuses it): reconnect after a pause and resume.
    TryAgainLater = 1013, "",
    /// The client sent nothing (not even a pong) for the idle timeout.
    IdleTimeout = 4000, "idle timeout: no message from the client",
    /// The client did not read fast enough; reconnect and resume.
    SlowConsumer = 4008, "slow consumer: reconnect with epoch and after_seq to resume",
    /// The server lost the stream the connection was reading (its broker's store restarted
    /// without its data): reconnect and resume; the resume says what was lost.
    StreamReset = 4009, "stream reset: reconnect with epoch and after_seq to learn what was lost",
}

impl CloseCode {
    /// Whether a client should reconnect and resume after this close: the server asked it
    /// to (shutdown, slow consumer) or the cause was transient (idle).
    pub fn should_resume(self) -> bool {
        matches!(
            self,
            CloseCode::GoingAway
                | CloseCode::SlowConsumer
                | CloseCode::IdleTimeout
                | CloseCode::StreamReset
                | CloseCode::TryAgainLater
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_their_wire_strings() {
        for wire in ErrorCode::KNOWN {
            let code = ErrorCode::from_wire(wire);
            assert!(!matches!(code, ErrorCode::Other(_)), "{wire}");
            assert_eq!(code.as_str(), *wire);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{wire}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let newer = ErrorCode::from_wire("quota_exceeded");
        assert_eq!(newer, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(newer.as_str(), "quota_exceeded");
    }

    #[test]
    fn close_codes_keep_their_numbers() {
        let table = [
            (CloseCode::GoingAway, 1001),
            (CloseCode::PolicyViolation, 1008),
            (CloseCode::MessageTooBig, 1009),
            (CloseCode::IdleTimeout, 4000),
            (CloseCode::SlowConsumer, 4008),
            (CloseCode::StreamReset, 4009),
        ];
        for (close, code) in table {
            assert_eq!(close.code(), code);
            assert_eq!(CloseCode::from_code(code), close);
        }
        assert_eq!(CloseCode::from_code(4999), CloseCode::Other(4999));
        assert!(
            CloseCode::SlowConsumer
                .default_reason()
                .contains("after_seq")
        );
    }
}
