//! Typed, validated ids.
//!
//! Each id is a newtype over a shared `Arc<str>`: cloning one (every event carries a run id
//! and a thread id) is a reference-count increment, not an allocation. An id can only be made
//! by [`parse`](UserId::parse) (which validates) or by `generate` (which makes a fresh,
//! prefixed ULID), so holding an id proves it passed validation.
//!
//! Validation rules, shared by every id type:
//! - non-empty and at most [`MAX_ID_LEN`] bytes;
//! - only ASCII letters, digits and `_ - . @ + |` (so ids are safe in logs, URLs, Redis keys
//!   and the `:`-separated keys of [`UserExecutionContext::scoped_key`](crate::UserExecutionContext::scoped_key));
//! - not a placeholder: the exact values in [`PLACEHOLDER_VALUES`] (any case), and short ids
//!   (under [`PLACEHOLDER_PREFIX_MIN_LEN`] bytes) that start with one of
//!   [`PLACEHOLDER_PREFIXES`]. The system this replaces ran agents for users named `default`
//!   and `registry`; here such a context cannot be built.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Values that are never a real id (compared case-insensitively).
pub const PLACEHOLDER_VALUES: &[&str] = &[
    "placeholder",
    "default",
    "none",
    "null",
    "nil",
    "undefined",
    "test",
    "mock",
    "fake",
    "dummy",
    "registry",
    "example",
    "0",
    "1",
];

/// Prefixes that mark a placeholder when the id is short (see [`PLACEHOLDER_PREFIX_MIN_LEN`]).
pub const PLACEHOLDER_PREFIXES: &[&str] = &[
    "placeholder_",
    "temp_",
    "tmp_",
    "mock_",
    "fake_",
    "default_",
    "dummy_",
    "test_",
];

/// An id that starts with a placeholder prefix is accepted only from this length on: a
/// generated id such as `temp_01JD6Q9V3K8Z4X2M7N5P0R1S2T` is real, `temp_user` is not.
pub const PLACEHOLDER_PREFIX_MIN_LEN: usize = 20;

/// Why a string is not a valid id. The message names the kind of id and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id, such as `user id`.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character outside the safe set.
    #[error(
        "{kind} contains {ch:?} at byte {position}; allowed are ASCII letters, digits and _ - . @ + |"
    )]
    InvalidChar {
        /// Which id.
        kind: &'static str,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
    /// The id is a placeholder value, not a real id.
    #[error(
        "{kind} {value:?} is a placeholder, not a real id; pass the authenticated or generated id"
    )]
    Placeholder {
        /// Which id.
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
}

/// Whether an id may hold `c`: ASCII letters and digits, and `_ - . @ + |`.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '+' | '|')
}

/// Checks `value` against the rules in the module documentation.
pub fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some((position, ch)) = value.char_indices().find(|&(_, c)| !is_id_char(c)) {
        return Err(IdError::InvalidChar { kind, ch, position });
    }
    let lower = value.to_ascii_lowercase();
    let is_placeholder = PLACEHOLDER_VALUES.contains(&lower.as_str())
        || (value.len() < PLACEHOLDER_PREFIX_MIN_LEN
            && PLACEHOLDER_PREFIXES.iter().any(|p| lower.starts_with(p)));
    if is_placeholder {
        return Err(IdError::Placeholder {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, ts_rs::TS)]
        pub struct $name(Arc<str>);

        impl $name {
            /// What this id is called in error messages.
            pub const KIND: &'static str = $kind;
            /// The prefix of generated ids of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// Validates `value` and makes an id of it.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                validate(Self::KIND, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// A fresh id: the kind's prefix and a ULID (unique, sortable by creation time).
            pub fn generate() -> Self {
                Self(Arc::from(format!("{}{}", Self::PREFIX, ulid::Ulid::new())))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// The authenticated user. Comes from the verified token only, never from a message.
    UserId,
    "user id",
    "usr_"
);
define_id!(
    /// A conversation; runs belong to a thread, and a thread belongs to one user.
    ThreadId,
    "thread id",
    "thr_"
);
define_id!(
    /// One execution of one agent.
    RunId,
    "run id",
    "run_"
);
define_id!(
    /// One request into the engine (a `start_agent`, or a child operation of one).
    RequestId,
    "request id",
    "req_"
);
define_id!(
    /// One WebSocket connection.
    ConnectionId,
    "connection id",
    "conn_"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(())` when `value` is a valid user id, else the error's message.
    fn check(value: &str, expected: Result<(), &str>) {
        let got = UserId::parse(value).map(|_| ()).map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(fragment)) => assert!(
                msg.contains(fragment),
                "{value:?}: message {msg:?} does not mention {fragment:?}"
            ),
            _ => panic!("{value:?}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn user_id_validation_table() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        let table: &[(&str, Result<(), &str>)] = &[
            ("alice", Ok(())),
            ("alice@example.com", Ok(())),
            ("auth0|5f7c8ec7c33c6c004bbafe82", Ok(())),
            ("usr_01JD6Q9V3K8Z4X2M7N5P0R1S2T", Ok(())),
            ("temp_01JD6Q9V3K8Z4X2M7N5P0R1S2T", Ok(())),
            (&long[..MAX_ID_LEN], Ok(())),
            ("", Err("must not be empty")),
            (&long, Err("129 bytes long; the limit is 128")),
            ("al ice", Err("contains ' ' at byte 2")),
            ("alice:bob", Err("contains ':'")),
            ("alïce", Err("contains 'ï'")),
            ("../etc", Err("contains '/'")),
            ("test", Err("placeholder")),
            ("TEST", Err("placeholder")),
            ("default", Err("placeholder")),
            ("registry", Err("placeholder")),
            ("undefined", Err("placeholder")),
            ("null", Err("placeholder")),
            ("0", Err("placeholder")),
            ("1", Err("placeholder")),
            ("mock_user", Err("placeholder")),
            ("placeholder_1", Err("placeholder")),
            ("temp_abc", Err("placeholder")),
            ("default_user", Err("placeholder")),
            ("fake_alice", Err("placeholder")),
        ];
        for (value, expected) in table {
            check(value, *expected);
        }
    }

    #[test]
    fn generated_ids_are_valid_unique_and_prefixed() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("run_"));
        assert_eq!(RunId::parse(a.as_str()), Ok(a.clone()));
        assert!(ThreadId::generate().as_str().starts_with("thr_"));
        assert!(ConnectionId::generate().as_str().starts_with("conn_"));
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let id = ThreadId::parse("thr_abc").expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("encode"), "\"thr_abc\"");
        let back: ThreadId = serde_json::from_str("\"thr_abc\"").expect("decode");
        assert_eq!(back, id);
        let err = serde_json::from_str::<ThreadId>("\"default\"").expect_err("placeholder");
        assert!(
            err.to_string()
                .contains("thread id \"default\" is a placeholder")
        );
    }
}
